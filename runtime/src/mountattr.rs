//! mount_setattr(2) (Linux 5.12), which rustix does not wrap: read-only
//! flags on whole mount trees and idmapped clones.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

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
