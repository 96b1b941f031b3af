//! An opened repository: the verified `Release` and the `Packages` indexes
//! of its components, and the `.deb` downloads they vouch for. Everything
//! goes through the content store by SHA256: an index or `.deb` already
//! there is not fetched again, and nothing unverified is stored.

use std::io::Read;

use kiln_store::{Digest, Store, StoreError};

use crate::fetch::{FetchError, Fetcher};
use crate::index::{Index, IndexError, PkgId};
use crate::release::{Release, ReleaseError};
use crate::source::{Source, SourceError};
use crate::trust::{Keyring, TrustError};

/// The largest `InRelease` read (Debian's is about 150 KB).
const MAX_INRELEASE: u64 = 16 << 20;

/// A repository that cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("`{url}` is not an xz stream")]
    Decompress {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{url}`: the uncompressed index has SHA256 {got} ({size} bytes), `Release` says {expected}; nothing was stored"
    )]
    Uncompressed {
        url: String,
        expected: Digest,
        got: Digest,
        size: u64,
    },
    #[error("cannot read the `Contents` index `{url}`")]
    Contents {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{url}` is not UTF-8 text")]
    NotText { url: String },
    #[error("package `{package}` has no valid `SHA256` in the index")]
    NoChecksum { package: String },
    #[error("local store")]
    Store(#[source] StoreError),
}

/// One opened repository.
#[derive(Debug)]
pub struct Repository {
    pub source: Source,
    pub release: Release,
    pub index: Index,
}

/// A `.deb` chosen by resolution, as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebRef {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The pool path below the mirror root.
    pub filename: String,
    pub size: u64,
    pub sha256: Digest,
}

impl Repository {
    /// Fetches and verifies `InRelease` and the `Packages` of every
    /// component (from the store when it has them).
    pub async fn open(
        source: &Source,
        fetcher: &Fetcher,
        store: &Store,
    ) -> Result<Repository, RepoError> {
        let release = Self::release(source, fetcher, store).await?;
        let mut index = Index::default();
        for component in &source.components {
            let dir = format!("{component}/binary-{}", source.arch);
            let text = Self::packages(source, &release, &dir, fetcher, store).await?;
            index.add(&format!("{dir}/Packages"), &text)?;
        }
        Ok(Repository {
            source: source.clone(),
            release,
            index,
        })
    }

    /// Fetches `InRelease` and verifies its signature, suite and (but for
    /// a snapshot) `Valid-Until`: the `Release` every index is checked
    /// against.
    pub async fn release(
        source: &Source,
        fetcher: &Fetcher,
        store: &Store,
    ) -> Result<Release, RepoError> {
        source.validate()?;
        let keyring = Keyring::load(&source.keyrings)?;
        let url = source.dists_url("InRelease");
        let bytes = fetcher.get(&url, MAX_INRELEASE).await?;
        let text = String::from_utf8(bytes).map_err(|_| RepoError::NotText { url: url.clone() })?;
        let signed = keyring.verify_clearsigned(&url, &text)?;
        let release = Release::parse(&url, &signed, Digest::of(text.as_bytes()))?;
        release.check_suite(&url, &source.suite)?;
        if source.snapshot.is_none() {
            release.check_valid(&url, jiff::Timestamp::now())?;
        }
        // verified: the signed file is kept, so a lock can name it
        store.put_blob(text.as_bytes()).map_err(RepoError::Store)?;
        tracing::debug!(%url, digest = %release.digest, "InRelease verified");
        Ok(release)
    }

    /// The uncompressed `Packages` of `dir`, verified against `Release`.
    async fn packages(
        source: &Source,
        release: &Release,
        dir: &str,
        fetcher: &Fetcher,
        store: &Store,
    ) -> Result<String, RepoError> {
        let rel_url = source.dists_url("Release");
        let plain = release.entry(&rel_url, &format!("{dir}/Packages"))?.clone();
        let xz = release
            .entry(&rel_url, &format!("{dir}/Packages.xz"))?
            .clone();
        if !store.has_blob(&plain.sha256) || !store.has_blob(&xz.sha256) {
            let url = if release.by_hash {
                source.dists_url(&format!("{dir}/by-hash/SHA256/{}", xz.sha256.hex()))
            } else {
                source.dists_url(&format!("{dir}/Packages.xz"))
            };
            let compressed = fetcher.get(&url, xz.size).await?;
            let got = Digest::of(&compressed);
            if compressed.len() as u64 != xz.size {
                return Err(FetchError::Size {
                    url,
                    expected: xz.size,
                    got: compressed.len() as u64,
                }
                .into());
            }
            if got != xz.sha256 {
                return Err(FetchError::Sha256 {
                    url,
                    expected: xz.sha256,
                    got,
                }
                .into());
            }
            let mut text = Vec::with_capacity(plain.size as usize);
            liblzma::read::XzDecoder::new(&compressed[..])
                .take(plain.size + 1)
                .read_to_end(&mut text)
                .map_err(|source| RepoError::Decompress {
                    url: url.clone(),
                    source,
                })?;
            let got = Digest::of(&text);
            if got != plain.sha256 || text.len() as u64 != plain.size {
                return Err(RepoError::Uncompressed {
                    url,
                    expected: plain.sha256,
                    got,
                    size: text.len() as u64,
                });
            }
            store.put_blob(&text).map_err(RepoError::Store)?;
            // the signed form too, so the repository can be served again
            // as it was (a local mirror, apt pointed at the same index)
            store.put_blob(&compressed).map_err(RepoError::Store)?;
        }
        let bytes = store.read_blob(&plain.sha256).map_err(RepoError::Store)?;
        String::from_utf8(bytes).map_err(|_| RepoError::NotText {
            url: source.dists_url(&format!("{dir}/Packages")),
        })
    }

    /// The download description of a package of the index.
    pub fn deb(&self, id: PkgId) -> Result<DebRef, RepoError> {
        let ix = &self.index;
        let sha256 = ix.sha256(id).ok_or_else(|| RepoError::NoChecksum {
            package: ix.name(id).to_string(),
        })?;
        Ok(DebRef {
            name: ix.name(id).to_string(),
            version: ix.version(id).to_string(),
            arch: ix.arch(id).to_string(),
            filename: ix.filename(id).to_string(),
            size: ix.size(id),
            sha256,
        })
    }
}

/// Downloads `debs` from `source` into `store` (a few at a time), each
/// verified against the SHA256 and size the index gives.
pub async fn download(
    source: &Source,
    debs: &[DebRef],
    fetcher: &Fetcher,
    store: &Store,
) -> Result<(), FetchError> {
    const AT_ONCE: usize = 4;
    let mut set = tokio::task::JoinSet::new();
    let mut pending = debs.iter();
    loop {
        while set.len() < AT_ONCE {
            let Some(d) = pending.next() else { break };
            let (f, s, d, url) = (
                fetcher.clone(),
                store.clone(),
                d.clone(),
                source.pool_url(&d.filename),
            );
            set.spawn(async move { f.get_into_store(&url, &s, &d.sha256, d.size).await });
        }
        match set.join_next().await {
            None => return Ok(()),
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(join)) => std::panic::resume_unwind(join.into_panic()),
        }
    }
}
