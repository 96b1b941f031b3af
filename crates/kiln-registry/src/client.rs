//! The HTTP side: one `reqwest` client, the auth handshake, retries with
//! backoff, and errors that name the registry, repository and object.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::auth::{Challenge, TokenResponse};
use crate::settings::{Endpoint, Settings};
use crate::store::BoxError;
use kiln_store::Digest;
use kiln_types::error_chain;

/// What a request was about, for error messages:
/// "`127.0.0.1:5000/app`: blob sha256:...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub registry: String,
    pub repository: String,
    pub what: String,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "registry `{}`, repository `{}`, {}",
            self.registry, self.repository, self.what
        )
    }
}

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{ctx}: connection failed after {attempts} attempt(s): {detail}")]
    Connection {
        ctx: Context,
        attempts: u32,
        detail: String,
    },
    #[error("{ctx}: the registry answered {status} after {attempts} attempt(s){detail}")]
    Unavailable {
        ctx: Context,
        status: StatusCode,
        attempts: u32,
        detail: String,
    },
    #[error("{ctx}: not found in the registry{detail}")]
    NotFound { ctx: Context, detail: String },
    #[error(
        "{ctx}: authentication required{detail}; put credentials for `{host}` in `~/.docker/config.json` or the file named by `REGISTRY_AUTH_FILE`"
    )]
    Unauthorized {
        ctx: Context,
        host: String,
        detail: String,
    },
    #[error(
        "{ctx}: access denied (403){detail}; check that your credentials may access this repository"
    )]
    Denied { ctx: Context, detail: String },
    #[error("{ctx}: cannot get a token from `{realm}`: {detail}")]
    Token {
        ctx: Context,
        realm: String,
        detail: String,
    },
    #[error("{ctx}: unexpected answer {status}{detail}")]
    Status {
        ctx: Context,
        status: StatusCode,
        detail: String,
    },
    #[error(
        "{ctx}: content digest mismatch: expected {expected}, got {actual} ({size} bytes); nothing was stored"
    )]
    DigestMismatch {
        ctx: Context,
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("{ctx}: size mismatch: expected {expected} bytes, got {actual}; nothing was stored")]
    SizeMismatch {
        ctx: Context,
        expected: u64,
        actual: u64,
    },
    #[error("{ctx}: {detail}")]
    BadManifest { ctx: Context, detail: String },
    #[error("{ctx}: unsupported manifest media type `{media_type}`{hint}")]
    UnsupportedMediaType {
        ctx: Context,
        media_type: String,
        hint: String,
    },
    #[error(
        "{ctx}: no image for platform {wanted}; the index has: {available}; choose one with `--platform`"
    )]
    NoPlatform {
        ctx: Context,
        wanted: String,
        available: String,
    },
    #[error("{ctx}: the upload session is out of step with the registry ({status}){detail}")]
    UploadSession {
        ctx: Context,
        status: StatusCode,
        detail: String,
    },
    #[error("{ctx}: the registry broke the protocol: {detail}")]
    Protocol { ctx: Context, detail: String },
    #[error("{ctx}: local store: {source}")]
    Store {
        ctx: Context,
        #[source]
        source: BoxError,
    },
    #[error("cannot pull `{reference}` from any endpoint:{}", list(.errors))]
    AllEndpoints {
        reference: String,
        errors: Vec<RegistryError>,
    },
    #[error("cannot set up the http client: {0}")]
    Setup(String),
}

fn list(errors: &[RegistryError]) -> String {
    errors.iter().map(|e| format!("\n  - {e}")).collect()
}

