//! Mounts of `run` steps: turns the DAG's mounts of one exec into the
//! runtime's mounts plus extra environment, and holds what they need (cache
//! locks, secret files, throwaway copies) until the step is over.
//!
//! - cache: a persistent directory `KILN_HOME/cache-mounts/<sha256 of id>/data`
//!   (private extra instances `data-N`), owned by the invoking user, which
//!   is root inside a rootless step's user namespace. `shared` steps hold a
//!   shared flock on it, `locked` steps an exclusive one (others wait),
//!   `private` steps take the first instance nobody holds and create one
//!   when all are busy. Never part of a layer or a cache key. With
//!   `--cache-to ...,cache-mounts=true` instance 0 is exported as a
//!   deterministic tar ([`export_mount`]); an imported cache's copy is
//!   extracted into an empty instance when a step that runs mounts it
//!   (`import_mount`, under the instance's exclusive lock, through a temp
//!   directory renamed into place, so a step never sees a partial cache).
//! - secret: the bytes given with `--secret` are written to a private file
//!   (0700 directory on a tmpfs when there is one, so they never touch the
//!   store's disk), bind-mounted read-only and deleted after the step.
//!   `SecretEnv` only adds to the step's process environment.
//! - tmpfs: passed through.
//! - bind: the selected path of an input's merged snapshot, resolved inside
//!   that snapshot; `.rw()` gets a throwaway copy.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_dag::{CacheSharing, MountKind};
use kiln_oci::{Compression, Digest, LayerWriter, Store};
use rustix::fs::{FlockOperation, Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cache_io::CacheImport;
use crate::snapshot::{self, Ref, SnapshotError};

/// The secrets of a build by id, as given with `--secret`. Never printed:
/// `Debug` shows the ids only.
#[derive(Clone, Default)]
pub struct Secrets {
    map: HashMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.map.keys().collect();
        ids.sort();
        f.debug_struct("Secrets").field("ids", &ids).finish()
    }
}

/// Where a `--secret` flag takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// A bad `--secret` flag.
#[derive(Debug, thiserror::Error)]
pub enum SecretFlagError {
    #[error(
        "invalid `--secret {flag}`: {reason}; write `--secret id=ID,src=PATH` or `--secret id=ID,env=VAR`"
    )]
    Syntax { flag: String, reason: String },
    #[error("`--secret id={id}` is given twice: pass each secret id once")]
    Duplicate { id: String },
    #[error("cannot read secret `{id}` from `{path}`: {source}")]
    Read {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret `{id}` comes from the environment variable `{var}`, which is not set: set it or pass `src=PATH`"
    )]
    NoEnv { id: String, var: String },
}

impl SecretSource {
    /// Parses one `--secret` value the way `docker buildx build` does:
    /// `id=ID,src=PATH` (also `source=`), `id=ID,env=VAR`, with an optional
    /// `type=file|env`. Without `src` or `env` it reads the variable named
    /// like the id.
    pub fn parse(flag: &str) -> Result<(String, SecretSource), SecretFlagError> {
        let bad = |reason: &str| SecretFlagError::Syntax {
            flag: flag.to_string(),
            reason: reason.to_string(),
        };
        let (mut id, mut src, mut env, mut typ) = (None, None, None, None);
        let fields = kiln_types::spec::key_values(flag).map_err(|e| bad(&e.to_string()))?;
        for (k, v) in fields {
            let slot = match k.trim() {
                "id" => &mut id,
                "src" | "source" => &mut src,
                "env" => &mut env,
                "type" => &mut typ,
                other => {
                    return Err(bad(&format!(
                        "unknown key `{other}` (known: id, src, source, env, type)"
                    )));
                }
            };
            if slot.replace(v.to_string()).is_some() {
                return Err(bad(&format!("`{k}` is given twice")));
            }
        }
        let id = id.ok_or_else(|| bad("`id` is missing"))?;
        if id.is_empty() {
            return Err(bad("`id` is empty"));
        }
        let source = match (typ.as_deref(), src, env) {
            (_, Some(_), Some(_)) => return Err(bad("give either `src` or `env`, not both")),
            (Some("env"), Some(_), None) => return Err(bad("`type=env` takes `env=VAR`")),
            (Some("file"), None, Some(_)) => return Err(bad("`type=file` takes `src=PATH`")),
            (None | Some("file"), Some(p), None) => {
                if p.is_empty() {
                    return Err(bad("`src` is empty"));
                }
                SecretSource::File(PathBuf::from(p))
            }
            (None | Some("env"), None, Some(v)) => {
                if v.is_empty() {
                    return Err(bad("`env` is empty"));
                }
                SecretSource::Env(v)
            }
            // `--secret id=API_TOKEN` alone: the variable of that name
            // (as docker's documentation describes).
            (None | Some("env"), None, None) => SecretSource::Env(id.clone()),
            (Some(t), _, _) if t != "file" && t != "env" => {
                return Err(bad(&format!("unknown type `{t}` (known: file, env)")));
            }
            _ => return Err(bad("`type=file` takes `src=PATH`")),
        };
        Ok((id, source))
    }
}

