//! Credentials and the registry auth handshake.
//!
//! Credentials come from `REGISTRY_AUTH_FILE` (containers' `auth.json`) and
//! from docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`); both use `{"auths": {"HOST": {"auth":
//! base64("user:password")}}}`. Earlier files win. Credential helpers
//! (`credsStore`, `credHelpers`) are not run; a debug log says so.
//!
//! The handshake follows the distribution token spec: a request answered
//! `401` with `WWW-Authenticate: Bearer realm=..,service=..,scope=..` is
//! retried with a token from the realm (anonymous, or with basic
//! credentials when there are some); `Basic realm=..` is answered with the
//! credentials directly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log secrets.
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credential {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", STANDARD.encode(raw))
    }
}

/// Why an auth file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read registry auth file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registry auth file `{path}` is not valid JSON: {source}; fix or remove it")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "registry auth file `{path}` has a bad `auth` entry for `{key}`: {reason}; it must be base64 of `user:password`"
    )]
    BadAuth {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

#[derive(serde::Deserialize)]
struct FileFormat {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials by registry key (`host[:port]`, optionally with a
/// repository namespace as containers' auth.json allows).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    entries: Vec<(String, Credential)>,
}

impl AuthConfig {
    /// Loads `REGISTRY_AUTH_FILE` and docker's config.json (missing files
    /// are fine, broken ones are errors).
    pub fn load_default() -> Result<Self, AuthFileError> {
        let mut cfg = Self::default();
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
            cfg.load_file(Path::new(&p))?;
        }
        let docker_dir = std::env::var_os("DOCKER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        if let Some(dir) = docker_dir {
            cfg.load_file(&dir.join("config.json"))?;
        }
        Ok(cfg)
    }

    /// Adds the entries of one file (entries already present win).
    pub fn load_file(&mut self, path: &Path) -> Result<(), AuthFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(AuthFileError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        self.load_json(path, &text)
    }

    /// Adds the entries of an auth file's text; `path` is for messages.
    pub fn load_json(&mut self, path: &Path, text: &str) -> Result<(), AuthFileError> {
        let file: FileFormat =
            serde_json::from_str(text).map_err(|source| AuthFileError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        if file.creds_store.is_some() || !file.cred_helpers.is_empty() {
            tracing::debug!(path = %path.display(), "credential helpers are not supported; using `auths` only");
        }
        for (key, entry) in file.auths {
            let bad = |reason: &str| AuthFileError::BadAuth {
                path: path.to_path_buf(),
                key: key.clone(),
                reason: reason.to_string(),
            };
            let cred = match (
                entry.auth.filter(|a| !a.is_empty()),
                entry.username,
                entry.password,
            ) {
                (Some(auth), _, _) => {
                    let raw = STANDARD
                        .decode(auth.trim())
                        .map_err(|e| bad(&format!("not base64 ({e})")))?;
                    let raw = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
                    let (u, p) = raw
                        .split_once(':')
                        .ok_or_else(|| bad("no `:` between user and password"))?;
                    Credential {
                        username: u.to_string(),
                        password: p.to_string(),
                    }
                }
                (None, Some(u), Some(p)) => Credential {
                    username: u,
                    password: p,
                },
                _ => continue,
            };
            self.insert(&key, cred);
        }
        Ok(())
    }

    /// Adds credentials for a registry key unless it already has some.
    pub fn insert(&mut self, key: &str, cred: Credential) {
        let key = normalize_key(key);
        if !self.entries.iter().any(|(k, _)| *k == key) {
            self.entries.push((key, cred));
        }
    }

    /// The credentials for `host` and `repository`: the longest key that is
    /// the host or a repository namespace of it.
    pub fn lookup(&self, host: &str, repository: &str) -> Option<&Credential> {
        let host = match host {
            "registry-1.docker.io" | "index.docker.io" => "docker.io",
            h => h,
        };
        let full = format!("{host}/{repository}");
        self.entries
            .iter()
            .filter(|(k, _)| {
                k == host
                    || (full.starts_with(k.as_str()) && full.as_bytes().get(k.len()) == Some(&b'/'))
            })
            .max_by_key(|(k, _)| k.len())
            .map(|(_, c)| c)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `https://index.docker.io/v1/` -> `docker.io`, `http://h:5000/v2/` -> `h:5000`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    let (host, rest) = match k.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (k, None),
    };
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    match rest {
        Some(r) => format!("{host}/{r}"),
        None => host.to_string(),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses the header value; `None` for schemes kiln does not speak.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parse_params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Some(Self::Basic)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Some(Self::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            })
        } else {
            None
        }
    }
}

/// `k1="v, 1",k2=v2` (RFC 7235 auth-params, quoted or token values).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_string(), value.trim().to_string()));
    }
    out
}

/// The token endpoint's answer (docker uses `token`, OAuth `access_token`).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            Challenge::parse(
                r#"bearer realm=http://127.0.0.1:1/t, scope="repository:a:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
                scope: Some("repository:a:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn auth_files() {
        let mut cfg = AuthConfig::default();
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5000": {{"auth": "{}"}},
                "quay.io/team": {{"username": "t", "password": "p"}},
                "empty.io": {{}}
            }}, "credsStore": "desktop"}}"#,
            STANDARD.encode("hub:secret:with:colons"),
            STANDARD.encode("alice:pw")
        );
        cfg.load_json(Path::new("a.json"), &text).unwrap();
        let hub = cfg.lookup("registry-1.docker.io", "library/x").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "secret:with:colons")
        );
        assert_eq!(cfg.lookup("127.0.0.1:5000", "a").unwrap().username, "alice");
        assert_eq!(cfg.lookup("quay.io", "team/app").unwrap().username, "t");
        assert!(cfg.lookup("quay.io", "teams/app").is_none());
        assert!(cfg.lookup("127.0.0.1:5001", "a").is_none());
        assert!(cfg.lookup("empty.io", "a").is_none());
        assert!(!format!("{hub:?}").contains("secret"));

        // A second file does not override the first.
        cfg.load_json(
            Path::new("b.json"),
            &format!(
                r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}}}}}}"#,
                STANDARD.encode("bob:x")
            ),
        )
        .unwrap();
        assert_eq!(cfg.lookup("127.0.0.1:5000", "a").unwrap().username, "alice");

        let err = AuthConfig::default()
            .load_json(Path::new("c.json"), r#"{"auths": {"h": {"auth": "!!"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`c.json`") && err.contains("`h`"), "{err}");
        let err = AuthConfig::default()
            .load_json(Path::new("d.json"), "{")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }
}
