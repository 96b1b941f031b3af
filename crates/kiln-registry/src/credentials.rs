//! Where registry credentials come from, in the order docker and podman
//! read them, and where `kiln login` puts them.
//!
//! The sources, first that knows the registry wins:
//!
//! 1. `$REGISTRY_AUTH_FILE` when it is set, and then nothing else (podman's
//!    rule for a file the user names); otherwise
//! 2. `$XDG_RUNTIME_DIR/containers/auth.json` (podman's `login` target),
//! 3. `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/containers/auth.json`),
//! 4. docker's `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
//!
//! Inside one file the order is docker's: `credHelpers[registry]`, then
//! `credsStore`, then `auths` (an `auths` key may be `host[:port]`, a URL
//! such as `https://index.docker.io/v1/`, or, as containers' files allow,
//! `host/namespace`, the longest match winning). A helper that answers
//! "not found" passes the question on to the next file, and so does one that
//! is not installed (with a warning); one that fails is an error. An
//! `auths` entry is
//! `auth` (base64 of `user:password`), or `username`/`password`, optionally
//! with an `identitytoken` (an OAuth2 refresh token, used instead of the
//! password).
//!
//! Secrets never appear in `Debug` output or in error messages.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::helper::{self, HelperError};

/// The key docker uses for Docker Hub (and hands to credential helpers).
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// A user name and password, or an identity token, for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token (docker's `identitytoken`); when set, a
    /// bearer token is asked for with it instead of the password.
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log secrets.
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credential {
    /// A user name and password.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            identity_token: None,
        }
    }

    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", STANDARD.encode(raw))
    }
}

/// Why an auth file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read registry auth file `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry auth file `{path}` is not valid JSON; fix or remove it")]
    Json {
        path: PathBuf,
        #[source]
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
    #[error("cannot write registry auth file `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no place for registry credentials: neither `DOCKER_CONFIG` nor `HOME` is set")]
    NoHome,
    #[error(transparent)]
    Helper(#[from] HelperError),
}

#[derive(serde::Deserialize)]
struct FileFormat {
    #[serde(default)]
    auths: HashMap<String, Entry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// One auth file's credentials, keys normalized.
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    auths: Vec<(String, Credential)>,
    creds_store: Option<String>,
    cred_helpers: Vec<(String, String)>,
}

/// What helpers said, by (helper, server).
type HelperAnswers = HashMap<(String, String), Option<Credential>>;

/// Credentials by registry, from the auth files (and, for tests and
/// programs, [`AuthConfig::insert`]).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Given by the program; these come before every file.
    explicit: Vec<(String, Credential)>,
    sources: Vec<Source>,
    /// Helper answers by (helper, server), so a helper runs once per
    /// registry and process.
    asked: Arc<Mutex<HelperAnswers>>,
}

/// The files credentials are read from, in order (see the module docs).
pub fn default_files() -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = env("REGISTRY_AUTH_FILE") {
        return vec![PathBuf::from(p)];
    }
    let home = env("HOME").map(PathBuf::from);
    let mut out = Vec::new();
    if let Some(run) = env("XDG_RUNTIME_DIR") {
        out.push(PathBuf::from(run).join("containers/auth.json"));
    }
    if let Some(cfg) = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")))
    {
        out.push(cfg.join("containers/auth.json"));
    }
    out.extend(docker_config_file());
    out
}

/// Docker's `config.json`: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn docker_config_file() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    env("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

/// The file `kiln login` writes: `$REGISTRY_AUTH_FILE` when set (as
/// `podman login`), else docker's `config.json` (as `docker login`).
pub fn login_file() -> Result<PathBuf, AuthFileError> {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    docker_config_file().ok_or(AuthFileError::NoHome)
}

impl AuthConfig {
    /// Loads [`default_files`] (missing files are fine, broken ones are
    /// errors).
    pub fn load_default() -> Result<Self, AuthFileError> {
        let mut cfg = Self::default();
        for f in default_files() {
            cfg.load_file(&f)?;
        }
        Ok(cfg)
    }

    /// Adds one file after those loaded already.
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

