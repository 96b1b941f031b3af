//! A whole build graph, flattened for solvers and printers.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::canonical::{Canonical, Encoder};
use crate::state::{ImageConfig, Node};
use crate::{Digest, Meta, Op, Platform, State};

/// One vertex of a [`Definition`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    pub digest: Digest,
    #[serde(flatten)]
    pub op: Op,
    pub inputs: Vec<Digest>,
    #[serde(skip_serializing_if = "is_default_meta", default)]
    pub meta: Meta,
}

fn is_default_meta(m: &Meta) -> bool {
    *m == Meta::default()
}

/// Everything needed to build one target: its vertices in topological order
/// (every input before its users), the root, and the image configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub vertices: Vec<Vertex>,
    pub root: Digest,
    /// The source vertex whose image config the target inherits.
    pub config_from: Digest,
    pub config: ImageConfig,
    pub platform: Option<Platform>,
    /// Where the entrypoint and cmd were set: for errors only, not part of
    /// the digest nor of the printed graph.
    #[serde(skip)]
    pub command_at: crate::state::CommandLocations,
}

impl Definition {
    pub(crate) fn from_state(state: &State) -> Definition {
        let mut seen = HashSet::new();
        let mut vertices = Vec::new();
        // Iterative post-order walk: deep chains must not overflow the stack.
        let mut stack: Vec<(Arc<Node>, bool)> = vec![(state.node.clone(), false)];
        while let Some((node, expanded)) = stack.pop() {
            if seen.contains(&node.digest) {
                continue;
            }
            if expanded {
                seen.insert(node.digest);
                vertices.push(Vertex {
                    digest: node.digest,
                    op: node.op.clone(),
                    inputs: node.inputs.iter().map(|i| i.digest).collect(),
                    meta: node.meta.clone(),
                });
            } else {
                stack.push((node.clone(), true));
                for input in node.inputs.iter().rev() {
                    if !seen.contains(&input.digest) {
                        stack.push((input.clone(), false));
                    }
                }
            }
        }
        Definition {
            vertices,
            root: state.node.digest,
            config_from: state.base.digest,
            config: state.config().clone(),
            command_at: state.command_locations(),
            platform: state.platform.clone(),
        }
    }

    /// The digest of the whole target: its root, the config it inherits and
    /// the config it sets. Two definitions with equal digests build the same
    /// image.
    pub fn digest(&self) -> Digest {
        let mut e = Encoder::new();
        e.tag("definition");
        e.bytes(self.root.as_bytes());
        e.bytes(self.config_from.as_bytes());
        self.config.encode(&mut e);
        e.opt(self.platform.as_ref());
        Digest::of(&e.into_bytes())
    }

    /// The vertex with `digest`.
    pub fn vertex(&self, digest: &Digest) -> Option<&Vertex> {
        self.vertices.iter().find(|v| v.digest == *digest)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("definitions always serialize")
    }

    /// A human listing, one vertex per line, inputs by short digest.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for v in &self.vertices {
            let _ = write!(out, "{}  {}", v.digest.short(), summary(&v.op));
            if !v.inputs.is_empty() {
                let ins: Vec<String> = v.inputs.iter().map(Digest::short).collect();
                let _ = write!(out, "  <- {}", ins.join(", "));
            }
            if let Some(name) = &v.meta.name {
                let _ = write!(out, "  # {name}");
            }
            if let Some(loc) = &v.meta.location {
                let _ = write!(out, " ({loc})");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "root {}", self.root);
        let _ = writeln!(out, "image {}", self.digest());
        out
    }

    /// Graphviz DOT, edges from input to user.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph kiln {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        let ids: HashMap<Digest, usize> = self
            .vertices
            .iter()
            .enumerate()
            .map(|(i, v)| (v.digest, i))
            .collect();
        for (i, v) in self.vertices.iter().enumerate() {
            let label = match &v.meta.name {
                Some(n) => format!("{}\\n{}", v.digest.short(), dot_escape(n)),
                None => format!("{}\\n{}", v.digest.short(), dot_escape(&summary(&v.op))),
            };
            let _ = writeln!(out, "  v{i} [label=\"{label}\"];");
        }
        for (i, v) in self.vertices.iter().enumerate() {
            for input in &v.inputs {
                let _ = writeln!(out, "  v{} -> v{i};", ids[input]);
            }
        }
        out.push_str("}\n");
        out
    }
}

fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One-line description of an op.
fn summary(op: &Op) -> String {
    use crate::op::{FileAction, SourceOp};
    match op {
        Op::Source(s) => match s {
            SourceOp::Image {
                reference,
                platform,
            } => match platform {
                Some(p) => format!("image {reference} ({p})"),
                None => format!("image {reference}"),
            },
            SourceOp::Context {
                name,
                include,
                exclude,
            } => format!("context {name} include={include:?} exclude={exclude:?}"),
            SourceOp::Scratch => "scratch".into(),
            SourceOp::StaticBase { revision } => format!("static_base r{revision}"),
            SourceOp::OciLayout { path, tag } => match tag {
                Some(t) => format!("oci_layout {path}:{t}"),
                None => format!("oci_layout {path}"),
            },
            SourceOp::OciArchive { path } => format!("oci_archive {path}"),
            SourceOp::DebianPackages(d) => {
                let mut s = format!("debian {} {:?}", d.suite, d.packages);
                if !d.exclude.is_empty() {
                    let _ = write!(s, " exclude={:?}", d.exclude);
                }
                s
            }
        },
        Op::Exec(x) => {
            let mut s = format!("exec {:?}", x.args);
            if x.network != crate::Network::Host {
                let _ = write!(s, " network={}", x.network.name());
            }
            if let Some(n) = x.pids_limit {
                let _ = write!(s, " pids={n}");
            }
            for h in &x.extra_hosts {
                let _ = write!(s, " host={}={}", h.host, h.ip);
            }
            for u in &x.ulimits {
                let _ = write!(s, " ulimit={}={}:{}", u.name, u.soft, u.hard);
            }
            for m in &x.mounts {
                let _ = write!(s, " mount={}", m.target);
            }
            s
        }
        Op::File(f) => {
            let parts: Vec<String> = f
                .actions
                .iter()
                .map(|a| match a {
                    FileAction::Copy(c) => format!("copy {}", c.describe()),
                    FileAction::Mkdir { path, mode, .. } => format!("mkdir {path} {mode:o}"),
                    FileAction::Mkfile {
                        path, mode, data, ..
                    } => {
                        format!("mkfile {path} {mode:o} ({} bytes)", data.len())
                    }
                    FileAction::Symlink { target, link } => format!("symlink {link} -> {target}"),
                    FileAction::Rm { path, .. } => format!("rm {path}"),
                })
                .collect();
            format!("file {}", parts.join("; "))
        }
        Op::Merge(_) => "merge".into(),
    }
}
