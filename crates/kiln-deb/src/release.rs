//! The `Release` file (the text `InRelease` signs): which suite it is,
//! until when it is valid, and the SHA256 and size of every index.

use std::collections::BTreeMap;

use deb822_fast::borrowed::BorrowedParagraphIter;
use kiln_store::Digest;

/// A `Release` that cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReleaseError {
    #[error("`{url}`: the Release file has no fields or is not deb822 text")]
    Empty { url: String },
    #[error("`{url}`: line `{line}` of the SHA256 list is not `HASH SIZE PATH`")]
    BadEntry { url: String, line: String },
    #[error(
        "`{url}` is for suite `{suite}` (codename `{codename}`), not the `{wanted}` that was asked for"
    )]
    WrongSuite {
        url: String,
        wanted: String,
        suite: String,
        codename: String,
    },
    #[error(
        "`{url}` expired at {valid_until} (it is {now}); the mirror is stale or replays an old archive: use another mirror, or a snapshot time for an old state on purpose"
    )]
    Expired {
        url: String,
        valid_until: String,
        now: String,
    },
    #[error("`{url}`: unreadable `Valid-Until: {value}`")]
    BadDate { url: String, value: String },
    #[error("`{url}` lists no `{path}` (the repository has no such component or architecture)")]
    Missing { url: String, path: String },
}

/// One file a Release vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sha256: Digest,
    pub size: u64,
}

/// A parsed, verified `Release`.
#[derive(Debug, Clone)]
pub struct Release {
    pub suite: String,
    pub codename: String,
    pub date: String,
    pub valid_until: Option<String>,
    /// `Acquire-By-Hash: yes`: indexes are also served under
    /// `by-hash/SHA256/<hex>`, which never changes under a download.
    pub by_hash: bool,
    /// Path below `dists/SUITE/` to hash and size.
    pub sha256: BTreeMap<String, Entry>,
    /// The SHA256 of the signed `InRelease` this came from.
    pub digest: Digest,
}

impl Release {
    /// Parses the signed text of `InRelease` (fetched from `url`; `digest`
    /// is the SHA256 of the whole file).
    pub fn parse(url: &str, text: &str, digest: Digest) -> Result<Release, ReleaseError> {
        let empty = || ReleaseError::Empty {
            url: url.to_string(),
        };
        let para = BorrowedParagraphIter::new(text)
            .next()
            .ok_or_else(empty)?
            .map_err(|_| empty())?;
        let one = |k: &str| para.get_single(k).unwrap_or("").trim().to_string();
        let mut sha256 = BTreeMap::new();
        if let Some(lines) = para.get("SHA256") {
            for line in lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
                let bad = || ReleaseError::BadEntry {
                    url: url.to_string(),
                    line: line.to_string(),
                };
                let mut it = line.split_ascii_whitespace();
                let (Some(h), Some(size), Some(path), None) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    return Err(bad());
                };
                let sha256_digest = Digest::from_hex(h).map_err(|_| bad())?;
                let size = size.parse().map_err(|_| bad())?;
                sha256.insert(
                    path.to_string(),
                    Entry {
                        sha256: sha256_digest,
                        size,
                    },
                );
            }
        }
        let valid_until = Some(one("Valid-Until")).filter(|s| !s.is_empty());
        Ok(Release {
            suite: one("Suite"),
            codename: one("Codename"),
            date: one("Date"),
            valid_until,
            by_hash: one("Acquire-By-Hash").eq_ignore_ascii_case("yes"),
            sha256,
            digest,
        })
    }

    /// The Release must be the suite asked for, by name or codename
    /// (`stable` or `bookworm`), so a mirror cannot pass off another one.
    pub fn check_suite(&self, url: &str, wanted: &str) -> Result<(), ReleaseError> {
        if wanted == self.suite || wanted == self.codename {
            return Ok(());
        }
        Err(ReleaseError::WrongSuite {
            url: url.to_string(),
            wanted: wanted.to_string(),
            suite: self.suite.clone(),
            codename: self.codename.clone(),
        })
    }

    /// `Valid-Until` must not be in the past (apt's replay protection).
    pub fn check_valid(&self, url: &str, now: jiff::Timestamp) -> Result<(), ReleaseError> {
        let Some(v) = &self.valid_until else {
            return Ok(());
        };
        let until = jiff::fmt::rfc2822::DateTimeParser::new()
            .parse_timestamp(v)
            .map_err(|_| ReleaseError::BadDate {
                url: url.to_string(),
                value: v.clone(),
            })?;
        if until < now {
            return Err(ReleaseError::Expired {
                url: url.to_string(),
                valid_until: v.clone(),
                now: now.to_string(),
            });
        }
        Ok(())
    }

    /// The entry for `path` (below `dists/SUITE/`).
    pub fn entry(&self, url: &str, path: &str) -> Result<&Entry, ReleaseError> {
        self.sha256.get(path).ok_or_else(|| ReleaseError::Missing {
            url: url.to_string(),
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Origin: Debian\nSuite: stable\nCodename: bookworm\nDate: Sat, 10 May 2025 08:47:17 UTC\nValid-Until: Sat, 17 May 2025 08:47:17 UTC\nAcquire-By-Hash: yes\nSHA256:\n 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef  12345 main/binary-amd64/Packages.xz\n fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210 99 main/binary-amd64/Release\n";

    #[test]
    fn parses_entries_and_checks() {
        let r = Release::parse("u", TEXT, Digest::of(b"x")).unwrap();
        assert!(r.by_hash);
        assert_eq!(r.codename, "bookworm");
        let e = r.entry("u", "main/binary-amd64/Packages.xz").unwrap();
        assert_eq!(e.size, 12345);
        assert!(r.entry("u", "contrib/binary-amd64/Packages.xz").is_err());
        assert!(r.check_suite("u", "bookworm").is_ok());
        assert!(r.check_suite("u", "stable").is_ok());
        assert!(matches!(
            r.check_suite("u", "trixie"),
            Err(ReleaseError::WrongSuite { .. })
        ));
        let before: jiff::Timestamp = "2025-05-12T00:00:00Z".parse().unwrap();
        let after: jiff::Timestamp = "2025-05-18T00:00:00Z".parse().unwrap();
        assert!(r.check_valid("u", before).is_ok());
        assert!(matches!(
            r.check_valid("u", after),
            Err(ReleaseError::Expired { .. })
        ));
    }

    #[test]
    fn bad_entry_is_named() {
        let text = "Suite: stable\nSHA256:\n nothex 12 main/x\n";
        let e = Release::parse("u", text, Digest::of(b"x")).unwrap_err();
        assert!(e.to_string().contains("nothex 12 main/x"), "{e}");
    }
}