    /// Adds an auth file's text; `path` is for messages.
    pub fn load_json(&mut self, path: &Path, text: &str) -> Result<(), AuthFileError> {
        let file: FileFormat =
            serde_json::from_str(text).map_err(|source| AuthFileError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        let mut auths = Vec::new();
        for (key, entry) in file.auths {
            if let Some(cred) = entry_credential(path, &key, entry)? {
                auths.push((normalize_key(&key), cred));
            }
        }
        self.sources.push(Source {
            path: path.to_path_buf(),
            auths,
            creds_store: file.creds_store.filter(|s| !s.is_empty()),
            cred_helpers: file
                .cred_helpers
                .into_iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(k, h)| (normalize_key(&k), h))
                .collect(),
        });
        Ok(())
    }

    /// Adds credentials for a registry key, before every file.
    pub fn insert(&mut self, key: &str, cred: Credential) {
        let key = normalize_key(key);
        self.explicit.retain(|(k, _)| *k != key);
        self.explicit.push((key, cred));
    }

    /// Whether no credentials can come from here at all.
    pub fn is_empty(&self) -> bool {
        self.explicit.is_empty()
            && self
                .sources
                .iter()
                .all(|s| s.auths.is_empty() && s.creds_store.is_none() && s.cred_helpers.is_empty())
    }

    /// The credentials for `host` and `repository`, from the first source
    /// that has some. May run a credential helper (a blocking call).
    pub fn lookup(&self, host: &str, repository: &str) -> Result<Option<Credential>, HelperError> {
        let host = normalize_key(host);
        if let Some(c) = best_match(&self.explicit, &host, repository) {
            return Ok(Some(c.clone()));
        }
        for src in &self.sources {
            let helper = src
                .cred_helpers
                .iter()
                .find(|(k, _)| *k == host)
                .map(|(_, h)| h)
                .or(src.creds_store.as_ref());
            if let Some(helper) = helper {
                match self.ask(helper, &server_url(&host)) {
                    Ok(Some(c)) => return Ok(Some(c)),
                    Ok(None) => continue,
                    // A helper named in a copied config but not installed
                    // here (`desktop` outside Docker Desktop) would make
                    // every pull fail, public images too: go on without it.
                    Err(HelperError::Spawn { helper, source })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        // remembered as "nothing", so it warns once
                        self.asked
                            .lock()
                            .expect("helper cache")
                            .insert((helper.clone(), server_url(&host)), None);
                        tracing::warn!(
                            "credential helper `docker-credential-{helper}` named in `{}` is not installed; going on without credentials from it",
                            src.path.display()
                        );
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(c) = best_match(&src.auths, &host, repository) {
                return Ok(Some(c.clone()));
            }
        }
        Ok(None)
    }

    /// The file whose entry [`AuthConfig::lookup`] would use for `host`,
    /// without running helpers.
    pub fn source_of(&self, host: &str) -> Option<&Path> {
        let host = normalize_key(host);
        self.sources
            .iter()
            .find(|s| {
                s.cred_helpers.iter().any(|(k, _)| *k == host)
                    || s.creds_store.is_some()
                    || s.auths.iter().any(|(k, _)| *k == host)
            })
            .map(|s| s.path.as_path())
    }

    fn ask(&self, helper: &str, server: &str) -> Result<Option<Credential>, HelperError> {
        let key = (helper.to_string(), server.to_string());
        if let Some(c) = self.asked.lock().expect("helper cache").get(&key) {
            return Ok(c.clone());
        }
        let c = helper::get(helper, server)?;
        self.asked
            .lock()
            .expect("helper cache")
            .insert(key, c.clone());
        Ok(c)
    }
}

fn entry_credential(
    path: &Path,
    key: &str,
    entry: Entry,
) -> Result<Option<Credential>, AuthFileError> {
    let bad = |reason: &str| AuthFileError::BadAuth {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let token = entry.identitytoken.filter(|t| !t.is_empty());
    let (username, password) = match (entry.auth.filter(|a| !a.is_empty()), entry.username) {
        (Some(auth), _) => {
            let raw = STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(&format!("not base64 ({e})")))?;
            let raw = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
            let (u, p) = raw
                .split_once(':')
                .ok_or_else(|| bad("no `:` between user and password"))?;
            (u.to_string(), p.to_string())
        }
        (None, Some(u)) => (u, entry.password.unwrap_or_default()),
        (None, None) => (String::new(), String::new()),
    };
    if password.is_empty() && token.is_none() {
        // `{}` (what docker leaves beside a credsStore) or a user alone.
        return Ok(None);
    }
    Ok(Some(Credential {
        username,
        password,
        identity_token: token,
    }))
}

/// The longest key that is the host or a repository namespace of it.
fn best_match<'a>(
    entries: &'a [(String, Credential)],
    host: &str,
    repository: &str,
) -> Option<&'a Credential> {
    let full = format!("{host}/{repository}");
    entries
        .iter()
        .filter(|(k, _)| {
            k == host
                || (full.starts_with(k.as_str()) && full.as_bytes().get(k.len()) == Some(&b'/'))
        })
        .max_by_key(|(k, _)| k.len())
        .map(|(_, c)| c)
}

