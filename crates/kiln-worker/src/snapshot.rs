//! Results as layer stacks, and the directories the layers live in.
//!
//! A [`Ref`] is the ordered list of layers of a filesystem (plus, for
//! sources, the image config it carries). Every layer has a directory in
//! overlay form under `KILN_HOME/snapshots/<name>` (whiteouts as 0/0
//! character devices, opaque directories by the `user.overlay.opaque`
//! xattr), the form a sandbox's overlay upper has and takes as a lower:
//!
//! - a *blob layer* (from an image, the static base, the build context)
//!   names its compressed blob; its directory is extracted on first use, once
//!   per diff_id, and shared by every chain that contains it;
//! - a *directory layer* (what a `run` step or a file op changed) is only a
//!   directory: the step's upper is renamed into the snapshot area, with no
//!   tar, no compression and no sha256. [`crate::commit::commit_layer`] turns it into a
//!   blob when an image that contains it is assembled, and remembers the
//!   result (`layer-commit` records), so builder stages are never tarred.
//!
//! Exec steps mount the layer directories as overlay lowers; copies and
//! content digests read them through [`crate::union::Union`]. Directories
//! appear in `snapshots/` only by an atomic rename of a complete directory
//! from `worker-tmp/`, so a killed build leaves nothing half-made that a
//! later one would trust; `worker-tmp/` entries of dead processes are
//! removed when a worker starts ([`clean_stale_tmp`]).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kiln_layer::{ApplyOptions, Ownership, WhiteoutMode, WriteOptions};
use kiln_oci::{Compression, Layer, LayerWriter, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::union::Union;

/// How a directory layer becomes a tar when it is committed: the options
/// kiln_layer::write_tar gets, fixed when the layer was made so that a later
/// commit (another build, another `SOURCE_DATE_EPOCH`) gives the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarSpec {
    /// the directory is an overlay upper (0/0 devices, opaque xattrs)
    pub overlay_whiteouts: bool,
    /// record `security.capability` and `user.*` xattrs
    pub xattrs: bool,
    /// mtimes are clamped to this
    pub epoch: u64,
}

/// A directory-only layer: `snapshots/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirLayer {
    pub id: String,
    pub tar: TarSpec,
}

/// One layer of a chain. A blob layer has `digest`, `diff_id`, `size` and
/// `media_type`; a directory layer has `dir` and, until it is committed,
/// empty blob fields ([`crate::commit::commit_layer`] fills them in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub diff_id: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<DirLayer>,
}

impl LayerRef {
    pub fn from_layer(l: &Layer) -> Self {
        LayerRef {
            digest: l.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            size: l.size,
            media_type: l.media_type.clone(),
            dir: None,
        }
    }

    /// A directory layer not committed yet.
    pub fn from_dir(d: DirLayer) -> Self {
        LayerRef {
            digest: String::new(),
            diff_id: String::new(),
            size: 0,
            media_type: String::new(),
            dir: Some(d),
        }
    }

    /// Whether the blob fields are set (a blob layer, or a committed
    /// directory layer).
    pub fn has_blob(&self) -> bool {
        !self.digest.is_empty()
    }

    /// The blob of the layer; a directory layer must be committed first
    /// ([`crate::commit::commit_layer`]).
    pub fn to_layer(&self) -> Result<Layer, SnapshotError> {
        if !self.has_blob() {
            return Err(SnapshotError::NotCommitted {
                id: self.dir.as_ref().map(|d| d.id.clone()).unwrap_or_default(),
            });
        }
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

    /// What names the layer's content: the directory id, else the diff_id.
    pub fn identity(&self) -> &str {
        match &self.dir {
            Some(d) => &d.id,
            None => &self.diff_id,
        }
    }

    /// The directory name under `snapshots/`: short, because a step's
    /// overlay option string (every lower's path) must fit in one page.
    pub fn snapshot_name(&self) -> String {
        match &self.dir {
            Some(d) => d.id.clone(),
            None => {
                let hex = self.diff_id.rsplit(':').next().unwrap_or_default();
                format!("b{}", &hex[..hex.len().min(NAME_HEX)])
            }
        }
    }
}

/// Hex digits of a snapshot directory name (96 bits).
const NAME_HEX: usize = 24;

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
            h.update(l.identity().as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }

