//! kiln's shared vocabulary: the types every other crate speaks, with one
//! parser each, so the frontend, the registry client and the store agree on
//! what a name means.
//!
//! - [`Reference`] (`reference.rs`): image references in the grammar of
//!   distribution's `reference` package, normalized the way the docker CLI
//!   does (`debian` is `docker.io/library/debian`), with located errors for
//!   diagnostics.
//! - [`Digest`] (`digest.rs`): content digests (`sha256:<hex>`, `sha512`
//!   allowed), serialized as that string; conversions to and from
//!   oci-spec's.
//! - [`Platform`] (`platform.rs`): `os/arch[/variant]` with the one table of
//!   architectures (OCI names, Rust's names, aliases) and containerd's
//!   normalization.
//! - [`error_chain`] (`error.rs`): an error and its sources as one line.
//! - [`spec`] (`spec.rs`): the one reader of buildx-style `KEY=VALUE,...`
//!   flag values (CSV quoting, as buildx's Go `encoding/csv`).
//!
//! This crate depends on nothing of kiln's, so every crate may use it.

mod digest;
mod error;
pub mod platform;
pub mod reference;
pub mod spec;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::error_chain;
pub use platform::{Platform, PlatformError};
pub use reference::{Reference, ReferenceError, ReferenceErrorKind};
