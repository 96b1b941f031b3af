//! `--sbom`, `--provenance` and `--attest` of `kiln build`: which
//! attestations a build gets (buildx's spellings and BuildKit's defaults,
//! see docs/build.md), making them (kiln-sbom), attaching them to the image
//! (kiln-oci's attestation layout) and writing them with each `-o` output.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_oci::attestation::{self, Attested, Layout, Statement};
use kiln_oci::{Image, OutputKind, OutputSpec, Store};
use kiln_sbom::Format;
use kiln_sbom::provenance::{BuildInputs, Mode};
use miette::{IntoDiagnostic, WrapErr};

/// The attestation flags of `kiln build`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AttestOpts {
    /// Attach an SBOM (SPDX 2.3 JSON): `--sbom`, `--sbom=true|false`, or
    /// `--sbom=format=cyclonedx` for CycloneDX 1.6 [default: on for images
    /// built on `static_base()`, off for others; none with
    /// `BUILDX_NO_DEFAULT_ATTESTATIONS=1`]
    #[arg(long, value_name = "BOOL|format=FORMAT", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    #[arg(value_parser = check_sbom)]
    pub sbom: Option<String>,

    /// Attach SLSA v1 provenance: `--provenance=true|false`,
    /// `--provenance=mode=min|max` (`max` adds build arg values and the
    /// steps; secrets never appear) [default: mode=min, as buildx's; none
    /// with `BUILDX_NO_DEFAULT_ATTESTATIONS=1`]
    #[arg(long, value_name = "BOOL|mode=MODE", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    #[arg(value_parser = check_provenance)]
    pub provenance: Option<String>,

    /// buildx's long form: `type=sbom[,format=cyclonedx]`,
    /// `type=provenance[,mode=max]`, `type=...,disabled=true`. Repeatable
    #[arg(long = "attest", value_name = "type=sbom|provenance[,KEY=VALUE]", value_parser = check_attest)]
    pub attest: Vec<String>,

    /// Attach attestations as BuildKit does (`index`: an index entry
    /// annotated `vnd.docker.reference.type=attestation-manifest`) or as OCI
    /// 1.1 referrers (`referrers`: the manifest names the image as `subject`)
    #[arg(long, value_name = "LAYOUT", default_value = "index", value_parser = ["index", "referrers"])]
    pub attest_layout: String,
}

/// Flag values are checked when the command line is parsed, before anything
/// is built.
fn check(opts: AttestOpts) -> Result<(), String> {
    opts.plan(false).map(drop).map_err(|e| e.to_string())
}

fn check_sbom(s: &str) -> Result<String, String> {
    check(AttestOpts {
        sbom: Some(s.into()),
        ..Default::default()
    })
    .map(|()| s.to_string())
}

fn check_provenance(s: &str) -> Result<String, String> {
    check(AttestOpts {
        provenance: Some(s.into()),
        ..Default::default()
    })
    .map(|()| s.to_string())
}

fn check_attest(s: &str) -> Result<String, String> {
    check(AttestOpts {
        attest: vec![s.into()],
        ..Default::default()
    })
    .map(|()| s.to_string())
}

/// What a build attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub sbom: Option<Format>,
    pub provenance: Option<Mode>,
    pub layout: Layout,
}

fn bool_value(flag: &str, v: &str) -> miette::Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => miette::bail!("`{flag}={v}`: expected true or false"),
    }
}

fn sbom_setting(flag: &str, kv: &BTreeMap<String, String>) -> miette::Result<Option<Format>> {
    if kv.get("disabled").is_some_and(|v| v == "true") {
        return Ok(None);
    }
    match kv.get("format").map(String::as_str) {
        None | Some("spdx") => Ok(Some(Format::Spdx)),
        Some("cyclonedx") => Ok(Some(Format::CycloneDx)),
        Some(f) => miette::bail!("`{flag}`: unknown SBOM format `{f}`; use spdx or cyclonedx"),
    }
}

