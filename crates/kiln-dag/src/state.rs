//! The immutable, fluent `State` builder.
//!
//! A [`State`] is a filesystem (a vertex) plus the image configuration built
//! up so far. Every method returns a new `State` and leaves the old one
//! usable, so stages can branch freely; cloning is cheap (reference counts).
//!
//! The configuration is persistent: a `.env`/`.label`/`.expose` call adds one
//! link in front of the previous state's list instead of copying it, so a
//! chain of n such calls costs O(n) in time and memory whichever of its
//! states are kept. The lists become an [`ImageConfig`] only where one is
//! asked for ([`State::config`], a `run`'s environment, a definition).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::canonical::{Canonical, Encoder};
use crate::op::{
    CacheSharing, Chown, CopyAction, ExecOp, FileAction, FileOp, MergeOp, Mount, MountKind,
    Network, Op, Platform, SourceOp,
};
use crate::settings::{HostIp, RunSettings, Ulimit};
use crate::{Digest, Meta};

/// Revision of the built-in static base's content; bump it whenever the files
/// kiln synthesizes for `static_base()` change.
pub const STATIC_BASE_REVISION: u32 = 1;

/// The default `PATH` of a step whose image sets none, as docker uses.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) struct Node {
    pub(crate) op: Op,
    pub(crate) inputs: Vec<Arc<Node>>,
    pub(crate) digest: Digest,
    pub(crate) meta: Meta,
}

impl Drop for Node {
    /// Drops the inputs we hold the last reference to iteratively: the
    /// default recursive drop overflows the stack on a long chain of steps
    /// (a 500k-line Kilnfile did).
    fn drop(&mut self) {
        let mut pending = std::mem::take(&mut self.inputs);
        while let Some(node) = pending.pop() {
            if let Some(mut last) = Arc::into_inner(node) {
                pending.append(&mut last.inputs);
            }
        }
    }
}

impl Node {
    fn new(op: Op, inputs: Vec<Arc<Node>>) -> Arc<Node> {
        let mut e = Encoder::new();
        op.encode(&mut e);
        e.u64(inputs.len() as u64);
        for i in &inputs {
            e.bytes(i.digest.as_bytes());
        }
        let digest = Digest::of(&e.into_bytes());
        Arc::new(Node {
            op,
            inputs,
            digest,
            meta: Meta::default(),
        })
    }
}

/// Image configuration set by the build, applied on top of the base image's
/// own configuration when the image is assembled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Variables in the order first set; setting one again replaces it in
    /// place.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    /// `Some(vec![])` clears an inherited command (docker resets `CMD` when
    /// `ENTRYPOINT` is set).
    pub cmd: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: BTreeSet<String>,
    /// Mount points declared for the image (Dockerfile `VOLUME`).
    pub volumes: BTreeSet<String>,
    /// The signal that stops the container (Dockerfile `STOPSIGNAL`).
    pub stop_signal: Option<String>,
    /// How a runtime checks the container is healthy (Dockerfile
    /// `HEALTHCHECK`; a Docker extension of the image config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Instructions a Dockerfile building on this image runs first
    /// (Dockerfile `ONBUILD`; a Docker extension of the image config).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub onbuild: Vec<String>,
}

/// Docker's `Healthcheck` of an image config; durations in nanoseconds,
/// as Docker writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["CMD", argv...]`, `["CMD-SHELL", command]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u32>,
}

impl Healthcheck {
    /// The config's `Healthcheck` object as Docker and BuildKit write it.
    pub fn docker_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("Test".into(), serde_json::json!(self.test));
        for (k, v) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ] {
            if let Some(n) = v.filter(|n| *n > 0) {
                m.insert(k.into(), serde_json::json!(n));
            }
        }
        if let Some(r) = self.retries.filter(|r| *r > 0) {
            m.insert("Retries".into(), serde_json::json!(r));
        }
        serde_json::Value::Object(m)
    }
}

