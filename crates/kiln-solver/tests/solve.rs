//! The solver against an in-memory worker whose "filesystems" are maps of
//! path to bytes and whose exec steps understand a few toy commands:
//! `write PATH TEXT`, `fail`, `rendezvous N` (wait until N such steps run at
//! once) and `block` (run until cancelled).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_dag::{CopyOptions, Digest, Exec, FileAction, Op, SourceOp, State, Vertex};
use kiln_solver::{Event, Options, Selector, SolveError, Solver, StepContext, Worker, WorkerError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Fs = Arc<BTreeMap<String, Vec<u8>>>;

#[derive(Default)]
struct ToyWorker {
    context: Mutex<BTreeMap<String, Vec<u8>>>,
    cache: Mutex<HashMap<Digest, Fs>>,
    executed: Mutex<HashMap<Digest, usize>>,
    running: AtomicUsize,
    arrived: AtomicUsize,
    max_running: AtomicUsize,
    stopped_by_cancel: AtomicUsize,
    blocking: AtomicUsize,
}

impl ToyWorker {
    fn executions(&self) -> usize {
        self.executed.lock().unwrap().values().sum()
    }

    fn max_executions_of_one_vertex(&self) -> usize {
        self.executed
            .lock()
            .unwrap()
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }
}

fn digest_of(fs: &BTreeMap<String, Vec<u8>>, prefix: &str) -> Digest {
    let mut bytes = Vec::new();
    for (k, v) in fs.range(prefix.to_string()..) {
        if !k.starts_with(prefix) {
            break;
        }
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(v);
        bytes.push(0);
    }
    Digest::of(&bytes)
}

struct Running<'a>(&'a ToyWorker);

