//! `kiln build`: compile a Kilnfile, solve it with the local worker and ship
//! the image.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use kiln_dag::Digest;
use kiln_frontend::Options;
use kiln_oci::OutputSpec;
use kiln_solver::Solver;
use kiln_worker::{LocalWorker, PullPolicy, WorkerOptions};
use miette::{IntoDiagnostic, WrapErr};
use tokio_util::sync::CancellationToken;

use super::check::{parse_build_args, report};
use crate::progress::{Mode, Printer, StepInfo};

/// Build an image from a Kilnfile
///
/// Compiles the Kilnfile (CONTEXT/Kilnfile unless `-f` says otherwise),
/// runs its steps with a content-addressed cache (unchanged steps are
/// reported CACHED and never redone), assembles the image, stores it in the
/// local store, names it with `-t`, writes each `-o` output and prints the
/// image (manifest) digest on stdout. Progress goes to stderr.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub registry: super::registry::RegistryOpts,

    #[command(flatten)]
    pub input: super::args::BuildFileArgs,

    #[command(flatten)]
    pub target: super::args::TargetArg,

    /// Name the image in the local store (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    /// Make the lints' warnings (root user, unpinned base, could ship on
    /// `static_base()`) errors that stop the build
    #[arg(long)]
    pub strict: bool,

    /// Give `run` steps a secret: `id=ID,src=PATH` reads a file,
    /// `id=ID,env=VAR` an environment variable, `id=ID` alone the variable
    /// `ID` (as `docker buildx build`).
    /// Mounted with `secret("ID")`; never stored in a layer or the cache,
    /// and changing it does not re-run cached steps. Repeatable
    #[arg(long = "secret", value_name = "id=ID,src=PATH|env=VAR")]
    pub secrets: Vec<String>,

    /// Write the image out, e.g. `type=oci,dest=app.tar`,
    /// `type=docker,dest=app.tar`, `type=oci-layout,dest=dir`,
    /// `type=local,dest=dir`, `type=tar,dest=rootfs.tar`. Repeatable
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// Progress output on stderr: `tty` (a live view of running steps and
    /// the tail of their output), `plain` (one line per event, for logs),
    /// `json` (one JSON object per line), `quiet` (nothing); `auto` is
    /// `tty` when stderr is a terminal, else `plain`. Also
    /// `BUILDKIT_PROGRESS`
    #[arg(long, value_enum, default_value_t = Mode::Auto, env = "BUILDKIT_PROGRESS")]
    pub progress: Mode,

    /// Build for this platform (`os/arch[/variant]`, e.g. `linux/arm64`):
    /// `image(..)` sources are pulled for it and the image config says so.
    /// Several (`linux/amd64,linux/arm64`, or the flag repeated) make one
    /// multi-platform image, an OCI index, in one solve: steps that do not
    /// depend on the target platform run once. `run` steps need the host to
    /// execute their stage's architecture (natively or through binfmt_misc
    /// and qemu-user-static); pin builder stages to `build_platform()`
    /// (`FROM --platform=$BUILDPLATFORM`) and cross-compile [default: the
    /// host's]
    #[arg(long, value_name = "PLATFORM", value_delimiter = ',')]
    pub platform: Vec<String>,

    /// Run every step even when a cached result exists
    #[arg(long)]
    pub no_cache: bool,

    /// Fail when the lock (`Kilnfile.lock` beside the build file, written
    /// by `kiln lock`) lacks an image or package set the build needs, or a
    /// locked tag now points elsewhere. Without it, a lock present is
    /// followed and what it lacks is resolved as usual
    #[arg(long)]
    pub locked: bool,

    /// When to pull `image(..)` sources: `missing` uses a local copy when
    /// there is one, `always` asks the registry (re-resolving tags), `never`
    /// stays offline. A bare `--pull` is `always`, as with buildx
    #[arg(long, value_enum, default_value_t = Pull::Missing)]
    pub pull: Pull,

    /// At most this many steps run at once [default: number of CPUs]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Write build metadata (image digest, config digest, size, each step's
    /// cache hit and duration) as JSON to FILE
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// Export the build cache: `type=local,dest=DIR[,mode=min|max]` writes
    /// an OCI layout holding the cache records and the layers they need
    /// (only what DIR lacks); `type=registry,ref=REF[,mode=min|max]` pushes
    /// the same under a tag (only blobs the registry lacks). `min`
    /// (default) keeps the final image's steps, `max` every step of every
    /// stage. `cache-mounts=true` also exports the `run` cache mounts the
    /// build's steps use. `REF` alone is `type=registry,ref=REF`. See
    /// docs/ci.md. Repeatable
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,

    /// Use a build cache exported with `--cache-to`: `type=local,src=DIR`
    /// or `type=registry,ref=REF`. Steps whose inputs are unchanged are
    /// CACHED; a layer is fetched only when a step needs it. Cache mounts
    /// the cache holds fill empty local ones when a step that runs uses
    /// them (`cache-mounts=false` to ignore them). `REF` alone is
    /// `type=registry,ref=REF`. Repeatable
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,

    #[command(flatten)]
    pub attest: super::attest::AttestOpts,

    #[command(flatten)]
    pub buildx: super::buildx::BuildxArgs,
}