impl Canonical for ImageConfig {
    fn encode(&self, e: &mut Encoder) {
        e.u64(self.env.len() as u64);
        for (k, v) in &self.env {
            e.str(k);
            e.str(v);
        }
        e.opt_str(self.workdir.as_deref());
        e.opt_str(self.user.as_deref());
        for list in [&self.entrypoint, &self.cmd] {
            match list {
                Some(l) => {
                    e.bool(true);
                    e.strs(l);
                }
                None => e.bool(false),
            }
        }
        e.u64(self.labels.len() as u64);
        for (k, v) in &self.labels {
            e.str(k);
            e.str(v);
        }
        e.u64(self.exposed_ports.len() as u64);
        for p in &self.exposed_ports {
            e.str(p);
        }
        // Trailing tags, written only when set, so the digests of builds
        // without them stay what they were.
        if !self.volumes.is_empty() {
            e.tag("volumes");
            e.strs(&self.volumes.iter().cloned().collect::<Vec<_>>());
        }
        if let Some(s) = &self.stop_signal {
            e.tag("stop_signal");
            e.str(s);
        }
        if let Some(h) = &self.healthcheck {
            e.tag("healthcheck");
            e.strs(&h.test);
            for d in [h.interval, h.timeout, h.start_period, h.start_interval] {
                match d {
                    Some(n) => {
                        e.bool(true);
                        e.u64(n);
                    }
                    None => e.bool(false),
                }
            }
            match h.retries {
                Some(n) => {
                    e.bool(true);
                    e.u64(u64::from(n));
                }
                None => e.bool(false),
            }
        }
        if !self.onbuild.is_empty() {
            e.tag("onbuild");
            e.strs(&self.onbuild);
        }
    }
}

/// Where the image's entrypoint and cmd were set in the build file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandLocations {
    pub entrypoint: Option<crate::Location>,
    pub cmd: Option<crate::Location>,
}

/// A filesystem state plus configuration. See the module docs.
#[derive(Clone)]
pub struct State {
    pub(crate) node: Arc<Node>,
    /// The source this stage started from: its image config is inherited.
    pub(crate) base: Arc<Node>,
    config: Arc<Config>,
    pub(crate) platform: Option<Platform>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("digest", &self.node.digest)
            .field("config", self.config())
            .finish()
    }
}

/// One link of a persistent list, newest first.
struct Link<T> {
    item: T,
    prev: Option<Arc<Link<T>>>,
}

impl<T> Drop for Link<T> {
    /// Iterative, like [`Node`]'s: a recursive drop of a 65,535-link list
    /// would overflow the stack.
    fn drop(&mut self) {
        let mut prev = self.prev.take();
        while let Some(link) = prev {
            prev = Arc::into_inner(link).and_then(|mut l| l.prev.take());
        }
    }
}

fn push<T>(list: &Option<Arc<Link<T>>>, item: T) -> Option<Arc<Link<T>>> {
    Some(Arc::new(Link {
        item,
        prev: list.clone(),
    }))
}

/// Newest first.
fn items<T>(list: &Option<Arc<Link<T>>>) -> impl Iterator<Item = &T> {
    std::iter::successors(list.as_deref(), |l| l.prev.as_deref()).map(|l| &l.item)
}

/// An `.env` call; `memo` is the whole environment at this link once a
/// `run` (or [`State::config`]) needed it, so the next one starts there.
struct EnvSet {
    key: String,
    value: String,
    memo: OnceLock<Arc<Vec<(String, String)>>>,
}

/// The configuration of a [`State`]; see the module docs.
#[derive(Default)]
struct Config {
    env: Option<Arc<Link<EnvSet>>>,
    labels: Option<Arc<Link<(String, String)>>>,
    ports: Option<Arc<Link<String>>>,
    volumes: Option<Arc<Link<String>>>,
    stop_signal: Option<Arc<str>>,
    healthcheck: Option<Arc<Healthcheck>>,
    onbuild: Option<Arc<Link<String>>>,
    workdir: Option<Arc<str>>,
    user: Option<Arc<str>>,
    entrypoint: Option<Arc<Vec<String>>>,
    cmd: Option<Arc<Vec<String>>>,
    /// Where the entrypoint and the cmd were set (not digested).
    entrypoint_at: Option<Arc<crate::Location>>,
    cmd_at: Option<Arc<crate::Location>>,
    /// Materialized on first use (boxed: most states never need it).
    full: OnceLock<Box<ImageConfig>>,
}

