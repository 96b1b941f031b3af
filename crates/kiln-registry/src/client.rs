//! The HTTP side: one `reqwest` client, the auth handshake, retries with
//! backoff, and errors that name the registry, repository and object.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::api_error::{ApiError, ErrorCode};
use crate::auth::{Challenge, TokenResponse};
use crate::credentials::Credential;
use crate::helper::HelperError;
use crate::settings::{Endpoint, Settings};
use crate::store::BoxError;
use kiln_store::Digest;
use kiln_types::error_chain;

/// What a request was about, for error messages:
/// "blob sha256:... of `127.0.0.1:5000/app`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub registry: String,
    pub repository: String,
    pub what: String,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.repository.is_empty() {
            write!(f, "{} of `{}`", self.what, self.registry)
        } else {
            write!(
                f,
                "{} of `{}/{}`",
                self.what, self.registry, self.repository
            )
        }
    }
}

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{ctx}: cannot resolve the registry host `{host}`")]
    UnresolvableHost {
        ctx: Context,
        host: String,
        #[source]
        source: std::io::Error,
    },
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
    #[error("{ctx} is not in the registry{detail}")]
    NotFound { ctx: Context, detail: String },
    /// A failure the registry named with a distribution error code.
    #[error("{ctx} {}", .error.sentence())]
    Api {
        ctx: Context,
        status: StatusCode,
        error: ApiError,
    },
    #[error("{ctx}: authentication required{detail}")]
    Unauthorized {
        ctx: Context,
        host: String,
        detail: String,
    },
    #[error("{ctx}: the registry rejected the credentials for `{host}`")]
    Rejected { ctx: Context, host: String },
    #[error("{ctx}: access denied (403){detail}")]
    Denied { ctx: Context, detail: String },
    #[error("{ctx}: cannot get the credentials for `{host}`")]
    Credentials {
        ctx: Context,
        host: String,
        #[source]
        source: HelperError,
    },
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
        matches!(
            self,
            Self::NotFound { .. }
                | Self::Api {
                    status: StatusCode::NOT_FOUND,
                    ..
                }
        )
    }

    /// The distribution error code the registry gave, if it gave one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }

    /// The errors this one stands for: itself, or, for a pull tried at
    /// several endpoints, each endpoint's (mirrors first, the registry
    /// last).
    pub fn causes(&self) -> Vec<&RegistryError> {
        match self {
            Self::AllEndpoints { errors, .. } => errors.iter().flat_map(Self::causes).collect(),
            e => vec![e],
        }
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

/// A short excerpt of an error body: the registry's error code and
/// message when it sent JSON `errors`, else the start of the text.
pub(crate) async fn body_detail(resp: Response) -> String {
    detail_of(&resp.bytes().await.unwrap_or_default())
}

fn detail_of(body: &[u8]) -> String {
    if let Some(e) = ApiError::from_body(body) {
        return if e.message.is_empty() {
            format!(" ({})", e.code)
        } else {
            format!(" ({}: {})", e.code, e.message)
        };
    }
    let t = String::from_utf8_lossy(body);
    let t = t.trim();
    if t.is_empty() {
        String::new()
    } else {
        let short: String = t.chars().take(300).collect();
        format!(": {short}")
    }
}

/// The error for an unexpected answer: [`RegistryError::Api`] when the
/// body names a distribution error code, else by status.
pub(crate) async fn failure(resp: Response, ctx: &Context) -> RegistryError {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    if let Some(error) = ApiError::from_body(&body) {
        return RegistryError::Api {
            ctx: ctx.clone(),
            status,
            error,
        };
    }
    if status == StatusCode::NOT_FOUND {
        return RegistryError::NotFound {
            ctx: ctx.clone(),
            detail: String::new(),
        };
    }
    RegistryError::Status {
        ctx: ctx.clone(),
        status,
        detail: detail_of(&body),
    }
}

/// `resp` when it is `200 OK`; otherwise the error about `ctx`.
pub(crate) async fn expect_ok(resp: Response, ctx: &Context) -> Result<Response, RegistryError> {
    match resp.status() {
        StatusCode::OK => Ok(resp),
        _ => Err(failure(resp, ctx).await),
    }
}

/// Whether `host` (`name[:port]`, `[v6]:port`) does not resolve: the error
/// of the lookup, checked after a connection failure so that a name that
/// cannot work is not retried.
pub(crate) async fn unresolvable(host: &str) -> Option<std::io::Error> {
    let with_port = if host.ends_with(']') || !host.contains(':') {
        format!("{host}:443")
    } else {
        host.to_string()
    };
    tokio::net::lookup_host(with_port).await.err()
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
                    if e.is_connect()
                        && let Some(source) = unresolvable(&ep.host).await
                    {
                        return Err(RegistryError::UnresolvableHost {
                            ctx: ctx.clone(),
                            host: ep.host.clone(),
                            source,
                        });
                    }
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
                    let had_cred =
                        header.is_some() && self.credential(ep, ctx).await.ok().flatten().is_some();
                    if had_cred {
                        return Err(RegistryError::Rejected {
                            ctx: ctx.clone(),
                            host: ep.host.clone(),
                        });
                    }
                    return Err(RegistryError::Unauthorized {
                        ctx: ctx.clone(),
                        host: ep.host.clone(),
                        detail: body_detail(resp).await,
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
                return Err(match failure(resp, ctx).await {
                    e @ RegistryError::Api { .. } => e,
                    RegistryError::Status { detail, .. } => RegistryError::Denied {
                        ctx: ctx.clone(),
                        detail,
                    },
                    e => e,
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
        let cred = self.credential(ep, ctx).await?;
        let (key, value) = match challenge {
            Challenge::Basic => {
                let Some(cred) = cred.filter(|c| !c.password.is_empty()) else {
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
                    .fetch_token(
                        ctx,
                        &ep.host,
                        realm,
                        service.as_deref(),
                        &scopes,
                        cred.as_ref(),
                        false,
                    )
                    .await?
                    .0;
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

    /// The credentials for an endpoint from the settings (a credential
    /// helper runs on a blocking thread).
    async fn credential(
        &self,
        ep: &Endpoint,
        ctx: &Context,
    ) -> Result<Option<Credential>, RegistryError> {
        let auth = self.settings.auth.clone();
        let (host, repo) = (ep.host.clone(), ep.repository.clone());
        let found = tokio::task::spawn_blocking(move || auth.lookup(&host, &repo))
            .await
            .map_err(|e| RegistryError::Setup(error_chain(&e)))?;
        found.map_err(|source| RegistryError::Credentials {
            ctx: ctx.clone(),
            host: ep.host.clone(),
            source,
        })
    }

    /// A bearer token from `realm`, and the refresh token the server gave
    /// for `offline` (docker login's `offline_token=true`). With an
    /// identity token this is docker's OAuth2 `refresh_token` grant (a
    /// `POST`); otherwise a `GET` with basic credentials or none.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_token(
        &self,
        ctx: &Context,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        cred: Option<&Credential>,
        offline: bool,
    ) -> Result<(String, Option<String>), RegistryError> {
        let err = |detail: String| RegistryError::Token {
            ctx: ctx.clone(),
            realm: realm.to_string(),
            detail,
        };
        let mut url = reqwest::Url::parse(realm).map_err(|e| err(format!("bad realm url: {e}")))?;
        let refresh = cred.and_then(|c| c.identity_token.as_deref());
        let mut form: Vec<(&str, String)> = Vec::new();
        match refresh {
            Some(token) => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", token.into()));
                form.push(("client_id", "kiln".into()));
                if let Some(s) = service {
                    form.push(("service", s.into()));
                }
                if !scopes.is_empty() {
                    form.push(("scope", scopes.join(" ")));
                }
            }
            None => {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s);
                }
                if offline {
                    q.append_pair("offline_token", "true");
                    q.append_pair("client_id", "kiln");
                }
            }
        }
        let policy = self.settings.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let rb = match refresh {
                Some(_) => self.http.post(url.clone()).form(&form),
                None => {
                    let rb = self.http.get(url.clone());
                    match cred.filter(|c| !c.password.is_empty()) {
                        Some(c) => rb.header(AUTHORIZATION, c.basic_header()),
                        None => rb,
                    }
                }
            };
            let resp = match rb.send().await {
                Ok(r) if r.status().is_server_error() && attempt < policy.max_attempts => {
                    tokio::time::sleep(policy.delay(attempt)).await;
                    continue;
                }
                Ok(r) => r,
                Err(e) => {
                    if e.is_connect()
                        && let Some(h) = url.host_str()
                        && let Some(source) = unresolvable(&format!(
                            "{h}:{}",
                            url.port_or_known_default().unwrap_or(443)
                        ))
                        .await
                    {
                        return Err(RegistryError::UnresolvableHost {
                            ctx: ctx.clone(),
                            host: h.to_string(),
                            source,
                        });
                    }
                    if attempt < policy.max_attempts {
                        tokio::time::sleep(policy.delay(attempt)).await;
                        continue;
                    }
                    return Err(err(error_chain(&e)));
                }
            };
            let status = resp.status();
            if cred.is_some()
                && matches!(
                    status,
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
                )
                && (status != StatusCode::BAD_REQUEST || refresh.is_some())
            {
                // OAuth2 answers a bad refresh token with 400 invalid_grant.
                return Err(RegistryError::Rejected {
                    ctx: ctx.clone(),
                    host: host.to_string(),
                });
            }
            if status == StatusCode::UNAUTHORIZED && cred.is_none() {
                return Err(RegistryError::Unauthorized {
                    ctx: ctx.clone(),
                    host: host.to_string(),
                    detail: " (the token server wants credentials)".to_string(),
                });
            }
            if !status.is_success() {
                return Err(err(format!("{status}{}", body_detail(resp).await)));
            }
            let body: TokenResponse = resp
                .json()
                .await
                .map_err(|e| err(format!("bad token response: {}", error_chain(&e))))?;
            let token = body
                .token
                .or(body.access_token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| err("the response has no `token`".to_string()))?;
            return Ok((token, body.refresh_token.filter(|t| !t.is_empty())));
        }
    }

    /// Checks `cred` against `registry` as `docker login` does: `GET /v2/`
    /// through the auth handshake with exactly these credentials. Returns
    /// what to store: `cred`, or, when the token server handed out a
    /// refresh token, the user name with that identity token instead of
    /// the password (as docker stores it).
    pub async fn login(
        &self,
        registry: &str,
        cred: &Credential,
    ) -> Result<Credential, RegistryError> {
        let ep = self.settings.origin(registry, "");
        let ctx = self.ctx(&ep, "login");
        let url = format!("{}/v2/", ep.base_url());
        let get = |auth: Option<String>| {
            let mut rb = self.http.get(&url);
            if let Some(h) = auth {
                rb = rb.header(AUTHORIZATION, h);
            }
            rb.send()
        };
        let first = match get(None).await {
            Ok(r) => r,
            Err(e) => {
                if e.is_connect()
                    && let Some(source) = unresolvable(&ep.host).await
                {
                    return Err(RegistryError::UnresolvableHost {
                        ctx,
                        host: ep.host.clone(),
                        source,
                    });
                }
                return Err(RegistryError::Connection {
                    ctx,
                    attempts: 1,
                    detail: error_chain(&e),
                });
            }
        };
        if first.status().is_success() {
            // A registry without auth: nothing to check, as docker.
            return Ok(cred.clone());
        }
        if first.status() != StatusCode::UNAUTHORIZED {
            return Err(failure(first, &ctx).await);
        }
        let Some(challenge) = challenge_of(first.headers()) else {
            return Err(RegistryError::Protocol {
                ctx,
                detail: "401 without a `WWW-Authenticate` challenge kiln can answer".into(),
            });
        };
        let (header, stored) = match challenge {
            Challenge::Basic => (cred.basic_header(), cred.clone()),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scopes: Vec<String> = scope.into_iter().collect();
                let (token, refresh) = self
                    .fetch_token(
                        &ctx,
                        &ep.host,
                        &realm,
                        service.as_deref(),
                        &scopes,
                        Some(cred),
                        true,
                    )
                    .await?;
                let stored = match refresh {
                    Some(t) => Credential {
                        username: cred.username.clone(),
                        password: String::new(),
                        identity_token: Some(t),
                    },
                    None => cred.clone(),
                };
                (format!("Bearer {token}"), stored)
            }
        };
        let resp = get(Some(header))
            .await
            .map_err(|e| RegistryError::Connection {
                ctx: ctx.clone(),
                attempts: 1,
                detail: error_chain(&e),
            })?;
        match resp.status() {
            s if s.is_success() => Ok(stored),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(RegistryError::Rejected {
                ctx,
                host: ep.host.clone(),
            }),
            _ => Err(failure(resp, &ctx).await),
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
