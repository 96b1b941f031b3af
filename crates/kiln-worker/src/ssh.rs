//! SSH agents forwarded into `run` steps: `kiln build --ssh ID[=SOCKET[,SOCKET]]`
//! (buildx's syntax; `default` and an id without sockets take
//! `$SSH_AUTH_SOCK`), used by a Kilnfile's `ssh()` and a Dockerfile's
//! `RUN --mount=type=ssh`.
//!
//! A step never sees the agent's own socket: for each ssh mount kiln
//! listens on a socket of its own in a private directory (the secrets'
//! 0700 directory on a tmpfs), with the mount's mode and owner, which the
//! runtime binds on the mount's target, and relays every connection to the
//! agent (the first of the id's sockets that accepts). So the step's root,
//! an unprivileged host ID as it is for kiln run by root, or the invoking
//! user rootless, connects to a socket it may open, the agent's path never
//! enters the step, the graph, a cache key, a layer or the provenance
//! (only the id does), and nothing is left once the step ends. BuildKit
//! forwards its client's agent the same way, through a socket it makes
//! per mount (`session/sshforward`).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// The agents of a build by id, as given with `--ssh`. `Debug` shows the
/// ids only.
#[derive(Clone, Default)]
pub struct SshAgents(BTreeMap<String, Vec<PathBuf>>);

impl std::fmt::Debug for SshAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshAgents")
            .field("ids", &self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A `--ssh` value kiln cannot use.
#[derive(Debug, thiserror::Error)]
pub enum SshFlagError {
    #[error("invalid `--ssh {flag}`: {reason}")]
    Syntax { flag: String, reason: &'static str },
    #[error(
        "`--ssh {id}` names no socket and `$SSH_AUTH_SOCK` is not set: start an agent (`eval $(ssh-agent)`, then `ssh-add`) or name its socket, `--ssh {id}=/path/to/agent.sock`"
    )]
    NoAuthSock { id: String },
    #[error(
        "`--ssh {id}`: `{path}` is not a socket: kiln forwards an ssh-agent, not key files; load the key with `ssh-add {path}` and pass `--ssh {id}` (the agent of `$SSH_AUTH_SOCK`)"
    )]
    NotSocket { id: String, path: PathBuf },
    #[error("`--ssh {id}`: cannot use `{path}`")]
    Stat {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`--ssh {id}` is given twice")]
    Duplicate { id: String },
}

impl SshAgents {
    /// Reads `--ssh` values: `default`, `ID`, `ID=SOCKET` or
    /// `ID=SOCKET,SOCKET` (each tried in order when a step connects). Every
    /// socket must exist now.
    pub fn from_flags(flags: &[String]) -> Result<SshAgents, SshFlagError> {
        let mut out = SshAgents::default();
        for flag in flags {
            let (id, paths) = match flag.split_once('=') {
                Some((id, paths)) => (id, Some(paths)),
                None => (flag.as_str(), None),
            };
            if id.is_empty() || id.contains(',') {
                return Err(SshFlagError::Syntax {
                    flag: flag.clone(),
                    reason: "expected `default`, `ID` or `ID=SOCKET[,SOCKET]`",
                });
            }
            let paths: Vec<PathBuf> = match paths {
                Some(p) => {
                    let list: Vec<PathBuf> = p
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect();
                    if list.is_empty() {
                        return Err(SshFlagError::Syntax {
                            flag: flag.clone(),
                            reason: "no socket after `=`",
                        });
                    }
                    list
                }
                None => match std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
                    Some(s) => vec![PathBuf::from(s)],
                    None => return Err(SshFlagError::NoAuthSock { id: id.into() }),
                },
            };
            for p in &paths {
                let meta = std::fs::metadata(p).map_err(|source| SshFlagError::Stat {
                    id: id.into(),
                    path: p.clone(),
                    source,
                })?;
                if !meta.file_type().is_socket() {
                    return Err(SshFlagError::NotSocket {
                        id: id.into(),
                        path: p.clone(),
                    });
                }
            }
            if out.0.insert(id.to_string(), paths).is_some() {
                return Err(SshFlagError::Duplicate { id: id.into() });
            }
        }
        Ok(out)
    }

    /// Adds an agent without checks (tests, library callers).
    pub fn insert(&mut self, id: impl Into<String>, sockets: Vec<PathBuf>) {
        self.0.insert(id.into(), sockets);
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn sockets(&self, id: &str) -> Option<&[PathBuf]> {
        self.0.get(id).map(Vec::as_slice)
    }
}

