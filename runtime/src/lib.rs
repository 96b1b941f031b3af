//! kiln's rootless sandbox for build steps.
//!
//! A step runs in fresh user, mount, pid, ipc and uts namespaces (and a net
//! namespace with only loopback for `Network::None`, or with slirp4netns's
//! user-mode NAT for `Network::Isolated`) over an overlay of
//! lower snapshot directories and a fresh upper directory that collects its
//! changes. [`Runtime::run`] starts the sandbox by re-executing a helper
//! executable (the kiln binary, `kiln __sandbox-child`), which calls
//! [`child_main`]; see `ARCHITECTURE-runtime.md` for the whole picture.
//!
//! Turning the upper directory into a layer and applying layers into lower
//! directories is [`kiln_layer`]'s job.

mod child;
mod copy;
mod harden;
mod hints;
mod hosts;
mod idmap;
mod mountattr;
mod parent;
pub mod passwd;
mod proto;
mod slirp;
mod spec;
pub mod subid;

pub use child::child_main;
pub use hints::{UsernsSettings, userns_hint};
pub use parent::{
    CHILD_SUBCOMMAND, ExitStatus, HostReport, Outcome, Runtime, RuntimeError, Stream, plan_mapping,
    wait_for_cleanup,
};
pub use spec::{
    DEFAULT_PIDS_LIMIT, DEFAULT_TMPFS_SIZE, Driver, DriverChoice, Mount, MountKind, Network,
    Rlimit, SandboxSpec,
};
pub use subid::MapPlan;
