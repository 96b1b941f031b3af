//! kiln's local worker: performs each build op for the solver on top of the
//! store, kiln-layer, kiln-oci, the registry client and the rootless
//! runtime.
//!
//! Results are layer chains ([`Ref`]): sources resolve to the layers of an
//! image (or of the build context), every file op adds exactly one layer
//! built in a fresh directory, and every exec step adds the layer of its
//! overlay upper directory. Every layer is a directory under
//! `KILN_HOME/snapshots/` ([`snapshot`]): image layers are extracted once per
//! diff_id; exec and file-op results stay directories (no tar, no
//! compression) until an image that contains them is assembled
//! ([`commit`]). Exec steps mount the chain's directories as overlay lowers;
//! copies and content digests read them through [`union::Union`]. Cache
//! records map a solver key to a serialized [`Ref`] and count only while
//! every blob and directory they name is still there. [`assemble`] turns the
//! final chain plus the definition's config into an image.

mod assemble;
mod bind;
pub mod binfmt;
pub mod cache_io;
pub mod cache_mount;
pub mod commit;
pub mod context;
pub mod elfcheck;
pub mod entrycheck;
mod exec;
pub mod fileop;
pub mod gc;
mod image;
pub mod ldconf;
pub mod lock;
pub mod mounts;
pub mod named;
pub mod packages;
pub mod patterns;
pub mod secrets;
pub mod select;
pub mod snapshot;
mod source;
pub mod ssh;
mod stale;
pub mod union;
pub mod unpack;

// errors kept as text (the solver's `WorkerError`, cache and check
// messages) keep their causes
pub(crate) use kiln_types::error_chain as chain;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_dag::{Digest, Op, SourceOp, Vertex};
use kiln_oci::Store;
use kiln_solver::{Selector, StepContext, WorkerError};

pub use assemble::{AssembleError, assemble};
pub use commit::commit;
pub use image::{ImageLookup, PullError};
pub use snapshot::{LayerRef, Ref};

/// When an `image(..)` source goes to its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Use a local tag when there is one; pull otherwise.
    #[default]
    Missing,
    /// Always ask the registry for the current manifest.
    Always,
    /// Never touch the network; a missing image is an error.
    Never,
}

/// How the worker reaches the world.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The build context directory.
    pub context: PathBuf,
    pub pull: PullPolicy,
    pub registry: kiln_registry::Settings,
    pub platform: kiln_registry::Platform,
    /// SOURCE_DATE_EPOCH: mtimes of new files and image `created`.
    pub epoch: i64,
    /// The executable re-executed as the sandbox helper (the kiln binary).
    pub helper: PathBuf,
    /// Kill a `run` step after this long.
    pub step_timeout: Option<Duration>,
    /// `--secret` values by id, for secret mounts of `run` steps.
    pub secrets: secrets::Secrets,
    /// The `--ssh` agents steps may mount.
    pub ssh: ssh::SshAgents,
    /// `--build-context` images by normalized name (`named.rs`).
    pub named: std::collections::BTreeMap<String, named::NamedContext>,
    /// `Kilnfile.lock`: image tags and package sets it pins resolve to what
    /// it says, with no registry or repository index asked.
    pub lock: Option<Arc<kiln_lock::Lockfile>>,
}

