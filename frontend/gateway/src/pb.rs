//! BuildKit's gateway API (`frontend/gateway/pb/gateway.proto`, package
//! `moby.buildkit.v1.frontend`) and what it imports, generated at build time
//! from the protos `kiln-llb` vendors (see `build.rs`), re-exported under
//! the names the frontend uses.

/// Everything generated, by proto package.
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

pub use generated::errdefs::Source as ErrorSource;
pub use generated::fsutil::types::Stat;
pub use generated::google::rpc::Status;
pub use generated::moby::buildkit::v1::apicaps::ApiCap;
pub use generated::moby::buildkit::v1::frontend::*;
pub use generated::moby::buildkit::v1::frontend::{Result as BuildResult, result as build_result};
pub use generated::moby::buildkit::v1::types::WorkerRecord;
pub use kiln_llb::pb::{Definition, Platform, Position, Range, SourceInfo};
pub use prost_types::Any;

/// The gRPC service BuildKit serves to frontends over stdio.
pub const SERVICE: &str = "moby.buildkit.v1.frontend.LLBBridge";

/// The `Any` type URL of [`ErrorSource`] (`errdefs.Source`).
pub const ERROR_SOURCE_TYPE: &str = "type.googleapis.com/errdefs.Source";
