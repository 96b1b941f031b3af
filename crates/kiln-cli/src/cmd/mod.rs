//! One module per subcommand. Each exposes `Args` (clap) and
//! `run(Args) -> miette::Result<ExitCode>`; `main.rs` only dispatches.

pub mod base;
pub mod build;
pub mod cache;
pub mod check;
pub mod graph;
pub mod images;
pub mod import;
pub mod info;
pub mod pull;
pub mod push;
pub mod registry;
pub mod sandbox_child;
pub mod save;
pub mod tag;