impl<'a> Running<'a> {
    fn new(w: &'a ToyWorker) -> Self {
        let now = w.running.fetch_add(1, Ordering::SeqCst) + 1;
        w.max_running.fetch_max(now, Ordering::SeqCst);
        Running(w)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Worker for ToyWorker {
    type Ref = Fs;

    async fn source_key(&self, v: &Vertex, _cx: &StepContext) -> Result<Digest, WorkerError> {
        Ok(match &v.op {
            Op::Source(SourceOp::Context { .. }) => digest_of(&self.context.lock().unwrap(), ""),
            Op::Source(SourceOp::Image { reference, .. }) => {
                Digest::of(format!("manifest of {reference}").as_bytes())
            }
            _ => Digest::of(b"constant source"),
        })
    }

    async fn content_digest(&self, input: &Fs, sel: &Selector) -> Result<Digest, WorkerError> {
        Ok(digest_of(input, &sel.path))
    }

    async fn lookup(&self, _v: &Vertex, key: &Digest) -> Result<Option<Fs>, WorkerError> {
        Ok(self.cache.lock().unwrap().get(key).cloned())
    }

    async fn execute(
        &self,
        v: &Vertex,
        key: &Digest,
        inputs: Vec<Fs>,
        cx: &StepContext,
    ) -> Result<Fs, WorkerError> {
        *self.executed.lock().unwrap().entry(v.digest).or_default() += 1;
        let _running = Running::new(self);
        let out: BTreeMap<String, Vec<u8>> = match &v.op {
            Op::Source(SourceOp::Context { .. }) => self.context.lock().unwrap().clone(),
            Op::Source(SourceOp::Image { reference, .. }) => {
                BTreeMap::from([("/image".to_string(), reference.as_bytes().to_vec())])
            }
            Op::Source(_) => BTreeMap::new(),
            Op::Exec(x) => {
                let mut fs = (*inputs[0]).clone();
                let cmd = x.args.last().cloned().unwrap_or_default();
                let words: Vec<&str> = cmd.split_whitespace().collect();
                match words.as_slice() {
                    ["write", path, text @ ..] => {
                        cx.log(kiln_solver::Stream::Stdout, b"writing\n");
                        fs.insert(path.to_string(), text.join(" ").into_bytes());
                    }
                    ["fail"] => return Err("exit code 1".into()),
                    ["fail", "after", "block"] => {
                        // fail only once a `block` step runs, so that the
                        // failure has something to cancel
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                        while self.blocking.load(Ordering::SeqCst) == 0 {
                            if tokio::time::Instant::now() > deadline {
                                return Err("no block step ever started".into());
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        return Err("exit code 1".into());
                    }
                    ["rendezvous", n, ..] => {
                        let n: usize = n.parse().unwrap();
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                        // A barrier: only steps that run at the same time
                        // can all get past it.
                        self.arrived.fetch_add(1, Ordering::SeqCst);
                        while self.arrived.load(Ordering::SeqCst) < n {
                            if tokio::time::Instant::now() > deadline {
                                return Err(format!("never saw {n} steps running at once").into());
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    ["block"] => {
                        self.blocking.fetch_add(1, Ordering::SeqCst);
                        cx.cancel.cancelled().await;
                        self.stopped_by_cancel.fetch_add(1, Ordering::SeqCst);
                        return Err("killed".into());
                    }
                    _ => return Err(format!("unknown toy command {cmd:?}").into()),
                }
                fs
            }
            Op::File(f) => {
                let mut fs = (*inputs[0]).clone();
                for a in &f.actions {
                    match a {
                        FileAction::Copy(c) => {
                            for (k, val) in inputs[c.from].iter() {
                                if let Some(rest) = k.strip_prefix(c.src.as_str()) {
                                    fs.insert(format!("{}{rest}", c.dest), val.clone());
                                }
                            }
                        }
                        FileAction::Mkfile { path, data, .. } => {
                            fs.insert(path.clone(), data.clone());
                        }
                        other => return Err(format!("toy worker lacks {other:?}").into()),
                    }
                }
                fs
            }
            Op::Merge(_) => {
                let mut fs = BTreeMap::new();
                for i in &inputs {
                    fs.extend(i.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                fs
            }
        };
        let out = Arc::new(out);
        self.cache.lock().unwrap().insert(*key, out.clone());
        Ok(out)
    }
}

fn solver(w: &Arc<ToyWorker>, jobs: usize) -> Solver<ToyWorker> {
    Solver::new(
        w.clone(),
        Options {
            jobs,
            ..Options::default()
        },
    )
}

fn go_like(builder_cmd: &str) -> State {
    let ctx = State::context("context", vec!["main.go".into()], vec![]);
    let build = State::image("docker.io/library/debian:bookworm", None)
        .copy(&ctx, "/main.go", "/src/main.go", CopyOptions::default())
        .run(Exec::shell(builder_cmd));
    State::static_base().copy(
        &build,
        "/hello",
        "/usr/local/bin/hello",
        CopyOptions::default(),
    )
}

fn worker_with_context() -> Arc<ToyWorker> {
    let w = Arc::new(ToyWorker::default());
    w.context
        .lock()
        .unwrap()
        .insert("/main.go".into(), b"package main".to_vec());
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builds_then_everything_is_cached() {
    let w = worker_with_context();
    let def = go_like("write /hello binary").definition();
    let first = solver(&w, 4)
        .solve(&def, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(first.root.get("/usr/local/bin/hello").unwrap(), b"binary");
    assert!(first.steps.iter().all(|s| !s.cached));
    assert_eq!(first.steps.len(), def.vertices.len());
    let executed = w.executions();

    let second = solver(&w, 4)
        .solve(&def, CancellationToken::new())
        .await
        .unwrap();
    assert!(second.steps.iter().all(|s| s.cached), "{:?}", second.steps);
    assert_eq!(second.root_key, first.root_key);
    assert_eq!(
        w.executions(),
        executed,
        "a cached build executed something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_builder_output_keeps_later_steps_cached() {
    let w = worker_with_context();
    let a = go_like("write /hello binary").definition();
    solver(&w, 4)
        .solve(&a, CancellationToken::new())
        .await
        .unwrap();
    // A different command (extra spaces) that writes the same bytes.
    let b = go_like("write   /hello   binary").definition();
    assert_ne!(a.root, b.root, "the definitions differ");
    let out = solver(&w, 4)
        .solve(&b, CancellationToken::new())
        .await
        .unwrap();
    let by_name: Vec<(bool, &Op)> = out
        .steps
        .iter()
        .map(|s| (s.cached, &b.vertex(&s.vertex).unwrap().op))
        .collect();
    let exec = by_name
        .iter()
        .find(|(_, op)| matches!(op, Op::Exec(_)))
        .unwrap();
    assert!(!exec.0, "the changed builder step must run");
    let last = out.steps.last().unwrap();
    assert!(last.cached, "the copy of identical bytes must stay cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn context_content_not_definition_drives_keys() {
    let w = worker_with_context();
    let def = go_like("write /hello binary").definition();
    let first = solver(&w, 4)
        .solve(&def, CancellationToken::new())
        .await
        .unwrap();
    w.context
        .lock()
        .unwrap()
        .insert("/main.go".into(), b"package main // edited".to_vec());
    let second = solver(&w, 4)
        .solve(&def, CancellationToken::new())
        .await
        .unwrap();
    let ran: Vec<bool> = second.steps.iter().map(|s| s.cached).collect();
    // image and static base stay cached; context, copy, exec re-run; the
    // final copy of identical output stays cached, so the image is the same.
    assert_eq!(ran.iter().filter(|c| !**c).count(), 3, "{ran:?}");
    assert_eq!(first.root_key, second.root_key);
    let keys = |o: &kiln_solver::SolveOutput<Fs>| o.steps.iter().map(|s| s.key).collect::<Vec<_>>();
    assert_ne!(keys(&first), keys(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_vertices_run_once() {
    let w = Arc::new(ToyWorker::default());
    let base = State::image("docker.io/library/alpine:3", None).run(Exec::shell("write /a 1"));
    let left = base.run(Exec::shell("write /b 2"));
    let right = base.run(Exec::shell("write /c 3"));
    let top = State::merge(&[left.clone(), right, left]);
    solver(&w, 4)
        .solve(&top.definition(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(w.max_executions_of_one_vertex(), 1);
    assert_eq!(w.executions(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn solve_all_runs_shared_vertices_once_and_reports_per_definition() {
    // two targets of one build: the builder is the same vertex in both, the
    // per-target step differs
    let w = worker_with_context();
    let target = |arch: &str| {
        let builder = go_like("write /hello binary");
        builder.run(Exec::shell(format!("write /arch {arch}")))
    };
    let (amd, arm) = (target("amd64").definition(), target("arm64").definition());
    let shared = amd
        .vertices
        .iter()
        .filter(|v| arm.vertex(&v.digest).is_some())
        .count();
    assert!(shared > 0 && shared < amd.vertices.len());
    let outs = solver(&w, 4)
        .solve_all(&[amd.clone(), arm.clone()], CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0].root.get("/arch").unwrap(), b"amd64");
    assert_eq!(outs[1].root.get("/arch").unwrap(), b"arm64");
    assert_eq!(outs[0].steps.len(), amd.vertices.len());
    assert_eq!(outs[1].steps.len(), arm.vertices.len());
    assert_eq!(w.max_executions_of_one_vertex(), 1);
    assert_eq!(
        w.executions(),
        amd.vertices.len() + arm.vertices.len() - shared
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn independent_steps_run_in_parallel_up_to_jobs() {
    let w = Arc::new(ToyWorker::default());
    let base = State::image("docker.io/library/alpine:3", None);
    let stages: Vec<State> = (0..3)
        .map(|i| {
            base.mkfile(&format!("/{i}"), b"x", 0o644, None)
                .run(Exec::shell(format!("rendezvous 3 {i}")))
        })
        .collect();
    let def = State::merge(&stages).definition();
    solver(&w, 3)
        .solve(&def, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(w.max_running.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_limits_concurrency() {
    let w = Arc::new(ToyWorker::default());
    let base = State::image("docker.io/library/alpine:3", None);
    let stages: Vec<State> = (0..6)
        .map(|i| base.run(Exec::shell(format!("write /{i} x"))))
        .collect();
    let def = State::merge(&stages).definition();
    solver(&w, 2)
        .solve(&def, CancellationToken::new())
        .await
        .unwrap();
    assert!(w.max_running.load(Ordering::SeqCst) <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_failure_cancels_the_rest_and_is_reported() {
    let w = Arc::new(ToyWorker::default());
    let base = State::image("docker.io/library/alpine:3", None);
    let blocked = base.run(Exec::shell("block"));
    let failing = base
        .run(Exec::shell("fail after block"))
        .with_meta(kiln_dag::Meta {
            name: Some("build: run fail".into()),
            location: Some(kiln_dag::Location {
                file: "Kilnfile".into(),
                line: 7,
                column: 5,
            }),
        });
    let def = State::merge(&[blocked, failing]).definition();
    let err = solver(&w, 4)
        .solve(&def, CancellationToken::new())
        .await
        .unwrap_err();
    match &err {
        SolveError::Step { name, location, .. } => {
            assert_eq!(name.as_deref(), Some("build: run fail"));
            assert_eq!(location.as_ref().unwrap().line, 7);
        }
        other => panic!("expected the failing step, got {other:?}"),
    }
    assert!(err.to_string().contains("Kilnfile:7:5"), "{err}");
    // The solve returned only after the blocked step had stopped.
    assert_eq!(w.stopped_by_cancel.load(Ordering::SeqCst), 1);
    assert_eq!(w.running.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn external_cancellation_stops_running_steps() {
    let w = Arc::new(ToyWorker::default());
    let def = State::image("docker.io/library/alpine:3", None)
        .run(Exec::shell("block"))
        .definition();
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let w2 = w.clone();
    tokio::spawn(async move {
        while w2.running.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        c2.cancel();
    });
    let err = solver(&w, 4).solve(&def, cancel).await.unwrap_err();
    assert!(matches!(err, SolveError::Cancelled), "{err:?}");
    assert_eq!(w.stopped_by_cancel.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_cache_executes_again_and_events_tell_the_story() {
    let w = worker_with_context();
    let def = go_like("write /hello binary").definition();
    solver(&w, 4)
        .solve(&def, CancellationToken::new())
        .await
        .unwrap();
    let before = w.executions();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let s = Solver::new(
        w.clone(),
        Options {
            jobs: 4,
            no_cache: true,
            ..Options::default()
        },
    )
    .with_events(tx);
    let out = s.solve(&def, CancellationToken::new()).await.unwrap();
    drop(s);
    assert_eq!(w.executions(), before * 2);
    assert!(out.steps.iter().all(|st| !st.cached));
    let mut started = 0;
    let mut done = 0;
    let mut logs = 0;
    while let Some(e) = rx.recv().await {
        match e {
            Event::Started { .. } => started += 1,
            Event::Done { .. } => done += 1,
            Event::Log { data, .. } => {
                assert_eq!(data, b"writing\n");
                logs += 1
            }
            Event::Cached { .. } | Event::Failed { .. } => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(
        (started, done, logs),
        (def.vertices.len(), def.vertices.len(), 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_cache_for_executes_only_the_named_steps() {
    let w = worker_with_context();
    let def = go_like("write /hello binary").definition();
    solver(&w, 4)
        .solve(&def, CancellationToken::new())
        .await
        .unwrap();
    let before = w.executions();
    let again = def.vertices.last().unwrap().digest;
    let s = Solver::new(
        w.clone(),
        Options {
            jobs: 4,
            no_cache_for: [again].into_iter().collect(),
            ..Options::default()
        },
    );
    let out = s.solve(&def, CancellationToken::new()).await.unwrap();
    assert_eq!(w.executions(), before + 1);
    for st in &out.steps {
        assert_eq!(st.cached, st.vertex != again, "{st:?}");
    }
}
