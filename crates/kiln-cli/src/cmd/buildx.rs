//! `docker buildx build` flags of `kiln build` that are shorthands or
//! finishing touches around the build: `--push`, `--load`, `--label`,
//! `--annotation`, `--iidfile`, `-q`, and the `--cache-*` shorthands. Kept
//! apart from `build.rs` so that the build's phases stay readable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_oci::{Image, OutputSpec, Store};
use miette::{IntoDiagnostic, WrapErr};

/// The buildx flags (flattened into `kiln build`'s `Args`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BuildxArgs {
    /// Shorthand for `--output=type=registry`: push the image to the
    /// registry of each `-t` name (as `docker buildx build --push`)
    #[arg(long)]
    pub push: bool,

    /// Shorthand for `--output=type=docker`: load the image into the local
    /// podman image store (or docker's, when podman is not installed)
    /// under its `-t` names
    #[arg(long)]
    pub load: bool,

    /// Set a label in the image config (`KEY=VALUE`; repeatable). Labels
    /// do not change any step's cache key
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Add an annotation: `KEY=VALUE` or `manifest:KEY=VALUE` on the image
    /// manifest(s); with several `--platform`s also `index:KEY=VALUE` on
    /// the index, `manifest-descriptor:KEY=VALUE` on each image's entry
    /// in it and `index-descriptor:KEY=VALUE` on the index's entry in an
    /// OCI layout's `index.json` (repeatable)
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,

    /// Write the image id (the manifest digest that kiln prints) to FILE
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// No progress: stdout has the image id alone, stderr only warnings and
    /// errors. Same as `--progress quiet`
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// What to do instead of building: `check` runs `kiln check` (the
    /// checker and the lints; exit 1 on errors), `targets` lists the build
    /// file's targets, `outline` its build args (defaults, descriptions)
    /// and the secrets and SSH agents the target uses; `build` (the
    /// default) builds. `,format=json` prints BuildKit's JSON instead of
    /// the text (`outline`, `targets`)
    #[arg(
        long,
        value_name = "METHOD[,format=text|json]",
        default_value = "build"
    )]
    pub call: String,

    /// Stand-ins for images: `NAME=docker-image://REF`,
    /// `NAME=oci-layout://PATH[:TAG]` or `NAME=DIR` (its files as a
    /// one-layer image) replace every `image("NAME")` (Dockerfile:
    /// `FROM NAME`). Repeatable
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,

    /// Shorthand for `--call=check`
    #[arg(long)]
    pub check: bool,

    /// Run the steps of this Kilnfile binding or Dockerfile stage even when
    /// they are cached (repeatable; `a,b` names two)
    #[arg(long = "no-cache-filter", value_name = "NAME", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// The network of `run` steps that do not choose one: `default` and
    /// `host` are kiln's default (the host's network); a step's own
    /// `network(..)` (Dockerfile: `RUN --network`) chooses otherwise
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,

    #[command(flatten)]
    pub run: super::run_flags::RunFlags,
}

/// `--call`: buildx's methods kiln answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Call {
    #[default]
    Build,
    Check,
    Targets,
    Outline,
}

/// How `--call` prints its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Where `--load` puts the image.
#[derive(Debug, Clone)]
pub struct Loader {
    /// `podman` or `docker`, found on PATH
    tool: PathBuf,
}

impl BuildxArgs {
    /// The method and its format: `--check` wins over `--call`, which
    /// is read as buildx reads it (`METHOD[,format=json]`).
    pub fn method(&self) -> miette::Result<(Call, Format)> {
        if self.check {
            return Ok((Call::Check, Format::Text));
        }
        let mut parts = self.call.split(',');
        let call = match parts.next().unwrap_or("").trim() {
            "build" | "" => Call::Build,
            "check" | "lint" => Call::Check,
            "targets" => Call::Targets,
            "outline" => Call::Outline,
            other => miette::bail!(
                help = "use `build`, `check`, `targets` or `outline`",
                "`--call {other}`: unknown method"
            ),
        };
        let mut format = Format::Text;
        for p in parts {
            match p.trim() {
                "format=json" => format = Format::Json,
                "format=text" | "format=" => format = Format::Text,
                other => miette::bail!(
                    help = "write `--call METHOD,format=json` or `--call METHOD`",
                    "`--call {}`: unknown option `{other}`",
                    self.call
                ),
            }
        }
        Ok((call, format))
    }