impl Config {
    /// A copy sharing every list (the memo is not copied).
    fn derive(&self) -> Config {
        Config {
            env: self.env.clone(),
            labels: self.labels.clone(),
            ports: self.ports.clone(),
            volumes: self.volumes.clone(),
            stop_signal: self.stop_signal.clone(),
            healthcheck: self.healthcheck.clone(),
            onbuild: self.onbuild.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            entrypoint_at: self.entrypoint_at.clone(),
            cmd_at: self.cmd_at.clone(),
            full: OnceLock::new(),
        }
    }

    /// Variables in the order first set, a later set replacing the value in
    /// place.
    fn env(&self) -> Arc<Vec<(String, String)>> {
        let Some(head) = &self.env else {
            return Arc::default();
        };
        if let Some(m) = head.item.memo.get() {
            return m.clone();
        }
        // Walk back to the nearest link that knows its environment, then
        // replay the sets after it.
        let mut pending = Vec::new();
        let mut base: Vec<(String, String)> = Vec::new();
        let mut cur = Some(head);
        while let Some(link) = cur {
            if let Some(m) = link.item.memo.get() {
                base = (**m).clone();
                break;
            }
            pending.push(&link.item);
            cur = link.prev.as_ref();
        }
        let mut slot: HashMap<String, usize> = base
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        for set in pending.into_iter().rev() {
            match slot.get(&set.key) {
                Some(&i) => base[i].1.clone_from(&set.value),
                None => {
                    slot.insert(set.key.clone(), base.len());
                    base.push((set.key.clone(), set.value.clone()));
                }
            }
        }
        head.item.memo.get_or_init(|| Arc::new(base)).clone()
    }

    fn full(&self) -> &ImageConfig {
        self.full.get_or_init(|| {
            let mut labels = BTreeMap::new();
            // Newest first, so the first value seen for a key wins.
            for (k, v) in items(&self.labels) {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Box::new(ImageConfig {
                env: (*self.env()).clone(),
                workdir: self.workdir.as_deref().map(str::to_string),
                user: self.user.as_deref().map(str::to_string),
                entrypoint: self.entrypoint.as_deref().cloned(),
                cmd: self.cmd.as_deref().cloned(),
                labels,
                exposed_ports: items(&self.ports).cloned().collect(),
                volumes: items(&self.volumes).cloned().collect(),
                stop_signal: self.stop_signal.as_deref().map(str::to_string),
                healthcheck: self.healthcheck.as_deref().cloned(),
                onbuild: {
                    let mut v: Vec<String> = items(&self.onbuild).cloned().collect();
                    v.reverse();
                    v
                },
            })
        })
    }
}

/// Options of a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOptions {
    pub chown: Option<Chown>,
    pub chmod: Option<u32>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub allow_dynamic: bool,
    /// Extract a source file that is a tar archive (Dockerfile `ADD`).
    pub unpack: bool,
    /// Keep the source's owners when no `chown` is given.
    pub keep_owner: bool,
    /// Follow a symlink named as the source.
    pub follow_symlinks: bool,
    /// A symbolic mode such as `u+x,g-w` (instead of `chmod`).
    pub chmod_symbolic: Option<String>,
}

