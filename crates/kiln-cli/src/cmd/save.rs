//! `kiln save`: write a local image to an archive.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use kiln_oci::{Image, OutputKind, OutputSpec, Store};
use miette::{IntoDiagnostic, WrapErr};

use super::images::open_store;

/// Write a local image to an OCI or docker archive
///
/// Writes the image NAME (a name from `kiln images` or a `sha256:` manifest
/// digest) as an OCI archive (`--format oci`, for `skopeo`,
/// `podman run oci-archive:FILE`, `umoci`) or a docker archive (`--format
/// docker`, for `docker load` and `podman load`). `-o` may also be a full
/// output spec such as `type=oci-layout,dest=DIR` or `type=local,dest=DIR`.
/// Without `-o`, the archive goes to stdout (never to a terminal). The file
/// appears atomically: a failed save leaves nothing behind. An image built
/// with attestations is saved with them (the index of the image and its
/// attestation manifest in OCI archives and layouts, statement files beside
/// a `type=local` or `type=tar` root filesystem); a docker archive holds
/// the image alone, as BuildKit's docker exporter writes it.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub registry: super::registry::RegistryOpts,

    /// The image to save
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Destination file (`-` for stdout), or an output spec `type=...,dest=...`
    #[arg(short, long, value_name = "FILE|SPEC")]
    pub output: Option<String>,

    /// Archive format when `-o` is a plain file
    #[arg(long, value_enum, default_value_t = SaveFormat::Oci)]
    pub format: SaveFormat,

    /// From a multi-platform image, save only this platform's image
    /// (`os/arch[/variant]`); without it the whole index is saved (OCI
    /// formats only)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<kiln_dag::Platform>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveFormat {
    /// OCI image layout in a tar
    Oci,
    /// docker-archive (manifest.json + repositories)
    Docker,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let store = open_store()?;
    let index = resolve_index(&store, &args.name)?;
    let kind = match args.format {
        SaveFormat::Oci => "oci",
        SaveFormat::Docker => "docker",
    };
    let spec = match args.output.as_deref() {
        Some(s) if s.contains('=') => s.parse::<OutputSpec>().into_diagnostic()?,
        Some(file) => format!("type={kind},dest={file}")
            .parse()
            .into_diagnostic()?,
        None => format!("type={kind},dest=-").parse().into_diagnostic()?,
    };
    let mut spec = spec;
    if spec.names.is_empty() && !args.name.starts_with("sha256:") {
        spec.names.push(super::tag::full_name(&args.name));
    }
    // one image and its attestations: written as the build's `-o` outputs
    // write them (the index for OCI formats and registries, statement files
    // for `local`/`tar`, none in a docker archive)
    if let Some(index) = &index
        && let Some(d) = index.single()
        && (index.entries.iter()).any(|e| e.attests.is_some() || e.referrer)
    {
        let image = Image::load(&store, &d).into_diagnostic()?;
        if let Some(p) = &args.platform {
            check_platform(&args.name, &image, p)?;
        }
        let att = kiln_oci::attestation::load(&store, &image, &index.digest)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read the attestations of `{}`", args.name))?;
        super::attest::write_output(&store, &image, Some(&att), &spec)?;
        return Ok(ExitCode::SUCCESS);
    }
    let image = match (&index, &args.platform) {
        (Some(index), None) => {
            write_index_output(&store, index, &spec, &Default::default())?;
            return Ok(ExitCode::SUCCESS);
        }
        (Some(index), Some(p)) => {
            let Some(d) = index.select(p) else {
                miette::bail!(
                    help = "name one of the image's platforms, or leave `--platform` out to save them all",
                    "`{}` has no image for {p} (it has {})",
                    args.name,
                    platform_list(index)
                );
            };
            Image::load(&store, &d).into_diagnostic()?
        }
        (None, _) => {
            let image = Image::resolve(&store, &args.name).into_diagnostic()?;
            if let Some(p) = &args.platform {
                check_platform(&args.name, &image, p)?;
            }
            image
        }
    };
    write_output(&store, &image, &spec)?;
    Ok(ExitCode::SUCCESS)
}

/// `--platform` of a single-platform image must be its platform.
fn check_platform(name: &str, image: &Image, p: &kiln_dag::Platform) -> miette::Result<()> {
    let has = kiln_oci::index::platform_of(image);
    if has != *p {
        miette::bail!("`{name}` is an image for {has} only, not for {p}");
    }
    Ok(())
}

/// The multi-platform index a local name (or `sha256:` digest) points at,
/// `None` when it names a single image (or nothing: [`Image::resolve`]
/// says so).
pub(crate) fn resolve_index(store: &Store, name: &str) -> miette::Result<Option<kiln_oci::Index>> {
    let digest = match kiln_store::Digest::parse(name) {
        Ok(d) => Some(d),
        Err(_) => {
            let tags = store.tags().into_diagnostic()?;
            kiln_oci::reference::candidates(name)
                .into_iter()
                .find_map(|c| tags.get(&c).copied())
        }
    };
    match digest {
        Some(d) if store.has_blob(&d) => kiln_oci::Index::load(store, &d).into_diagnostic(),
        _ => Ok(None),
    }
}

