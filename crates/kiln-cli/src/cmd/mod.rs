//! One module per subcommand. Each exposes `Args` (clap) and
//! `run(Args) -> miette::Result<ExitCode>`; `main.rs` only dispatches.

pub mod args;
pub mod attest;
pub mod base;
pub mod build;
pub mod buildfile;
pub mod buildx;
pub mod cache;
pub mod check;
pub mod convert;
pub mod graph;
mod hints;
pub mod images;
pub mod import;
pub mod info;
pub mod lock;
pub mod login;
pub mod meta;
pub mod pull;
pub mod push;
pub mod registry;
pub(crate) mod registry_help;
pub mod run_flags;
pub mod sandbox_child;
pub mod save;
pub mod sbom;
pub mod secret;
pub mod tag;

/// Whether an error comes from a full disk (ENOSPC somewhere in its chain,
/// also where a library kept the cause as text).
pub(crate) fn disk_full<'a>(
    mut chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> bool {
    chain.any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
            || e.to_string().contains("No space left on device")
    })
}

/// What to do about a full disk.
pub(crate) fn disk_full_help() -> String {
    let home = kiln_store::Store::default_root()
        .map(|p| format!(" (`{}`)", p.display()))
        .unwrap_or_default();
    format!(
        "the disk holding KILN_HOME{home} or the output is full: free space (`kiln cache prune` \
         drops what no image or recent build needs) or point KILN_HOME at a bigger filesystem, \
         then run again: finished steps stay cached"
    )
}