/// A mount of a step, as given to [`State::run`].
#[derive(Debug, Clone)]
pub enum ExecMount {
    Cache {
        target: String,
        id: String,
        sharing: CacheSharing,
    },
    Secret {
        target: String,
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A secret in the environment variable `name`.
    SecretEnv {
        name: String,
        id: String,
        required: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    /// The SSH agent `id` (`--ssh ID=SOCKET`) as a socket at `target`,
    /// `None` being BuildKit's `/run/buildkit/ssh_agent.N` (N counting the
    /// step's ssh mounts); the first one is the step's `SSH_AUTH_SOCK`
    /// unless the environment sets it.
    Ssh {
        target: Option<String>,
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Bind {
        target: String,
        from: State,
        selector: String,
        readonly: bool,
    },
}

/// A process to run, as given to [`State::run`].
#[derive(Debug, Clone)]
pub struct Exec {
    pub args: Vec<String>,
    pub mounts: Vec<ExecMount>,
    pub network: Network,
    /// At most this many processes (threads included) in the step; `None`
    /// leaves the runtime's default.
    pub pids_limit: Option<u64>,
    /// Variables for this step only (a Dockerfile's build args), after the
    /// image's; not kept in the configuration of the result.
    pub env: Vec<(String, String)>,
    /// `/etc/hosts` entries beside the sandbox's.
    pub extra_hosts: Vec<HostIp>,
    /// Resource limits of the step's processes.
    pub ulimits: Vec<Ulimit>,
}

impl Exec {
    /// `cmd` through `/bin/sh -c`.
    pub fn shell(cmd: impl Into<String>) -> Exec {
        Exec::argv(["/bin/sh".to_string(), "-c".to_string(), cmd.into()])
    }

    /// argv as given, no shell.
    pub fn argv<I, S>(args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Exec {
            args: args.into_iter().map(Into::into).collect(),
            mounts: Vec::new(),
            network: Network::Host,
            pids_limit: None,
            env: Vec::new(),
            extra_hosts: Vec::new(),
            ulimits: Vec::new(),
        }
    }

    /// The build's `--add-host`, `--ulimit` and `--shm-size`, as BuildKit
    /// gives them to every `RUN`: the shm size as a tmpfs at `/dev/shm`
    /// (unless the step mounts something there itself).
    pub fn settings(mut self, s: &RunSettings) -> Exec {
        self.extra_hosts.extend(s.extra_hosts.iter().cloned());
        self.ulimits.extend(s.ulimits.iter().cloned());
        if let Some(size) = s.shm_size {
            let own = self.mounts.iter().any(|m| match m {
                ExecMount::Cache { target, .. }
                | ExecMount::Secret { target, .. }
                | ExecMount::Tmpfs { target, .. }
                | ExecMount::Bind { target, .. } => target == SHM,
                ExecMount::Ssh { target, .. } => target.as_deref() == Some(SHM),
                ExecMount::SecretEnv { .. } => false,
            });
            if !own {
                self.mounts.push(ExecMount::Tmpfs {
                    target: SHM.into(),
                    size: Some(size),
                });
            }
        }
        self
    }

    pub fn mount(mut self, m: ExecMount) -> Exec {
        self.mounts.push(m);
        self
    }

    pub fn network(mut self, n: Network) -> Exec {
        self.network = n;
        self
    }

    pub fn pids_limit(mut self, n: u64) -> Exec {
        self.pids_limit = Some(n);
        self
    }

    /// Sets `key` for this step only; it replaces an image variable of the
    /// same name in place.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Exec {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// Where `--shm-size` mounts its tmpfs.
const SHM: &str = "/dev/shm";

/// Appends `node` to `inputs` unless an input with its digest is there, and
/// returns its index.
fn input_index(inputs: &mut Vec<Arc<Node>>, node: &Arc<Node>) -> usize {
    if let Some(i) = inputs.iter().position(|n| n.digest == node.digest) {
        return i;
    }
    inputs.push(node.clone());
    inputs.len() - 1
}

/// Joins `p` onto `base` when relative, and normalizes `.`/`..` lexically
/// without ever going above `/`.
pub fn resolve_path(base: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{base}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    // A trailing slash says "into this directory" for copies: keep it.
    if p.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

impl State {
    fn source(op: SourceOp, platform: Option<Platform>) -> State {
        let node = Node::new(Op::Source(op), Vec::new());
        State {
            base: node.clone(),
            node,
            config: Arc::new(Config::default()),
            platform,
        }
    }

    /// A registry image; `reference` should already be normalized.
    pub fn image(reference: impl Into<String>, platform: Option<Platform>) -> State {
        State::source(
            SourceOp::Image {
                reference: reference.into(),
                platform: platform.clone(),
            },
            platform,
        )
    }

    /// The build context named `name` (usually `context`), restricted to the
    /// files matching `include` and not `exclude`.
    pub fn context(name: impl Into<String>, include: Vec<String>, exclude: Vec<String>) -> State {
        State::source(
            SourceOp::Context {
                name: name.into(),
                include,
                exclude,
            },
            None,
        )
    }

    pub fn scratch() -> State {
        State::source(SourceOp::Scratch, None)
    }

    pub fn static_base() -> State {
        State::source(
            SourceOp::StaticBase {
                revision: STATIC_BASE_REVISION,
            },
            None,
        )
    }

    pub fn oci_layout(path: impl Into<String>, tag: Option<String>) -> State {
        State::source(
            SourceOp::OciLayout {
                path: path.into(),
                tag,
            },
            None,
        )
    }

    pub fn oci_archive(path: impl Into<String>) -> State {
        State::source(SourceOp::OciArchive { path: path.into() }, None)
    }

    /// A Debian package set: a filesystem of the unpacked packages, to
    /// [`State::merge`] onto an image.
    pub fn debian_packages(set: crate::op::DebianPackages) -> State {
        State::source(SourceOp::DebianPackages(set), None)
    }

    /// Layers `states` on top of each other (later wins). The configuration
    /// and base are the first state's. Panics on an empty slice, which is a
    /// programming error.
    pub fn merge(states: &[State]) -> State {
        let first = states.first().expect("merge of no states");
        let mut inputs = Vec::new();
        for s in states {
            // Order matters for a merge, so repeated inputs are kept.
            inputs.push(s.node.clone());
        }
        State {
            node: Node::new(Op::Merge(MergeOp {}), inputs),
            ..first.clone()
        }
    }

    fn with_node(&self, node: Arc<Node>) -> State {
        State {
            node,
            ..self.clone()
        }
    }

    fn with_config(&self, f: impl FnOnce(&mut Config)) -> State {
        let mut config = self.config.derive();
        f(&mut config);
        State {
            config: Arc::new(config),
            ..self.clone()
        }
    }

    fn file_action(&self, action: FileAction, extra: Option<&State>) -> State {
        let mut inputs = vec![self.node.clone()];
        let action = match (action, extra) {
            (FileAction::Copy(_), None) => {
                unreachable!("copy without a source state")
            }
            (FileAction::Copy(c), Some(from)) => {
                FileAction::Copy(c.with_from(input_index(&mut inputs, &from.node)))
            }
            (a, _) => a,
        };
        self.with_node(Node::new(
            Op::File(FileOp {
                actions: vec![action],
            }),
            inputs,
        ))
    }

    /// The directory relative paths are resolved against: the workdir set by
    /// the build, else `/`.
    pub fn cwd(&self) -> &str {
        self.config.workdir.as_deref().unwrap_or("/")
    }

    /// Runs `exec` on this filesystem with the current env, workdir and user.
    pub fn run(&self, exec: Exec) -> State {
        let mut inputs = vec![self.node.clone()];
        let config_from = Some(input_index(&mut inputs, &self.base));
        let mut mounts = Vec::with_capacity(exec.mounts.len());
        let mut ssh_sockets = 0;
        let mut first_ssh: Option<String> = None;
        for m in exec.mounts {
            let (target, kind) = match m {
                ExecMount::Cache {
                    target,
                    id,
                    sharing,
                } => (target, MountKind::Cache { id, sharing }),
                ExecMount::Secret {
                    target,
                    id,
                    required,
                    mode,
                    uid,
                    gid,
                } => (
                    target,
                    MountKind::Secret {
                        id,
                        required,
                        mode,
                        uid,
                        gid,
                    },
                ),
                ExecMount::SecretEnv { name, id, required } => {
                    (name, MountKind::SecretEnv { id, required })
                }
                ExecMount::Tmpfs { target, size } => (target, MountKind::Tmpfs { size }),
                ExecMount::Ssh {
                    target,
                    id,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    // BuildKit's llb numbers the default targets by the
                    // ssh mount's position
                    let target =
                        target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_sockets}"));
                    ssh_sockets += 1;
                    first_ssh.get_or_insert_with(|| target.clone());
                    (
                        target,
                        MountKind::Ssh {
                            id,
                            required,
                            mode,
                            uid,
                            gid,
                        },
                    )
                }
                ExecMount::Bind {
                    target,
                    from,
                    selector,
                    readonly,
                } => (
                    target,
                    MountKind::Bind {
                        input: input_index(&mut inputs, &from.node),
                        selector,
                        readonly,
                    },
                ),
            };
            mounts.push(Mount { target, kind });
        }
        let mut env = (*self.config.env()).clone();
        for (k, v) in exec.env {
            match env.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => env.push((k, v)),
            }
        }
        if let Some(sock) = first_ssh
            && !env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK")
        {
            env.push(("SSH_AUTH_SOCK".into(), sock));
        }
        let op = ExecOp {
            args: exec.args,
            env,
            cwd: self.config.workdir.as_deref().map(str::to_string),
            user: self.config.user.as_deref().map(str::to_string),
            network: exec.network,
            mounts,
            config_from,
            pids_limit: exec.pids_limit,
            extra_hosts: exec.extra_hosts,
            ulimits: exec.ulimits,
        };
        self.with_node(Node::new(Op::Exec(op), inputs))
    }

    /// Copies `src` of `from` to `dest` (relative to the workdir).
    pub fn copy(&self, from: &State, src: &str, dest: &str, opts: CopyOptions) -> State {
        self.file_action(
            FileAction::Copy(CopyAction {
                chown: opts.chown,
                chmod: opts.chmod,
                include: opts.include,
                exclude: opts.exclude,
                allow_dynamic: opts.allow_dynamic,
                unpack: opts.unpack,
                keep_owner: opts.keep_owner,
                follow_symlinks: opts.follow_symlinks,
                chmod_symbolic: opts.chmod_symbolic,
                ..CopyAction::new(0, src, resolve_path(self.cwd(), dest))
            }),
            Some(from),
        )
    }

    /// Creates a directory (and its parents when `parents`).
    pub fn mkdir(&self, path: &str, mode: u32, parents: bool, chown: Option<Chown>) -> State {
        self.file_action(
            FileAction::Mkdir {
                path: resolve_path(self.cwd(), path),
                mode,
                parents,
                chown,
            },
            None,
        )
    }

    /// Writes a file with `data`.
    pub fn mkfile(&self, path: &str, data: &[u8], mode: u32, chown: Option<Chown>) -> State {
        self.file_action(
            FileAction::Mkfile {
                path: resolve_path(self.cwd(), path),
                mode,
                data: data.to_vec(),
                chown,
            },
            None,
        )
    }

    /// Creates the symlink `link` pointing at `target` (kept verbatim).
    pub fn symlink(&self, target: &str, link: &str) -> State {
        self.file_action(
            FileAction::Symlink {
                target: target.to_string(),
                link: resolve_path(self.cwd(), link),
            },
            None,
        )
    }

    pub fn rm(&self, path: &str, allow_not_found: bool) -> State {
        self.file_action(
            FileAction::Rm {
                path: resolve_path(self.cwd(), path),
                allow_not_found,
            },
            None,
        )
    }

    /// Sets an environment variable for later steps and the image.
    pub fn env(&self, key: impl Into<String>, value: impl Into<String>) -> State {
        let set = EnvSet {
            key: key.into(),
            value: value.into(),
            memo: OnceLock::new(),
        };
        self.with_config(|c| c.env = push(&c.env, set))
    }

    /// Sets the working directory (relative paths join the current one).
    /// This only changes configuration; a builder that wants the directory
    /// to exist adds a [`State::mkdir`].
    pub fn workdir(&self, path: &str) -> State {
        let resolved = resolve_path(self.cwd(), path.trim_end_matches('/'));
        self.with_config(|c| c.workdir = Some(resolved.into()))
    }

    pub fn user(&self, user: impl Into<String>) -> State {
        let user: String = user.into();
        self.with_config(|c| c.user = Some(user.into()))
    }

    /// Sets the entrypoint; an inherited command is cleared, as docker does.
    pub fn entrypoint(&self, argv: Vec<String>) -> State {
        self.with_config(|c| {
            c.entrypoint = Some(Arc::new(argv));
            if c.cmd.is_none() {
                c.cmd = Some(Arc::default());
            }
        })
    }

    pub fn cmd(&self, argv: Vec<String>) -> State {
        self.with_config(|c| c.cmd = Some(Arc::new(argv)))
    }

    /// Records where the entrypoint (`cmd` false) or the cmd was set, for
    /// errors about the image's command; not part of any digest.
    pub fn command_at(&self, cmd: bool, at: crate::Location) -> State {
        self.with_config(|c| {
            if cmd {
                c.cmd_at = Some(Arc::new(at));
            } else {
                c.entrypoint_at = Some(Arc::new(at));
            }
        })
    }

    /// Where the entrypoint and the cmd were set ([`State::command_at`]).
    pub fn command_locations(&self) -> CommandLocations {
        CommandLocations {
            entrypoint: self.config.entrypoint_at.as_deref().cloned(),
            cmd: self.config.cmd_at.as_deref().cloned(),
        }
    }

    pub fn label(&self, key: impl Into<String>, value: impl Into<String>) -> State {
        let (k, v) = (key.into(), value.into());
        self.with_config(|c| c.labels = push(&c.labels, (k, v)))
    }

    /// Declares a mount point of the image.
    pub fn volume(&self, path: impl Into<String>) -> State {
        let path = path.into();
        self.with_config(|c| c.volumes = push(&c.volumes, path))
    }

    /// Sets the signal that stops the container.
    pub fn stop_signal(&self, signal: impl Into<String>) -> State {
        let signal: String = signal.into();
        self.with_config(|c| c.stop_signal = Some(signal.into()))
    }

    /// Adds an instruction for images built on this one to run first.
    pub fn onbuild(&self, trigger: impl Into<String>) -> State {
        let trigger = trigger.into();
        self.with_config(|c| c.onbuild = push(&c.onbuild, trigger))
    }

    /// Sets how a runtime checks the container's health.
    pub fn healthcheck(&self, h: Healthcheck) -> State {
        self.with_config(|c| c.healthcheck = Some(Arc::new(h)))
    }

    /// Declares a port, `8080` meaning `8080/tcp`.
    pub fn expose(&self, port: &str) -> State {
        let port = if port.contains('/') {
            port.to_string()
        } else {
            format!("{port}/tcp")
        };
        self.with_config(|c| c.ports = push(&c.ports, port))
    }

    /// Attaches a name and source location to the current vertex. They travel
    /// beside the digest and never change it.
    pub fn with_meta(&self, meta: Meta) -> State {
        let node = Arc::new(Node {
            op: self.node.op.clone(),
            inputs: self.node.inputs.clone(),
            digest: self.node.digest,
            meta,
        });
        let base = if Arc::ptr_eq(&self.base, &self.node) {
            node.clone()
        } else {
            self.base.clone()
        };
        State {
            node,
            base,
            ..self.clone()
        }
    }

    /// [`State::with_meta`] on a state the caller owns: a vertex nothing
    /// else holds yet (the one a step just made) takes the meta in place
    /// instead of being copied.
    pub fn into_meta(mut self, meta: Meta) -> State {
        if !Arc::ptr_eq(&self.base, &self.node)
            && let Some(node) = Arc::get_mut(&mut self.node)
        {
            node.meta = meta;
            return self;
        }
        self.with_meta(meta)
    }

    /// The digest of the current filesystem vertex.
    pub fn digest(&self) -> Digest {
        self.node.digest
    }

    pub fn op(&self) -> &Op {
        &self.node.op
    }

    /// The source op this stage started from.
    pub fn base_op(&self) -> &Op {
        &self.base.op
    }

    pub fn config(&self) -> &ImageConfig {
        self.config.full()
    }

    pub fn platform(&self) -> Option<&Platform> {
        self.platform.as_ref()
    }

    /// The whole graph needed to build this state.
    pub fn definition(&self) -> crate::Definition {
        crate::Definition::from_state(self)
    }
}

#[cfg(test)]
mod drop_tests {
    use super::*;

    #[test]
    fn dropping_a_long_chain_does_not_overflow_the_stack() {
        // Run on a small stack so a recursive drop would surely overflow.
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let mut s = State::scratch();
                for i in 0..200_000 {
                    s = s.mkdir(&format!("/d{}", i % 7), 0o755, true, None);
                }
                drop(s);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
