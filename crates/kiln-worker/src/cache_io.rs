//! Build cache export and import (`--cache-to`, `--cache-from`).
//!
//! A cache is one OCI image manifest (artifact type [`CACHE_ARTIFACT`])
//! kept either in an OCI image layout directory (`type=local`: `oci-layout`,
//! `index.json` naming it with `org.opencontainers.image.ref.name=kiln-cache`,
//! `blobs/sha256/`) or under a tag in a registry (`type=registry`). Its
//! config blob is the list of cache records
//! (solver key -> result as a chain of layer blobs, plus the content digests
//! of what copies out of other stages select) and whose layers are every
//! blob those results name. Keys are content-first (see `kiln-solver`), so
//! they hold across checkouts, users and machines.
//!
//! Export writes only blobs the directory lacks: a re-export after a build
//! that changed nothing writes no blob. Import reads the records up front
//! and nothing else: a layer blob is copied into the store (and verified)
//! only when a step needs its content, so a fully cached build reads only
//! the blobs of the final image.
//!
//! With `cache-mounts=true` the export also holds the `run` cache mounts
//! the build's steps name (by id): each mount's directory as a
//! deterministic zstd tar layer, listed in the records (`mounts`) and
//! annotated with its id in the manifest ([`MOUNT_ID_ANNOTATION`]). An
//! unchanged mount gives the same blob, so it is not written again. Import
//! extracts a mount only when a step that runs (not CACHED) uses it and the
//! local one is empty (see `mounts.rs`); a mount no step of this build
//! filled locally is exported again from the imported cache.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_dag::{Definition, Op};
use kiln_oci::{Digest, Store};
use kiln_solver::StepReport;
use kiln_solver::{Dep, cache_map};
use kiln_store::BlobSource;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cache_mount::MountBlob;
use crate::snapshot::{LayerRef, Ref, Snapshots};

/// `artifactType` of the cache manifest.
pub const CACHE_ARTIFACT: &str = "application/vnd.kiln.cache.v1";
/// Media type of the records blob (the manifest's config).
pub const RECORDS_MEDIA_TYPE: &str = "application/vnd.kiln.cache.records.v1+json";
const REF_NAME: &str = "kiln-cache";
const REF_NAME_KEY: &str = "org.opencontainers.image.ref.name";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Annotation of a cache mount's layer in the cache manifest: the mount's id.
pub const MOUNT_ID_ANNOTATION: &str = "dev.kiln.cache-mount.id";

#[derive(Debug, thiserror::Error)]
pub enum CacheIoError {
    #[error("invalid cache spec `{spec}`")]
    Spec {
        spec: String,
        #[source]
        source: Box<CacheSpecError>,
    },
    #[error("cache `{path}`: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("cannot write the cache at `{path}`: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot export the result of step {key}: {reason}")]
    Export { key: String, reason: String },
    #[error("registry cache `{reference}`: {reason}")]
    Registry { reference: String, reason: String },
}

