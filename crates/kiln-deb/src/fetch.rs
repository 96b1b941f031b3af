//! HTTP downloads with retries, into memory (small indexes) or straight
//! into the content store (`.deb`s, verified before they become visible).

use std::io::Write;
use std::time::Duration;

use kiln_store::{Digest, Store, StoreError};
use reqwest::StatusCode;

/// How often and how patiently a download is tried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total tries of one download, including the first.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(300),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// A download that failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot download `{url}`: not found (404)")]
    NotFound { url: String },
    #[error("cannot download `{url}`: the server answered {status} after {attempts} attempt(s)")]
    Status {
        url: String,
        status: StatusCode,
        attempts: u32,
    },
    #[error("cannot download `{url}` after {attempts} attempt(s)")]
    Connection {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("`{url}` is larger than the {limit} bytes expected")]
    TooLarge { url: String, limit: u64 },
    #[error(
        "`{url}`: size mismatch: the index says {expected} bytes, the download has {got}; nothing was stored"
    )]
    Size {
        url: String,
        expected: u64,
        got: u64,
    },
    #[error(
        "`{url}`: SHA256 mismatch: the index says {expected}, the download is {got}; nothing was stored"
    )]
    Sha256 {
        url: String,
        expected: Digest,
        got: Digest,
    },
    #[error("cannot store `{url}`")]
    Store {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot start the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// The HTTP side: one client, retries with backoff on connection failures,
/// 5xx and 429, and on a body cut short (a mirror dying mid-download).
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    pub retry: RetryPolicy,
}

enum Attempt<T> {
    Done(T),
    Retry(FetchError),
}

impl Fetcher {
    pub fn new() -> Result<Fetcher, FetchError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(FetchError::Client)?;
        Ok(Fetcher {
            client,
            retry: RetryPolicy::default(),
        })
    }

    async fn with_retries<T, F, Fut>(&self, url: &str, mut once: F) -> Result<T, FetchError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<Attempt<T>, FetchError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match once(attempt).await? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry(e) if attempt < self.retry.max_attempts => {
                    tracing::warn!(url, attempt, error = %kiln_types::error_chain(&e), "download failed, retrying");
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                }
                Attempt::Retry(e) => return Err(e),
            }
        }
    }

    async fn start(
        &self,
        url: &str,
        attempt: u32,
    ) -> Result<Attempt<reqwest::Response>, FetchError> {
        match self.client.get(url).send().await {
            Err(source) => Ok(Attempt::Retry(FetchError::Connection {
                url: url.to_string(),
                attempts: attempt,
                source,
            })),
            Ok(r) if r.status() == StatusCode::NOT_FOUND || r.status() == StatusCode::GONE => {
                Err(FetchError::NotFound {
                    url: url.to_string(),
                })
            }
            Ok(r) if r.status().is_success() => Ok(Attempt::Done(r)),
            Ok(r) => {
                let e = FetchError::Status {
                    url: url.to_string(),
                    status: r.status(),
                    attempts: attempt,
                };
                if r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS {
                    Ok(Attempt::Retry(e))
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The whole body of `url`, at most `limit` bytes.
    pub async fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        self.with_retries(url, |attempt| async move {
            let mut resp = match self.start(url, attempt).await? {
                Attempt::Done(r) => r,
                Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
            };
            let mut body = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        body.extend_from_slice(&c);
                        if body.len() as u64 > limit {
                            return Err(FetchError::TooLarge {
                                url: url.to_string(),
                                limit,
                            });
                        }
                    }
                    Ok(None) => return Ok(Attempt::Done(body)),
                    Err(source) => {
                        return Ok(Attempt::Retry(FetchError::Connection {
                            url: url.to_string(),
                            attempts: attempt,
                            source,
                        }));
                    }
                }
            }
        })
        .await
    }

    /// Downloads `url` into `store`, where it appears only if it has
    /// `size` bytes and the SHA256 `expected`. A blob already there is not
    /// fetched again.
    pub async fn get_into_store(
        &self,
        url: &str,
        store: &Store,
        expected: &Digest,
        size: u64,
    ) -> Result<(), FetchError> {
        if store.has_blob(expected) {
            return Ok(());
        }
        let serr = |source| FetchError::Store {
            url: url.to_string(),
            source,
        };
        self.with_retries(url, |attempt| async move {
            let mut resp = match self.start(url, attempt).await? {
                Attempt::Done(r) => r,
                Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
            };
            let mut w = store.blob_writer().map_err(serr)?;
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        if w.size() + c.len() as u64 > size {
                            return Err(FetchError::Size {
                                url: url.to_string(),
                                expected: size,
                                got: w.size() + c.len() as u64,
                            });
                        }
                        w.write_all(&c).map_err(|source| {
                            serr(StoreError::WriteTemp {
                                dir: store.tmp_dir(),
                                source,
                            })
                        })?;
                    }
                    Ok(None) => break,
                    Err(source) => {
                        return Ok(Attempt::Retry(FetchError::Connection {
                            url: url.to_string(),
                            attempts: attempt,
                            source,
                        }));
                    }
                }
            }
            match w.commit_sized(expected, size) {
                Ok(_) => Ok(Attempt::Done(())),
                Err(StoreError::SizeMismatch { actual, .. }) => {
                    // a body cut short by the server may be whole next time
                    Ok(Attempt::Retry(FetchError::Size {
                        url: url.to_string(),
                        expected: size,
                        got: actual,
                    }))
                }
                Err(StoreError::DigestMismatch { actual, .. }) => Err(FetchError::Sha256 {
                    url: url.to_string(),
                    expected: *expected,
                    got: actual,
                }),
                Err(e) => Err(serr(e)),
            }
        })
        .await
    }
}
