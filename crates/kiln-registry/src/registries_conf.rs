//! Mirrors from containers' `registries.conf` (v2 TOML, containers-registries.conf(5)):
//!
//! ```toml
//! [[registry]]
//! prefix = "docker.io"
//! location = "docker.io"
//! [[registry.mirror]]
//! location = "mirror.example:5000/hub"
//! insecure = true
//! ```
//!
//! The file is `$CONTAINERS_REGISTRIES_CONF` when set, else
//! `$HOME/.config/containers/registries.conf` when it exists, else
//! `/etc/containers/registries.conf` (the user's file replaces the
//! system's, as in podman). Each `[[registry.mirror]]` of a registry whose
//! `prefix` (or `location`) is a registry host becomes a [`Mirror`], in
//! order; a `location` other than the prefix (a remapped registry) is tried
//! after the mirrors, before the registry itself. `insecure = true` makes
//! that host plain http. What kiln does not take from the file: namespace
//! and wildcard prefixes (`docker.io/library`, `*.example.com`),
//! `mirror-by-digest-only`, `blocked`, drop-ins in `registries.conf.d`, and
//! the v1 format; such entries are skipped with a debug log.

use std::path::{Path, PathBuf};

use kiln_types::reference::normalize_registry;

use crate::settings::Mirror;

/// Why `registries.conf` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesConfError {
    #[error("cannot read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not a valid registries.conf (v2 TOML); fix or remove it")]
    Toml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("`{path}`: bad mirror location `{location}` for `{prefix}`: {reason}")]
    BadMirror {
        path: PathBuf,
        prefix: String,
        location: String,
        reason: String,
    },
}

#[derive(serde::Deserialize)]
struct File {
    #[serde(default)]
    registry: Vec<Registry>,
}

#[derive(serde::Deserialize)]
struct Registry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    mirror: Vec<Endpoint>,
}

#[derive(serde::Deserialize)]
struct Endpoint {
    location: String,
    #[serde(default)]
    insecure: bool,
}

/// What a `registries.conf` contributes: mirrors in order, and hosts to
/// speak plain http to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    pub path: Option<PathBuf>,
    pub mirrors: Vec<Mirror>,
    pub insecure: Vec<String>,
}

/// The file podman would read (see the module docs), if there is one.
pub fn default_path() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = env("CONTAINERS_REGISTRIES_CONF") {
        return Some(PathBuf::from(p));
    }
    if let Some(home) = env("HOME") {
        let user = PathBuf::from(home).join(".config/containers/registries.conf");
        if user.exists() {
            return Some(user);
        }
    }
    let system = PathBuf::from("/etc/containers/registries.conf");
    system.exists().then_some(system)
}

impl RegistriesConf {
    /// Reads [`default_path`]; nothing when there is no file.
    pub fn load_default() -> Result<Self, RegistriesConfError> {
        match default_path() {
            Some(p) => Self::load(&p),
            None => Ok(Self::default()),
        }
    }

    /// Reads one file; a missing file gives nothing.
    pub fn load(path: &Path) -> Result<Self, RegistriesConfError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(RegistriesConfError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses a file's text; `path` is for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, RegistriesConfError> {
        let file: File = toml::from_str(text).map_err(|source| RegistriesConfError::Toml {
            path: path.to_path_buf(),
            source,
        })?;
        let mut out = Self {
            path: Some(path.to_path_buf()),
            ..Self::default()
        };
        for reg in file.registry {
            let prefix = if reg.prefix.is_empty() {
                reg.location.clone()
            } else {
                reg.prefix.clone()
            };
            if prefix.contains('/') || prefix.contains('*') || prefix.is_empty() {
                tracing::debug!(path = %path.display(), %prefix, "registries.conf: only whole-registry prefixes are used");
                continue;
            }
            let registry = normalize_registry(&prefix).to_string();
            if reg.insecure {
                out.insecure.push(if reg.location.is_empty() {
                    prefix.clone()
                } else {
                    host_of(&reg.location).to_string()
                });
            }
            let remapped = (!reg.location.is_empty()
                && normalize_registry(&reg.location) != registry)
                .then(|| Endpoint {
                    location: reg.location.clone(),
                    insecure: reg.insecure,
                });
            for m in reg.mirror.iter().chain(remapped.as_ref()) {
                let mirror: Mirror = format!("{registry}={}", m.location).parse().map_err(
                    |e: crate::settings::MirrorError| RegistriesConfError::BadMirror {
                        path: path.to_path_buf(),
                        prefix: prefix.clone(),
                        location: m.location.clone(),
                        reason: e.to_string(),
                    },
                )?;
                if m.insecure {
                    out.insecure.push(mirror.host.clone());
                }
                out.mirrors.push(mirror);
            }
        }
        let mut seen = Vec::new();
        out.insecure.retain(|h| {
            let new = !seen.contains(h);
            seen.push(h.clone());
            new
        });
        Ok(out)
    }
}

fn host_of(location: &str) -> &str {
    location.split('/').next().unwrap_or(location)
}

/// The mirrors in effect: those given on the command line (or in
/// `KILN_REGISTRY_MIRROR`), and from `registries.conf` those for registries
/// the command line says nothing about. Flags win per registry.
pub fn merge_mirrors(flags: Vec<Mirror>, conf: Vec<Mirror>) -> Vec<Mirror> {
    let mut out = flags;
    let named: Vec<String> = out.iter().map(|m| m.registry.clone()).collect();
    out.extend(conf.into_iter().filter(|m| !named.contains(&m.registry)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_from_a_v2_file() {
        let text = r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5000"
[[registry.mirror]]
location = "mirror.lan:5000/hub"
insecure = true

[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "quay-cache.lan/q"

[[registry]]
prefix = "ghcr.io"
location = "ghcr-proxy.lan"
insecure = true

[[registry]]
prefix = "docker.io/library"
location = "elsewhere.lan/lib"
"#;
        let c = RegistriesConf::parse(Path::new("r.conf"), text).unwrap();
        let got: Vec<_> = c
            .mirrors
            .iter()
            .map(|m| (m.registry.as_str(), m.host.as_str(), m.prefix.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("docker.io", "127.0.0.1:5000", ""),
                ("docker.io", "mirror.lan:5000", "hub"),
                ("quay.io", "quay-cache.lan", "q"),
                ("ghcr.io", "ghcr-proxy.lan", ""),
            ]
        );
        assert_eq!(c.insecure, ["mirror.lan:5000", "ghcr-proxy.lan"]);

        let flags: Vec<Mirror> = vec!["docker.io=flag.lan:1".parse().unwrap()];
        let merged = merge_mirrors(flags, c.mirrors);
        let hosts: Vec<_> = merged.iter().map(|m| m.host.as_str()).collect();
        assert_eq!(hosts, ["flag.lan:1", "quay-cache.lan", "ghcr-proxy.lan"]);
    }

    #[test]
    fn bad_files_name_the_file() {
        let err =
            RegistriesConf::parse(Path::new("/x/r.conf"), "[[registry]\nprefix=1").unwrap_err();
        assert!(err.to_string().contains("`/x/r.conf`"), "{err}");
        let err = RegistriesConf::parse(
            Path::new("r.conf"),
            "[[registry]]\nprefix = \"docker.io\"\n[[registry.mirror]]\nlocation = \"bad host\"\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("bad mirror location `bad host`"),
            "{err}"
        );
    }
}