/// What is wrong with a `--cache-to` / `--cache-from` value; `example` is
/// the form to write instead.
#[derive(Debug, thiserror::Error)]
pub enum CacheSpecError {
    #[error(transparent)]
    Fields(#[from] kiln_types::spec::SpecFieldsError),
    #[error("unknown cache type `{kind}`: use `{example}`")]
    UnknownType { kind: String, example: &'static str },
    #[error("no `type=`: use `{example}`")]
    NoType { example: &'static str },
    #[error("no `{key}={what}`: use `{example}`")]
    Missing {
        key: &'static str,
        what: &'static str,
        example: &'static str,
    },
    #[error("unknown mode `{mode}`: use `min` or `max`")]
    UnknownMode { mode: String },
    #[error(
        "`cache-mounts={value}` is not `true` or `false`: write `cache-mounts=true` to {verb} the `run` cache mounts with the cache"
    )]
    CacheMounts { value: String, verb: &'static str },
    #[error("unknown option `{key}`: use `{example}`")]
    UnknownOption { key: String, example: &'static str },
    #[error("`mode=` is an option of `--cache-to`")]
    ModeOnImport,
    #[error(transparent)]
    Reference(#[from] kiln_registry::ReferenceError),
}

/// How much of the build an export keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// the steps of the final image
    #[default]
    Min,
    /// every step of every stage (builder layers are committed for it)
    Max,
}

/// A `--cache-to` / `--cache-from` value. `cache_mounts`: export the
/// build's `run` cache mounts too (`cache-mounts=true`, off by default), or
/// for an import, use the cache mounts it holds (on unless
/// `cache-mounts=false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSpec {
    Local {
        dir: PathBuf,
        mode: Mode,
        cache_mounts: bool,
    },
    Registry {
        reference: String,
        mode: Mode,
        cache_mounts: bool,
    },
}

impl CacheSpec {
    /// Parses `type=local,dest=DIR[,mode=min|max][,cache-mounts=true|false]`
    /// (`export`) or `type=local,src=DIR[,cache-mounts=true|false]`, and
    /// `type=registry,ref=REF[,mode=min|max][,cache-mounts=true|false]`.
    pub fn parse(spec: &str, export: bool) -> Result<CacheSpec, CacheIoError> {
        Self::parse_fields(spec, export).map_err(|source| CacheIoError::Spec {
            spec: spec.to_string(),
            source: Box::new(source),
        })
    }

    fn parse_fields(spec: &str, export: bool) -> Result<CacheSpec, CacheSpecError> {
        let fields = kiln_types::spec::key_values(spec)?;
        let mut kv = BTreeMap::new();
        for (k, v) in &fields {
            kv.insert(k.trim(), v.trim());
        }
        let example = if export {
            "type=local,dest=DIR[,mode=min|max][,cache-mounts=true]` or `type=registry,ref=REF[,mode=min|max][,cache-mounts=true]"
        } else {
            "type=local,src=DIR` or `type=registry,ref=REF"
        };
        let (registry, key, what) = match kv.remove("type") {
            Some("local") => (false, if export { "dest" } else { "src" }, "DIR"),
            Some("registry") => (true, "ref", "REF"),
            Some(t) => {
                return Err(CacheSpecError::UnknownType {
                    kind: t.to_string(),
                    example,
                });
            }
            None => return Err(CacheSpecError::NoType { example }),
        };
        let value = kv
            .remove(key)
            .filter(|d| !d.is_empty())
            .ok_or(CacheSpecError::Missing { key, what, example })?;
        let mode = match kv.remove("mode") {
            None | Some("min") => Mode::Min,
            Some("max") => Mode::Max,
            Some(m) => {
                return Err(CacheSpecError::UnknownMode {
                    mode: m.to_string(),
                });
            }
        };
        let cache_mounts = match kv.remove("cache-mounts") {
            None => !export,
            Some("true") => true,
            Some("false") => false,
            Some(v) => {
                return Err(CacheSpecError::CacheMounts {
                    value: v.to_string(),
                    verb: if export { "export" } else { "import" },
                });
            }
        };
        if let Some(k) = kv.keys().next() {
            return Err(CacheSpecError::UnknownOption {
                key: k.to_string(),
                example,
            });
        }
        if !export && mode != Mode::Min {
            return Err(CacheSpecError::ModeOnImport);
        }
        if registry {
            kiln_registry::Reference::parse(value)?;
            return Ok(CacheSpec::Registry {
                reference: value.to_string(),
                mode,
                cache_mounts,
            });
        }
        Ok(CacheSpec::Local {
            dir: PathBuf::from(value),
            mode,
            cache_mounts,
        })
    }
}

/// The records blob.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Records {
    version: u32,
    /// solver key -> result (blob layers only)
    records: Vec<RecordEntry>,
    /// `content-digest` record key -> the content digest
    content: Vec<ContentEntry>,
    /// `run` cache mounts (`cache-mounts=true`), by id; absent otherwise,
    /// so caches without them read as before
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<MountBlob>,
    /// what the image checks found in the exported layers (the ELF scan
    /// of `elfcheck`), under their local record keys, so a fresh runner
    /// does not decompress the final image to check it again; absent in
    /// caches without them
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    checks: Vec<CheckEntry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct CheckEntry {
    key: String,
    value: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RecordEntry {
    key: String,
    result: Ref,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct ContentEntry {
    key: String,
    digest: String,
}

fn layout_err(path: &Path, reason: impl Into<String>) -> CacheIoError {
    CacheIoError::Layout {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn blob_file(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(d.hex())
}

/// Reads a blob of the layout and checks its digest.
fn read_verified(dir: &Path, d: &Digest) -> Result<Vec<u8>, CacheIoError> {
    let path = blob_file(dir, d);
    let bytes = fs::read(&path).map_err(|e| layout_err(&path, e.to_string()))?;
    if Digest::of(&bytes) != *d {
        return Err(layout_err(
            &path,
            format!("the blob does not match its digest {d}"),
        ));
    }
    Ok(bytes)
}

/// The digest of the cache manifest `index.json` names, if there is one.
fn cache_manifest(dir: &Path) -> Result<Option<Digest>, CacheIoError> {
    let path = dir.join("index.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(layout_err(&path, e.to_string())),
    };
    let index: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| layout_err(&path, e.to_string()))?;
    let found = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["annotations"][REF_NAME_KEY].as_str() == Some(REF_NAME)
                || m["artifactType"].as_str() == Some(CACHE_ARTIFACT)
        });
    let Some(m) = found else { return Ok(None) };
    let d = m["digest"]
        .as_str()
        .and_then(|s| Digest::parse(s).ok())
        .ok_or_else(|| layout_err(&path, "the cache manifest has no valid digest"))?;
    Ok(Some(d))
}

/// The manifest and records of the cache in `dir`.
fn read_cache(dir: &Path) -> Result<Option<(Digest, serde_json::Value, Records)>, CacheIoError> {
    let Some(md) = cache_manifest(dir)? else {
        return Ok(None);
    };
    let manifest: serde_json::Value = serde_json::from_slice(&read_verified(dir, &md)?)
        .map_err(|e| layout_err(&blob_file(dir, &md), e.to_string()))?;
    let cd = manifest["config"]["digest"]
        .as_str()
        .and_then(|s| Digest::parse(s).ok())
        .ok_or_else(|| layout_err(&blob_file(dir, &md), "the manifest has no config"))?;
    let records: Records = serde_json::from_slice(&read_verified(dir, &cd)?)
        .map_err(|e| layout_err(&blob_file(dir, &cd), e.to_string()))?;
    if records.version != 1 {
        return Err(layout_err(
            dir,
            format!(
                "cache format version {} is not supported (this kiln reads version 1)",
                records.version
            ),
        ));
    }
    Ok(Some((md, manifest, records)))
}

/// Where an imported cache keeps its blobs.
#[derive(Debug)]
enum Remote {
    Dir(PathBuf),
    Registry {
        client: Box<kiln_registry::Client>,
        ep: kiln_registry::Endpoint,
        reference: String,
    },
}

/// The blobs of imported caches, read on demand; counts what it reads.
#[derive(Debug, Default)]
pub struct ImportSource {
    remotes: Vec<Remote>,
    /// blob -> (remote, size, media type), from the caches' manifests
    listed: HashMap<Digest, (usize, u64, String)>,
    /// the store without a blob source: where registry blobs land
    store: Option<Store>,
    blobs: AtomicU64,
    bytes: Arc<AtomicU64>,
}

impl ImportSource {
    /// Blobs fetched so far and their bytes.
    pub fn fetched(&self) -> (u64, u64) {
        (
            self.blobs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

struct Counting<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A runtime for one registry exchange, from synchronous code. Called
/// from within a runtime (a base image pull asking the cache for its
/// config), it runs on a thread of its own: tokio refuses to start a
/// runtime inside another.
fn block_on<F>(f: F) -> io::Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let run = |f: F| -> io::Result<F::Output> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(f))
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run(f);
    }
    std::thread::scope(|s| s.spawn(|| run(f)).join())
        .map_err(|_| io::Error::other("the registry thread panicked"))?
}

impl BlobSource for ImportSource {
    fn has(&self, digest: &Digest) -> bool {
        self.listed.contains_key(digest)
    }

    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let (i, size, media_type) = self.listed.get(digest).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {digest} is in no imported cache"),
            )
        })?;
        let file = match &self.remotes[*i] {
            Remote::Dir(dir) => {
                let path = blob_file(dir, digest);
                fs::File::open(&path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "the cache `{}` lists blob {digest} but `{}` cannot be read ({e}): export the cache again",
                            dir.display(),
                            path.display()
                        ),
                    )
                })?
            }
            Remote::Registry {
                client,
                ep,
                reference,
            } => {
                let store = self.store.as_ref().expect("registry imports have a store");
                let blob = kiln_registry::manifest::Blob {
                    digest: *digest,
                    size: *size,
                    media_type: media_type.clone(),
                };
                block_on(client.fetch_blob(ep, &blob, store))?
                    .map_err(|e| io::Error::other(format!("registry cache `{reference}`: {e}")))?;
                // Fetched and verified into the store: counted now, as the
                // store may keep what is there and never read the reader.
                let file = store.open_blob(digest).map_err(io::Error::other)?;
                let n = file.metadata().map(|m| m.len()).unwrap_or(*size);
                self.blobs.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(n, Ordering::Relaxed);
                return Ok(Box::new(file));
            }
        };
        self.blobs.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(Counting {
            inner: file,
            bytes: self.bytes.clone(),
        }))
    }
}

