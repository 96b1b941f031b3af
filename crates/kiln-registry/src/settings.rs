//! Client settings: insecure registries, registry mirrors and the retry
//! policy. Mirrors follow containers' `registries.conf`: pulls of images
//! from a mirrored registry are served by the mirror (falling back to the
//! registry itself when the mirror fails), while the image keeps its
//! original name locally. Pushes always go to the named registry.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use kiln_types::reference::{DOCKER_HUB, DOCKER_HUB_API_HOST, normalize_registry};

use crate::credentials::AuthConfig;

/// The environment variable with comma-separated `REGISTRY=MIRROR` pairs.
pub const MIRROR_ENV: &str = "KILN_REGISTRY_MIRROR";

/// One `REGISTRY=MIRROR[/PREFIX]` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The registry whose pulls are redirected, e.g. `docker.io`.
    pub registry: String,
    /// The mirror host with its port, e.g. `127.0.0.1:5000`.
    pub host: String,
    /// A repository prefix on the mirror (`mirror.example/hub` serves
    /// `library/debian` as `hub/library/debian`), or empty.
    pub prefix: String,
}

/// Why a mirror setting was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MirrorError {
    #[error(
        "invalid registry mirror `{0}`: expected `REGISTRY=MIRROR`, e.g. `docker.io=127.0.0.1:5000`"
    )]
    Syntax(String),
    #[error("invalid registry mirror `{spec}` in `{source_name}`: {reason}")]
    Invalid {
        spec: String,
        source_name: String,
        reason: String,
    },
}

