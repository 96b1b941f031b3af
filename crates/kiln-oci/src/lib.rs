//! kiln's image model on top of the content store: OCI manifests and
//! configs (via `oci-spec`), reproducible layer compression, the outputs of
//! `-o/--output` (OCI archive and layout, docker archive, local directory,
//! flattened tar), importers for OCI layouts, archives and root filesystems,
//! and the built-in static base; attestations (SBOM, provenance) attached
//! in BuildKit's layout (`attestation.rs`).
//!
//! Reproducibility: every JSON blob is canonical (sorted keys), gzip headers
//! are fixed, config `created` and history come from SOURCE_DATE_EPOCH, and
//! archive members have fixed owners, modes and mtimes. The same input gives
//! the same manifest digest on any machine of the same architecture.
//!
//! Layer export (`compression.rs`, `pipeline.rs`, `parallel.rs`): a
//! [`LayerWriter`] runs the diff ID hash, chunked parallel compression and
//! the blob write on threads of their own, so they overlap with the tree
//! walk that feeds it ([`LayerWriter::write_tree`] passes kiln-layer's chunk
//! buffers on without copying). Chunks are cut at fixed offsets, so the
//! bytes never depend on the thread count.

// Errors carry their context (path, digest, the store's error) by value;
// they are built only on failure paths, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod attestation;
pub mod compression;
pub mod flatten;
pub mod image;
pub mod import;
pub mod index;
pub mod json;
pub mod output;
mod parallel;
mod pipeline;
pub mod reference;
pub mod static_base;

pub use compression::{Compression, CompressionError, LayerInfo, LayerWriter, layer_from_bytes};
pub use flatten::{FlattenError, open_layer, write_flat_tar, write_flat_tar_with};
pub use image::{Image, ImageError, Layer, NewImage, rfc3339, source_date_epoch};
pub use import::{ImportError, import_oci_archive, import_oci_layout, import_rootfs};
pub use index::{Index, IndexError};
pub use json::canonical_json;
pub use output::{
    ExportError, OutputKind, OutputSpec, SpecError, export, write_docker_archive,
    write_file_atomic, write_local, write_oci_archive, write_oci_layout,
};
pub use static_base::{StaticBaseError, static_base};

pub use kiln_store::{Digest, Store};
pub use oci_spec;