/// Failures of a step, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    File(#[from] fileop::FileOpError),
    #[error(transparent)]
    Context(#[from] context::ContextError),
    #[error("cannot use the store: {0}")]
    Store(String),
    #[error("image `{reference}`: {reason}")]
    Image { reference: String, reason: String },
    /// A registry's failure, kept whole so the CLI can say what to do.
    #[error("image `{reference}`")]
    Pull {
        reference: String,
        #[source]
        source: Box<kiln_registry::RegistryError>,
    },
    #[error("image `{reference}` is not in the local store and `--pull=never` forbids pulling it")]
    NotLocal { reference: String },
    #[error("local image source `{path}`: {reason}")]
    Local { path: String, reason: String },
    #[error("the static base: {0}")]
    StaticBase(String),
    #[error(transparent)]
    Packages(Box<packages::PackagesError>),
    #[error("the build context `{path}` changed while the build read it: build again")]
    ContextChanged { path: String },
    #[error("`{command}` exited with {status}\n{tail}")]
    ExecFailed {
        command: String,
        status: String,
        tail: String,
    },
    #[error("`{command}`: {error}")]
    Mount {
        command: String,
        error: Box<mounts::MountError>,
    },
    #[error("cannot run `{command}`: {reason}")]
    Sandbox { command: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("the step was cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

/// The local worker. Cheap to share: the solver holds it in an `Arc`.
pub struct LocalWorker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    snaps: snapshot::Snapshots,
    /// shared `worker-tmp` lock, held while the worker lives
    _tmp_lock: Option<std::fs::File>,
    opts: WorkerOptions,
    /// Source vertices resolved by `source_key`, for `execute` to reuse.
    resolved: Mutex<HashMap<Digest, Ref>>,
    /// Keys `source_key` computed without resolving (the context), for
    /// `execute` to check that what it writes is what was keyed.
    source_keys: Mutex<HashMap<Digest, Digest>>,
    /// `--cache-from`: results looked up when the store has none
    import: std::sync::OnceLock<Arc<cache_io::CacheImport>>,
    /// The context's ignore file, compiled by the first context source.
    ignore: std::sync::OnceLock<patterns::Patterns>,
}

const RECORD_KIND: &str = "build-cache";

impl LocalWorker {
    pub fn new(store: Store, opts: WorkerOptions) -> Self {
        let tmp_lock = snapshot::clean_stale_tmp(&store, Some(&opts.helper));
        LocalWorker {
            inner: Arc::new(Inner {
                snaps: snapshot::Snapshots::new(store.clone(), Some(opts.helper.clone())),
                _tmp_lock: tmp_lock,
                store,
                opts,
                resolved: Mutex::new(HashMap::new()),
                source_keys: Mutex::new(HashMap::new()),
                import: std::sync::OnceLock::new(),
                ignore: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Results from an imported cache (`--cache-from`) for the keys the
    /// store has no record of. Set once, before solving.
    pub fn set_cache_import(&self, import: Arc<cache_io::CacheImport>) {
        let _ = self.inner.import.set(import);
    }

    /// The layer directories this worker reads and writes.
    pub fn snapshots(&self) -> &snapshot::Snapshots {
        &self.inner.snaps
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, WorkerError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| Box::new(e) as WorkerError),
        Err(e) => Err(Box::new(Error::Internal(format!(
            "a worker task died: {e}"
        )))),
    }
}

fn dag_digest(d: &kiln_oci::Digest) -> Result<Digest, Error> {
    d.to_string()
        .parse()
        .map_err(|e| Error::Internal(format!("digest {d}: {e}")))
}

impl Inner {
    /// The solver's lookup, for keys without special cases.
    fn lookup_key(&self, key: &Digest) -> Result<Option<Ref>, Error> {
        let local = self
            .store
            .get_record(RECORD_KIND, key.as_bytes())
            .map_err(|e| Error::Store(crate::chain(&e)))?
            // A damaged or dangling record is a miss, not an error.
            .and_then(|bytes| serde_json::from_slice::<Ref>(&bytes).ok())
            .filter(|r| r.complete(&self.store));
        if local.is_some() {
            // for `kiln cache prune --filter until=`: still in use
            self.store.touch_record(RECORD_KIND, key.as_bytes());
        }
        Ok(local.or_else(|| self.import.get()?.lookup(key, &self.store)))
    }

    /// The static base's lookup: a hit whose config blob is not here (an
    /// imported cache) gets it written from the layer's description, as
    /// the base's synthesis would, so assembling the final image reads no
    /// more than its layers from the cache (the config is only read from
    /// the cache if this kiln would write another one).
    fn lookup_static_base(&self, key: &Digest) -> Result<Option<Ref>, Error> {
        let Some(r) = self.lookup_key(key)? else {
            return Ok(None);
        };
        let config = r
            .config
            .as_deref()
            .and_then(|c| kiln_oci::Digest::parse(c).ok());
        if let (Some(c), [layer]) = (config, r.layers.as_slice())
            && !self.store.has_blob(&c)
            && let Ok(layer) = layer.to_layer()
        {
            let img = kiln_oci::static_base::image_with_layer(layer, self.opts.epoch);
            match img.commit(&self.store.without_blob_sources()) {
                Ok(img) if img.config_digest == c => {}
                Ok(img) => tracing::debug!(
                    wanted = %c, wrote = %img.config_digest,
                    "the cached static base has another config: reading it from the cache"
                ),
                Err(e) => tracing::debug!(error = %e, "cannot write the static base config"),
            }
        }
        Ok(Some(r))
    }

    fn put_record(&self, kind: &str, key: &Digest, r: &Ref) -> Result<(), Error> {
        let bytes = serde_json::to_vec(r).map_err(|e| Error::Internal(crate::chain(&e)))?;
        self.store
            .put_record(kind, key.as_bytes(), &bytes)
            .map_err(|e| Error::Store(crate::chain(&e)))
    }
}

/// The `content-digest` record key of what `sel` selects in the chain `r`
/// (also how exported caches name content digests).
pub fn content_digest_key(r: &Ref, sel: &Selector) -> Digest {
    let mut e = kiln_dag::canonical::Encoder::new();
    e.tag("kiln-content-digest/v1");
    e.str(&r.chain_id());
    e.str(&sel.path);
    e.strs(&sel.include);
    e.strs(&sel.exclude);
    // Encoded only when set: the records of every other selection keep
    // their keys.
    for (set, tag) in [(sel.owners, "owners"), (sel.follow, "follow")] {
        if set {
            e.tag(tag);
        }
    }
    Digest::of(&e.into_bytes())
}

impl kiln_solver::Worker for LocalWorker {
    type Ref = Ref;

    fn source_key(
        &self,
        vertex: &Vertex,
        _cx: &StepContext,
    ) -> impl Future<Output = Result<Digest, WorkerError>> + Send {
        let inner = self.inner.clone();
        let v = vertex.clone();
        async move {
            blocking(move || {
                let Op::Source(src) = &v.op else {
                    return Err(Error::Internal("source_key of a non-source".into()));
                };
                // The static base is synthesized and the context's layer
                // written by `execute`, on a miss only: a fully cached build
                // (a fresh runner importing a cache) compresses neither.
                match src {
                    SourceOp::StaticBase { revision } => {
                        return Ok(source::static_base_key(*revision, inner.opts.epoch));
                    }
                    SourceOp::Context { .. } => {
                        let key = inner.context_key(src)?.0;
                        inner
                            .source_keys
                            .lock()
                            .map_err(|_| Error::Internal("source keys lock".into()))?
                            .insert(v.digest, key);
                        return Ok(key);
                    }
                    _ => {}
                }
                let (key, r) = inner.resolve_source(src)?;
                inner
                    .resolved
                    .lock()
                    .map_err(|_| Error::Internal("resolved lock".into()))?
                    .insert(v.digest, r);
                Ok(key)
            })
            .await
        }
    }

    fn content_digest(
        &self,
        input: &Ref,
        selector: &Selector,
    ) -> impl Future<Output = Result<Digest, WorkerError>> + Send {
        let inner = self.inner.clone();
        let r = input.clone();
        let sel = selector.clone();
        async move {
            blocking(move || {
                // A chain is immutable, so what a selector selects in it is
                // too: remember the digest instead of re-reading the bytes.
                let rkey = content_digest_key(&r, &sel);
                if let Some(d) = inner
                    .store
                    .get_record("content-digest", rkey.as_bytes())
                    .ok()
                    .flatten()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.parse::<Digest>().ok())
                {
                    return Ok(d);
                }
                if let Some(d) = inner.import.get().and_then(|i| i.content_digest(&rkey)) {
                    return Ok(d);
                }
                let digest = |merged| -> Result<Digest, Error> {
                    let root = fileop::view(&inner.snaps, &r, merged)?;
                    Ok(fileop::content_digest(&root, &sel)?)
                };
                // Rootless, a step's private directories of other container
                // users are read through a merged tree instead.
                let d = match digest(false) {
                    Err(e) if fileop::denied(&e) && !rustix::process::geteuid().is_root() => {
                        digest(true)?
                    }
                    r => r?,
                };
                inner
                    .store
                    .put_record("content-digest", rkey.as_bytes(), d.to_string().as_bytes())
                    .map_err(|e| Error::Store(crate::chain(&e)))?;
                Ok(d)
            })
            .await
        }
    }

    fn lookup(
        &self,
        vertex: &Vertex,
        key: &Digest,
    ) -> impl Future<Output = Result<Option<Ref>, WorkerError>> + Send {
        let inner = self.inner.clone();
        let key = *key;
        let static_base = matches!(vertex.op, Op::Source(SourceOp::StaticBase { .. }));
        async move {
            blocking(move || {
                if static_base {
                    return inner.lookup_static_base(&key);
                }
                inner.lookup_key(&key)
            })
            .await
        }
    }

    fn execute(
        &self,
        vertex: &Vertex,
        key: &Digest,
        inputs: Vec<Ref>,
        cx: &StepContext,
    ) -> impl Future<Output = Result<Ref, WorkerError>> + Send {
        let inner = self.inner.clone();
        let v = vertex.clone();
        let key = *key;
        let cx = cx.clone();
        async move {
            let cancel = Arc::new(AtomicBool::new(false));
            let watcher = {
                let cancel = cancel.clone();
                let token = cx.cancel.clone();
                tokio::spawn(async move {
                    token.cancelled().await;
                    cancel.store(true, Ordering::SeqCst);
                })
            };
            let r = blocking(move || {
                let r = match &v.op {
                    Op::Source(src) => {
                        let pre = inner
                            .resolved
                            .lock()
                            .map_err(|_| Error::Internal("resolved lock".into()))?
                            .remove(&v.digest);
                        match pre {
                            Some(r) => r,
                            None => {
                                let (k, r) = inner.resolve_source(src)?;
                                let keyed = inner
                                    .source_keys
                                    .lock()
                                    .map_err(|_| Error::Internal("source keys lock".into()))?
                                    .remove(&v.digest);
                                // the layer must hold what the key says
                                if keyed.is_some_and(|keyed| keyed != k) {
                                    return Err(Error::ContextChanged {
                                        path: inner.opts.context.display().to_string(),
                                    });
                                }
                                r
                            }
                        }
                    }
                    Op::File(f) => fileop::run(&inner.snaps, f, &inputs, inner.opts.epoch)?,
                    Op::Exec(x) => inner.exec(x, &key, &inputs, &cx, &cancel)?,
                    Op::Merge(_) => {
                        let mut out = inputs.first().cloned().unwrap_or_default();
                        for i in inputs.iter().skip(1) {
                            out.layers.extend(i.layers.iter().cloned());
                        }
                        out
                    }
                };
                inner.put_record(RECORD_KIND, &key, &r)?;
                Ok(r)
            })
            .await;
            watcher.abort();
            r
        }
    }
}
