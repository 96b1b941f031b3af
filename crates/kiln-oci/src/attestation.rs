//! Attestations attached to an image the way BuildKit attaches them, so
//! buildx, docker and registries read them: the result becomes an index
//! holding the image manifest and an attestation manifest whose layers are
//! in-toto statements (`application/vnd.in-toto+json`, annotated with
//! `in-toto.io/predicate-type`), marked by the annotations
//! `vnd.docker.reference.type=attestation-manifest` and
//! `vnd.docker.reference.digest=<image manifest>` and the platform
//! `unknown/unknown` (BuildKit's docs/attestations/attestation-storage.md).
//!
//! With [`Layout::Referrers`] the attestation manifest names the image as its
//! OCI 1.1 `subject` instead, with an `artifactType`, and the index lists it
//! beside the image for layouts that keep referrers in `index.json`.
//!
//! A local tag of an attested image points at this index, as BuildKit's
//! image exporter stores it (readers of one image take it through
//! `Index::single`); the `attestations` record, keyed by the image's
//! digest, finds the index from an image manifest digest.

use std::io::Write;
use std::path::Path;

use kiln_store::{Digest, Store, StoreError};
use serde_json::json;

use crate::image::{Image, MEDIA_INDEX, MEDIA_MANIFEST};
use crate::json::canonical_json;
use crate::output::{ExportError, write_file_atomic};

pub const MEDIA_IN_TOTO: &str = "application/vnd.in-toto+json";
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const REFERENCE_TYPE_ATTESTATION: &str = "attestation-manifest";
/// The artifact type of a referrer attestation manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.docker.attestation.manifest.v1+json";
const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The store record kind: image manifest digest -> index digest.
const RECORD: &str = "attestations";

/// One in-toto statement, as bytes, and its predicate type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub predicate_type: String,
    pub bytes: Vec<u8>,
}

/// How the attestation manifest points at the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// BuildKit's: an index entry with `vnd.docker.reference.*` annotations
    #[default]
    Index,
    /// OCI 1.1: the manifest's `subject`
    Referrers,
}

/// An image with its attestations, all blobs in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    pub index: Digest,
    pub index_size: u64,
    pub image: Digest,
    pub attestation: Digest,
    /// the attestation manifest, its config and statement blobs
    pub blobs: Vec<Digest>,
    /// with [`Layout::Referrers`], the index a registry without the
    /// referrers API is given under the tag `sha256-<image hex>` (the OCI
    /// distribution spec's fallback), listing the attestation manifest
    pub referrers_index: Option<Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    #[error("cannot store the attestation blobs")]
    Store(#[source] StoreError),
    #[error("the attestation index {digest} of image {image} is not readable: {reason}")]
    BadIndex {
        image: Digest,
        digest: Digest,
        reason: String,
    },
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

/// Stores the attestation manifest and the index for `image` and records
/// the index under the image's digest. Identical statements give identical
/// digests.
pub fn attach(
    store: &Store,
    image: &Image,
    statements: &[Statement],
    layout: Layout,
) -> Result<Attested, AttestationError> {
    let put = |bytes: &[u8]| store.put_blob(bytes).map_err(AttestationError::Store);
    let mut layers = Vec::new();
    let mut blobs = Vec::new();
    for s in statements {
        let d = put(&s.bytes)?;
        let mut desc = descriptor(MEDIA_IN_TOTO, &d, s.bytes.len() as u64);
        desc["annotations"] = json!({ ANNOTATION_PREDICATE_TYPE: s.predicate_type });
        layers.push(desc);
        blobs.push(d);
    }
    let image_desc = descriptor(&image.media_type, &image.digest, image.manifest_size);
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "layers": layers,
    });
    // BuildKit v0.32's attestation manifests have the empty config
    let c = put(b"{}")?;
    manifest["config"] = descriptor(MEDIA_EMPTY, &c, 2);
    blobs.push(c);
    if layout == Layout::Referrers {
        manifest["artifactType"] = json!(ARTIFACT_TYPE);
        manifest["subject"] = image_desc.clone();
    }
    let manifest = canonical_json(&manifest);
    let m = put(&manifest)?;
    blobs.insert(0, m);
    let mut image_entry = image_desc;
    let c = &image.config;
    let mut platform =
        json!({"architecture": c.architecture().to_string(), "os": c.os().to_string()});
    if let Some(v) = c.variant() {
        platform["variant"] = json!(v);
    }
    image_entry["platform"] = platform;
    let mut att_entry = descriptor(MEDIA_MANIFEST, &m, manifest.len() as u64);
    match layout {
        Layout::Index => {
            att_entry["annotations"] = json!({
                ANNOTATION_REFERENCE_DIGEST: image.digest.to_string(),
                ANNOTATION_REFERENCE_TYPE: REFERENCE_TYPE_ATTESTATION,
            });
            att_entry["platform"] = json!({"architecture": "unknown", "os": "unknown"});
        }
        Layout::Referrers => {
            att_entry["artifactType"] = json!(ARTIFACT_TYPE);
        }
    }
    let index = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [image_entry, att_entry],
    }));
    let i = put(&index)?;
    store
        .put_record(
            RECORD,
            image.digest.to_string().as_bytes(),
            i.to_string().as_bytes(),
        )
        .map_err(AttestationError::Store)?;
    let referrers_index = match layout {
        Layout::Index => None,
        Layout::Referrers => Some(referrers_fallback(store, &m, manifest.len() as u64)?),
    };
    Ok(Attested {
        index: i,
        index_size: index.len() as u64,
        image: image.digest,
        attestation: m,
        blobs,
        referrers_index,
    })
}