/// Imported cache records (`--cache-from`).
#[derive(Debug, Default)]
pub struct CacheImport {
    records: HashMap<String, Ref>,
    /// content-digest key -> digest (the first cache wins)
    content: HashMap<Digest, Digest>,
    /// cache mounts by id (the first cache that has one wins)
    mounts: HashMap<String, MountBlob>,
    /// layer check results by record key (the first cache wins)
    checks: HashMap<String, String>,
    source: Arc<ImportSource>,
}

/// The cache manifest and records under a registry tag, if there is one.
fn read_registry_cache(
    client: &kiln_registry::Client,
    ep: &kiln_registry::Endpoint,
    reference: &kiln_registry::Reference,
    store: &Store,
) -> Result<Option<(serde_json::Value, Records)>, CacheIoError> {
    let rerr = |reason: String| CacheIoError::Registry {
        reference: reference.to_string(),
        reason,
    };
    let tag = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    let fetched = block_on(async {
        let m = match client.get_manifest(ep, &tag, reference.digest()).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let manifest: serde_json::Value = match serde_json::from_slice(&m.bytes) {
            Ok(v) => v,
            Err(_) => return Ok(Some((serde_json::Value::Null, None))),
        };
        let config = &manifest["config"];
        let Some(cd) = config["digest"]
            .as_str()
            .and_then(|s| Digest::parse(s).ok())
        else {
            return Ok(Some((manifest, None)));
        };
        let blob = kiln_registry::manifest::Blob {
            digest: cd,
            size: config["size"].as_u64().unwrap_or_default(),
            media_type: config["mediaType"].as_str().unwrap_or_default().to_string(),
        };
        client.fetch_blob(ep, &blob, store).await?;
        Ok(Some((manifest, Some(cd))))
    })
    .map_err(|e| rerr(crate::chain(&e)))?
    .map_err(|e| rerr(crate::chain(&e)))?;
    let Some((manifest, cd)) = fetched else {
        return Ok(None);
    };
    if manifest["config"]["mediaType"].as_str() != Some(RECORDS_MEDIA_TYPE) {
        return Err(rerr(
            "the tag names something that is not a kiln cache: pick another tag for the cache"
                .into(),
        ));
    }
    let cd = cd.ok_or_else(|| rerr("the cache manifest has no config".into()))?;
    let bytes = store.read_blob(&cd).map_err(|e| rerr(crate::chain(&e)))?;
    let records: Records = serde_json::from_slice(&bytes).map_err(|e| rerr(crate::chain(&e)))?;
    if records.version != 1 {
        return Err(rerr(format!(
            "cache format version {} is not supported (this kiln reads version 1)",
            records.version
        )));
    }
    Ok(Some((manifest, records)))
}

