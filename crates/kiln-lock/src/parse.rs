//! Reading a lock file: TOML into the model, every value checked, errors
//! located so the CLI can point at the line.

use std::ops::Range;

use kiln_types::{Digest, Platform};
use serde::{Deserialize, Deserializer};

use crate::model::{LockedDeb, LockedImage, LockedPackages, Lockfile, PackageSet};

/// A lock file that cannot be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LockError {
    /// Not TOML, or a field missing, unknown or of the wrong form.
    #[error("{message}")]
    Syntax {
        message: String,
        /// Byte offsets into the text, when the parser knows them.
        span: Option<Range<usize>>,
    },
    #[error(
        "lock file version {found} is not one this kiln reads (it reads {})",
        crate::VERSION
    )]
    Version { found: u32 },
    #[error("the image `{reference}` is locked twice")]
    DuplicateImage { reference: String },
    #[error("a package set of `{suite}` ({architecture}) asking for {request:?} is locked twice")]
    DuplicatePackages {
        suite: String,
        architecture: String,
        request: Vec<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: u32,
    #[serde(default)]
    image: Vec<LockedImage>,
    #[serde(default)]
    packages: Vec<RawPackages>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackages {
    mirror: String,
    suite: String,
    components: Vec<String>,
    architecture: String,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    keyrings: Vec<String>,
    request: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    release: Digest,
    #[serde(default)]
    debs: Vec<LockedDeb>,
}

/// `os/arch[/variant]` as a string, the way `--platform` spells it.
pub(crate) fn platform<'de, D: Deserializer<'de>>(d: D) -> Result<Platform, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<Platform>().map_err(serde::de::Error::custom)
}

impl Lockfile {
    /// Reads a lock file's text.
    pub fn parse(text: &str) -> Result<Lockfile, LockError> {
        let raw: Raw = toml::from_str(text).map_err(|e| LockError::Syntax {
            message: e.message().trim_end().to_string(),
            span: e.span(),
        })?;
        if raw.version != crate::VERSION {
            return Err(LockError::Version { found: raw.version });
        }
        let mut lock = Lockfile::default();
        for image in raw.image {
            if lock.image(&image.reference).is_some() {
                return Err(LockError::DuplicateImage {
                    reference: image.reference,
                });
            }
            lock.images.push(image);
        }
        for p in raw.packages {
            let set = PackageSet {
                mirror: p.mirror,
                suite: p.suite,
                components: p.components,
                architecture: p.architecture,
                snapshot: p.snapshot,
                keyrings: p.keyrings,
                request: p.request,
                exclude: p.exclude,
            };
            if lock.packages(&set).is_some() {
                return Err(LockError::DuplicatePackages {
                    suite: set.suite,
                    architecture: set.architecture,
                    request: set.request,
                });
            }
            lock.packages.push(LockedPackages {
                set,
                release: p.release,
                debs: p.debs,
            });
        }
        Ok(lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_located() {
        let text = "version = 1\n\n[[image]]\nreference = \"docker.io/library/x:1\"\ndigest = \"sha256:nothex\"\n";
        let Err(LockError::Syntax { message, span }) = Lockfile::parse(text) else {
            panic!("a bad digest must not parse")
        };
        let span = span.expect("toml knows where");
        assert_eq!(&text[span], "\"sha256:nothex\"", "{message}");
    }

    #[test]
    fn unknown_fields_and_versions_are_refused() {
        let e = Lockfile::parse("version = 1\ncolour = \"red\"\n").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        assert_eq!(
            Lockfile::parse("version = 7\n").unwrap_err(),
            LockError::Version { found: 7 }
        );
        let e = Lockfile::parse(
            "version = 1\n[[image]]\nreference = \"r\"\ndigest = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nplatforms = [{ platform = \"linux\", manifest = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\" }]\n",
        )
        .unwrap_err();
        assert!(matches!(e, LockError::Syntax { span: Some(_), .. }), "{e}");
    }
}
