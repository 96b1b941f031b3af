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

/// docker's ulimit names (`RLIMIT_*` of setrlimit(2), lower case, without
/// the prefix) to the resources' numbers, as `(resource, soft, hard)` with
/// `-1` as `RLIM_INFINITY`. An unknown name is the caller's error.
pub(crate) fn resolve_rlimits(
    limits: &[crate::spec::Rlimit],
) -> Result<Vec<(i32, u64, u64)>, String> {
    let value = |n: i64| {
        if n < 0 {
            libc::RLIM_INFINITY
        } else {
            n as libc::rlim_t
        }
    };
    limits
        .iter()
        .map(|l| {
            let resource = match l.name.as_str() {
                "core" => libc::RLIMIT_CORE,
                "cpu" => libc::RLIMIT_CPU,
                "data" => libc::RLIMIT_DATA,
                "fsize" => libc::RLIMIT_FSIZE,
                "locks" => libc::RLIMIT_LOCKS,
                "memlock" => libc::RLIMIT_MEMLOCK,
                "msgqueue" => libc::RLIMIT_MSGQUEUE,
                "nice" => libc::RLIMIT_NICE,
                "nofile" => libc::RLIMIT_NOFILE,
                "nproc" => libc::RLIMIT_NPROC,
                "rss" => libc::RLIMIT_RSS,
                "rtprio" => libc::RLIMIT_RTPRIO,
                "rttime" => libc::RLIMIT_RTTIME,
                "sigpending" => libc::RLIMIT_SIGPENDING,
                "stack" => libc::RLIMIT_STACK,
                other => return Err(format!("unknown ulimit `{other}`")),
            };
            Ok((resource as i32, value(l.soft), value(l.hard)))
        })
        .collect()
}

/// The build's ulimits, set on the init before it execs the step (its
/// children inherit them, fork(2)). setrlimit(2): an unprivileged process
/// may lower its hard limit and set its soft limit up to the hard one;
/// raising the hard limit needs `CAP_SYS_RESOURCE` in the initial user
/// namespace, which a step never holds, so a hard limit above the caller's
/// fails with EPERM, named in the error.
pub(crate) fn set_rlimits(limits: &[(i32, u64, u64)]) -> io::Result<()> {
    for &(resource, soft, hard) in limits {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) into a valid struct
        if unsafe { libc::getrlimit(resource as _, &mut cur) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit(2) with a valid struct
        if unsafe { libc::setrlimit(resource as _, &lim) } != 0 {
            let e = io::Error::last_os_error();
            let limit = |v: u64| {
                if v == libc::RLIM_INFINITY {
                    "unlimited".to_string()
                } else {
                    v.to_string()
                }
            };
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{e}: resource {resource} to {}:{} (kiln's own hard limit is {}, which a step cannot raise)",
                    limit(soft),
                    limit(hard),
                    limit(cur.rlim_max)
                ),
            ));
        }
    }
    Ok(())
}
