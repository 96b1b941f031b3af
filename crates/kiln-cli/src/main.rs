//! The `kiln` binary. The only crate of the workspace that prints: it parses
//! flags, sets up logging to stderr, runs one command and renders its errors.

mod cmd;
mod progress;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

/// A daemonless, rootless container image builder.
///
/// kiln compiles a Kilnfile (a small Rust-syntax build language) into a
/// content-addressed graph of build operations, runs `run` steps in rootless
/// Linux namespaces and ships images built by file operations onto a minimal
/// static base.
#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version = cmd::meta::VERSION,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log verbosity for messages on stderr (error, warn, info, debug, trace);
    /// `KILN_LOG` takes a full tracing filter
    #[arg(long, global = true, value_name = "LEVEL", default_value = "warn")]
    log_level: String,

    #[command(flatten)]
    registry: cmd::registry::LeadingRegistryOpts,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    // boxed: its flags make it far bigger than the other commands' args
    Build(Box<cmd::build::Args>),
    Cache(cmd::cache::Args),
    Check(cmd::check::Args),
    Convert(cmd::convert::Args),
    Graph(cmd::graph::Args),
    Pull(cmd::pull::Args),
    Push(cmd::push::Args),
    Images(cmd::images::Args),
    Tag(cmd::tag::Args),
    Save(cmd::save::Args),
    Sbom(cmd::sbom::Args),
    Import(cmd::import::Args),
    Base(cmd::base::Args),
    Info(cmd::info::Args),
    Version(cmd::meta::VersionArgs),
    Completion(cmd::meta::CompletionArgs),
    Man(cmd::meta::ManArgs),
    Login(cmd::login::Args),
    Logout(cmd::login::LogoutArgs),
    Lock(cmd::lock::Args),
    #[command(name = "__sandbox-child", hide = true)]
    SandboxChild(cmd::sandbox_child::Args),
}

fn main() -> ExitCode {
    // the sandbox child (a re-exec by kiln-runtime) starts before any setup
    if std::env::args_os().nth(1).as_deref() == Some(kiln_runtime::CHILD_SUBCOMMAND.as_ref()) {
        kiln_runtime::child_main();
    }
    quiet_on_closed_pipe();
    let cli = Cli::parse_from(cmd::build::bare_pull(std::env::args_os().collect()));
    init_tracing(&cli.log_level);
    let registry = match &cli.command {
        Command::Build(a) => a.registry.clone(),
        Command::Pull(a) => a.registry.clone(),
        Command::Push(a) => a.registry.clone(),
        Command::Save(a) => a.registry.clone(),
        Command::Sbom(a) => a.registry.clone(),
        Command::Base(a) => a.registry.clone(),
        Command::Lock(a) => a.registry.clone(),
        _ => Default::default(),
    };
    cmd::registry::init(registry.with_leading(cli.registry));
    let result = start_up().and_then(|()| match cli.command {
        Command::Build(args) => cmd::build::run(*args),
        Command::Cache(args) => cmd::cache::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Convert(args) => cmd::convert::run(args),
        Command::Graph(args) => cmd::graph::run(args),
        Command::Pull(args) => cmd::pull::run(args),
        Command::Push(args) => cmd::push::run(args),
        Command::Images(args) => cmd::images::run(args),
        Command::Tag(args) => cmd::tag::run(args),
        Command::Save(args) => cmd::save::run(args),
        Command::Sbom(args) => cmd::sbom::run(args),
        Command::Import(args) => cmd::import::run(args),
        Command::Base(args) => cmd::base::run(args),
        Command::Info(args) => cmd::info::run(args),
        Command::Version(args) => cmd::meta::version(args),
        Command::Completion(args) => cmd::meta::completion(args, Cli::command()),
        Command::Man(args) => cmd::meta::man(args, Cli::command()),
        Command::Login(args) => cmd::login::run(args),
        Command::Logout(args) => cmd::login::run_logout(args),
        Command::Lock(args) => cmd::lock::run(args),
        Command::SandboxChild(args) => cmd::sandbox_child::run(args),
    });
    match result {
        Ok(code) => code,
        Err(report) => {
            if report.chain().any(is_broken_pipe) && stdio_reader_gone() {
                die_of_sigpipe();
            }
            eprintln!("{report:?}");
            if cmd::disk_full(report.chain()) {
                eprintln!("  help: {}", cmd::disk_full_help());
            }
            ExitCode::FAILURE
        }
    }
}

