//! mount_setattr(2) (Linux 5.12), which rustix does not wrap: read-only
//! flags on whole mount trees and idmapped clones.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// mount_setattr(`dirfd`, `path`, `flags`, `attr`).
pub(crate) fn mount_setattr(
    dirfd: RawFd,
    path: &CStr,
    flags: libc::c_int,
    attr: &MountAttr,
) -> io::Result<()> {
    // SAFETY: a valid C string and a struct of the size we pass
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn setattr(path: &Path, recursive: bool, set: u64, clr: u64) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    mount_setattr(libc::AT_FDCWD, &c, flags, &attr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("mount_setattr on `{}`: {e}", path.display()),
        )
    })
}

/// Makes every mount below `top` read-only and leaves `top` as it was: two
/// calls instead of a remount per mount.
pub(crate) fn readonly_below(top: &Path) -> io::Result<()> {
    setattr(top, true, MOUNT_ATTR_RDONLY, 0)?;
    setattr(top, false, 0, MOUNT_ATTR_RDONLY)
}
