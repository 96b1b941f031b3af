//! kiln's content-addressed store.
//!
//! Everything kiln keeps on disk lives under one root (`$KILN_HOME`, else
//! `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`):
//!
//! ```text
//! blobs/sha256/<hex>        immutable blobs, named by the sha256 of their bytes
//! tmp/                      temp files of writes in flight (same filesystem)
//! tags.json                 local image names -> manifest digest
//! records/<kind>/<hex>      small atomic records (cache keys -> results, ...)
//! remote/sha256/<hex>       lazy blobs: where a blob not fetched yet comes from
//! locks/<name>.lock         flock(2) files
//! ```
//!
//! The root is private (0700): the worker keeps image layers extracted under
//! it, with the set-ID files and device nodes of root's images, which no
//! other local user may reach. [`Store::open`] creates it so and tightens an
//! older store it finds open to others.
//!
//! Every write goes to a temp file in `tmp/`, is fsynced and then renamed into
//! place, so a killed process leaves at worst an orphan temp file, never a
//! partial blob, tag index or record. Blobs are hashed while they are written
//! and a writer that expected another digest stores nothing. Several kiln
//! processes can use one store at once: blob and record writes are
//! rename-atomic (two writers of the same blob rename identical bytes), and
//! read-modify-write updates (the tag index) hold an exclusive `flock`.
//! The directory is synced after the rename of blobs, lazy-blob locators and
//! the tag index, whose names others rely on; not after records, which
//! nothing points at (a power cut may lose a record, never corrupt one).

mod lock;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use kiln_types::{Algorithm, Hasher};
use sha2::{Digest as _, Sha256};

pub use kiln_types::{Digest, DigestError};
pub use lock::{LockMode, StoreLock};

/// Errors of store operations. Each names the path or digest involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot find a home for the store: set `KILN_HOME` (or `XDG_CACHE_HOME` or `HOME`)")]
    NoHome,
    #[error("cannot create store directory `{path}`: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "the store `{path}` is open to other users (mode {mode:o}) and cannot be made private: {source}; run `chmod 700 {path}` as its owner, or set `KILN_HOME` to a directory of your own"
    )]
    NotPrivate {
        path: PathBuf,
        mode: u32,
        source: io::Error,
    },
    #[error("blob {digest} is not in the store (looked for `{path}`)")]
    BlobNotFound { digest: Digest, path: PathBuf },
    #[error(
        "blob {digest} is a lazily pulled layer that was not fetched yet and this command has no registry to fetch it from; run `kiln pull` for its image"
    )]
    RemoteNotFetched { digest: Digest },
    #[error("cannot read blob {digest} at `{path}`: {source}")]
    ReadBlob {
        digest: Digest,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot write temp file in `{dir}`: {source}")]
    WriteTemp { dir: PathBuf, source: io::Error },
    #[error(
        "content digest mismatch: expected {expected}, got {actual} ({size} bytes); nothing was stored"
    )]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob {digest} is not named by its sha256: the store keeps sha256 blobs only")]
    UnsupportedAlgorithm { digest: Digest },
    #[error(
        "content size mismatch for {digest}: expected {expected} bytes, got {actual}; nothing was stored"
    )]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("cannot move `{from}` into place at `{to}`: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("cannot sync directory `{path}`: {source}")]
    SyncDir { path: PathBuf, source: io::Error },
    #[error("cannot lock `{path}`: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("tag index `{path}` is corrupt: {source}; remove it to start over")]
    CorruptTags {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "invalid image name `{0}`: names are non-empty, have no whitespace or control characters and are at most 255 bytes"
    )]
    BadTag(String),
    #[error("invalid record kind `{0}`: use lower-case ascii letters, digits, `-`, `_` and `.`")]
    BadKind(String),
    #[error("cannot list `{path}`: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("cannot remove `{path}`: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on a store directory. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// where blobs missing here are fetched from on first read (an
    /// imported build cache, the registry of a lazily pulled image), in
    /// the order they were added
    sources: Vec<std::sync::Arc<dyn BlobSource>>,
}

