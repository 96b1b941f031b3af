//! `kiln build`: compile a Kilnfile, solve it with the local worker and ship
//! the image.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use kiln_dag::Digest;
use kiln_frontend::Options;
use kiln_oci::OutputSpec;
use kiln_solver::{Event, Solver};
use kiln_worker::{LocalWorker, PullPolicy, WorkerOptions};
use miette::{IntoDiagnostic, WrapErr};
use tokio_util::sync::CancellationToken;

use super::check::{kilnfile_path, load, parse_build_args, report};

/// Build an image from a Kilnfile
///
/// Compiles the Kilnfile (CONTEXT/Kilnfile unless `-f` says otherwise),
/// runs its steps with a content-addressed cache (unchanged steps are
/// reported CACHED and never redone), assembles the image, stores it in the
/// local store, names it with `-t`, writes each `-o` output and prints the
/// image (manifest) digest on stdout. Progress goes to stderr.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The build context directory
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,

    /// The Kilnfile [default: CONTEXT/Kilnfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Name the image in the local store (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    /// Build this target (a top-level image binding) instead of the last one
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,

    /// Set a build arg declared with `arg("NAME")`; `NAME` alone takes the
    /// value from the environment. Repeatable
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,

    /// Give `run` steps a secret: `id=ID,src=PATH` reads a file,
    /// `id=ID,env=VAR` an environment variable (as `docker buildx build`).
    /// Mounted with `secret("ID")`; never stored in a layer or the cache,
    /// and changing it does not re-run cached steps. Repeatable
    #[arg(long = "secret", value_name = "id=ID,src=PATH|env=VAR")]
    pub secrets: Vec<String>,

    /// Write the image out, e.g. `type=oci,dest=app.tar`,
    /// `type=docker,dest=app.tar`, `type=oci-layout,dest=dir`,
    /// `type=local,dest=dir`, `type=tar,dest=rootfs.tar`. Repeatable
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// Progress output on stderr: `plain` (one line per event) or `json`
    /// (one JSON object per line)
    #[arg(long, value_enum, default_value_t = Progress::Plain)]
    pub progress: Progress,

    /// Run every step even when a cached result exists
    #[arg(long)]
    pub no_cache: bool,

    /// When to pull `image(..)` sources: `missing` uses a local copy when
    /// there is one, `always` asks the registry, `never` stays offline
    #[arg(long, value_enum, default_value_t = Pull::Missing)]
    pub pull: Pull,

    /// At most this many steps run at once [default: number of CPUs]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Write build metadata (image digest, config digest, size, each step's
    /// cache hit and duration) as JSON to FILE
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    Plain,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pull {
    Missing,
    Always,
    Never,
}

