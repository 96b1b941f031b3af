//! The operations a vertex performs. Everything in these types changes the
//! result of a build and so goes into the vertex digest; names and source
//! locations live in [`crate::Meta`] instead.
//!
//! Inputs are referred to by index into the vertex's input list, so an op is
//! meaningful only together with its inputs (as in BuildKit's LLB).

pub use kiln_types::Platform;
use serde::{Deserialize, Serialize};

use crate::canonical::{Canonical, Encoder};
pub use crate::copy::CopyAction;
use crate::settings::{HostIp, Ulimit};

/// Index into a vertex's inputs.
pub type InputIndex = usize;

/// One build operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Source(SourceOp),
    Exec(ExecOp),
    File(FileOp),
    Merge(MergeOp),
}

/// Where a filesystem comes from. Sources have no inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum SourceOp {
    /// A registry image: `reference` is normalized and may carry a digest.
    /// At solve time it is keyed by the resolved manifest digest.
    Image {
        reference: String,
        platform: Option<Platform>,
    },
    /// Files of the build context. `include`/`exclude` are docker-style
    /// patterns selecting what the consumer needs; the cache key is the
    /// content of the selected files, never their mtimes or the checkout path.
    Context {
        name: String,
        include: Vec<String>,
        exclude: Vec<String>,
    },
    /// The empty filesystem.
    Scratch,
    /// kiln's built-in static base. `revision` changes whenever its content
    /// does, so old cache entries are not reused for a different base.
    StaticBase { revision: u32 },
    /// An image in a local OCI layout directory.
    OciLayout { path: String, tag: Option<String> },
    /// An image in a local OCI archive (tar of a layout).
    OciArchive { path: String },
    /// Debian packages from an apt repository, resolved at solve time like
    /// `apt-get install --no-install-recommends` and unpacked without
    /// maintainer scripts (kiln-deb). At solve time it is keyed by the
    /// SHA256s of the resolved `.deb`s.
    DebianPackages(DebianPackages),
}

/// What a Debian package source asks for. `None` fields take kiln-deb's
/// defaults (Debian's mirror, the build platform's architecture).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebianPackages {
    pub mirror: Option<String>,
    pub suite: String,
    pub components: Vec<String>,
    /// Debian's architecture name (`amd64`, `armhf`, ...).
    pub arch: Option<String>,
    /// A snapshot.debian.org time (`20250520T000000Z`).
    pub snapshot: Option<String>,
    /// Keyring files, relative to the context; empty: the Debian archive
    /// keyring.
    pub keyrings: Vec<String>,
    pub packages: Vec<String>,
    pub exclude: Vec<String>,
}

/// Run a process on input 0 (the root filesystem); the changed root is the
/// output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    /// argv; a shell command is `["/bin/sh", "-c", CMD]`.
    pub args: Vec<String>,
    /// Variables set by the build on top of the base image's environment,
    /// in the order they were set (a later entry wins).
    pub env: Vec<(String, String)>,
    /// Working directory; `None` inherits the base image's.
    pub cwd: Option<String>,
    /// User (name, uid or uid:gid); `None` inherits the base image's.
    pub user: Option<String>,
    pub network: Network,
    pub mounts: Vec<Mount>,
    /// The input whose image config (env, user, workdir) this step inherits:
    /// the source its stage started from.
    pub config_from: Option<InputIndex>,
    /// At most this many processes in the step; `None` is the runtime's
    /// default. Encoded (and serialized) only when set, so the digests of
    /// steps without it are those from before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
    /// `/etc/hosts` entries beside the sandbox's (`--add-host`), in order;
    /// encoded only when there are some (BuildKit's `Meta.extraHosts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostIp>,
    /// Resource limits of the step's processes (`--ulimit`); encoded only
    /// when there are some (BuildKit's `Meta.ulimit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The host's network (BuildKit's default).
    #[default]
    Host,
    /// Its own network namespace with only loopback.
    None,
    /// Its own network namespace with outbound access only (user-mode NAT):
    /// not the host's loopback listeners or abstract unix sockets.
    Isolated,
}

impl Network {
    /// The Kilnfile's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::None => "none",
            Network::Isolated => "isolated",
        }
    }
}