impl RegistryError {
    /// Whether the object is simply absent (as opposed to a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// The actions a request needs, as token scopes
/// (`repository:NAME:pull,push`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope(Vec<String>);

impl Scope {
    pub fn pull(repo: &str) -> Self {
        Self(vec![format!("repository:{repo}:pull")])
    }
    pub fn push(repo: &str) -> Self {
        Self(vec![format!("repository:{repo}:pull,push")])
    }
    pub fn and_pull(mut self, repo: &str) -> Self {
        let s = format!("repository:{repo}:pull");
        if !self.0.contains(&s) {
            self.0.push(s);
        }
        self
    }
    fn key(&self) -> String {
        self.0.join(" ")
    }
}

#[derive(Default)]
struct AuthState {
    /// Authorization header values by (host, scope key).
    headers: HashMap<(String, String), String>,
    /// The last challenge each host sent, so later scopes authenticate
    /// before their first request instead of after a 401.
    challenges: HashMap<String, Challenge>,
}

/// An OCI distribution API client. Cheap to share behind an `Arc`; holds a
/// connection pool and the tokens it obtained.
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) settings: Settings,
    auth: Mutex<AuthState>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A short excerpt of an error body (registries send JSON `errors`).
pub(crate) async fn body_detail(resp: Response) -> String {
    match resp.text().await {
        Ok(t) if !t.trim().is_empty() => {
            let t = t.trim();
            let short: String = t.chars().take(300).collect();
            format!(": {short}")
        }
        _ => String::new(),
    }
}

/// `resp` when it is `200 OK`; otherwise the error about `ctx`, with 404
/// as [`RegistryError::NotFound`].
pub(crate) async fn expect_ok(resp: Response, ctx: &Context) -> Result<Response, RegistryError> {
    match resp.status() {
        StatusCode::OK => Ok(resp),
        StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
            ctx: ctx.clone(),
            detail: body_detail(resp).await,
        }),
        status => Err(RegistryError::Status {
            ctx: ctx.clone(),
            status,
            detail: body_detail(resp).await,
        }),
    }
}

impl Client {
    pub fn new(settings: Settings) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .use_rustls_tls()
            .build()
            .map_err(|e| RegistryError::Setup(error_chain(&e)))?;
        Ok(Self {
            http,
            settings,
            auth: Mutex::new(AuthState::default()),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn ctx(&self, ep: &Endpoint, what: impl Into<String>) -> Context {
        Context {
            registry: ep.host.clone(),
            repository: ep.repository.clone(),
            what: what.into(),
        }
    }

    /// Sends a request built by `build`, authenticating on a 401 challenge
    /// and retrying 5xx, 429 and connection failures with backoff. Returns
    /// any other response for the caller to interpret.
    pub(crate) async fn send(
        &self,
        ep: &Endpoint,
        scope: &Scope,
        ctx: &Context,
        build: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Sync),
    ) -> Result<Response, RegistryError> {
        let policy = self.settings.retry;
        let key = (ep.host.clone(), scope.key());
        let mut header = self.cached_header(&key);
        if header.is_none() {
            let known = self
                .auth
                .lock()
                .expect("auth lock")
                .challenges
                .get(&ep.host)
                .cloned();
            if let Some(ch) = known {
                header = Some(self.authorize(ep, scope, ctx, &ch).await?);
            }
        }
        let mut reauthed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut rb = build(&self.http);
            if let Some(h) = &header {
                rb = rb.header(AUTHORIZATION, h);
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    if attempt < policy.max_attempts {
                        tracing::warn!(%ctx, attempt, error = %error_chain(&e), "request failed, retrying");
                        tokio::time::sleep(policy.delay(attempt)).await;
                        continue;
                    }
                    return Err(RegistryError::Connection {
                        ctx: ctx.clone(),
                        attempts: attempt,
                        detail: error_chain(&e),
                    });
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                let challenge = challenge_of(resp.headers());
                if reauthed || challenge.is_none() {
                    let detail = if header.is_some() {
                        " (the registry rejected the credentials)".to_string()
                    } else {
                        body_detail(resp).await
                    };
                    return Err(RegistryError::Unauthorized {
                        ctx: ctx.clone(),
                        host: ep.host.clone(),
                        detail,
                    });
                }
                let ch = challenge.expect("checked above");
                self.auth
                    .lock()
                    .expect("auth lock")
                    .challenges
                    .insert(ep.host.clone(), ch.clone());
                header = Some(self.authorize(ep, scope, ctx, &ch).await?);
                reauthed = true;
                attempt -= 1;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                if attempt < policy.max_attempts {
                    // Honour `Retry-After: SECONDS`, but never wait longer
                    // than the policy's longest pause.
                    let delay = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(std::time::Duration::from_secs)
                        .map_or(policy.delay(attempt), |d| d.min(policy.max_delay));
                    tracing::warn!(%ctx, attempt, %status, "registry busy or failing, retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                return Err(RegistryError::Unavailable {
                    ctx: ctx.clone(),
                    status,
                    attempts: attempt,
                    detail: body_detail(resp).await,
                });
            }
            if status == StatusCode::FORBIDDEN {
                return Err(RegistryError::Denied {
                    ctx: ctx.clone(),
                    detail: body_detail(resp).await,
                });
            }
            return Ok(resp);
        }
    }

