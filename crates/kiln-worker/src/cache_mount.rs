//! Cache mounts: `KILN_HOME/cache-mounts/<sha256 of id>/data` (private
//! instances `data-N`), the flocks that `sharing` asks for, and their
//! export to and import from a build cache (see [`crate::mounts`]).

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_dag::CacheSharing;
use kiln_oci::{Compression, Digest, LayerWriter, Store};
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cache_io::CacheImport;
use crate::mounts::MountError;
use crate::snapshot;
use crate::stale::owner_is_gone;

/// Where cache mounts live.
pub fn cache_mounts_root(store: &Store) -> PathBuf {
    store.root().join("cache-mounts")
}

/// The directory of cache id `id` (instance 0, the one shared and locked
/// steps use).
pub fn cache_dir(store: &Store, id: &str) -> PathBuf {
    cache_base(store, id).join("data")
}

pub(crate) fn cache_base(store: &Store, id: &str) -> PathBuf {
    cache_mounts_root(store).join(hex::encode(Sha256::digest(id.as_bytes())))
}

/// Takes the lock a cache mount's sharing asks for; returns the directory to
/// mount and the held lock.
pub(crate) fn acquire_cache(
    store: &Store,
    id: &str,
    sharing: CacheSharing,
    import: Option<&CacheImport>,
    cancel: &AtomicBool,
    on_wait: &mut dyn FnMut(&str),
) -> Result<(PathBuf, OwnedFd), MountError> {
    let base = cache_base(store, id);
    let cerr = |path: &Path| {
        let path = path.to_path_buf();
        let id = id.to_string();
        move |source| MountError::CacheDir { id, path, source }
    };
    fs::create_dir_all(&base).map_err(cerr(&base))?;
    // The id, for whoever looks at the directory (and `kiln cache du`).
    let id_file = base.join("id");
    if !id_file.exists() {
        let _ = fs::write(&id_file, id);
    }
    let instance = |n: usize| {
        if n == 0 {
            (base.join("data"), base.join("lock"))
        } else {
            (
                base.join(format!("data-{n}")),
                base.join(format!("lock-{n}")),
            )
        }
    };
    let open_lock = |path: &Path| -> Result<OwnedFd, MountError> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(cerr(path))?;
        Ok(f.into())
    };
    // `--cache-from` holds this mount: fill instance 0 if it is empty and
    // nobody uses it (an exclusive lock taken without waiting: a step that
    // holds it may be writing into the empty directory right now).
    let imported = import.and_then(|i| i.mount(id).map(|b| (i, b)));
    let (dir, lock) = match sharing {
        CacheSharing::Shared | CacheSharing::Locked => {
            let (dir, lock_path) = instance(0);
            let lock = open_lock(&lock_path)?;
            if let Some((import, blob)) = imported {
                if is_empty_dir(&dir) {
                    match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                        Ok(()) => {
                            if is_empty_dir(&dir) {
                                import_mount(store, &base, &dir, blob, import, on_wait);
                            }
                        }
                        Err(e) => tracing::debug!(
                            id,
                            error = %e,
                            "cache mount in use by another step: not importing it"
                        ),
                    }
                } else {
                    tracing::debug!(
                        id,
                        "the local cache mount is not empty: keeping it, not importing the cached one"
                    );
                }
            }
            let op = if sharing == CacheSharing::Shared {
                FlockOperation::NonBlockingLockShared
            } else {
                FlockOperation::NonBlockingLockExclusive
            };
            wait_lock(&lock, op, id, &lock_path, cancel, on_wait)?;
            (dir, lock)
        }
        CacheSharing::Private => {
            let mut n = 0;
            loop {
                let (dir, lock_path) = instance(n);
                let lock = open_lock(&lock_path)?;
                match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                    Ok(()) => {
                        if let Some((import, blob)) = imported {
                            if is_empty_dir(&dir) {
                                import_mount(store, &base, &dir, blob, import, on_wait);
                            } else {
                                tracing::debug!(
                                    id,
                                    dir = %dir.display(),
                                    "the local cache mount is not empty: keeping it, not importing the cached one"
                                );
                            }
                        }
                        break (dir, lock);
                    }
                    Err(rustix::io::Errno::WOULDBLOCK) => n += 1,
                    Err(e) => return Err(cerr(&lock_path)(e.into())),
                }
            }
        }
    };
    fs::create_dir_all(&dir).map_err(cerr(&dir))?;
    Ok((dir, lock))
}

