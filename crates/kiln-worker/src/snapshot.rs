//! Results as layer chains, and the directories they are materialized in.
//!
//! A [`Ref`] is the ordered list of layer blobs of a filesystem (plus, for
//! sources, the image config it carries). When a step must read one (a copy
//! source, an exec root), the chain is applied once, in order, into a merged
//! directory under `KILN_HOME/snapshots/<chain digest>` with kiln-layer's
//! confined apply; later steps reuse it.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_layer::{ApplyOptions, WhiteoutMode, WriteOptions};
use kiln_oci::{Compression, Layer, LayerWriter, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// One layer blob of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

impl LayerRef {
    pub fn from_layer(l: &Layer) -> Self {
        LayerRef {
            digest: l.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            size: l.size,
            media_type: l.media_type.clone(),
        }
    }

    pub fn to_layer(&self) -> Result<Layer, SnapshotError> {
        let parse = |s: &str| {
            kiln_oci::Digest::parse(s).map_err(|e| SnapshotError::BadRecord {
                reason: format!("bad digest `{s}`: {e}"),
            })
        };
        Ok(Layer {
            digest: parse(&self.digest)?,
            diff_id: parse(&self.diff_id)?,
            size: self.size,
            media_type: self.media_type.clone(),
        })
    }
}

/// A build result: a filesystem as a layer chain, and the image config it
/// inherits (the config blob digest of the source its stage started from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ref {
    pub layers: Vec<LayerRef>,
    pub config: Option<String>,
}

impl Ref {
    /// A digest naming this exact chain (the config does not matter to the
    /// filesystem).
    pub fn chain_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"kiln-chain/v1\0");
        for l in &self.layers {
            h.update(l.diff_id.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }

    /// Whether every blob the ref names is in the store.
    pub fn complete(&self, store: &Store) -> bool {
        let has = |s: &str| {
            kiln_oci::Digest::parse(s)
                .map(|d| store.has_blob(&d))
                .unwrap_or(false)
        };
        self.layers.iter().all(|l| has(&l.digest)) && self.config.as_deref().is_none_or(has)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot prepare snapshot directory `{path}`: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read layer {digest} from the store: {reason}")]
    Blob { digest: String, reason: String },
    #[error("cannot apply layer {digest} into `{path}`: {source}")]
    Apply {
        digest: String,
        path: PathBuf,
        #[source]
        source: kiln_layer::ApplyError,
    },
    #[error("cannot write a layer from `{path}`: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("a cache record is damaged: {reason}")]
    BadRecord { reason: String },
}

fn dir_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Dir { path, source }
}

/// Where merged chains live.
pub fn snapshots_root(store: &Store) -> PathBuf {
    store.root().join("snapshots")
}

/// A private scratch directory inside the store's filesystem.
pub fn temp_dir(store: &Store, what: &str) -> Result<PathBuf, SnapshotError> {
    let base = store.root().join("worker-tmp");
    fs::create_dir_all(&base).map_err(dir_err(&base))?;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = base.join(format!("{what}-{}-{n}", std::process::id()));
    if dir.exists() {
        let _ = fs::remove_dir_all(&dir);
    }
    fs::create_dir(&dir).map_err(dir_err(&dir))?;
    Ok(dir)
}

/// The merged directory of `r`, created on first use. The result is never
/// written to by callers.
pub fn merged(store: &Store, r: &Ref) -> Result<PathBuf, SnapshotError> {
    let root = snapshots_root(store);
    let dest = root.join(r.chain_id());
    if dest.is_dir() {
        return Ok(dest);
    }
    fs::create_dir_all(&root).map_err(dir_err(&root))?;
    let tmp = temp_dir(store, "merge")?;
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Delete,
        ..ApplyOptions::default()
    };
    for l in &r.layers {
        let layer = l.to_layer()?;
        let berr = |reason: String| SnapshotError::Blob {
            digest: l.digest.clone(),
            reason,
        };
        let f = store
            .open_blob(&layer.digest)
            .map_err(|e| berr(e.to_string()))?;
        let comp = Compression::from_media_type(&l.media_type).map_err(|e| berr(e.to_string()))?;
        let rd = comp.decoder(f).map_err(|e| berr(e.to_string()))?;
        kiln_layer::apply_tar(rd, &tmp, &opts).map_err(|source| SnapshotError::Apply {
            digest: l.digest.clone(),
            path: tmp.clone(),
            source,
        })?;
    }
    // Another build may have made the same chain meanwhile: keep theirs.
    if let Err(e) = fs::rename(&tmp, &dest) {
        let _ = fs::remove_dir_all(&tmp);
        if !dest.is_dir() {
            return Err(SnapshotError::Dir {
                path: dest,
                source: e,
            });
        }
    }
    Ok(dest)
}

/// Turns the tree under `dir` into a gzip layer blob in the store.
pub fn layer_from_dir(
    store: &Store,
    dir: &Path,
    opts: &WriteOptions,
) -> Result<LayerRef, SnapshotError> {
    let werr = |reason: String| SnapshotError::Write {
        path: dir.to_path_buf(),
        reason,
    };
    let mut w = LayerWriter::new(store, Compression::Gzip).map_err(|e| werr(e.to_string()))?;
    kiln_layer::write_tar(dir, &mut w, opts).map_err(|e| werr(e.to_string()))?;
    let info = w.finish().map_err(|e| werr(e.to_string()))?;
    Ok(LayerRef::from_layer(&info.into()))
}
