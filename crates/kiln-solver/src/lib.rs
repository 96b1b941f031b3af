//! Runs a kiln build graph.
//!
//! The solver walks a [`Definition`], computes each vertex's cache key,
//! reuses cached results and executes the rest through a [`Worker`], with
//! independent vertices in parallel (at most `jobs` executing at once), every
//! vertex at most once per solve, and everything cancelled on the first
//! failure or on request. It never touches the filesystem or makes a syscall
//! itself: all of that is the worker's.
//!
//! ## Cache keys
//!
//! Keys are content-first (see DESIGN.md, "Cache keys"). A vertex's key is a
//! sha256 over the canonical encoding of its op alone (never its inputs'
//! definition digests) plus, for each input, either that input's cache key
//! or, for the inputs a copy reads from, the digest of the content it
//! selects. Sources are keyed by what the worker resolves them to (a
//! registry image by its manifest digest, the context by the content of the
//! selected files). So a builder that re-runs and produces identical bytes
//! leaves everything after it cached.

mod key;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, try_join_all};
use kiln_dag::{Definition, Digest, Location, Vertex};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

pub use key::{Dep, Selector, cache_map};

/// The error a worker returns; the solver adds which step it came from.
pub type WorkerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Performs ops for the solver. `Ref` is the worker's handle on a result (a
/// snapshot, a layer); it may be lazy, materialized only when an execute or
/// a content digest needs it.
pub trait Worker: Send + Sync + 'static {
    type Ref: Clone + Send + Sync + 'static;

    /// The key material of a source vertex: a registry image's resolved
    /// manifest digest, the content digest of the selected context files,
    /// or anything else that changes exactly when the source's content does.
    fn source_key(
        &self,
        vertex: &Vertex,
        cx: &StepContext,
    ) -> impl Future<Output = Result<Digest, WorkerError>> + Send;

    /// The digest of what `selector` selects in `input` (paths, modes,
    /// ownership and bytes; never mtimes).
    fn content_digest(
        &self,
        input: &Self::Ref,
        selector: &Selector,
    ) -> impl Future<Output = Result<Digest, WorkerError>> + Send;

    /// A cached result for `key`, if there is a complete one.
    fn lookup(
        &self,
        vertex: &Vertex,
        key: &Digest,
    ) -> impl Future<Output = Result<Option<Self::Ref>, WorkerError>> + Send;

    /// Performs the vertex's op on its inputs (in the vertex's input order)
    /// and records the result under `key`. Must stop promptly, leaving
    /// nothing running, when `cx.cancel` fires.
    fn execute(
        &self,
        vertex: &Vertex,
        key: &Digest,
        inputs: Vec<Self::Ref>,
        cx: &StepContext,
    ) -> impl Future<Output = Result<Self::Ref, WorkerError>> + Send;
}

/// What a step's worker call can use: its identity, progress and
/// cancellation.
#[derive(Clone)]
pub struct StepContext {
    pub vertex: Digest,
    pub cancel: CancellationToken,
    events: Option<mpsc::UnboundedSender<Event>>,
}

impl StepContext {
    /// Forwards a chunk of the step's output to the progress stream.
    pub fn log(&self, stream: Stream, data: &[u8]) {
        self.send(Event::Log {
            vertex: self.vertex,
            stream,
            data: data.to_vec(),
        });
    }

    fn send(&self, e: Event) {
        if let Some(tx) = &self.events {
            // A dropped receiver only means nobody watches progress.
            let _ = tx.send(e);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Progress of a solve, in the order things happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The step was found in the cache.
    Cached {
        vertex: Digest,
    },
    /// The step started executing.
    Started {
        vertex: Digest,
    },
    Log {
        vertex: Digest,
        stream: Stream,
        data: Vec<u8>,
    },
    Done {
        vertex: Digest,
        duration: Duration,
    },
    Failed {
        vertex: Digest,
        error: String,
    },
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error("step {}{} failed: {source}", name.as_deref().unwrap_or("(unnamed)"), at(location))]
    Step {
        vertex: Digest,
        name: Option<String>,
        location: Option<Location>,
        #[source]
        source: WorkerError,
    },
    #[error("the build was cancelled")]
    Cancelled,
    #[error("internal error in the solver: {0}")]
    Internal(String),
}

fn at(l: &Option<Location>) -> String {
    l.as_ref().map(|l| format!(" at {l}")).unwrap_or_default()
}

/// How one vertex was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub vertex: Digest,
    pub name: Option<String>,
    pub key: Digest,
    pub cached: bool,
    pub duration: Duration,
}

/// The result of a successful solve.
#[derive(Debug, Clone)]
pub struct SolveOutput<R> {
    pub root: R,
    pub root_key: Digest,
    /// One report per vertex, in the definition's (topological) order.
    pub steps: Vec<StepReport>,
}

