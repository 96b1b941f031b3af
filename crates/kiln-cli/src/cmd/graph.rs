//! `kiln graph`: print the build graph of a Kilnfile target.

use std::process::ExitCode;

/// Print the build graph of a target as text, DOT or JSON
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> miette::Result<ExitCode> {
    miette::bail!("not implemented yet")
}
