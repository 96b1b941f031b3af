//! The parent side: prepares a step, starts the sandbox child (spawn of
//! the helper executable through std::process), writes its ID maps, streams
//! its output, enforces the timeout and cleans up.
//!
//! This is blocking code. Call it from a plain thread (in tokio:
//! `spawn_blocking`), never from inside an async task: the child is killed
//! (PR_SET_PDEATHSIG) when the *thread* that started it exits, so that
//! thread must outlive the sandbox, which a blocking call guarantees.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_layer::IdMapping;
use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::hints::{UsernsSettings, userns_hint};
use crate::passwd::{self, ResolvedUser, UserError};
use crate::proto::{ChildConfig, FD_ENV, GO, PARENT_ENV, ToParent};
use crate::spec::{Driver, DriverChoice, MountKind, Network, SandboxSpec};
use crate::subid::{
    MapPlan, ROOT_FALLBACK_COUNT, ROOT_FALLBACK_START, SubRange, find_range, single_id_warning,
};

/// The hidden subcommand of the kiln binary that runs [`crate::child_main`].
pub const CHILD_SUBCOMMAND: &str = "__sandbox-child";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid sandbox spec: {what}")]
    Spec { what: String },
    #[error("cannot resolve the step's user: {0}")]
    User(#[from] UserError),
    #[error("cannot create a user namespace ({source}): {hint}")]
    UserNamespaces {
        hint: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{tool}` is not installed but `/etc/subuid` gives user `{user}` a range: install the uidmap package (it provides newuidmap and newgidmap)"
    )]
    NewuidmapMissing { tool: String, user: String },
    #[error(
        "the isolated network needs `slirp4netns`, which is not installed: install the Debian package `slirp4netns`"
    )]
    SlirpMissing,
    #[error("cannot start the isolated network with `{tool}`")]
    Network {
        tool: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the id maps of the sandbox with `{tool}`: {message}")]
    IdMap { tool: String, message: String },
    #[error("cannot start the sandbox helper `{helper}`")]
    Spawn {
        helper: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare the sandbox state directory next to `{upper}`")]
    State {
        upper: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the snapshot driver refused to mount the rootfs: {message}; run `kiln info` to see what this machine supports"
    )]
    Overlay { message: String },
    #[error("sandbox setup failed at `{stage}`: {message}")]
    Setup { stage: String, message: String },
    #[error("cannot run `{program}` in the sandbox: {message}")]
    Exec { program: String, message: String },
    #[error("lost contact with the sandbox child: {what}")]
    Protocol { what: String },
    #[error("sandbox i/o failed while {what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Which of the child's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How the step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// The result of a finished sandbox.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: ExitStatus,
    /// killed because [`SandboxSpec::timeout`] passed
    pub timed_out: bool,
    /// cancelled through the cancel flag
    pub cancelled: bool,
    pub driver: Driver,
    /// container-to-host mapping in effect; pass it as
    /// `WriteOptions::id_map` when turning the upper directory into a layer
    pub id_mapping: IdMapping,
    pub plan: MapPlan,
    pub warnings: Vec<String>,
    pub duration: Duration,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status == ExitStatus::Code(0) && !self.timed_out && !self.cancelled
    }
}

/// What `kiln info` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostReport {
    pub root: bool,
    pub user: String,
    pub id_mapping: String,
    pub single_id: bool,
    pub warnings: Vec<String>,
    /// the snapshot driver that works here, or why none does
    pub driver: Result<String, String>,
    /// namespaces the sandbox could create
    pub namespaces: Vec<String>,
    pub newuidmap: Option<PathBuf>,
}

fn host_user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Decides the ID mapping for this process: identity for real root, the
/// subordinate ranges when /etc/subuid and /etc/subgid have them, else a
/// single ID with a warning.
pub fn plan_mapping() -> Result<(MapPlan, Vec<String>), RuntimeError> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let name = host_user_name(uid);
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
    if uid == 0 {
        // never the identity map: a step's root would pass every permission
        // check on host objects (global sysctls, /dev inodes)
        let fallback = SubRange {
            start: ROOT_FALLBACK_START,
            count: ROOT_FALLBACK_COUNT,
        };
        let plan = match (
            find_range(&subuid, &name, uid),
            find_range(&subgid, &name, uid),
        ) {
            (Some(uids), Some(gids)) if uids.start > 0 && gids.start > 0 => MapPlan::Root {
                uids,
                gids,
                from_subid: true,
            },
            _ => MapPlan::Root {
                uids: fallback,
                gids: fallback,
                from_subid: false,
            },
        };
        return Ok((plan, Vec::new()));
    }
    match (
        find_range(&subuid, &name, uid),
        find_range(&subgid, &name, uid),
    ) {
        (Some(uids), Some(gids)) => {
            for tool in ["newuidmap", "newgidmap"] {
                if find_tool(tool).is_none() {
                    return Err(RuntimeError::NewuidmapMissing {
                        tool: tool.into(),
                        user: name,
                    });
                }
            }
            Ok((
                MapPlan::Subordinate {
                    uid,
                    gid,
                    uids,
                    gids,
                },
                Vec::new(),
            ))
        }
        _ => Ok((MapPlan::Single { uid, gid }, vec![single_id_warning(&name)])),
    }
}

fn write_maps(plan: &MapPlan, pid: u32) -> Result<(), RuntimeError> {
    let write = |file: &str, data: &str| {
        std::fs::write(format!("/proc/{pid}/{file}"), data).map_err(|e| RuntimeError::IdMap {
            tool: format!("/proc/{pid}/{file}"),
            message: e.to_string(),
        })
    };
    match *plan {
        MapPlan::Root { uids, gids, .. } => {
            write("uid_map", &format!("0 {} {}\n", uids.start, uids.count))?;
            write("gid_map", &format!("0 {} {}\n", gids.start, gids.count))
        }
        MapPlan::Single { uid, gid } => {
            // an unprivileged gid_map needs setgroups denied first
            // (user_namespaces(7), "Interaction with system calls changing process GIDs")
            write("setgroups", "deny")?;
            write("uid_map", &format!("0 {uid} 1\n"))?;
            write("gid_map", &format!("0 {gid} 1\n"))
        }
        MapPlan::Subordinate {
            uid,
            gid,
            uids,
            gids,
        } => {
            // both set-ID helpers at once
            let mut running = Vec::new();
            for (tool, own, r) in [("newuidmap", uid, uids), ("newgidmap", gid, gids)] {
                let child = Command::new(tool)
                    .args([
                        pid.to_string(),
                        "0".into(),
                        own.to_string(),
                        "1".into(),
                        "1".into(),
                        r.start.to_string(),
                        r.count.to_string(),
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| RuntimeError::IdMap {
                        tool: tool.into(),
                        message: e.to_string(),
                    })?;
                running.push((tool, child));
            }
            let mut first_err = None;
            for (tool, child) in running {
                let res = child.wait_with_output();
                let err = match res {
                    Ok(out) if out.status.success() => continue,
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                first_err.get_or_insert(RuntimeError::IdMap {
                    tool: tool.into(),
                    message: err,
                });
            }
            first_err.map_or(Ok(()), Err)
        }
    }
}

/// Reads `etc/passwd` and `etc/group` from the topmost lower that has them.
fn image_file(lowers: &[PathBuf], rel: &str) -> String {
    lowers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join(rel)).ok())
        .unwrap_or_default()
}

fn resolve_user(spec: &SandboxSpec) -> Result<ResolvedUser, RuntimeError> {
    let Some(u) = spec.user.as_deref() else {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: passwd::resolve("0", &image_file(&spec.lowers, "etc/passwd"), "")
                .map(|u| u.home)
                .unwrap_or_else(|_| "/root".into()),
        });
    };
    Ok(passwd::resolve(
        u,
        &image_file(&spec.lowers, "etc/passwd"),
        &image_file(&spec.lowers, "etc/group"),
    )?)
}

fn step_env(spec: &SandboxSpec, user: &ResolvedUser) -> Vec<String> {
    let mut env = spec.env.clone();
    let has = |k: &str| spec.env.iter().any(|e| e.split('=').next() == Some(k));
    if !has("PATH") {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if !has("HOME") {
        env.push(format!("HOME={}", user.home));
    }
    if !has("HOSTNAME") {
        env.push(format!("HOSTNAME={}", spec.hostname));
    }
    env
}

/// Removes the mount points the child had to create from the upper
/// directory, when they are still empty stubs, deepest first (BuildKit does
/// the same: a mount target is not a change of the step). Creating a stub
/// also copied its parent directories up; such a copy that is still empty
/// and has the mode and owner of the lower directory is dropped too, so only
/// its mtime, which the stub itself changed, is lost. A directory copied up
/// from the mount-target layer (`stub_dirs`, made by `owner`, mode 0755)
/// counts as unchanged the same way.
fn remove_stubs(
    upper: &Path,
    lowers: &[PathBuf],
    stubs: &[String],
    stub_dirs: &[String],
    owner: (u32, u32),
) {
    use std::os::unix::fs::MetadataExt;
    let mut ancestors: Vec<PathBuf> = Vec::new();
    for s in stubs.iter().rev() {
        let p = upper.join(s);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&p);
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(&p);
            }
            _ => {}
        }
        let mut a = Path::new(s).parent();
        while let Some(dir) = a.filter(|d| !d.as_os_str().is_empty()) {
            if !ancestors.iter().any(|x| x == dir) {
                ancestors.push(dir.to_path_buf());
            }
            a = dir.parent();
        }
    }
    // deepest first
    ancestors.sort_by_key(|a| std::cmp::Reverse(a.components().count()));
    for rel in ancestors {
        let up = upper.join(&rel);
        let Ok(um) = std::fs::symlink_metadata(&up) else {
            continue;
        };
        let empty = std::fs::read_dir(&up)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !um.is_dir() || !empty {
            continue;
        }
        let opaque = [b"user.overlay.opaque".as_slice(), b"trusted.overlay.opaque"]
            .iter()
            .any(|n| {
                let mut v = [0u8; 4];
                rustix::fs::lgetxattr(&up, std::ffi::OsStr::from_bytes(n), &mut v).is_ok()
            });
        let lower = lowers
            .iter()
            .rev()
            .find_map(|l| std::fs::symlink_metadata(l.join(&rel)).ok());
        let unchanged = match lower {
            Some(lm) => {
                lm.is_dir()
                    && lm.mode() == um.mode()
                    && lm.uid() == um.uid()
                    && lm.gid() == um.gid()
            }
            None => {
                stub_dirs.iter().any(|d| Path::new(d) == rel)
                    && um.mode() & 0o7777 == 0o755
                    && (um.uid(), um.gid()) == owner
            }
        };
        if unchanged && !opaque {
            let _ = std::fs::remove_dir(&up);
        }
    }
}

/// Runs sandboxes by re-executing a helper executable (the kiln binary,
/// `/proc/self/exe`) with [`CHILD_SUBCOMMAND`].
#[derive(Debug, Clone)]
pub struct Runtime {
    helper: PathBuf,
    /// extra arguments before the subcommand (none for kiln itself)
    helper_args: Vec<String>,
}

struct Started {
    child: std::process::Child,
    sock: OwnedFd,
    /// none for helper jobs (apply, write, chown), which mount nothing
    state: Option<StateDir>,
    /// what to send idmapped with `GO` (real root's steps and probes)
    idmap: Vec<PathBuf>,
    /// real root's copying driver: the copy this process made, diffed here
    /// once the step exited
    copied: Option<(PathBuf, crate::copy::Manifest)>,
    network: Network,
    /// the isolated network's slirp4netns, from `NeedMaps` until the step
    /// ended
    slirp: Option<crate::slirp::Slirp>,
}

/// How many supervisors of finished steps are still removing their state
/// directory (see [`Runtime::run`]); each has a thread that reaps it.
static CLEANUPS: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// Waits until the supervisors of finished steps have removed their state
/// directories. [`Runtime::run`] returns as soon as the step's status is
/// known and its namespaces and mounts are gone; the state directory beside
/// the upper directory is removed after that by the sandbox's supervisor
/// process, which survives the caller if need be (so a caller that exits
/// right away does not leave it behind). Call this to be sure it is gone
/// (tests, benchmarks of the full teardown).
pub fn wait_for_cleanup() {
    let (count, done) = &CLEANUPS;
    let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
    while *n > 0 {
        n = done.wait(n).unwrap_or_else(|e| e.into_inner());
    }
}

impl Started {
    /// Leaves the state directory to the supervisor, which removes it after
    /// reporting the exit; a thread reaps it and removes whatever a dying
    /// supervisor left.
    fn hand_off(self) {
        let Started {
            mut child, state, ..
        } = self;
        let (count, done) = &CLEANUPS;
        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let reap = move || {
            let _ = child.wait();
            drop(state);
            *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            done.notify_all();
        };
        if let Err(e) = std::thread::Builder::new()
            .name("kiln-sandbox-reaper".into())
            .spawn(reap)
        {
            // the closure was dropped: the state directory was removed
            // here (racing the supervisor, harmlessly); the supervisor stays
            // a zombie until this process exits
            tracing::warn!("cannot start a thread to reap the sandbox supervisor: {e}");
            *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        }
    }

    /// Kills the supervisor (a no-op once it is gone), reaps it and removes
    /// the state directory here and now.
    fn finish(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sandbox's state directory (overlay workdir, mountpoint), removed on
/// drop, on every path. Overlay leaves `work/work` with mode 000 (owned by
/// us, as the namespace's root), which plain removal cannot enter as an
/// unprivileged user: directories are opened up first.
struct StateDir(PathBuf);

pub(crate) fn force_remove(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::symlink_metadata(p)
        && m.is_dir()
    {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                force_remove(&e.path());
            }
        }
        let _ = std::fs::remove_dir(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        force_remove(&self.0);
        if self.0.exists() {
            tracing::warn!(path = %self.0.display(), "sandbox state directory not fully removed");
        }
    }
}

impl Runtime {
    /// `helper` runs [`crate::child_main`] when given [`CHILD_SUBCOMMAND`].
    pub fn new(helper: impl Into<PathBuf>) -> Self {
        Runtime {
            helper: helper.into(),
            helper_args: Vec::new(),
        }
    }

    /// The running kiln binary as the helper.
    pub fn current_exe() -> Self {
        Runtime::new("/proc/self/exe")
    }

    fn start(
        &self,
        cfg: &mut ChildConfig,
        state_parent: &Path,
        upper: &Path,
    ) -> Result<Started, RuntimeError> {
        let state_err = |source| RuntimeError::State {
            upper: upper.to_path_buf(),
            source,
        };
        let job = cfg.apply.is_some() || cfg.write.is_some() || cfg.chown.is_some();
        let state = if job {
            // helper jobs mount nothing: no state directory
            None
        } else {
            Some(self.state_dir(cfg, state_parent).map_err(state_err)?)
        };
        if !job && rustix::process::geteuid().is_root() {
            // real root's sandbox is unprivileged on the host: it sees the
            // store's directories through idmapped mounts (idmap.rs)
            let sources = cfg.mounts.iter().filter_map(|m| match &m.kind {
                MountKind::Bind { source, .. }
                | MountKind::Cache { source }
                | MountKind::Secret { source }
                | MountKind::Socket { source } => Some(source.clone()),
                MountKind::Tmpfs { .. } => None,
            });
            let lowers = cfg
                .lowers_top_first
                .iter()
                .filter_map(|l| l.parent().map(Path::to_path_buf));
            let sources: Vec<PathBuf> = sources
                .map(std::path::absolute)
                .collect::<Result<_, _>>()
                .map_err(state_err)?;
            cfg.idmap = crate::idmap::roots(
                lowers
                    .chain(std::iter::once(state_parent.to_path_buf()))
                    .chain(sources),
            );
            // The supervisor stays the host's kuid 0 in the namespace: it
            // may walk the store's private ancestors (it owns them) and
            // remove the state directory, whose entries overlay made as
            // on-disk 0 through the idmapped mount. It may not copy lowers
            // of other owners: this process makes the copying driver's copy
            // and diff, as real root, keeping every owner, and then removes
            // the state directory itself (the reaper drops it), so that the
            // supervisor's removal does not race the diff.
            if cfg.driver == DriverChoice::Copy {
                cfg.cleanup = None;
            }
        }
        let copied = if !cfg.idmap.is_empty() && cfg.driver == DriverChoice::Copy && !cfg.probe {
            let dest = cfg.rootfs.join("copy");
            let made = std::fs::create_dir(&dest)
                .and_then(|()| crate::copy::populate(&cfg.lowers_top_first, &dest));
            let manifest = made.map_err(|e| RuntimeError::Setup {
                stage: "copy the lower directories".into(),
                message: e.to_string(),
            })?;
            Some((dest, manifest))
        } else {
            None
        };
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| RuntimeError::Io {
            what: "creating the control socket",
            source: e.into(),
        })?;
        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = Command::new(&self.helper);
        cmd.args(&self.helper_args)
            .arg(CHILD_SUBCOMMAND)
            .env_clear()
            .env(PARENT_ENV, std::process::id().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The child makes its own session and asks to die with this thread
        // (child.rs). Without a pre_exec hook std spawns it with
        // posix_spawn(3), a vfork-like clone that shares our memory until
        // the exec, instead of fork(2) copying the page tables of a
        // many-threaded kiln: the socket then travels as the child's stdin.
        if cfg.apply.is_some() {
            // the layer's bytes come on stdin: the socket goes by number
            cmd.env(FD_ENV, theirs_raw.to_string())
                .stdin(Stdio::piped());
            // SAFETY: only an async-signal-safe call between fork and exec
            unsafe {
                cmd.pre_exec(move || {
                    // keep the child's socket across exec
                    if libc::fcntl(theirs_raw, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        } else {
            let theirs = theirs.try_clone().map_err(|e| RuntimeError::Io {
                what: "passing the control socket",
                source: e,
            })?;
            cmd.env(FD_ENV, "0").stdin(Stdio::from(theirs));
        }
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            helper: self.helper.clone(),
            source,
        })?;
        // our copies of the child's end: the socket must see the child go
        drop(cmd);
        drop(theirs);
        let bytes = serde_json::to_vec(&*cfg).map_err(|e| RuntimeError::Protocol {
            what: e.to_string(),
        })?;
        rustix::net::send(&ours, &bytes, SendFlags::NOSIGNAL).map_err(|e| RuntimeError::Io {
            what: "sending the sandbox config (too many mounts or env?)",
            source: e.into(),
        })?;
        Ok(Started {
            child,
            sock: ours,
            state,
            idmap: cfg.idmap.clone(),
            copied,
            network: if job { Network::Host } else { cfg.network },
            slirp: None,
        })
    }

    /// Makes the state directory beside the upper directory (overlay wants
    /// its workdir on the upper's filesystem) and points `cfg` at it.
    /// (Each directory costs a mkdir here and an rmdir later: only what is
    /// needed.)
    fn state_dir(&self, cfg: &mut ChildConfig, parent: &Path) -> io::Result<StateDir> {
        let state = StateDir(
            tempfile::Builder::new()
                .prefix(".kiln-sandbox-")
                .tempdir_in(parent)?
                .keep(),
        );
        // the state directory is the kernel overlay's workdir (the overlay
        // is mounted on the upper directory); fuse-overlayfs and the copying
        // driver make what they need below it
        // (no lower at all: the kernel overlay has the mount-target layer,
        // fuse-overlayfs gets an empty directory; never one inside the
        // workdir, which overlay refuses as overlapping)
        cfg.work = state.0.clone();
        cfg.rootfs = state.0.clone();
        if !cfg.probe {
            cfg.cleanup = Some(state.0.clone());
        }
        if cfg.network == Network::Isolated && !cfg.probe {
            cfg.net_files = crate::slirp::write_etc(&state.0, &cfg.hostname)?;
        }
        if !cfg.extra_hosts.is_empty() && !cfg.probe {
            let hosts = crate::hosts::write(&state.0, cfg.network, &cfg.extra_hosts)?;
            cfg.net_files.retain(|(_, target)| target != "/etc/hosts");
            cfg.net_files.push((hosts, "/etc/hosts".into()));
        }
        Ok(state)
    }

    /// Runs one step. `output` receives stdout and stderr as they come;
    /// `cancel`, when set, kills the step (checked every 50 ms).
    ///
    /// The driver is `spec.driver`, or with `Auto` the one `KILN_SANDBOX_DRIVER`
    /// names (`overlay`, `fuse-overlayfs`, `copy`); `Auto` falls back to the
    /// copying driver, with a warning, once overlay and fuse-overlayfs refused.
    pub fn run(
        &self,
        spec: &SandboxSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancel: Option<&AtomicBool>,
    ) -> Result<Outcome, RuntimeError> {
        let choice = match spec.driver {
            DriverChoice::Auto => match std::env::var("KILN_SANDBOX_DRIVER") {
                Ok(v) => DriverChoice::parse(&v).ok_or_else(|| RuntimeError::Spec {
                    what: format!(
                        "KILN_SANDBOX_DRIVER=`{v}` is not a driver: use overlay, fuse-overlayfs or copy"
                    ),
                })?,
                Err(_) if COPY_FALLBACK.load(std::sync::atomic::Ordering::Relaxed) => {
                    DriverChoice::Copy
                }
                Err(_) => DriverChoice::Auto,
            },
            d => d,
        };
        match self.run_with(spec, choice, output, cancel) {
            Err(RuntimeError::Overlay { message }) if choice == DriverChoice::Auto => {
                COPY_FALLBACK.store(true, std::sync::atomic::Ordering::Relaxed);
                let w = format!(
                    "no overlay here ({message}); using the copying snapshot driver, which is much slower"
                );
                tracing::warn!("{w}");
                let mut o = self.run_with(spec, DriverChoice::Copy, output, cancel)?;
                o.warnings.insert(0, w);
                Ok(o)
            }
            r => r,
        }
    }

    fn run_with(
        &self,
        spec: &SandboxSpec,
        driver: DriverChoice,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancel: Option<&AtomicBool>,
    ) -> Result<Outcome, RuntimeError> {
        let t0 = Instant::now();
        if spec.args.is_empty() {
            return Err(RuntimeError::Spec {
                what: "no command (args is empty)".into(),
            });
        }
        if !spec.upper.is_dir() {
            return Err(RuntimeError::Spec {
                what: format!(
                    "the upper directory `{}` does not exist",
                    spec.upper.display()
                ),
            });
        }
        for l in &spec.lowers {
            if !l.is_dir() {
                return Err(RuntimeError::Spec {
                    what: format!("the lower directory `{}` does not exist", l.display()),
                });
            }
        }
        let user = resolve_user(spec)?;
        let (plan, mut warnings) = plan_mapping()?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let single = matches!(plan, MapPlan::Single { .. });
        let upper = std::path::absolute(&spec.upper).map_err(|source| RuntimeError::State {
            upper: spec.upper.clone(),
            source,
        })?;
        let mut cfg = ChildConfig {
            probe: false,
            write: None,
            chown: None,
            apply: None,
            lowers_top_first: spec
                .lowers
                .iter()
                .rev()
                .map(std::path::absolute)
                .collect::<Result<_, _>>()
                .map_err(|source| RuntimeError::State {
                    upper: spec.upper.clone(),
                    source,
                })?,
            upper: upper.clone(),
            work: PathBuf::new(),
            rootfs: PathBuf::new(),
            mounts: spec.mounts.clone(),
            args: spec.args.clone(),
            env: step_env(spec, &user),
            cwd: spec.cwd.clone(),
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            setgroups: !single,
            hostname: spec.hostname.clone(),
            network: spec.network,
            driver,
            cleanup: None,
            idmap: Vec::new(),
            pids_limit: spec.pids_limit.unwrap_or(crate::spec::DEFAULT_PIDS_LIMIT),
            net_files: Vec::new(),
            extra_hosts: spec.extra_hosts.clone(),
            rlimits: crate::harden::resolve_rlimits(&spec.rlimits)
                .map_err(|what| RuntimeError::Spec { what })?,
        };
        let state_parent = upper.parent().unwrap_or(Path::new("/tmp")).to_path_buf();
        let mut st = self.start(&mut cfg, &state_parent, &upper)?;
        let deadline = spec.timeout.map(|t| t0 + t);
        let mut r = drive(&mut st, &plan, output, cancel, deadline);
        // the step is over (or never ran): its network goes now, whoever
        // removes the state directory
        drop(st.slirp.take());
        if let (Some((dest, manifest)), Ok(d)) = (st.copied.take(), &mut r) {
            // a killed step (timeout, cancel) leaves nothing anyone will read
            if d.exited
                && d.status != Some(ExitStatus::Signal(libc::SIGKILL))
                && let Err(e) = crate::copy::diff(&dest, &manifest, &cfg.upper)
            {
                d.failed.get_or_insert(Failure {
                    stage: "move the step's changes to the upper directory".into(),
                    error: e.to_string(),
                    errno: e.raw_os_error(),
                });
            }
        }
        if matches!(&r, Ok(d) if d.exited) {
            // the step's mounts died with its mount namespace before the
            // supervisor reported; it now removes the state directory
            st.hand_off();
        } else {
            st.finish();
        }
        let mut d = r?;
        if !d.stubs.is_empty() {
            let owner = match &plan {
                MapPlan::Root { .. } => (0, 0),
                MapPlan::Single { uid, gid } | MapPlan::Subordinate { uid, gid, .. } => {
                    (*uid, *gid)
                }
            };
            let stub_dirs =
                crate::child::stub_dirs(&spec.mounts, spec.network, !spec.extra_hosts.is_empty());
            remove_stubs(&upper, &spec.lowers, &d.stubs, &stub_dirs, owner);
        }
        if let Some(f) = d.failed.take() {
            return Err(classify_failure(f, &cfg.args[0]));
        }
        warnings.append(&mut d.warnings);
        let (Some(status), Some(driver)) = (d.status, d.driver) else {
            return Err(RuntimeError::Protocol {
                what: "the sandbox child ended without reporting the step's exit".into(),
            });
        };
        Ok(Outcome {
            status,
            timed_out: d.timed_out,
            cancelled: d.cancelled,
            driver,
            id_mapping: plan.disk_mapping(),
            plan,
            warnings,
            duration: t0.elapsed(),
        })
    }

    /// Applies a layer tar (uncompressed, from `layer`) to `target` inside a
    /// user namespace with this process's mapping, so that ownership is
    /// kept even rootless: the tar's IDs are container IDs, stored on disk as
    /// the mapped host IDs, ready to serve as a sandbox lower directory
    /// (`overlay` true: whiteouts stay in overlay form) or as a merged tree.
    /// Confinement is [`kiln_layer::apply_tar`]'s. Blocking, like [`Runtime::run`].
    pub fn apply_layer(
        &self,
        layer: &mut (dyn io::Read + Send),
        target: &Path,
        overlay: bool,
    ) -> Result<kiln_layer::ApplySummary, RuntimeError> {
        let (plan, warnings) = plan_mapping()?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let max_size = kiln_layer::max_size_from_env();
        if plan.is_root() {
            // real root needs no namespace: its store holds container IDs
            let opts = layer_apply_options(overlay, max_size);
            return kiln_layer::apply_tar(layer, target, &opts).map_err(|e| RuntimeError::Setup {
                stage: "apply the layer".into(),
                message: e.to_string(),
            });
        }
        let target = std::path::absolute(target).map_err(|source| RuntimeError::State {
            upper: target.to_path_buf(),
            source,
        })?;
        let mut cfg = ChildConfig {
            apply: Some(crate::proto::ApplyJob {
                target: target.clone(),
                overlay,
                max_size,
            }),
            ..ChildConfig::job(target.clone())
        };
        let parent = target.parent().unwrap_or(Path::new("/tmp")).to_path_buf();
        let mut st = self.start(&mut cfg, &parent, &target)?;
        let mut stdin = st.child.stdin.take().expect("piped stdin");
        let d = std::thread::scope(|s| {
            // feed the tar while the main thread answers the child
            let feeder = s.spawn(move || {
                let r = io::copy(layer, &mut stdin);
                drop(stdin);
                r
            });
            let d = drive(&mut st, &plan, &mut |_, _| {}, None, None);
            let fed = feeder
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("feeder panicked")));
            (d, fed)
        });
        let _ = st.child.kill();
        let _ = st.child.wait();
        let (d, fed) = d;
        let mut d = d?;
        if let Some(f) = d.failed.take() {
            return Err(classify_failure(f, "apply"));
        }
        match fed {
            // The child stops reading at the tar's end-of-archive block;
            // padding after it meets a closed pipe (EPIPE), which does not
            // matter once the child reported what it applied.
            Err(source) if !(source.kind() == io::ErrorKind::BrokenPipe && d.applied.is_some()) => {
                return Err(RuntimeError::Io {
                    what: "feeding the layer to the sandbox child",
                    source,
                });
            }
            _ => {}
        }
        d.applied.ok_or_else(|| RuntimeError::Protocol {
            what: "the apply child ended without a summary".into(),
        })
    }

    /// Writes `dir` (a step's upper directory) as a layer tar to `out`, and
    /// with `remove` then deletes it. Rootless, a step leaves files of
    /// subordinate IDs with modes that shut out the calling user (apt's 0700
    /// `/var/cache/apt/archives/partial`, owned by `_apt`), so the tar is
    /// written inside a user namespace with this process's mapping, where
    /// such files read as their container IDs; `opts.id_map` is not used
    /// then. As real root (whose store holds container IDs) it is written right here.
    pub fn write_layer(
        &self,
        dir: &Path,
        out: &mut dyn io::Write,
        opts: &kiln_layer::WriteOptions,
        remove: bool,
    ) -> Result<kiln_layer::WriteSummary, RuntimeError> {
        let (plan, _) = plan_mapping()?;
        if plan.is_root() {
            let sum =
                kiln_layer::write_tar(dir, &mut *out, opts).map_err(|e| RuntimeError::Setup {
                    stage: "write the layer".into(),
                    message: e.to_string(),
                })?;
            if remove {
                std::fs::remove_dir_all(dir).map_err(|source| RuntimeError::State {
                    upper: dir.to_path_buf(),
                    source,
                })?;
            }
            return Ok(sum);
        }
        let dir = std::path::absolute(dir).map_err(|source| RuntimeError::State {
            upper: dir.to_path_buf(),
            source,
        })?;
        let mut cfg = ChildConfig {
            write: Some(crate::proto::WriteJob {
                dir: dir.clone(),
                overlay_whiteouts: opts.overlay_whiteouts,
                source_date_epoch: opts.source_date_epoch,
                xattrs: opts.xattrs,
                remove,
            }),
            ..ChildConfig::job(dir.clone())
        };
        let parent = dir.parent().unwrap_or(Path::new("/tmp")).to_path_buf();
        let mut st = self.start(&mut cfg, &parent, &dir)?;
        let mut write_err: Option<io::Error> = None;
        let mut stderr = Vec::new();
        let d = drive(
            &mut st,
            &plan,
            &mut |s, data| match s {
                Stream::Stdout if write_err.is_none() => {
                    if let Err(e) = out.write_all(data) {
                        write_err = Some(e);
                    }
                }
                Stream::Stdout => {}
                Stream::Stderr => stderr.extend_from_slice(data),
            },
            None,
            None,
        );
        let _ = st.child.kill();
        let _ = st.child.wait();
        let mut d = d?;
        if let Some(f) = d.failed.take() {
            return Err(classify_failure(f, "write the layer"));
        }
        if let Some(source) = write_err {
            return Err(RuntimeError::Io {
                what: "storing the layer written in the sandbox",
                source,
            });
        }
        d.written.ok_or_else(|| RuntimeError::Protocol {
            what: format!(
                "the layer-writing child ended without a summary: {}",
                String::from_utf8_lossy(&stderr).trim()
            ),
        })
    }

    /// Gives each `(path, uid, gid)` to those container IDs with lchown(2),
    /// keeping set-user-ID and set-group-ID bits. Rootless, the calling user
    /// may not chown to another ID, but the root of a user namespace with
    /// this process's mapping may, to any mapped ID: the file then belongs to
    /// the matching subordinate ID, which a layer records as the container
    /// ID. As real root (whose store holds container IDs) it is done right here. `scratch` is
    /// a directory for the child's state (not inside any of the paths' trees).
    pub fn chown(
        &self,
        scratch: &Path,
        entries: &[(PathBuf, u32, u32)],
    ) -> Result<(), RuntimeError> {
        if entries.is_empty() {
            return Ok(());
        }
        let (plan, _) = plan_mapping()?;
        let list: Vec<crate::proto::ChownEntry> = entries
            .iter()
            .map(|(p, uid, gid)| {
                std::path::absolute(p)
                    .map(|path| crate::proto::ChownEntry {
                        path,
                        uid: *uid,
                        gid: *gid,
                    })
                    .map_err(|source| RuntimeError::State {
                        upper: p.clone(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        let Some(first) = list.first().map(|e| e.path.clone()) else {
            return Ok(());
        };
        let mut cfg = ChildConfig {
            chown: Some(list),
            ..ChildConfig::job(first.clone())
        };
        if plan.is_root() {
            return chown_here(cfg.chown.as_deref().unwrap_or_default());
        }
        let mut st = self.start(&mut cfg, scratch, &first)?;
        let d = drive(&mut st, &plan, &mut |_, _| {}, None, None);
        let _ = st.child.kill();
        let _ = st.child.wait();
        let mut d = d?;
        if let Some(f) = d.failed.take() {
            return Err(classify_failure(f, "change owners"));
        }
        d.chowned.map(|_| ()).ok_or_else(|| RuntimeError::Protocol {
            what: "the chown child ended without a summary".into(),
        })
    }

    /// Tries what a sandbox needs (namespaces, ID maps, the snapshot driver)
    /// without running anything, for `kiln info`.
    pub fn probe(&self) -> HostReport {
        let uid = rustix::process::geteuid().as_raw();
        let mut report = HostReport {
            root: uid == 0,
            user: host_user_name(uid),
            id_mapping: String::new(),
            single_id: false,
            warnings: Vec::new(),
            driver: Err("not probed".into()),
            namespaces: Vec::new(),
            newuidmap: find_tool("newuidmap"),
        };
        let plan = match plan_mapping() {
            Ok((plan, warnings)) => {
                report.id_mapping = plan.describe();
                report.single_id = matches!(plan, MapPlan::Single { .. });
                report.warnings = warnings;
                plan
            }
            Err(e) => {
                report.id_mapping = format!("unavailable: {e}");
                report.driver = Err(e.to_string());
                return report;
            }
        };
        let dir = match tempfile::Builder::new().prefix("kiln-probe-").tempdir() {
            Ok(d) => d,
            Err(e) => {
                report.driver = Err(format!("cannot create a temp dir: {e}"));
                return report;
            }
        };
        let upper = dir.path().join("upper");
        let lower = dir.path().join("lower");
        let _ = std::fs::create_dir(&upper);
        let _ = std::fs::create_dir(&lower);
        let mut cfg = ChildConfig {
            probe: true,
            lowers_top_first: vec![lower],
            args: vec!["true".into()],
            hostname: "kiln".into(),
            network: Network::None,
            ..ChildConfig::job(upper.clone())
        };
        let result = self.start(&mut cfg, dir.path(), &upper).and_then(|mut st| {
            let r = drive(
                &mut st,
                &plan,
                &mut |_, _| {},
                None,
                Some(Instant::now() + Duration::from_secs(20)),
            );
            let _ = st.child.kill();
            let _ = st.child.wait();
            r
        });
        match result {
            Ok(d) => match (d.failed, d.driver) {
                (Some(f), _) => {
                    report.driver = match classify_failure(f, "probe") {
                        // the copying driver needs no mount: it always works
                        // where the namespaces do
                        RuntimeError::Overlay { message } => {
                            report.namespaces = ["user", "mount", "pid", "ipc", "uts", "net"]
                                .map(String::from)
                                .to_vec();
                            Ok(format!("copy (slow: {message})"))
                        }
                        e => Err(e.to_string()),
                    }
                }
                (None, Some(drv)) => {
                    report.driver = Ok(drv.name().into());
                    report.namespaces = ["user", "mount", "pid", "ipc", "uts", "net"]
                        .map(String::from)
                        .to_vec();
                }
                (None, None) => {
                    report.driver = Err("the probe child ended without an answer".into())
                }
            },
            Err(e) => report.driver = Err(e.to_string()),
        }
        report
    }
}

/// [`Runtime::chown`] as real root: the same calls, no namespace.
fn chown_here(entries: &[crate::proto::ChownEntry]) -> Result<(), RuntimeError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for e in entries {
        let err = |source| RuntimeError::State {
            upper: e.path.clone(),
            source,
        };
        let meta = std::fs::symlink_metadata(&e.path).map_err(err)?;
        std::os::unix::fs::lchown(&e.path, Some(e.uid), Some(e.gid)).map_err(err)?;
        if !meta.file_type().is_symlink() && meta.mode() & 0o6000 != 0 {
            std::fs::set_permissions(
                &e.path,
                std::fs::Permissions::from_mode(meta.mode() & 0o7777),
            )
            .map_err(err)?;
        }
    }
    Ok(())
}

/// Set once `Auto` found neither overlay nor fuse-overlayfs: later steps of
/// this process go straight to the copying driver.
static COPY_FALLBACK: AtomicBool = AtomicBool::new(false);

struct Failure {
    stage: String,
    error: String,
    errno: Option<i32>,
}

fn classify_failure(f: Failure, program: &str) -> RuntimeError {
    if f.stage == "unshare" {
        return RuntimeError::UserNamespaces {
            hint: userns_hint(&UsernsSettings::read()),
            source: f
                .errno
                .map(io::Error::from_raw_os_error)
                .unwrap_or_else(|| io::Error::other(f.error)),
        };
    }
    if f.stage.starts_with("exec ") {
        return RuntimeError::Exec {
            program: program.to_string(),
            message: f.error,
        };
    }
    if f.stage.contains("rootfs") && f.stage.starts_with("mount") {
        return RuntimeError::Overlay {
            message: format!("{}: {}", f.stage, f.error),
        };
    }
    RuntimeError::Setup {
        stage: f.stage,
        message: f.error,
    }
}

#[derive(Default)]
struct Driven {
    status: Option<ExitStatus>,
    driver: Option<Driver>,
    stubs: Vec<String>,
    warnings: Vec<String>,
    failed: Option<Failure>,
    /// the supervisor reported the step's exit
    exited: bool,
    timed_out: bool,
    cancelled: bool,
    applied: Option<kiln_layer::ApplySummary>,
    written: Option<kiln_layer::WriteSummary>,
    chowned: Option<u64>,
}

/// How a layer is applied with its owners kept (in-process as real root,
/// in the user namespace otherwise): whiteouts in overlay form for a lower
/// directory (`overlay`), else applied.
pub(crate) fn layer_apply_options(overlay: bool, max_size: u64) -> kiln_layer::ApplyOptions {
    kiln_layer::ApplyOptions {
        whiteouts: if overlay {
            kiln_layer::WhiteoutMode::Overlay(kiln_layer::OverlayXattr::User)
        } else {
            kiln_layer::WhiteoutMode::Delete
        },
        ownership: kiln_layer::Ownership::Keep,
        id_map: None,
        xattrs: true,
        max_size,
    }
}

/// The idmapped clones of `st.idmap`, made with the user namespace of the
/// supervisor `pid` (its maps are written).
fn idmapped(st: &Started, pid: u32) -> Result<Vec<OwnedFd>, RuntimeError> {
    if st.idmap.is_empty() {
        return Ok(Vec::new());
    }
    let setup = |e: io::Error| RuntimeError::Setup {
        stage: "idmapped mounts for root's sandbox".into(),
        message: e.to_string(),
    };
    let userns = std::fs::File::open(format!("/proc/{pid}/ns/user")).map_err(setup)?;
    crate::idmap::make(&st.idmap, userns.as_fd()).map_err(setup)
}

/// `GO`, with the idmapped mounts attached as SCM_RIGHTS (unix(7)).
fn send_go(sock: &OwnedFd, fds: &[OwnedFd]) -> rustix::io::Result<()> {
    if fds.is_empty() {
        return rustix::net::send(sock, GO, SendFlags::NOSIGNAL).map(drop);
    }
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
    let mut anc = rustix::net::SendAncillaryBuffer::new(&mut space);
    anc.push(rustix::net::SendAncillaryMessage::ScmRights(&borrowed));
    rustix::net::sendmsg(sock, &[io::IoSlice::new(GO)], &mut anc, SendFlags::NOSIGNAL).map(drop)
}

fn drive(
    st: &mut Started,
    plan: &MapPlan,
    output: &mut dyn FnMut(Stream, &[u8]),
    cancel: Option<&AtomicBool>,
    deadline: Option<Instant>,
) -> Result<Driven, RuntimeError> {
    let mut out = st.child.stdout.take();
    let mut err = st.child.stderr.take();
    let mut d = Driven::default();
    let mut init: Option<OwnedFd> = None;
    let mut sock_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    let pid = st.child.id();
    let mut killed = false;
    // until the socket closes, or, once the exit is reported (the
    // supervisor then removes its state directory), until the step's
    // output is drained
    while (sock_open && !d.exited) || out.is_some() || err.is_some() {
        let now = Instant::now();
        let expired = deadline.is_some_and(|dl| now >= dl);
        let cancelled = cancel.is_some_and(|c| c.load(Ordering::Relaxed));
        if (expired || cancelled) && !killed {
            killed = true;
            d.timed_out = expired;
            d.cancelled = cancelled && !expired;
            // killing pid 1 of the namespace kills every process in it
            // (pid_namespaces(7)); before the init exists, the supervisor
            match &init {
                Some(pidfd) => {
                    let _ =
                        rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
                }
                None => {
                    let _ = st.child.kill();
                }
            }
        }
        let mut wait_ms: i64 = if cancel.is_some() { 50 } else { -1 };
        if let (Some(dl), false) = (deadline, killed) {
            let left = dl.saturating_duration_since(now).as_millis() as i64 + 1;
            wait_ms = if wait_ms < 0 { left } else { wait_ms.min(left) };
        }
        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        if sock_open {
            fds.push(PollFd::new(&st.sock, PollFlags::IN));
            which.push(0);
        }
        if let Some(o) = &out {
            fds.push(PollFd::new(o, PollFlags::IN));
            which.push(1);
        }
        if let Some(e) = &err {
            fds.push(PollFd::new(e, PollFlags::IN));
            which.push(2);
        }
        let timeout = if wait_ms < 0 {
            None
        } else {
            Some(rustix::event::Timespec {
                tv_sec: wait_ms / 1000,
                tv_nsec: (wait_ms % 1000) * 1_000_000,
            })
        };
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(RuntimeError::Io {
                    what: "waiting for the sandbox",
                    source: e.into(),
                });
            }
        }
        let ready: Vec<(usize, bool)> = fds
            .iter()
            .zip(&which)
            .map(|(f, w)| (*w, !f.revents().is_empty()))
            .collect();
        drop(fds);
        for (w, is_ready) in ready {
            if !is_ready {
                continue;
            }
            match w {
                0 => {
                    let n = match rustix::net::recv(&st.sock, &mut buf[..], RecvFlags::DONTWAIT) {
                        Ok((n, _)) => n,
                        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
                        Err(_) => 0,
                    };
                    if n == 0 {
                        sock_open = false;
                        continue;
                    }
                    let msg: ToParent =
                        serde_json::from_slice(&buf[..n]).map_err(|e| RuntimeError::Protocol {
                            what: format!("bad message from the child: {e}"),
                        })?;
                    match msg {
                        ToParent::NeedMaps => {
                            let mut idmapped =
                                write_maps(plan, pid).and_then(|()| idmapped(st, pid));
                            // slirp4netns enters the user namespace too:
                            // after its maps; `tap0` is configured before
                            // the step starts
                            if idmapped.is_ok() && st.network == Network::Isolated {
                                match crate::slirp::Slirp::start(pid) {
                                    Ok(s) => st.slirp = Some(s),
                                    Err(e) => idmapped = Err(e),
                                }
                            }
                            let fds = match idmapped {
                                Ok(fds) => fds,
                                Err(e) => {
                                    let _ = rustix::net::send(&st.sock, b"no", SendFlags::NOSIGNAL);
                                    return Err(e);
                                }
                            };
                            send_go(&st.sock, &fds).map_err(|e| RuntimeError::Io {
                                what: "releasing the sandbox child",
                                source: e.into(),
                            })?;
                        }
                        ToParent::Driver(drv) => d.driver = Some(drv),
                        ToParent::Stubs(s) => d.stubs = s,
                        ToParent::InitPid(p) => {
                            if let Some(pid) = rustix::process::Pid::from_raw(p) {
                                init = rustix::process::pidfd_open(
                                    pid,
                                    rustix::process::PidfdFlags::empty(),
                                )
                                .ok();
                                if killed && let Some(fd) = &init {
                                    let _ = rustix::process::pidfd_send_signal(
                                        fd,
                                        rustix::process::Signal::KILL,
                                    );
                                }
                            }
                        }
                        ToParent::Warning(w) => d.warnings.push(w),
                        ToParent::Chowned(n) => d.chowned = Some(n),
                        ToParent::Written { entries, bytes } => {
                            d.written = Some(kiln_layer::WriteSummary { entries, bytes })
                        }
                        ToParent::Applied {
                            entries,
                            bytes,
                            skipped,
                        } => {
                            d.applied = Some(kiln_layer::ApplySummary {
                                entries,
                                bytes,
                                skipped: skipped
                                    .into_iter()
                                    .map(|(path, reason)| kiln_layer::Skipped { path, reason })
                                    .collect(),
                            })
                        }
                        ToParent::Failed {
                            stage,
                            error,
                            errno,
                        } => {
                            if d.failed.is_none() {
                                d.failed = Some(Failure {
                                    stage,
                                    error,
                                    errno,
                                });
                            }
                        }
                        ToParent::Exited { code, signal } => {
                            d.exited = true;
                            d.status = Some(match (code, signal) {
                                (Some(c), _) => ExitStatus::Code(c),
                                (None, Some(s)) => ExitStatus::Signal(s),
                                (None, None) => ExitStatus::Code(-1),
                            });
                        }
                    }
                }
                1 => {
                    if let Some(p) = out.as_ref() {
                        match read_pipe(p.as_fd(), &mut buf) {
                            Ok(0) | Err(_) => out = None,
                            Ok(n) => output(Stream::Stdout, &buf[..n]),
                        }
                    }
                }
                2 => {
                    if let Some(p) = err.as_ref() {
                        match read_pipe(p.as_fd(), &mut buf) {
                            Ok(0) | Err(_) => err = None,
                            Ok(n) => output(Stream::Stderr, &buf[..n]),
                        }
                    }
                }
                _ => unreachable!(),
            }
        }
        // a child that died before reporting leaves the socket open only
        // through its init; EOF on all three ends the loop
    }
    if d.status.is_none() && d.failed.is_none() && killed {
        d.status = Some(ExitStatus::Signal(libc::SIGKILL));
    }
    Ok(d)
}

fn read_pipe(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