/// What a credential helper is asked about: docker's `ServerURL`,
/// `https://index.docker.io/v1/` for Docker Hub, the host elsewhere.
pub fn server_url(host: &str) -> String {
    match normalize_key(host).as_str() {
        "docker.io" => DOCKER_HUB_SERVER.to_string(),
        h => h.to_string(),
    }
}

/// `https://index.docker.io/v1/` -> `docker.io`, `http://h:5000/v2/` -> `h:5000`.
pub fn normalize_key(key: &str) -> String {
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

/// Where [`save`] put the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// In the credential helper of this name (`credHelpers`/`credsStore`).
    Helper(String),
    /// Base64 in the file's `auths`.
    File(PathBuf),
}

/// Stores `cred` for `host` as `docker login` does: in the credential
/// helper `path` configures for it (`credHelpers[host]`, else
/// `credsStore`), else base64 in `auths`. The file keeps every other field
/// and is written atomically with mode 0600.
pub fn save(path: &Path, host: &str, cred: &Credential) -> Result<Saved, AuthFileError> {
    let mut doc = read_doc(path)?;
    let key = server_url(host);
    if let Some(h) = helper_for(&doc, host) {
        helper::store(&h, &key, cred)?;
        return Ok(Saved::Helper(h));
    }
    let auths = doc.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    let auths = auths.as_object_mut().expect("made an object");
    auths.retain(|k, _| normalize_key(k) != normalize_key(host));
    let mut entry = serde_json::Map::new();
    match &cred.identity_token {
        Some(t) => {
            // docker's form: the user name alone in `auth`, the token beside
            entry.insert(
                "auth".into(),
                STANDARD.encode(format!("{}:", cred.username)).into(),
            );
            entry.insert("identitytoken".into(), t.clone().into());
        }
        None => {
            entry.insert(
                "auth".into(),
                STANDARD
                    .encode(format!("{}:{}", cred.username, cred.password))
                    .into(),
            );
        }
    }
    auths.insert(key, entry.into());
    write_doc(path, &doc)?;
    Ok(Saved::File(path.to_path_buf()))
}

/// Removes the credentials for `host` from `path`'s `auths` and from its
/// credential helper, as `docker logout` does. Whether there were any.
pub fn remove(path: &Path, host: &str) -> Result<bool, AuthFileError> {
    let mut doc = read_doc(path)?;
    let mut removed = false;
    if let Some(h) = helper_for(&doc, host) {
        removed |= helper::erase(&h, &server_url(host))?;
    }
    if let Some(auths) = doc.get_mut("auths").and_then(|a| a.as_object_mut()) {
        let before = auths.len();
        auths.retain(|k, _| normalize_key(k) != normalize_key(host));
        if auths.len() != before {
            removed = true;
            write_doc(path, &doc)?;
        }
    }
    Ok(removed)
}

