//! Commits: directory layers become blobs (their deterministic tar,
//! gzip) only when an image that contains them is assembled or a cache is
//! exported, once per layer (`layer-commit` records), so builder stages are
//! never tarred.

use kiln_oci::{Compression, LayerWriter, Store};

use crate::assemble::AssembleError;
use crate::snapshot::{LayerRef, Ref, SnapshotError, Snapshots, snapshots_root};

pub(crate) const COMMIT_KIND: &str = "layer-commit";

/// The blob a directory layer was committed to, if it is still in the store.
pub fn committed(store: &Store, l: &LayerRef) -> Option<LayerRef> {
    let d = l.dir.as_ref()?;
    let bytes = store.get_record(COMMIT_KIND, d.id.as_bytes()).ok()??;
    let mut b: LayerRef = serde_json::from_slice(&bytes).ok()?;
    let digest = kiln_oci::Digest::parse(&b.digest).ok()?;
    if !store.has_blob(&digest) {
        return None;
    }
    b.dir = Some(d.clone());
    Some(b)
}

/// The layer with its blob: a blob layer as it is; a directory layer
/// committed now (deterministic tar, gzip, as every layer kiln writes) unless
/// an earlier commit is recorded. The result keeps `dir`, so the directory
/// still serves as a lower.
pub fn commit_layer(snaps: &Snapshots, l: &LayerRef) -> Result<LayerRef, SnapshotError> {
    let Some(d) = &l.dir else {
        return Ok(l.clone());
    };
    if l.has_blob() {
        return Ok(l.clone());
    }
    let store = snaps.store();
    if let Some(b) = committed(store, l) {
        return Ok(b);
    }
    let dir = snapshots_root(store).join(&d.id);
    if !dir.is_dir() {
        return Err(SnapshotError::Missing {
            id: d.id.clone(),
            path: dir,
        });
    }
    let werr = |reason: String| SnapshotError::Write {
        path: dir.clone(),
        reason,
    };
    let mut w = LayerWriter::new(store, Compression::Gzip).map_err(|e| werr(crate::chain(&e)))?;
    snaps.write_dir_tar(&dir, d.tar, &mut w)?;
    let info = w.finish().map_err(|e| werr(crate::chain(&e)))?;
    let mut b = LayerRef::from_layer(&info.into());
    let bytes = serde_json::to_vec(&b).map_err(|e| SnapshotError::Record {
        id: d.id.clone(),
        reason: e.to_string(),
    })?;
    store
        .put_record(COMMIT_KIND, d.id.as_bytes(), &bytes)
        .map_err(|e| SnapshotError::Record {
            id: d.id.clone(),
            reason: e.to_string(),
        })?;
    tracing::debug!(id = %d.id, digest = %b.digest, "committed a directory layer");
    b.dir = Some(d.clone());
    Ok(b)
}

/// `r` with every layer committed to a blob.
pub fn commit_ref(snaps: &Snapshots, r: &Ref) -> Result<Ref, SnapshotError> {
    Ok(Ref {
        layers: r
            .layers
            .iter()
            .map(|l| commit_layer(snaps, l))
            .collect::<Result<_, _>>()?,
        config: r.config.clone(),
    })
}

/// `r` with every layer committed to a blob (directory layers are tarred and
/// compressed now unless an earlier commit is recorded), for what reads
/// layer blobs: the image, the static/dynamic check.
pub fn commit(store: &Store, r: &Ref) -> Result<Ref, AssembleError> {
    let snaps = Snapshots::new(store.clone(), std::env::current_exe().ok());
    commit_ref(&snaps, r).map_err(AssembleError::Layers)
}