    /// Whether everything the ref names is still there: the config blob,
    /// every blob layer's blob (in the store, a lazy blob of a base image
    /// or in an attached blob source: readable on demand), and every
    /// directory layer's directory (or its committed blob). Anything else
    /// makes a cache record a miss.
    pub fn complete(&self, store: &Store) -> bool {
        let has = |s: &str| {
            kiln_oci::Digest::parse(s)
                .map(|d| store.can_read_blob(&d))
                .unwrap_or(false)
        };
        self.config.as_deref().is_none_or(has)
            && self.layers.iter().all(|l| match &l.dir {
                Some(_) => {
                    snapshots_root(store).join(l.snapshot_name()).is_dir()
                        || crate::commit::committed(store, l).is_some()
                }
                None => has(&l.digest),
            })
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
    #[error("cannot extract layer {digest} into `{path}`: {reason}")]
    Extract {
        digest: String,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot write a layer from `{path}`: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("the snapshot directory `{path}` of layer {id} is gone and it was never committed")]
    Missing { id: String, path: PathBuf },
    #[error("layer {id} is a directory that was not committed to a blob yet")]
    NotCommitted { id: String },
    #[error("a cache record is damaged: {reason}")]
    BadRecord { reason: String },
    #[error("cannot record the commit of layer {id}: {reason}")]
    Record { id: String, reason: String },
}

fn dir_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Dir { path, source }
}

/// Where layer directories live.
pub fn snapshots_root(store: &Store) -> PathBuf {
    store.root().join("snapshots")
}

fn tmp_root(store: &Store) -> PathBuf {
    store.root().join("worker-tmp")
}