impl Secrets {
    /// Reads every `--secret` flag's value now, so a missing file or
    /// variable fails before anything runs.
    pub fn from_flags(flags: &[String]) -> Result<Secrets, SecretFlagError> {
        let mut s = Secrets::default();
        for flag in flags {
            let (id, source) = SecretSource::parse(flag)?;
            let bytes = match &source {
                SecretSource::File(path) => fs::read(path).map_err(|e| SecretFlagError::Read {
                    id: id.clone(),
                    path: path.clone(),
                    source: e,
                })?,
                SecretSource::Env(var) => std::env::var_os(var)
                    .ok_or_else(|| SecretFlagError::NoEnv {
                        id: id.clone(),
                        var: var.clone(),
                    })?
                    .into_encoded_bytes(),
            };
            if s.map.contains_key(&id) {
                return Err(SecretFlagError::Duplicate { id });
            }
            s.map.insert(id, bytes);
        }
        Ok(s)
    }

    pub fn insert(&mut self, id: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.map.insert(id.into(), value.into());
    }

    pub fn get(&self, id: &str) -> Option<&[u8]> {
        self.map.get(id).map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Why a step's mounts could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(
        "the step needs secret `{id}` (at `{target}`) but it was not given: pass `--secret id={id},src=PATH` or `--secret id={id},env=VAR` to `kiln build`"
    )]
    MissingSecret { id: String, target: String },
    #[error("secret `{id}` cannot be the environment variable `{var}`: {reason}")]
    SecretEnv {
        id: String,
        var: String,
        reason: &'static str,
    },
    #[error("cannot write secret `{id}` to a private file under `{path}`: {source}")]
    SecretFile {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache mount `{id}`: cannot prepare `{path}`: {source}")]
    CacheDir {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bind mount at `{target}`: input {input} of the step does not exist")]
    BindInput { target: String, input: usize },
    #[error("bind mount at `{target}`: `{selector}` is not in its source: {reason}")]
    BindSource {
        target: String,
        selector: String,
        reason: String,
    },
    #[error("bind mount at `{target}`: cannot copy `{path}` for a writable bind: {source}")]
    BindCopy {
        target: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the step was cancelled while waiting for cache mount `{id}`")]
    Cancelled { id: String },
    #[error("cache mount `{id}`: cannot export `{path}`: {reason}")]
    CacheExport {
        id: String,
        path: PathBuf,
        reason: String,
    },
    #[error("cache mount `{id}`: cannot import blob {digest} from the cache: {reason}")]
    CacheImport {
        id: String,
        digest: String,
        reason: String,
    },
}

/// The runtime mounts and extra environment of one step. Dropping it
/// releases cache locks and deletes secret files and throwaway copies.
#[derive(Default)]
pub struct Prepared {
    pub mounts: Vec<kiln_runtime::Mount>,
    /// `(NAME, VALUE)` from `SecretEnv` mounts: the step's process only.
    pub env: Vec<(String, String)>,
    _locks: Vec<OwnedFd>,
    cleanup: Vec<PathBuf>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&String> = self.env.iter().map(|(k, _)| k).collect();
        f.debug_struct("Prepared")
            .field("mounts", &self.mounts)
            .field("env", &names)
            .finish()
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        for p in self.cleanup.drain(..) {
            if let Err(e) = fs::remove_dir_all(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a step's mount scratch directory");
            }
        }
    }
}

/// Where cache mounts live.
pub fn cache_mounts_root(store: &Store) -> PathBuf {
    store.root().join("cache-mounts")
}

/// The directory of cache id `id` (instance 0, the one shared and locked
/// steps use).
pub fn cache_dir(store: &Store, id: &str) -> PathBuf {
    cache_base(store, id).join("data")
}

fn cache_base(store: &Store, id: &str) -> PathBuf {
    cache_mounts_root(store).join(hex::encode(Sha256::digest(id.as_bytes())))
}

/// Prepares the mounts of one step. `inputs` are the step's inputs (bind
/// sources refer to them by index); an empty cache mount that `import`
/// (`--cache-from`) holds is filled from it first; waiting for a cache lock
/// gives up when `cancel` is set, and is announced once through `on_wait`
/// (a line for the step's output).
pub fn prepare(
    store: &Store,
    mounts: &[kiln_dag::Mount],
    inputs: &[Ref],
    secrets: &Secrets,
    import: Option<&CacheImport>,
    cancel: &AtomicBool,
    on_wait: &mut dyn FnMut(&str),
) -> Result<Prepared, MountError> {
    let mut out = Prepared::default();
    // Locks are taken in one global order (by directory), so two steps that
    // lock the same two caches cannot deadlock each other.
    let mut caches: Vec<(usize, &str, CacheSharing)> = mounts
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match &m.kind {
            MountKind::Cache { id, sharing } => Some((i, id.as_str(), *sharing)),
            _ => None,
        })
        .collect();
    caches.sort_by_key(|(_, id, _)| cache_base(store, id));
    let mut cache_sources: HashMap<usize, PathBuf> = HashMap::new();
    for (i, id, sharing) in caches {
        let (dir, lock) = acquire_cache(store, id, sharing, import, cancel, on_wait)?;
        out._locks.push(lock);
        cache_sources.insert(i, dir);
    }
    let mut secret_dir: Option<PathBuf> = None;
    for (i, m) in mounts.iter().enumerate() {
        let kind = match &m.kind {
            MountKind::Cache { .. } => {
                let source = cache_sources
                    .remove(&i)
                    .ok_or_else(|| MountError::CacheDir {
                        id: m.target.clone(),
                        path: cache_mounts_root(store),
                        source: std::io::Error::other("cache lock not taken"),
                    })?;
                kiln_runtime::MountKind::Cache { source }
            }
            MountKind::Tmpfs { size } => kiln_runtime::MountKind::Tmpfs { size: *size },
            MountKind::Secret {
                id,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(value) = secrets.get(id) else {
                    if *required {
                        return Err(MountError::MissingSecret {
                            id: id.clone(),
                            target: m.target.clone(),
                        });
                    }
                    continue;
                };
                let dir = match &secret_dir {
                    Some(d) => d.clone(),
                    None => {
                        let d = private_dir().map_err(|(path, source)| MountError::SecretFile {
                            id: id.clone(),
                            path,
                            source,
                        })?;
                        out.cleanup.push(d.clone());
                        secret_dir = Some(d.clone());
                        d
                    }
                };
                let file = dir.join(i.to_string());
                write_secret(&file, value, *mode, *uid, *gid).map_err(|source| {
                    MountError::SecretFile {
                        id: id.clone(),
                        path: dir.clone(),
                        source,
                    }
                })?;
                kiln_runtime::MountKind::Secret { source: file }
            }
            MountKind::SecretEnv { id, required } => {
                let Some(value) = secrets.get(id) else {
                    if *required {
                        return Err(MountError::MissingSecret {
                            id: id.clone(),
                            target: format!("${}", m.target),
                        });
                    }
                    continue;
                };
                let serr = |reason| MountError::SecretEnv {
                    id: id.clone(),
                    var: m.target.clone(),
                    reason,
                };
                let value = String::from_utf8(value.to_vec())
                    .map_err(|_| serr("its value is not UTF-8"))?;
                if value.contains('\0') {
                    return Err(serr("its value contains a NUL byte"));
                }
                out.env.push((m.target.clone(), value));
                continue;
            }
            MountKind::Bind {
                input,
                selector,
                readonly,
            } => {
                let r = inputs.get(*input).ok_or_else(|| MountError::BindInput {
                    target: m.target.clone(),
                    input: *input,
                })?;
                let root = snapshot::merged(store, r)?;
                let source =
                    resolve_in_root(&root, selector).map_err(|reason| MountError::BindSource {
                        target: m.target.clone(),
                        selector: selector.clone(),
                        reason,
                    })?;
                if *readonly {
                    kiln_runtime::MountKind::Bind {
                        source,
                        readonly: true,
                    }
                } else {
                    // The snapshot is shared by later steps: writes go to a
                    // copy that is dropped with the step.
                    let scratch = snapshot::temp_dir(store, "bind")?;
                    out.cleanup.push(scratch.clone());
                    let copy = scratch.join("src");
                    copy_tree(&source, &copy).map_err(|e| MountError::BindCopy {
                        target: m.target.clone(),
                        path: source.clone(),
                        source: e,
                    })?;
                    kiln_runtime::MountKind::Bind {
                        source: copy,
                        readonly: false,
                    }
                }
            }
        };
        out.mounts.push(kiln_runtime::Mount {
            target: m.target.clone(),
            kind,
        });
    }
    Ok(out)
}

