//! Making `Kilnfile.lock` entries: an image tag asked of its registry, a
//! Debian package set resolved against its verified index. Following a
//! lock is where the sources resolve (`ImageLookup`, `packages::resolve`).

use kiln_dag::Platform;
use kiln_lock::{LockedImage, LockedPlatform};
use kiln_oci::Store;
use kiln_registry::Reference;

use crate::image::{PullError, pull};

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