/// The index the referrers tag schema (`sha256-<image hex>`) points at:
/// the one attestation manifest, with its artifact type.
fn referrers_fallback(
    store: &Store,
    manifest: &Digest,
    size: u64,
) -> Result<Digest, AttestationError> {
    let mut entry = descriptor(MEDIA_MANIFEST, manifest, size);
    entry["artifactType"] = json!(ARTIFACT_TYPE);
    let fallback = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [entry],
    }));
    store.put_blob(&fallback).map_err(AttestationError::Store)
}

/// For the index of one image and its OCI 1.1 referrer attestation manifest
/// (what [`Layout::Referrers`] makes): the image manifest, pushed under the
/// tag, and the index the referrers tag schema's `sha256-<image hex>` tag
/// is given. `None` for BuildKit's layout, which is pushed as the index.
pub fn referrers_push(
    store: &Store,
    index: &crate::Index,
) -> Result<Option<(Digest, Digest)>, AttestationError> {
    let (Some(image), Some(r)) = (index.single(), index.entries.iter().find(|e| e.referrer)) else {
        return Ok(None);
    };
    Ok(Some((image, referrers_fallback(store, &r.digest, r.size)?)))
}

/// The statements attached to the image `image` in this store (empty when
/// it has none, or when a prune took their blobs).
pub fn statements_of(store: &Store, image: &Digest) -> Result<Vec<Statement>, AttestationError> {
    let Ok(Some(rec)) = store.get_record(RECORD, image.to_string().as_bytes()) else {
        return Ok(Vec::new());
    };
    let Ok(index) = Digest::parse(&String::from_utf8_lossy(&rec)) else {
        return Ok(Vec::new());
    };
    if !store.has_blob(&index) {
        return Ok(Vec::new());
    }
    let bad = |reason: String| AttestationError::BadIndex {
        image: *image,
        digest: index,
        reason,
    };
    let read = |d: &Digest| store.read_blob(d).map_err(|e| bad(e.to_string()));
    let idx: serde_json::Value =
        serde_json::from_slice(&read(&index)?).map_err(|e| bad(e.to_string()))?;
    statements_in_index(&idx, image, &|d, _| read(d)).map_err(bad)
}

/// The attestations a previous [`attach`] stored under `index` for `image`,
/// so a rebuild that made the same image reuses them without a write.
pub fn load(
    store: &Store,
    image: &Image,
    index: &Digest,
) -> Result<(Attested, Vec<Statement>), AttestationError> {
    let bad = |reason: String| AttestationError::BadIndex {
        image: image.digest,
        digest: *index,
        reason,
    };
    let read = |d: &Digest| store.read_blob(d).map_err(|e| bad(e.to_string()));
    let bytes = read(index)?;
    let idx: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let want = image.digest.to_string();
    let entry = idx["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| {
            e["annotations"][ANNOTATION_REFERENCE_DIGEST] == want.as_str()
                || e["artifactType"] == ARTIFACT_TYPE
        })
        .ok_or_else(|| bad("no attestation manifest for the image".into()))?;
    let parse = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| Digest::parse(s).ok())
            .ok_or_else(|| bad("a descriptor without a digest".into()))
    };
    let m = parse(&entry["digest"])?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&m)?).map_err(|e| bad(e.to_string()))?;
    let mut blobs = vec![m];
    for l in manifest["layers"].as_array().into_iter().flatten() {
        blobs.push(parse(&l["digest"])?);
    }
    blobs.push(parse(&manifest["config"]["digest"])?);
    for d in &blobs {
        if !store.has_blob(d) {
            return Err(bad(format!("blob {d} is gone")));
        }
    }
    let statements = statements_in_index(&idx, &image.digest, &|d, _| read(d)).map_err(bad)?;
    let referrers_index = if entry["artifactType"] == ARTIFACT_TYPE {
        Some(referrers_fallback(
            store,
            &m,
            entry["size"].as_u64().unwrap_or(0),
        )?)
    } else {
        None
    };
    Ok((
        Attested {
            index: *index,
            index_size: bytes.len() as u64,
            image: image.digest,
            attestation: m,
            blobs,
            referrers_index,
        },
        statements,
    ))
}

