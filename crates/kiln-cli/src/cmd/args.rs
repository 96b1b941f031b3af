//! Flags several commands share, declared once and flattened into each
//! command's `Args` (`#[command(flatten)]`).

use std::path::PathBuf;

use kiln_frontend::Platform;

/// The build file and its inputs: `kiln build`, `check`, `graph` and
/// `convert` read a Kilnfile or Dockerfile the same way.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildFileArgs {
    /// The build context directory
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,

    /// The build file [default: CONTEXT/Kilnfile, else CONTEXT/Dockerfile
    /// or CONTEXT/Containerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Set a build arg declared with `arg("NAME")` (or `ARG NAME`); `NAME`
    /// alone takes the value from the environment. Repeatable
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
}

/// `--target`: which image of the build file.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArg {
    /// The target: a top-level image binding of a Kilnfile or a stage of a
    /// Dockerfile [default: the last one]
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
}

/// `--platform` of the commands that compile for one platform without
/// building (`graph`, `convert`).
#[derive(Debug, Clone, clap::Args)]
pub struct PlatformArg {
    /// The target platform (`os/arch[/variant]`): `image(..)` sources that
    /// do not name one and the automatic platform args stand for it
    /// [default: the host's]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<Platform>,
}
