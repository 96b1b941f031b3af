//! `kiln graph`: print the build graph of a Kilnfile or Dockerfile target.

use std::io::Write;
use std::process::ExitCode;

use kiln_frontend::{Options, Platform};

use super::check::{parse_build_args, report};

/// Print the build graph of a target as text, DOT or JSON
///
/// Compiles the Kilnfile and writes the target's graph of build operations
/// to stdout: every vertex with its content digest, its inputs, and (beside
/// the digest, never part of it) the step name and Kilnfile location. The
/// digests are the cache keys' definitions: they stay the same when the
/// Kilnfile is only reformatted or bindings are renamed. Diagnostics go to
/// stderr; errors exit 1 with nothing on stdout.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub input: super::args::BuildFileArgs,

    #[command(flatten)]
    pub target: super::args::TargetArg,

    #[command(flatten)]
    pub platform: super::args::PlatformArg,

    /// Output format: `text` (one vertex per line), `dot` (Graphviz),
    /// `json` (the full definition, for tools) or `llb` (BuildKit's binary
    /// `pb.Definition`, as `buildctl debug dump-llb` and `buildctl build`
    /// read it on stdin)
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Dot,
    Json,
    Llb,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let file = super::buildfile::load(args.input.file.as_deref(), &args.input.context)?;
    let (name, text) = (file.name.clone(), file.text.clone());
    let opts = Options {
        target: args.target.target,
        build_args: parse_build_args(&args.input.build_args)?,
        platform: args.platform.platform.clone(),
        build_platform: None,
        ..Default::default()
    };
    // A Dockerfile's graph depends on what its bases set (`ENV PATH=$PATH:..`):
    // ask the store (and the registry), as the build does.
    let compiled =
        file.compile_for_build(&opts, kiln_worker::PullPolicy::Missing, &Default::default())?;
    let compiled = match compiled {
        Ok(c) => c,
        Err(diags) => {
            report(&diags);
            return Ok(ExitCode::FAILURE);
        }
    };
    report(&compiled.warnings);
    let def = &compiled.definition;
    let mut out = match args.format {
        Format::Text => def.to_text(),
        Format::Dot => def.to_dot(),
        Format::Json => def.to_json(),
        Format::Llb => return write_llb(def, &name, &text, args.platform.platform),
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    // A closed pipe (`kiln graph | head`) is not an error worth a report.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// Writes `def` as BuildKit LLB: one marshalled `pb.Definition`, the form
/// `llb.ReadFrom` (`buildctl debug dump-llb`, `buildctl build`) reads.
fn write_llb(
    def: &kiln_frontend::Definition,
    name: &str,
    text: &str,
    platform: Option<Platform>,
) -> miette::Result<ExitCode> {
    let mut opts = kiln_llb::Options::new(platform.unwrap_or_else(Platform::host));
    opts.source = Some(kiln_llb::SourceFile {
        name: name.to_string(),
        text: text.to_string(),
    });
    let llb = kiln_llb::emit(def, &opts).map_err(|e| miette::miette!("{e}"))?;
    let _ = std::io::stdout()
        .lock()
        .write_all(&kiln_llb::encode(&llb.definition));
    Ok(ExitCode::SUCCESS)
}
