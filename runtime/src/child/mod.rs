//! The sandbox child: runs in a fresh process (a re-exec of the kiln binary
//! through its hidden subcommand, never a fork of a threaded or async
//! parent). Two roles:
//!
//! - the supervisor (the re-exec'd process itself) creates the namespaces,
//!   lets the parent write the ID maps, forks the init and reports its exit;
//! - the init (pid 1 of the new pid namespace) mounts the rootfs, /dev,
//!   /proc and the step's mounts, pivots into the rootfs, drops to the step's
//!   user and execs the command. When it dies the kernel kills everything
//!   else in the pid namespace (pid_namespaces(7)), and with it goes the
//!   mount namespace and every mount: nothing to unmount on any path.
//!
//! Both are single-threaded, so plain fork(2) and allocation after it are
//! fine. Nothing here prints: stdout and stderr belong to the step; errors
//! travel to the parent over the socket.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kiln_types::error_chain;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::proto::{ChildConfig, FD_ENV, GO, PARENT_ENV, ToParent};
use crate::spec::{Driver, DriverChoice, MountKind, Network};

mod devices;
mod init;
mod jobs;
mod mounts;
mod proc;
mod rootfs;
mod supervisor;

use devices::*;
use init::*;
use jobs::*;
use mounts::*;
use proc::*;
use rootfs::*;
use supervisor::*;

pub(crate) use rootfs::stub_dirs;

struct Fail {
    stage: String,
    err: io::Error,
}

type R<T> = Result<T, Fail>;

fn fail(stage: impl Into<String>) -> impl FnOnce(io::Error) -> Fail {
    let stage = stage.into();
    move |err| Fail { stage, err }
}

fn errno_fail(stage: impl Into<String>) -> impl FnOnce(Errno) -> Fail {
    let f = fail(stage);
    move |e| f(e.into())
}

fn send(sock: BorrowedFd<'_>, msg: &ToParent) {
    if let Ok(bytes) = serde_json::to_vec(msg) {
        let _ = rustix::net::send(sock, &bytes, rustix::net::SendFlags::NOSIGNAL);
    }
}

fn report(sock: BorrowedFd<'_>, f: &Fail) {
    send(
        sock,
        &ToParent::Failed {
            stage: f.stage.clone(),
            error: f.err.to_string(),
            errno: f.err.raw_os_error(),
        },
    );
}

/// Entry point of the hidden `__sandbox-child` subcommand. Never returns.
pub fn child_main() -> ! {
    let fd: i32 = match std::env::var(FD_ENV).ok().and_then(|v| v.parse().ok()) {
        Some(fd) => fd,
        None => {
            // A process entry run by hand: no caller to return an error to
            // and no tracing subscriber, so stderr is the only way to say so.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("kiln: the sandbox child is started by kiln itself, not by hand");
            }
            std::process::exit(125);
        }
    };
    // What the parent's spawn leaves to us (it has no fork hook, see
    // parent.rs): a session of our own, so terminal signals go to kiln,
    // which decides; and death with the thread that started us, once we
    // know that parent is still there (prctl(2): a parent gone before the
    // prctl would never send the signal).
    let _ = rustix::process::setsid();
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let parent = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    if parent.is_some_and(|p| p != ppid) {
        std::process::exit(125);
    }
    // SAFETY: the parent passed this descriptor for us to own
    let mut sock = unsafe { OwnedFd::from_raw_fd(fd) };
    if fd == 0 {
        // the socket came as stdin: off fd 0, and the step reads /dev/null
        match take_stdin_socket(sock) {
            Ok(s) => sock = s,
            Err(_) => std::process::exit(125),
        }
    }
    let _ = rustix::io::fcntl_setfd(&sock, rustix::io::FdFlags::CLOEXEC);
    // Descriptors kiln inherited without close-on-exec (from a CI runner,
    // a shell) must not reach the step: a sandbox sees only what it was
    // given. The socket is close-on-exec already; stdio is the step's.
    if let Err(e) = cloexec_from(3) {
        report(
            sock.as_fd(),
            &fail("mark inherited descriptors close-on-exec")(e),
        );
        std::process::exit(125);
    }
    let code = match supervise(sock.as_fd()) {
        Ok(code) => code,
        Err(f) => {
            report(sock.as_fd(), &f);
            125
        }
    };
    std::process::exit(code)
}

/// Sets close-on-exec on every descriptor from `first` up:
/// close_range(2) `CLOSE_RANGE_CLOEXEC` (Linux 5.11), else one fcntl per
/// descriptor listed in /proc/self/fd.
fn cloexec_from(first: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number; a closed one (the
        // directory's own) fails with EBADF, which is fine
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Moves the control socket from stdin to a descriptor of its own and
/// puts /dev/null on stdin.
fn take_stdin_socket(stdin: OwnedFd) -> io::Result<OwnedFd> {
    let sock = rustix::io::fcntl_dupfd_cloexec(&stdin, 3)?;
    let null = std::fs::File::open("/dev/null")?;
    // replaces fd 0 (our copy of the socket) atomically
    rustix::stdio::dup2_stdin(&null)?;
    std::mem::forget(stdin);
    Ok(sock)
}

fn recv_config(sock: BorrowedFd<'_>) -> R<ChildConfig> {
    let mut buf = vec![0u8; 1 << 20];
    let n = rustix::net::recv(sock, &mut buf[..], rustix::net::RecvFlags::empty())
        .map_err(errno_fail("read the sandbox config"))?
        .0;
    serde_json::from_slice(&buf[..n]).map_err(|e| Fail {
        stage: "parse the sandbox config".into(),
        err: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

fn cstr(p: impl AsRef<OsStr>) -> CString {
    CString::new(p.as_ref().as_bytes()).unwrap_or_default()
}

fn fd_path(fd: &OwnedFd) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}
