//! kiln's build graph.
//!
//! A build is a DAG of [`Op`]s: sources, exec steps, file operations and
//! merges. Every vertex has a sha256 [`Digest`] over the canonical encoding
//! of its op and the digests of its inputs (see [`canonical`]), so the digest
//! is identical for the same build on any machine, whatever the Kilnfile's
//! formatting or binding names, and different whenever anything that affects
//! the result changes. Names and source locations travel beside the digest in
//! [`Meta`], never inside it.
//!
//! Graphs are built with the immutable [`State`] builder:
//!
//! ```
//! use kiln_dag::{CopyOptions, Exec, State};
//!
//! let build = State::image("docker.io/library/debian:bookworm", None)
//!     .run(Exec::shell("apt-get update && apt-get install -y gcc"))
//!     .workdir("/src");
//! let app = State::static_base()
//!     .copy(&build, "/hello", "/usr/local/bin/hello", CopyOptions::default())
//!     .entrypoint(vec!["/usr/local/bin/hello".into()]);
//! let def = app.definition();
//! assert_eq!(def.vertices.len(), 4);
//! ```

pub mod canonical;
mod copy;
mod definition;
mod mode;
pub mod op;
pub mod settings;
mod state;

pub use definition::{Definition, Vertex};
// The shared vocabulary, under the names this crate has always exported.
pub use kiln_types::{
    Digest, DigestError as DigestParseError, Platform, PlatformError as PlatformParseError,
};
pub use mode::{ModeError, SymbolicMode};
pub use op::{
    CacheSharing, Chown, CopyAction, DebianPackages, ExecOp, FileAction, FileOp, MergeOp, Mount,
    MountKind, Network, Op, SourceOp,
};
pub use settings::{HostIp, RunSettings, Ulimit};
pub use state::{
    CommandLocations, CopyOptions, DEFAULT_PATH, Exec, ExecMount, Healthcheck, ImageConfig,
    STATIC_BASE_REVISION, State, resolve_path,
};

use serde::{Deserialize, Serialize};

/// Where in a Kilnfile a vertex came from: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Human information about a vertex; never part of its digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// A progress label such as `build: run "go build"`.
    pub name: Option<String>,
    pub location: Option<Location>,
}