impl CacheImport {
    /// Reads the records of the caches `specs` name (registry caches with
    /// `settings`; their records blob lands in `store`). A cache that does
    /// not exist yet (a first CI run) imports nothing.
    pub fn open(
        specs: &[CacheSpec],
        settings: &kiln_registry::Settings,
        store: &Store,
    ) -> Result<CacheImport, CacheIoError> {
        let mut out = CacheImport::default();
        let mut source = ImportSource {
            store: Some(store.clone()),
            ..ImportSource::default()
        };
        for spec in specs {
            let use_mounts = match spec {
                CacheSpec::Local { cache_mounts, .. }
                | CacheSpec::Registry { cache_mounts, .. } => *cache_mounts,
            };
            let (manifest, recs, remote) = match spec {
                CacheSpec::Local { dir, .. } => {
                    let Some((_, manifest, recs)) = read_cache(dir)? else {
                        tracing::warn!(dir = %dir.display(), "no kiln cache to import there");
                        continue;
                    };
                    (manifest, recs, Remote::Dir(dir.clone()))
                }
                CacheSpec::Registry { reference, .. } => {
                    let rerr = |reason: String| CacheIoError::Registry {
                        reference: reference.clone(),
                        reason,
                    };
                    let parsed = kiln_registry::Reference::parse(reference)
                        .map_err(|e| rerr(crate::chain(&e)))?;
                    let client = kiln_registry::Client::new(settings.clone())
                        .map_err(|e| rerr(crate::chain(&e)))?;
                    let ep = settings.origin(parsed.registry(), parsed.repository());
                    let Some((manifest, recs)) = read_registry_cache(&client, &ep, &parsed, store)?
                    else {
                        tracing::warn!(%reference, "no kiln cache to import there");
                        continue;
                    };
                    (
                        manifest,
                        recs,
                        Remote::Registry {
                            client: Box::new(client),
                            ep,
                            reference: reference.clone(),
                        },
                    )
                }
            };
            let i = source.remotes.len();
            source.remotes.push(remote);
            for e in recs.records {
                out.records.entry(e.key).or_insert(e.result);
            }
            for c in recs.content {
                if let (Ok(k), Ok(d)) = (c.key.parse(), c.digest.parse()) {
                    out.content.entry(k).or_insert(d);
                }
            }
            for c in recs.checks {
                out.checks.entry(c.key).or_insert(c.value);
            }
            if use_mounts {
                for m in recs.mounts {
                    out.mounts.entry(m.id.clone()).or_insert(m);
                }
            }
            for l in manifest["layers"].as_array().into_iter().flatten() {
                if let Some(d) = l["digest"].as_str().and_then(|s| Digest::parse(s).ok()) {
                    let size = l["size"].as_u64().unwrap_or_default();
                    let mt = l["mediaType"].as_str().unwrap_or_default().to_string();
                    source.listed.entry(d).or_insert((i, size, mt));
                }
            }
        }
        out.source = Arc::new(source);
        Ok(out)
    }

    /// A layer check's result the imported caches carry (see
    /// [`crate::elfcheck`]), by its record key.
    pub fn check_record(&self, key: &str) -> Option<&str> {
        self.checks.get(key).map(String::as_str)
    }

    /// The blob of cache mount `id`, when an imported cache holds it.
    pub fn mount(&self, id: &str) -> Option<&MountBlob> {
        self.mounts.get(id)
    }

    /// Reads a blob the imported caches list (counted like every read from
    /// the cache); the caller verifies it.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        self.source.open(digest)
    }

    /// Number of imported records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Where missing blobs come from: give it to the store
    /// ([`Store::with_blob_source`]).
    pub fn source(&self) -> Arc<ImportSource> {
        self.source.clone()
    }

    /// The imported content digest of what a copy selects (they name no
    /// data), so copies out of an imported stage need not read it. Kept in
    /// memory: writing them as local records would put fsyncs on a fresh
    /// runner's path for results the next import brings again.
    pub fn content_digest(&self, key: &Digest) -> Option<Digest> {
        self.content.get(key).copied()
    }

    /// The imported result of `key`, when every blob it names is in the
    /// store or listed by the cache it came from. Nothing is read or even
    /// looked at in the cache: a hit whose blobs no step reads costs
    /// nothing.
    pub fn lookup(&self, key: &Digest, store: &Store) -> Option<Ref> {
        let r = self.records.get(&key.to_string())?;
        let readable = |s: &str| {
            Digest::parse(s)
                .is_ok_and(|d| self.source.listed.contains_key(&d) || store.can_read_blob(&d))
        };
        let ok = r.config.as_deref().is_none_or(readable)
            && r.layers
                .iter()
                .all(|l| l.dir.is_none() && readable(&l.digest));
        ok.then(|| r.clone())
    }
}

#[cfg(test)]
impl CacheImport {
    /// An import whose only content is `mounts`, their blobs in the OCI
    /// layout `dir`.
    pub(crate) fn of_mounts(dir: &Path, mounts: Vec<MountBlob>) -> CacheImport {
        let mut source = ImportSource {
            remotes: vec![Remote::Dir(dir.to_path_buf())],
            ..ImportSource::default()
        };
        for m in &mounts {
            let d = Digest::parse(&m.digest).expect("a digest");
            source.listed.insert(d, (0, m.size, m.media_type.clone()));
        }
        CacheImport {
            mounts: mounts.into_iter().map(|m| (m.id.clone(), m)).collect(),
            source: Arc::new(source),
            ..CacheImport::default()
        }
    }
}

