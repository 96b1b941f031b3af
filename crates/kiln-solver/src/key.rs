//! Cache-key policy: which inputs contribute their key and which the content
//! they provide. Pure functions, so the policy is testable without a worker.

use kiln_dag::canonical::{Canonical, Encoder};
use kiln_dag::{CopyAction, Digest, FileAction, Op, SourceOp, Vertex};

/// What one copy reads from an input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    /// Absolute path in the input (or relative to the context root).
    pub path: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// The owners of what is selected count (a copy that keeps them).
    pub owners: bool,
    /// A symlink named by `path` is followed.
    pub follow: bool,
}

impl Selector {
    /// What `copy` reads from its source input.
    pub fn of(copy: &CopyAction) -> Selector {
        Selector {
            path: copy.src.clone(),
            include: copy.include.clone(),
            exclude: copy.exclude.clone(),
            owners: copy.keeps_owners(),
            follow: copy.follow_symlinks,
        }
    }
}

/// How an input contributes to its user's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dep {
    /// The input's own cache key.
    Key,
    /// The content digest of these selections of the input's result.
    Content(Vec<Selector>),
}

/// The key recipe of a vertex: one [`Dep`] per input, and whether the
/// worker's source key is part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMap {
    pub source: bool,
    pub deps: Vec<Dep>,
}

/// The recipe for `v`: copies read other inputs by content; everything else
/// by key.
pub fn cache_map(v: &Vertex) -> CacheMap {
    let mut deps = vec![Dep::Key; v.inputs.len()];
    match &v.op {
        Op::Source(_) => {
            return CacheMap { source: true, deps };
        }
        Op::File(f) => {
            for a in &f.actions {
                if let FileAction::Copy(c) = a {
                    let from = &c.from;
                    // Copying from the filesystem being changed depends on
                    // all of it anyway.
                    if *from == 0 || *from >= deps.len() {
                        continue;
                    }
                    let sel = Selector::of(c);
                    match &mut deps[*from] {
                        Dep::Content(list) => list.push(sel),
                        d => *d = Dep::Content(vec![sel]),
                    }
                }
            }
        }
        Op::Exec(_) | Op::Merge(_) => {}
    }
    CacheMap {
        source: false,
        deps,
    }
}

/// Folds several digests into one, order-sensitive.
pub(crate) fn fold(digests: &[Digest]) -> Digest {
    let mut e = Encoder::new();
    e.tag("fold");
    for d in digests {
        e.bytes(d.as_bytes());
    }
    Digest::of(&e.into_bytes())
}

/// The cache key from the op itself, the source key, and per input whether
/// it is a content digest and the digest.
pub(crate) fn cache_key(op: &Op, source: Option<&Digest>, deps: &[(bool, Digest)]) -> Digest {
    let mut e = Encoder::new();
    e.tag("kiln-cache/v1");
    match op {
        // A source is what it resolves to: an image by manifest digest, not
        // by the tag that named it. The op's kind still separates e.g. an
        // empty context from scratch.
        Op::Source(s) => {
            e.tag("source");
            e.tag(match s {
                SourceOp::Image { .. } => "image",
                SourceOp::Context { .. } => "context",
                SourceOp::Scratch => "scratch",
                SourceOp::StaticBase { .. } => "static_base",
                SourceOp::OciLayout { .. } | SourceOp::OciArchive { .. } => "oci",
                SourceOp::DebianPackages(_) => "debian_packages",
            });
        }
        op => op.encode(&mut e),
    }
    match source {
        Some(d) => {
            e.bool(true);
            e.bytes(d.as_bytes());
        }
        None => e.bool(false),
    }
    e.u64(deps.len() as u64);
    for (content, d) in deps {
        e.bool(*content);
        e.bytes(d.as_bytes());
    }
    Digest::of(&e.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_dag::{CopyOptions, State};

    #[test]
    fn copies_from_other_states_are_keyed_by_content() {
        let builder = State::image("docker.io/library/debian:bookworm", None);
        let app = State::static_base().copy(&builder, "/hello", "/hello", CopyOptions::default());
        let def = app.definition();
        let v = def.vertex(&def.root).unwrap();
        let map = cache_map(v);
        assert!(!map.source);
        assert_eq!(map.deps[0], Dep::Key);
        assert_eq!(
            map.deps[1],
            Dep::Content(vec![Selector {
                path: "/hello".into(),
                include: vec![],
                exclude: vec![],
                owners: false,
                follow: false,
            }])
        );
    }

    #[test]
    fn sources_ask_the_worker() {
        let def = State::scratch().definition();
        assert!(cache_map(&def.vertices[0]).source);
    }

    #[test]
    fn content_and_key_deps_are_distinguished() {
        let d = Digest::of(b"x");
        let op = State::scratch().mkdir("/a", 0o755, true, None);
        let op = op.op();
        assert_ne!(
            cache_key(op, None, &[(true, d)]),
            cache_key(op, None, &[(false, d)])
        );
    }
}