/// A cache mount as an exported cache holds it: the deterministic layer
/// tar of its directory, compressed, as a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountBlob {
    /// the mount's id (`cache(..).id(..)`)
    pub id: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// What the last export of a mount wrote: the blob, and a fingerprint of
/// the directory's metadata then, so an unchanged mount is not tarred again.
#[derive(Debug, Serialize, Deserialize)]
struct ExportNote {
    fingerprint: String,
    blob: MountBlob,
}

/// Whether `dir` is missing or has no entries (what a fresh cache mount
/// looks like).
pub(crate) fn is_empty_dir(dir: &Path) -> bool {
    match fs::read_dir(dir) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// The sandbox helper for rootless tar reads and writes: this executable
/// (the kiln binary).
fn helper() -> Option<PathBuf> {
    std::env::current_exe().ok()
}

/// Whether this process maps a subordinate ID range in its user
/// namespaces: then files of a cache mount may belong to IDs it can only
/// read and create inside one.
fn rootless_with_range() -> bool {
    matches!(
        kiln_runtime::plan_mapping().map(|(p, _)| p),
        Ok(kiln_runtime::MapPlan::Subordinate { .. })
    )
}

/// Fills the empty cache mount directory `dir` (of `base`) with the blob an
/// imported cache holds for it. The caller holds the instance's exclusive
/// lock. A cache is an optimisation: any failure (a missing or corrupt
/// blob, a tar that does not apply) is a warning and leaves `dir` empty,
/// never partly filled (extraction goes to a temp directory renamed in).
/// Success is a line of the step's output (`say`).
fn import_mount(
    store: &Store,
    base: &Path,
    dir: &Path,
    blob: &MountBlob,
    import: &CacheImport,
    say: &mut dyn FnMut(&str),
) {
    remove_stale_imports(base);
    match import_mount_inner(store, base, dir, blob, import) {
        Ok(bytes) => {
            tracing::info!(
                id = %blob.id,
                digest = %blob.digest,
                bytes,
                "imported the cache mount from the cache"
            );
            say(&format!(
                "kiln: cache mount `{}` restored from the imported cache ({bytes} bytes)\n",
                blob.id
            ));
        }
        Err(e) => tracing::warn!("{e}; the step runs with an empty cache mount"),
    }
}

fn import_mount_inner(
    store: &Store,
    base: &Path,
    dir: &Path,
    blob: &MountBlob,
    import: &CacheImport,
) -> Result<u64, MountError> {
    let ierr = |reason: String| MountError::CacheImport {
        id: blob.id.clone(),
        digest: blob.digest.clone(),
        reason,
    };
    let digest = Digest::parse(&blob.digest).map_err(|e| ierr(crate::chain(&e)))?;
    let comp =
        Compression::from_media_type(&blob.media_type).map_err(|e| ierr(crate::chain(&e)))?;
    if !store.has_blob(&digest) {
        // verified against its digest while it is written into the store
        let mut rd = import
            .open_blob(&digest)
            .map_err(|e| ierr(crate::chain(&e)))?;
        // a registry cache fetches (and verifies) into the store itself
        if !store.has_blob(&digest) {
            store
                .put_blob_from_reader(&mut rd, Some(&digest))
                .map_err(|e| ierr(crate::chain(&e)))?;
        }
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = base.join(format!(
        "import-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&tmp)
        .map_err(|e| ierr(format!("cannot create `{}`: {e}", tmp.display())))?;
    let applied = (|| -> Result<u64, String> {
        let f = store.open_blob(&digest).map_err(|e| e.to_string())?;
        if rootless_with_range() {
            // Files of subordinate IDs are created inside the user
            // namespace (the runtime), as the step would have made them.
            let helper = helper().ok_or("rootless extraction needs the kiln executable")?;
            let (mut pr, mut pw) = std::io::pipe().map_err(|e| e.to_string())?;
            let feeder = std::thread::spawn(move || -> std::io::Result<()> {
                let mut rd = comp.decoder(f)?;
                std::io::copy(&mut rd, &mut pw)?;
                Ok(())
            });
            let r = kiln_runtime::Runtime::new(&helper).apply_layer(&mut pr, &tmp, false);
            drop(pr);
            let fed = feeder.join().unwrap_or_else(|_| {
                Err(std::io::Error::other("the decompressing thread panicked"))
            });
            let sum = r.map_err(|e| e.to_string())?;
            match fed {
                // the child stops reading at the end-of-archive block
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                fed => fed.map_err(|e| format!("cannot decompress the blob: {e}"))?,
            }
            return Ok(sum.bytes);
        }
        let rd = comp.decoder(f).map_err(|e| e.to_string())?;
        let opts = kiln_layer::ApplyOptions {
            whiteouts: kiln_layer::WhiteoutMode::Delete,
            ownership: kiln_layer::Ownership::auto(),
            id_map: None,
            xattrs: false,
            max_size: kiln_layer::max_size_from_env(),
        };
        let sum = kiln_layer::apply_tar(rd, &tmp, &opts).map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        })?;
        Ok(sum.bytes)
    })();
    // rename(2) replaces the empty directory; a directory a concurrent step
    // filled in the meantime is not empty and stays (ENOTEMPTY).
    let done = applied.map_err(ierr).and_then(|bytes| {
        fs::rename(&tmp, dir)
            .map(|()| bytes)
            .map_err(|e| ierr(format!("cannot move it to `{}`: {e}", dir.display())))
    });
    if done.is_err() {
        snapshot::remove_tree(&tmp, helper().as_deref());
    }
    done
}

/// Removes import temp directories of kiln processes that died mid-import.
fn remove_stale_imports(base: &Path) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        if owner_is_gone(&e.file_name(), "import-") {
            snapshot::remove_tree(&e.path(), helper().as_deref());
        }
    }
}