/// Copies every blob of `r` into the store (the final image's layers after
/// a build that imported them), a few at a time: each copy ends in fsyncs
/// the others can overlap.
pub fn fetch_ref(store: &Store, r: &Ref) -> Result<(), kiln_store::StoreError> {
    let missing: Vec<Digest> = r
        .layers
        .iter()
        .filter(|l| l.has_blob())
        .map(|l| l.digest.as_str())
        .chain(r.config.as_deref())
        .filter_map(|s| Digest::parse(s).ok())
        .filter(|d| !store.has_blob(d))
        .collect();
    for group in missing.chunks(4) {
        std::thread::scope(|s| {
            let copies: Vec<_> = group
                .iter()
                .map(|d| s.spawn(move || store.ensure_blob(d)))
                .collect();
            copies
                .into_iter()
                .try_for_each(|c| c.join().expect("a blob copy panicked"))
        })?;
    }
    Ok(())
}

/// What an export did.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    pub records: usize,
    pub blobs_written: usize,
    pub bytes_written: u64,
    pub blobs_present: usize,
    pub blobs_removed: usize,
}

/// The vertices of the final image's own chain: from the root down its
/// first input (the filesystem an exec or file op changes), through every
/// input of a merge; not the stages copies read from.
fn final_chain(def: &Definition) -> HashSet<Digest> {
    let by: HashMap<Digest, &kiln_dag::Vertex> =
        def.vertices.iter().map(|v| (v.digest, v)).collect();
    let mut out = HashSet::new();
    let mut todo = vec![def.root];
    while let Some(d) = todo.pop() {
        if !out.insert(d) {
            continue;
        }
        let Some(v) = by.get(&d) else { continue };
        match &v.op {
            Op::Merge(_) => todo.extend(v.inputs.iter().copied()),
            Op::Source(_) => {}
            _ => todo.extend(v.inputs.first().copied()),
        }
    }
    out
}

fn without_dirs(r: &Ref) -> Ref {
    Ref {
        layers: r
            .layers
            .iter()
            .map(|l| LayerRef {
                dir: None,
                ..l.clone()
            })
            .collect(),
        config: r.config.clone(),
    }
}

/// A temp file next to `dest`, renamed over it by [`Tmp::persist`] and
/// removed if dropped before. World-readable: a cache is shared between
/// users and runners.
struct Tmp {
    path: PathBuf,
    file: fs::File,
    done: bool,
}

impl Tmp {
    fn new(dest: &Path) -> io::Result<Tmp> {
        use std::os::unix::fs::OpenOptionsExt;
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            ".kiln-tmp-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = dest.with_file_name(name);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)?;
        Ok(Tmp {
            path,
            file,
            done: false,
        })
    }

    fn persist(mut self, dest: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.path, dest)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `bytes` to `path` through a temp file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheIoError> {
    let werr = |source| CacheIoError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = Tmp::new(path).map_err(werr)?;
    tmp.file.write_all(bytes).map_err(werr)?;
    tmp.persist(path).map_err(werr)
}

/// Copies a blob of the store into the layout unless it is there already.
fn put_blob(
    store: &Store,
    dir: &Path,
    d: &Digest,
    stats: &mut ExportStats,
) -> Result<(), CacheIoError> {
    let dest = blob_file(dir, d);
    if dest.is_file() {
        stats.blobs_present += 1;
        return Ok(());
    }
    let werr = |source| CacheIoError::Write {
        path: dest.clone(),
        source,
    };
    let mut src = store.open_blob(d).map_err(|e| CacheIoError::Export {
        key: d.to_string(),
        reason: e.to_string(),
    })?;
    let mut tmp = Tmp::new(&dest).map_err(werr)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = src.read(&mut buf).map_err(werr)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        tmp.file.write_all(&buf[..k]).map_err(werr)?;
        n += k as u64;
    }
    if hex::encode(h.finalize()) != d.hex() {
        return Err(CacheIoError::Export {
            key: d.to_string(),
            reason:
                "the store's copy of the blob does not match its digest: run `kiln cache check`"
                    .into(),
        });
    }
    tmp.persist(&dest).map_err(werr)?;
    stats.blobs_written += 1;
    stats.bytes_written += n;
    Ok(())
}

/// What an export writes: the records blob, the manifest naming it and
/// every blob the records need (digest -> media type, size).
struct Plan {
    records: usize,
    rec_bytes: Vec<u8>,
    blobs: BTreeMap<Digest, (String, u64)>,
    /// cache mount blobs -> the mount id, for the manifest's annotation
    mount_ids: BTreeMap<Digest, String>,
}

impl Plan {
    fn manifest(&self) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = self
            .blobs
            .iter()
            .map(|(d, (mt, size))| match self.mount_ids.get(d) {
                Some(id) => serde_json::json!({
                    "mediaType": mt,
                    "digest": d.to_string(),
                    "size": size,
                    "annotations": { MOUNT_ID_ANNOTATION: id },
                }),
                None => {
                    serde_json::json!({ "mediaType": mt, "digest": d.to_string(), "size": size })
                }
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": CACHE_ARTIFACT,
            "config": {
                "mediaType": RECORDS_MEDIA_TYPE,
                "digest": Digest::of(&self.rec_bytes).to_string(),
                "size": self.rec_bytes.len(),
            },
            "layers": layers,
        });
        serde_json::to_vec(&manifest).expect("manifest serializes")
    }
}