    /// `--network`: kiln builds with the host's network by default, as a
    /// BuildKit worker without CNI does; another build-wide default would
    /// change every step's cache key without the build file saying so.
    pub fn check_network(&self) -> miette::Result<()> {
        match self.network.as_deref() {
            None | Some("default" | "host") => Ok(()),
            Some(n @ ("none" | "isolated")) => miette::bail!(
                help = format!(
                    "give the steps that need it `network({n})` in the Kilnfile, or \
                     `RUN --network={n}` in a Dockerfile: the step's cache key then says so"
                ),
                "`--network {n}` as a build-wide default is not supported"
            ),
            Some(n) => miette::bail!(
                help = "use `default` or `host`, or a step's own `network(..)`",
                "`--network {n}`: unknown network mode"
            ),
        }
    }
    /// The outputs `--push` and `--load` stand for, checked before anything
    /// is built: `--push` needs a name, `--load` a podman or docker.
    pub fn outputs(&self, tags: &[String]) -> miette::Result<(Vec<OutputSpec>, Option<Loader>)> {
        let mut out = Vec::new();
        if self.push {
            if tags.is_empty() {
                miette::bail!(
                    help = "name the image with `-t REGISTRY/REPO:TAG`",
                    "`--push` needs a name to push to"
                );
            }
            let spec = format!("type=registry,name={}", tags.join(";"));
            out.push(spec.parse::<OutputSpec>().into_diagnostic()?);
        }
        let loader = if self.load {
            let tool = ["podman", "docker"]
                .into_iter()
                .find_map(on_path)
                .ok_or_else(|| {
                    miette::miette!(
                        help = "install podman (or docker), or write an archive to load \
                                elsewhere: `-o type=docker,dest=image.tar`",
                        "`--load` found neither `podman` nor `docker` on PATH"
                    )
                })?;
            Some(Loader { tool })
        } else {
            None
        };
        Ok((out, loader))
    }

    /// `--label` and `--annotation` values, checked before the build.
    pub fn metadata(&self) -> miette::Result<Metadata> {
        let mut m = Metadata::default();
        for l in &self.labels {
            let (k, v) = key_value(l, "--label", "KEY=VALUE")?;
            m.labels.insert(k, v);
        }
        for a in &self.annotations {
            let (level, kv) = match a.split_once(':') {
                Some((level, kv)) if !level.contains('=') => (level, kv),
                _ => ("manifest", a.as_str()),
            };
            let (k, v) = key_value(kv, "--annotation", "[manifest:]KEY=VALUE")?;
            match level {
                "manifest" => {
                    m.annotations.insert(k, v);
                }
                "index" => {
                    m.index.insert(k, v);
                }
                "manifest-descriptor" => {
                    m.descriptor.insert(k, v);
                }
                "index-descriptor" => {
                    m.index_descriptor.insert(k, v);
                }
                // buildx also takes a platform: `manifest[linux/amd64]:k=v`
                _ => miette::bail!(
                    help = "write `KEY=VALUE` or `manifest:KEY=VALUE`",
                    "`--annotation {a}`: unknown annotation type `{level}`"
                ),
            }
        }
        Ok(m)
    }
}

/// `--label`s and manifest `--annotation`s to put on the built image.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `index:` annotations
    pub index: BTreeMap<String, String>,
    /// `manifest-descriptor:` annotations
    pub descriptor: BTreeMap<String, String>,
    /// `index-descriptor:` annotations: on the index's entry in an OCI
    /// layout's (or archive's) `index.json`
    pub index_descriptor: BTreeMap<String, String>,
}

impl Metadata {
    /// `index:` and `manifest-descriptor:` need an index: an error for a
    /// single-platform build, before it runs.
    pub fn check_levels(&self, multi: bool) -> miette::Result<()> {
        if multi
            || (self.index.is_empty()
                && self.descriptor.is_empty()
                && self.index_descriptor.is_empty())
        {
            return Ok(());
        }
        miette::bail!(
            help = "`index:`, `index-descriptor:` and `manifest-descriptor:` annotate the index: \
                    build several platforms (`--platform linux/amd64,linux/arm64`), or use \
                    `manifest:KEY=VALUE`",
            "index annotations need a multi-platform build: kiln writes one image manifest and \
             no index for one platform"
        )
    }

