//! Multi-platform images: one OCI index holding one image manifest per
//! platform (each with its attestation manifest, in BuildKit's layout, when
//! the build made attestations), stored as a blob a local tag may point at,
//! and written as an OCI archive or layout whose one `index.json` entry is
//! the index (what buildx writes for `--platform a,b -o type=oci`).
//!
//! A tag of a multi-platform build points at its index, which
//! [`Index::load`] reads and [`Index::select`] picks a platform from. A tag
//! of a single-platform image built with attestations points at the index
//! of that image and its attestation manifest (as BuildKit's image exporter
//! stores it; [`Index::single`]); without attestations, at the image
//! manifest.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::Path;

use kiln_store::{Digest, Store, StoreError};
use kiln_types::Platform;
use serde_json::json;

use crate::attestation::{
    ANNOTATION_REFERENCE_DIGEST, ANNOTATION_REFERENCE_TYPE, ARTIFACT_TYPE, Attested,
};
use crate::image::{Image, MEDIA_DOCKER_LIST, MEDIA_INDEX};
use crate::json::canonical_json;
use crate::output::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ExportError, write_file_atomic};
use crate::reference::split_tag;

/// One manifest an index lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// `None` for an attestation manifest (`unknown/unknown`) or an entry
    /// without a platform
    pub platform: Option<Platform>,
    /// for an attestation manifest: the image manifest it describes
    pub attests: Option<Digest>,
    /// an OCI 1.1 referrer attestation manifest (`--attest-layout
    /// referrers`), which names its image as `subject`
    pub referrer: bool,
}

