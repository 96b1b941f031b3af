//! The sandbox child entry for kiln-runtime's own tests and benchmarks:
//! `kiln-runtime-helper __sandbox-child`, the same code path as
//! `kiln __sandbox-child`.

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some(kiln_runtime::CHILD_SUBCOMMAND) => kiln_runtime::child_main(),
        _ => {
            eprintln!(
                "usage: kiln-runtime-helper {}",
                kiln_runtime::CHILD_SUBCOMMAND
            );
            std::process::exit(2);
        }
    }
}