/// `linux/amd64, linux/arm64`
pub(crate) fn platform_list(index: &kiln_oci::Index) -> String {
    (index.platforms().iter())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes a multi-platform image (its index, every platform's image and
/// attestation manifest) to one `-o` spec that can hold an index.
// ExportError carries its path and source by value, as kiln-oci's writers do
#[allow(clippy::result_large_err)]
/// `descriptor`: annotations of the index's entry in the layout's
/// `index.json` (`--annotation index-descriptor:K=V`).
pub(crate) fn write_index_output(
    store: &Store,
    index: &kiln_oci::Index,
    spec: &OutputSpec,
    descriptor: &std::collections::BTreeMap<String, String>,
) -> miette::Result<()> {
    let name = spec.names.first().map(String::as_str);
    let ctx = || {
        format!(
            "cannot write the multi-platform image as `type={}`",
            spec.kind
        )
    };
    match spec.kind {
        OutputKind::Registry => name_and_push(store, &index.digest, spec),
        OutputKind::Oci | OutputKind::OciLayout => {
            let blobs = index.blobs(store).into_diagnostic().wrap_err_with(ctx)?;
            let dest = spec
                .dest
                .as_deref()
                .expect("parsed specs of type=oci and oci-layout have a dest");
            if spec.kind == OutputKind::OciLayout {
                return kiln_oci::index::write_oci_layout(
                    store,
                    &index.digest,
                    index.size,
                    &blobs,
                    name,
                    descriptor,
                    dest,
                )
                .into_diagnostic()
                .wrap_err_with(ctx);
            }
            let archive = |w: &mut dyn std::io::Write| {
                kiln_oci::index::write_oci_archive(
                    store,
                    &index.digest,
                    index.size,
                    &blobs,
                    name,
                    descriptor,
                    w,
                )
                .map(drop)
            };
            if dest == std::path::Path::new("-") {
                return write_stdout(|out| archive(out).into_diagnostic().wrap_err_with(ctx));
            }
            kiln_oci::write_file_atomic(dest, |w| archive(w))
                .into_diagnostic()
                .wrap_err_with(ctx)
        }
        other => miette::bail!(
            help = "save one platform with `--platform os/arch`, or use `--format oci` / `type=oci-layout`",
            "`type={other}` holds one platform's image; this image has {}",
            platform_list(index)
        ),
    }
}

/// Writes `image` to one `-o` spec; `dest=-` goes to stdout. Shared by the
/// commands that export (`save`, `base static`, ...).
pub(crate) fn write_output(store: &Store, image: &Image, spec: &OutputSpec) -> miette::Result<()> {
    let to_stdout = spec.dest.as_deref() == Some(std::path::Path::new("-"));
    if spec.kind == OutputKind::Registry {
        // `type=image` names the image in the local store and pushes only
        // with `push=true`; `type=registry` always pushes.
        name_and_push(store, &image.digest, spec)?;
        return Ok(());
    }
    if !to_stdout {
        return kiln_oci::export(store, image, spec)
            .into_diagnostic()
            .wrap_err_with(|| {
                format!(
                    "cannot write `type={}` output to `{}`",
                    spec.kind,
                    display(&spec.dest)
                )
            });
    }
    let name = spec.names.first().map(String::as_str);
    match spec.kind {
        OutputKind::Oci => write_stdout(|out| {
            kiln_oci::write_oci_archive(store, image, name, out)
                .map(drop)
                .into_diagnostic()
        }),
        OutputKind::Docker => write_stdout(|out| {
            kiln_oci::write_docker_archive(store, image, name, out)
                .map(drop)
                .into_diagnostic()
        }),
        OutputKind::Tar => write_stdout(|out| {
            kiln_oci::write_flat_tar(store, image, out)
                .map(drop)
                .into_diagnostic()
        }),
        other => miette::bail!("`type={other}` cannot write to stdout"),
    }
}

/// Runs `write` on stdout, buffered, refusing a terminal.
pub(crate) fn write_stdout(
    write: impl FnOnce(&mut std::io::BufWriter<std::io::StdoutLock<'static>>) -> miette::Result<()>,
) -> miette::Result<()> {
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        miette::bail!(
            "refusing to write an archive to a terminal: use `-o FILE` or redirect stdout"
        );
    }
    let mut out = std::io::BufWriter::new(stdout.lock());
    write(&mut out)?;
    out.flush().into_diagnostic()
}

/// `type=image`/`type=registry`: names `digest` (an image or an index) in
/// the local store by each of the spec's names and, with `push=true`,
/// pushes it under each.
pub(crate) fn name_and_push(
    store: &Store,
    digest: &kiln_oci::Digest,
    spec: &OutputSpec,
) -> miette::Result<()> {
    for name in &spec.names {
        let full = super::tag::full_name(name);
        store
            .set_tag(&full, digest)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot name the image `{full}`"))?;
        if spec.push {
            let dest = kiln_registry::Reference::parse(name)
                .into_diagnostic()?
                .normalized();
            let insecure =
                spec.options.get("registry.insecure").map(String::as_str) == Some("true");
            super::push::push_to(store, digest, &dest, &Default::default(), insecure, false)?;
        }
    }
    Ok(())
}

fn display(p: &Option<PathBuf>) -> String {
    p.as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}