/// Solver settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// At most this many steps execute at once.
    pub jobs: usize,
    /// Execute every step even when a cached result exists.
    pub no_cache: bool,
    /// Execute these steps even when a cached result exists
    /// (`--no-cache-filter`).
    pub no_cache_for: std::collections::HashSet<Digest>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            no_cache: false,
            no_cache_for: Default::default(),
        }
    }
}

#[derive(Clone)]
struct Solved<R> {
    key: Digest,
    r: R,
}

type SharedStep<R> = Shared<BoxFuture<'static, Result<Solved<R>, Arc<SolveError>>>>;

/// Runs definitions through a worker.
pub struct Solver<W: Worker> {
    worker: Arc<W>,
    options: Options,
    events: Option<mpsc::UnboundedSender<Event>>,
}

struct SolveState<W: Worker> {
    worker: Arc<W>,
    options: Options,
    events: Option<mpsc::UnboundedSender<Event>>,
    cancel: CancellationToken,
    jobs: Semaphore,
    first_error: Mutex<Option<SolveError>>,
    reports: Mutex<HashMap<Digest, StepReport>>,
}

impl<W: Worker> Solver<W> {
    pub fn new(worker: Arc<W>, options: Options) -> Solver<W> {
        Solver {
            worker,
            options,
            events: None,
        }
    }

    /// Sends progress events to `tx`.
    pub fn with_events(mut self, tx: mpsc::UnboundedSender<Event>) -> Solver<W> {
        self.events = Some(tx);
        self
    }

    /// Builds `def`'s root. Cancelling `cancel` stops the solve; on the first
    /// failing step every other step is cancelled, and the solve returns
    /// only after all of them have stopped.
    pub async fn solve(
        &self,
        def: &Definition,
        cancel: CancellationToken,
    ) -> Result<SolveOutput<W::Ref>, SolveError> {
        let mut out = self.solve_all(std::slice::from_ref(def), cancel).await?;
        Ok(out.pop().expect("one output per definition"))
    }