/// A private scratch directory inside the store's filesystem, named
/// `WHAT-PID-N` so that [`clean_stale_tmp`] knows whose it is.
pub fn temp_dir(store: &Store, what: &str) -> Result<PathBuf, SnapshotError> {
    let base = tmp_root(store);
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

/// The pid in a [`temp_dir`] name (`WHAT-PID-N`).
fn tmp_owner(name: &str) -> Option<i32> {
    let mut parts = name.rsplitn(3, '-');
    let _n: u64 = parts.next()?.parse().ok()?;
    parts.next()?.parse().ok()
}

fn alive(pid: i32) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    // EPERM: it exists, it is just not ours (kill(2))
    !matches!(
        rustix::process::test_kill_process(p),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Removes what killed kiln processes left in `worker-tmp/`: entries named
/// for a pid that is no longer running, and, when no other kiln process
/// uses the store's scratch area (the `worker-tmp` lock is free), also the
/// sandbox state directories (`.kiln-sandbox-*`), which carry no pid.
/// Returns the held shared lock: keep it for the worker's life. Removal
/// failures only cost disk space: nothing reads `worker-tmp/` entries of
/// other processes.
pub fn clean_stale_tmp(store: &Store, helper: Option<&Path>) -> Option<fs::File> {
    use rustix::fs::{FlockOperation, flock};
    let base = tmp_root(store);
    let locks = store.root().join("locks");
    let _ = fs::create_dir_all(&locks);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(locks.join("worker-tmp.lock"))
        .ok();
    let alone = lock
        .as_ref()
        .is_some_and(|f| flock(f, FlockOperation::NonBlockingLockExclusive).is_ok());
    if !alone && let Some(f) = &lock {
        // blocks while a starting worker that is alone still cleans up, so
        // it never removes a sandbox directory of ours
        let _ = flock(f, FlockOperation::LockShared);
    }
    let Ok(rd) = fs::read_dir(&base) else {
        if alone && let Some(f) = &lock {
            let _ = flock(f, FlockOperation::LockShared);
        }
        return lock;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = match tmp_owner(&name) {
            Some(pid) => !alive(pid),
            None => alone && name.starts_with(".kiln-sandbox-"),
        };
        if stale {
            tracing::debug!(path = %e.path().display(), "removing a stale worker temp entry");
            remove_tree(&e.path(), helper);
        }
    }
    if alone && let Some(f) = &lock {
        // downgrade: others may clean only pid-named entries now
        let _ = flock(f, FlockOperation::LockShared);
    }
    lock
}

/// Removes a directory tree. Rootless, a step's files may belong to
/// subordinate IDs in directories the calling user cannot write: those are
/// removed from inside the user namespace by the runtime.
pub fn remove_tree(path: &Path, helper: Option<&Path>) {
    if fs::symlink_metadata(path).is_err() {
        return;
    }
    force_remove(path);
    if fs::symlink_metadata(path).is_err() {
        return;
    }
    if let Some(h) = helper {
        let rt = kiln_runtime::Runtime::new(h);
        let opts = WriteOptions::default();
        if let Err(e) = rt.write_layer(path, &mut std::io::sink(), &opts, true) {
            tracing::warn!(path = %path.display(), "cannot remove: {e}");
        }
    }
}

/// Removal that opens up directories we own first (overlay leaves its
/// `work/work` at mode 000).
fn force_remove(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    force_remove(&e.path());
                }
            }
            let _ = fs::remove_dir(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// The layer directories of a store, and what makes and reads them.
#[derive(Debug, Clone)]
pub struct Snapshots {
    store: Store,
    /// the sandbox helper (the kiln binary): rootless, layers are extracted
    /// and committed inside a user namespace with it
    helper: Option<PathBuf>,
}

impl Snapshots {
    pub fn new(store: Store, helper: Option<PathBuf>) -> Self {
        Snapshots { store, helper }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn helper(&self) -> Option<&Path> {
        self.helper.as_deref()
    }

    /// The directory of one layer, extracted first for a blob layer seen for
    /// the first time. A directory layer whose directory is gone falls back
    /// to its committed blob.
    pub fn layer_dir(&self, l: &LayerRef) -> Result<PathBuf, SnapshotError> {
        let root = snapshots_root(&self.store);
        let dest = root.join(l.snapshot_name());
        if dest.is_dir() {
            return Ok(dest);
        }
        let blob = match &l.dir {
            None => l.clone(),
            Some(d) => match crate::commit::committed(&self.store, l) {
                Some(b) => b,
                None => {
                    return Err(SnapshotError::Missing {
                        id: d.id.clone(),
                        path: dest,
                    });
                }
            },
        };
        let dest = root.join(blob.snapshot_name());
        if dest.is_dir() {
            return Ok(dest);
        }
        self.extract(&blob, &root, &dest)?;
        Ok(dest)
    }

    /// The lower directories of `r`, bottom layer first.
    pub fn lowers(&self, r: &Ref) -> Result<Vec<PathBuf>, SnapshotError> {
        r.layers.iter().map(|l| self.layer_dir(l)).collect()
    }

    /// A read-only merged view of `r`.
    pub fn union(&self, r: &Ref) -> Result<Union, SnapshotError> {
        let mut dirs = self.lowers(r)?;
        dirs.reverse();
        Ok(Union::new(dirs))
    }

    fn extract(&self, l: &LayerRef, root: &Path, dest: &Path) -> Result<(), SnapshotError> {
        fs::create_dir_all(root).map_err(dir_err(root))?;
        // One extraction per layer even with several kiln processes: the
        // loser of the race finds the directory when it gets the lock.
        let lock = self
            .store
            .lock(
                &format!("snap-{}", l.snapshot_name()),
                kiln_store::LockMode::Exclusive,
            )
            .map_err(|e| SnapshotError::Extract {
                digest: l.digest.clone(),
                path: dest.to_path_buf(),
                reason: e.to_string(),
            })?;
        if dest.is_dir() {
            return Ok(());
        }
        let tmp = temp_dir(&self.store, "extract")?;
        let r = self.apply_blob(l, &tmp);
        match r.and_then(|()| fs::rename(&tmp, dest).map_err(dir_err(dest))) {
            Ok(()) => {
                drop(lock);
                tracing::debug!(digest = %l.digest, dir = %dest.display(), "extracted a layer");
                Ok(())
            }
            Err(e) => {
                remove_tree(&tmp, self.helper.as_deref());
                Err(e)
            }
        }
    }

    /// Applies the blob of `l` into the empty `target` in overlay form,
    /// keeping ownership: as root right here, rootless with a subordinate
    /// range inside the user namespace (through the runtime), and with a
    /// single ID (no range) as the calling user.
    fn apply_blob(&self, l: &LayerRef, target: &Path) -> Result<(), SnapshotError> {
        let layer = l.to_layer()?;
        let berr = |reason: String| SnapshotError::Blob {
            digest: l.digest.clone(),
            reason,
        };
        let comp =
            Compression::from_media_type(&l.media_type).map_err(|e| berr(crate::chain(&e)))?;
        let f = self
            .store
            .open_blob(&layer.digest)
            .map_err(|e| berr(crate::chain(&e)))?;
        let plan = kiln_runtime::plan_mapping().map(|(p, _)| p);
        let in_userns = matches!(plan, Ok(kiln_runtime::MapPlan::Subordinate { .. }));
        if !in_userns {
            let rd = comp.decoder(f).map_err(|e| berr(crate::chain(&e)))?;
            let opts = ApplyOptions {
                whiteouts: WhiteoutMode::Overlay(kiln_layer::OverlayXattr::User),
                ownership: Ownership::auto(),
                id_map: None,
                xattrs: true,
                max_size: kiln_layer::max_size_from_env(),
            };
            kiln_layer::apply_tar(rd, target, &opts).map_err(|source| SnapshotError::Apply {
                digest: l.digest.clone(),
                path: target.to_path_buf(),
                source,
            })?;
            return Ok(());
        }
        let helper = self
            .helper
            .as_deref()
            .ok_or_else(|| SnapshotError::Extract {
                digest: l.digest.clone(),
                path: target.to_path_buf(),
                reason: "rootless extraction needs the sandbox helper".into(),
            })?;
        // The decoder is not Send: decompress on a thread of its own and
        // hand the runtime the plain tar through a pipe.
        let (mut pr, mut pw) = std::io::pipe().map_err(dir_err(target))?;
        let feeder = std::thread::spawn(move || -> std::io::Result<()> {
            let mut rd = comp.decoder(f)?;
            std::io::copy(&mut rd, &mut pw)?;
            Ok(())
        });
        let r = kiln_runtime::Runtime::new(helper).apply_layer(&mut pr, target, true);
        drop(pr);
        let fed = feeder
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the decompressing thread panicked")));
        r.map_err(|e| SnapshotError::Extract {
            digest: l.digest.clone(),
            path: target.to_path_buf(),
            reason: e.to_string(),
        })?;
        match fed {
            // The child stops reading at the tar's end-of-archive block and
            // the zero padding after it has nowhere to go: harmless once
            // the layer was applied (the blob's digest was checked when
            // it was stored).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            fed => fed.map_err(|e| berr(crate::chain(&e))),
        }
    }

    /// Makes the directory `tmp` (a step's upper or a file op's changes,
    /// inside `worker-tmp/`) a directory layer: renamed into the snapshot
    /// area under a fresh id, nothing read or written. `seed` (the step's
    /// cache key) only makes ids easier to trace.
    pub fn add_dir_layer(
        &self,
        tmp: &Path,
        seed: &[u8],
        tar: TarSpec,
    ) -> Result<LayerRef, SnapshotError> {
        let root = snapshots_root(&self.store);
        fs::create_dir_all(&root).map_err(dir_err(&root))?;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut h = Sha256::new();
        h.update(b"kiln-dir-layer/v1\0");
        h.update(seed);
        h.update(std::process::id().to_le_bytes());
        h.update(now.as_nanos().to_le_bytes());
        h.update(
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes(),
        );
        let id = format!("d{}", &hex::encode(h.finalize())[..NAME_HEX]);
        let dest = root.join(&id);
        fs::rename(tmp, &dest).map_err(dir_err(&dest))?;
        Ok(LayerRef::from_dir(DirLayer { id, tar }))
    }

    /// The merged directory of `r` as plain files (whiteouts applied), made
    /// on first use under `snapshots/m<chain>`, for what needs a real tree
    /// (bind mounts of another stage). Copies and exec steps never use it.
    pub fn merged(&self, r: &Ref) -> Result<PathBuf, SnapshotError> {
        let root = snapshots_root(&self.store);
        let dest = root.join(format!("m{}", &r.chain_id()[..NAME_HEX]));
        if dest.is_dir() {
            return Ok(dest);
        }
        fs::create_dir_all(&root).map_err(dir_err(&root))?;
        let tmp = temp_dir(&self.store, "merge")?;
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Delete,
            max_size: kiln_layer::max_size_from_env(),
            ..ApplyOptions::default()
        };
        let r = r.layers.iter().try_for_each(|l| {
            let aerr = |source| SnapshotError::Apply {
                digest: l.identity().to_string(),
                path: tmp.clone(),
                source,
            };
            if l.dir.is_none() || !self.layer_dir(l).is_ok_and(|d| d.is_dir()) {
                let blob = if l.has_blob() {
                    l.clone()
                } else {
                    crate::commit::commit_layer(self, l)?
                };
                let rd = open_blob_tar(&self.store, &blob)?;
                kiln_layer::apply_tar(rd, &tmp, &opts).map_err(aerr)?;
                return Ok(());
            }
            let (pr, mut pw) = std::io::pipe().map_err(dir_err(&tmp))?;
            let dir = self.layer_dir(l)?;
            let spec = l.dir.as_ref().map(|d| d.tar).expect("a directory layer");
            let this = self.clone();
            let writer = std::thread::spawn(move || this.write_dir_tar(&dir, spec, &mut pw));
            let applied = kiln_layer::apply_tar(pr, &tmp, &opts).map_err(aerr);
            let written = writer.join().unwrap_or_else(|_| {
                Err(SnapshotError::Write {
                    path: tmp.clone(),
                    reason: "the tar writer panicked".into(),
                })
            });
            written.and(applied.map(|_| ()))
        });
        if let Err(e) = r {
            remove_tree(&tmp, self.helper.as_deref());
            return Err(e);
        }
        if let Err(e) = fs::rename(&tmp, &dest) {
            remove_tree(&tmp, self.helper.as_deref());
            if !dest.is_dir() {
                return Err(SnapshotError::Dir {
                    path: dest,
                    source: e,
                });
            }
        }
        Ok(dest)
    }

    /// Writes the directory layer `dir` as its deterministic tar. Rootless,
    /// inside the user namespace, where a step's files read as their
    /// container IDs whatever their modes.
    pub(crate) fn write_dir_tar(
        &self,
        dir: &Path,
        spec: TarSpec,
        out: &mut dyn Write,
    ) -> Result<(), SnapshotError> {
        let opts = WriteOptions {
            overlay_whiteouts: spec.overlay_whiteouts,
            id_map: None,
            source_date_epoch: Some(spec.epoch),
            xattrs: spec.xattrs,
        };
        let werr = |reason: String| SnapshotError::Write {
            path: dir.to_path_buf(),
            reason,
        };
        if rustix::process::geteuid().is_root() {
            kiln_layer::write_tar(dir, out, &opts).map_err(|e| werr(crate::chain(&e)))?;
            return Ok(());
        }
        let helper = self
            .helper
            .as_deref()
            .ok_or_else(|| werr("rootless commits need the sandbox helper".into()))?;
        kiln_runtime::Runtime::new(helper)
            .write_layer(dir, out, &opts, false)
            .map_err(|e| werr(crate::chain(&e)))?;
        Ok(())
    }
}

/// The plain tar stream of a layer blob.
fn open_blob_tar(store: &Store, l: &LayerRef) -> Result<Box<dyn Read>, SnapshotError> {
    let berr = |reason: String| SnapshotError::Blob {
        digest: l.digest.clone(),
        reason,
    };
    let layer = l.to_layer()?;
    let f = store
        .open_blob(&layer.digest)
        .map_err(|e| berr(crate::chain(&e)))?;
    let comp = Compression::from_media_type(&l.media_type).map_err(|e| berr(crate::chain(&e)))?;
    comp.decoder(f).map_err(|e| berr(crate::chain(&e)))
}

/// Turns the tree under `dir` into a gzip layer blob in the store, right
/// now (file ops that delete, whose `.wh.` files cannot serve as a lower).
pub fn layer_from_dir(
    store: &Store,
    dir: &Path,
    opts: &WriteOptions,
) -> Result<LayerRef, SnapshotError> {
    layer_from_dir_owned(store, dir, opts, None)
}

/// [`layer_from_dir`] with the owners and modes `owners` names winning
/// over the files' (`kiln_layer::write_tar_owned`).
pub fn layer_from_dir_owned(
    store: &Store,
    dir: &Path,
    opts: &WriteOptions,
    owners: Option<&kiln_layer::Owners>,
) -> Result<LayerRef, SnapshotError> {
    let werr = |reason: String| SnapshotError::Write {
        path: dir.to_path_buf(),
        reason,
    };
    let mut w = LayerWriter::new(store, Compression::Gzip).map_err(|e| werr(crate::chain(&e)))?;
    kiln_layer::write_tar_owned(dir, &mut w, opts, owners).map_err(|e| werr(crate::chain(&e)))?;
    let info = w.finish().map_err(|e| werr(crate::chain(&e)))?;
    Ok(LayerRef::from_layer(&info.into()))
}

/// The merged directory of `r` (see [`Snapshots::merged`]), for callers
/// that only have the store. Rootless commits of directory layers use the
/// running executable as the sandbox helper.
pub fn merged(store: &Store, r: &Ref) -> Result<PathBuf, SnapshotError> {
    Snapshots::new(store.clone(), std::env::current_exe().ok()).merged(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_the_pid() {
        assert_eq!(tmp_owner("exec-123-4"), Some(123));
        assert_eq!(tmp_owner("fileop-9-0"), Some(9));
        assert_eq!(tmp_owner(".kiln-sandbox-abc"), None);
        assert_eq!(tmp_owner("exec"), None);
        assert!(alive(std::process::id() as i32));
    }

    #[test]
    fn old_records_still_parse_and_names_are_short() {
        let old = r#"{"digest":"sha256:aa","diff_id":"sha256:0123456789abcdef0123456789abcdef","size":3,"media_type":"m"}"#;
        let l: LayerRef = serde_json::from_str(old).unwrap();
        assert!(l.dir.is_none() && l.has_blob());
        assert_eq!(l.snapshot_name(), "b0123456789abcdef01234567");
        let d = LayerRef::from_dir(DirLayer {
            id: "dabc".into(),
            tar: TarSpec {
                overlay_whiteouts: true,
                xattrs: true,
                epoch: 0,
            },
        });
        let back: LayerRef = serde_json::from_slice(&serde_json::to_vec(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        assert!(matches!(
            d.to_layer(),
            Err(SnapshotError::NotCommitted { .. })
        ));
    }
}
