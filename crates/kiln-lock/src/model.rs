//! The entries of a lock file and how a build finds its own.

use kiln_types::{Digest, Platform};
use serde::{Deserialize, Serialize};

/// A whole lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lockfile {
    pub images: Vec<LockedImage>,
    pub packages: Vec<LockedPackages>,
}

/// A registry reference by tag and what it pointed at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// The normalized reference, as the build graph holds it
    /// (`docker.io/library/debian:bookworm`).
    pub reference: String,
    /// What the tag pointed at: an index (or manifest list), or a single
    /// image manifest.
    pub digest: Digest,
    /// The image manifest used for each platform built.
    #[serde(default)]
    pub platforms: Vec<LockedPlatform>,
}

/// One platform's image manifest of a locked reference.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPlatform {
    #[serde(deserialize_with = "crate::parse::platform")]
    pub platform: Platform,
    pub manifest: Digest,
}

/// What a Debian package set asks for, with the defaults filled in: the
/// identity a build looks its lock entry up by.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSet {
    pub mirror: String,
    pub suite: String,
    pub components: Vec<String>,
    pub architecture: String,
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Keyring files as the build file names them; empty: Debian's.
    #[serde(default)]
    pub keyrings: Vec<String>,
    pub request: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A package set resolved: the signed index it came from and its `.deb`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedPackages {
    pub set: PackageSet,
    /// SHA256 of the verified `InRelease` the set was resolved from.
    pub release: Digest,
    pub debs: Vec<LockedDeb>,
}

/// One `.deb` of a locked set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LockedDeb {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The pool path below the mirror root.
    pub filename: String,
    pub size: u64,
    pub sha256: Digest,
}

impl LockedImage {
    /// The manifest locked for `platform`, if that platform was locked.
    pub fn manifest(&self, platform: &Platform) -> Option<&Digest> {
        let want = platform.normalized();
        self.platforms
            .iter()
            .find(|p| p.platform.normalized() == want)
            .map(|p| &p.manifest)
    }
}

impl Lockfile {
    /// The entry of `reference` (normalized, as the graph has it).
    pub fn image(&self, reference: &str) -> Option<&LockedImage> {
        self.images.iter().find(|i| i.reference == reference)
    }

    /// The entry of a package set, when one asks for exactly this.
    pub fn packages(&self, set: &PackageSet) -> Option<&LockedPackages> {
        self.packages.iter().find(|p| &p.set == set)
    }

    /// Adds or replaces the entry of `image.reference`, merging platforms:
    /// a platform locked earlier stays unless `image` has it too (and the
    /// tag still points at the same digest).
    pub fn put_image(&mut self, image: LockedImage) {
        match self
            .images
            .iter_mut()
            .find(|i| i.reference == image.reference)
        {
            Some(old) if old.digest == image.digest => {
                for p in image.platforms {
                    match old.platforms.iter_mut().find(|o| o.platform == p.platform) {
                        Some(o) => o.manifest = p.manifest,
                        None => old.platforms.push(p),
                    }
                }
            }
            Some(old) => *old = image,
            None => self.images.push(image),
        }
    }

    /// Adds or replaces the entry of `packages.set`.
    pub fn put_packages(&mut self, packages: LockedPackages) {
        match self.packages.iter_mut().find(|p| p.set == packages.set) {
            Some(old) => *old = packages,
            None => self.packages.push(packages),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn plat(p: &str, n: u8) -> LockedPlatform {
        LockedPlatform {
            platform: p.parse().unwrap(),
            manifest: d(n),
        }
    }

    #[test]
    fn put_image_merges_platforms_of_the_same_digest() {
        let mut lock = Lockfile::default();
        let r = "docker.io/library/debian:bookworm".to_string();
        lock.put_image(LockedImage {
            reference: r.clone(),
            digest: d(1),
            platforms: vec![plat("linux/amd64", 2)],
        });
        lock.put_image(LockedImage {
            reference: r.clone(),
            digest: d(1),
            platforms: vec![plat("linux/arm64", 3)],
        });
        let e = lock.image(&r).unwrap();
        assert_eq!(e.manifest(&"linux/amd64".parse().unwrap()), Some(&d(2)));
        assert_eq!(e.manifest(&"linux/arm64".parse().unwrap()), Some(&d(3)));
        // the tag moved: the old platforms are gone with the old digest
        lock.put_image(LockedImage {
            reference: r.clone(),
            digest: d(4),
            platforms: vec![plat("linux/arm64", 5)],
        });
        let e = lock.image(&r).unwrap();
        assert_eq!(e.manifest(&"linux/amd64".parse().unwrap()), None);
        assert_eq!(e.manifest(&"linux/arm64".parse().unwrap()), Some(&d(5)));
    }
}
