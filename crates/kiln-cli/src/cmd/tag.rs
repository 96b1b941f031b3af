//! `kiln tag`: give a local image another name.

use std::process::ExitCode;

use kiln_oci::Image;
use kiln_oci::reference::has_tag_or_digest;
use miette::IntoDiagnostic;

use super::images::open_store;

/// Give a local image another name
///
/// Points TARGET at the image SOURCE names in the local store. SOURCE is a
/// name from `kiln images` (short forms work: `app` means `app:latest`) or a
/// full `sha256:` manifest digest. A TARGET without a tag gets `:latest`.
/// An image with attestations or several platforms is named as a whole
/// (its index). Prints the digest TARGET names.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image to tag: a local name or `sha256:` manifest digest
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// The new name, e.g. `registry.example.com/app:1.2`
    #[arg(value_name = "TARGET")]
    pub target: String,
}

/// `name` with `:latest` when it has no tag or digest.
pub(crate) fn full_name(name: &str) -> String {
    if has_tag_or_digest(name) {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let store = open_store()?;
    let target = full_name(&args.target);
    // a multi-platform image, or one with its attestations, is named as a
    // whole
    if let Some(index) = super::save::resolve_index(&store, &args.source)? {
        store.set_tag(&target, &index.digest).into_diagnostic()?;
        println!("{}", index.digest);
        return Ok(ExitCode::SUCCESS);
    }
    let image = Image::resolve(&store, &args.source).into_diagnostic()?;
    image.tag(&store, &target).into_diagnostic()?;
    println!("{}", image.digest);
    Ok(ExitCode::SUCCESS)
}