    /// The index with the `index:` annotations on it and the
    /// `manifest-descriptor:` ones on each image entry (not on attestation
    /// manifests, which have no platform).
    pub fn apply_index(
        &self,
        store: &Store,
        index: kiln_oci::Index,
    ) -> miette::Result<kiln_oci::Index> {
        if self.index.is_empty() && self.descriptor.is_empty() {
            return Ok(index);
        }
        let bytes = store
            .read_blob(&index.digest)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read index {}", index.digest))?;
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).into_diagnostic()?;
        let add = |obj: &mut serde_json::Value, kv: &BTreeMap<String, String>| {
            if kv.is_empty() {
                return;
            }
            let a = &mut obj["annotations"];
            if !a.is_object() {
                *a = serde_json::json!({});
            }
            for (k, val) in kv {
                a[k] = val.clone().into();
            }
        };
        add(&mut v, &self.index);
        if let Some(entries) = v["manifests"].as_array_mut() {
            for e in entries {
                let attestation = e["platform"]["os"] == "unknown";
                if !attestation {
                    add(e, &self.descriptor);
                }
            }
        }
        let bytes = kiln_oci::canonical_json(&v);
        let digest = store.put_blob(&bytes).into_diagnostic()?;
        kiln_oci::Index::load(store, &digest)
            .into_diagnostic()?
            .ok_or_else(|| miette::miette!("the annotated index {digest} does not read back"))
    }

    /// The image with the labels in its config and the annotations on its
    /// manifest. The JSON is edited in place so that fields kiln's types do
    /// not model (Docker's `Healthcheck`, `Shell`, ...) stay as they are.
    pub fn apply(&self, store: &Store, image: Image) -> miette::Result<Image> {
        if self.labels.is_empty() && self.annotations.is_empty() {
            return Ok(image);
        }
        let read = |d: &kiln_oci::Digest| -> miette::Result<serde_json::Value> {
            let bytes = store
                .read_blob(d)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot read blob {d}"))?;
            serde_json::from_slice(&bytes)
                .into_diagnostic()
                .wrap_err_with(|| format!("blob {d} is not JSON"))
        };
        let mut manifest = read(&image.digest)?;
        if !self.labels.is_empty() {
            let mut config = read(&image.config_digest)?;
            let c = config
                .as_object_mut()
                .and_then(|o| {
                    o.entry("config")
                        .or_insert_with(|| serde_json::json!({}))
                        .as_object_mut()
                })
                .ok_or_else(|| miette::miette!("the image config is not a JSON object"))?;
            let labels = c.entry("Labels").or_insert_with(|| serde_json::json!({}));
            if labels.is_null() {
                *labels = serde_json::json!({});
            }
            let labels = labels
                .as_object_mut()
                .ok_or_else(|| miette::miette!("the image config's labels are not an object"))?;
            for (k, v) in &self.labels {
                labels.insert(k.clone(), v.clone().into());
            }
            let bytes = kiln_oci::canonical_json(&config);
            let digest = store.put_blob(&bytes).into_diagnostic()?;
            manifest["config"]["digest"] = digest.to_string().into();
            manifest["config"]["size"] = bytes.len().into();
        }
        if !self.annotations.is_empty() {
            let a = manifest
                .as_object_mut()
                .ok_or_else(|| miette::miette!("the image manifest is not a JSON object"))?
                .entry("annotations")
                .or_insert_with(|| serde_json::json!({}));
            let a = a
                .as_object_mut()
                .ok_or_else(|| miette::miette!("the manifest's annotations are not an object"))?;
            for (k, v) in &self.annotations {
                a.insert(k.clone(), v.clone().into());
            }
        }
        let bytes = kiln_oci::canonical_json(&manifest);
        let digest = store.put_blob(&bytes).into_diagnostic()?;
        Image::load(store, &digest)
            .into_diagnostic()
            .wrap_err("cannot read back the labelled image")
    }
}

