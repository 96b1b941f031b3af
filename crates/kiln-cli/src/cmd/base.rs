//! `kiln base`: the built-in base images.

use std::process::ExitCode;

use kiln_oci::{Compression, OutputSpec, source_date_epoch, static_base};
use miette::{IntoDiagnostic, WrapErr};

use super::images::open_store;
use super::import::parse_compression;

/// Synthesize a built-in base image
///
/// `kiln base static` builds the static base (like distroless
/// `static-debian12:nonroot`: passwd/group with root, nobody and nonroot
/// 65532, CA certificates, time zones, no shell) from data compiled into
/// kiln, without network. Its digest depends only on the kiln version,
/// SOURCE_DATE_EPOCH (default 0) and `--compression`. It is stored in the
/// local store, optionally named with `-t`, written to each `-o` output, and
/// its manifest digest is printed on stdout. The file list is in
/// docs/static-base.md.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub registry: super::registry::RegistryOpts,

    /// Which base: only `static` for now
    #[arg(value_enum, value_name = "BASE")]
    pub base: Base,

    /// Output spec, e.g. `type=oci,dest=static.tar` (repeatable)
    #[arg(short, long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// Name the image in the local store (repeatable)
    #[arg(short, long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    /// Layer compression: gzip, zstd or none
    #[arg(long, default_value = "gzip", value_parser = parse_compression)]
    pub compression: Compression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Base {
    Static,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    // Parse every spec before doing any work: a typo fails fast.
    let specs = args
        .outputs
        .iter()
        .map(|s| {
            s.parse::<OutputSpec>()
                .into_diagnostic()
                .wrap_err_with(|| format!("bad `-o {s}`"))
        })
        .collect::<miette::Result<Vec<_>>>()?;
    let store = open_store()?;
    let epoch = source_date_epoch().into_diagnostic()?;
    let image = match args.base {
        Base::Static => static_base(&store, epoch, args.compression).into_diagnostic()?,
    };
    for t in &args.tags {
        image
            .tag(&store, &super::tag::full_name(t))
            .into_diagnostic()?;
    }
    for spec in &specs {
        super::save::write_output(&store, &image, spec)?;
    }
    println!("{}", image.digest);
    Ok(ExitCode::SUCCESS)
}
