//! `kiln convert`: a Dockerfile written out as a Kilnfile that builds the
//! same image.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use kiln_frontend::Options;

use super::buildfile::Kind;
use super::check::{parse_build_args, report};

/// Convert a Dockerfile to a Kilnfile that builds the same image
///
/// Writes an idiomatic Kilnfile: a `let` per stage named after it, build
/// args as `arg(..)`, the Dockerfile's comments, `context().path(..)` and
/// `stage.path(..)` copies, run options for mounts and network. Its graph
/// is checked against the Dockerfile's before anything is written: the
/// same root digest and image config, so `kiln build` of either gives the
/// same image. What the Kilnfile cannot say is an error at its line.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub input: super::args::BuildFileArgs,

    /// Write the Kilnfile here instead of stdout (`-` is stdout)
    #[arg(short = 'o', long = "output", value_name = "KILNFILE")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub platform: super::args::PlatformArg,

    /// Do not read the base images' configs from the store or a registry.
    /// Their working directory and a missing `PATH` are part of the graph:
    /// for a base that sets either, the Kilnfile then differs from what
    /// `kiln build` of the Dockerfile gives
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ConvertError {
    #[error("`{path}` is already a Kilnfile")]
    #[diagnostic(
        code(kiln::convert),
        help("`kiln convert` reads a Dockerfile; pass one with `-f Dockerfile`")
    )]
    NotDockerfile { path: String },
    #[error(
        "the converted Kilnfile builds a different graph than `{path}` (root {kiln} vs {docker})"
    )]
    #[diagnostic(
        code(kiln::convert),
        help(
            "this is a bug in `kiln convert`: please report it with the Dockerfile; `kiln build -f {path}` builds the Dockerfile as it is"
        )
    )]
    Differs {
        path: String,
        kiln: String,
        docker: String,
    },
    #[error("cannot write `{path}`")]
    #[diagnostic(
        code(kiln::convert),
        help("check that the directory exists and is writable")
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    // Without -f, the context's Dockerfile even when a Kilnfile is there
    // (the one a previous `kiln convert -o Kilnfile` wrote, say).
    let default = ["Dockerfile", "Containerfile", "dockerfile", "containerfile"]
        .iter()
        .map(|n| args.input.context.join(n))
        .find(|p| p.is_file())
        .map(|p| p.strip_prefix(".").map(PathBuf::from).unwrap_or(p));
    let file = super::buildfile::load(
        args.input.file.as_deref().or(default.as_deref()),
        &args.input.context,
    )?;
    if file.kind == Kind::Kilnfile {
        return Err(ConvertError::NotDockerfile { path: file.name }.into());
    }
    let opts = Options {
        target: None,
        build_args: parse_build_args(&args.input.build_args)?,
        platform: args.platform.platform.clone(),
        build_platform: None,
        ..Default::default()
    };
    // The base images' working directory and PATH are part of the graph,
    // so ask the store (and the registry) as a build does.
    let online;
    let bases: &dyn kiln_dockerfile::BaseImages = if args.offline {
        &kiln_dockerfile::NoBaseImages
    } else {
        online = super::buildfile::StoreBases::open(
            opts.platform.as_ref(),
            kiln_worker::PullPolicy::Missing,
        )?;
        &online
    };
    let converted = match kiln_dockerfile::convert(&file.name, &file.text, &opts, bases) {
        Ok(c) => c,
        Err(diags) => {
            report(&diags);
            return Ok(ExitCode::FAILURE);
        }
    };
    report(&converted.warnings);
    // Never write a Kilnfile that would build something else.
    let docker = file.compile(&opts, bases);
    let kiln = kiln_frontend::compile("Kilnfile", &converted.text, &opts);
    if let (Ok(d), Ok(k)) = (&docker, &kiln)
        && d.definition.digest() != k.definition.digest()
    {
        return Err(ConvertError::Differs {
            path: file.name,
            kiln: k.definition.root.to_string(),
            docker: d.definition.root.to_string(),
        }
        .into());
    }
    if let Err(diags) = kiln {
        report(&diags);
        return Err(ConvertError::Differs {
            path: file.name,
            kiln: "none (it does not compile)".into(),
            docker: docker.map_or_else(|_| "none".into(), |d| d.definition.root.to_string()),
        }
        .into());
    }
    match args.output.filter(|o| o.as_os_str() != "-") {
        Some(path) => {
            std::fs::write(&path, &converted.text).map_err(|source| ConvertError::Write {
                path: path.clone(),
                source,
            })?;
            eprintln!("wrote `{}` from `{}`", path.display(), file.name);
        }
        None => {
            let _ = std::io::stdout()
                .lock()
                .write_all(converted.text.as_bytes());
        }
    }
    Ok(ExitCode::SUCCESS)
}
