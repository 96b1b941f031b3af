//! Image references: the one parser, in the grammar of distribution's
//! `reference` package, normalized as the docker CLI does (`golang:1.22`
//! is `docker.io/library/golang:1.22`).
//!
//! ```text
//! reference  := name [":" tag] ["@" digest]
//! name       := [registry "/"] path-component ["/" path-component]*
//! registry   := host [":" port]        port 1-65535
//! host       := domain-name | IPv4 address | "[" IPv6 address "]"
//! component  := [a-z0-9]+ ([._] | "__" | "-"+ [a-z0-9]+)*
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest     := sha256 or sha512 (see `Digest`)
//! ```
//!
//! The first component is the registry when it contains `.` or `:`, is
//! `localhost`, or is a bracketed IPv6 address; otherwise the registry is
//! `docker.io`, which also stands for its aliases `index.docker.io` and
//! `registry-1.docker.io`, and a one-component path there gets `library/`.
//! Errors carry the byte range of the offending part, so a caller can point
//! inside the string it came from.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The registry short names (and docker's own aliases) resolve to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves the distribution API for `docker.io`.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The tag of a reference that names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// `docker.io` for Docker Hub's aliases, any other registry as it is.
pub fn normalize_registry(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        h => h,
    }
}

/// An image reference: registry, repository path, tag and digest, with the
/// registry and path normalized and tag and digest as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a reference was rejected, and where: `span` is the byte range of
/// the offending part of `input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceError {
    pub input: String,
    pub span: Range<usize>,
    pub kind: ReferenceErrorKind,
}

/// What is wrong with a reference.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReferenceErrorKind {
    #[error("empty image reference")]
    Empty,
    #[error("no repository name")]
    MissingRepository,
    #[error("invalid registry host `{host}`")]
    Host { host: String },
    #[error("invalid IPv6 address `{address}`")]
    Ipv6 { address: String },
    #[error("invalid registry port `{port}`")]
    Port { port: String },
    #[error("repository name `{name}` must be lowercase")]
    Uppercase { name: String },
    #[error("invalid repository name component `{component}`")]
    Component { component: String },
    #[error("invalid tag `{tag}`")]
    Tag { tag: String },
    #[error("invalid digest `{digest}`")]
    Digest {
        digest: String,
        #[source]
        source: DigestError,
    },
    #[error("repository name of {len} characters is too long")]
    TooLong { len: usize },
}

impl ReferenceErrorKind {
    /// What the grammar expected at the error's place.
    pub fn expected(&self) -> String {
        match self {
            Self::Empty => "a name such as `debian:bookworm`".into(),
            Self::MissingRepository => "a repository name such as `debian`".into(),
            Self::Host { .. } => "a host name or IP address, optionally with `:PORT`".into(),
            Self::Ipv6 { .. } => "an IPv6 address in brackets, e.g. `[::1]:5000`".into(),
            Self::Port { .. } => "a port number from 1 to 65535".into(),
            Self::Uppercase { .. } => "lowercase letters".into(),
            Self::Component { .. } => {
                "lowercase letters and digits, separated by `.`, `_`, `__` or dashes".into()
            }
            Self::Tag { .. } => {
                "up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`".into()
            }
            Self::Digest { source, .. } => source.expected(),
            Self::TooLong { .. } => {
                format!("at most {MAX_NAME_LEN} characters in registry and repository together")
            }
        }
    }

    /// A fix, when there is an obvious one.
    pub fn fix(&self) -> Option<String> {
        match self {
            Self::Uppercase { name } => Some(format!("write `{}`", name.to_ascii_lowercase())),
            Self::Port { .. } => {
                Some("use a port from 1 to 65535, as in `localhost:5000/app`".into())
            }
            Self::Ipv6 { .. } => {
                Some("write an IPv6 registry in brackets, as in `[::1]:5000/app`".into())
            }
            _ => None,
        }
    }
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ReferenceErrorKind::Empty => write!(f, "empty image reference"),
            // What is wrong first: it is the part people read.
            kind => write!(
                f,
                "{kind} in image reference `{}`: expected {}",
                self.input,
                kind.expected()
            ),
        }
    }
}

impl std::error::Error for ReferenceError {
    // The kind is in the message already; its own cause (a digest's) is
    // the next link.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// A reference cut at its separators, before any check: the parser's first
/// step, for callers that look at names as written (local image tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts<'a> {
    input: &'a str,
    registry: Option<Range<usize>>,
    repository: Range<usize>,
    tag: Option<Range<usize>>,
    digest: Option<Range<usize>>,
}

impl<'a> Parts<'a> {
    pub fn split(input: &'a str) -> Parts<'a> {
        let (rest_end, digest) = match input.find('@') {
            Some(at) => (at, Some(at + 1..input.len())),
            None => (input.len(), None),
        };
        // The tag follows the last `:` after the last `/`, so a registry's
        // port is never taken for a tag.
        let last_slash = input[..rest_end].rfind('/').map_or(0, |i| i + 1);
        let (name_end, tag) = match input[last_slash..rest_end].rfind(':') {
            Some(i) => (last_slash + i, Some(last_slash + i + 1..rest_end)),
            None => (rest_end, None),
        };
        let (registry, repository) = match input[..name_end].find('/') {
            Some(i) if looks_like_registry(&input[..i]) => (Some(0..i), i + 1..name_end),
            _ => (None, 0..name_end),
        };
        Parts {
            input,
            registry,
            repository,
            tag,
            digest,
        }
    }

    /// The registry as written, when there is one.
    pub fn registry(&self) -> Option<&'a str> {
        self.registry.clone().map(|r| &self.input[r])
    }

