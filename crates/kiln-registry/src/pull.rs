//! Pull: resolve a reference to a manifest (choosing a platform out of an
//! index), then fetch config and layers, each verified against its digest
//! while it streams and published to the store only when it matches.

use futures_util::stream::{self, StreamExt, TryStreamExt};
use kiln_store::Digest;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use sha2::{Digest as _, Sha256};

use kiln_types::{Platform, Reference, error_chain};

use crate::client::{Client, RegistryError, Scope, expect_ok};
use crate::manifest::{self, Blob, Kind, Manifest};
use crate::settings::Endpoint;
use crate::store::BlobStore;

/// A manifest as the registry served it, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The reference as asked for (its name is what the image is known by
    /// locally, even when a mirror served it).
    pub reference: Reference,
    /// The host that served it (a mirror or the registry).
    pub served_by: String,
    /// The platform-specific image manifest.
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The index or manifest list the reference pointed at, if any.
    pub index_digest: Option<Digest>,
    pub config_digest: Digest,
    pub layers: Vec<Digest>,
    /// Blobs downloaded and blobs the store already had.
    pub fetched: usize,
    pub skipped: usize,
    /// Layers left in the registry as lazy blobs ([`Client::pull_lazy`]).
    pub lazy: usize,
    pub bytes_fetched: u64,
}