/// A mount of an exec step, beside its root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the step.
    pub target: String,
    pub kind: MountKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountKind {
    /// `selector` of input `input`; writes are discarded when not read-only.
    Bind {
        input: InputIndex,
        selector: String,
        readonly: bool,
    },
    /// A persistent cache directory shared between builds.
    Cache {
        id: String,
        sharing: CacheSharing,
    },
    /// A secret file; its content never reaches a layer or the cache key.
    Secret {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A secret exposed as an environment variable (target is the name).
    SecretEnv {
        id: String,
        required: bool,
    },
    Tmpfs {
        size: Option<u64>,
    },
    /// The SSH agent given with `--ssh ID=SOCKET`, forwarded as a socket at
    /// the target (`SSH_AUTH_SOCK`); the socket's path never reaches the
    /// digest or a layer, only the id does.
    Ssh {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// File operations applied in order on input 0; other inputs are copy
/// sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    pub actions: Vec<FileAction>,
}

/// Owner of created files, as names or numbers resolved in the target image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chown {
    pub user: String,
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FileAction {
    Copy(CopyAction),
    Mkdir {
        path: String,
        mode: u32,
        parents: bool,
        chown: Option<Chown>,
    },
    Mkfile {
        path: String,
        mode: u32,
        data: Vec<u8>,
        chown: Option<Chown>,
    },
    Symlink {
        target: String,
        link: String,
    },
    Rm {
        path: String,
        allow_not_found: bool,
    },
}

/// Layer the inputs on top of each other, later ones winning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOp {}

// --- canonical encoding -------------------------------------------------
//
// Every enum variant writes a distinct tag and every field in a fixed order,
// so two ops encode equally exactly when they are equal. Changing this
// changes every digest: bump `canonical::DOMAIN` when you do.

impl Canonical for Op {
    fn encode(&self, e: &mut Encoder) {
        match self {
            Op::Source(s) => {
                e.tag("source");
                s.encode(e);
            }
            Op::Exec(x) => {
                e.tag("exec");
                x.encode(e);
            }
            Op::File(f) => {
                e.tag("file");
                f.encode(e);
            }
            Op::Merge(MergeOp {}) => e.tag("merge"),
        }
    }
}

impl Canonical for SourceOp {
    fn encode(&self, e: &mut Encoder) {
        match self {
            SourceOp::Image {
                reference,
                platform,
            } => {
                e.tag("image");
                e.str(reference);
                e.opt(platform.as_ref());
            }
            SourceOp::Context {
                name,
                include,
                exclude,
            } => {
                e.tag("context");
                e.str(name);
                e.strs(include);
                e.strs(exclude);
            }
            SourceOp::Scratch => e.tag("scratch"),
            SourceOp::StaticBase { revision } => {
                e.tag("static_base");
                e.u64(u64::from(*revision));
            }
            SourceOp::OciLayout { path, tag } => {
                e.tag("oci_layout");
                e.str(path);
                e.opt_str(tag.as_deref());
            }
            SourceOp::OciArchive { path } => {
                e.tag("oci_archive");
                e.str(path);
            }
            SourceOp::DebianPackages(d) => {
                e.tag("debian_packages");
                e.opt_str(d.mirror.as_deref());
                e.str(&d.suite);
                e.strs(&d.components);
                e.opt_str(d.arch.as_deref());
                e.opt_str(d.snapshot.as_deref());
                e.strs(&d.keyrings);
                e.strs(&d.packages);
                e.strs(&d.exclude);
            }
        }
    }
}

impl Canonical for Platform {
    fn encode(&self, e: &mut Encoder) {
        e.str(&self.os);
        e.str(&self.architecture);
        e.opt_str(self.variant.as_deref());
    }
}

impl Canonical for ExecOp {
    fn encode(&self, e: &mut Encoder) {
        e.strs(&self.args);
        e.u64(self.env.len() as u64);
        for (k, v) in &self.env {
            e.str(k);
            e.str(v);
        }
        e.opt_str(self.cwd.as_deref());
        e.opt_str(self.user.as_deref());
        // a new mode is a new tag: the encodings of the others stay
        e.tag(match self.network {
            Network::Host => "host",
            Network::None => "none",
            Network::Isolated => "isolated",
        });
        e.u64(self.mounts.len() as u64);
        for m in &self.mounts {
            m.encode(e);
        }
        match self.config_from {
            Some(i) => {
                e.bool(true);
                e.u64(i as u64);
            }
            None => e.bool(false),
        }
        // A trailing tag: nothing else an exec op encodes ends with one, and
        // what follows the op (the input count) is a `u`, so this stays
        // unambiguous without changing older digests.
        if let Some(n) = self.pids_limit {
            e.tag("pids_limit");
            e.u64(n);
        }
        // More trailing tags, each only when set, so older digests stay.
        if !self.extra_hosts.is_empty() {
            e.tag("extra_hosts");
            e.u64(self.extra_hosts.len() as u64);
            for h in &self.extra_hosts {
                e.str(&h.host);
                e.str(&h.ip);
            }
        }
        if !self.ulimits.is_empty() {
            e.tag("ulimits");
            e.u64(self.ulimits.len() as u64);
            for u in &self.ulimits {
                e.str(&u.name);
                // two's complement: -1 (unlimited) is distinct from any limit
                e.u64(u.soft as u64);
                e.u64(u.hard as u64);
            }
        }
    }
}

impl Canonical for Mount {
    fn encode(&self, e: &mut Encoder) {
        e.str(&self.target);
        match &self.kind {
            MountKind::Bind {
                input,
                selector,
                readonly,
            } => {
                e.tag("bind");
                e.u64(*input as u64);
                e.str(selector);
                e.bool(*readonly);
            }
            MountKind::Cache { id, sharing } => {
                e.tag("cache");
                e.str(id);
                e.tag(match sharing {
                    CacheSharing::Shared => "shared",
                    CacheSharing::Private => "private",
                    CacheSharing::Locked => "locked",
                });
            }
            MountKind::Secret {
                id,
                required,
                mode,
                uid,
                gid,
            } => file_mount(e, "secret", id, *required, [*mode, *uid, *gid]),
            MountKind::Ssh {
                id,
                required,
                mode,
                uid,
                gid,
            } => file_mount(e, "ssh", id, *required, [*mode, *uid, *gid]),
            MountKind::SecretEnv { id, required } => {
                e.tag("secret_env");
                e.str(id);
                e.bool(*required);
            }
            MountKind::Tmpfs { size } => {
                e.tag("tmpfs");
                match size {
                    Some(s) => {
                        e.bool(true);
                        e.u64(*s);
                    }
                    None => e.bool(false),
                }
            }
        }
    }
}

/// A secret file's or an agent socket's mount: tag, id, required, mode,
/// uid, gid.
fn file_mount(e: &mut Encoder, tag: &str, id: &str, required: bool, attrs: [u32; 3]) {
    e.tag(tag);
    e.str(id);
    e.bool(required);
    for a in attrs {
        e.u64(u64::from(a));
    }
}

impl Canonical for FileOp {
    fn encode(&self, e: &mut Encoder) {
        e.u64(self.actions.len() as u64);
        for a in &self.actions {
            a.encode(e);
        }
    }
}

impl Canonical for Chown {
    fn encode(&self, e: &mut Encoder) {
        e.str(&self.user);
        e.opt_str(self.group.as_deref());
    }
}

impl Canonical for FileAction {
    fn encode(&self, e: &mut Encoder) {
        match self {
            FileAction::Copy(c) => c.encode(e),
            FileAction::Mkdir {
                path,
                mode,
                parents,
                chown,
            } => {
                e.tag("mkdir");
                e.str(path);
                e.u64(u64::from(*mode));
                e.bool(*parents);
                e.opt(chown.as_ref());
            }
            FileAction::Mkfile {
                path,
                mode,
                data,
                chown,
            } => {
                e.tag("mkfile");
                e.str(path);
                e.u64(u64::from(*mode));
                e.bytes(data);
                e.opt(chown.as_ref());
            }
            FileAction::Symlink { target, link } => {
                e.tag("symlink");
                e.str(target);
                e.str(link);
            }
            FileAction::Rm {
                path,
                allow_not_found,
            } => {
                e.tag("rm");
                e.str(path);
                e.bool(*allow_not_found);
            }
        }
    }
}