    /// The repository path as written.
    pub fn repository(&self) -> &'a str {
        &self.input[self.repository.clone()]
    }

    /// Registry and repository as written, without tag or digest.
    pub fn name(&self) -> &'a str {
        &self.input[..self.repository.end]
    }

    pub fn tag(&self) -> Option<&'a str> {
        self.tag.clone().map(|r| &self.input[r])
    }

    pub fn digest(&self) -> Option<&'a str> {
        self.digest.clone().map(|r| &self.input[r])
    }
}

fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

impl Reference {
    /// Parses `input`, normalizing registry and path; tag and digest stay as
    /// written (see [`Reference::normalized`] for the default tag).
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let fail = |span: Range<usize>, kind| ReferenceError {
            input: input.to_string(),
            span,
            kind,
        };
        if input.is_empty() {
            return Err(fail(0..0, ReferenceErrorKind::Empty));
        }
        let parts = Parts::split(input);
        let digest = match parts.digest.clone() {
            Some(r) => Some(Digest::parse(&input[r.clone()]).map_err(|source| {
                let digest = input[r.clone()].to_string();
                fail(r, ReferenceErrorKind::Digest { digest, source })
            })?),
            None => None,
        };
        if let Some(r) = parts.tag.clone()
            && !valid_tag(&input[r.clone()])
        {
            let tag = input[r.clone()].to_string();
            return Err(fail(r, ReferenceErrorKind::Tag { tag }));
        }
        if parts.repository.is_empty() && parts.registry.is_none() {
            return Err(fail(0..0, ReferenceErrorKind::MissingRepository));
        }
        if let Some(r) = parts.registry.clone() {
            check_registry(&input[r.clone()])
                .map_err(|(sub, kind)| fail(r.start + sub.start..r.start + sub.end, kind))?;
        }
        let mut start = parts.repository.start;
        for component in parts.repository().split('/') {
            let span = start..start + component.len();
            start = span.end + 1;
            if component.bytes().any(|b| b.is_ascii_uppercase()) {
                let name = parts.name().to_string();
                return Err(fail(span, ReferenceErrorKind::Uppercase { name }));
            }
            if !valid_component(component) {
                let component = component.to_string();
                return Err(fail(span, ReferenceErrorKind::Component { component }));
            }
        }
        let registry = normalize_registry(parts.registry().unwrap_or(DOCKER_HUB));
        let path = parts.repository();
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let len = registry.len() + 1 + repository.len();
        if len > MAX_NAME_LEN {
            return Err(fail(
                0..parts.name().len(),
                ReferenceErrorKind::TooLong { len },
            ));
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag: parts.tag().map(str::to_string),
            digest,
        })
    }

    /// The registry with its port, e.g. `docker.io` or `127.0.0.1:5000`.
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

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The canonical form: tagged `latest` when it names neither tag nor
    /// digest (docker's `TagNameOnly`). Its text is what the build graph
    /// digests, so every spelling of one image is one source.
    pub fn normalized(&self) -> Reference {
        let mut r = self.clone();
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        r
    }

    /// The short form people write: `debian:bookworm` for
    /// `docker.io/library/debian:bookworm`, `user/app` for
    /// `docker.io/user/app`; other registries keep their name.
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        };
        self.push_tag_and_digest(&mut s);
        s
    }

    /// What to ask the registry for: the digest when there is one (it wins
    /// over the tag, as in docker), else the tag, else `latest`.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !valid_tag(tag) {
            let input = format!("{}:{tag}", self.name());
            return Err(ReferenceError {
                span: input.len() - tag.len()..input.len(),
                input,
                kind: ReferenceErrorKind::Tag {
                    tag: tag.to_string(),
                },
            });
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to a digest (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    fn push_tag_and_digest(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_tag_and_digest(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Checks `host[:port]`; on failure, the byte range within it and why.
fn check_registry(registry: &str) -> Result<(), (Range<usize>, ReferenceErrorKind)> {
    let (host, port_at) = if let Some(inner) = registry.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            let address = inner.to_string();
            return Err((1..registry.len(), ReferenceErrorKind::Ipv6 { address }));
        };
        let address = &inner[..close];
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            let address = address.to_string();
            return Err((1..1 + close, ReferenceErrorKind::Ipv6 { address }));
        }
        let after = close + 2;
        match &registry[after..] {
            "" => (None, None),
            rest if rest.starts_with(':') => (None, Some(after + 1)),
            _ => {
                let host = registry.to_string();
                return Err((after..registry.len(), ReferenceErrorKind::Host { host }));
            }
        }
    } else {
        match registry.find(':') {
            Some(i) => (Some(&registry[..i]), Some(i + 1)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            let h = host.to_string();
            return Err((0..host.len(), ReferenceErrorKind::Host { host: h }));
        }
    }
    if let Some(at) = port_at {
        let port = &registry[at..];
        let ok =
            port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !ok {
            let port = port.to_string();
            return Err((at..registry.len(), ReferenceErrorKind::Port { port }));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
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
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
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
mod tests;
