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

pub mod binfmt;
pub mod cache_io;
pub mod context;
pub mod elfcheck;
pub mod entrycheck;
pub mod fileop;
pub mod gc;
pub mod lock;
pub mod mounts;
pub mod named;
pub mod packages;
pub mod patterns;
pub mod select;
pub mod snapshot;
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

use kiln_dag::{Definition, Digest, ExecOp, Network, Op, SourceOp, Vertex};
use kiln_oci::oci_spec::image::{Config, ImageConfiguration};
use kiln_oci::{Image, NewImage, Store};
use kiln_solver::{Selector, StepContext, Stream, WorkerError};

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
    pub secrets: mounts::Secrets,
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

/// The cache key of the static base: what its content is a function of
/// (the DAG's `revision` changes with the content, see `SourceOp`), so the
/// key needs no synthesis: a build whose steps on the base are all hits
/// (a fresh runner importing a cache) never compresses it.
fn static_base_key(revision: u32, epoch: i64) -> Digest {
    Digest::of(
        format!(
            "kiln static base/r{revision}/epoch {epoch}/gzip/kiln {}",
            env!("CARGO_PKG_VERSION")
        )
        .as_bytes(),
    )
}

fn image_ref(img: &Image) -> Ref {
    Ref {
        layers: img.layers.iter().map(LayerRef::from_layer).collect(),
        config: Some(img.config_digest.to_string()),
    }
}