/// Collects the records and blobs of a finished build: each of `builds` is
/// one solved graph (a multi-platform build has one per platform) with the
/// solver's reports (vertex and key of every step); a step they share is
/// one record. Results come from the store's records, else from `import`.
/// In `max` mode, directory layers of builder stages are committed to
/// blobs now.
fn plan(
    store: &Store,
    builds: &[(&Definition, &[StepReport])],
    import: Option<&CacheImport>,
    mode: Mode,
    cache_mounts: bool,
) -> Result<Plan, CacheIoError> {
    let snaps = Snapshots::new(store.clone(), std::env::current_exe().ok());
    let result_of = |key: &Digest| -> Option<Ref> {
        store
            .get_record("build-cache", key.as_bytes())
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Ref>(&b).ok())
            .filter(|r| r.complete(store))
            .or_else(|| import.and_then(|i| i.lookup(key, store)))
    };
    let mut records: BTreeMap<String, Ref> = BTreeMap::new();
    let mut blobs: BTreeMap<Digest, (String, u64)> = BTreeMap::new();
    // local (as solved) and exported (blob) form of each exported result
    let mut forms: HashMap<Digest, (Ref, Ref)> = HashMap::new();
    let mut checks = BTreeSet::new();
    for (def, steps) in builds {
        let keep: Option<HashSet<Digest>> = (mode == Mode::Min).then(|| final_chain(def));
        for s in steps.iter() {
            if keep.as_ref().is_some_and(|k| !k.contains(&s.vertex))
                || forms.contains_key(&s.vertex)
            {
                continue;
            }
            let Some(local) = result_of(&s.key) else {
                tracing::debug!(key = %s.key, "no result to export");
                continue;
            };
            let eerr = |reason: String| CacheIoError::Export {
                key: s.key.to_string(),
                reason,
            };
            let committed =
                crate::commit::commit_ref(&snaps, &local).map_err(|e| eerr(crate::chain(&e)))?;
            let exported = without_dirs(&committed);
            for l in &exported.layers {
                let d = Digest::parse(&l.digest).map_err(|e| eerr(crate::chain(&e)))?;
                blobs.insert(d, (l.media_type.clone(), l.size));
                // checked here, or carried over from the cache a fresh runner
                // imported (a re-export must not drop it)
                let key = crate::elfcheck::record_key(&l.digest);
                let value = crate::elfcheck::local_record(store, &key)
                    .or_else(|| import.and_then(|i| i.check_record(&key).map(str::to_string)));
                if let Some(value) = value {
                    checks.insert(CheckEntry { key, value });
                }
            }
            if let Some(c) = exported
                .config
                .as_deref()
                .and_then(|c| Digest::parse(c).ok())
            {
                // configs are small: have it here to know its size
                store.ensure_blob(&c).map_err(|e| eerr(crate::chain(&e)))?;
                let size = store.blob_size(&c).map_err(|e| eerr(crate::chain(&e)))?;
                blobs.insert(c, (CONFIG_MEDIA_TYPE.to_string(), size));
            }
            records.insert(s.key.to_string(), exported.clone());
            forms.insert(s.vertex, (local, exported));
        }
    }
    // Content digests of what copies select from exported results, under
    // the key the importer will compute (from the blob form of the chain).
    let mut content = BTreeSet::new();
    for v in builds.iter().flat_map(|(def, _)| &def.vertices) {
        for (i, dep) in cache_map(v).deps.iter().enumerate() {
            let Dep::Content(sels) = dep else { continue };
            let Some((local, exported)) = v.inputs.get(i).and_then(|d| forms.get(d)) else {
                continue;
            };
            for sel in sels {
                let known = [local, exported].into_iter().find_map(|r| {
                    store
                        .get_record(
                            "content-digest",
                            crate::content_digest_key(r, sel).as_bytes(),
                        )
                        .ok()
                        .flatten()
                        .and_then(|b| String::from_utf8(b).ok())
                });
                // a fresh runner keeps what it imported in memory only
                let known = known.or_else(|| {
                    let key = crate::content_digest_key(exported, sel);
                    Some(import?.content_digest(&key)?.to_string())
                });
                if let Some(d) = known {
                    content.insert(ContentEntry {
                        key: crate::content_digest_key(exported, sel).to_string(),
                        digest: d.trim().to_string(),
                    });
                }
            }
        }
    }
    let mounts = if cache_mounts {
        let ids = (builds.iter())
            .flat_map(|(def, _)| mount_ids(def))
            .collect();
        export_mounts(store, ids, import)
    } else {
        Vec::new()
    };
    let mut mount_ids = BTreeMap::new();
    for m in &mounts {
        if let Ok(d) = Digest::parse(&m.digest) {
            blobs.insert(d, (m.media_type.clone(), m.size));
            mount_ids.entry(d).or_insert_with(|| m.id.clone());
        }
    }
    let recs = Records {
        version: 1,
        records: records
            .into_iter()
            .map(|(key, result)| RecordEntry { key, result })
            .collect(),
        content: content.into_iter().collect(),
        mounts,
        checks: checks.into_iter().collect(),
    };
    Ok(Plan {
        records: recs.records.len(),
        rec_bytes: serde_json::to_vec(&recs).expect("records serialize"),
        blobs,
        mount_ids,
    })
}