/// `--pull`; bare `--pull` (buildx's, a boolean) is `always`, and buildx's
/// `--pull=true|false` are `always` and `missing` ([`bare_pull`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pull {
    #[value(alias = "false")]
    Missing,
    #[value(alias = "true")]
    Always,
    Never,
}

/// The command line with a bare `--pull` of `kiln build` (buildx's
/// `--pull`, which takes no value) written `--pull=always`: clap would take
/// the next word (the context) as its value. `--pull VALUE` stays as is.
pub fn bare_pull(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const VALUES: &[&str] = &["missing", "always", "never", "true", "false"];
    let Some(build) = args.iter().position(|a| a == "build") else {
        return args;
    };
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter().enumerate().peekable();
    while let Some((i, a)) = it.next() {
        if a == "--" {
            out.push(a);
            out.extend(it.map(|(_, a)| a));
            break;
        }
        let takes_value = it
            .peek()
            .and_then(|(_, n)| n.to_str())
            .is_some_and(|n| VALUES.contains(&n));
        if i > build && a == "--pull" && !takes_value {
            out.push("--pull=always".into());
        } else {
            out.push(a);
        }
    }
    out
}

impl Pull {
    fn policy(self) -> PullPolicy {
        match self {
            Pull::Missing => PullPolicy::Missing,
            Pull::Always => PullPolicy::Always,
            Pull::Never => PullPolicy::Never,
        }
    }
}

