//! `kiln import`: a root filesystem or an OCI layout/archive becomes a local image.

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_oci::{
    Compression, import_oci_archive, import_oci_layout, import_rootfs, source_date_epoch,
};
use miette::{IntoDiagnostic, WrapErr};

use super::images::open_store;

/// Import a root filesystem (tar or directory) or an OCI layout/archive
///
/// Like `docker import`: a root filesystem, given as a tar file (plain,
/// gzip or zstd) or a directory, becomes a one-layer image. Owners, modes,
/// setuid bits, symlinks, hard links and device nodes are kept as they are
/// (reading a directory with other users' files needs root). A tar is taken
/// byte for byte; a directory is written as a deterministic tar (sorted,
/// mtimes clamped to SOURCE_DATE_EPOCH). A directory holding an `oci-layout`
/// file is imported as an OCI layout, and `--format oci-archive` reads an
/// OCI archive. Prints the manifest digest on stdout.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The root filesystem tar, directory, OCI layout or OCI archive
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,

    /// Name the image in the local store (repeatable)
    #[arg(short, long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    /// What SOURCE is; `auto` means a rootfs unless it is a directory with
    /// an `oci-layout` file
    #[arg(long, value_enum, default_value_t = ImportFormat::Auto)]
    pub format: ImportFormat,

    /// Pick one image of a layout or archive by its ref name
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,

    /// Layer compression for a root filesystem: gzip, zstd or none
    #[arg(long, default_value = "gzip", value_parser = parse_compression)]
    pub compression: Compression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    Auto,
    Rootfs,
    OciLayout,
    OciArchive,
}

pub(crate) fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
        .map_err(|e: kiln_oci::CompressionError| e.to_string())
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let store = open_store()?;
    let epoch = source_date_epoch().into_diagnostic()?;
    let src = &args.source;
    let format = match args.format {
        ImportFormat::Auto if src.is_dir() && src.join("oci-layout").is_file() => {
            ImportFormat::OciLayout
        }
        ImportFormat::Auto => ImportFormat::Rootfs,
        f => f,
    };
    let image = match format {
        ImportFormat::OciLayout => import_oci_layout(&store, src, args.image.as_deref()),
        ImportFormat::OciArchive => import_oci_archive(&store, src, args.image.as_deref()),
        _ => import_rootfs(&store, src, args.compression, epoch),
    }
    .into_diagnostic()
    .wrap_err_with(|| format!("cannot import `{}`", src.display()))?;
    for t in &args.tags {
        image
            .tag(&store, &super::tag::full_name(t))
            .into_diagnostic()?;
    }
    println!("{}", image.digest);
    Ok(ExitCode::SUCCESS)
}