/// The ids of the cache mounts the `run` steps of `def` use, sorted.
fn mount_ids(def: &Definition) -> BTreeSet<String> {
    def.vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::Exec(e) => Some(e.mounts.iter()),
            _ => None,
        })
        .flatten()
        .filter_map(|m| match &m.kind {
            kiln_dag::MountKind::Cache { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// The cache mounts the build's steps use, as blobs in the store: the
/// local mount when it has content, else the imported cache's copy (a
/// build whose steps were all CACHED never filled it here). A mount that
/// cannot be read is left out with a warning: a cache is an optimisation.
fn export_mounts(
    store: &Store,
    ids: BTreeSet<String>,
    import: Option<&CacheImport>,
) -> Vec<MountBlob> {
    let mut out = Vec::new();
    for id in ids {
        match crate::cache_mount::export_mount(store, &id) {
            Ok(Some(b)) => {
                out.push(b);
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}; the imported copy is exported instead, if there is one"),
        }
        if let Some(b) = import.and_then(|i| i.mount(&id)) {
            tracing::debug!(%id, "cache mount not filled here: exporting the imported one");
            out.push(b.clone());
        } else {
            tracing::debug!(%id, "cache mount is empty: nothing to export");
        }
    }
    out
}

/// Exports the cache of a finished build to `spec` (a directory or a
/// registry tag; `settings` reach the registry) as one cache: `builds` are
/// its solved graphs (one per platform of a multi-platform build) with the
/// solver's reports; results come from the store's records, else from
/// `import`.
pub fn export(
    store: &Store,
    builds: &[(&Definition, &[StepReport])],
    import: Option<&CacheImport>,
    spec: &CacheSpec,
    settings: &kiln_registry::Settings,
) -> Result<ExportStats, CacheIoError> {
    match spec {
        CacheSpec::Local {
            dir,
            mode,
            cache_mounts,
        } => {
            let p = plan(store, builds, import, *mode, *cache_mounts)?;
            write_local(store, &p, dir)
        }
        CacheSpec::Registry {
            reference,
            mode,
            cache_mounts,
        } => {
            let p = plan(store, builds, import, *mode, *cache_mounts)?;
            write_registry(store, &p, reference, settings)
        }
    }
}

/// Writes the plan into the OCI layout `dir`: only the blobs it lacks, then
/// `index.json`; then removes the blobs only the previous cache named.
fn write_local(store: &Store, p: &Plan, dir: &Path) -> Result<ExportStats, CacheIoError> {
    let blobs_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs_dir).map_err(|source| CacheIoError::Write {
        path: blobs_dir.clone(),
        source,
    })?;
    // One export into a directory at a time: an export removes what only
    // the previous index named, which a concurrent one may be reusing.
    let lock_path = dir.join(".kiln-lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| CacheIoError::Write {
            path: lock_path.clone(),
            source,
        })?;
    // flock(2): released when the file closes (or kiln dies)
    loop {
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(CacheIoError::Write {
                    path: lock_path,
                    source: e.into(),
                });
            }
        }
    }
    let mut stats = ExportStats {
        records: p.records,
        ..ExportStats::default()
    };
    for d in p.blobs.keys() {
        put_blob(store, dir, d, &mut stats)?;
    }
    let rec_digest = Digest::of(&p.rec_bytes);
    let man_bytes = p.manifest();
    let man_digest = Digest::of(&man_bytes);
    for (d, bytes) in [(&rec_digest, &p.rec_bytes), (&man_digest, &man_bytes)] {
        let path = blob_file(dir, d);
        if path.is_file() {
            stats.blobs_present += 1;
        } else {
            write_atomic(&path, bytes)?;
            stats.blobs_written += 1;
            stats.bytes_written += bytes.len() as u64;
        }
    }
    // What the previous cache named and this one does not goes once the
    // new index is in place (a killed export leaves the old index and
    // extra blobs, never an index naming missing ones).
    let previous = read_cache(dir).ok().flatten();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": CACHE_ARTIFACT,
            "digest": man_digest.to_string(),
            "size": man_bytes.len(),
            "annotations": { REF_NAME_KEY: REF_NAME },
        }],
    });
    let mut index_bytes = serde_json::to_vec_pretty(&index).expect("index serializes");
    index_bytes.push(b'\n');
    let layout = dir.join("oci-layout");
    if !layout.is_file() {
        write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    let index_path = dir.join("index.json");
    if fs::read(&index_path).ok().as_deref() != Some(&index_bytes[..]) {
        write_atomic(&index_path, &index_bytes)?;
    }
    if let Some((old_md, old_manifest, _)) = previous
        && old_md != man_digest
    {
        let mut now: HashSet<Digest> = p.blobs.keys().cloned().collect();
        now.insert(rec_digest);
        now.insert(man_digest);
        let mut old: Vec<Digest> = vec![old_md];
        for x in std::iter::once(&old_manifest["config"])
            .chain(old_manifest["layers"].as_array().into_iter().flatten())
        {
            if let Some(d) = x["digest"].as_str().and_then(|s| Digest::parse(s).ok()) {
                old.push(d);
            }
        }
        for d in old.into_iter().filter(|d| !now.contains(d)) {
            if fs::remove_file(blob_file(dir, &d)).is_ok() {
                stats.blobs_removed += 1;
            }
        }
    }
    drop(lock);
    Ok(stats)
}