/// Blobs available elsewhere (an imported build cache, a registry), fetched
/// into the store only when something reads them.
pub trait BlobSource: Send + Sync + std::fmt::Debug {
    /// Whether the source has the blob (cheap: no bytes read).
    fn has(&self, digest: &Digest) -> bool;
    /// The blob's bytes; the store verifies them against `digest`. A source
    /// may instead put the blob into the store itself (verified) and return
    /// any reader: the store then keeps what is there.
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>>;
}

/// The on-disk form of the tag index.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct TagFile {
    version: u32,
    tags: BTreeMap<String, Digest>,
}

impl Store {
    /// The default root: `$KILN_HOME`, else `$XDG_CACHE_HOME/kiln`, else
    /// `$HOME/.cache/kiln`. Empty variables count as unset.
    pub fn default_root() -> Result<PathBuf> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(p) = var("KILN_HOME") {
            return Ok(p);
        }
        if let Some(p) = var("XDG_CACHE_HOME") {
            return Ok(p.join("kiln"));
        }
        if let Some(p) = var("HOME") {
            return Ok(p.join(".cache").join("kiln"));
        }
        Err(StoreError::NoHome)
    }

    /// Opens the store at [`Store::default_root`], creating it if needed.
    pub fn open_default() -> Result<Self> {
        Self::open(Self::default_root()?)
    }

    /// Opens (creating if needed) the store rooted at `root`. A new root is
    /// made 0700; an existing one that group or others may enter is
    /// tightened to 0700 with a warning when it is ours, and is an error
    /// (saying what to do) when it is not or cannot be changed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        private_root(&root)?;
        for dir in [
            root.join("blobs").join("sha256"),
            root.join("tmp"),
            root.join("records"),
            root.join("locks"),
        ] {
            fs::create_dir_all(&dir)
                .map_err(|source| StoreError::CreateDir { path: dir, source })?;
        }
        Ok(Self {
            root,
            sources: Vec::new(),
        })
    }

    /// This store, with blobs it lacks fetched from `source` when read
    /// ([`Store::open_blob`], [`Store::ensure_blob`]); sources added
    /// earlier are asked first. [`Store::has_blob`] still answers for the
    /// local blobs only.
    pub fn with_blob_source(mut self, source: std::sync::Arc<dyn BlobSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// This store without its blob sources: reads see local blobs only.
    pub fn without_blob_sources(&self) -> Self {
        Self {
            root: self.root.clone(),
            sources: Vec::new(),
        }
    }

    /// Whether the blob is here, is a lazy blob ([`Store::put_remote_blob`])
    /// or can be fetched from a blob source.
    pub fn can_read_blob(&self, digest: &Digest) -> bool {
        self.has_blob(digest)
            || self.is_remote_blob(digest)
            || self.sources.iter().any(|s| s.has(digest))
    }

    /// Makes sure the blob is in the store, fetching it from the first blob
    /// source that has it (verified against its digest) when it is not.
    pub fn ensure_blob(&self, digest: &Digest) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let path = self.blob_path(digest);
        let Some(src) = self.sources.iter().find(|s| s.has(digest)) else {
            if self.is_remote_blob(digest) {
                return Err(StoreError::RemoteNotFetched { digest: *digest });
            }
            return Err(StoreError::BlobNotFound {
                digest: *digest,
                path,
            });
        };
        let mut rd = src.open(digest).map_err(|source| StoreError::ReadBlob {
            digest: *digest,
            path,
            source,
        })?;
        // a source that stored the blob itself (verified) needs no copy
        if !self.has_blob(digest) {
            self.put_blob_from_reader(&mut rd, Some(digest))?;
        }
        tracing::debug!(%digest, "fetched a blob from a blob source");
        Ok(())
    }

    /// Copies the blob in from a blob source that has it (verified, as
    /// [`Store::ensure_blob`] does); `Ok(false)` when it is here already or
    /// no source has it. For callers that would otherwise download it.
    pub fn fill_from_source(&self, digest: &Digest) -> Result<bool> {
        if self.has_blob(digest) || !self.sources.iter().any(|s| s.has(digest)) {
            return Ok(false);
        }
        self.ensure_blob(digest)?;
        Ok(true)
    }

    // ----- lazy blobs -----------------------------------------------------

    fn remote_path(&self, digest: &Digest) -> PathBuf {
        (self.root.join("remote"))
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Records that the blob `digest`, not in the store, can be fetched as
    /// `locator` says (opaque here: the blob source that fetches it reads
    /// it). Images whose layers are lazy count as complete
    /// ([`Store::can_read_blob`]); reading such a blob needs a blob source
    /// that knows the locator. Atomic like every record.
    pub fn put_remote_blob(&self, digest: &Digest, locator: &[u8]) -> Result<()> {
        let path = self.remote_path(digest);
        let dir = path.parent().expect("remote path has a parent");
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        // the rename must last: a manifest stored next relies on it
        self.write_atomic(&path, locator, true)
    }

    /// The locator of a lazy blob, if `digest` is one.
    pub fn remote_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.remote_path(digest);
        match fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    /// Whether `digest` is a lazy blob (recorded, whether or not it was
    /// fetched since).
    pub fn is_remote_blob(&self, digest: &Digest) -> bool {
        self.remote_path(digest).is_file()
    }

    /// Every lazy blob's digest, sorted.
    pub fn list_remote_blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("remote").join("sha256");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::List { path: dir, source }),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|source| StoreError::List {
                path: dir.clone(),
                source,
            })?;
            if let Ok(d) = Digest::from_hex(&e.file_name().to_string_lossy()) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Forgets a lazy blob's locator; returns whether there was one.
    pub fn remove_remote_blob(&self, digest: &Digest) -> Result<bool> {
        remove_if_there(self.remote_path(digest))
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory for temp files; on the same filesystem as the blobs, so
    /// a rename from it is atomic. Other crates may stage files here too.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    // ----- blobs -----------------------------------------------------------

    /// Where the blob with `digest` lives (whether or not it exists yet).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        // Named by algorithm as in an OCI layout, so a digest of another
        // algorithm never names a sha256 blob.
        (self.root.join("blobs"))
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size in bytes of a stored blob (fetched from a blob source first
    /// when it is only there: its reader comes next).
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let f = self.open_blob(digest)?;
        f.metadata()
            .map(|m| m.len())
            .map_err(|source| StoreError::ReadBlob {
                digest: *digest,
                path: self.blob_path(digest),
                source,
            })
    }

    /// Opens a stored blob for reading (fetched from the blob source first
    /// when it is only there).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !self.sources.is_empty() => {
                self.ensure_blob(digest)?;
                File::open(&path).map_err(|source| StoreError::ReadBlob {
                    digest: *digest,
                    path,
                    source,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.is_remote_blob(digest) => {
                Err(StoreError::RemoteNotFetched { digest: *digest })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound {
                digest: *digest,
                path,
            }),
            Err(source) => Err(StoreError::ReadBlob {
                digest: *digest,
                path,
                source,
            }),
        }
    }

    /// Reads a whole blob into memory (for manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut f = self.open_blob(digest)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|source| StoreError::ReadBlob {
                digest: *digest,
                path: self.blob_path(digest),
                source,
            })?;
        Ok(buf)
    }

    /// Re-hashes a stored blob and checks it against its name.
    pub fn verify_blob(&self, digest: &Digest) -> Result<()> {
        let mut f = self.open_blob(digest)?;
        let mut hasher = Hasher::new(digest.algorithm());
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(|source| StoreError::ReadBlob {
                digest: *digest,
                path: self.blob_path(digest),
                source,
            })?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        let actual = hasher.finish();
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
                size,
            });
        }
        Ok(())
    }

    /// Starts writing a blob. Bytes are hashed as they arrive; nothing is
    /// visible in the store until [`BlobWriter::commit`] succeeds.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.tmp_dir();
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(|source| StoreError::WriteTemp {
                dir: dir.clone(),
                source,
            })?;
        Ok(BlobWriter {
            store: self.clone(),
            file: io::BufWriter::with_capacity(1 << 16, file),
            hasher: Sha256::new(),
            size: 0,
            writeback_from: 0,
        })
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all_bytes(bytes)?;
        w.commit(Some(&digest))
    }

    /// Copies `reader` into the store, failing (and storing nothing) if the
    /// bytes do not hash to `expected` when one is given.
    pub fn put_blob_from_reader(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<Digest> {
        let mut w = self.blob_writer()?;
        let dir = self.tmp_dir();
        io::copy(reader, &mut w).map_err(|source| StoreError::WriteTemp { dir, source })?;
        w.commit(expected)
    }

    /// Every blob digest in the store, sorted.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("blobs").join("sha256");
        let mut out = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|source| StoreError::List {
            path: dir.clone(),
            source,
        })?;
        for e in entries {
            let e = e.map_err(|source| StoreError::List {
                path: dir.clone(),
                source,
            })?;
            if let Some(d) = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a blob. Callers must make sure nothing references it (GC
    /// holds the `gc` lock exclusively while it deletes).
    pub fn remove_blob(&self, digest: &Digest) -> Result<bool> {
        remove_if_there(self.blob_path(digest))
    }

    // ----- locks -----------------------------------------------------------

    /// Takes the named `flock(2)` lock (`locks/<name>.lock`), blocking until
    /// it is granted. Released when the guard drops or the process dies.
    pub fn lock(&self, name: &str, mode: LockMode) -> Result<StoreLock> {
        check_kind(name)?;
        StoreLock::acquire(&self.root.join("locks").join(format!("{name}.lock")), mode)
    }

    /// Takes the named lock if no other holder conflicts; `Ok(None)` when
    /// one does, so a caller can say what it waits for before it blocks.
    pub fn try_lock(&self, name: &str, mode: LockMode) -> Result<Option<StoreLock>> {
        check_kind(name)?;
        StoreLock::acquire_with(
            &self.root.join("locks").join(format!("{name}.lock")),
            mode,
            false,
        )
    }

    // ----- tags ------------------------------------------------------------

    fn tags_path(&self) -> PathBuf {
        self.root.join("tags.json")
    }

    fn read_tag_file(&self) -> Result<TagFile> {
        let path = self.tags_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::CorruptTags { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TagFile {
                version: 1,
                ..Default::default()
            }),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    /// All local image names and the manifest digest each points at.
    pub fn tags(&self) -> Result<BTreeMap<String, Digest>> {
        // A reader never sees a half-written index (rename), so no lock.
        Ok(self.read_tag_file()?.tags)
    }

    /// The manifest digest `name` points at, if any.
    pub fn get_tag(&self, name: &str) -> Result<Option<Digest>> {
        Ok(self.read_tag_file()?.tags.get(name).cloned())
    }

    /// Points `name` at `manifest`; returns the previous target.
    pub fn set_tag(&self, name: &str, manifest: &Digest) -> Result<Option<Digest>> {
        check_tag(name)?;
        self.update_tags(|tags| tags.insert(name.to_owned(), *manifest))
    }

    /// Removes `name`; returns what it pointed at.
    pub fn remove_tag(&self, name: &str) -> Result<Option<Digest>> {
        self.update_tags(|tags| tags.remove(name))
    }

    /// Read-modify-write of the whole tag index under an exclusive lock, so
    /// concurrent updates from several processes are never lost.
    pub fn update_tags<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Digest>) -> T) -> Result<T> {
        let _guard = self.lock("tags", LockMode::Exclusive)?;
        let mut file = self.read_tag_file()?;
        file.version = 1;
        let out = f(&mut file.tags);
        let mut bytes = serde_json::to_vec_pretty(&file).expect("tag index serializes");
        bytes.push(b'\n');
        self.write_atomic(&self.tags_path(), &bytes, true)?;
        Ok(out)
    }

    // ----- records ---------------------------------------------------------

    fn record_path(&self, kind: &str, key: &[u8]) -> PathBuf {
        self.root
            .join("records")
            .join(kind)
            .join(hex::encode(Sha256::digest(key)))
    }

    /// Stores `value` under (`kind`, `key`), replacing any previous value.
    /// Atomic: readers see the old or the new value, never a mix, and a
    /// killed writer leaves the old value in place.
    pub fn put_record(&self, kind: &str, key: &[u8], value: &[u8]) -> Result<()> {
        check_kind(kind)?;
        let path = self.record_path(kind, key);
        let dir = path.parent().expect("record path has a parent");
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        // Nothing refers to a record: a power cut that loses its rename
        // only loses a cache entry (the old value or none), never leaves
        // a partial one, so the directory is not synced (a third of a
        // fully cached build's fsyncs).
        self.write_atomic(&path, value, false)
    }

    /// The value stored under (`kind`, `key`), if any.
    pub fn get_record(&self, kind: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_kind(kind)?;
        let path = self.record_path(kind, key);
        match fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    /// Marks the record as just used (its times become now), so that
    /// pruning by age (`kiln cache prune --filter until=`) keeps what
    /// builds still use. Best effort: a failure only makes it look older.
    pub fn touch_record(&self, kind: &str, key: &[u8]) {
        if check_kind(kind).is_err() {
            return;
        }
        let path = self.record_path(kind, key);
        if let Ok(f) = fs::OpenOptions::new().write(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// Removes the record; returns whether it existed.
    pub fn remove_record(&self, kind: &str, key: &[u8]) -> Result<bool> {
        check_kind(kind)?;
        remove_if_there(self.record_path(kind, key))
    }

    // ----- maintenance -----------------------------------------------------

    /// Deletes temp files older than `min_age` (left by killed processes).
    /// Young ones may belong to a writer still running.
    pub fn clean_tmp(&self, min_age: std::time::Duration) -> Result<usize> {
        let dir = self.tmp_dir();
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        let entries = fs::read_dir(&dir).map_err(|source| StoreError::List {
            path: dir.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= min_age);
            if old && fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Writes `bytes` to `path` through a synced temp file and a rename.
    /// Writes `bytes` to a temp file, syncs it and renames it to `path`;
    /// with `durable_name` the rename itself is synced too (fsync of the
    /// directory), for files something else points at or users rely on.
    fn write_atomic(&self, path: &Path, bytes: &[u8], durable_name: bool) -> Result<()> {
        let dir = self.tmp_dir();
        let werr = |source| StoreError::WriteTemp {
            dir: dir.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix("rec-")
            .tempfile_in(&dir)
            .map_err(werr)?;
        tmp.write_all(bytes).map_err(werr)?;
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(werr)?;
        tmp.as_file().sync_all().map_err(werr)?;
        let from = tmp.path().to_owned();
        tmp.persist(path).map_err(|e| StoreError::Rename {
            from,
            to: path.to_owned(),
            source: e.error,
        })?;
        if durable_name {
            sync_dir(path.parent().expect("store paths have parents"))?;
        }
        Ok(())
    }
}

/// A blob being written. Implements [`Write`]; call [`BlobWriter::commit`]
/// to verify and publish it. Dropping it uncommitted deletes the temp file.
pub struct BlobWriter {
    store: Store,
    file: io::BufWriter<tempfile::NamedTempFile>,
    hasher: Sha256,
    size: u64,
    /// file offset from which writeback has not been started yet
    writeback_from: u64,
}

/// Start writeback of a big blob every this many bytes, so the fsync in
/// [`BlobWriter::commit`] finds little left to write.
const WRITEBACK_STEP: u64 = 8 << 20;

impl BlobWriter {
    /// Asks the kernel to start writing back what was written since the
    /// last call (sync_file_range(2) `SYNC_FILE_RANGE_WRITE`: asynchronous,
    /// no metadata, no durability promise; the fsync at commit gives that).
    /// The disk then works while the blob is still being produced.
    fn start_writeback(&mut self) {
        let written = self.size - self.file.buffer().len() as u64;
        if written - self.writeback_from < WRITEBACK_STEP {
            return;
        }
        use std::os::fd::AsRawFd;
        let fd = self.file.get_ref().as_file().as_raw_fd();
        // SAFETY: plain syscall on a descriptor we own; a failure (e.g.
        // ESPIPE, EINVAL on odd filesystems) only loses the hint.
        let _ = unsafe {
            libc::sync_file_range(
                fd,
                self.writeback_from as libc::off64_t,
                (written - self.writeback_from) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        self.writeback_from = written;
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn write_all_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let dir = self.store.tmp_dir();
        self.write_all(bytes)
            .map_err(|source| StoreError::WriteTemp { dir, source })
    }

    /// Checks the size before committing (registries announce it).
    pub fn commit_sized(self, expected: &Digest, size: u64) -> Result<Digest> {
        if self.size != size {
            return Err(StoreError::SizeMismatch {
                digest: *expected,
                expected: size,
                actual: self.size,
            });
        }
        self.commit(Some(expected))
    }

    /// Finishes the blob: checks its digest against `expected` (when given),
    /// fsyncs it and renames it into `blobs/`. On a mismatch the temp file is
    /// deleted and nothing is stored.
    pub fn commit(self, expected: Option<&Digest>) -> Result<Digest> {
        let dir = self.store.tmp_dir();
        let werr = |source| StoreError::WriteTemp {
            dir: dir.clone(),
            source,
        };
        if let Some(expected) = expected.filter(|e| e.algorithm() != Algorithm::Sha256) {
            return Err(StoreError::UnsupportedAlgorithm { digest: *expected });
        }
        let actual = Digest::from_hasher(self.hasher);
        if let Some(expected) = expected.filter(|e| *e != &actual) {
            return Err(StoreError::DigestMismatch {
                expected: *expected,
                actual,
                size: self.size,
            });
        }
        let tmp = self.file.into_inner().map_err(|e| werr(e.into_error()))?;
        let dest = self.store.blob_path(&actual);
        if dest.is_file() {
            // Same name, same bytes: another writer got there first.
            return Ok(actual);
        }
        // Blobs never change once named: read-only for everyone, so a stray
        // write fails instead of corrupting content-addressed data.
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .map_err(werr)?;
        tmp.as_file().sync_all().map_err(werr)?;
        let from = tmp.path().to_owned();
        tmp.persist(&dest).map_err(|e| StoreError::Rename {
            from,
            to: dest.clone(),
            source: e.error,
        })?;
        sync_dir(dest.parent().expect("blob path has a parent"))?;
        tracing::debug!(digest = %actual, size = self.size, "stored blob");
        Ok(actual)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        self.start_writeback();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Creates `root` 0700 (its parents as usual), or tightens an existing
/// root that group or others may enter to 0700 when it is ours, with a
/// warning. mkdir(2)'s mode is only ever narrowed by the umask, so a new
/// root is never wider than 0700 whatever the umask is.
fn private_root(root: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    let cerr = |source| StoreError::CreateDir {
        path: root.to_owned(),
        source,
    };
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(cerr)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(cerr(e)),
    }
    // the root may be a symlink to the real directory: both follow it
    let meta = fs::metadata(root).map_err(cerr)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let not_private = |source| StoreError::NotPrivate {
        path: root.to_owned(),
        mode,
        source,
    };
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        // someone else's directory is not ours to change, even for root
        return Err(not_private(io::Error::other(format!(
            "it belongs to uid {}, not to uid {me}",
            meta.uid()
        ))));
    }
    fs::set_permissions(root, fs::Permissions::from_mode(mode & !0o077)).map_err(not_private)?;
    tracing::warn!(
        "the store `{}` was open to other users (mode {mode:o}); made it {:o} so that they \
         cannot reach the layers extracted in it",
        root.display(),
        mode & !0o077
    );
    Ok(())
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::SyncDir {
            path: path.to_owned(),
            source,
        })
}

fn check_kind(kind: &str) -> Result<()> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && !kind.starts_with('.')
        && kind
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadKind(kind.to_owned()))
    }
}

fn check_tag(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadTag(name.to_owned()))
    }
}
/// Removes the file at `path`; whether it was there.
fn remove_if_there(path: PathBuf) -> Result<bool> {
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StoreError::Remove { path, source }),
    }
}
