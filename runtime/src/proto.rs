//! The messages between the parent and the sandbox child over their
//! SOCK_SEQPACKET socket (one JSON document per packet).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::{DriverChoice, Mount, Network};

/// The environment variable naming the child's end of the socket.
pub const FD_ENV: &str = "KILN_SANDBOX_FD";
/// The environment variable holding the parent's pid, for the child to
/// check it was not orphaned before it asked to die with its parent.
pub const PARENT_ENV: &str = "KILN_SANDBOX_PARENT";

/// Everything the child needs, resolved by the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildConfig {
    /// only try the namespaces and the driver, run nothing
    pub probe: bool,
    /// apply the layer tar on stdin to this directory inside the user
    /// namespace instead of running a step
    pub apply: Option<ApplyJob>,
    /// write the directory as a layer tar to stdout inside the user
    /// namespace instead of running a step
    #[serde(default)]
    pub write: Option<WriteJob>,
    /// change owners inside the user namespace instead of running a step
    #[serde(default)]
    pub chown: Option<Vec<ChownEntry>>,
    /// overlay lowerdirs, top first (overlay's order)
    pub lowers_top_first: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// the state directory (the kernel overlay's workdir; the overlay is
    /// mounted on the upper directory): fuse-overlayfs gets `rootfs/`,
    /// `host/` and `fuse-work/` below it, the copying driver `copy/`
    pub rootfs: PathBuf,
    pub mounts: Vec<Mount>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// setgroups(2) is denied with the single-ID mapping
    pub setgroups: bool,
    pub hostname: String,
    pub network: Network,
    pub driver: DriverChoice,
    /// the state directory, removed by the supervisor after it reported the
    /// step's exit (the parent does not wait for that)
    #[serde(default)]
    pub cleanup: Option<PathBuf>,
    /// real root: the host paths the parent sends as idmapped clones with
    /// `GO` (SCM_RIGHTS, this order), attached on themselves by the
    /// supervisor (`idmap.rs`)
    #[serde(default)]
    pub idmap: Vec<PathBuf>,
    /// RLIMIT_NPROC of the step
    #[serde(default)]
    pub pids_limit: u64,
    /// host files the init binds read-only on these paths of the rootfs
    /// (the isolated network's resolv.conf and hosts, which the parent
    /// writes into the state directory)
    #[serde(default)]
    pub net_files: Vec<(PathBuf, String)>,
    /// lines added to the step's `/etc/hosts` (the parent writes the file
    /// into the state directory and lists it in `net_files`)
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// `(resource, soft, hard)` for setrlimit(2), resolved by the parent
    #[serde(default)]
    pub rlimits: Vec<(i32, u64, u64)>,
}

impl ChildConfig {
    /// The config of a helper job (apply, write, chown) that runs no step:
    /// only the user namespace and its mapping matter. `dir` is where the
    /// job works.
    pub fn job(dir: PathBuf) -> Self {
        ChildConfig {
            probe: false,
            apply: None,
            write: None,
            chown: None,
            lowers_top_first: Vec::new(),
            upper: dir,
            work: PathBuf::new(),
            rootfs: PathBuf::new(),
            mounts: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            setgroups: false,
            hostname: String::new(),
            network: Network::Host,
            driver: DriverChoice::Auto,
            cleanup: None,
            idmap: Vec::new(),
            pids_limit: crate::spec::DEFAULT_PIDS_LIMIT,
            net_files: Vec::new(),
            extra_hosts: Vec::new(),
            rlimits: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyJob {
    pub target: PathBuf,
    /// keep whiteouts in overlay form (a lower directory) instead of deleting
    pub overlay: bool,
    /// `ApplyOptions::max_size`, read by the parent (the child's
    /// environment is cleared)
    pub max_size: u64,
}

/// A layer tar of `dir`, written by the namespace's root: rootless, a step
/// leaves files of subordinate IDs that the calling user may not read (apt's
/// 0700 `/var/cache/apt/archives/partial`, owned by `_apt`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteJob {
    pub dir: PathBuf,
    pub overlay_whiteouts: bool,
    pub source_date_epoch: Option<u64>,
    pub xattrs: bool,
    /// remove `dir` afterwards (only the namespace's root can)
    pub remove: bool,
}

/// lchown(2) of `path` to container IDs, done by the namespace's root:
/// rootless, the calling user may not give a file to another ID, but its
/// namespace's root may give it to any mapped one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChownEntry {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToParent {
    Chowned(u64),
    Written {
        entries: u64,
        bytes: u64,
    },
    Applied {
        entries: u64,
        bytes: u64,
        skipped: Vec<(String, String)>,
    },
    /// the user namespace exists: write its maps, then send `GO`
    NeedMaps,
    Driver(crate::spec::Driver),
    /// mount points created in the rootfs (relative paths), to remove from
    /// the upper directory afterwards
    Stubs(Vec<String>),
    InitPid(i32),
    Warning(String),
    Failed {
        stage: String,
        error: String,
        errno: Option<i32>,
    },
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

pub const GO: &[u8] = b"go";