/// A reader that went away (`kiln graph | head -c1`, a closed stderr pipe)
/// ends kiln as it ends `cat` or cargo: killed by SIGPIPE, with no panic and
/// no message. Rust ignores SIGPIPE so that writes fail with EPIPE, which
/// `println!`/`eprintln!` turn into a panic: this hook catches that one.
/// SIGPIPE stays ignored otherwise, so a pipe to a helper that died is an
/// error kiln reports, not a silent death.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std")
            && msg.contains(&format!("(os error {})", libc::EPIPE))
        {
            die_of_sigpipe();
        }
        default(info);
    }));
}

/// By kind, or by text where a wrapper (miette's `into_diagnostic`) keeps
/// only the message.
fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        || e.to_string()
            .ends_with(&format!("(os error {})", libc::EPIPE))
}

/// Whether stdout or stderr is a pipe nobody reads any more, so a broken
/// pipe between kiln and one of its helpers is still reported.
fn stdio_reader_gone() -> bool {
    [libc::STDOUT_FILENO, libc::STDERR_FILENO]
        .into_iter()
        .any(|fd| {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no timeout. A pipe without readers
            // polls as POLLERR.
            unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLERR != 0 }
        })
}

fn die_of_sigpipe() -> ! {
    // SAFETY: restoring the default action and raising the signal touch no
    // memory; the process ends here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached; the shell's code for a SIGPIPE death if it were.
    std::process::exit(128 + libc::SIGPIPE)
}

fn init_tracing(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KILN_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let colour = colour_on_stderr();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::log_writer)
        .with_ansi(colour)
        .without_time()
        .with_target(false)
        .init();
    // miette's reports follow the same decision (its own detection knows
    // NO_COLOR but not CLICOLOR_FORCE)
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(miette::MietteHandlerOpts::new().color(colour).build())
    }));
}

/// Colour on stderr: never with `NO_COLOR` set (no-color.org), always with
/// `CLICOLOR_FORCE` set to anything but `0`, else only on a terminal (a
/// log file or a CI pipe gets no escape sequences).
fn colour_on_stderr() -> bool {
    colour_for(
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("CLICOLOR_FORCE").as_deref(),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
}

fn colour_for(
    no_color: Option<&std::ffi::OsStr>,
    force: Option<&std::ffi::OsStr>,
    terminal: bool,
) -> bool {
    if no_color.is_some_and(|v| !v.is_empty()) {
        return false;
    }
    if force.is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    terminal
}

/// What every command does first: rejects a bad `KILN_MAX_LAYER_SIZE` up
/// front rather than warning at every layer the libraries extract, and
/// removes the secret files of kiln processes that were killed mid-step
/// (one readdir of `/dev/shm`), so that their plaintext does not wait for
/// the next build with a secret.
fn start_up() -> miette::Result<()> {
    use miette::IntoDiagnostic as _;
    kiln_layer::check_max_size_env().into_diagnostic()?;
    kiln_worker::secrets::remove_stale_secrets();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::colour_for;
    use std::ffi::OsStr;

    #[test]
    fn colour_follows_no_color_and_clicolor_force() {
        let s = |v: &'static str| Some(OsStr::new(v));
        let cases = [
            (None, None, true, true),
            (None, None, false, false),
            (s("1"), None, true, false),
            (s(""), None, true, true),
            (s("1"), s("1"), true, false),
            (None, s("1"), false, true),
            (None, s("0"), false, false),
            (None, s(""), false, false),
        ];
        for (no_color, force, terminal, want) in cases {
            assert_eq!(
                colour_for(no_color, force, terminal),
                want,
                "{no_color:?} {force:?} {terminal}"
            );
        }
    }
}
