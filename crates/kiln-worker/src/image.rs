//! Base images: an `image(..)` reference resolved for a platform from the
//! local store, the lock, or its registry (a lazy pull: manifest and config
//! now, layers when a step first reads them).

use kiln_dag::Platform;
use kiln_oci::oci_spec::image::{Config, ImageConfiguration};
use kiln_oci::{Image, Store};
use kiln_registry::{Pulled, Reference};

use crate::{Error, PullPolicy};

/// A base image that cannot be pulled.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot start the registry client")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Registry(#[from] Box<kiln_registry::RegistryError>),
    #[error("cannot name the image `{name}` in the local store")]
    Tag {
        name: String,
        #[source]
        source: kiln_store::StoreError,
    },
}

/// Pulls `reference` for `platform` lazily: manifest and config now, each
/// layer when something first reads it. Outside any async runtime.
pub(crate) fn pull(
    store: &Store,
    settings: &kiln_registry::Settings,
    reference: &Reference,
    platform: &Platform,
) -> Result<Pulled, PullError> {
    let client = kiln_registry::Client::new(settings.clone()).map_err(Box::new)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PullError::Runtime)?;
    Ok(rt
        .block_on(client.pull_lazy(reference, platform, store))
        .map_err(Box::new)?)
}

/// What resolving a base image needs: the store, the pull policy, the
/// registry settings, the build's platform and the lock, if any.
pub struct ImageLookup<'a> {
    pub store: &'a Store,
    pub pull: PullPolicy,
    pub registry: &'a kiln_registry::Settings,
    pub platform: &'a kiln_registry::Platform,
    pub lock: Option<&'a kiln_lock::Lockfile>,
}

/// A pull's failure as the step reports it: a registry's error stays typed
/// (the CLI's help depends on its kind).
fn pull_error(reference: &str, e: PullError) -> Error {
    match e {
        PullError::Registry(source) => Error::Pull {
            reference: reference.to_string(),
            source,
        },
        other => Error::Image {
            reference: reference.to_string(),
            reason: crate::chain(&other),
        },
    }
}

/// Whether `img` is for `platform` (an image that names neither os nor
/// architecture is for every one).
fn is_for(img: &Image, platform: &kiln_dag::Platform) -> bool {
    let (os, arch) = (
        img.config.os().to_string(),
        img.config.architecture().to_string(),
    );
    (os.is_empty() || os == platform.os) && (arch.is_empty() || arch == platform.architecture)
}

impl ImageLookup<'_> {
    /// An image by reference for `platform` (the source's own, else
    /// `--platform`'s): the local tag first (unless `--pull=always`), else
    /// the registry.
    pub fn image(
        &self,
        reference: &str,
        platform: Option<&kiln_dag::Platform>,
    ) -> Result<Image, Error> {
        let ierr = |reason: String| Error::Image {
            reference: reference.to_string(),
            reason,
        };
        let platform = platform.unwrap_or(self.platform).clone();
        let parsed =
            kiln_registry::Reference::parse(reference).map_err(|e| ierr(crate::chain(&e)))?;
        let local = match (parsed.tag(), parsed.digest()) {
            (_, Some(d)) => format!("{}@{d}", parsed.name()),
            (Some(t), None) => format!("{}:{t}", parsed.name()),
            (None, None) => format!("{}:latest", parsed.name()),
        };
        if parsed.digest().is_none()
            && let Some(entry) = self
                .lock
                .and_then(|l| l.image(&parsed.normalized().to_string()))
        {
            return self.pinned(&parsed, entry, &platform);
        }
        if self.pull != PullPolicy::Always {
            // a local name may point at another platform's manifest (an
            // earlier pull for another platform retagged it): only ours counts
            let ours = |img: &Image| is_for(img, &platform);
            if let Ok(img) = Image::resolve(self.store, reference)
                && ours(&img)
            {
                return Ok(img);
            }
            // `kiln import -t bb:1` names it `bb:1`, the frontend's
            // normalized reference is `docker.io/library/bb:1`.
            let short = local
                .strip_prefix("docker.io/library/")
                .or_else(|| local.strip_prefix("docker.io/"));
            for name in std::iter::once(local.as_str()).chain(short) {
                if let Ok(img) = Image::resolve(self.store, name)
                    && ours(&img)
                {
                    return Ok(img);
                }
            }
            if let Some(d) = parsed.digest()
                && let Ok(img) = Image::load(self.store, d)
                && ours(&img)
            {
                return Ok(img);
            }
        }
        if self.pull == PullPolicy::Never {
            return Err(Error::NotLocal {
                reference: reference.to_string(),
            });
        }
        // Manifest and config only: every key below a base needs just the
        // manifest digest, and a fully cached build never reads its layers.
        // They are lazy blobs, fetched (verified) by the store's
        // `RegistrySource` when a step first reads one.
        let pulled = pull(self.store, self.registry, &parsed, &platform)
            .map_err(|e| pull_error(reference, e))?;
        tracing::debug!(
            reference,
            fetched = pulled.fetched,
            lazy = pulled.lazy,
            "pulled a base image lazily"
        );
        self.store
            .set_tag(&local, &pulled.manifest_digest)
            .map_err(|e| Error::Store(crate::chain(&e)))?;
        Image::load(self.store, &pulled.manifest_digest).map_err(|e| ierr(crate::chain(&e)))
    }

    /// A tag the lock pins: the platform's locked manifest (else the locked
    /// index, for a platform the lock has not seen), from the store when it
    /// has it, else pulled by digest. The tag is never asked for.
    fn pinned(
        &self,
        parsed: &kiln_registry::Reference,
        entry: &kiln_lock::LockedImage,
        platform: &kiln_dag::Platform,
    ) -> Result<Image, Error> {
        let reference = parsed.to_string();
        let ierr = |reason: String| Error::Image {
            reference: reference.clone(),
            reason,
        };
        let want = *entry.manifest(platform).unwrap_or(&entry.digest);
        if let Ok(img) = Image::load(self.store, &want)
            && is_for(&img, platform)
        {
            return Ok(img);
        }
        if self.pull == PullPolicy::Never {
            return Err(Error::NotLocal {
                reference: parsed.with_digest(want).to_string(),
            });
        }
        let pulled = pull(
            self.store,
            self.registry,
            &parsed.with_digest(want),
            platform,
        )
        .map_err(|e| ierr(crate::chain(&e)))?;
        tracing::debug!(%reference, digest = %pulled.manifest_digest, "pulled a locked base image");
        Image::load(self.store, &pulled.manifest_digest).map_err(|e| ierr(crate::chain(&e)))
    }

    /// The image config of a base image, resolved as a build's source is
    /// ([`ImageLookup::image`]: manifest and config, never layers), for a
    /// Dockerfile's expansion of `$PATH` and relative `WORKDIR`s, with its
    /// `OnBuild` triggers (a Docker field oci-spec's type has no place
    /// for). Call it outside an async runtime: a pull runs one of its own.
    pub fn config(
        &self,
        reference: &str,
        platform: Option<&kiln_dag::Platform>,
    ) -> Result<(Config, Vec<String>), Error> {
        let img = self.image(reference, platform)?;
        let bytes = self
            .store
            .read_blob(&img.config_digest)
            .map_err(|e| Error::Store(crate::chain(&e)))?;
        let c: ImageConfiguration = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Store(format!("image config {}: {e}", img.config_digest)))?;
        let onbuild = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v["config"]["OnBuild"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default();
        Ok((c.config().clone().unwrap_or_default(), onbuild))
    }
}