/// Takes the lock a cache mount's sharing asks for; returns the directory to
/// mount and the held lock.
fn acquire_cache(
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
fn is_empty_dir(dir: &Path) -> bool {
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

/// Whether `name` is `PREFIX<pid>-...` or `PREFIX<pid>-t<start>-...` of a
/// process that no longer exists. With the start time (see
/// [`start_time`]) a reused pid counts as gone too.
fn owner_is_gone(name: &std::ffi::OsStr, prefix: &str) -> bool {
    let Some(mut parts) = name
        .to_str()
        .and_then(|n| n.strip_prefix(prefix))
        .map(|n| n.split('-'))
    else {
        return false;
    };
    let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    let start = parts
        .next()
        .and_then(|t| t.strip_prefix('t'))
        .and_then(|t| t.parse::<u64>().ok());
    match start_time(pid) {
        Ok(Some(now)) => start.is_some_and(|s| s != now),
        // no such process, or a zombie: it will not use its files again
        Ok(None) => true,
        // /proc hides other users' processes (hidepid): ask the kernel
        Err(_) => rustix::process::Pid::from_raw(pid as i32)
            .is_some_and(|p| rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH)),
    }
}

/// The start time of process `pid` (field 22 of proc_pid_stat(5), clock
/// ticks since boot), which tells a reused pid from the process that had
/// it; `Ok(None)` when there is no such process or it is a zombie.
fn start_time(pid: u32) -> std::io::Result<Option<u64>> {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // the command name (field 2) may hold spaces and `)`: fields after the
    // last `)` start at field 3, the state
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| std::io::Error::other("unreadable stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return Ok(None);
    }
    fields
        .get(22 - 3)
        .and_then(|t| t.parse().ok())
        .map(Some)
        .ok_or_else(|| std::io::Error::other("unreadable stat"))
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

/// Where secret directories go, best first: a tmpfs when there is one
/// (`/dev/shm`, `$XDG_RUNTIME_DIR`), so the bytes never reach a disk.
fn secret_bases() -> Vec<PathBuf> {
    let mut bases: Vec<PathBuf> = vec![PathBuf::from("/dev/shm")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        bases.push(PathBuf::from(x));
    }
    bases.push(std::env::temp_dir());
    bases
}

const SECRETS_PREFIX: &str = "kiln-secrets-";

/// A fresh 0700 directory for secret files, named
/// `kiln-secrets-<pid>-t<start time>-...`: a later kiln process removes it
/// if this one dies without doing so (SIGKILL), and only then, even once
/// the pid is reused ([`remove_stale_secrets`]).
fn private_dir() -> Result<PathBuf, (PathBuf, std::io::Error)> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let me = std::process::id();
    let start = start_time(me).ok().flatten().unwrap_or(0);
    let mut last = None;
    for base in secret_bases().into_iter().filter(|b| b.is_dir()) {
        // the CLI sweeps at start-up; a library caller gets it here
        remove_stale_secrets_in(&base);
        for _ in 0..8 {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = base.join(format!("{SECRETS_PREFIX}{me}-t{start}-{n}-{nonce:08x}"));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    last = Some((dir, e));
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        (
            std::env::temp_dir(),
            std::io::Error::other("no usable temporary directory"),
        )
    }))
}