impl Inner {
    /// Resolves a source to its key and result.
    fn resolve_source(&self, src: &SourceOp) -> Result<(Digest, Ref), Error> {
        match src {
            SourceOp::Scratch => Ok((Digest::of(b"kiln scratch"), Ref::default())),
            SourceOp::StaticBase { revision } => {
                // Synthesizing the base compresses megabytes of zoneinfo and
                // certificates: do it once per revision and epoch.
                let rkey =
                    Digest::of(format!("static-base/{revision}/{}", self.opts.epoch).as_bytes());
                let known = self
                    .store
                    .get_record("static-base", rkey.as_bytes())
                    .map_err(|e| Error::Store(crate::chain(&e)))?
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| kiln_oci::Digest::parse(&s).ok())
                    .and_then(|d| Image::load(&self.store, &d).ok())
                    .filter(|img| image_ref(img).complete(&self.store));
                let key = static_base_key(*revision, self.opts.epoch);
                if let Some(img) = known {
                    return Ok((key, image_ref(&img)));
                }
                let img = kiln_oci::static_base(
                    &self.store,
                    self.opts.epoch,
                    kiln_oci::Compression::Gzip,
                )
                .map_err(|e| Error::StaticBase(crate::chain(&e)))?;
                self.store
                    .put_record(
                        "static-base",
                        rkey.as_bytes(),
                        img.digest.to_string().as_bytes(),
                    )
                    .map_err(|e| Error::Store(crate::chain(&e)))?;
                Ok((key, image_ref(&img)))
            }
            SourceOp::Image {
                reference,
                platform,
            } => {
                let img = match self.opts.named.get(reference) {
                    None => self.image(reference, platform.as_ref())?,
                    Some(ctx) => self.named_image(reference, ctx, platform.as_ref())?,
                };
                Ok((dag_digest(&img.digest)?, image_ref(&img)))
            }
            SourceOp::OciLayout { path, tag } => {
                let dir = self.opts.context.join(path);
                let img = kiln_oci::import_oci_layout(&self.store, &dir, tag.as_deref()).map_err(
                    |e| Error::Local {
                        path: dir.display().to_string(),
                        reason: e.to_string(),
                    },
                )?;
                Ok((dag_digest(&img.digest)?, image_ref(&img)))
            }
            SourceOp::OciArchive { path } => {
                let file = self.opts.context.join(path);
                let img = kiln_oci::import_oci_archive(&self.store, &file, None).map_err(|e| {
                    Error::Local {
                        path: file.display().to_string(),
                        reason: e.to_string(),
                    }
                })?;
                Ok((dag_digest(&img.digest)?, image_ref(&img)))
            }
            SourceOp::DebianPackages(op) => packages::resolve(
                &self.store,
                op,
                &self.opts.platform,
                &self.opts.context,
                self.opts.epoch,
                self.opts.lock.as_deref(),
            )
            .map_err(|e| Error::Packages(Box::new(e))),
            SourceOp::Context { .. } => {
                let root = &self.opts.context;
                let (key, entries) = self.context_key(src)?;
                // The layer is written once per distinct content.
                let rec = self
                    .store
                    .get_record("context-layer", key.as_bytes())
                    .map_err(|e| Error::Store(crate::chain(&e)))?
                    .and_then(|b| serde_json::from_slice::<Ref>(&b).ok())
                    .filter(|r| r.complete(&self.store));
                if let Some(r) = rec {
                    return Ok((key, r));
                }
                let store = &self.store;
                let werr = |reason: String| snapshot::SnapshotError::Write {
                    path: root.clone(),
                    reason,
                };
                let w = kiln_oci::LayerWriter::new(store, kiln_oci::Compression::Gzip)
                    .map_err(|e| werr(crate::chain(&e)))?;
                let w = context::write_tar(root, &entries, self.opts.epoch.max(0) as u64, w)?;
                let info = w.finish().map_err(|e| werr(crate::chain(&e)))?;
                let r = Ref {
                    layers: vec![LayerRef::from_layer(&info.into())],
                    config: None,
                };
                self.put_record("context-layer", &key, &r)?;
                Ok((key, r))
            }
        }
    }

    /// The key of a context source (the content of the files it selects,
    /// read through the stat cache) and those files; no layer is written.
    fn context_key(&self, src: &SourceOp) -> Result<(Digest, Vec<select::Entry>), Error> {
        let SourceOp::Context {
            include, exclude, ..
        } = src
        else {
            return Err(Error::Internal("context_key of another source".into()));
        };
        let root = &self.opts.context;
        let ignore = match self.ignore.get() {
            Some(p) => p,
            None => {
                let p = context::ignore_file(root)?;
                self.ignore.get_or_init(|| p)
            }
        };
        let sel =
            select::Selection::new(ignore.clone(), include, exclude, "the context's patterns")
                .map_err(context::ContextError::from)?;
        let entries = context::select(root, &sel)?;
        // The stat cache is per checkout path; the key is not.
        let skey = Digest::of(root.as_os_str().as_encoded_bytes());
        let before = self
            .store
            .get_record("context-stat", skey.as_bytes())
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut stats: context::StatCache = serde_json::from_slice(&before).unwrap_or_default();
        let key = context::digest_cached(root, &entries, &mut stats)?;
        if let Ok(b) = serde_json::to_vec(&stats)
            && b != before
        {
            // Losing the stat cache only costs re-reading files.
            let _ = self.store.put_record("context-stat", skey.as_bytes(), &b);
        }
        Ok((key, entries))
    }

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

    fn image(
        &self,
        reference: &str,
        platform: Option<&kiln_dag::Platform>,
    ) -> Result<Image, Error> {
        let lookup = ImageLookup {
            store: &self.store,
            pull: self.opts.pull,
            registry: &self.opts.registry,
            platform: &self.opts.platform,
            lock: self.opts.lock.as_deref(),
        };
        lookup.image(reference, platform)
    }

    /// The image a named context stands for.
    fn named_image(
        &self,
        reference: &str,
        ctx: &named::NamedContext,
        platform: Option<&kiln_dag::Platform>,
    ) -> Result<Image, Error> {
        let local = |path: &std::path::Path, e: kiln_oci::ImportError| Error::Local {
            path: path.display().to_string(),
            reason: format!("the named context `{reference}`: {}", crate::chain(&e)),
        };
        match ctx {
            named::NamedContext::Image(r) => self.image(&named::normalized(r), platform),
            named::NamedContext::OciLayout { path, tag } => {
                kiln_oci::import_oci_layout(&self.store, path, tag.as_deref())
                    .map_err(|e| local(path, e))
            }
            named::NamedContext::Dir(path) => kiln_oci::import_rootfs(
                &self.store,
                path,
                kiln_oci::Compression::Gzip,
                self.opts.epoch,
            )
            .map_err(|e| local(path, e)),
        }
    }

    fn base_config(&self, r: &Ref) -> Result<Option<ImageConfiguration>, Error> {
        let Some(c) = &r.config else { return Ok(None) };
        let d = kiln_oci::Digest::parse(c).map_err(|e| Error::Internal(crate::chain(&e)))?;
        let bytes = self
            .store
            .read_blob(&d)
            .map_err(|e| Error::Store(crate::chain(&e)))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Store(format!("image config {c}: {e}")))
    }

    fn exec(
        &self,
        op: &ExecOp,
        key: &Digest,
        inputs: &[Ref],
        cx: &StepContext,
        cancel: &AtomicBool,
    ) -> Result<Ref, Error> {
        let command = match op.args.as_slice() {
            [sh, c, cmd] if sh == "/bin/sh" && c == "-c" => cmd.clone(),
            args => args.join(" "),
        };
        let root = inputs
            .first()
            .ok_or_else(|| Error::Internal("exec without a root input".into()))?;
        let cfg_ref = op.config_from.and_then(|i| inputs.get(i)).unwrap_or(root);
        let cfg = self
            .base_config(cfg_ref)?
            .and_then(|c| c.config().clone())
            .unwrap_or_default();
        let mut env: Vec<String> = cfg.env().clone().unwrap_or_default();
        for (k, v) in &op.env {
            set_env(&mut env, k, v);
        }
        // The chain's layer directories are the overlay lowers as they are:
        // nothing is merged or copied for a step.
        let lowers = self.snaps.lowers(root)?;
        // Before the upper exists: a missing secret leaves nothing behind.
        let mut on_wait = |m: &str| cx.log(Stream::Stderr, m.as_bytes());
        let mounted = mounts::prepare(
            &self.store,
            &op.mounts,
            inputs,
            &self.opts.secrets,
            self.import.get().map(|i| i.as_ref()),
            cancel,
            &mut on_wait,
        )
        .map_err(|error| Error::Mount {
            command: command.clone(),
            error: Box::new(error),
        })?;
        let upper = snapshot::temp_dir(&self.store, "exec")?;
        let mut spec = kiln_runtime::SandboxSpec::new(&upper, op.args.clone());
        spec.lowers = lowers;
        spec.env = env;
        spec.mounts = mounted.mounts.clone();
        for (k, v) in &mounted.env {
            set_env(&mut spec.env, k, v);
        }
        spec.cwd = op
            .cwd
            .clone()
            .or_else(|| cfg.working_dir().clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        spec.user = op
            .user
            .clone()
            .or_else(|| cfg.user().clone().filter(|u| !u.is_empty()));
        spec.network = match op.network {
            Network::Host => kiln_runtime::Network::Host,
            Network::None => kiln_runtime::Network::None,
            Network::Isolated => kiln_runtime::Network::Isolated,
        };
        spec.timeout = self.opts.step_timeout;
        spec.pids_limit = op.pids_limit;
        let runtime = kiln_runtime::Runtime::new(&self.opts.helper);
        let mut tail: Vec<u8> = Vec::new();
        let r = runtime.run(
            &spec,
            &mut |s: kiln_runtime::Stream, data: &[u8]| {
                cx.log(
                    match s {
                        kiln_runtime::Stream::Stdout => Stream::Stdout,
                        kiln_runtime::Stream::Stderr => Stream::Stderr,
                    },
                    data,
                );
                tail.extend_from_slice(data);
                if tail.len() > 256 * 1024 {
                    tail.drain(..tail.len() - 128 * 1024);
                }
            },
            Some(cancel),
        );
        let cleanup = || snapshot::remove_tree(&upper, Some(&self.opts.helper));
        let outcome = match r {
            Ok(o) => o,
            Err(e) => {
                cleanup();
                return Err(Error::Sandbox {
                    command,
                    reason: e.to_string(),
                });
            }
        };
        if outcome.cancelled {
            cleanup();
            return Err(Error::Cancelled);
        }
        if !outcome.success() {
            cleanup();
            let status = if outcome.timed_out {
                "a timeout".to_string()
            } else {
                match outcome.status {
                    kiln_runtime::ExitStatus::Code(c) => format!("exit code {c}"),
                    kiln_runtime::ExitStatus::Signal(s) => format!("signal {s}"),
                }
            };
            return Err(Error::ExecFailed {
                command,
                status,
                tail: last_lines(&tail, 30),
            });
        }
        // The upper becomes a directory layer as it is: no tar, no
        // compression, no digest until an image that contains it is
        // assembled (snapshot::commit_layer), with these options.
        let tar = snapshot::TarSpec {
            overlay_whiteouts: true,
            xattrs: true,
            epoch: self.opts.epoch.max(0) as u64,
        };
        let layer = self.snaps.add_dir_layer(&upper, key.as_bytes(), tar);
        if layer.is_err() {
            cleanup();
        }
        let mut out = root.clone();
        out.layers.push(layer?);
        Ok(out)
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
    Digest::of(&e.into_bytes())
}

fn set_env(env: &mut Vec<String>, k: &str, v: &str) {
    let kv = format!("{k}={v}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(n, _)| n) == Some(k))
    {
        Some(e) => *e = kv,
        None => env.push(kv),
    }
}

/// The last `n` lines of `out`, each prefixed for readability.
fn last_lines(out: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(out);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
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
                        return Ok(static_base_key(*revision, inner.opts.epoch));
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
                    Ok(fileop::content_digest(
                        &root,
                        &sel.path,
                        &sel.include,
                        &sel.exclude,
                    )?)
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

/// What resolving a base image needs: the store, the pull policy, the
/// registry settings, the build's platform and the lock, if any.
pub struct ImageLookup<'a> {
    pub store: &'a Store,
    pub pull: PullPolicy,
    pub registry: &'a kiln_registry::Settings,
    pub platform: &'a kiln_registry::Platform,
    pub lock: Option<&'a kiln_lock::Lockfile>,
}

/// A pull's failure as the step reports it: a registry's error stays typed
/// (the CLI's help depends on its kind).
fn pull_error(reference: &str, e: lock::PullError) -> Error {
    match e {
        lock::PullError::Registry(source) => Error::Pull {
            reference: reference.to_string(),
            source,
        },
        other => Error::Image {
            reference: reference.to_string(),
            reason: crate::chain(&other),
        },
    }
}

/// Whether `img` is for `platform` (an image that names neither os nor
/// architecture is for every one).
fn is_for(img: &Image, platform: &kiln_dag::Platform) -> bool {
    let (os, arch) = (
        img.config.os().to_string(),
        img.config.architecture().to_string(),
    );
    (os.is_empty() || os == platform.os) && (arch.is_empty() || arch == platform.architecture)
}

impl ImageLookup<'_> {
    /// An image by reference for `platform` (the source's own, else
    /// `--platform`'s): the local tag first (unless `--pull=always`), else
    /// the registry.
    pub fn image(
        &self,
        reference: &str,
        platform: Option<&kiln_dag::Platform>,
    ) -> Result<Image, Error> {
        let ierr = |reason: String| Error::Image {
            reference: reference.to_string(),
            reason,
        };
        let platform = platform.unwrap_or(self.platform).clone();
        let parsed =
            kiln_registry::Reference::parse(reference).map_err(|e| ierr(crate::chain(&e)))?;
        let local = match (parsed.tag(), parsed.digest()) {
            (_, Some(d)) => format!("{}@{d}", parsed.name()),
            (Some(t), None) => format!("{}:{t}", parsed.name()),
            (None, None) => format!("{}:latest", parsed.name()),
        };
        if parsed.digest().is_none()
            && let Some(entry) = self
                .lock
                .and_then(|l| l.image(&parsed.normalized().to_string()))
        {
            return self.pinned(&parsed, entry, &platform);
        }
        if self.pull != PullPolicy::Always {
            // a local name may point at another platform's manifest (an
            // earlier pull for another platform retagged it): only ours counts
            let ours = |img: &Image| is_for(img, &platform);
            if let Ok(img) = Image::resolve(self.store, reference)
                && ours(&img)
            {
                return Ok(img);
            }
            // `kiln import -t bb:1` names it `bb:1`, the frontend's
            // normalized reference is `docker.io/library/bb:1`.
            let short = local
                .strip_prefix("docker.io/library/")
                .or_else(|| local.strip_prefix("docker.io/"));
            for name in std::iter::once(local.as_str()).chain(short) {
                if let Ok(img) = Image::resolve(self.store, name)
                    && ours(&img)
                {
                    return Ok(img);
                }
            }
            if let Some(d) = parsed.digest()
                && let Ok(img) = Image::load(self.store, d)
                && ours(&img)
            {
                return Ok(img);
            }
        }
        if self.pull == PullPolicy::Never {
            return Err(Error::NotLocal {
                reference: reference.to_string(),
            });
        }
        // Manifest and config only: every key below a base needs just the
        // manifest digest, and a fully cached build never reads its layers.
        // They are lazy blobs, fetched (verified) by the store's
        // `RegistrySource` when a step first reads one.
        let pulled = lock::pull(self.store, self.registry, &parsed, &platform)
            .map_err(|e| pull_error(reference, e))?;
        tracing::debug!(
            reference,
            fetched = pulled.fetched,
            lazy = pulled.lazy,
            "pulled a base image lazily"
        );
        self.store
            .set_tag(&local, &pulled.manifest_digest)
            .map_err(|e| Error::Store(crate::chain(&e)))?;
        Image::load(self.store, &pulled.manifest_digest).map_err(|e| ierr(crate::chain(&e)))
    }

    /// A tag the lock pins: the platform's locked manifest (else the locked
    /// index, for a platform the lock has not seen), from the store when it
    /// has it, else pulled by digest. The tag is never asked for.
    fn pinned(
        &self,
        parsed: &kiln_registry::Reference,
        entry: &kiln_lock::LockedImage,
        platform: &kiln_dag::Platform,
    ) -> Result<Image, Error> {
        let reference = parsed.to_string();
        let ierr = |reason: String| Error::Image {
            reference: reference.clone(),
            reason,
        };
        let want = *entry.manifest(platform).unwrap_or(&entry.digest);
        if let Ok(img) = Image::load(self.store, &want)
            && is_for(&img, platform)
        {
            return Ok(img);
        }
        if self.pull == PullPolicy::Never {
            return Err(Error::NotLocal {
                reference: parsed.with_digest(want).to_string(),
            });
        }
        let pulled = lock::pull(
            self.store,
            self.registry,
            &parsed.with_digest(want),
            platform,
        )
        .map_err(|e| ierr(crate::chain(&e)))?;
        tracing::debug!(%reference, digest = %pulled.manifest_digest, "pulled a locked base image");
        Image::load(self.store, &pulled.manifest_digest).map_err(|e| ierr(crate::chain(&e)))
    }

    /// The image config of a base image, resolved as a build's source is
    /// ([`ImageLookup::image`]: manifest and config, never layers), for a
    /// Dockerfile's expansion of `$PATH` and relative `WORKDIR`s, with its
    /// `OnBuild` triggers (a Docker field oci-spec's type has no place
    /// for). Call it outside an async runtime: a pull runs one of its own.
    pub fn config(
        &self,
        reference: &str,
        platform: Option<&kiln_dag::Platform>,
    ) -> Result<(Config, Vec<String>), Error> {
        let img = self.image(reference, platform)?;
        let bytes = self
            .store
            .read_blob(&img.config_digest)
            .map_err(|e| Error::Store(crate::chain(&e)))?;
        let c: ImageConfiguration = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Store(format!("image config {}: {e}", img.config_digest)))?;
        let onbuild = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v["config"]["OnBuild"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default();
        Ok((c.config().clone().unwrap_or_default(), onbuild))
    }
}

/// Failures while assembling the final image.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("cannot read the base image config: {0}")]
    Config(String),
    #[error("cannot write the image: {0}")]
    Commit(String),
    #[error("cannot commit the image's layers: {0}")]
    Layers(#[source] snapshot::SnapshotError),
}

/// `r` with every layer committed to a blob (directory layers are tarred and
/// compressed now unless an earlier commit is recorded), for what reads
/// layer blobs: the image, the static/dynamic check.
pub fn commit(store: &Store, r: &Ref) -> Result<Ref, AssembleError> {
    let snaps = snapshot::Snapshots::new(store.clone(), std::env::current_exe().ok());
    snapshot::commit_ref(&snaps, r).map_err(AssembleError::Layers)
}

/// The final image: the base image's config (from the chain's source) with
/// the definition's config on top, and the chain's layers.
pub fn assemble(
    store: &Store,
    def: &Definition,
    r: &Ref,
    epoch: i64,
) -> Result<Image, AssembleError> {
    let mut img = NewImage::scratch(epoch);
    let mut config = Config::default();
    if let Some(c) = &r.config {
        let d = kiln_oci::Digest::parse(c).map_err(|e| AssembleError::Config(crate::chain(&e)))?;
        let bytes = store
            .read_blob(&d)
            .map_err(|e| AssembleError::Config(crate::chain(&e)))?;
        let base: ImageConfiguration =
            serde_json::from_slice(&bytes).map_err(|e| AssembleError::Config(crate::chain(&e)))?;
        // Docker's fields beyond OCI's (a base image's healthcheck) carry
        // over: oci-spec's config type has no place for them.
        if let Ok(raw) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && let Some(c) = raw.get("config").and_then(|c| c.as_object())
        {
            // (not `OnBuild`: a base's triggers are for the image built on
            // it, Docker clears them there)
            for k in ["Healthcheck", "Shell"] {
                if let Some(v) = c.get(k).filter(|v| !v.is_null()) {
                    img.docker_config.insert(k.to_string(), v.clone());
                }
            }
        }
        img.architecture = base.architecture().to_string();
        img.variant = base.variant().clone();
        config = base.config().clone().unwrap_or_default();
    }
    let over = &def.config;
    let mut env = config.env().clone().unwrap_or_default();
    for (k, v) in &over.env {
        set_env(&mut env, k, v);
    }
    config.set_env((!env.is_empty()).then_some(env));
    if let Some(w) = &over.workdir {
        config.set_working_dir(Some(w.clone()));
    }
    if let Some(u) = &over.user {
        config.set_user(Some(u.clone()));
    }
    if let Some(e) = &over.entrypoint {
        config.set_entrypoint(Some(e.clone()));
    }
    if let Some(c) = &over.cmd {
        config.set_cmd((!c.is_empty()).then(|| c.clone()));
    }
    if !over.labels.is_empty() {
        let mut labels = config.labels().clone().unwrap_or_default();
        labels.extend(over.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        config.set_labels(Some(labels));
    }
    if !over.exposed_ports.is_empty() {
        let mut ports = config.exposed_ports().clone().unwrap_or_default();
        for p in &over.exposed_ports {
            if !ports.contains(p) {
                ports.push(p.clone());
            }
        }
        config.set_exposed_ports(Some(ports));
    }
    if !over.volumes.is_empty() {
        let mut volumes = config.volumes().clone().unwrap_or_default();
        for v in &over.volumes {
            if !volumes.contains(v) {
                volumes.push(v.clone());
            }
        }
        config.set_volumes(Some(volumes));
    }
    if let Some(s) = &over.stop_signal {
        config.set_stop_signal(Some(s.clone()));
    }
    if let Some(h) = &over.healthcheck {
        img.docker_config
            .insert("Healthcheck".into(), h.docker_json());
    }
    if !over.onbuild.is_empty() {
        img.docker_config
            .insert("OnBuild".into(), serde_json::json!(over.onbuild));
    }
    img.config = config;
    // Only now do directory layers become blobs, and only this image's: a
    // builder stage's layers are never committed.
    let r = commit(store, r)?;
    for l in &r.layers {
        let layer = l.to_layer().map_err(AssembleError::Layers)?;
        img.push_layer(layer, "kiln build");
    }
    img.commit(store)
        .map_err(|e| AssembleError::Commit(crate::chain(&e)))
}