/// What [`statements_in_index`] asks its reader for: a manifest, or a blob
/// of the size its descriptor gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    Manifest,
    Blob { size: u64 },
}

/// How [`statements_in_index`] reads a manifest or blob by digest.
pub type ReadFn<'a> = dyn Fn(&Digest, Fetch) -> Result<Vec<u8>, AttestationError> + 'a;

/// The statements of the attestation manifest an index holds for `image`
/// (BuildKit's layout or a referrer), read through `read`. Shared with the
/// registry path, which reads manifests and blobs over the network.
pub fn statements_in_index(
    index: &serde_json::Value,
    image: &Digest,
    read: &ReadFn<'_>,
) -> Result<Vec<Statement>, String> {
    let want = image.to_string();
    let Some(entries) = index["manifests"].as_array() else {
        return Err("no `manifests`".into());
    };
    let mut out = Vec::new();
    for e in entries {
        let ann = &e["annotations"];
        let buildkit = ann[ANNOTATION_REFERENCE_TYPE] == REFERENCE_TYPE_ATTESTATION
            && ann[ANNOTATION_REFERENCE_DIGEST] == want.as_str();
        let referrer = e["artifactType"] == ARTIFACT_TYPE;
        if !(buildkit || referrer) {
            continue;
        }
        let d = e["digest"]
            .as_str()
            .and_then(|s| Digest::parse(s).ok())
            .ok_or("a manifest entry without a digest")?;
        let m: serde_json::Value =
            serde_json::from_slice(&read(&d, Fetch::Manifest).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        if referrer && m["subject"]["digest"] != want.as_str() {
            continue;
        }
        for l in m["layers"].as_array().into_iter().flatten() {
            let Some(d) = l["digest"].as_str().and_then(|s| Digest::parse(s).ok()) else {
                continue;
            };
            out.push(Statement {
                predicate_type: l["annotations"][ANNOTATION_PREDICATE_TYPE]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                bytes: read(
                    &d,
                    Fetch::Blob {
                        size: l["size"].as_u64().unwrap_or(0),
                    },
                )
                .map_err(|e| e.to_string())?,
            });
        }
    }
    Ok(out)
}

/// The blobs of `image` and its attestations, deduplicated, in a fixed order.
fn all_blobs(image: &Image, att: &Attested) -> Vec<Digest> {
    let mut v = vec![att.index, image.digest, image.config_digest];
    v.extend(image.layers.iter().map(|l| l.digest));
    v.extend(att.blobs.iter().copied());
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|d| seen.insert(*d));
    v
}

/// Writes an OCI archive holding the image and its attestations.
pub fn write_oci_archive<W: Write>(
    store: &Store,
    image: &Image,
    att: &Attested,
    name: Option<&str>,
    out: W,
) -> Result<W, ExportError> {
    let blobs = all_blobs(image, att);
    crate::index::write_oci_archive(
        store,
        &att.index,
        att.index_size,
        &blobs,
        name,
        &Default::default(),
        out,
    )
}

/// Writes a new OCI layout directory holding the image and its attestations
/// (an existing layout is added to: blobs it has are kept, its `index.json`
/// gets the entry, replacing one of the same ref name).
pub fn write_oci_layout(
    store: &Store,
    image: &Image,
    att: &Attested,
    name: Option<&str>,
    dir: &Path,
) -> Result<(), ExportError> {
    let blobs = all_blobs(image, att);
    crate::index::write_oci_layout(
        store,
        &att.index,
        att.index_size,
        &blobs,
        name,
        &Default::default(),
        dir,
    )
}

/// BuildKit's local exporter's file name for a statement: `provenance.json`,
/// `sbom.spdx.json`, `sbom.cdx.json`.
pub fn local_file_name(predicate_type: &str) -> &'static str {
    match predicate_type {
        "https://spdx.dev/Document" => "sbom.spdx.json",
        "https://cyclonedx.org/bom" => "sbom.cdx.json",
        t if t.starts_with("https://slsa.dev/provenance/") => "provenance.json",
        _ => "attestation.json",
    }
}

/// Writes each statement as a file in `dir` (beside the root filesystem a
/// `type=local` export wrote there, as BuildKit's local exporter does).
pub fn write_statement_files(dir: &Path, statements: &[Statement]) -> Result<(), ExportError> {
    for s in statements {
        let path = dir.join(local_file_name(&s.predicate_type));
        write_file_atomic(&path, |w| {
            w.write_all(&s.bytes).map_err(|source| ExportError::Write {
                path: path.clone(),
                source,
            })
        })?;
    }
    Ok(())
}
