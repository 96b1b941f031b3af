//! What a sandbox runs: the public description of one build step.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The process limit of a step that sets none: a fork bomb stops there
/// instead of taking the host (podman's default is 2048; BuildKit sets none).
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// The size of a tmpfs mount that sets none (the kernel's default is half
/// of RAM, per mount).
pub const DEFAULT_TMPFS_SIZE: u64 = 1 << 30;

/// One build step to run in a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Lower snapshot directories, bottom layer first. Each is a directory
    /// in overlay form (whiteouts as 0/0 character devices, opaque
    /// directories by xattr), e.g. as [`kiln_layer::apply_tar`] writes with
    /// `WhiteoutMode::Overlay(OverlayXattr::User)`. May be empty.
    pub lowers: Vec<PathBuf>,
    /// A fresh, empty directory that receives every change of the step (the
    /// overlay upper directory). The caller turns it into a layer with
    /// [`kiln_layer::write_tar`], `overlay_whiteouts` on and
    /// [`crate::Outcome::id_mapping`] as the map.
    pub upper: PathBuf,
    pub mounts: Vec<Mount>,
    /// argv; `args[0]` is looked up in the step's `PATH` when it has no `/`
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs; `PATH` and `HOME` get defaults when missing
    pub env: Vec<String>,
    /// working directory inside the rootfs, created when missing
    pub cwd: String,
    /// `NAME`, `UID`, `NAME:GROUP` or `UID:GID`, resolved through the rootfs's
    /// /etc/passwd and /etc/group; `None` is root
    pub user: Option<String>,
    pub hostname: String,
    pub network: Network,
    /// killed (the whole pid namespace) after this long
    pub timeout: Option<Duration>,
    pub driver: DriverChoice,
    /// most processes (and threads) the step may have at once; `None` is
    /// the runtime's default ([`DEFAULT_PIDS_LIMIT`])
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// `(HOST, IP)` lines added to the step's `/etc/hosts` (docker's
    /// `--add-host`): on the host network a copy of the host's file with
    /// them, elsewhere the sandbox's own
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// resource limits set with setrlimit(2) before the step's program
    /// starts (docker's `--ulimit`)
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
}

/// One resource limit: docker's name (`nofile`, `core`, ...: `RLIMIT_*`
/// without the prefix, lower case) and its values, `-1` unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

impl SandboxSpec {
    /// A spec with defaults: no lowers, no mounts, cwd `/`, root, host
    /// network, hostname `kiln`, no timeout, automatic driver.
    pub fn new(upper: impl Into<PathBuf>, args: Vec<String>) -> Self {
        SandboxSpec {
            lowers: Vec::new(),
            upper: upper.into(),
            mounts: Vec::new(),
            args,
            env: Vec::new(),
            cwd: "/".into(),
            user: None,
            hostname: "kiln".into(),
            network: Network::Host,
            timeout: None,
            driver: DriverChoice::Auto,
            pids_limit: None,
            extra_hosts: Vec::new(),
            rlimits: Vec::new(),
        }
    }
}

/// A mount inside the sandbox. `target` is an absolute path inside the
/// rootfs; it is resolved inside the rootfs (symlinks in the image cannot
/// lead it out) and created when missing, and such created mount points are
/// removed from the upper directory afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mount {
    pub target: String,
    pub kind: MountKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MountKind {
    /// a host file or directory, read-only or read-write
    Bind { source: PathBuf, readonly: bool },
    /// a persistent host directory, read-write (cache mounts)
    Cache { source: PathBuf },
    /// a host file, read-only (secrets: never part of the upper directory)
    Secret { source: PathBuf },
    /// a fresh tmpfs, optionally limited in bytes
    Tmpfs { size: Option<u64> },
    /// a host unix socket (a forwarded SSH agent), bound on a file:
    /// connect(2) reaches the listener on the host
    Socket { source: PathBuf },
}

/// The step's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Network {
    /// the host's network, with its /etc/resolv.conf and /etc/hosts
    #[default]
    Host,
    /// an own network namespace with only loopback, up
    None,
    /// an own network namespace whose only way out is slirp4netns(1)'s
    /// user-mode NAT (`tap0`, 10.0.2.100/24): outbound TCP and UDP and DNS
    /// (slirp's resolver 10.0.2.3, in a generated /etc/resolv.conf) work,
    /// the host's loopback listeners (`--disable-host-loopback`, also through
    /// the host alias 10.0.2.2) and abstract unix sockets (bound to the
    /// network namespace, unix(7)) are out of reach. Services listening on
    /// the host's other addresses stay reachable through them. Needs the
    /// `slirp4netns` program and read-write access to `/dev/net/tun`.
    Isolated,
}

/// Which snapshot driver to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DriverChoice {
    /// kernel overlayfs, else fuse-overlayfs
    #[default]
    Auto,
    Overlay,
    FuseOverlayfs,
    /// copy the lowers into a plain directory and diff it afterwards: slow,
    /// but needs no mount of any filesystem
    Copy,
}

impl DriverChoice {
    /// `overlay`, `fuse-overlayfs` or `copy` (as `KILN_SANDBOX_DRIVER` takes them)
    pub fn parse(s: &str) -> Option<DriverChoice> {
        match s {
            "auto" | "" => Some(DriverChoice::Auto),
            "overlay" => Some(DriverChoice::Overlay),
            "fuse-overlayfs" => Some(DriverChoice::FuseOverlayfs),
            "copy" => Some(DriverChoice::Copy),
            _ => None,
        }
    }
}

/// The snapshot driver a sandbox used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Driver {
    /// kernel overlayfs, mounted inside the user namespace with `userxattr`
    Overlay,
    /// fuse-overlayfs, when the kernel refuses overlay in a user namespace
    FuseOverlayfs,
    /// a copy of the lowers, diffed after the step (no mount needed)
    Copy,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::FuseOverlayfs => "fuse-overlayfs",
            Driver::Copy => "copy",
        }
    }
}