/// Pushes the plan under the tag `reference`: blobs the repository lacks
/// (asked with HEAD first; only those are read, and fetched from an
/// imported cache if need be), the records blob, then the manifest.
fn write_registry(
    store: &Store,
    p: &Plan,
    reference: &str,
    settings: &kiln_registry::Settings,
) -> Result<ExportStats, CacheIoError> {
    let rerr = |reason: String| CacheIoError::Registry {
        reference: reference.to_string(),
        reason,
    };
    let parsed = kiln_registry::Reference::parse(reference).map_err(|e| rerr(crate::chain(&e)))?;
    let tag = parsed.tag().unwrap_or("latest").to_string();
    let client =
        kiln_registry::Client::new(settings.clone()).map_err(|e| rerr(crate::chain(&e)))?;
    let ep = settings.origin(parsed.registry(), parsed.repository());
    // the records blob goes through the store like every pushed blob
    let rec_digest = store
        .put_blob(&p.rec_bytes)
        .map_err(|e| rerr(crate::chain(&e)))?;
    let mut all: Vec<Digest> = p.blobs.keys().cloned().collect();
    all.push(rec_digest);
    let missing = block_on(async {
        let mut missing = Vec::new();
        for d in &all {
            if !client.blob_exists(&ep, d).await? {
                missing.push(*d);
            }
        }
        Ok::<_, kiln_registry::RegistryError>(missing)
    })
    .map_err(|e| rerr(crate::chain(&e)))?
    .map_err(|e| rerr(crate::chain(&e)))?;
    let mut stats = ExportStats {
        records: p.records,
        blobs_present: all.len() - missing.len(),
        ..ExportStats::default()
    };
    // Outside any runtime: a blob only an imported cache has is fetched now.
    for d in &missing {
        store.ensure_blob(d).map_err(|e| rerr(crate::chain(&e)))?;
        stats.bytes_written += store.blob_size(d).unwrap_or_default();
    }
    let man_bytes = p.manifest();
    block_on(async {
        for d in &missing {
            client.push_blob(&ep, store, d, &[]).await?;
        }
        client
            .put_manifest(&ep, &tag, &man_bytes, MANIFEST_MEDIA_TYPE)
            .await?;
        Ok::<_, kiln_registry::RegistryError>(())
    })
    .map_err(|e| rerr(crate::chain(&e)))?
    .map_err(|e| rerr(crate::chain(&e)))?;
    stats.blobs_written = missing.len();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    /// Each mistake is its own kind, and the message says what to write.
    #[test]
    fn cache_spec_errors_are_typed_and_say_what_to_write() {
        let err = |spec: &str, export: bool| match CacheSpec::parse(spec, export) {
            Err(CacheIoError::Spec { source, .. }) => *source,
            other => panic!("{spec}: {other:?}"),
        };
        assert!(matches!(
            err("type=s3,bucket=b", true),
            CacheSpecError::UnknownType { kind, .. } if kind == "s3"
        ));
        assert!(matches!(err("dest=d", true), CacheSpecError::NoType { .. }));
        assert!(matches!(
            err("type=local", false),
            CacheSpecError::Missing { key: "src", .. }
        ));
        assert!(matches!(
            err("type=local,dest=d,mode=all", true),
            CacheSpecError::UnknownMode { .. }
        ));
        assert!(matches!(
            err("type=local,dest=d,cache-mounts=yes", true),
            CacheSpecError::CacheMounts { verb: "export", .. }
        ));
        assert!(matches!(
            err("type=local,dest=d,colour=red", true),
            CacheSpecError::UnknownOption { key, .. } if key == "colour"
        ));
        assert!(matches!(
            err("type=local,src=d,mode=max", false),
            CacheSpecError::ModeOnImport
        ));
        assert!(matches!(
            err("type=registry,ref=localhost:0/x", true),
            CacheSpecError::Reference(_)
        ));
        assert!(matches!(err("type", true), CacheSpecError::Fields(_)));
        // what the CLI shows: the spec, then why, with the form to write
        let e = CacheSpec::parse("type=local", true).unwrap_err();
        assert_eq!(
            kiln_types::error_chain(&e),
            "invalid cache spec `type=local`: no `dest=DIR`: use `type=local,dest=DIR[,mode=min|max][,cache-mounts=true]` or `type=registry,ref=REF[,mode=min|max][,cache-mounts=true]`"
        );
    }

    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            CacheSpec::parse("type=local,dest=/c,mode=max", true).unwrap(),
            CacheSpec::Local {
                dir: "/c".into(),
                mode: Mode::Max,
                cache_mounts: false,
            }
        );
        assert_eq!(
            CacheSpec::parse("type=local,src=c", false).unwrap(),
            CacheSpec::Local {
                dir: "c".into(),
                mode: Mode::Min,
                cache_mounts: true,
            }
        );
        assert_eq!(
            CacheSpec::parse("type=local,src=c,cache-mounts=false", false).unwrap(),
            CacheSpec::Local {
                dir: "c".into(),
                mode: Mode::Min,
                cache_mounts: false,
            }
        );
        assert_eq!(
            CacheSpec::parse(
                "type=registry,ref=127.0.0.1:5000/app:cache,mode=max,cache-mounts=true",
                true
            )
            .unwrap(),
            CacheSpec::Registry {
                reference: "127.0.0.1:5000/app:cache".into(),
                mode: Mode::Max,
                cache_mounts: true,
            }
        );
        for bad in [
            "type=local",
            "type=registry,dest=x",
            "type=registry,ref=UPPER CASE",
            "type=s3,dest=x",
            "dest=x",
            "type=local,dest=x,mode=mid",
            "type=local,dest=x,color=red",
            "type=local,src=x",
            "type=local,dest=x,cache-mounts=yes",
        ] {
            let e = CacheSpec::parse(bad, true).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        // the reason is the error's source (the CLI shows the chain)
        let e = kiln_types::error_chain(
            &CacheSpec::parse("type=local,dest=x,cache-mounts=1", true).unwrap_err(),
        );
        assert!(
            e.contains("`cache-mounts=1` is not `true` or `false`")
                && e.contains("write `cache-mounts=true`"),
            "{e}"
        );
    }

    #[test]
    fn records_without_mounts_read_and_write_as_before() {
        let old = br#"{"version":1,"records":[],"content":[]}"#;
        let r: Records = serde_json::from_slice(old).unwrap();
        assert!(r.mounts.is_empty());
        assert_eq!(serde_json::to_vec(&r).unwrap(), old);
    }
}