/// A digest of the metadata of everything under `dir` (names, types,
/// modes, owners, sizes, mtimes, ctimes, inodes): when it matches the last
/// export's, the tree is what that export tarred. `None` when some part
/// cannot be read (rootless, a directory of another ID): then it is tarred.
fn fingerprint(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    fn walk(dir: &Path, rel: &str, h: &mut Sha256) -> std::io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let m = e.metadata()?;
            let name = format!("{rel}/{}", e.file_name().to_string_lossy());
            h.update(name.as_bytes());
            h.update([0]);
            for v in [
                m.mode() as i64,
                m.uid() as i64,
                m.gid() as i64,
                m.size() as i64,
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                m.ino() as i64,
                m.rdev() as i64,
            ] {
                h.update(v.to_le_bytes());
            }
            if m.is_dir() {
                walk(&e.path(), &name, h)?;
            }
        }
        Ok(())
    }
    let mut h = Sha256::new();
    h.update(b"kiln-cache-mount-fingerprint/v1\0");
    walk(dir, "", &mut h).ok()?;
    Some(hex::encode(h.finalize()))
}

/// Exports cache mount `id` (instance 0) as a blob in the store: a
/// deterministic tar (sorted entries, the files' own mtimes, owners as the
/// steps see them), zstd. `None` when the mount is missing or empty. The
/// same tree gives the same digest, and a tree whose metadata did not
/// change since the last export is not read again. Only the mount's own
/// directory is read: secrets and tmpfs mounts of a step are mounted over
/// it inside the sandbox and never written to it.
pub fn export_mount(store: &Store, id: &str) -> Result<Option<MountBlob>, MountError> {
    let base = cache_base(store, id);
    let dir = base.join("data");
    if is_empty_dir(&dir) {
        return Ok(None);
    }
    let eerr = |reason: String| MountError::CacheExport {
        id: id.to_string(),
        path: dir.clone(),
        reason,
    };
    // No `locked` step writes into it while it is read (shared steps of
    // other builds still may: a file that changes size fails the export
    // of this mount, which the caller reports).
    let lock_path = base.join("lock");
    let lock: OwnedFd = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| eerr(format!("cannot open `{}`: {e}", lock_path.display())))?
        .into();
    let never = AtomicBool::new(false);
    wait_lock(
        &lock,
        FlockOperation::NonBlockingLockShared,
        id,
        &lock_path,
        &never,
        &mut |_: &str| {},
    )
    .map_err(|e| eerr(crate::chain(&e)))?;
    let note_path = base.join("exported.json");
    let print = fingerprint(&dir);
    if let Some(print) = &print
        && let Some(note) = fs::read(&note_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ExportNote>(&b).ok())
        && &note.fingerprint == print
        && note.blob.id == id
        && Digest::parse(&note.blob.digest).is_ok_and(|d| store.has_blob(&d))
    {
        tracing::debug!(id, digest = %note.blob.digest, "cache mount unchanged since its last export");
        return Ok(Some(note.blob));
    }
    let mut w = LayerWriter::new(store, Compression::Zstd).map_err(|e| eerr(crate::chain(&e)))?;
    let opts = kiln_layer::WriteOptions {
        overlay_whiteouts: false,
        id_map: None,
        // the files' own mtimes: build tools compare them
        source_date_epoch: None,
        xattrs: false,
    };
    if rustix::process::geteuid().is_root() {
        kiln_layer::write_tar(&dir, &mut w, &opts).map_err(|e| eerr(crate::chain(&e)))?;
    } else {
        // inside the user namespace, where files of subordinate IDs read
        // as the IDs the steps gave them, whatever their modes
        let helper = helper().ok_or_else(|| eerr("cannot find the kiln executable".into()))?;
        kiln_runtime::Runtime::new(&helper)
            .write_layer(&dir, &mut w, &opts, false)
            .map_err(|e| eerr(crate::chain(&e)))?;
    }
    let info = w.finish().map_err(|e| eerr(crate::chain(&e)))?;
    let blob = MountBlob {
        id: id.to_string(),
        digest: info.digest.to_string(),
        media_type: info.media_type,
        size: info.size,
    };
    if let Some(fingerprint) = print {
        let note = ExportNote {
            fingerprint,
            blob: blob.clone(),
        };
        let tmp = base.join(format!(".exported-{}", std::process::id()));
        let bytes = serde_json::to_vec(&note).expect("note serializes");
        if fs::write(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &note_path))
            .is_err()
        {
            let _ = fs::remove_file(&tmp);
        }
    }
    drop(lock);
    Ok(Some(blob))
}

/// Polls a non-blocking flock so a cancelled build stops waiting (a blocking
/// flock(2) cannot be interrupted from another thread).
fn wait_lock(
    lock: &OwnedFd,
    op: FlockOperation,
    id: &str,
    path: &Path,
    cancel: &AtomicBool,
    on_wait: &mut dyn FnMut(&str),
) -> Result<(), MountError> {
    let mut said = false;
    loop {
        match rustix::fs::flock(lock, op) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(MountError::CacheDir {
                    id: id.to_string(),
                    path: path.to_path_buf(),
                    source: e.into(),
                });
            }
        }
        if !said {
            tracing::info!(id, "waiting for cache mount held by another step");
            on_wait(&format!(
                "kiln: waiting for cache mount `{id}`: another step holds it\n"
            ));
            said = true;
        }
        if cancel.load(Ordering::SeqCst) {
            return Err(MountError::Cancelled { id: id.to_string() });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