pub fn run(mut args: Args) -> miette::Result<ExitCode> {
    let t0 = Instant::now();
    if args.buildx.quiet {
        args.progress = Mode::Quiet;
    }
    let (method, format) = args.buildx.method()?;
    match method {
        super::buildx::Call::Build => {}
        super::buildx::Call::Check => {
            return super::check::run(super::check::Args {
                input: args.input,
                target: args.target,
                strict: args.strict,
            });
        }
        super::buildx::Call::Targets => {
            return super::buildx::print_targets(&args.input, &args.target, format);
        }
        super::buildx::Call::Outline => {
            let run = args.buildx.run.settings()?;
            return super::buildx::print_outline(&args.input, &args.target, run, format);
        }
    }
    args.buildx.check_network()?;
    // flags checked before anything is built
    let (buildx_outputs, loader) = args.buildx.outputs(&args.tags)?;
    let metadata = args.buildx.metadata()?;
    let run_settings = args.buildx.run.settings()?;
    let agents = args.buildx.run.agents()?;
    let named = kiln_worker::named::parse(&args.buildx.build_contexts).into_diagnostic()?;
    let file = super::buildfile::load(args.input.file.as_deref(), &args.input.context)?;
    let (name, text) = (file.name.clone(), file.text.clone());
    let platforms = parse_platforms(&args.platform)?;
    // one graph per target platform; `None`: this machine, as before
    // multi-platform builds existed (so its digests stay what they were)
    let targets: Vec<Option<kiln_dag::Platform>> = if platforms.is_empty() {
        vec![None]
    } else {
        platforms.into_iter().map(Some).collect()
    };
    let multi = targets.len() > 1;
    metadata.check_levels(multi)?;
    let mut opts = Options {
        target: args.target.target.clone(),
        build_args: parse_build_args(&args.input.build_args)?,
        platform: None,
        build_platform: None,
        run: run_settings,
    };
    let lock = super::lock::load(&file)?;
    let mut builds = Vec::with_capacity(targets.len());
    for platform in &targets {
        opts.platform = platform.clone();
        match file.compile_locked(&opts, args.pull.policy(), &named, lock.clone())? {
            Ok(c) => builds.push(c),
            Err(diags) => {
                if matches!(args.progress.resolve(), Mode::Json) {
                    super::check::report_json(&diags);
                } else {
                    report(&diags);
                }
                let n = diags.errors().count();
                eprintln!("error: {name}: {n} error{}", if n == 1 { "" } else { "s" });
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let json = matches!(args.progress.resolve(), Mode::Json);
    // the platforms' graphs differ only in what reads the platform: their
    // warnings and lints are the first one's
    if json {
        super::check::report_json(&builds[0].warnings);
    } else {
        report(&builds[0].warnings);
    }
    if super::check::lints(&file, &builds[0].definition, args.strict, json) {
        eprintln!("error: {name}: lint errors");
        return Ok(ExitCode::FAILURE);
    }
    let mut outputs = args
        .outputs
        .iter()
        .map(|s| s.parse::<OutputSpec>())
        .collect::<Result<Vec<_>, _>>()
        .into_diagnostic()
        .wrap_err("invalid `-o/--output`")?;
    outputs.extend(buildx_outputs);
    if multi {
        single_platform_outputs(&outputs, &targets)?;
    }
    let mut defs: Vec<kiln_dag::Definition> = builds.iter().map(|c| c.definition.clone()).collect();
    if let Some(f) = super::run_flags::missing_agent(&defs, &agents, &name, &text) {
        f.print(args.progress.resolve());
        return Ok(ExitCode::FAILURE);
    }
    if multi {
        name_platform_steps(&mut defs, &targets);
    }
    let store = super::images::open_store()?;
    let cache_spec = |s: &String, export| {
        kiln_worker::cache_io::CacheSpec::parse(s, export)
            .map_err(|e| miette::miette!("{}", kiln_types::error_chain(&e)))
    };
    args.cache_to = (args.cache_to.iter())
        .map(|s| super::buildx::cache_shorthand(s))
        .collect();
    let cache_to = (args.cache_to.iter())
        .map(|s| cache_spec(s, true))
        .collect::<miette::Result<Vec<_>>>()?;
    let cache_from = (args.cache_from.iter())
        .map(|s| cache_spec(&super::buildx::cache_shorthand(s), false))
        .collect::<miette::Result<Vec<_>>>()?;
    let import = if cache_from.is_empty() {
        None
    } else {
        let settings = super::registry::settings()?;
        let i = kiln_worker::cache_io::CacheImport::open(&cache_from, &settings, &store)
            .map_err(|e| miette::miette!("--cache-from: {e}"))?;
        Some(Arc::new(i))
    };
    // Blobs only the imported cache has are fetched when first read.
    let store = match &import {
        Some(i) => store.with_blob_source(i.source()),
        None => store,
    };
    let epoch = kiln_oci::source_date_epoch().into_diagnostic()?;
    let helper = std::env::current_exe()
        .into_diagnostic()
        .wrap_err("cannot find the kiln executable for the sandbox helper")?;
    let context = std::path::absolute(&args.input.context)
        .into_diagnostic()
        .wrap_err_with(|| format!("bad context `{}`", args.input.context.display()))?;
    if !context.is_dir() {
        miette::bail!(
            "the build context `{}` is not a directory: pass the directory that holds the files the Kilnfile copies",
            context.display()
        );
    }
    let worker = Arc::new(LocalWorker::new(
        store.clone(),
        WorkerOptions {
            context: context.clone(),
            pull: args.pull.policy(),
            registry: super::registry::settings()?,
            platform: targets[0].clone().unwrap_or_else(kiln_dag::Platform::host),
            epoch,
            helper,
            step_timeout: None,
            secrets: super::secret::read(&args.secrets).map_err(|e| miette::miette!("{e}"))?,
            ssh: agents.clone(),
            named: named.clone(),
            lock: lock.clone(),
        },
    ));
    if let Some(i) = &import {
        worker.set_cache_import(i.clone());
    }
    let mut solver_opts = kiln_solver::Options {
        no_cache: args.no_cache,
        ..kiln_solver::Options::default()
    };
    if let Some(j) = args.jobs {
        solver_opts.jobs = j.max(1);
    }
    solver_opts.no_cache_for = super::buildx::no_cache_for(&args.buildx.no_cache_filter, &defs)?;
    let steps: HashMap<Digest, StepInfo> = defs
        .iter()
        .flat_map(|d| &d.vertices)
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
    let mut emulated = Vec::new();
    for (def, platform) in defs.iter().zip(&targets) {
        if args.locked {
            let p = platform.clone().unwrap_or_else(kiln_dag::Platform::host);
            if let Some(f) = super::lock::check_locked(&file, lock.as_deref(), def, &p, &context)? {
                f.print(args.progress.resolve());
                return Ok(ExitCode::FAILURE);
            }
        }
        match unrunnable_step(def, platform.as_ref(), &name, &text) {
            Ok(found) => {
                // one group per platform across the targets' graphs
                for f in found {
                    match emulated
                        .iter_mut()
                        .find(|e: &&mut Emulated| e.platform == f.platform)
                    {
                        Some(e) => e.steps.extend(f.steps),
                        None => emulated.push(f),
                    }
                }
            }
            Err(err) => {
                err.print(args.progress.resolve());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let rt = super::registry::runtime()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let solver = Solver::new(worker, solver_opts).with_events(tx);
    let cancel = CancellationToken::new();
    let progress = args.progress.resolve();
    let mut printer = Printer::new(progress, steps);
    let result = rt.block_on(async {
        let ctrl_c = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    cancel.cancel();
                }
            })
        };
        // the steps that executed (not found cached), for the emulation
        // warning
        let printer = tokio::spawn(async move {
            let mut started = std::collections::HashSet::new();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            loop {
                tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => {
                            if let kiln_solver::Event::Started { vertex } = &e {
                                started.insert(*vertex);
                            }
                            printer.event(&e)
                        }
                        None => break,
                    },
                    _ = tick.tick() => printer.tick(),
                }
            }
            printer.finish();
            started
        });
        let r = solver.solve_all(&defs, cancel.clone()).await;
        drop(solver);
        let started = printer.await.unwrap_or_default();
        ctrl_c.abort();
        (r, started)
    });
    let (result, started) = result;
    for w in emulation_warnings(&emulated, &started) {
        eprintln!("warning: {w}");
    }
    let outs = match result {
        Ok(outs) => outs,
        Err(e) => {
            solve_failure(e, &name, &text).print(progress);
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut images = Vec::with_capacity(targets.len());
    for ((def, platform), out) in defs.iter().zip(&targets).zip(&outs) {
        // The final image's directory layers become blobs only now (builder
        // stages never do); the check reads the committed layers.
        // Results imported from `--cache-from`: the final image's blobs (and
        // only those) come into the store now.
        kiln_worker::cache_io::fetch_ref(&store, &out.root)
            .into_diagnostic()
            .wrap_err("cannot copy the image's layers from the imported cache")?;
        let root = kiln_worker::commit(&store, &out.root)
            .into_diagnostic()
            .wrap_err("cannot commit the image's layers")?;
        // Before anything is stored under a name or exported.
        let target = platform.clone().unwrap_or_else(kiln_dag::Platform::host);
        if let Err(e) =
            kiln_worker::elfcheck::check(&store, def, &root, &target, import.as_deref(), &context)
        {
            elf_failure(e, &name, &text).print(progress);
            return Ok(ExitCode::FAILURE);
        }
        let mut image = kiln_worker::assemble(&store, def, &root, epoch)
            .into_diagnostic()
            .wrap_err("cannot assemble the image")?;
        if let Some(p) = platform {
            let neutral = matches!(
                stage_source(def, &def.root),
                Some(kiln_dag::SourceOp::StaticBase { .. } | kiln_dag::SourceOp::Scratch)
            );
            image = retarget(&store, image, p, neutral, epoch)?;
        }
        // the command must be able to start in the image, before it is named
        // or exported
        if let Err(e) = kiln_worker::entrycheck::check(&store, &image) {
            entry_failure(e, &image, def, &name, &text).print(progress);
            return Ok(ExitCode::FAILURE);
        }
        images.push(metadata.apply(&store, image)?);
    }
    // SBOM and provenance, attached to what the outputs write: one
    // attestation manifest per platform
    let mut attested = Vec::with_capacity(images.len());
    for (((image, def), platform), (out, compiled)) in images
        .iter()
        .zip(&defs)
        .zip(&targets)
        .zip(outs.iter().zip(&builds))
    {
        attested.push(if outputs.is_empty() && args.tags.is_empty() {
            None
        } else {
            let tag = args.tags.first().map(|t| super::tag::full_name(t));
            let image_name = tag.or_else(|| outputs.iter().find_map(|o| o.names.first().cloned()));
            super::attest::for_build(super::attest::Build {
                store: &store,
                image,
                def,
                opts: &args.attest,
                file: &name,
                text: &text,
                target: &compiled.target,
                platform: platform.as_ref(),
                build_args: &opts.build_args,
                secret_flags: &args.secrets,
                steps: &out.steps,
                started: t0,
                epoch,
                static_rooted: matches!(
                    stage_source(def, &def.root),
                    Some(kiln_dag::SourceOp::StaticBase { .. })
                ),
                name: image_name.as_deref(),
            })?
        });
    }
    if !multi {
        // with attestations the tag names the index of the image and its
        // attestation manifest, as BuildKit's image exporter stores it, so
        // `kiln push`/`save`/`tag` of the name carry them; without, the
        // image manifest
        let named = attested[0]
            .as_ref()
            .map_or(images[0].digest, |(a, _)| a.index);
        for t in &args.tags {
            let full = super::tag::full_name(t);
            store
                .set_tag(&full, &named)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot name the image `{full}`"))?;
        }
    }
    let index = if multi {
        let parts: Vec<(&kiln_oci::Image, Option<&kiln_oci::attestation::Attested>)> = images
            .iter()
            .zip(&attested)
            .map(|(i, a)| (i, a.as_ref().map(|(a, _)| a)))
            .collect();
        let index = kiln_oci::Index::store(&store, &parts)
            .into_diagnostic()
            .wrap_err("cannot make the multi-platform index")?;
        let index = metadata.apply_index(&store, index)?;
        for t in &args.tags {
            let full = super::tag::full_name(t);
            store
                .set_tag(&full, &index.digest)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot name the image `{full}`"))?;
        }
        Some(index)
    } else {
        None
    };
    for spec in &outputs {
        let mut spec = spec.clone();
        if spec.names.is_empty() {
            spec.names = args.tags.iter().map(|t| super::tag::full_name(t)).collect();
        }
        match &index {
            Some(index) => {
                super::save::write_index_output(&store, index, &spec, &metadata.index_descriptor)?;
                super::attest::push_index_referrers(&store, &attested, &spec)?;
            }
            None => super::attest::write_output(&store, &images[0], attested[0].as_ref(), &spec)?,
        }
    }
    if let Some(l) = &loader {
        if multi {
            miette::bail!(
                help = "build with one `--platform` to load the image, or push the multi-platform image with `--push`",
                "`--load` takes one platform's image; `--platform` names {}",
                targets.len()
            );
        }
        l.load(&store, &images[0], &args.tags)?;
    }
    if let Some(i) = import.as_ref().filter(|_| progress != Mode::Quiet) {
        let (n, bytes) = i.source().fetched();
        eprintln!(
            "cache import: {} record(s), {n} blob(s) ({bytes} bytes) read from the cache",
            i.len()
        );
    }
    for (spec, text) in cache_to.iter().zip(&args.cache_to) {
        let settings = super::registry::settings()?;
        // every platform's graph in one cache (one export per platform
        // would replace the previous platform's)
        let builds: Vec<(&kiln_dag::Definition, &[kiln_solver::StepReport])> = defs
            .iter()
            .zip(&outs)
            .map(|(def, out)| (def, out.steps.as_slice()))
            .collect();
        let s = kiln_worker::cache_io::export(&store, &builds, import.as_deref(), spec, &settings)
            .map_err(|e| miette::miette!("--cache-to: {e}"))?;
        if progress != Mode::Quiet {
            eprintln!(
                "cache export to `{text}`: {} record(s), {} blob(s) written ({} bytes), {} already there",
                s.records, s.blobs_written, s.bytes_written, s.blobs_present
            );
        }
    }
    let digest = index.as_ref().map_or(images[0].digest, |i| i.digest);
    if let Some(p) = &args.metadata_file {
        let steps = |out: &kiln_solver::SolveOutput<_>| -> Vec<serde_json::Value> {
            (out.steps.iter())
                .map(|s: &kiln_solver::StepReport| {
                    serde_json::json!({
                        "vertex": s.vertex.to_string(),
                        "name": s.name,
                        "cached": s.cached,
                        "duration_ms": s.duration.as_millis() as u64,
                    })
                })
                .collect()
        };
        let mut meta = serde_json::json!({
            "image.digest": digest.to_string(),
            "config.digest": images[0].config_digest.to_string(),
            "size": images[0].size(),
            "target": builds[0].target,
            "duration_ms": t0.elapsed().as_millis() as u64,
            "steps": steps(&outs[0]),
        });
        if multi {
            // the index; each platform's image, config and steps
            meta["config.digest"] = serde_json::Value::Null;
            meta["size"] = serde_json::json!(images.iter().map(|i| i.size()).sum::<u64>());
            meta["platforms"] = serde_json::json!(
                images
                    .iter()
                    .zip(&targets)
                    .zip(&outs)
                    .map(|((i, p), out)| serde_json::json!({
                        "platform": p.as_ref().map(ToString::to_string),
                        "image.digest": i.digest.to_string(),
                        "config.digest": i.config_digest.to_string(),
                        "steps": steps(out),
                    }))
                    .collect::<Vec<_>>()
            );
            let mut seen = std::collections::HashSet::new();
            meta["steps"] = serde_json::json!(
                outs.iter()
                    .flat_map(steps)
                    .filter(|s| seen.insert(s["vertex"].to_string()))
                    .collect::<Vec<_>>()
            );
        }
        let bytes = serde_json::to_vec_pretty(&meta).into_diagnostic()?;
        std::fs::write(p, bytes)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write `{}`", p.display()))?;
    }
    if let Some(p) = &args.buildx.iidfile {
        match &index {
            None => super::buildx::write_iidfile(p, &images[0])?,
            // the index of a multi-platform image, as buildx writes
            Some(_) => std::fs::write(p, digest.to_string())
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot write `{}`", p.display()))?,
        }
    }
    if progress == Mode::Plain {
        eprintln!("built {digest} in {:.2}s", t0.elapsed().as_secs_f64());
    }
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}

/// In a multi-platform build, a step that is not the same vertex for every
/// platform is named with its platform (`[linux/arm64] app: file /x`, as
/// BuildKit's progress names them), so the progress tells them apart.
/// Names are metadata: no digest changes.
fn name_platform_steps(defs: &mut [kiln_dag::Definition], targets: &[Option<kiln_dag::Platform>]) {
    let mut count: HashMap<Digest, usize> = HashMap::new();
    for d in defs.iter() {
        for v in &d.vertices {
            *count.entry(v.digest).or_default() += 1;
        }
    }
    for (d, p) in defs.iter_mut().zip(targets) {
        let Some(p) = p else { continue };
        for v in &mut d.vertices {
            if count[&v.digest] < targets.len() {
                let name = v.meta.name.clone().unwrap_or_else(|| v.digest.short());
                v.meta.name = Some(format!("[{p}] {name}"));
            }
        }
    }
}

/// `--platform` values, comma lists and repeats alike, parsed and
/// normalized, each once in the order given.
fn parse_platforms(flags: &[String]) -> miette::Result<Vec<kiln_dag::Platform>> {
    let mut out: Vec<kiln_dag::Platform> = Vec::new();
    for f in flags {
        let p = f.trim().parse::<kiln_dag::Platform>().map_err(|e| {
            miette::miette!(
                help = "e.g. `--platform linux/arm64` or `--platform linux/amd64,linux/arm64`",
                "{e}"
            )
        })?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// A multi-platform build is an index: outputs that hold one image's files
/// cannot carry it.
fn single_platform_outputs(
    outputs: &[OutputSpec],
    targets: &[Option<kiln_dag::Platform>],
) -> miette::Result<()> {
    let list = (targets.iter().flatten())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for o in outputs {
        let why = match o.kind {
            kiln_oci::OutputKind::Docker => "a docker archive holds one platform per file",
            kiln_oci::OutputKind::Local | kiln_oci::OutputKind::Tar => {
                "a root filesystem is one platform's"
            }
            _ => continue,
        };
        miette::bail!(
            help = format!(
                "use `type=oci`, `type=oci-layout`, `type=registry` or `type=image` for the multi-platform image, or build `type={}` once per platform with a single `--platform` value",
                o.kind
            ),
            "`-o type={}` cannot hold the {} platforms `--platform {list}` names: {why}",
            o.kind,
            targets.len()
        );
    }
    Ok(())
}

/// A build failure rendered at the CLI edge: what failed, the Kilnfile line
/// it came from and what to do.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
pub(crate) struct BuildFailure {
    message: String,
    #[source_code]
    src: miette::NamedSource<String>,
    #[label(collection)]
    labels: Vec<miette::LabeledSpan>,
    #[help]
    help: Option<String>,
    /// The failing step's name and the last lines of its output.
    output: Option<(String, String)>,
}

impl BuildFailure {
    pub(crate) fn new(file: &str, text: &str, message: String) -> Self {
        BuildFailure {
            message,
            src: miette::NamedSource::new(file, text.to_string()),
            labels: Vec::new(),
            help: None,
            output: None,
        }
    }

    /// Points at `loc` when it is in this Kilnfile, else names it.
    pub(crate) fn label(mut self, loc: Option<&kiln_dag::Location>, what: &str) -> Self {
        let Some(loc) = loc else { return self };
        match span_of(self.src.name(), self.src.inner(), loc) {
            Some(span) => self.labels.push(miette::LabeledSpan::new_with_span(
                Some(what.to_string()),
                span,
            )),
            None => self.message.push_str(&format!(" ({loc})")),
        }
        self
    }

    /// Writes the report to stderr: one JSON object in `json` mode, else
    /// the output tail and a miette report. Not wrapped: paths and commands
    /// stay whole so they can be copied (and searched for).
    pub(crate) fn print(self, mode: Mode) {
        if mode == Mode::Json {
            let v = serde_json::json!({
                "event": "error",
                "message": self.message,
                "help": self.help,
                "step": self.output.as_ref().map(|o| &o.0),
                "output": self.output.as_ref().map(|o| &o.1),
            });
            eprintln!("{v}");
            return;
        }
        match &self.output {
            Some((step, tail)) if tail.is_empty() => eprintln!("error: `{step}` printed nothing"),
            Some((step, tail)) => eprintln!("error: the last lines of output of `{step}`:\n{tail}"),
            None => {}
        }
        let mut out = String::new();
        let handler = miette::GraphicalReportHandler::new().with_width(usize::MAX / 4);
        match handler.render_report(&mut out, &self) {
            Ok(()) => eprint!("{out}"),
            Err(_) => eprintln!("error: {}", self.message),
        }
    }

    pub(crate) fn help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }
}

/// The byte span of the rest of the line at `loc` (1-based line and
/// character column, as the frontend records them).
fn span_of(file: &str, text: &str, loc: &kiln_dag::Location) -> Option<miette::SourceSpan> {
    if loc.file != file {
        return None;
    }
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i + 1 == loc.line as usize {
            let col: usize = line
                .chars()
                .take((loc.column as usize).saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            let rest = line[col..].trim_end();
            return Some((offset + col, rest.len().max(1)).into());
        }
        offset += line.len();
    }
    None
}

/// Renders a failed solve: for a failing `run`, its command, exit status,
/// last lines of output and Kilnfile location.
fn solve_failure(e: kiln_solver::SolveError, file: &str, text: &str) -> BuildFailure {
    let kiln_solver::SolveError::Step {
        name,
        location,
        source,
        ..
    } = e
    else {
        return BuildFailure::new(file, text, e.to_string());
    };
    let step = name.unwrap_or_else(|| "(unnamed)".into());
    if let Some(kiln_worker::Error::ExecFailed {
        command,
        status,
        tail,
    }) = source.downcast_ref::<kiln_worker::Error>()
    {
        let mut f = BuildFailure::new(file, text, format!("`{command}` exited with {status}"));
        f.output = Some((step, tail.clone()));
        // the runtime's own warning for the single-ID fallback, if in effect
        let fallback = match kiln_runtime::plan_mapping() {
            Ok((kiln_runtime::MapPlan::Single { .. }, warnings)) => warnings.into_iter().next(),
            _ => None,
        };
        let help = match super::hints::single_id(tail, fallback.as_deref()) {
            Some(h) => h,
            None => "fix the command or what it needs (its output is above) and build again: \
                 the steps that finished are cached and will not run again"
                .into(),
        };
        return f
            .label(location.as_ref(), "this run step failed")
            .help(help);
    }
    let source: &(dyn std::error::Error + 'static) = &*source;
    let f = BuildFailure::new(
        file,
        text,
        format!("step `{step}` failed: {}", kiln_types::error_chain(source)),
    )
    .label(location.as_ref(), "this step failed");
    let chain = std::iter::successors(Some(source), |e| e.source());
    if super::disk_full(chain) {
        return f.help(super::disk_full_help());
    }
    let chain = std::iter::successors(Some(source), |e| e.source());
    if let Some(help) = super::registry_help::help_in_chain(chain) {
        return f.help(help);
    }
    f
}

fn elf_failure(e: kiln_worker::elfcheck::ElfCheckError, file: &str, text: &str) -> BuildFailure {
    let help = e.help();
    let mut f = BuildFailure::new(file, text, e.to_string());
    if let kiln_worker::elfcheck::ElfCheckError::Dynamic { offenders, .. }
    | kiln_worker::elfcheck::ElfCheckError::Arch { offenders, .. } = &e
    {
        for o in offenders {
            f = f.label(o.location.as_ref(), &format!("copies `{}`", o.path));
        }
    }
    if let Some(h) = help {
        f = f.help(h);
    }
    f
}

fn entry_failure(
    e: kiln_worker::entrycheck::EntryCheckError,
    image: &kiln_oci::Image,
    def: &kiln_dag::Definition,
    file: &str,
    text: &str,
) -> BuildFailure {
    let help = e.help();
    let at = match kiln_worker::entrycheck::command_of(image) {
        Some(("entrypoint", _)) => def.command_at.entrypoint.as_ref(),
        _ => def.command_at.cmd.as_ref(),
    };
    BuildFailure::new(file, text, e.to_string())
        .label(at, "the image's command")
        .help(help)
}

/// The source vertex a vertex's root filesystem chain starts from.
fn stage_source<'a>(
    def: &'a kiln_dag::Definition,
    from: &kiln_dag::Digest,
) -> Option<&'a kiln_dag::SourceOp> {
    let by: HashMap<Digest, &kiln_dag::Vertex> =
        def.vertices.iter().map(|v| (v.digest, v)).collect();
    let mut cur = by.get(from)?;
    loop {
        match &cur.op {
            kiln_dag::Op::Source(s) => return Some(s),
            _ => cur = by.get(cur.inputs.first()?)?,
        }
    }
}

/// The `run` steps of one platform that would run under a binfmt_misc
/// emulator: (vertex, step name) each.
struct Emulated {
    platform: kiln_dag::Platform,
    handler: kiln_worker::binfmt::Handler,
    steps: Vec<(Digest, String)>,
}

/// A `run` step for a platform this machine cannot execute, found before
/// anything runs (instead of an "exec format error" from inside the step);
/// the steps that would run under a binfmt_misc emulator are returned for
/// [`emulation_warnings`].
fn unrunnable_step(
    def: &kiln_dag::Definition,
    target: Option<&kiln_dag::Platform>,
    file: &str,
    text: &str,
) -> Result<Vec<Emulated>, Box<BuildFailure>> {
    use kiln_worker::binfmt::Execution;
    let target = target.cloned().unwrap_or_else(kiln_dag::Platform::host);
    let mut emulated: Vec<Emulated> = Vec::new();
    for v in &def.vertices {
        if !matches!(v.op, kiln_dag::Op::Exec(_)) {
            continue;
        }
        let p = match stage_source(def, &v.digest) {
            Some(kiln_dag::SourceOp::Image {
                platform: Some(p), ..
            }) => p.clone(),
            _ => target.clone(),
        };
        let step = v.meta.name.clone().unwrap_or_else(|| v.digest.short());
        let why = match kiln_worker::binfmt::execution(&p) {
            Execution::Native => continue,
            Execution::Emulated(handler) => {
                match emulated.iter_mut().find(|e| e.platform == p) {
                    Some(e) => e.steps.push((v.digest, step)),
                    None => emulated.push(Emulated {
                        platform: p,
                        handler,
                        steps: vec![(v.digest, step)],
                    }),
                }
                continue;
            }
            Execution::NoFixBinary(h) => format!(
                "its binfmt_misc handler `{}` was registered without the `F` flag, so its \
                 interpreter `{}` cannot be found inside the build's sandbox",
                h.name,
                h.interpreter.display()
            ),
            Execution::Disabled(h) => format!(
                "its binfmt_misc handler `{}` is disabled (`update-binfmts --enable {}`)",
                h.name, h.name
            ),
            Execution::Unavailable => "no binfmt_misc handler is registered for it".to_string(),
        };
        return Err(Box::new(BuildFailure::new(
            file,
            text,
            format!(
                "`{step}` runs a command for {p}, which this machine ({}) cannot execute: {why}",
                kiln_dag::Platform::host()
            ),
        )
        .label(v.meta.location.as_ref(), &format!("a run step for {p}"))
        .help(format!(
            "cross-compile instead: run this stage on the build platform \
                 (`image(.., [platform(build_platform())])`) and build for {p} there (Go \
                 `GOARCH`, rustc's `--target` with a cross linker), copying the result into the \
                 {p} image; or install qemu-user-static and binfmt-support, whose handlers have \
                 the `F` flag that emulation inside the sandbox needs"
        ))));
    }
    Ok(emulated)
}

/// One warning per platform for the steps that ran under a binfmt_misc
/// emulator (`started`: the steps that executed; a cached one ran nothing),
/// naming the handler, since emulation is many times slower than
/// cross-compiling in a stage on the build platform.
fn emulation_warnings(
    emulated: &[Emulated],
    started: &std::collections::HashSet<Digest>,
) -> Vec<String> {
    let mut out = Vec::new();
    for e in emulated {
        let mut steps: Vec<&str> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (d, s) in &e.steps {
            // a step several targets' graphs share is one vertex, listed once
            if started.contains(d) && seen.insert(*d) {
                steps.push(s);
            }
        }
        if steps.is_empty() {
            continue;
        }
        out.push(format!(
            "{} run step{} for {} ran emulated by the binfmt_misc handler `{}` (`{}`), much \
             slower than natively: {}; cross-compiling in a stage on `build_platform()` avoids it",
            steps.len(),
            if steps.len() == 1 { "" } else { "s" },
            e.platform,
            e.handler.name,
            e.handler.interpreter.display(),
            steps
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}
/// Makes the image's config name `p`. The static base and scratch hold no
/// executables of any architecture, so an image rooted in them is labelled
/// for the requested platform; an image of another architecture is an error
/// rather than a mislabelled image.
fn retarget(
    store: &kiln_oci::Store,
    image: kiln_oci::Image,
    p: &kiln_dag::Platform,
    neutral: bool,
    epoch: i64,
) -> miette::Result<kiln_oci::Image> {
    let arch = image.config.architecture().to_string();
    let variant = image.config.variant().clone();
    if arch == p.architecture && (variant == p.variant || p.variant.is_none()) {
        return Ok(image);
    }
    if !neutral {
        miette::bail!(
            help = "pull the base for that platform (`--pull=always`), or name a base that has it",
            "the image was built on a base for linux/{arch}, not for {p}"
        );
    }
    let mut n = kiln_oci::NewImage::on_top_of(&image, epoch);
    n.architecture = p.architecture.clone();
    n.variant = p.variant.clone();
    n.commit(store)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write the image for {p}"))
}