/// An index in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub digest: Digest,
    pub size: u64,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read or write index {digest} in the store")]
    Store {
        digest: Digest,
        #[source]
        source: StoreError,
    },
    #[error("cannot store the index of the platforms' images")]
    Put(#[source] StoreError),
    #[error("index {digest} is not readable: {reason}")]
    Bad { digest: Digest, reason: String },
    #[error("two images for {platform} in one index")]
    Duplicate { platform: Platform },
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

/// The image entry of an index: its descriptor and its config's platform.
fn image_entry(image: &Image) -> serde_json::Value {
    let mut e = descriptor(&image.media_type, &image.digest, image.manifest_size);
    let c = &image.config;
    let mut platform =
        json!({"architecture": c.architecture().to_string(), "os": c.os().to_string()});
    if let Some(v) = c.variant() {
        platform["variant"] = json!(v);
    }
    e["platform"] = platform;
    e
}

impl Index {
    /// Stores the index of `images` (one per platform, in this order), each
    /// followed by its attestation manifest when it has one. The same images
    /// give the same index digest.
    pub fn store(
        store: &Store,
        images: &[(&Image, Option<&Attested>)],
    ) -> Result<Index, IndexError> {
        let mut manifests = Vec::new();
        let mut seen = BTreeSet::new();
        for (image, att) in images {
            let p = platform_of(image);
            if !seen.insert(p.clone()) {
                return Err(IndexError::Duplicate { platform: p });
            }
            match att {
                // the attested index already lists the image and its
                // attestation manifest as BuildKit does
                Some(att) => {
                    let bytes =
                        store
                            .read_blob(&att.index)
                            .map_err(|source| IndexError::Store {
                                digest: att.index,
                                source,
                            })?;
                    let idx: serde_json::Value =
                        serde_json::from_slice(&bytes).map_err(|e| IndexError::Bad {
                            digest: att.index,
                            reason: e.to_string(),
                        })?;
                    manifests.extend(idx["manifests"].as_array().cloned().unwrap_or_default());
                }
                None => manifests.push(image_entry(image)),
            }
        }
        let bytes = canonical_json(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": manifests,
        }));
        let digest = store.put_blob(&bytes).map_err(IndexError::Put)?;
        Index::parse(digest, &bytes)
    }

    /// The index `digest` in the store, or `None` when that blob is an
    /// image manifest.
    pub fn load(store: &Store, digest: &Digest) -> Result<Option<Index>, IndexError> {
        let bytes = store
            .read_blob(digest)
            .map_err(|source| IndexError::Store {
                digest: *digest,
                source,
            })?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| IndexError::Bad {
            digest: *digest,
            reason: e.to_string(),
        })?;
        let mt = v["mediaType"].as_str().unwrap_or_default();
        let is_index = mt == MEDIA_INDEX
            || mt == MEDIA_DOCKER_LIST
            || (mt.is_empty() && v["manifests"].is_array());
        if !is_index {
            return Ok(None);
        }
        Index::parse(*digest, &bytes).map(Some)
    }

    fn parse(digest: Digest, bytes: &[u8]) -> Result<Index, IndexError> {
        let bad = |reason: String| IndexError::Bad { digest, reason };
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let mut entries = Vec::new();
        for m in v["manifests"].as_array().into_iter().flatten() {
            let d = m["digest"]
                .as_str()
                .and_then(|s| Digest::parse(s).ok())
                .ok_or_else(|| bad("an entry without a valid digest".into()))?;
            let p = &m["platform"];
            let platform = match (p["os"].as_str(), p["architecture"].as_str()) {
                (Some(os), Some(arch)) if os != "unknown" => {
                    Some(Platform::new(os, arch, p["variant"].as_str()).normalized())
                }
                _ => None,
            };
            let attests = (m["annotations"][ANNOTATION_REFERENCE_TYPE] == "attestation-manifest")
                .then(|| m["annotations"][ANNOTATION_REFERENCE_DIGEST].as_str())
                .flatten()
                .and_then(|s| Digest::parse(s).ok());
            entries.push(Entry {
                digest: d,
                size: m["size"].as_u64().unwrap_or(0),
                media_type: m["mediaType"].as_str().unwrap_or_default().to_string(),
                platform,
                attests,
                referrer: m["artifactType"] == ARTIFACT_TYPE,
            });
        }
        Ok(Index {
            digest,
            size: bytes.len() as u64,
            entries,
        })
    }

    /// The image manifests' entries (not the attestation manifests').
    pub fn images(&self) -> impl Iterator<Item = &Entry> {
        (self.entries.iter()).filter(|e| e.attests.is_none() && !e.referrer)
    }

    /// The platforms of the images, in index order.
    pub fn platforms(&self) -> Vec<Platform> {
        self.images().filter_map(|e| e.platform.clone()).collect()
    }

    /// The image manifest of an index that holds one image (and its
    /// attestation manifests): what a single-platform build with
    /// attestations tags, the way BuildKit's image exporter stores it.
    pub fn single(&self) -> Option<Digest> {
        let mut images = self.images();
        match (images.next(), images.next()) {
            (Some(e), None) => Some(e.digest),
            _ => None,
        }
    }

    /// The image manifest for `want` (containerd's matching: an entry
    /// without a variant matches any of its architecture's).
    pub fn select(&self, want: &Platform) -> Option<Digest> {
        let images = || self.images();
        let exact = images().find(|e| e.platform.as_ref() == Some(want));
        let loose = || {
            images().find(|e| {
                e.platform.as_ref().is_some_and(|p| {
                    p.os == want.os
                        && p.architecture == want.architecture
                        && (p.variant.is_none() || want.variant.is_none())
                })
            })
        };
        exact.or_else(loose).map(|e| e.digest)
    }

    /// Every blob of the index: itself, each manifest, their configs and
    /// layers (statements for attestation manifests), deduplicated.
    pub fn blobs(&self, store: &Store) -> Result<Vec<Digest>, IndexError> {
        let mut v = vec![self.digest];
        for e in &self.entries {
            v.push(e.digest);
            let bytes = store
                .read_blob(&e.digest)
                .map_err(|source| IndexError::Store {
                    digest: e.digest,
                    source,
                })?;
            let m: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|err| IndexError::Bad {
                    digest: e.digest,
                    reason: err.to_string(),
                })?;
            let descs =
                std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten());
            for d in descs {
                if let Some(d) = d["digest"].as_str().and_then(|s| Digest::parse(s).ok()) {
                    v.push(d);
                }
            }
        }
        let mut seen = BTreeSet::new();
        v.retain(|d| seen.insert(*d));
        Ok(v)
    }
}

/// The normalized platform an image's config names.
pub fn platform_of(image: &Image) -> Platform {
    let c = &image.config;
    Platform::new(
        &c.os().to_string(),
        &c.architecture().to_string(),
        c.variant().as_deref(),
    )
    .normalized()
}

