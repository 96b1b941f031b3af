//! Supply-chain evidence for kiln's images: an SBOM (SPDX 2.3 JSON, or
//! CycloneDX 1.6 JSON) of what an image holds, and SLSA v1 provenance of how
//! it was built, both byte-identical for identical inputs (times come from
//! SOURCE_DATE_EPOCH, every list is ordered by content).
//!
//! Where things live:
//! - `tree.rs`: the image's merged filesystem, read once from its layers,
//!   keeping only package records and ELF executables' digests and build info;
//! - `records.rs`: dpkg status (`status` and `status.d/`), Python
//!   `METADATA`, npm `package.json`, `os-release` parsers;
//! - `binary.rs`: Go build info (`.go.buildinfo`) and `cargo auditable` data
//!   (`.dep-v0`) out of ELF files (goblin);
//! - `scan.rs`: tree -> [`Sbom`] (the static base's parts with their
//!   versions, packages, executables, and the relationships, including
//!   GENERATED_FROM the build stage a file was copied from);
//! - `model.rs`: the format-neutral SBOM; `spdx.rs` (spdx-rs) and
//!   `cyclonedx.rs` render it; `purl.rs` spells package URLs;
//! - `provenance.rs`: the SLSA v1 provenance predicate in an in-toto
//!   statement, with the predicate types and the in-toto statement shared
//!   with the SBOM.
//!
//! A build's secrets never reach either document: the SBOM is read from the
//! image (where a secret never is), and provenance takes build args only
//! through [`provenance::BuildInputs`], which drops any whose name or value
//! is a secret's.

// Errors carry their context by value; they are built only on failure paths.
#![allow(clippy::result_large_err)]

mod binary;
pub mod cyclonedx;
pub mod model;
pub mod provenance;
mod purl;
pub mod records;
mod scan;
pub mod spdx;
pub mod statement;
pub mod tree;

pub use binary::{BinaryInfo, CargoPackage, GoBuildInfo, GoModule, go_build_info};
pub use cyclonedx::to_cyclonedx_json;
pub use model::{Ecosystem, Origin, Package, Sbom, Subject};
pub use scan::{CA_ROOTS_VERSION, scan};
pub use spdx::to_spdx_json;
pub use tree::Tree;

use kiln_oci::{Image, Store};

/// `ID` of the static base's `/etc/os-release`.
pub const STATIC_BASE_OS_ID: &str = "kiln-static";
pub(crate) const TOOL_NAME: &str = "kiln";
pub(crate) const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
pub(crate) const TOOL: &str = concat!("kiln-", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("cannot open layer {digest} of the image")]
    Open {
        digest: kiln_oci::Digest,
        #[source]
        source: Box<kiln_oci::FlattenError>,
    },
    #[error("cannot read layer {digest} of the image")]
    Layer {
        digest: kiln_oci::Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("SOURCE_DATE_EPOCH {0} is not a representable time")]
    Epoch(i64),
    #[error("cannot serialize the document")]
    Json(#[source] serde_json::Error),
}

/// The SBOM formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Spdx,
    CycloneDx,
}

impl Format {
    /// The in-toto predicate type of the format.
    pub fn predicate_type(self) -> &'static str {
        match self {
            Format::Spdx => statement::PREDICATE_SPDX,
            Format::CycloneDx => statement::PREDICATE_CYCLONEDX,
        }
    }

    pub fn render(self, sbom: &Sbom) -> Result<Vec<u8>, SbomError> {
        match self {
            Format::Spdx => to_spdx_json(sbom),
            Format::CycloneDx => to_cyclonedx_json(sbom),
        }
    }
}

/// Reads the merged filesystem of `image` (each layer decompressed once,
/// in order).
pub fn read_image(store: &Store, image: &Image) -> Result<Tree, SbomError> {
    let mut tree = Tree::default();
    for layer in &image.layers {
        let r = kiln_oci::open_layer(store, layer).map_err(|e| SbomError::Open {
            digest: layer.digest,
            source: Box::new(e),
        })?;
        tree.add_layer(r).map_err(|source| SbomError::Layer {
            digest: layer.digest,
            source,
        })?;
    }
    Ok(tree)
}

/// The SBOM of an image in the store, named `name`.
pub fn generate(
    store: &Store,
    image: &Image,
    name: &str,
    created: i64,
    origins: &[Origin],
) -> Result<Sbom, SbomError> {
    let tree = read_image(store, image)?;
    let c = &image.config;
    let platform = match c.variant() {
        Some(v) => format!("{}/{}/{v}", c.os(), c.architecture()),
        None => format!("{}/{}", c.os(), c.architecture()),
    };
    let subject = Subject {
        name: name.to_string(),
        digest: Some(image.digest),
        platform: Some(platform),
    };
    Ok(scan(&tree, subject, created, origins))
}

/// The image's own purl: `pkg:oci/NAME@DIGEST`.
pub(crate) fn scan_purl_of_subject(s: &Subject) -> String {
    let digest = s.digest.map(|d| d.to_string()).unwrap_or_default();
    let repo = s.name.split('@').next().unwrap_or(&s.name);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    let name = repo.rsplit('/').next().unwrap_or(repo);
    let q: Vec<(&str, &str)> = if repo.contains('/') {
        vec![("repository_url", repo)]
    } else {
        vec![]
    };
    purl::purl("oci", None, name, Some(&digest), &q)
}
