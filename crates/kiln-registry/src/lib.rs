//! kiln's client for the OCI distribution API: image references, pull,
//! push, auth, retries, mirrors.
//!
//! # Why a client of our own
//!
//! `oci-client` (the maintained ORAS crate) was considered. It covers
//! bearer auth and basic pulls and pushes, but kiln needs control it does
//! not give: streaming blobs straight into kiln's content store through a
//! narrow trait with digest and size verification before anything is
//! published, per-request retries with bounded exponential backoff on 5xx,
//! 429 and dropped connections (also mid-stream), registry mirrors with
//! fallback in the manner of containers' `registries.conf`, observable
//! cross-repository mounts and chunked uploads with our own chunk size, and
//! errors that name registry, repository and digest. So this crate is a
//! small client on `reqwest` (rustls with webpki roots) and `tokio`, using
//! `oci-spec` for manifest and index types.
//!
//! # Shape
//!
//! - [`Reference`] and [`Platform`] are kiln-types' (the one reference
//!   grammar and arch table), re-exported.
//! - [`Settings`]: insecure hosts, [`Mirror`]s (also from
//!   `registries.conf`), [`RetryPolicy`], credentials ([`AuthConfig`]:
//!   docker's and containers' auth files, credential helpers,
//!   `credentials.rs`/`helper.rs`), concurrency and upload chunking.
//! - Errors: [`RegistryError`], with the registry's distribution error code
//!   as an [`ErrorCode`] ([`RegistryError::Api`]); a host that does not
//!   resolve fails at once ([`RegistryError::UnresolvableHost`]).
//! - [`Client::login`]: checks credentials as `docker login` does;
//!   [`credentials::save`]/[`credentials::remove`] write them.
//! - [`Client`]: [`Client::pull`], [`Client::push`] and the lower-level
//!   calls they are made of ([`Client::get_manifest`],
//!   [`Client::fetch_blob`], [`Client::push_blob`],
//!   [`Client::put_manifest`], [`Client::list_tags`]).
//! - [`BlobStore`] / [`BlobSink`]: where pulled blobs go and pushed blobs
//!   come from; implemented for [`kiln_store::Store`] and [`MemoryStore`].
//! - Lazy pulls ([`Client::pull_lazy`]): manifest and config now, each
//!   layer registered in the store with a [`Locator`] and downloaded by
//!   [`RegistrySource`] (the store's blob source) when first read.
//!
//! Plain http is used for `localhost`, `127.0.0.0/8`, `::1` and hosts listed
//! in [`Settings::insecure_registries`]; https otherwise.

// Errors carry their context (registry, repository, object) by value; they
// are built only on failure paths, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod api_error;
pub mod auth;
pub mod client;
pub mod credentials;
pub mod helper;
pub mod lazy;
pub mod manifest;
pub mod pull;
pub mod push;
pub mod registries_conf;
pub mod settings;
pub mod store;

pub use api_error::{ApiError, ErrorCode};
pub use auth::Challenge;
pub use client::{Client, Context, RegistryError};
pub use credentials::{AuthConfig, AuthFileError, Credential, Saved};
pub use helper::HelperError;
pub use kiln_types::{Platform, PlatformError, Reference, ReferenceError};
pub use lazy::{LazyError, Locator, RegistrySource};
pub use pull::{FetchedManifest, Pulled};
pub use push::{BlobPush, PushOptions, PushReport};
pub use registries_conf::{RegistriesConf, RegistriesConfError, merge_mirrors};
pub use settings::{
    Endpoint, MIRROR_ENV, Mirror, MirrorError, RetryPolicy, Settings, mirrors_from_env,
    parse_mirror_list,
};
pub use store::{BlobSink, BlobStore, BoxError, MemoryStore};
