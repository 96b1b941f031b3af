//! `kiln __sandbox-child`: the sandbox entry point, a re-exec of the kiln
//! binary by `kiln_runtime::Runtime` (hidden from help). `main` dispatches
//! to it before anything else is set up, so no async runtime, logger or
//! thread exists in the child.

/// Internal: the sandbox child started by kiln itself
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> ! {
    kiln_runtime::child_main()
}