fn provenance_setting(flag: &str, kv: &BTreeMap<String, String>) -> miette::Result<Option<Mode>> {
    if kv.get("disabled").is_some_and(|v| v == "true") {
        return Ok(None);
    }
    match kv.get("mode").map(String::as_str) {
        None | Some("min") => Ok(Some(Mode::Min)),
        Some("max") => Ok(Some(Mode::Max)),
        Some(m) => miette::bail!("`{flag}`: unknown provenance mode `{m}`; use min or max"),
    }
}

/// The flag's fields as buildx reads them (CSV, `kiln_types::spec`).
fn key_values(flag: &str, s: &str) -> miette::Result<BTreeMap<String, String>> {
    let fields = kiln_types::spec::fields(s).map_err(|e| miette::miette!("`{flag}`: {e}"))?;
    fields
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(miette::miette!("`{flag}`: `{p}` is not KEY=VALUE")),
        })
        .collect()
}

impl AttestOpts {
    /// The attestations to make; `static_rooted` says whether the image was
    /// built on `static_base()` (the SBOM's default).
    pub fn plan(&self, static_rooted: bool) -> miette::Result<Plan> {
        let defaults = !no_default_attestations();
        let mut sbom = (defaults && static_rooted).then_some(Format::Spdx);
        let mut provenance = defaults.then_some(Mode::Min);
        if let Some(v) = &self.sbom {
            let flag = format!("--sbom={v}");
            sbom = if v.contains('=') {
                sbom_setting(&flag, &key_values(&flag, v)?)?
            } else {
                bool_value("--sbom", v)?.then_some(Format::Spdx)
            };
        }
        if let Some(v) = &self.provenance {
            let flag = format!("--provenance={v}");
            provenance = if v.contains('=') {
                provenance_setting(&flag, &key_values(&flag, v)?)?
            } else {
                bool_value("--provenance", v)?.then_some(Mode::Min)
            };
        }
        for a in &self.attest {
            let flag = format!("--attest {a}");
            let kv = key_values(&flag, a)?;
            match kv.get("type").map(String::as_str) {
                Some("sbom") => sbom = sbom_setting(&flag, &kv)?,
                Some("provenance") => provenance = provenance_setting(&flag, &kv)?,
                Some(t) => miette::bail!(
                    help = "use type=sbom or type=provenance",
                    "`{flag}`: unknown attestation type `{t}`"
                ),
                None => miette::bail!(
                    help = "e.g. `--attest type=provenance,mode=max`",
                    "`{flag}`: missing `type=`"
                ),
            }
        }
        Ok(Plan {
            sbom,
            provenance,
            layout: if self.attest_layout == "referrers" {
                Layout::Referrers
            } else {
                Layout::Index
            },
        })
    }
}

/// buildx's `BUILDX_NO_DEFAULT_ATTESTATIONS`: set to a true value (Go's
/// `strconv.ParseBool`), a build attaches only what its flags ask for.
fn no_default_attestations() -> bool {
    std::env::var("BUILDX_NO_DEFAULT_ATTESTATIONS")
        .is_ok_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// The `--secret` ids and values, which provenance must never contain.
pub fn secrets_of(flags: &[String]) -> miette::Result<kiln_sbom::provenance::Secrets> {
    let values = super::secret::read(flags).map_err(|e| miette::miette!("{e}"))?;
    let mut s = kiln_sbom::provenance::Secrets::default();
    for f in flags {
        // `read` parsed every flag already
        let (id, _) = super::secret::SecretSource::parse(f).map_err(|e| miette::miette!("{e}"))?;
        if let Some(v) = values.get(&id) {
            s.values.push(v.to_vec());
        }
        s.ids.push(id);
    }
    Ok(s)
}

/// The stage a vertex's root filesystem chain starts from.
fn chain_source<'a>(
    by: &BTreeMap<kiln_dag::Digest, &'a kiln_dag::Vertex>,
    from: &kiln_dag::Digest,
) -> Option<&'a kiln_dag::SourceOp> {
    let mut cur = by.get(from)?;
    loop {
        match &cur.op {
            kiln_dag::Op::Source(s) => return Some(s),
            _ => cur = by.get(cur.inputs.first()?)?,
        }
    }
}

