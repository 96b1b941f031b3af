//! `kiln sbom`: print the SBOM of a local or remote image.

use std::io::Write;
use std::process::ExitCode;

use kiln_oci::attestation::{self, AttestationError, Fetch, Statement};
use kiln_oci::{Image, Store};
use kiln_registry::{Client, Platform, Reference};
use kiln_sbom::Format;
use miette::{IntoDiagnostic, WrapErr};

use super::images::open_store;

/// Print the SBOM of an image
///
/// IMAGE is a local name (from `kiln images`), a `sha256:` manifest digest
/// or a registry reference. The SBOM attached to the image (by `kiln
/// build`, by default for images on `static_base()`, or by BuildKit) is
/// printed when it has one in the asked format;
/// otherwise one is generated from the image's layers by the same
/// generator: Debian packages, Go and Rust build info, Python and npm
/// packages, every ELF executable with its SHA256.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub registry: super::registry::RegistryOpts,

    /// The image
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// SBOM format
    #[arg(long, value_enum, default_value_t = SbomFormat::Spdx)]
    pub format: SbomFormat,

    /// Generate from the layers even when the image has an SBOM attached
    #[arg(long)]
    pub generate: bool,

    /// The platform to take from a multi-platform remote image [default: the host's]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SbomFormat {
    /// SPDX 2.3 JSON
    Spdx,
    /// CycloneDX 1.6 JSON
    Cyclonedx,
}

impl SbomFormat {
    fn format(self) -> Format {
        match self {
            SbomFormat::Spdx => Format::Spdx,
            SbomFormat::Cyclonedx => Format::CycloneDx,
        }
    }
}

/// The predicate of the statement in `format`, pretty-printed.
fn attached(statements: &[Statement], format: Format) -> miette::Result<Option<Vec<u8>>> {
    let Some(s) = statements
        .iter()
        .find(|s| s.predicate_type == format.predicate_type())
    else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_slice(&s.bytes)
        .into_diagnostic()
        .wrap_err("the attached SBOM statement is not JSON")?;
    let mut out = serde_json::to_vec_pretty(&v["predicate"]).into_diagnostic()?;
    out.push(b'\n');
    Ok(Some(out))
}

/// Pulls `reference` and the attestations its index holds for the platform.
fn pull_remote(
    store: &Store,
    reference: &Reference,
    platform: &Platform,
) -> miette::Result<(Image, Vec<Statement>)> {
    let client = Client::new(super::registry::settings()?).into_diagnostic()?;
    let rt = super::registry::runtime()?;
    let pulled = rt
        .block_on(client.pull(reference, platform, store))
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot pull `{reference}`"))?;
    let image = Image::load(store, &pulled.manifest_digest).into_diagnostic()?;
    let Some(index) = pulled.index_digest.filter(|d| store.has_blob(d)) else {
        return Ok((image, Vec::new()));
    };
    let index: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&index).into_diagnostic()?).into_diagnostic()?;
    let ep = super::registry::settings()?.origin(reference.registry(), reference.repository());
    // manifests are fetched by digest, blobs into the store, then read
    let read = |d: &kiln_types::Digest, what: Fetch| -> Result<Vec<u8>, AttestationError> {
        let bad = |reason: String| AttestationError::BadIndex {
            image: image.digest,
            digest: *d,
            reason,
        };
        match what {
            Fetch::Manifest => rt
                .block_on(client.get_manifest(&ep, &d.to_string(), Some(d)))
                .map(|m| m.bytes)
                .map_err(|e| bad(kiln_types::error_chain(&e))),
            Fetch::Blob { size } => {
                let blob = kiln_registry::manifest::Blob {
                    digest: *d,
                    size,
                    media_type: attestation::MEDIA_IN_TOTO.into(),
                };
                rt.block_on(client.fetch_blob(&ep, &blob, store))
                    .map_err(|e| bad(kiln_types::error_chain(&e)))?;
                store.read_blob(d).map_err(|e| bad(e.to_string()))
            }
        }
    };
    let statements = attestation::statements_in_index(&index, &image.digest, &read)
        .map_err(|e| miette::miette!("cannot read the attestations of `{reference}`: {e}"))?;
    Ok((image, statements))
}

/// The statements of a local image: those of the index its name points at
/// (a build with attestations tags it), none for a name of a plain image
/// manifest (built with `--sbom=false --provenance=false`, or pulled); for a
/// `sha256:` image digest, those a build attached to it.
fn local_statements(store: &Store, name: &str, image: &Image) -> miette::Result<Vec<Statement>> {
    if kiln_types::Digest::parse(name).is_ok_and(|d| d == image.digest) {
        return attestation::statements_of(store, &image.digest).into_diagnostic();
    }
    let Some(index) = super::save::resolve_index(store, name)? else {
        return Ok(Vec::new());
    };
    let v: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&index.digest).into_diagnostic()?)
            .into_diagnostic()?;
    let read = |d: &kiln_types::Digest, _: Fetch| {
        store.read_blob(d).map_err(|e| AttestationError::BadIndex {
            image: image.digest,
            digest: index.digest,
            reason: e.to_string(),
        })
    };
    attestation::statements_in_index(&v, &image.digest, &read)
        .map_err(|e| miette::miette!("cannot read the attestations of `{name}`: {e}"))
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let store = open_store()?;
    let format = args.format.format();
    let (image, statements) = match Image::resolve(&store, &args.image) {
        Ok(image) => {
            let s = local_statements(&store, &args.image, &image)?;
            (image, s)
        }
        Err(local) => {
            let Ok(reference) = Reference::parse(&args.image) else {
                return Err(miette::miette!("{local}"));
            };
            let platform = args.platform.clone().unwrap_or_else(Platform::host);
            pull_remote(&store, &reference.normalized(), &platform)?
        }
    };
    let doc = match (args.generate, attached(&statements, format)?) {
        (false, Some(doc)) => doc,
        _ => {
            let epoch = kiln_oci::source_date_epoch().into_diagnostic()?;
            let sbom = kiln_sbom::generate(&store, &image, &args.image, epoch, &[])
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot read `{}` for its SBOM", args.image))?;
            format.render(&sbom).into_diagnostic()?
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&doc).into_diagnostic()?;
    out.flush().into_diagnostic()?;
    Ok(ExitCode::SUCCESS)
}