    fn cached_header(&self, key: &(String, String)) -> Option<String> {
        let st = self.auth.lock().expect("auth lock");
        st.headers
            .get(key)
            .or_else(|| st.headers.get(&(key.0.clone(), String::new())))
            .cloned()
    }

    /// Answers a challenge: basic credentials directly, or a bearer token
    /// from the realm (anonymous when there are no credentials).
    async fn authorize(
        &self,
        ep: &Endpoint,
        scope: &Scope,
        ctx: &Context,
        challenge: &Challenge,
    ) -> Result<String, RegistryError> {
        let cred = self.settings.auth.lookup(&ep.host, &ep.repository).cloned();
        let (key, value) = match challenge {
            Challenge::Basic => {
                let Some(cred) = cred else {
                    return Err(RegistryError::Unauthorized {
                        ctx: ctx.clone(),
                        host: ep.host.clone(),
                        detail: " (basic auth, and no credentials are configured)".to_string(),
                    });
                };
                ((ep.host.clone(), String::new()), cred.basic_header())
            }
            Challenge::Bearer {
                realm,
                service,
                scope: ch_scope,
            } => {
                let mut scopes = scope.0.clone();
                if let Some(s) = ch_scope {
                    for part in s.split(' ') {
                        if !part.is_empty() && !scopes.iter().any(|x| x == part) {
                            scopes.push(part.to_string());
                        }
                    }
                }
                let token = self
                    .fetch_token(ctx, realm, service.as_deref(), &scopes, cred.as_ref())
                    .await?;
                ((ep.host.clone(), scope.key()), format!("Bearer {token}"))
            }
        };
        self.auth
            .lock()
            .expect("auth lock")
            .headers
            .insert(key, value.clone());
        Ok(value)
    }

    async fn fetch_token(
        &self,
        ctx: &Context,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        cred: Option<&crate::auth::Credential>,
    ) -> Result<String, RegistryError> {
        let err = |detail: String| RegistryError::Token {
            ctx: ctx.clone(),
            realm: realm.to_string(),
            detail,
        };
        let mut url = reqwest::Url::parse(realm).map_err(|e| err(format!("bad realm url: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let policy = self.settings.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut rb = self.http.get(url.clone());
            if let Some(c) = cred {
                rb = rb.header(AUTHORIZATION, c.basic_header());
            }
            let resp = match rb.send().await {
                Ok(r) if r.status().is_server_error() && attempt < policy.max_attempts => {
                    tokio::time::sleep(policy.delay(attempt)).await;
                    continue;
                }
                Ok(r) => r,
                Err(_) if attempt < policy.max_attempts => {
                    tokio::time::sleep(policy.delay(attempt)).await;
                    continue;
                }
                Err(e) => return Err(err(error_chain(&e))),
            };
            let status = resp.status();
            if !status.is_success() {
                let hint = if status == StatusCode::UNAUTHORIZED {
                    if cred.is_some() {
                        " (credentials rejected)"
                    } else {
                        " (credentials needed)"
                    }
                } else {
                    ""
                };
                return Err(err(format!("{status}{hint}{}", body_detail(resp).await)));
            }
            let body: TokenResponse = resp
                .json()
                .await
                .map_err(|e| err(format!("bad token response: {}", error_chain(&e))))?;
            return body
                .token
                .or(body.access_token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| err("the response has no `token`".to_string()));
        }
    }
}

fn challenge_of(headers: &HeaderMap) -> Option<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(Challenge::parse)
        // Prefer bearer when a registry offers both.
        .max_by_key(|c| matches!(c, Challenge::Bearer { .. }))
}
