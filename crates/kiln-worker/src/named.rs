//! Named contexts (`kiln build --build-context NAME=VALUE`, as buildx): an
//! `image(..)` (or Dockerfile `FROM`) whose reference is NAME comes from
//! another image, an OCI layout or a directory instead. The substitution
//! happens where the worker resolves the source, so the step's cache key is
//! the replacement's manifest digest, as for any image.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a named context stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`
    Image(String),
    /// `oci-layout://PATH[:TAG]`
    OciLayout { path: PathBuf, tag: Option<String> },
    /// `PATH`: the directory's files as a one-layer image
    Dir(PathBuf),
}

/// Why a `--build-context` value is refused.
#[derive(Debug, thiserror::Error)]
pub enum NamedContextError {
    #[error("`--build-context {flag}`: write NAME=VALUE")]
    Syntax { flag: String },
    #[error("`--build-context {flag}`: `{name}` is given twice")]
    Duplicate { flag: String, name: String },
    #[error(
        "`--build-context {flag}`: {kind} contexts are not supported: use `docker-image://REF`, `oci-layout://PATH[:TAG]` or a directory"
    )]
    Kind { flag: String, kind: String },
    #[error("`--build-context {flag}`: `{path}` is not a directory")]
    NotDir { flag: String, path: PathBuf },
}

/// The contexts by NAME, normalized as the frontends normalize `image(..)`
/// references (`alpine` names `docker.io/library/alpine:latest`).
pub fn parse(flags: &[String]) -> Result<BTreeMap<String, NamedContext>, NamedContextError> {
    let mut out = BTreeMap::new();
    for flag in flags {
        let Some((name, value)) = flag
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        else {
            return Err(NamedContextError::Syntax { flag: flag.clone() });
        };
        let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
            NamedContext::Image(r.to_string())
        } else if let Some(p) = value.strip_prefix("oci-layout://") {
            // buildx: `oci-layout://PATH[:TAG]` or `@DIGEST`; a colon after
            // the last slash starts the tag
            let (path, tag) = match p.rsplit_once(':') {
                Some((path, tag)) if !tag.contains('/') => (path, Some(tag.to_string())),
                _ => (p, None),
            };
            NamedContext::OciLayout {
                path: PathBuf::from(path),
                tag,
            }
        } else if let Some((kind, _)) = value.split_once("://") {
            return Err(NamedContextError::Kind {
                flag: flag.clone(),
                kind: kind.to_string(),
            });
        } else if value.starts_with("target:") || value.starts_with("input:") {
            return Err(NamedContextError::Kind {
                flag: flag.clone(),
                kind: value.split(':').next().unwrap_or_default().to_string(),
            });
        } else {
            let path = PathBuf::from(value);
            if !path.is_dir() {
                return Err(NamedContextError::NotDir {
                    flag: flag.clone(),
                    path,
                });
            }
            NamedContext::Dir(path)
        };
        let key = normalized(name);
        if out.insert(key, ctx).is_some() {
            return Err(NamedContextError::Duplicate {
                flag: flag.clone(),
                name: name.to_string(),
            });
        }
    }
    Ok(out)
}

/// A reference as the frontends write it into the graph, or the name as
/// given when it is no reference.
pub fn normalized(name: &str) -> String {
    kiln_types::Reference::parse(name)
        .map(|r| r.normalized().to_string())
        .unwrap_or_else(|_| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_context_values() {
        let dir = std::env::temp_dir();
        let d = dir.display();
        let m = parse(&[
            "alpine=docker-image://127.0.0.1:5000/a:1".into(),
            "base=oci-layout:///tmp/l:v1".into(),
            "plain=oci-layout://rel/dir".into(),
            format!("files={d}"),
        ])
        .unwrap();
        assert_eq!(
            m["docker.io/library/alpine:latest"],
            NamedContext::Image("127.0.0.1:5000/a:1".into())
        );
        assert_eq!(
            m["docker.io/library/base:latest"],
            NamedContext::OciLayout {
                path: "/tmp/l".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            m["docker.io/library/plain:latest"],
            NamedContext::OciLayout {
                path: "rel/dir".into(),
                tag: None
            }
        );
        assert_eq!(m["docker.io/library/files:latest"], NamedContext::Dir(dir));
        for bad in ["x", "=a", "x=git://h/r", "x=target:a", "x=/no/such/dir"] {
            assert!(parse(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse(&["a=docker-image://b".into(), "a=docker-image://c".into()]).is_err());
    }
}
