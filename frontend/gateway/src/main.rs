//! `kiln-frontend`: the BuildKit gateway frontend binary (see the library
//! docs). BuildKit runs it with the gateway connection on stdin/stdout.

use std::io::IsTerminal;
use std::process::ExitCode;

use kiln_frontend_gateway::{Bridge, Env, Outcome, run};

fn main() -> ExitCode {
    // stdout is the gRPC connection: logs go to stderr, which BuildKit shows
    // in the build's progress.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = Env::from_process();
    let res = rt.block_on(async {
        let io = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        let bridge = Bridge::connect(io).await.map_err(|e| e.to_string())?;
        run(bridge, &env).await.map_err(|e| e.to_string())
    });
    // The stdin reader is a blocking thread that only returns at EOF, which
    // BuildKit sends after we exit: do not wait for it.
    rt.shutdown_timeout(std::time::Duration::from_millis(10));
    match res {
        Ok(Outcome::Built) => ExitCode::SUCCESS,
        // The diagnostics went to BuildKit as the build's error; exiting 0
        // keeps BuildKit reporting them rather than the exit status.
        Ok(Outcome::Rejected { summary }) => {
            tracing::error!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