impl Loader {
    /// Writes a docker archive of the image and runs `TOOL load` on it.
    pub fn load(&self, store: &Store, image: &Image, tags: &[String]) -> miette::Result<()> {
        let tmp = std::env::temp_dir().join(format!("kiln-load-{}.tar", std::process::id()));
        let names = tags
            .iter()
            .map(|t| super::tag::full_name(t))
            .collect::<Vec<_>>();
        let mut spec = format!("type=docker,dest={}", tmp.display());
        if !names.is_empty() {
            spec.push_str(&format!(",name={}", names.join(";")));
        }
        let spec = spec.parse::<OutputSpec>().into_diagnostic()?;
        let result = super::save::write_output(store, image, &spec).and_then(|()| {
            let out = std::process::Command::new(&self.tool)
                .arg("load")
                .arg("-i")
                .arg(&tmp)
                .stdout(std::process::Stdio::null())
                .output()
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot run `{}`", self.tool.display()))?;
            if !out.status.success() {
                miette::bail!(
                    "`{} load` failed ({}): {}",
                    self.tool.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        });
        let _ = std::fs::remove_file(&tmp);
        result
    }
}

/// The steps `--no-cache-filter` names: a Kilnfile binding's steps are
/// called `NAME: ...`, a Dockerfile stage's `[NAME n/m] ...` (either after
/// `[PLATFORM] ` in a multi-platform build). A name with
/// no step is an error rather than a filter that silently does nothing.
pub fn no_cache_for(
    names: &[String],
    defs: &[kiln_dag::Definition],
) -> miette::Result<std::collections::HashSet<kiln_dag::Digest>> {
    let mut out = std::collections::HashSet::new();
    for n in names.iter().filter(|n| !n.is_empty()) {
        let (kiln, docker) = (format!("{n}: "), format!("[{n} "));
        let before = out.len();
        let belongs = |name: &str| name.starts_with(&kiln) || name.starts_with(&docker);
        for v in defs.iter().flat_map(|d| &d.vertices) {
            let name = v.meta.name.as_deref().unwrap_or_default();
            // a multi-platform build's own steps: `[linux/arm64] NAME...`
            let unprefixed = name
                .strip_prefix('[')
                .and_then(|r| r.split_once("] "))
                .map(|(_, r)| r);
            if belongs(name) || unprefixed.is_some_and(belongs) {
                out.insert(v.digest);
            }
        }
        if out.len() == before {
            miette::bail!(
                help = "name a Kilnfile binding or a Dockerfile stage that the target builds on",
                "`--no-cache-filter {n}`: no step of this build belongs to `{n}`"
            );
        }
    }
    Ok(out)
}

/// The build file and the compile options a `--call` reads.
fn call_input(
    input: &super::args::BuildFileArgs,
    target: &super::args::TargetArg,
    run: kiln_dag::RunSettings,
) -> miette::Result<(super::buildfile::BuildFile, kiln_frontend::Options)> {
    let file = super::buildfile::load(input.file.as_deref(), &input.context)?;
    let opts = kiln_frontend::Options {
        target: target.target.clone(),
        build_args: super::check::parse_build_args(&input.build_args)?,
        run,
        ..Default::default()
    };
    Ok((file, opts))
}

/// `--call outline`: the build args (defaults, descriptions), the target
/// and the secrets and SSH agents its steps mount, as buildx prints
/// BuildKit's answer (or its JSON). Base images are not read: a
/// Dockerfile's outline needs no registry.
pub fn print_outline(
    input: &super::args::BuildFileArgs,
    target: &super::args::TargetArg,
    run: kiln_dag::RunSettings,
    format: Format,
) -> miette::Result<std::process::ExitCode> {
    let (file, opts) = call_input(input, target, run)?;
    let outline = match file.kind {
        super::buildfile::Kind::Kilnfile => {
            kiln_frontend::outline::kilnfile(&file.name, &file.text, &opts)
        }
        super::buildfile::Kind::Dockerfile => kiln_dockerfile::outline(
            &file.name,
            &file.text,
            &opts,
            &kiln_dockerfile::NoBaseImages,
        ),
    };
    if outline.name.is_none() {
        // the build file does not compile: say why, as `--call check` would
        if let Err(diags) = file.compile(&opts, &kiln_dockerfile::NoBaseImages) {
            super::check::report(&diags);
            return Ok(std::process::ExitCode::FAILURE);
        }
    }
    match format {
        Format::Json => {
            let v = outline.to_json(&file.text);
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("json values serialize")
            );
        }
        Format::Text => print!("{}", outline.to_text()),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `--call targets`: the build file's targets, one a line, the one built
/// without `--target` marked `(default)`.
pub fn print_targets(
    input: &super::args::BuildFileArgs,
    target: &super::args::TargetArg,
    format: Format,
) -> miette::Result<std::process::ExitCode> {
    let (file, opts) = call_input(input, target, Default::default())?;
    let compiled = match file.compile(&opts, &kiln_dockerfile::NoBaseImages) {
        Ok(c) => c,
        Err(diags) => {
            super::check::report(&diags);
            return Ok(std::process::ExitCode::FAILURE);
        }
    };
    let last = compiled.targets.last().cloned();
    if format == Format::Json {
        // BuildKit's `frontend.targets` answer, as buildx prints it
        let list: Vec<serde_json::Value> = (compiled.targets.iter())
            .map(|t| {
                let mut v = serde_json::json!({"name": t});
                if Some(t) == last.as_ref() {
                    v["default"] = true.into();
                }
                v
            })
            .collect();
        let v = serde_json::json!({ "targets": list });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("json values serialize")
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for t in &compiled.targets {
        if Some(t) == last.as_ref() {
            println!("{t} (default)");
        } else {
            println!("{t}");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `--iidfile`: the id alone, no newline (as docker writes it).
pub fn write_iidfile(path: &Path, image: &Image) -> miette::Result<()> {
    std::fs::write(path, image.digest.to_string())
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write `{}`", path.display()))
}

/// buildx's shorthand: a cache spec without `=` is `type=registry,ref=REF`.
pub fn cache_shorthand(spec: &str) -> String {
    if spec.contains('=') {
        spec.to_string()
    } else {
        format!("type=registry,ref={spec}")
    }
}

fn key_value(s: &str, flag: &str, form: &str) -> miette::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => miette::bail!(
            help = format!("write `{flag} {form}`"),
            "`{flag} {s}`: no `KEY=`"
        ),
    }
}

fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt as _;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