struct StepInfo {
    name: String,
    location: Option<String>,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let t0 = Instant::now();
    let path = kilnfile_path(args.file.as_deref(), &args.context);
    let (name, text) = load(&path)?;
    let opts = Options {
        target: args.target.clone(),
        build_args: parse_build_args(&args.build_args)?,
        platform: None,
    };
    let compiled = match kiln_frontend::compile(&name, &text, &opts) {
        Ok(c) => c,
        Err(diags) => {
            report(&diags);
            let n = diags.errors().count();
            eprintln!("error: {name}: {n} error{}", if n == 1 { "" } else { "s" });
            return Ok(ExitCode::FAILURE);
        }
    };
    report(&compiled.warnings);
    let outputs = args
        .outputs
        .iter()
        .map(|s| s.parse::<OutputSpec>())
        .collect::<Result<Vec<_>, _>>()
        .into_diagnostic()
        .wrap_err("invalid `-o/--output`")?;
    let def = compiled.definition;
    let store = super::images::open_store()?;
    let epoch = kiln_oci::source_date_epoch().into_diagnostic()?;
    let helper = std::env::current_exe()
        .into_diagnostic()
        .wrap_err("cannot find the kiln executable for the sandbox helper")?;
    let context = std::path::absolute(&args.context)
        .into_diagnostic()
        .wrap_err_with(|| format!("bad context `{}`", args.context.display()))?;
    if !context.is_dir() {
        miette::bail!(
            "the build context `{}` is not a directory: pass the directory that holds the files the Kilnfile copies",
            context.display()
        );
    }
    let worker = Arc::new(LocalWorker::new(
        store.clone(),
        WorkerOptions {
            context,
            pull: match args.pull {
                Pull::Missing => PullPolicy::Missing,
                Pull::Always => PullPolicy::Always,
                Pull::Never => PullPolicy::Never,
            },
            registry: super::registry::settings()?,
            platform: kiln_registry::Platform::host(),
            epoch,
            helper,
            step_timeout: None,
            secrets: kiln_worker::mounts::Secrets::from_flags(&args.secrets)
                .map_err(|e| miette::miette!("{e}"))?,
        },
    ));
    let mut solver_opts = kiln_solver::Options {
        no_cache: args.no_cache,
        ..kiln_solver::Options::default()
    };
    if let Some(j) = args.jobs {
        solver_opts.jobs = j.max(1);
    }
    let steps: HashMap<Digest, StepInfo> = def
        .vertices
        .iter()
        .map(|v| {
            (
                v.digest,
                StepInfo {
                    name: v.meta.name.clone().unwrap_or_else(|| v.digest.short()),
                    location: v.meta.location.as_ref().map(|l| l.to_string()),
                },
            )
        })
        .collect();
    let rt = super::registry::runtime()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let solver = Solver::new(worker, solver_opts).with_events(tx);
    let cancel = CancellationToken::new();
    let progress = args.progress;
    let result = rt.block_on(async {
        let ctrl_c = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    cancel.cancel();
                }
            })
        };
        let printer = tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                print_event(progress, &steps, &e);
            }
        });
        let r = solver.solve(&def, cancel.clone()).await;
        drop(solver);
        let _ = printer.await;
        ctrl_c.abort();
        r
    });
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let image = kiln_worker::assemble(&store, &def, &out.root, epoch)
        .into_diagnostic()
        .wrap_err("cannot assemble the image")?;
    for t in &args.tags {
        let full = super::tag::full_name(t);
        image
            .tag(&store, &full)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot name the image `{full}`"))?;
    }
    for spec in &outputs {
        let mut spec = spec.clone();
        if spec.names.is_empty() {
            spec.names = args.tags.iter().map(|t| super::tag::full_name(t)).collect();
        }
        super::save::write_output(&store, &image, &spec)?;
    }
    if let Some(p) = &args.metadata_file {
        let meta = serde_json::json!({
            "image.digest": image.digest.to_string(),
            "config.digest": image.config_digest.to_string(),
            "size": image.size(),
            "target": compiled.target,
            "duration_ms": t0.elapsed().as_millis() as u64,
            "steps": out.steps.iter().map(|s| serde_json::json!({
                "vertex": s.vertex.to_string(),
                "name": s.name,
                "cached": s.cached,
                "duration_ms": s.duration.as_millis() as u64,
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&meta).into_diagnostic()?;
        std::fs::write(p, bytes)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write `{}`", p.display()))?;
    }
    if progress == Progress::Plain {
        eprintln!(
            "built {} in {:.2}s",
            image.digest,
            t0.elapsed().as_secs_f64()
        );
    }
    println!("{}", image.digest);
    Ok(ExitCode::SUCCESS)
}

fn print_event(progress: Progress, steps: &HashMap<Digest, StepInfo>, e: &Event) {
    let name = |d: &Digest| {
        steps
            .get(d)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| d.short())
    };
    let mut err = std::io::stderr().lock();
    if progress == Progress::Json {
        let v = match e {
            Event::Cached { vertex } => {
                serde_json::json!({"event": "cached", "vertex": vertex.to_string(), "name": name(vertex)})
            }
            Event::Started { vertex } => {
                serde_json::json!({"event": "started", "vertex": vertex.to_string(), "name": name(vertex)})
            }
            Event::Log {
                vertex,
                stream,
                data,
            } => serde_json::json!({
                "event": "log",
                "vertex": vertex.to_string(),
                "stream": match stream { kiln_solver::Stream::Stdout => "stdout", kiln_solver::Stream::Stderr => "stderr" },
                "data": String::from_utf8_lossy(data),
            }),
            Event::Done { vertex, duration } => serde_json::json!({
                "event": "done", "vertex": vertex.to_string(), "name": name(vertex),
                "duration_ms": duration.as_millis() as u64,
            }),
            Event::Failed { vertex, error } => serde_json::json!({
                "event": "failed", "vertex": vertex.to_string(), "name": name(vertex), "error": error,
            }),
        };
        let _ = writeln!(err, "{v}");
        return;
    }
    let _ = match e {
        Event::Cached { vertex } => writeln!(err, "=> {} CACHED", name(vertex)),
        Event::Started { vertex } => writeln!(err, "=> {}", name(vertex)),
        Event::Log { vertex, data, .. } => {
            let text = String::from_utf8_lossy(data);
            let n = name(vertex);
            for line in text.lines() {
                let _ = writeln!(err, "   {n} | {line}");
            }
            Ok(())
        }
        Event::Done { vertex, duration } => writeln!(
            err,
            "=> {} done {:.2}s",
            name(vertex),
            duration.as_secs_f64()
        ),
        Event::Failed { vertex, error } => {
            let at = steps
                .get(vertex)
                .and_then(|s| s.location.clone())
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            writeln!(err, "=> {} ERROR{at}: {error}", name(vertex))
        }
    };
}
