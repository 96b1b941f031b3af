//! `kiln pull`: fetch an image from a registry into the local store.

use std::process::ExitCode;

use kiln_registry::{Client, Platform, Reference};
use miette::{IntoDiagnostic, WrapErr};

/// Pull an image from a registry into the local store
///
/// REF is an image reference as docker reads it: `golang:1.22` means
/// `docker.io/library/golang:1.22`; a `@sha256:` digest pins the content.
/// From a multi-platform index the image for `--platform` is taken. Every
/// blob is verified against its digest before it is stored, and blobs the
/// store has already are not downloaded again. The image is then known
/// locally by its full name (e.g. `docker.io/library/golang:1.22`), even
/// when a `--registry-mirror` served it. Prints the manifest digest.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub registry: super::registry::RegistryOpts,

    /// The image to pull, e.g. `debian:bookworm` or `127.0.0.1:5000/app:1`
    #[arg(value_name = "REF")]
    pub reference: String,

    /// The platform to take from a multi-platform image (`OS/ARCH[/VARIANT]`);
    /// defaults to this machine's
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<Platform>,

    /// Do not print progress on stderr
    #[arg(short, long)]
    pub quiet: bool,
}

/// The local name a pulled reference is stored under: `REPO:TAG`, or
/// `REPO@DIGEST` when it was pulled by digest alone.
pub(crate) fn local_name(reference: &Reference) -> String {
    match (reference.tag(), reference.digest()) {
        (Some(tag), _) => format!("{}:{tag}", reference.name()),
        (None, Some(d)) => format!("{}@{d}", reference.name()),
        (None, None) => format!("{}:latest", reference.name()),
    }
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let reference = Reference::parse(&args.reference)
        .into_diagnostic()?
        .normalized();
    let platform = args.platform.unwrap_or_else(Platform::host);
    let settings = super::registry::settings()?;
    let store = super::images::open_store()?;
    if !args.quiet {
        eprintln!("pulling {reference} ({platform})");
    }
    let client = Client::new(settings).into_diagnostic()?;
    let pulled = super::registry::runtime()?
        .block_on(client.pull(&reference, &platform, &store))
        .map_err(super::registry_help::explain)?;
    let name = local_name(&reference);
    store
        .set_tag(&name, &pulled.manifest_digest)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot record the local name `{name}`"))?;
    if !args.quiet {
        eprintln!(
            "pulled {name} from {}: {} blob(s) fetched ({} bytes), {} already present",
            pulled.served_by, pulled.fetched, pulled.bytes_fetched, pulled.skipped
        );
    }
    println!("{}", pulled.manifest_digest);
    Ok(ExitCode::SUCCESS)
}
