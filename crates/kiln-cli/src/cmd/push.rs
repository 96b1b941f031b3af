//! `kiln push`: send a local image to a registry.

use std::process::ExitCode;

use kiln_registry::{Client, PushOptions, Reference};
use kiln_store::{Digest, Store};
use miette::{IntoDiagnostic, WrapErr};

/// Push a local image to a registry
///
/// Sends the local image REF (a name from `kiln images`, or a `sha256:`
/// manifest digest) with its config and layers to DEST_REF, or to REF
/// itself when DEST_REF is not given: a name built with attestations as
/// the index of the image and its attestation manifest, as `kiln build
/// --push` does. Blobs the registry already has are skipped; when REF
/// names another repository of the same registry, blobs are mounted from it
/// instead of uploaded. Prints the digest the tag names there.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub registry: super::registry::RegistryOpts,

    /// The local image to push
    #[arg(value_name = "REF")]
    pub reference: String,

    /// Where to push it, e.g. `127.0.0.1:5000/team/app:1`
    #[arg(value_name = "DEST_REF")]
    pub destination: Option<String>,

    /// Also point these tags at the pushed manifest (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Do not print progress on stderr
    #[arg(short, long)]
    pub quiet: bool,
}

/// Finds a local image: a manifest digest, the name as typed, with
/// `:latest`, or in its normalized form (`app` is
/// `docker.io/library/app:latest`).
fn resolve_local(store: &Store, name: &str) -> miette::Result<Digest> {
    if name.starts_with("sha256:") {
        let d = Digest::parse(name).into_diagnostic()?;
        if !store.has_blob(&d) {
            miette::bail!("no manifest {d} in the local store");
        }
        return Ok(d);
    }
    let mut candidates = vec![name.to_string(), format!("{name}:latest")];
    if let Ok(r) = Reference::parse(name) {
        candidates.push(super::pull::local_name(&r));
    }
    for c in &candidates {
        if let Some(d) = store.get_tag(c).into_diagnostic()? {
            return Ok(d);
        }
    }
    miette::bail!("no local image named `{name}`: see `kiln images`, or `kiln pull {name}` first")
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let store = super::images::open_store()?;
    let digest = resolve_local(&store, &args.reference)?;
    let source = Reference::parse(&args.reference)
        .ok()
        .map(|r| r.normalized());
    let dest = match &args.destination {
        Some(d) => Reference::parse(d).into_diagnostic()?.normalized(),
        None => match &source {
            Some(s) if !args.reference.starts_with("sha256:") => s.clone(),
            _ => miette::bail!(
                "pushing a digest needs a destination: `kiln push {} DEST_REF`",
                args.reference
            ),
        },
    };
    if dest.digest().is_some() && dest.tag().is_none() {
        miette::bail!(
            "the destination `{dest}` is pinned to a digest; give a tag to push to, e.g. `{}:TAG`",
            dest.name()
        );
    }
    let mut mount_from = Vec::new();
    if let Some(s) = &source
        && s.registry() == dest.registry()
        && s.repository() != dest.repository()
    {
        mount_from.push(s.repository().to_string());
    }
    let opts = PushOptions {
        extra_tags: args.tags,
        mount_from,
    };
    let pushed = push_to(&store, &digest, &dest, &opts, false, args.quiet)?;
    println!("{pushed}");
    Ok(ExitCode::SUCCESS)
}

/// Pushes the local manifest or index `digest` to `dest` and returns what
/// the tag names there; `insecure` allows plain http for its registry.
/// Shared by `kiln push` and `-o type=registry`. An image with OCI 1.1
/// referrer attestations (`--attest-layout referrers`) goes as the image
/// under the tag and the attestation manifest through the referrers tag
/// schema's `sha256-<image hex>` index.
pub(crate) fn push_to(
    store: &Store,
    digest: &Digest,
    dest: &Reference,
    opts: &PushOptions,
    insecure: bool,
    quiet: bool,
) -> miette::Result<Digest> {
    let referrers = match kiln_oci::Index::load(store, digest) {
        Ok(Some(index)) => kiln_oci::attestation::referrers_push(store, &index)
            .into_diagnostic()
            .wrap_err("cannot make the referrers index of the attestations")?,
        _ => None,
    };
    let digest = &referrers.map_or(*digest, |(image, _)| image);
    let mut settings = super::registry::settings()?;
    if insecure {
        settings
            .insecure_registries
            .push(dest.registry().to_string());
    }
    if !quiet {
        eprintln!("pushing {digest} to {dest}");
    }
    let client = Client::new(settings).into_diagnostic()?;
    let report = super::registry::runtime()?
        .block_on(client.push(store, digest, dest, opts))
        .map_err(super::registry_help::explain)
        .wrap_err_with(|| format!("cannot push {digest} to `{dest}`"))?;
    if !quiet {
        eprintln!(
            "pushed {dest}: {} blob(s) uploaded ({} bytes, {} chunked), {} mounted, {} already present",
            report.uploaded, report.bytes_uploaded, report.chunked, report.mounted, report.existing
        );
    }
    if let Some((image, fallback)) = referrers {
        super::attest::push_referrers_fallback(store, &image, &fallback, dest, insecure)?;
    }
    Ok(*digest)
}
