//! Image references: parsing and normalization the way docker and the
//! containers tools read them (`golang:1.22` is
//! `docker.io/library/golang:1.22`).
//!
//! Grammar (distribution's `reference` package, from its public grammar):
//! `[domain[:port]/]path-component[/path-component...][:tag][@digest]`, where
//! the first component is a domain only when it contains `.` or `:`, is
//! `localhost`, or is an IPv6 literal in brackets.

use std::fmt;
use std::str::FromStr;

use kiln_store::Digest;

/// The registry short names (and docker's own aliases) resolve to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves the distribution API for `docker.io`.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a reference string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("image reference `{reference}` has an invalid digest `{digest}`: {reason}")]
    Digest {
        reference: String,
        digest: String,
        reason: String,
    },
    #[error(
        "image reference `{reference}` has an invalid tag `{tag}`: use up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
    )]
    Tag { reference: String, tag: String },
    #[error("image reference `{reference}` has an invalid registry host `{host}`: {reason}")]
    Host {
        reference: String,
        host: String,
        reason: String,
    },
    #[error(
        "image reference `{reference}` has an invalid repository `{repository}`: repository names must be lowercase"
    )]
    Uppercase {
        reference: String,
        repository: String,
    },
    #[error(
        "image reference `{reference}` has an invalid repository component `{component}`: use lowercase letters and digits separated by `.`, `_`, `__` or `-`"
    )]
    Component {
        reference: String,
        component: String,
    },
    #[error(
        "image reference `{reference}` is too long: the repository name may have at most 255 characters"
    )]
    TooLong { reference: String },
}

impl Reference {
    /// Parses and normalizes a reference; the tag defaults to `latest` when
    /// neither a tag nor a digest is given.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let input_trimmed = input.trim();
        if input_trimmed.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let reference = input_trimmed.to_string();
        let (name_tag, digest) = match input_trimmed.rsplit_once('@') {
            Some((rest, d)) => (rest, Some(parse_digest(&reference, d)?)),
            None => (input_trimmed, None),
        };
        // The tag is after the last `:` that follows the last `/`, so a port
        // in the host is never mistaken for a tag.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(&name_tag[at + 1..]))
            }
            None => (name_tag, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::Tag {
                reference,
                tag: tag.to_string(),
            });
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (first.to_string(), rest.to_string()),
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        validate_host(&reference, &registry)?;
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        validate_repository(&reference, &repository)?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong { reference });
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host as written (with its port), e.g. `docker.io` or
    /// `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/golang`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when there is one (it wins
    /// over the tag, as in docker), else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::Tag {
                reference: self.to_string(),
                tag: tag.to_string(),
            });
        }
        Ok(Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to a digest (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn parse_digest(reference: &str, d: &str) -> Result<Digest, ReferenceError> {
    let err = |reason: &str| ReferenceError::Digest {
        reference: reference.to_string(),
        digest: d.to_string(),
        reason: reason.to_string(),
    };
    let Some((algo, hex)) = d.split_once(':') else {
        return Err(err("expected `sha256:` followed by 64 hex digits"));
    };
    if algo != "sha256" {
        return Err(err("only sha256 digests are supported"));
    }
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(err("expected 64 lowercase hex digits after `sha256:`"));
    }
    Digest::parse(d).map_err(|e| err(&e.to_string()))
}

fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

fn validate_host(reference: &str, host: &str) -> Result<(), ReferenceError> {
    let err = |reason: &str| ReferenceError::Host {
        reference: reference.to_string(),
        host: host.to_string(),
        reason: reason.to_string(),
    };
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err(err("unclosed `[` in an IPv6 address"));
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(err("not a valid IPv6 address"));
        }
        match after {
            "" => (None, None),
            p if p.starts_with(':') => (None, Some(&p[1..])),
            _ => return Err(err("unexpected text after the IPv6 address")),
        }
    } else {
        match host.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let ok = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(err(
                "use a host name or IP address, optionally with `:PORT`",
            ));
        }
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(err("the port must be a number from 1 to 65535"));
    }
    Ok(())
}

fn validate_repository(reference: &str, repository: &str) -> Result<(), ReferenceError> {
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceError::Uppercase {
            reference: reference.to_string(),
            repository: repository.to_string(),
        });
    }
    for component in repository.split('/') {
        if !valid_component(component) {
            return Err(ReferenceError::Component {
                reference: reference.to_string(),
                component: component.to_string(),
            });
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !t.is_empty()
        && t.len() <= MAX_TAG_LEN
        && word(t.as_bytes()[0])
        && t.bytes().all(|x| word(x) || x == b'.' || x == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let inputs = [
            "golang:1.22",
            "golang",
            "library/golang",
            "docker.io/golang",
            "index.docker.io/library/golang:1",
            "registry-1.docker.io/library/golang:1",
            "ghcr.io/owner/app:v1.2.3",
            "localhost/app",
            "localhost:5000/team/app:dev",
            "127.0.0.1:5000/app",
            "[::1]:5000/app:x",
            "quay.io/a/b/c/d:tag_1-x.y",
            "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "alpine:3.19@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "my-registry.example.com:443/a__b/c-d/e.f",
            "user/repo",
            "",
            "Golang:1",
            "docker.io/Library/golang",
            "golang:",
            "golang:-bad",
            "golang:a/b",
            "alpine@sha256:abc",
            "alpine@md5:0123456789abcdef0123456789abcdef",
            "alpine@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "host:99999/app",
            "host:0/app",
            "bad_host.com/app",
            "[::1/app",
            "a//b",
            "a/b_-c",
            "-leading",
            "trailing-",
        ];
        let mut out = String::new();
        for i in inputs {
            let r = match Reference::parse(i) {
                Ok(r) => format!(
                    "{r}  [registry={} repository={} ref={}]",
                    r.registry(),
                    r.repository(),
                    r.manifest_reference()
                ),
                Err(e) => format!("error: {e}"),
            };
            out.push_str(&format!("{i:?} => {r}\n"));
        }
        insta::assert_snapshot!(out);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "docker.io/library/golang:1.22",
            "127.0.0.1:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "[::1]:5000/x:y",
        ] {
            let r = Reference::parse(s).unwrap();
            assert_eq!(r.to_string(), s);
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        }
    }

    #[test]
    fn components() {
        assert!(valid_component("a"));
        assert!(valid_component("a.b_c__d---e"));
        assert!(!valid_component("a..b"));
        assert!(!valid_component("a___b"));
        assert!(!valid_component("a_-b"));
        assert!(!valid_component("_a"));
    }

    #[test]
    fn long_names_are_rejected() {
        let long = format!("example.com/{}", "a".repeat(300));
        assert!(matches!(
            Reference::parse(&long),
            Err(ReferenceError::TooLong { .. })
        ));
    }
}
