//! What the init takes away before it execs the step: capabilities beyond
//! what `docker build` gives a `RUN`, writable kernel knobs under /proc, and
//! an unbounded number of processes.
//!
//! The user namespace already keeps a step's capabilities off the host's
//! objects; these are the second wall, the one runc and BuildKit put up too.
//! Without `CAP_SYS_ADMIN` the step cannot remount or unmount what the init
//! mounted (a read-only bind stays read-only, the masks stay), and in a user
//! namespace of its own every inherited mount is locked (mount_namespaces(7),
//! "Restrictions on mount namespaces").

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use crate::mountattr::{MOUNT_ATTR_RDONLY, MountAttr, mount_setattr};

/// The capabilities a step keeps: Docker's and BuildKit's default set for
/// `RUN` (moby `oci/caps/defaults.go`), by number (capabilities(7)).
const KEPT: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Drops every other capability from the bounding set, so that the step's
/// exec (as root: permitted = bounding set) cannot gain it. Needs
/// `CAP_SETPCAP`, which the init holds as its namespace's root.
pub(crate) fn drop_capabilities() -> io::Result<()> {
    for cap in 0..64u32 {
        if KEPT.contains(&cap) {
            continue;
        }
        // SAFETY: prctl(2) PR_CAPBSET_DROP with a capability number
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = io::Error::last_os_error();
            // past the kernel's last capability
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Paths under /proc a step may read but not write (runc's
/// `readonlyPaths`): the global sysctls, sysrq, interrupt affinities, buses.
pub(crate) const PROC_READONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Paths under /proc a step may not read at all (runc's `maskedPaths`):
/// kernel memory, the keyring list, timers and scheduler internals.
pub(crate) const PROC_MASKED: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "latency_stats",
    "acpi",
    "asound",
    "scsi",
];

type MountFn<'a> = &'a dyn Fn(
    &str,
    Option<&OsStr>,
    &Path,
    Option<&str>,
    libc::c_ulong,
    Option<&str>,
) -> Result<(), (String, io::Error)>;

/// Makes the paths of [`PROC_READONLY`] read-only and hides those of
/// [`PROC_MASKED`] in the procfs mounted at `proc` (a mount of the init's
/// own, so plain paths below it are safe). `null` is a file to bind over
/// masked files. Entries this kernel lacks are skipped.
pub(crate) fn protect_proc(proc: &Path, null: &Path, mount: MountFn<'_>) -> io::Result<()> {
    let run = |r: Result<(), (String, io::Error)>| {
        r.map_err(|(stage, e)| io::Error::new(e.kind(), format!("{stage}: {e}")))
    };
    let locked = (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as libc::c_ulong;
    for name in PROC_READONLY {
        let p = proc.join(name);
        if p.symlink_metadata().is_err() {
            continue;
        }
        run(mount(
            "bind a /proc path",
            Some(p.as_os_str()),
            &p,
            None,
            libc::MS_BIND as libc::c_ulong,
            None,
        ))?;
    }
    for name in PROC_MASKED {
        let p = proc.join(name);
        let Ok(meta) = p.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            run(mount(
                "mask a /proc directory",
                Some(OsStr::new("tmpfs")),
                &p,
                Some("tmpfs"),
                libc::MS_RDONLY as libc::c_ulong | locked,
                Some("size=0,mode=555"),
            ))?;
        } else {
            run(mount(
                "mask a /proc file",
                Some(null.as_os_str()),
                &p,
                None,
                libc::MS_BIND as libc::c_ulong,
                None,
            ))?;
        }
    }
    // every bind and mask read-only at once, /proc itself stays as it is
    readonly_below(proc)
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
/// mount_setattr(2) calls (Linux 5.12) instead of a remount per mount.
pub(crate) fn readonly_below(top: &Path) -> io::Result<()> {
    setattr(top, true, MOUNT_ATTR_RDONLY, 0)?;
    setattr(top, false, 0, MOUNT_ATTR_RDONLY)
}

/// RLIMIT_NPROC for the step. Counted per user in the step's own user
/// namespace (the kernel's ucounts, Linux 5.14), so a fork bomb stops at
/// `limit` processes of its user and the host's other processes do not
/// count. Not enforced for the host's real root, which the sandbox never
/// is. (A pids cgroup would count every user of the step together, but
/// needs a delegated cgroup v2 subtree, which rootless kiln rarely has.)
pub(crate) fn limit_processes(limit: u64) -> io::Result<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) into a valid struct
    if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut cur) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // only lower: raising the hard limit needs the host's CAP_SYS_RESOURCE
    let limit = (limit as libc::rlim_t).min(cur.rlim_max);
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit(2) with a valid struct
    if unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
