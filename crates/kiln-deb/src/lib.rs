//! Debian package sets for kiln: packages from a signed apt repository,
//! resolved like `apt-get install --no-install-recommends` and unpacked by
//! file operations only (no `RUN`, no maintainer scripts), so a Python,
//! Node, Java or C++ service ships on `static_base()`.
//!
//! - `source.rs`: the repository (mirror, suite, components, Debian
//!   architecture, keyrings; a snapshot.debian.org time is just a mirror)
//! - `fetch.rs`: HTTP with retries, straight into the content store with
//!   SHA256 and size checked before anything is visible
//! - `trust.rs`: keyrings and the `InRelease` signature (rPGP)
//! - `release.rs`: `Release` (suite, `Valid-Until`, index checksums)
//! - `index.rs`: `Packages`/`status` stanzas as spans of their text
//! - `relation.rs`: `Depends`-style relations, Debian version order
//! - `resolve.rs`: the closure, as apt computes it
//! - `repo.rs`: an opened repository (verified Release and indexes) and
//!   `.deb` downloads
//! - `contents.rs`: the `Contents-<arch>` index, read to name the package
//!   that ships a missing file
//! - `deb.rs`: the `.deb` format (ar, control and data tars)
//! - `install.rs`: unpacking into a directory (confined by `kiln-layer`),
//!   merged /usr, dpkg records in `status.d` as distroless keeps them

pub mod contents;
pub mod deb;
pub mod fetch;
pub mod index;
pub mod install;
pub mod relation;
pub mod release;
pub mod repo;
pub mod resolve;
pub mod source;
pub mod trust;

pub use contents::{contents_key, shipped_by};
pub use deb::{Control, DebError, read_deb};
pub use fetch::{FetchError, Fetcher, RetryPolicy};
pub use index::{Index, IndexError, PkgId};
pub use install::{DebInput, InstallError, InstallSummary, install};
pub use relation::{Op, Relation, RelationError, compare_versions};
pub use release::{Release, ReleaseError};
pub use repo::{DebRef, RepoError, Repository, download};
pub use resolve::{Request, Resolution, ResolveError, Resolver};
pub use source::{DEBIAN_KEYRING, DEFAULT_MIRROR, Source, SourceError};
pub use trust::{Keyring, TrustError};
