//! One module per subcommand. Each exposes `Args` (clap) and
//! `run(Args) -> miette::Result<ExitCode>`; `main.rs` only dispatches.

pub mod check;
pub mod graph;
pub mod pull;
pub mod push;
pub mod registry;
pub mod base;
pub mod images;
pub mod import;
pub mod save;
pub mod tag;