impl Client {
    /// Pulls `reference` for `platform` into `store`, trying mirrors of its
    /// registry first.
    pub async fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        store: &dyn BlobStore,
    ) -> Result<Pulled, RegistryError> {
        self.pull_with(reference, platform, store, false).await
    }

    /// Like [`Client::pull`], but fetches only the manifest and the config:
    /// each layer the store lacks is registered as a lazy blob
    /// ([`BlobStore::register_remote`], with a [`crate::lazy::Locator`])
    /// and fetched by [`crate::lazy::RegistrySource`] when something first
    /// reads it. Stores that cannot keep lazy blobs get every layer now.
    pub async fn pull_lazy(
        &self,
        reference: &Reference,
        platform: &Platform,
        store: &dyn BlobStore,
    ) -> Result<Pulled, RegistryError> {
        self.pull_with(reference, platform, store, true).await
    }

    /// The digest `reference` points at now (for a tag: its index or
    /// manifest), mirrors first; nothing is stored.
    pub async fn resolve(&self, reference: &Reference) -> Result<Digest, RegistryError> {
        let endpoints = self
            .settings
            .pull_endpoints(reference.registry(), reference.repository());
        first_endpoint(&endpoints, &reference.to_string(), async |ep| {
            let m = self
                .get_manifest(ep, &reference.manifest_reference(), reference.digest())
                .await?;
            Ok(m.digest)
        })
        .await
    }

    async fn pull_with(
        &self,
        reference: &Reference,
        platform: &Platform,
        store: &dyn BlobStore,
        lazy: bool,
    ) -> Result<Pulled, RegistryError> {
        let endpoints = self
            .settings
            .pull_endpoints(reference.registry(), reference.repository());
        first_endpoint(&endpoints, &reference.to_string(), async |ep| {
            self.pull_from(ep, reference, platform, store, lazy).await
        })
        .await
    }

    async fn pull_from(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        platform: &Platform,
        store: &dyn BlobStore,
        lazy: bool,
    ) -> Result<Pulled, RegistryError> {
        let top = self
            .get_manifest(ep, &reference.manifest_reference(), reference.digest())
            .await?;
        let ctx = self.ctx(ep, format!("manifest `{}`", reference.manifest_reference()));
        let kind = manifest::kind_of(&top.media_type).map_err(|hint| {
            RegistryError::UnsupportedMediaType {
                ctx: ctx.clone(),
                media_type: top.media_type.clone(),
                hint,
            }
        })?;
        let bad = |ctx: &crate::client::Context, detail: String| RegistryError::BadManifest {
            ctx: ctx.clone(),
            detail,
        };
        let (index, image) = match kind {
            Kind::Image => (None, top),
            Kind::Index => {
                let Manifest::Index { children } =
                    manifest::parse(kind, &top.bytes).map_err(|d| bad(&ctx, d))?
                else {
                    unreachable!("parse follows kind")
                };
                let chosen = children
                    .iter()
                    .find(|c| {
                        manifest::kind_of(&c.blob.media_type) == Ok(Kind::Image)
                            && c.os.is_some()
                            && platform.matches(&Platform::new(
                                c.os.as_deref().unwrap_or_default(),
                                c.architecture.as_deref().unwrap_or_default(),
                                c.variant.as_deref(),
                            ))
                    })
                    .ok_or_else(|| RegistryError::NoPlatform {
                        ctx: ctx.clone(),
                        wanted: platform.to_string(),
                        available: children
                            .iter()
                            .map(|c| c.platform_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                tracing::debug!(platform = %chosen.platform_string(), digest = %chosen.blob.digest, "selected platform");
                let child = self
                    .get_manifest(
                        ep,
                        &chosen.blob.digest.to_string(),
                        Some(&chosen.blob.digest),
                    )
                    .await?;
                (Some(top), child)
            }
        };
        let ctx = self.ctx(ep, format!("manifest {}", image.digest));
        let kind = manifest::kind_of(&image.media_type).map_err(|hint| {
            RegistryError::UnsupportedMediaType {
                ctx: ctx.clone(),
                media_type: image.media_type.clone(),
                hint,
            }
        })?;
        let Manifest::Image { config, layers } =
            manifest::parse(kind, &image.bytes).map_err(|d| bad(&ctx, d))?
        else {
            return Err(bad(
                &ctx,
                "an index points at another index, expected an image manifest".to_string(),
            ));
        };

        // A fresh CI runner's imported cache often holds the config: one
        // registry round trip less on the way to a fully cached build.
        let config_here =
            store
                .fill_locally(&config.digest)
                .map_err(|source| RegistryError::Store {
                    ctx: self.ctx(ep, format!("config {}", config.digest)),
                    source,
                })?;
        let mut blobs = if config_here {
            Vec::new()
        } else {
            vec![config.clone()]
        };
        let mut seen = vec![&config.digest];
        let mut lazy_blobs = 0;
        for l in &layers {
            if seen.contains(&&l.digest) {
                continue;
            }
            seen.push(&l.digest);
            if store.has_blob(&l.digest) {
                continue;
            }
            if lazy {
                let locator = crate::lazy::Locator {
                    image: reference.to_string(),
                    registry: reference.registry().to_string(),
                    repository: reference.repository().to_string(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                };
                let registered = store
                    .register_remote(&l.digest, &locator.to_bytes())
                    .map_err(|source| RegistryError::Store {
                        ctx: self.ctx(ep, format!("lazy blob {}", l.digest)),
                        source,
                    })?;
                if registered {
                    lazy_blobs += 1;
                    continue;
                }
            }
            blobs.push(l.clone());
        }
        let results: Vec<Option<u64>> = stream::iter(blobs.iter())
            .map(|b| self.fetch_blob(ep, b, store))
            .buffer_unordered(self.settings.concurrency.max(1))
            .try_collect()
            .await?;
        let fetched = results.iter().filter(|r| r.is_some()).count();
        let seen = seen.len();
        let bytes_fetched = results.iter().flatten().sum();

        // Manifests last: a stored manifest never points at missing blobs.
        self.store_bytes(ep, store, &image)?;
        if let Some(idx) = &index {
            self.store_bytes(ep, store, idx)?;
        }
        Ok(Pulled {
            reference: reference.clone(),
            served_by: ep.host.clone(),
            manifest_digest: image.digest,
            manifest_media_type: image.media_type.clone(),
            index_digest: index.map(|i| i.digest),
            config_digest: config.digest,
            layers: layers.into_iter().map(|l| l.digest).collect(),
            skipped: seen - fetched - lazy_blobs,
            lazy: lazy_blobs,
            fetched,
            bytes_fetched,
        })
    }

    fn store_bytes(
        &self,
        ep: &Endpoint,
        store: &dyn BlobStore,
        m: &FetchedManifest,
    ) -> Result<(), RegistryError> {
        if store.has_blob(&m.digest) {
            return Ok(());
        }
        let ctx = self.ctx(ep, format!("manifest {}", m.digest));
        let err = |source| RegistryError::Store {
            ctx: ctx.clone(),
            source,
        };
        let mut sink = store.begin_blob().map_err(err)?;
        sink.write(&m.bytes).map_err(err)?;
        sink.commit(&m.digest, m.bytes.len() as u64).map_err(err)
    }

    /// Fetches a manifest by tag or digest. When `expected` is given the
    /// bytes must hash to it; otherwise they must match the registry's
    /// `Docker-Content-Digest` header when it sends one.
    pub async fn get_manifest(
        &self,
        ep: &Endpoint,
        tag_or_digest: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        let ctx = self.ctx(ep, format!("manifest `{tag_or_digest}`"));
        let url = format!(
            "{}/v2/{}/manifests/{}",
            ep.base_url(),
            ep.repository,
            tag_or_digest
        );
        let policy = self.settings.retry;
        let mut attempt = 0;
        let (bytes, header_type, header_digest) = 'fetch: loop {
            attempt += 1;
            let resp = self
                .send(ep, &Scope::pull(&ep.repository), &ctx, &|c| {
                    c.get(&url).header(ACCEPT, manifest::ACCEPT)
                })
                .await?;
            let resp = expect_ok(resp, &ctx).await?;
            let header_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
            let header_digest = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Digest::parse(v).ok());
            let mut resp = resp;
            let mut bytes = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        bytes.extend_from_slice(&c);
                        if bytes.len() > manifest::MAX_MANIFEST_SIZE {
                            return Err(RegistryError::BadManifest {
                                ctx,
                                detail: format!(
                                    "manifest is larger than {} bytes; refusing it",
                                    manifest::MAX_MANIFEST_SIZE
                                ),
                            });
                        }
                    }
                    Ok(None) => break,
                    Err(e) if attempt < policy.max_attempts => {
                        tracing::warn!(%ctx, attempt, error = %error_chain(&e), "manifest download interrupted, retrying");
                        tokio::time::sleep(policy.delay(attempt)).await;
                        continue 'fetch;
                    }
                    Err(e) => {
                        return Err(RegistryError::Connection {
                            ctx,
                            attempts: attempt,
                            detail: format!("reading the manifest: {}", error_chain(&e)),
                        });
                    }
                }
            }
            break (bytes, header_type, header_digest);
        };
        let digest = Digest::of(&bytes);
        // A pin may use another algorithm than the sha256 the store names
        // the manifest by.
        if let Some(want) = expected.or(header_digest.as_ref())
            && !want.is_digest_of(&bytes)
        {
            return Err(RegistryError::DigestMismatch {
                ctx,
                expected: *want,
                actual: Digest::compute(want.algorithm(), &bytes),
                size: bytes.len() as u64,
            });
        }
        // The body's own mediaType wins over a generic Content-Type
        // (some servers say `application/json`).
        let media_type = manifest::media_type_of(&bytes)
            .filter(|m| manifest::kind_of(m).is_ok())
            .or(header_type)
            .ok_or_else(|| RegistryError::BadManifest {
                ctx: ctx.clone(),
                detail: "the manifest has no media type".to_string(),
            })?;
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Downloads one blob into the store unless it is there already;
    /// returns the bytes fetched (`None` when skipped). The bytes are
    /// hashed as they stream; a wrong digest or size stores nothing. A
    /// connection dropped mid-stream restarts the download (bounded).
    pub async fn fetch_blob(
        &self,
        ep: &Endpoint,
        blob: &Blob,
        store: &dyn BlobStore,
    ) -> Result<Option<u64>, RegistryError> {
        if store.has_blob(&blob.digest) {
            tracing::debug!(digest = %blob.digest, "blob already in the store");
            return Ok(None);
        }
        let ctx = self.ctx(ep, format!("blob {}", blob.digest));
        let url = format!(
            "{}/v2/{}/blobs/{}",
            ep.base_url(),
            ep.repository,
            blob.digest
        );
        let policy = self.settings.retry;
        let scope = Scope::pull(&ep.repository);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.send(ep, &scope, &ctx, &|c| c.get(&url)).await?;
            let resp = expect_ok(resp, &ctx).await?;
            let store_err = |source| RegistryError::Store {
                ctx: ctx.clone(),
                source,
            };
            let mut sink = store.begin_blob().map_err(store_err)?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut resp = resp;
            let dropped = loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        size += c.len() as u64;
                        if size > blob.size {
                            return Err(RegistryError::SizeMismatch {
                                ctx,
                                expected: blob.size,
                                actual: size,
                            });
                        }
                        hasher.update(&c);
                        sink.write(&c).map_err(store_err)?;
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(error_chain(&e)),
                }
            };
            // A short body is a dropped connection too (it closed cleanly
            // without a length to hold it to).
            let dropped = dropped.or_else(|| {
                (size < blob.size)
                    .then(|| format!("the body ended after {size} of {} bytes", blob.size))
            });
            if let Some(detail) = dropped {
                drop(sink);
                if attempt < policy.max_attempts {
                    tracing::warn!(%ctx, attempt, %detail, "download interrupted, retrying");
                    tokio::time::sleep(policy.delay(attempt)).await;
                    continue;
                }
                return Err(RegistryError::Connection {
                    ctx,
                    attempts: attempt,
                    detail,
                });
            }
            let actual = Digest::from_hasher(hasher);
            if actual != blob.digest {
                return Err(RegistryError::DigestMismatch {
                    ctx,
                    expected: blob.digest,
                    actual,
                    size,
                });
            }
            sink.commit(&blob.digest, size).map_err(store_err)?;
            return Ok(Some(size));
        }
    }
}

/// Runs `f` against the mirrors in order, then the registry itself: the
/// first success wins; a failing mirror is logged and the next one tried.
/// When every endpoint failed, all their errors are returned together.
pub(crate) async fn first_endpoint<T>(
    endpoints: &[Endpoint],
    reference: &str,
    mut f: impl AsyncFnMut(&Endpoint) -> Result<T, RegistryError>,
) -> Result<T, RegistryError> {
    let n = endpoints.len();
    let mut errors = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        match f(ep).await {
            Ok(v) => return Ok(v),
            Err(e) if ep.mirror && i + 1 < n => {
                tracing::warn!(mirror = %ep.host, error = %e, "mirror failed, trying the next endpoint");
                errors.push(e);
            }
            Err(e) if errors.is_empty() => return Err(e),
            Err(e) => {
                errors.push(e);
                return Err(RegistryError::AllEndpoints {
                    reference: reference.to_string(),
                    errors,
                });
            }
        }
    }
    unreachable!("pull_endpoints always ends with the registry itself")
}
