//! Where packages come from: an apt repository (mirror URL, suite,
//! components, architecture) and the keys that sign it.

use std::path::PathBuf;

use kiln_types::Platform;

/// Debian's own mirror network, the default of [`Source::debian`].
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The keyring of the `debian-archive-keyring` package.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Where `snapshot.debian.org` keeps every state of the Debian archive.
pub const SNAPSHOT_BASE: &str = "https://snapshot.debian.org/archive/debian";

/// A source that cannot be used as given.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SourceError {
    #[error(
        "invalid snapshot time `{0}`: expected `YYYYMMDDTHHMMSSZ` as snapshot.debian.org spells it, e.g. `20250520T000000Z`"
    )]
    Snapshot(String),
    #[error("invalid repository URL `{0}`: expected `http://` or `https://`")]
    Url(String),
    #[error("platform `{0}` has no Debian architecture name")]
    Arch(String),
    #[error("invalid {what} `{value}`: expected letters, digits and `-._+~`")]
    Name { what: &'static str, value: String },
}

/// One apt repository and what to take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The archive root, the URL before `dists/` (no trailing `/`).
    pub mirror: String,
    pub suite: String,
    pub components: Vec<String>,
    /// Debian's architecture name (`amd64`, `arm64`, `armhf`, ...).
    pub arch: String,
    /// Keyring files (binary or ASCII-armored OpenPGP keys) one of whose
    /// keys must have signed `InRelease`.
    pub keyrings: Vec<PathBuf>,
    /// Set when the mirror is a `snapshot.debian.org` point in time: its
    /// `Release` is past `Valid-Until` on purpose, so that is not checked.
    pub snapshot: Option<String>,
}

impl Source {
    /// Debian `suite`, component `main`, from [`DEFAULT_MIRROR`], for
    /// this machine's architecture, signed by [`DEBIAN_KEYRING`].
    pub fn debian(suite: &str) -> Source {
        Source {
            mirror: DEFAULT_MIRROR.to_string(),
            suite: suite.to_string(),
            components: vec!["main".to_string()],
            arch: Platform::host()
                .debian_arch()
                .unwrap_or("amd64")
                .to_string(),
            keyrings: vec![PathBuf::from(DEBIAN_KEYRING)],
            snapshot: None,
        }
    }

    /// Another mirror (any apt repository URL).
    pub fn with_mirror(mut self, url: &str) -> Result<Source, SourceError> {
        let url = url.trim_end_matches('/');
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Err(SourceError::Url(url.to_string()));
        }
        self.mirror = url.to_string();
        self.snapshot = None;
        Ok(self)
    }

    /// The Debian archive as it was at `time` (`20250520T000000Z`), from
    /// snapshot.debian.org: just another mirror.
    pub fn with_snapshot(mut self, time: &str) -> Result<Source, SourceError> {
        let b = time.as_bytes();
        let ok = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
        if !ok {
            return Err(SourceError::Snapshot(time.to_string()));
        }
        self.mirror = format!("{SNAPSHOT_BASE}/{time}");
        self.snapshot = Some(time.to_string());
        Ok(self)
    }

    /// Packages for `platform` (its Debian architecture name).
    pub fn with_platform(mut self, platform: &Platform) -> Result<Source, SourceError> {
        self.arch = platform
            .debian_arch()
            .ok_or_else(|| SourceError::Arch(platform.to_string()))?
            .to_string();
        Ok(self)
    }

    /// Checks the names that become URL path segments.
    pub fn validate(&self) -> Result<(), SourceError> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._+~/".contains(&b))
                && !s.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        };
        let check = |what, value: &str| {
            if name_ok(value) {
                Ok(())
            } else {
                Err(SourceError::Name {
                    what,
                    value: value.to_string(),
                })
            }
        };
        check("suite", &self.suite)?;
        check("architecture", &self.arch)?;
        for c in &self.components {
            check("component", c)?;
        }
        Ok(())
    }

    pub(crate) fn dists_url(&self, path: &str) -> String {
        format!("{}/dists/{}/{path}", self.mirror, self.suite)
    }

    pub(crate) fn pool_url(&self, filename: &str) -> String {
        format!("{}/{}", self.mirror, filename.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_is_a_mirror() {
        let s = Source::debian("bookworm")
            .with_snapshot("20250520T000000Z")
            .unwrap();
        assert_eq!(
            s.dists_url("InRelease"),
            "https://snapshot.debian.org/archive/debian/20250520T000000Z/dists/bookworm/InRelease"
        );
        for bad in ["2025-05-20", "20250520T000000", "20250520X000000Z", ""] {
            assert!(
                Source::debian("bookworm").with_snapshot(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_are_checked() {
        let mut s = Source::debian("bookworm");
        assert!(s.validate().is_ok());
        s.suite = "../x".into();
        assert!(s.validate().is_err());
        assert!(Source::debian("x").with_mirror("ftp://x").is_err());
        assert_eq!(
            Source::debian("x")
                .with_mirror("http://m.example/debian/")
                .unwrap()
                .pool_url("pool/main/a/a.deb"),
            "http://m.example/debian/pool/main/a/a.deb"
        );
    }
}