/// Removes the secret directories that kiln processes of this user left
/// when they died without cleaning up (SIGKILL): one readdir of each place
/// secrets go, cheap enough for the start of every kiln command. A
/// directory is removed only when it is ours (owner uid) and its process is
/// gone; a running build's stays. Returns how many were removed.
pub fn remove_stale_secrets() -> usize {
    secret_bases()
        .iter()
        .map(|b| remove_stale_secrets_in(b))
        .sum()
}

fn remove_stale_secrets_in(base: &Path) -> usize {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = fs::read_dir(base) else {
        return 0;
    };
    let me = rustix::process::geteuid().as_raw();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name
            .as_encoded_bytes()
            .starts_with(SECRETS_PREFIX.as_bytes())
        {
            continue;
        }
        // lstat: a symlink of that name is not followed, nor removed
        let ours = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && owner_is_gone(&name, SECRETS_PREFIX) {
            match fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %e.path().display(), "removed the secrets of a kiln process that was killed");
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot remove the secrets of a killed kiln process");
                }
            }
        }
    }
    removed
}

/// Writes one secret file, never readable by anyone else on the host while
/// it is written (0600, then the step's mode).
fn write_secret(path: &Path, value: &[u8], mode: u32, uid: u32, gid: u32) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(value)?;
    drop(f);
    // Real root maps IDs one to one; in a rootless step the invoking user is
    // root inside, which is the default owner (0:0).
    if rustix::process::geteuid().is_root() && (uid, gid) != (0, 0) {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
}