/// `index.json` of a layout whose one entry is the index `index`.
/// `extra`: annotations of the index's descriptor (buildx's
/// `--annotation index-descriptor:K=V`); the ref and image names win.
fn layout_index(
    index: &Digest,
    size: u64,
    name: Option<&str>,
    extra: &std::collections::BTreeMap<String, String>,
) -> Vec<u8> {
    let mut entry = descriptor(MEDIA_INDEX, index, size);
    let mut ann: std::collections::BTreeMap<&str, String> =
        extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    ann.insert(
        ANNOTATION_REF_NAME,
        name.map(|n| split_tag(n).1)
            .unwrap_or_else(|| "latest".to_owned()),
    );
    if let Some(n) = name {
        ann.insert(ANNOTATION_IMAGE_NAME, n.to_owned());
    }
    entry["annotations"] = json!(ann);
    let mut bytes = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [entry],
    }));
    bytes.push(b'\n');
    bytes
}

fn member(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// Writes an OCI archive whose `index.json` names the index `index`
/// (`size` bytes, its descriptor annotated with `annotations`) and whose
/// blobs are `blobs` (the index's own included).
pub fn write_oci_archive<W: Write>(
    store: &Store,
    index: &Digest,
    size: u64,
    blobs: &[Digest],
    name: Option<&str>,
    annotations: &std::collections::BTreeMap<String, String>,
    out: W,
) -> Result<W, ExportError> {
    let werr = |source| ExportError::Write {
        path: "oci archive".into(),
        source,
    };
    let mut b = tar::Builder::new(out);
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    b.append_data(
        &mut member(layout.len() as u64, false),
        "oci-layout",
        &layout[..],
    )
    .map_err(werr)?;
    let idx = layout_index(index, size, name, annotations);
    b.append_data(&mut member(idx.len() as u64, false), "index.json", &idx[..])
        .map_err(werr)?;
    b.append_data(&mut member(0, true), "blobs/", io::empty())
        .map_err(werr)?;
    b.append_data(&mut member(0, true), "blobs/sha256/", io::empty())
        .map_err(werr)?;
    for d in blobs {
        let berr = |source| ExportError::Blob { digest: *d, source };
        let size = store.blob_size(d).map_err(berr)?;
        let f = store.open_blob(d).map_err(berr)?;
        b.append_data(
            &mut member(size, false),
            format!("blobs/sha256/{}", d.hex()),
            f,
        )
        .map_err(werr)?;
    }
    b.into_inner().map_err(werr)
}

/// Writes (or adds to) an OCI layout directory: the blobs it lacks and an
/// `index.json` entry naming the index (annotated with `annotations`),
/// replacing one of the same ref name.
pub fn write_oci_layout(
    store: &Store,
    index: &Digest,
    size: u64,
    blobs: &[Digest],
    name: Option<&str>,
    annotations: &std::collections::BTreeMap<String, String>,
    dir: &Path,
) -> Result<(), ExportError> {
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Write { path, source }
    };
    let dest_blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&dest_blobs).map_err(werr(&dest_blobs))?;
    for d in blobs {
        let dest = dest_blobs.join(d.hex());
        if dest.is_file() {
            continue;
        }
        write_file_atomic(&dest, |w| {
            let mut f = store
                .open_blob(d)
                .map_err(|source| ExportError::Blob { digest: *d, source })?;
            io::copy(&mut f, w).map_err(werr(&dest))?;
            Ok(())
        })?;
    }
    let mut index: serde_json::Value =
        serde_json::from_slice(&layout_index(index, size, name, annotations))
            .expect("our own JSON");
    if let Ok(bytes) = std::fs::read(dir.join("index.json"))
        && let Ok(old) = serde_json::from_slice::<serde_json::Value>(&bytes)
    {
        let tag = &index["manifests"][0]["annotations"][ANNOTATION_REF_NAME];
        let mut kept: Vec<serde_json::Value> = old["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| &m["annotations"][ANNOTATION_REF_NAME] != tag)
            .collect();
        kept.push(index["manifests"][0].clone());
        index["manifests"] = json!(kept);
    }
    let mut bytes = canonical_json(&index);
    bytes.push(b'\n');
    write_file_atomic(&dir.join("oci-layout"), |w| {
        w.write_all(br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(werr(dir))
    })?;
    write_file_atomic(&dir.join("index.json"), |w| {
        w.write_all(&bytes).map_err(werr(dir))
    })
}
