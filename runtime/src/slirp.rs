//! The isolated network ([`crate::Network::Isolated`]): slirp4netns(1) gives
//! the supervisor's network namespace a `tap0` behind a user-mode NAT. Its
//! connections leave from the host's namespace as ordinary sockets of the
//! slirp4netns process, so a step gets outbound TCP, UDP and DNS without a
//! bridge, a veth or root; `--disable-host-loopback` refuses the host's
//! 127.0.0.1 (which slirp otherwise offers as the gateway 10.0.2.2).

use std::io::{self, Read, Seek};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::pipe::PipeFlags;

use crate::parent::RuntimeError;

/// Where `tap0` is (slirp4netns(1), "Default configuration": the network
/// address + 100 with `--configure`).
pub(crate) const GUEST_ADDR: &str = "10.0.2.100";
/// slirp's DNS forwarder (the network address + 3).
pub(crate) const DNS_ADDR: &str = "10.0.2.3";

/// Configuring `tap0` takes milliseconds; this only bounds a hung helper.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running slirp4netns, killed and reaped when dropped (the step ended,
/// on every path). Should this process die first, slirp4netns exits on its
/// own: its `--exit-fd` sees our end of the pipe close.
pub(crate) struct Slirp {
    child: Child,
    _exit: OwnedFd,
}

impl Slirp {
    /// Starts slirp4netns for the network namespace of `pid` (and joins its
    /// user namespace, which owns that network namespace: the default when
    /// given a pid) and waits until `tap0` is configured. Call it after
    /// `pid`'s ID maps are written.
    pub(crate) fn start(pid: u32) -> Result<Slirp, RuntimeError> {
        let tool = crate::parent::find_tool("slirp4netns").ok_or(RuntimeError::SlirpMissing)?;
        let err = |source: io::Error| RuntimeError::Network {
            tool: tool.clone(),
            source,
        };
        let (ready_r, ready_w) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| err(e.into()))?;
        let (exit_r, exit_w) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| err(e.into()))?;
        // its messages go to a file, not a pipe someone must keep draining
        let mut log = tempfile::tempfile().map_err(err)?;
        let log_w = log.try_clone().map_err(err)?;
        let (ready_fd, exit_fd) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
        let mut cmd = Command::new(&tool);
        cmd.args([
            "--configure",
            // slirp4netns(1)'s example, and podman's default
            "--mtu=65520",
            "--disable-host-loopback",
            // its own mount namespace, no capabilities (as root: all but
            // CAP_NET_BIND_SERVICE) and a seccomp filter: it parses the
            // step's packets
            "--enable-sandbox",
            "--enable-seccomp",
        ])
        .arg(format!("--ready-fd={ready_fd}"))
        .arg(format!("--exit-fd={exit_fd}"))
        .arg(pid.to_string())
        .arg("tap0")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_w);
        // Two descriptors at numbers of our choosing need a hook after the
        // fork (std then forks instead of posix_spawn); both are made
        // close-on-exec here, so no other child of this process gets them.
        // SAFETY: only async-signal-safe fcntl(2) calls between fork and exec
        unsafe {
            cmd.pre_exec(move || {
                for fd in [ready_fd, exit_fd] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(err)?;
        drop(cmd);
        // only slirp4netns holds the ready pipe's write end now: EOF means
        // it exited
        drop(ready_w);
        drop(exit_r);
        let waited = wait_ready(&ready_r);
        if let Ok(true) = waited {
            return Ok(Slirp {
                child,
                _exit: exit_w,
            });
        }
        let _ = child.kill();
        let status = child.wait();
        let mut said = String::new();
        let _ = log.rewind().and_then(|()| log.read_to_string(&mut said));
        Err(err(io::Error::other(failure_message(
            waited, status, &said,
        ))))
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True once slirp4netns wrote its "1", false at EOF or after
/// [`READY_TIMEOUT`].
fn wait_ready(fd: &OwnedFd) -> io::Result<bool> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let timeout = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let mut b = [0u8; 1];
        match rustix::io::read(fd, &mut b) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(b[0] == b'1'),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn failure_message(
    waited: io::Result<bool>,
    status: io::Result<std::process::ExitStatus>,
    said: &str,
) -> String {
    let mut m = match (waited, status) {
        (Err(e), _) => format!("waiting for it failed: {e}"),
        (Ok(_), Ok(s)) if s.code().is_some() => format!("it exited with {s}"),
        (Ok(_), _) => format!("`tap0` was not configured within {READY_TIMEOUT:?}"),
    };
    let said = said.trim();
    if !said.is_empty() {
        // its last lines say why (`open("/dev/net/tun"): Permission denied`)
        let tail: Vec<&str> = said.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        m.push_str(": ");
        m.push_str(&tail.join("; "));
    }
    if said.contains("/dev/net/tun") {
        m.push_str(
            "; the user running kiln needs read and write access to `/dev/net/tun` (mode 0666, as Debian's udev rules make it)",
        );
    }
    m
}

/// `resolv.conf` and `hosts` for the step, written into the sandbox's state
/// directory `state` (the init binds them read-only on `/etc/resolv.conf`
/// and `/etc/hosts`): slirp's resolver, since the host's may be a loopback
/// address the step cannot reach, and localhost plus the hostname.
pub(crate) fn write_etc(state: &Path, hostname: &str) -> io::Result<Vec<(PathBuf, String)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    // a name the file can hold; anything else is left out, not escaped
    if !hostname.is_empty() && hostname.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        hosts.push_str(&format!("{GUEST_ADDR}\t{hostname}\n"));
    }
    let files = [
        ("resolv.conf", format!("nameserver {DNS_ADDR}\n")),
        ("hosts", hosts),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let p = state.join(name);
        std::fs::write(&p, text)?;
        // readable by the step's user whatever our umask
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        out.push((p, format!("/etc/{name}")));
    }
    Ok(out)
}
