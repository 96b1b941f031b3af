//! One module per subcommand. Each exposes `Args` (clap) and
//! `run(Args) -> miette::Result<ExitCode>`; `main.rs` only dispatches.

pub mod check;
pub mod graph;
pub mod pull;
pub mod push;
pub mod registry;
