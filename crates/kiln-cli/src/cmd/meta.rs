//! Commands about kiln itself: `kiln version`, `kiln completion SHELL` and
//! `kiln man DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use miette::{IntoDiagnostic, WrapErr};

/// The version and the git commit kiln was built from (`unknown` for a
/// build outside a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KILN_GIT_COMMIT"),
    ")"
);

/// Print kiln's version and the git commit it was built from
#[derive(Debug, clap::Args)]
pub struct VersionArgs {}

pub fn version(_: VersionArgs) -> miette::Result<ExitCode> {
    println!("kiln {VERSION}");
    Ok(ExitCode::SUCCESS)
}

/// Print a shell completion script
///
/// e.g. `kiln completion bash > /etc/bash_completion.d/kiln`, or
/// `source <(kiln completion bash)`; `kiln completion zsh > "${fpath[1]}/_kiln"`;
/// `kiln completion fish > ~/.config/fish/completions/kiln.fish`.
#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn completion(args: CompletionArgs, cli: clap::Command) -> miette::Result<ExitCode> {
    // bash's script would offer hidden commands (the sandbox helper's
    // re-exec): the same command without them
    let mut visible = clap::Command::new("kiln")
        .version(VERSION)
        .args(cli.get_arguments().cloned())
        .subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    clap_complete::generate(args.shell, &mut visible, "kiln", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Write man pages: `kiln.1` and one `kiln-COMMAND.1` per command
///
/// e.g. `kiln man /usr/local/share/man/man1`, then `man kiln-build`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory to write the pages to (made if missing)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn man(args: ManArgs, cli: clap::Command) -> miette::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot make `{}`", args.dir.display()))?;
    let cli = cli.version(VERSION);
    write_page(&args.dir, "kiln", cli.clone())?;
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap takes a static name (without its `string` feature); one
        // short string per command, once
        let name: &'static str = String::leak(format!("kiln-{}", sub.get_name()));
        let sub = sub.clone().name(name).version(VERSION);
        write_page(&args.dir, name, sub)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_page(dir: &std::path::Path, name: &str, cmd: clap::Command) -> miette::Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot render the man page of `{name}`"))?;
    std::fs::write(&path, out)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write `{}`", path.display()))
}
