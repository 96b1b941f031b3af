//! Making `Kilnfile.lock` entries: an image tag asked of its registry, a
//! Debian package set resolved against its verified index. Following a
//! lock is where the sources resolve (`ImageLookup`, `packages::resolve`).

use kiln_dag::Platform;
use kiln_lock::{LockedImage, LockedPlatform};
use kiln_oci::Store;
use kiln_registry::{Pulled, Reference};

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

/// The lock entry of a tag for `platform`, asked of the registry now (the
/// local tag is moved to what it answered, as a pull would); with `pin`,
/// that digest's manifest for `platform` instead of the tag's.
pub fn image(
    store: &Store,
    settings: &kiln_registry::Settings,
    reference: &Reference,
    pin: Option<kiln_types::Digest>,
    platform: &Platform,
) -> Result<LockedImage, PullError> {
    let reference = reference.normalized();
    let asked = match pin {
        Some(d) => reference.with_digest(d),
        None => reference.clone(),
    };
    let pulled = pull(store, settings, &asked, platform)?;
    if pin.is_none() {
        let name = reference.to_string();
        store
            .set_tag(&name, &pulled.manifest_digest)
            .map_err(|source| PullError::Tag { name, source })?;
    }
    Ok(LockedImage {
        reference: reference.to_string(),
        digest: pulled.index_digest.unwrap_or(pulled.manifest_digest),
        platforms: vec![LockedPlatform {
            platform: platform.normalized(),
            manifest: pulled.manifest_digest,
        }],
    })
}