impl FromStr for Mirror {
    type Err = MirrorError;
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        let Some((registry, mirror)) = spec.split_once('=') else {
            return Err(MirrorError::Syntax(spec.to_string()));
        };
        let (registry, mirror) = (registry.trim(), mirror.trim());
        let mirror = mirror
            .strip_prefix("https://")
            .or_else(|| mirror.strip_prefix("http://"))
            .unwrap_or(mirror)
            .trim_end_matches('/');
        if registry.is_empty() || mirror.is_empty() || registry.contains('/') {
            return Err(MirrorError::Syntax(spec.to_string()));
        }
        let (host, prefix) = match mirror.split_once('/') {
            Some((h, p)) => (h, p),
            None => (mirror, ""),
        };
        // Reuse the reference grammar to validate the host and prefix.
        let probe = if prefix.is_empty() {
            format!("{host}/x")
        } else {
            format!("{host}/{prefix}")
        };
        match crate::Reference::parse(&probe) {
            Ok(r) if r.registry() == host || host == DOCKER_HUB => {}
            Ok(_) => {
                return Err(MirrorError::Invalid {
                    spec: spec.to_string(),
                    source_name: "mirror".to_string(),
                    reason: format!("`{host}` is not a registry host (add a port or a dot)"),
                });
            }
            Err(e) => {
                return Err(MirrorError::Invalid {
                    spec: spec.to_string(),
                    source_name: "mirror".to_string(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(Self {
            registry: normalize_registry(registry).to_string(),
            host: host.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// Parses a comma-separated list (the form of `KILN_REGISTRY_MIRROR`);
/// empty items are ignored.
pub fn parse_mirror_list(list: &str, source_name: &str) -> Result<Vec<Mirror>, MirrorError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|e: MirrorError| match e {
                MirrorError::Syntax(spec) => MirrorError::Invalid {
                    spec,
                    source_name: source_name.to_string(),
                    reason: "expected `REGISTRY=MIRROR`, e.g. `docker.io=127.0.0.1:5000`"
                        .to_string(),
                },
                MirrorError::Invalid { spec, reason, .. } => MirrorError::Invalid {
                    spec,
                    source_name: source_name.to_string(),
                    reason,
                },
            })
        })
        .collect()
}

/// Mirrors from `KILN_REGISTRY_MIRROR`, if set.
pub fn mirrors_from_env() -> Result<Vec<Mirror>, MirrorError> {
    match std::env::var(MIRROR_ENV) {
        Ok(v) => parse_mirror_list(&v, MIRROR_ENV),
        Err(_) => Ok(Vec::new()),
    }
}

/// Bounded exponential backoff for 5xx, 429 and dropped connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries of one request, including the first.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The pause before try `attempt + 1` (attempt counts from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Everything that shapes how the client talks to registries.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Hosts (`HOST` or `HOST:PORT`) spoken to over plain http.
    pub insecure_registries: Vec<String>,
    pub mirrors: Vec<Mirror>,
    pub retry: RetryPolicy,
    pub auth: AuthConfig,
    /// How many blobs are transferred at once.
    pub concurrency: usize,
    /// Blobs up to this size are uploaded in one request; larger ones in
    /// `PATCH` chunks of `chunk_size` bytes.
    pub monolithic_limit: u64,
    pub chunk_size: usize,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before the connection
    /// counts as dropped.
    pub read_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            mirrors: Vec::new(),
            retry: RetryPolicy::default(),
            auth: AuthConfig::default(),
            concurrency: 3,
            monolithic_limit: 16 << 20,
            chunk_size: 16 << 20,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Where requests for one repository go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host named in URLs (`registry-1.docker.io`, `127.0.0.1:5000`).
    pub host: String,
    /// The repository path on that host.
    pub repository: String,
    pub insecure: bool,
    /// Whether this is a mirror rather than the registry itself.
    pub mirror: bool,
}

impl Endpoint {
    pub fn base_url(&self) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }
}

impl Settings {
    /// Whether `host` (with or without port) is spoken to over plain http:
    /// loopback names and addresses, and hosts listed as insecure.
    pub fn is_insecure(&self, host: &str) -> bool {
        let bare = host_without_port(host);
        if bare == "localhost" {
            return true;
        }
        if let Ok(ip) = bare
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            && ip.is_loopback()
        {
            return true;
        }
        self.insecure_registries
            .iter()
            .any(|h| h == host || h == bare)
    }

    /// The registry endpoint itself for `registry`/`repository`.
    pub fn origin(&self, registry: &str, repository: &str) -> Endpoint {
        let host = if registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST.to_string()
        } else {
            registry.to_string()
        };
        Endpoint {
            insecure: self.is_insecure(&host),
            host,
            repository: repository.to_string(),
            mirror: false,
        }
    }

    /// Endpoints to pull from, in order: mirrors of `registry`, then the
    /// registry itself.
    pub fn pull_endpoints(&self, registry: &str, repository: &str) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .mirrors
            .iter()
            .filter(|m| m.registry == registry)
            .map(|m| Endpoint {
                insecure: self.is_insecure(&m.host),
                host: m.host.clone(),
                repository: if m.prefix.is_empty() {
                    repository.to_string()
                } else {
                    format!("{}/{}", m.prefix, repository)
                },
                mirror: true,
            })
            .collect();
        out.push(self.origin(registry, repository));
        out
    }
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.split(':').next().unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_parsing() {
        let m: Mirror = "docker.io=127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            m,
            Mirror {
                registry: "docker.io".into(),
                host: "127.0.0.1:5000".into(),
                prefix: String::new()
            }
        );
        let m: Mirror = "index.docker.io=http://mirror.local:5000/hub/"
            .parse()
            .unwrap();
        assert_eq!(m.registry, "docker.io");
        assert_eq!(m.host, "mirror.local:5000");
        assert_eq!(m.prefix, "hub");
        assert!(matches!(
            "docker.io".parse::<Mirror>(),
            Err(MirrorError::Syntax(_))
        ));
        assert!(matches!(
            "=x:1".parse::<Mirror>(),
            Err(MirrorError::Syntax(_))
        ));
        assert!("docker.io=bad host:1".parse::<Mirror>().is_err());
        let list =
            parse_mirror_list(" docker.io=127.0.0.1:5000 ,, quay.io=[::1]:5001", "env").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].host, "[::1]:5001");
        let err = parse_mirror_list("docker.io", MIRROR_ENV)
            .unwrap_err()
            .to_string();
        assert!(err.contains("KILN_REGISTRY_MIRROR"), "{err}");
    }

    #[test]
    fn insecure_hosts() {
        let s = Settings {
            insecure_registries: vec!["reg.lan".into(), "other.lan:8443".into()],
            ..Settings::default()
        };
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.9.9.9",
            "[::1]:5000",
            "reg.lan:5000",
            "other.lan:8443",
        ] {
            assert!(s.is_insecure(h), "{h}");
        }
        for h in [
            "docker.io",
            "registry-1.docker.io",
            "10.0.0.1:5000",
            "other.lan:9000",
            "[::2]:5000",
        ] {
            assert!(!s.is_insecure(h), "{h}");
        }
    }

    #[test]
    fn endpoints_with_mirrors() {
        let s = Settings {
            mirrors: parse_mirror_list("docker.io=127.0.0.1:5000,docker.io=m.example/hub", "t")
                .unwrap(),
            ..Settings::default()
        };
        let e = s.pull_endpoints("docker.io", "library/debian");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].base_url(), "http://127.0.0.1:5000");
        assert_eq!(e[0].repository, "library/debian");
        assert_eq!(e[1].base_url(), "https://m.example");
        assert_eq!(e[1].repository, "hub/library/debian");
        assert_eq!(e[2].base_url(), "https://registry-1.docker.io");
        assert!(!e[2].mirror);
        assert_eq!(s.pull_endpoints("quay.io", "a/b").len(), 1);
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_millis(250));
        assert_eq!(p.delay(2), Duration::from_millis(500));
        assert_eq!(p.delay(30), Duration::from_secs(8));
    }
}