/// `selector` inside `root`, with symlinks resolved as they would be inside
/// the step (openat2 `RESOLVE_IN_ROOT`), so a symlink in a stage cannot make
/// the bind source a host path. The snapshot is immutable, so the path
/// stays what was resolved.
fn resolve_in_root(root: &Path, selector: &str) -> Result<PathBuf, String> {
    let rel = selector.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(root.to_path_buf());
    }
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open `{}`: {e}", root.display()))?;
    let fd = rustix::fs::openat2(
        dir.as_fd(),
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| e.to_string())?;
    let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("cannot resolve: {e}"))?;
    let croot = fs::canonicalize(root).map_err(|e| e.to_string())?;
    if !real.starts_with(&croot) {
        return Err("it resolves outside its stage".into());
    }
    Ok(real)
}

/// Copies `src` (a file or a tree) to `dest` with modes, symlinks and, for
/// root, owners. Special files are skipped: a bind source is data.
fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    let root = rustix::process::geteuid().is_root();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dest)?;
    } else if ft.is_dir() {
        fs::create_dir(dest)?;
        for e in fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dest.join(e.file_name()))?;
        }
        fs::set_permissions(dest, meta.permissions())?;
    } else if ft.is_file() {
        fs::copy(src, dest)?;
    } else {
        return Ok(());
    }
    if root {
        use std::os::unix::fs::MetadataExt as _;
        std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))?;
        if !ft.is_symlink() {
            fs::set_permissions(dest, meta.permissions())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(String, SecretSource), String> {
        SecretSource::parse(s).map_err(|e| e.to_string())
    }

    #[test]
    fn secret_flags_parse_like_buildx() {
        assert_eq!(
            parse("id=tok,src=/a/b").unwrap(),
            ("tok".into(), SecretSource::File("/a/b".into()))
        );
        assert_eq!(
            parse("id=tok,source=rel,type=file").unwrap(),
            ("tok".into(), SecretSource::File("rel".into()))
        );
        assert_eq!(
            parse("id=tok,env=TOKEN").unwrap(),
            ("tok".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            parse("type=env,id=TOKEN").unwrap(),
            ("TOKEN".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            parse("id=TOKEN").unwrap(),
            ("TOKEN".into(), SecretSource::Env("TOKEN".into()))
        );
        for (bad, says) in [
            ("tok", "is not KEY=VALUE"),
            ("src=/a", "`id` is missing"),
            ("id=,src=/a", "`id` is empty"),
            ("id=t,type=file", "`type=file` takes `src=PATH`"),
            ("id=t,src=/a,env=B", "not both"),
            ("id=t,src=/a,src=/b", "given twice"),
            ("id=t,file=/a", "unknown key `file`"),
            ("id=t,type=ssh,src=/a", "unknown type `ssh`"),
            ("id=t,type=env,src=/a", "`type=env` takes"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains(&format!("`--secret {bad}`")), "{e}");
        }
    }

    #[test]
    fn secret_values_are_read_and_never_debug_printed() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("s");
        fs::write(&f, "hunter2").unwrap();
        let s = Secrets::from_flags(&[format!("id=a,src={}", f.display())]).unwrap();
        assert_eq!(s.get("a"), Some(&b"hunter2"[..]));
        assert!(!format!("{s:?}").contains("hunter2"));
        let e = Secrets::from_flags(&[format!("id=a,src={}", d.path().join("no").display())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read secret `a`") && e.contains("/no`"),
            "{e}"
        );
        let e = Secrets::from_flags(&["id=a,env=KILN_TEST_SURELY_UNSET".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("KILN_TEST_SURELY_UNSET"), "{e}");
        let e = Secrets::from_flags(&[
            format!("id=a,src={}", f.display()),
            format!("id=a,src={}", f.display()),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("given twice"), "{e}");
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join("home")).unwrap();
        (d, s)
    }

    fn mount(target: &str, kind: MountKind) -> kiln_dag::Mount {
        kiln_dag::Mount {
            target: target.into(),
            kind,
        }
    }

    fn cache(id: &str, sharing: CacheSharing) -> kiln_dag::Mount {
        mount(
            "/c",
            MountKind::Cache {
                id: id.into(),
                sharing,
            },
        )
    }

    fn source(p: &Prepared, i: usize) -> PathBuf {
        match &p.mounts[i].kind {
            kiln_runtime::MountKind::Cache { source }
            | kiln_runtime::MountKind::Secret { source }
            | kiln_runtime::MountKind::Bind { source, .. } => source.clone(),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn cache_sharing_modes() {
        let (_d, st) = store();
        let no = AtomicBool::new(false);
        let none = Secrets::default();
        let prep = |m: kiln_dag::Mount, c: &AtomicBool| {
            prepare(&st, &[m], &[], &none, None, c, &mut |_: &str| {})
        };

        // shared: two holders, one directory, under KILN_HOME
        let a = prep(cache("x", CacheSharing::Shared), &no).unwrap();
        let b = prep(cache("x", CacheSharing::Shared), &no).unwrap();
        assert_eq!(source(&a, 0), source(&b, 0));
        assert_eq!(source(&a, 0), cache_dir(&st, "x"));
        assert!(source(&a, 0).starts_with(st.root()) && source(&a, 0).is_dir());

        // private: a busy instance makes a new one; a free one is reused
        let p1 = prep(cache("x", CacheSharing::Private), &no).unwrap();
        let p2 = prep(cache("x", CacheSharing::Private), &no).unwrap();
        assert_ne!(source(&p1, 0), source(&p2, 0));
        let p1_dir = source(&p1, 0);
        drop(p1);
        let p3 = prep(cache("x", CacheSharing::Private), &no).unwrap();
        assert_eq!(source(&p3, 0), p1_dir);
        drop((p2, p3));

        // locked waits for shared holders; a cancel ends the wait
        let cancelled = AtomicBool::new(true);
        let e = prep(cache("x", CacheSharing::Locked), &cancelled).unwrap_err();
        assert!(matches!(e, MountError::Cancelled { .. }), "{e}");
        drop((a, b));
        let l = prep(cache("x", CacheSharing::Locked), &no).unwrap();
        let e = prep(cache("x", CacheSharing::Shared), &cancelled).unwrap_err();
        assert!(matches!(e, MountError::Cancelled { .. }), "{e}");
        // the wait is announced once
        let mut said = Vec::new();
        let e = prepare(
            &st,
            &[cache("x", CacheSharing::Locked)],
            &[],
            &none,
            None,
            &cancelled,
            &mut |m: &str| said.push(m.to_string()),
        )
        .unwrap_err();
        assert!(matches!(e, MountError::Cancelled { .. }), "{e}");
        assert_eq!(
            said,
            ["kiln: waiting for cache mount `x`: another step holds it\n"]
        );
        // another id is independent
        prep(cache("y", CacheSharing::Locked), &cancelled).unwrap();
        // a waiting step gets the lock when the holder is done
        std::thread::scope(|s| {
            let t = s.spawn(|| prep(cache("x", CacheSharing::Locked), &no).map(|_| ()));
            std::thread::sleep(Duration::from_millis(100));
            assert!(!t.is_finished());
            drop(l);
            t.join().unwrap().unwrap();
        });
    }

    /// A cache mount exported from one store fills an empty one of another
    /// (through an OCI layout, as `--cache-from type=local` reads it), keeps
    /// a non-empty one, and a corrupt blob leaves it empty.
    #[test]
    fn cache_mounts_export_deterministically_and_import_into_empty_mounts() {
        let (_d1, st1) = store();
        assert!(export_mount(&st1, "go").unwrap().is_none(), "no mount yet");
        let data = cache_dir(&st1, "go");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::write(data.join("sub/obj"), "object code").unwrap();
        fs::write(cache_base(&st1, "go").join("lock"), "").unwrap();
        let a = export_mount(&st1, "go").unwrap().unwrap();
        assert_eq!(a.id, "go");
        // unchanged: the same blob, from the note, and also when re-tarred
        assert_eq!(export_mount(&st1, "go").unwrap().unwrap(), a);
        fs::remove_file(cache_base(&st1, "go").join("exported.json")).unwrap();
        assert_eq!(export_mount(&st1, "go").unwrap().unwrap(), a);
        // changed: another blob
        fs::write(data.join("sub/obj"), "other code!").unwrap();
        let b = export_mount(&st1, "go").unwrap().unwrap();
        assert_ne!(b.digest, a.digest);

        let layout = tempfile::tempdir().unwrap();
        let blobs = layout.path().join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let d = Digest::parse(&b.digest).unwrap();
        fs::write(blobs.join(d.hex()), st1.read_blob(&d).unwrap()).unwrap();
        let import = CacheImport::of_mounts(layout.path(), vec![b.clone()]);
        let no = AtomicBool::new(false);
        let none = Secrets::default();
        for sharing in [
            CacheSharing::Shared,
            CacheSharing::Locked,
            CacheSharing::Private,
        ] {
            let (_d2, st2) = store();
            let p = prepare(
                &st2,
                &[cache("go", sharing)],
                &[],
                &none,
                Some(&import),
                &no,
                &mut |_: &str| {},
            )
            .unwrap();
            assert_eq!(
                fs::read_to_string(source(&p, 0).join("sub/obj")).unwrap(),
                "other code!",
                "{sharing:?}"
            );
        }

        // a non-empty local mount is kept
        let (_d3, st3) = store();
        fs::create_dir_all(cache_dir(&st3, "go")).unwrap();
        fs::write(cache_dir(&st3, "go").join("mine"), "local").unwrap();
        let p = prepare(
            &st3,
            &[cache("go", CacheSharing::Shared)],
            &[],
            &none,
            Some(&import),
            &no,
            &mut |_: &str| {},
        )
        .unwrap();
        assert!(source(&p, 0).join("mine").is_file());
        assert!(!source(&p, 0).join("sub").exists());

        // a corrupt blob: an empty mount, no temp directory left
        fs::write(blobs.join(d.hex()), b"garbage").unwrap();
        let (_d4, st4) = store();
        let p = prepare(
            &st4,
            &[cache("go", CacheSharing::Shared)],
            &[],
            &none,
            Some(&import),
            &no,
            &mut |_: &str| {},
        )
        .unwrap();
        assert!(is_empty_dir(&source(&p, 0)));
        let names: Vec<String> = fs::read_dir(cache_base(&st4, "go"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with("import-")), "{names:?}");
    }

    #[test]
    fn secrets_are_private_files_or_env_and_removed_after() {
        let (_d, st) = store();
        let no = AtomicBool::new(false);
        let mut s = Secrets::default();
        s.insert("tok", "s3cr3t");
        let mounts = [
            mount(
                "/run/secrets/tok",
                MountKind::Secret {
                    id: "tok".into(),
                    required: true,
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
            ),
            mount(
                "TOKEN",
                MountKind::SecretEnv {
                    id: "tok".into(),
                    required: true,
                },
            ),
            mount(
                "/run/secrets/opt",
                MountKind::Secret {
                    id: "opt".into(),
                    required: false,
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
            ),
        ];
        let p = prepare(&st, &mounts, &[], &s, None, &no, &mut |_: &str| {}).unwrap();
        assert_eq!(p.mounts.len(), 1, "an optional missing secret is absent");
        let f = source(&p, 0);
        assert_eq!(fs::read(&f).unwrap(), b"s3cr3t");
        assert!(!f.starts_with(st.root()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&f), 0o400);
        assert_eq!(mode(f.parent().unwrap()), 0o700);
        assert_eq!(p.env, vec![("TOKEN".to_string(), "s3cr3t".to_string())]);
        assert!(!format!("{p:?}").contains("s3cr3t"));
        drop(p);
        assert!(!f.exists() && !f.parent().unwrap().exists());

        let e = prepare(
            &st,
            &mounts,
            &[],
            &Secrets::default(),
            None,
            &no,
            &mut |_: &str| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("secret `tok`") && e.contains("--secret id=tok,src=PATH"),
            "{e}"
        );
    }

    #[test]
    fn secret_dirs_of_dead_processes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let start = start_time(me).unwrap().unwrap();
        // pid_max is at most 2^22: this pid cannot exist
        let dead = d.path().join("kiln-secrets-99999999-t5-0-0");
        let dead_old_style = d.path().join("kiln-secrets-99999999-0-0");
        let alive = d.path().join(format!("kiln-secrets-{me}-t{start}-0-0"));
        let alive_old_style = d.path().join(format!("kiln-secrets-{me}-0-0"));
        // our pid, but another start time: a process that had it before
        let reused = d
            .path()
            .join(format!("kiln-secrets-{me}-t{}-0-0", start + 1));
        let other = d.path().join("unrelated-99999999");
        let not_a_dir = d.path().join("kiln-secrets-99999999-t1-1-1");
        for p in [
            &dead,
            &dead_old_style,
            &alive,
            &alive_old_style,
            &reused,
            &other,
        ] {
            fs::create_dir(p).unwrap();
        }
        std::os::unix::fs::symlink(&other, &not_a_dir).unwrap();
        assert_eq!(remove_stale_secrets_in(d.path()), 3);
        assert!(!dead.exists() && !dead_old_style.exists() && !reused.exists());
        assert!(alive.exists() && alive_old_style.exists() && other.exists());
        assert!(not_a_dir.symlink_metadata().is_ok(), "a symlink stays");
    }

    #[test]
    fn start_times_tell_processes_apart() {
        let me = start_time(std::process::id()).unwrap().unwrap();
        assert!(me > 0);
        assert_eq!(start_time(1).unwrap().map(|t| t <= me), Some(true));
        assert_eq!(start_time(99_999_999).unwrap(), None);
        // a zombie counts as gone
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while start_time(pid).unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().unwrap();
    }

    #[test]
    fn bind_sources_resolve_inside_the_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/a/b", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc", root.join("up")).unwrap();
        let croot = fs::canonicalize(&root).unwrap();
        assert_eq!(resolve_in_root(&root, "/").unwrap(), root);
        assert_eq!(
            resolve_in_root(&root, "/a/b/f").unwrap(),
            croot.join("a/b/f")
        );
        // an absolute symlink means the stage's own /a/b, not the host's
        assert_eq!(resolve_in_root(&root, "/abs").unwrap(), croot.join("a/b"));
        // `..` stops at the stage's root
        assert_eq!(resolve_in_root(&root, "/up").unwrap(), croot.join("etc"));
        assert!(resolve_in_root(&root, "/missing").is_err());

        let copy = d.path().join("copy");
        copy_tree(&root, &copy).unwrap();
        assert_eq!(fs::read(copy.join("a/b/f")).unwrap(), b"x");
        assert_eq!(fs::read_link(copy.join("abs")).unwrap(), Path::new("/a/b"));
    }
}
