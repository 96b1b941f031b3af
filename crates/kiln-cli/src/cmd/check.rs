//! `kiln check`: parse and check a Kilnfile, report diagnostics.

use std::process::ExitCode;

/// Check a Kilnfile for errors without building anything
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> miette::Result<ExitCode> {
    miette::bail!("not implemented yet")
}