    /// Builds the roots of several definitions in one solve (a
    /// multi-platform build: one definition per target platform). A vertex
    /// the definitions share (same digest: it does not depend on the
    /// target) runs once. One output per definition, in order; each output's
    /// steps are those of its own definition.
    pub async fn solve_all(
        &self,
        defs: &[Definition],
        cancel: CancellationToken,
    ) -> Result<Vec<SolveOutput<W::Ref>>, SolveError> {
        let shared = Arc::new(SolveState {
            worker: self.worker.clone(),
            options: self.options.clone(),
            events: self.events.clone(),
            cancel: cancel.child_token(),
            jobs: Semaphore::new(self.options.jobs.max(1)),
            first_error: Mutex::new(None),
            reports: Mutex::new(HashMap::new()),
        });
        let mut steps: HashMap<Digest, SharedStep<W::Ref>> = HashMap::new();
        let mut handles = Vec::with_capacity(defs.iter().map(|d| d.vertices.len()).sum());
        for v in defs.iter().flat_map(|d| &d.vertices) {
            if steps.contains_key(&v.digest) {
                continue;
            }
            let inputs = v
                .inputs
                .iter()
                .map(|d| {
                    steps.get(d).cloned().ok_or_else(|| {
                        SolveError::Internal(format!(
                            "input {d} of {} is not in the graph",
                            v.digest
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let handle = tokio::spawn(solve_vertex(shared.clone(), v.clone(), inputs));
            let fut = handle
                .map(|joined| match joined {
                    Ok(r) => r,
                    Err(e) => Err(Arc::new(SolveError::Internal(format!(
                        "a step task died: {e}"
                    )))),
                })
                .boxed()
                .shared();
            // Poll each step eagerly through its own task: the shared future
            // only relays the result.
            handles.push(fut.clone());
            steps.insert(v.digest, fut);
        }
        let roots = defs
            .iter()
            .map(|def| {
                steps.get(&def.root).cloned().ok_or_else(|| {
                    SolveError::Internal(format!("root {} is not in the graph", def.root))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let result = try_join_all(roots).await;
        if result.is_err() {
            shared.cancel.cancel();
        }
        // Wait for every step, so nothing is left running when we return.
        for h in handles {
            let _ = h.await;
        }
        match result {
            Ok(solved) => {
                let reports = shared.reports.lock().expect("reports lock");
                Ok(defs
                    .iter()
                    .zip(solved)
                    .map(|(def, solved)| SolveOutput {
                        root: solved.r,
                        root_key: solved.key,
                        steps: def
                            .vertices
                            .iter()
                            .filter_map(|v| reports.get(&v.digest).cloned())
                            .collect(),
                    })
                    .collect())
            }
            Err(_) => {
                let first = shared.first_error.lock().expect("error lock").take();
                Err(first.unwrap_or(SolveError::Cancelled))
            }
        }
    }
}

async fn solve_vertex<W: Worker>(
    sh: Arc<SolveState<W>>,
    v: Vertex,
    inputs: Vec<SharedStep<W::Ref>>,
) -> Result<Solved<W::Ref>, Arc<SolveError>> {
    let inputs = try_join_all(inputs).await?;
    let cx = StepContext {
        vertex: v.digest,
        cancel: sh.cancel.clone(),
        events: sh.events.clone(),
    };
    match run_step(&sh, &v, inputs, &cx).await {
        Ok(s) => Ok(s),
        Err(e) => {
            let e = match e {
                StepFailure::Cancelled => SolveError::Cancelled,
                StepFailure::Worker(source) => {
                    cx.send(Event::Failed {
                        vertex: v.digest,
                        error: source.to_string(),
                    });
                    SolveError::Step {
                        vertex: v.digest,
                        name: v.meta.name.clone(),
                        location: v.meta.location.clone(),
                        source,
                    }
                }
            };
            sh.cancel.cancel();
            let mut first = sh.first_error.lock().expect("error lock");
            // The first real failure is the one to report; the cancellations
            // it causes are consequences.
            if first.is_none() && !matches!(e, SolveError::Cancelled) {
                *first = Some(e);
                return Err(Arc::new(SolveError::Cancelled));
            }
            Err(Arc::new(e))
        }
    }
}

enum StepFailure {
    Cancelled,
    Worker(WorkerError),
}

impl From<WorkerError> for StepFailure {
    fn from(e: WorkerError) -> Self {
        StepFailure::Worker(e)
    }
}

async fn run_step<W: Worker>(
    sh: &SolveState<W>,
    v: &Vertex,
    inputs: Vec<Solved<W::Ref>>,
    cx: &StepContext,
) -> Result<Solved<W::Ref>, StepFailure> {
    if sh.cancel.is_cancelled() {
        return Err(StepFailure::Cancelled);
    }
    let started = Instant::now();
    let key = compute_key(sh, v, &inputs, cx).await?;
    let report = |cached: bool, duration: Duration| StepReport {
        vertex: v.digest,
        name: v.meta.name.clone(),
        key,
        cached,
        duration,
    };
    let cached = match sh.options.no_cache || sh.options.no_cache_for.contains(&v.digest) {
        true => None,
        false => sh.worker.lookup(v, &key).await?,
    };
    if let Some(r) = cached {
        cx.send(Event::Cached { vertex: v.digest });
        sh.reports
            .lock()
            .expect("reports lock")
            .insert(v.digest, report(true, started.elapsed()));
        return Ok(Solved { key, r });
    }
    let _permit = tokio::select! {
        p = sh.jobs.acquire() => p.map_err(|_| StepFailure::Cancelled)?,
        _ = sh.cancel.cancelled() => return Err(StepFailure::Cancelled),
    };
    let started = Instant::now();
    cx.send(Event::Started { vertex: v.digest });
    let refs = inputs.into_iter().map(|s| s.r).collect();
    let r = sh.worker.execute(v, &key, refs, cx).await;
    if sh.cancel.is_cancelled() && r.is_err() {
        return Err(StepFailure::Cancelled);
    }
    let r = r?;
    let duration = started.elapsed();
    cx.send(Event::Done {
        vertex: v.digest,
        duration,
    });
    sh.reports
        .lock()
        .expect("reports lock")
        .insert(v.digest, report(false, duration));
    Ok(Solved { key, r })
}

async fn compute_key<W: Worker>(
    sh: &SolveState<W>,
    v: &Vertex,
    inputs: &[Solved<W::Ref>],
    cx: &StepContext,
) -> Result<Digest, StepFailure> {
    let map = cache_map(v);
    let source = match map.source {
        true => Some(sh.worker.source_key(v, cx).await?),
        false => None,
    };
    let mut deps = Vec::with_capacity(map.deps.len());
    for (dep, input) in map.deps.iter().zip(inputs) {
        deps.push(match dep {
            Dep::Key => (false, input.key),
            Dep::Content(selectors) => {
                // Several copies may read from one input: digest each
                // selection and fold them in order.
                let mut digests = Vec::with_capacity(selectors.len());
                for s in selectors {
                    digests.push(sh.worker.content_digest(&input.r, s).await?);
                }
                (true, key::fold(&digests))
            }
        });
    }
    Ok(key::cache_key(&v.op, source.as_ref(), &deps))
}
