//! `Kilnfile.lock`: what a build's sources resolved to, written by
//! `kiln lock` and followed by `kiln build`, so the same lock gives the same
//! inputs on every machine and a warm store needs no network.
//!
//! - an image reference (a tag) pinned to the digest it pointed at and, per
//!   platform, the image manifest the build used;
//! - a Debian package set pinned to its repository's signed `InRelease`
//!   and every `.deb` by pool path, size and SHA256 (checked when it is
//!   downloaded, as the index's were when the lock was made).
//!
//! This crate owns the file: the model, reading it (errors located by line
//! and column) and writing it as stable, reviewable text (sorted, one `.deb`
//! a line). Resolving sources is the worker's; deciding when a lock is
//! stale is the CLI's.
//!
//! - `model.rs`: the entries and their lookups
//! - `parse.rs`: TOML in, checked
//! - `render.rs`: TOML out, byte-stable

mod model;
mod parse;
mod render;

pub use model::{LockedDeb, LockedImage, LockedPackages, LockedPlatform, Lockfile, PackageSet};
pub use parse::LockError;

/// The format this crate writes and reads.
pub const VERSION: u32 = 1;

/// The lock of a build file: `Kilnfile` -> `Kilnfile.lock`.
pub fn path_for(build_file: &std::path::Path) -> std::path::PathBuf {
    let mut name = build_file.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    build_file.with_file_name(name)
}
