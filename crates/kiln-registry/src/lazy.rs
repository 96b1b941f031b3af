//! Lazy blobs: layers of a base image that a build registered
//! ([`crate::Client::pull_lazy`]) but did not download, because every step
//! on them was a cache hit. [`RegistrySource`] is the store's
//! [`kiln_store::BlobSource`] for them: the first read of such a blob
//! (snapshot extraction, an export, `kiln save`, a push) downloads it from
//! the image's registry (mirrors first, as a pull would), verified against
//! its digest and size before the store publishes it.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_store::{BlobSource, Digest, Store};

use crate::client::{Client, RegistryError};
use crate::manifest::Blob;
use crate::settings::Settings;

/// Where a lazy blob comes from: what [`kiln_store::Store::put_remote_blob`]
/// keeps for it, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Locator {
    /// The image reference the blob is a layer of (for messages).
    pub image: String,
    /// The registry and repository as named in the reference; mirrors are
    /// looked up from the settings of the process that fetches it.
    pub registry: String,
    pub repository: String,
    pub media_type: String,
    pub size: u64,
}

impl Locator {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a locator serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Why a lazy blob could not be fetched; names the image and the blob.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    #[error(
        "lazily pulled layer {digest}: its locator in the store is unreadable ({reason}); run `kiln cache check`"
    )]
    BadLocator { digest: Digest, reason: String },
    #[error("cannot fetch layer {digest} of `{image}` (pulled lazily): {source}")]
    Fetch {
        digest: Digest,
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("cannot fetch layer {digest} of `{image}` (pulled lazily): {reason}")]
    Setup {
        digest: Digest,
        image: String,
        reason: String,
    },
}

type SettingsFn = dyn Fn() -> Result<Settings, String> + Send + Sync;

/// Fetches the store's lazy blobs from their registries on first read.
/// Attach it to every store handle that may read blobs
/// ([`Store::with_blob_source`]).
pub struct RegistrySource {
    /// the same store without blob sources: where fetched blobs land
    store: Store,
    /// the registry settings (mirrors, credentials), computed on the first
    /// fetch only: most builds fetch nothing
    settings: Box<SettingsFn>,
    blobs: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for RegistrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource")
            .field("store", &self.store.root())
            .finish_non_exhaustive()
    }
}

impl RegistrySource {
    /// A source for the lazy blobs of `store`; `settings` is called when a
    /// blob is first fetched.
    pub fn new(
        store: &Store,
        settings: impl Fn() -> Result<Settings, String> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            store: store.without_blob_sources(),
            settings: Box::new(settings),
            blobs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// Blobs fetched so far and their bytes.
    pub fn fetched(&self) -> (u64, u64) {
        (
            self.blobs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Downloads the lazy blob `digest` into the store (verified). Blocks;
    /// runs the exchange on a runtime of its own in a thread of its own, so
    /// it may be called from synchronous code on any thread, also one that
    /// drives an async runtime.
    pub fn fetch(&self, digest: &Digest) -> Result<(), LazyError> {
        let bytes = self
            .store
            .remote_blob(digest)
            .map_err(|e| LazyError::BadLocator {
                digest: *digest,
                reason: e.to_string(),
            })?
            .ok_or_else(|| LazyError::BadLocator {
                digest: *digest,
                reason: "it is gone".to_string(),
            })?;
        let loc = Locator::from_bytes(&bytes).map_err(|e| LazyError::BadLocator {
            digest: *digest,
            reason: e.to_string(),
        })?;
        let setup = |reason: String| LazyError::Setup {
            digest: *digest,
            image: loc.image.clone(),
            reason,
        };
        let settings = (self.settings)().map_err(setup)?;
        let blob = Blob {
            digest: *digest,
            size: loc.size,
            media_type: loc.media_type.clone(),
        };
        let store = &self.store;
        let outcome = std::thread::scope(|s| {
            s.spawn(|| -> Result<Option<u64>, LazyError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| setup(format!("cannot start a runtime: {e}")))?;
                let client = Client::new(settings.clone()).map_err(|e| setup(e.to_string()))?;
                rt.block_on(fetch_from_endpoints(&client, &settings, &loc, &blob, store))
                    .map_err(|source| LazyError::Fetch {
                        digest: *digest,
                        image: loc.image.clone(),
                        source,
                    })
            })
            .join()
        })
        .map_err(|_| setup("the fetching thread panicked".to_string()))?;
        if let Some(n) = outcome? {
            self.blobs.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(%digest, image = %loc.image, bytes = n, "fetched a lazy layer");
        }
        Ok(())
    }
}

/// Mirrors first, then the registry, as [`Client::pull`] does.
async fn fetch_from_endpoints(
    client: &Client,
    settings: &Settings,
    loc: &Locator,
    blob: &Blob,
    store: &Store,
) -> Result<Option<u64>, RegistryError> {
    let endpoints = settings.pull_endpoints(&loc.registry, &loc.repository);
    crate::pull::first_endpoint(&endpoints, &loc.image, async |ep| {
        client.fetch_blob(ep, blob, store).await
    })
    .await
}

impl BlobSource for RegistrySource {
    fn has(&self, digest: &Digest) -> bool {
        self.store.is_remote_blob(digest)
    }

    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        self.fetch(digest).map_err(io::Error::other)?;
        // fetched and verified into the store: read it from there
        let f = self.store.open_blob(digest).map_err(io::Error::other)?;
        Ok(Box::new(f))
    }
}
