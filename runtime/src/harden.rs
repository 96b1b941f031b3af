//! What the init takes away before it execs the step: capabilities beyond
//! what `docker build` gives a `RUN` and an unbounded number of processes
//! (the read-only /proc paths are `child/proc.rs`).
//!
//! The user namespace already keeps a step's capabilities off the host's
//! objects; these are the second wall, the one runc and BuildKit put up too.
//! Without `CAP_SYS_ADMIN` the step cannot remount or unmount what the init
//! mounted (a read-only bind stays read-only, the masks stay), and in a user
//! namespace of its own every inherited mount is locked (mount_namespaces(7),
//! "Restrictions on mount namespaces").

use std::io;

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