/// The manifest digest a registry source resolved to (after the build, its
/// local name or its pinned digest).
fn resolved(store: &Store, reference: &str) -> Option<kiln_types::Digest> {
    if let Some((_, d)) = reference.rsplit_once('@') {
        return kiln_types::Digest::parse(d).ok();
    }
    Image::resolve(store, reference).ok().map(|i| i.digest)
}

/// Every registry image the build started from, with its manifest digest.
pub fn base_images(store: &Store, def: &kiln_dag::Definition) -> Vec<(String, kiln_types::Digest)> {
    let mut out: Vec<(String, kiln_types::Digest)> = def
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            kiln_dag::Op::Source(kiln_dag::SourceOp::Image { reference, .. }) => {
                resolved(store, reference).map(|d| (reference.clone(), d))
            }
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the final stage copied out of other stages: the GENERATED_FROM
/// relationships a scanner cannot know.
pub fn origins(store: &Store, def: &kiln_dag::Definition) -> Vec<kiln_sbom::Origin> {
    let by: BTreeMap<kiln_dag::Digest, &kiln_dag::Vertex> =
        def.vertices.iter().map(|v| (v.digest, v)).collect();
    let mut out = Vec::new();
    let mut cur = by.get(&def.root).copied();
    while let Some(v) = cur {
        if let kiln_dag::Op::File(f) = &v.op {
            for a in &f.actions {
                let kiln_dag::FileAction::Copy(c) = a else {
                    continue;
                };
                let dest = &c.dest;
                let Some(src) = v.inputs.get(c.from) else {
                    continue;
                };
                let base = match chain_source(&by, src) {
                    Some(kiln_dag::SourceOp::Image { reference, .. }) => {
                        resolved(store, reference).map(|d| (reference.clone(), d))
                    }
                    // context files are not a build stage
                    Some(kiln_dag::SourceOp::Context { .. }) | None => continue,
                    Some(_) => None,
                };
                let stage = by
                    .get(src)
                    .and_then(|s| s.meta.name.clone())
                    .unwrap_or_else(|| src.short());
                let dest = if dest.starts_with('/') {
                    dest.clone()
                } else {
                    format!("/{dest}")
                };
                out.push(kiln_sbom::Origin {
                    path: dest,
                    stage,
                    base,
                });
            }
        }
        cur = v.inputs.first().and_then(|i| by.get(i).copied());
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The image's SBOM document, from the store's `sbom` record when this
/// image was described before (a no-op rebuild reads no layer).
pub fn sbom_document(
    store: &Store,
    image: &Image,
    name: &str,
    format: Format,
    epoch: i64,
    origins: &[kiln_sbom::Origin],
) -> miette::Result<Vec<u8>> {
    let key = format!("{}\0{name}\0{format:?}\0{epoch}\0{origins:?}", image.digest);
    let key = kiln_types::Digest::of(key.as_bytes()).to_string();
    if let Ok(Some(doc)) = store.get_record("sbom", key.as_bytes()) {
        return Ok(doc);
    }
    let sbom = kiln_sbom::generate(store, image, name, epoch, origins)
        .into_diagnostic()
        .wrap_err("cannot read the image for its SBOM")?;
    let doc = format.render(&sbom).into_diagnostic()?;
    if let Err(e) = store.put_record("sbom", key.as_bytes(), &doc) {
        eprintln!("warning: the SBOM is not cached in the store: {e}");
    }
    Ok(doc)
}

/// Makes the planned statements for `image` and attaches them in the store.
/// `reuse` names what they say apart from times: when a build with the same
/// key attached them before (a no-op rebuild), those are reused, written
/// nothing, and keep that build's times (they are cached with the image).
pub fn attach(
    store: &Store,
    image: &Image,
    name: Option<&str>,
    plan: &Plan,
    reuse: Option<&str>,
    sbom: impl FnOnce() -> miette::Result<Vec<u8>>,
    provenance: impl FnOnce(Mode) -> miette::Result<Vec<u8>>,
) -> miette::Result<Option<(Attested, Vec<Statement>)>> {
    if plan.sbom.is_none() && plan.provenance.is_none() {
        return Ok(None);
    }
    let key = reuse.map(|r| {
        kiln_types::Digest::of(format!("{}\0{name:?}\0{plan:?}\0{r}", image.digest).as_bytes())
            .to_string()
    });
    if let Some(k) = &key
        && let Ok(Some(index)) = store.get_record("attestation-reuse", k.as_bytes())
        && let Ok(index) = kiln_types::Digest::parse(&String::from_utf8_lossy(&index))
        && let Ok(found) = attestation::load(store, image, &index)
    {
        return Ok(Some(found));
    }
    let c = &image.config;
    let platform = match c.variant() {
        Some(v) => format!("{}/{}/{v}", c.os(), c.architecture()),
        None => format!("{}/{}", c.os(), c.architecture()),
    };
    let subject = || kiln_sbom::statement::subject(name, &image.digest, &platform);
    let mut statements = Vec::new();
    if let Some(f) = plan.sbom {
        let doc = sbom()?;
        statements.push(Statement {
            predicate_type: f.predicate_type().to_string(),
            bytes: kiln_sbom::statement::wrap(f.predicate_type(), subject(), &doc)
                .into_diagnostic()?,
        });
    }
    if let Some(m) = plan.provenance {
        let p = provenance(m)?;
        statements.push(Statement {
            predicate_type: kiln_sbom::statement::PREDICATE_SLSA1.to_string(),
            bytes: kiln_sbom::statement::wrap(kiln_sbom::statement::PREDICATE_SLSA1, subject(), &p)
                .into_diagnostic()?,
        });
    }
    let att = attestation::attach(store, image, &statements, plan.layout)
        .into_diagnostic()
        .wrap_err("cannot attach the attestations")?;
    if let Some(k) = &key
        && let Err(e) = store.put_record(
            "attestation-reuse",
            k.as_bytes(),
            att.index.to_string().as_bytes(),
        )
    {
        eprintln!("warning: the attestations are not cached in the store: {e}");
    }
    Ok(Some((att, statements)))
}

/// The provenance predicate of this build.
pub fn provenance(
    inputs: &BuildInputs,
    secrets: &kiln_sbom::provenance::Secrets,
    mode: Mode,
) -> miette::Result<Vec<u8>> {
    kiln_sbom::provenance::predicate(inputs, secrets, mode).into_diagnostic()
}

/// Writes one `-o` output with the attestations: an index for `oci`,
/// `oci-layout`, `registry` and `image` (named, and pushed with
/// `push=true`, as the index), statement files beside the root filesystem
/// of `local` and `tar` (a `tar` to stdout without them); `docker` without
/// them, as BuildKit's docker exporter.
// ExportError carries its path and source by value, as kiln-oci's writers do
#[allow(clippy::result_large_err)]
pub fn write_output(
    store: &Store,
    image: &Image,
    attested: Option<&(Attested, Vec<Statement>)>,
    spec: &OutputSpec,
) -> miette::Result<()> {
    let Some((att, statements)) = attested else {
        return super::save::write_output(store, image, spec);
    };
    let to_stdout = spec.dest.as_deref() == Some(Path::new("-"));
    let name = spec.names.first().map(String::as_str);
    let ctx = || {
        format!(
            "cannot write `type={}` output with its attestations",
            spec.kind
        )
    };
    match spec.kind {
        OutputKind::Oci if to_stdout => super::save::write_stdout(|out| {
            attestation::write_oci_archive(store, image, att, name, out)
                .map(drop)
                .into_diagnostic()
                .wrap_err_with(ctx)
        }),
        OutputKind::Oci => {
            let dest = spec
                .dest
                .as_deref()
                .expect("parsed specs of type=oci have a dest");
            kiln_oci::write_file_atomic(dest, |w| {
                attestation::write_oci_archive(store, image, att, name, w).map(drop)
            })
            .into_diagnostic()
            .wrap_err_with(ctx)
        }
        OutputKind::OciLayout => {
            let dest = spec
                .dest
                .as_deref()
                .expect("parsed specs of type=oci-layout have a dest");
            attestation::write_oci_layout(store, image, att, name, dest)
                .into_diagnostic()
                .wrap_err_with(ctx)
        }
        // named (and pushed) as the index of the image and its attestation
        // manifest, as BuildKit's image exporter does
        OutputKind::Registry => super::save::name_and_push(store, &att.index, spec),
        OutputKind::Local => {
            super::save::write_output(store, image, spec)?;
            let dest = spec
                .dest
                .as_deref()
                .expect("parsed specs of type=local have a dest");
            attestation::write_statement_files(dest, statements)
                .into_diagnostic()
                .wrap_err_with(ctx)
        }
        OutputKind::Tar if !to_stdout => {
            let dest = spec
                .dest
                .as_deref()
                .expect("parsed specs of type=tar have a dest");
            let files: Vec<(&str, &[u8])> = statements
                .iter()
                .map(|s| {
                    (
                        attestation::local_file_name(&s.predicate_type),
                        s.bytes.as_slice(),
                    )
                })
                .collect();
            kiln_oci::write_file_atomic(dest, |w| {
                kiln_oci::write_flat_tar_with(store, image, &files, w)
                    .map(drop)
                    .map_err(kiln_oci::ExportError::from)
            })
            .into_diagnostic()
            .wrap_err_with(ctx)
        }
        _ => super::save::write_output(store, image, spec),
    }
}

/// What `kiln build` knows when its image is done.
pub struct Build<'a> {
    pub store: &'a Store,
    pub image: &'a Image,
    pub def: &'a kiln_dag::Definition,
    pub opts: &'a AttestOpts,
    /// the build file's name as given and its text
    pub file: &'a str,
    pub text: &'a str,
    pub target: &'a str,
    pub platform: Option<&'a kiln_dag::Platform>,
    pub build_args: &'a BTreeMap<String, String>,
    pub secret_flags: &'a [String],
    pub steps: &'a [kiln_solver::StepReport],
    pub started: std::time::Instant,
    pub epoch: i64,
    pub static_rooted: bool,
    /// the name the image is known by (first tag or output name)
    pub name: Option<&'a str>,
}

/// The OCI distribution spec's fallback for registries without the
/// referrers API: `fallback` (the index listing the attestation manifest
/// whose `subject` is `image`) under the tag `sha256-<image hex>` of
/// `dest`'s repository.
pub(crate) fn push_referrers_fallback(
    store: &Store,
    image: &kiln_types::Digest,
    fallback: &kiln_types::Digest,
    dest: &kiln_registry::Reference,
    insecure: bool,
) -> miette::Result<()> {
    let tag = format!("sha256-{}", image.hex());
    let referrers = dest.with_tag(&tag).into_diagnostic()?;
    super::push::push_to(
        store,
        fallback,
        &referrers,
        &Default::default(),
        insecure,
        true,
    )
    .map(drop)
}

/// With `--attest-layout referrers`, the fallback tag of every platform's
/// image in each name a multi-platform `type=registry,push=true` output
/// pushed (its index carries the attestation manifests, found by digest
/// only through these tags on a registry without the referrers API).
pub(crate) fn push_index_referrers(
    store: &Store,
    attested: &[Option<(Attested, Vec<Statement>)>],
    spec: &OutputSpec,
) -> miette::Result<()> {
    if spec.kind != OutputKind::Registry || !spec.push {
        return Ok(());
    }
    let insecure = spec.options.get("registry.insecure").map(String::as_str) == Some("true");
    for n in &spec.names {
        let dest = kiln_registry::Reference::parse(n)
            .into_diagnostic()?
            .normalized();
        for (att, _) in attested.iter().flatten() {
            if let Some(fallback) = att.referrers_index {
                push_referrers_fallback(store, &att.image, &fallback, &dest, insecure)?;
            }
        }
    }
    Ok(())
}

/// The `.deb`s of the package sets in `image`, as the worker recorded them
/// for each package layer it made.
fn debs_of(store: &Store, image: &Image) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for l in &image.layers {
        for d in kiln_worker::packages::debs_of(store, &l.digest.to_string()).unwrap_or_default() {
            out.push((d.name, d.version, d.architecture, d.sha256.hex()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Makes and attaches the attestations `kiln build` was asked for (none
/// when every one is off).
pub fn for_build(b: Build<'_>) -> miette::Result<Option<(Attested, Vec<Statement>)>> {
    let plan = b.opts.plan(b.static_rooted)?;
    let name = b
        .name
        .map(str::to_string)
        .unwrap_or_else(|| b.image.digest.to_string());
    let platform = b.platform.cloned().unwrap_or_else(kiln_dag::Platform::host);
    let context_keys: Vec<String> = b
        .steps
        .iter()
        .filter(|s| {
            b.def.vertices.iter().any(|v| {
                v.digest == s.vertex
                    && matches!(
                        v.op,
                        kiln_dag::Op::Source(kiln_dag::SourceOp::Context { .. })
                    )
            })
        })
        .map(|s| s.key.to_string())
        .collect();
    let mut inputs = BuildInputs {
        file_path: b.file.to_string(),
        file_sha256: kiln_types::Digest::of(b.text.as_bytes()).hex(),
        frontend: if b.file.contains("Dockerfile") {
            "dockerfile"
        } else {
            "kilnfile"
        }
        .into(),
        target: Some(b.target.to_string()),
        platform: platform.to_string(),
        build_args: b.build_args.clone(),
        context_digest: (!context_keys.is_empty())
            .then(|| kiln_types::Digest::of(context_keys.join("\n").as_bytes()).to_string()),
        base_images: base_images(b.store, b.def),
        debs: debs_of(b.store, b.image),
        // which steps ran is not part of what the image is: a rebuild that
        // found them cached reuses the attestations of the build that ran them
        steps: b
            .steps
            .iter()
            .map(|s| (s.vertex.to_string(), s.name.clone().unwrap_or_default()))
            .collect(),
        builder_platform: kiln_dag::Platform::host().to_string(),
        started: 0,
        finished: 0,
    };
    let secrets = secrets_of(b.secret_flags)?;
    // everything the statements say but the times
    let reuse = match plan.provenance {
        Some(m) => String::from_utf8_lossy(&provenance(&inputs, &secrets, m)?).into_owned(),
        None => String::new(),
    };
    attach(
        b.store,
        b.image,
        b.name,
        &plan,
        Some(&reuse),
        || {
            let format = plan.sbom.unwrap_or(Format::Spdx);
            sbom_document(
                b.store,
                b.image,
                &name,
                format,
                b.epoch,
                &origins(b.store, b.def),
            )
        },
        |mode| {
            // wall-clock times, unless SOURCE_DATE_EPOCH asks for a
            // reproducible build: then the build's epoch, so the index and
            // its digest are the same on every run
            let (started, finished) = if std::env::var_os("SOURCE_DATE_EPOCH").is_some() {
                (b.epoch, b.epoch)
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                (now - b.started.elapsed().as_secs() as i64, now)
            };
            inputs.started = started;
            inputs.finished = finished;
            provenance(&inputs, &secrets, mode)
        },
    )
}
