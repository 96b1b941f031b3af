//! The immutable, fluent `State` builder.
//!
//! A [`State`] is a filesystem (a vertex) plus the image configuration built
//! up so far. Every method returns a new `State` and leaves the old one
//! usable, so stages can branch freely; cloning is cheap (reference counts).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::canonical::{Canonical, Encoder};
use crate::op::{
    CacheSharing, Chown, ExecOp, FileAction, FileOp, MergeOp, Mount, MountKind, Network, Op,
    Platform, SourceOp,
};
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
    }
}

/// A filesystem state plus configuration. See the module docs.
#[derive(Clone)]
pub struct State {
    pub(crate) node: Arc<Node>,
    /// The source this stage started from: its image config is inherited.
    pub(crate) base: Arc<Node>,
    pub(crate) config: Arc<ImageConfig>,
    pub(crate) platform: Option<Platform>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("digest", &self.node.digest)
            .field("config", &self.config)
            .finish()
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
        }
    }

    pub fn mount(mut self, m: ExecMount) -> Exec {
        self.mounts.push(m);
        self
    }

    pub fn network(mut self, n: Network) -> Exec {
        self.network = n;
        self
    }
}

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
            config: Arc::new(ImageConfig::default()),
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

    fn with_config(&self, f: impl FnOnce(&mut ImageConfig)) -> State {
        let mut config = (*self.config).clone();
        f(&mut config);
        State {
            config: Arc::new(config),
            ..self.clone()
        }
    }

    fn file_action(&self, action: FileAction, extra: Option<&State>) -> State {
        let mut inputs = vec![self.node.clone()];
        let action = match (action, extra) {
            (FileAction::Copy { from: _, .. }, None) => {
                unreachable!("copy without a source state")
            }
            (
                FileAction::Copy {
                    from: _,
                    src,
                    dest,
                    chown,
                    chmod,
                    include,
                    exclude,
                    allow_dynamic,
                },
                Some(from),
            ) => FileAction::Copy {
                from: input_index(&mut inputs, &from.node),
                src,
                dest,
                chown,
                chmod,
                include,
                exclude,
                allow_dynamic,
            },
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
        let op = ExecOp {
            args: exec.args,
            env: self.config.env.clone(),
            cwd: self.config.workdir.clone(),
            user: self.config.user.clone(),
            network: exec.network,
            mounts,
            config_from,
        };
        self.with_node(Node::new(Op::Exec(op), inputs))
    }

    /// Copies `src` of `from` to `dest` (relative to the workdir).
    pub fn copy(&self, from: &State, src: &str, dest: &str, opts: CopyOptions) -> State {
        self.file_action(
            FileAction::Copy {
                from: 0,
                src: src.to_string(),
                dest: resolve_path(self.cwd(), dest),
                chown: opts.chown,
                chmod: opts.chmod,
                include: opts.include,
                exclude: opts.exclude,
                allow_dynamic: opts.allow_dynamic,
            },
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
        let (key, value) = (key.into(), value.into());
        self.with_config(|c| match c.env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => c.env.push((key, value)),
        })
    }

    /// Sets the working directory (relative paths join the current one).
    /// This only changes configuration; a builder that wants the directory
    /// to exist adds a [`State::mkdir`].
    pub fn workdir(&self, path: &str) -> State {
        let resolved = resolve_path(self.cwd(), path.trim_end_matches('/'));
        self.with_config(|c| c.workdir = Some(resolved))
    }

    pub fn user(&self, user: impl Into<String>) -> State {
        let user = user.into();
        self.with_config(|c| c.user = Some(user))
    }

    /// Sets the entrypoint; an inherited command is cleared, as docker does.
    pub fn entrypoint(&self, argv: Vec<String>) -> State {
        self.with_config(|c| {
            c.entrypoint = Some(argv);
            if c.cmd.is_none() {
                c.cmd = Some(Vec::new());
            }
        })
    }

    pub fn cmd(&self, argv: Vec<String>) -> State {
        self.with_config(|c| c.cmd = Some(argv))
    }

    pub fn label(&self, key: impl Into<String>, value: impl Into<String>) -> State {
        let (k, v) = (key.into(), value.into());
        self.with_config(|c| {
            c.labels.insert(k, v);
        })
    }

    /// Declares a port, `8080` meaning `8080/tcp`.
    pub fn expose(&self, port: &str) -> State {
        let port = if port.contains('/') {
            port.to_string()
        } else {
            format!("{port}/tcp")
        };
        self.with_config(|c| {
            c.exposed_ports.insert(port);
        })
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
        &self.config
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