/// A socket relaying to an agent, for one mount of one step. Dropping it
/// stops accepting (connections already made run until either side closes,
/// which the step's end does); the socket file goes with the private
/// directory it is in.
pub(crate) struct Relay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on `path` (in a private directory), `mode` and, for kiln run
    /// by root, owner `uid:gid` (the IDs the step sees through its idmapped
    /// mount; rootless the invoking user is the step's root, the only owner
    /// it can give), and relays to the first of `sockets` that accepts.
    pub(crate) fn start(
        path: &Path,
        sockets: &[PathBuf],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<Relay> {
        let listener = UnixListener::bind(path)?;
        // polled, so that stopping needs no wake-up through the socket file
        // (which the step's scratch directory may have lost by then)
        listener.set_nonblocking(true)?;
        if rustix::process::geteuid().is_root() && (uid, gid) != (0, 0) {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = sockets.to_vec();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kiln-ssh-relay".into())
                .spawn(move || accept_loop(&listener, &sockets, &stop))?
        };
        Ok(Relay {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often a relay looks for a connection or the end of its step.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

fn accept_loop(listener: &UnixListener, sockets: &[PathBuf], stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ssh relay: accept failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if let Err(e) = client.set_nonblocking(false) {
            tracing::warn!(error = %e, "ssh relay: cannot relay a connection");
            continue;
        }
        let Some(agent) = sockets.iter().find_map(|s| UnixStream::connect(s).ok()) else {
            // the client sees its connection closed, as with a dead agent
            tracing::warn!("ssh relay: no agent socket of the `--ssh` id accepts a connection");
            continue;
        };
        if let Err(e) = relay(client, agent) {
            tracing::warn!(error = %e, "ssh relay: cannot relay a connection");
        }
    }
}

/// Copies both ways until each side closes its end.
fn relay(client: UnixStream, agent: UnixStream) -> io::Result<()> {
    let (mut c_read, mut a_write) = (client.try_clone()?, agent.try_clone()?);
    let (mut a_read, mut c_write) = (agent, client);
    std::thread::Builder::new()
        .name("kiln-ssh-up".into())
        .spawn(move || {
            let _ = io::copy(&mut c_read, &mut a_write);
            let _ = a_write.shutdown(std::net::Shutdown::Write);
        })?;
    std::thread::Builder::new()
        .name("kiln-ssh-down".into())
        .spawn(move || {
            let _ = io::copy(&mut a_read, &mut c_write);
            let _ = c_write.shutdown(std::net::Shutdown::Write);
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    #[test]
    fn flags_read_like_buildx() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        let file = dir.path().join("id_ed25519");
        std::fs::write(&file, "key").unwrap();
        let s = sock.display().to_string();
        let a = SshAgents::from_flags(&[format!("deploy={s},{s}")]).unwrap();
        assert_eq!(a.sockets("deploy").unwrap().len(), 2);
        assert!(matches!(
            SshAgents::from_flags(&[format!("k={}", file.display())]),
            Err(SshFlagError::NotSocket { .. })
        ));
        assert!(matches!(
            SshAgents::from_flags(&["k=".into()]),
            Err(SshFlagError::Syntax { .. })
        ));
        assert!(matches!(
            SshAgents::from_flags(&[format!("a={s}"), format!("a={s}")]),
            Err(SshFlagError::Duplicate { .. })
        ));
        assert!(matches!(
            SshAgents::from_flags(&["a=/nonexistent/agent".into()]),
            Err(SshFlagError::Stat { .. })
        ));
        // the debug form names ids, never paths
        assert!(!format!("{a:?}").contains(&s));
    }

    #[test]
    fn relay_carries_bytes_both_ways_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent");
        let agent = UnixListener::bind(&agent_path).unwrap();
        let echo = std::thread::spawn(move || {
            let (mut c, _) = agent.accept().unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf).unwrap();
        });
        let relay_path = dir.path().join("relay");
        let missing = dir.path().join("gone");
        let relay = Relay::start(&relay_path, &[missing, agent_path], 0o600, 0, 0).unwrap();
        let mode = std::fs::metadata(&relay_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut c = UnixStream::connect(&relay_path).unwrap();
        c.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        echo.join().unwrap();
        drop(relay);
        // nobody accepts any more: the connection is refused or closed
        let after = UnixStream::connect(&relay_path);
        if let Ok(mut s) = after {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).unwrap_or(0), 0);
        }
    }
}