fn helper_for(doc: &serde_json::Map<String, serde_json::Value>, host: &str) -> Option<String> {
    let host = normalize_key(host);
    doc.get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| normalize_key(k) == host)
                .and_then(|(_, v)| v.as_str())
        })
        .or_else(|| doc.get("credsStore").and_then(|s| s.as_str()))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn read_doc(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, AuthFileError> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => Ok(serde_json::Map::new()),
        Ok(t) => serde_json::from_str(&t).map_err(|source| AuthFileError::Json {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::Map::new()),
        Err(source) => Err(AuthFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Temp file beside `path` (mode 0600 from its creation), fsync, rename.
fn write_doc(
    path: &Path,
    doc: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), AuthFileError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let err = |source| AuthFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.json".into());
    let tmp = dir.join(format!(".{name}.kiln-{}", std::process::id()));
    let mut text = serde_json::to_vec_pretty(doc).expect("a JSON map serializes");
    text.push(b'\n');
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_files() {
        let mut cfg = AuthConfig::default();
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5000": {{"auth": "{}"}},
                "quay.io/team": {{"username": "t", "password": "p"}},
                "tok.example": {{"auth": "{}", "identitytoken": "refresh-me"}},
                "empty.io": {{}}
            }}}}"#,
            STANDARD.encode("hub:secret:with:colons"),
            STANDARD.encode("alice:pw"),
            STANDARD.encode("ann:"),
        );
        cfg.load_json(Path::new("a.json"), &text).unwrap();
        let hub = cfg
            .lookup("registry-1.docker.io", "library/x")
            .unwrap()
            .unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "secret:with:colons")
        );
        let get = |cfg: &AuthConfig, h: &str, r: &str| cfg.lookup(h, r).unwrap();
        assert_eq!(get(&cfg, "127.0.0.1:5000", "a").unwrap().username, "alice");
        assert_eq!(get(&cfg, "quay.io", "team/app").unwrap().username, "t");
        let tok = get(&cfg, "tok.example", "a").unwrap();
        assert_eq!(tok.identity_token.as_deref(), Some("refresh-me"));
        assert_eq!(tok.username, "ann");
        assert!(!format!("{tok:?}").contains("refresh-me"));
        assert!(get(&cfg, "quay.io", "teams/app").is_none());
        assert!(get(&cfg, "127.0.0.1:5001", "a").is_none());
        assert!(get(&cfg, "empty.io", "a").is_none());
        assert!(!format!("{hub:?}").contains("secret"));

        // A later file does not override an earlier one.
        cfg.load_json(
            Path::new("b.json"),
            &format!(
                r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}}, "other:1": {{"auth": "{}"}}}}}}"#,
                STANDARD.encode("bob:x"),
                STANDARD.encode("olga:y"),
            ),
        )
        .unwrap();
        assert_eq!(get(&cfg, "127.0.0.1:5000", "a").unwrap().username, "alice");
        assert_eq!(get(&cfg, "other:1", "a").unwrap().username, "olga");
        assert_eq!(cfg.source_of("other:1"), Some(Path::new("b.json")));

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

    #[test]
    fn save_and_remove_keep_the_rest_of_the_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths": {"http://127.0.0.1:5000/v2/": {"auth": "eDp5"}}, "psFormat": "x"}"#,
        )
        .unwrap();
        let saved = save(&path, "127.0.0.1:5000", &Credential::basic("u", "p")).unwrap();
        assert_eq!(saved, Saved::File(path.clone()));
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["psFormat"], "x");
        assert_eq!(
            doc["auths"],
            serde_json::json!({"127.0.0.1:5000": {"auth": STANDARD.encode("u:p")}})
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        save(&path, "docker.io", &Credential::basic("h", "q")).unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(doc["auths"][DOCKER_HUB_SERVER].is_object(), "{doc}");

        assert!(remove(&path, "127.0.0.1:5000").unwrap());
        assert!(!remove(&path, "127.0.0.1:5000").unwrap());
        let mut cfg = AuthConfig::default();
        cfg.load_file(&path).unwrap();
        assert!(cfg.lookup("127.0.0.1:5000", "a").unwrap().is_none());
        assert_eq!(
            cfg.lookup("index.docker.io", "a")
                .unwrap()
                .unwrap()
                .username,
            "h"
        );
    }
}
