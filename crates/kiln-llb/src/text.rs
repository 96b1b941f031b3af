//! Reading a marshalled definition back: a checked graph, and readable text.

use std::collections::HashMap;
use std::fmt::Write as _;

use prost::Message as _;

use crate::emit::op_digest;
use crate::pb::{self, file_action::Action, op::Op as Kind};

/// A definition that is not well-formed LLB.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot decode the definition: {reason}")]
    Definition { reason: String },
    #[error("cannot decode op {index} of the definition: {reason}")]
    Op { index: usize, reason: String },
    #[error("op {index} refers to `{input}`, which is not an earlier op")]
    Input { index: usize, input: String },
    #[error("the last op must be the terminal (one input, no operation)")]
    Terminal,
}

/// One decoded op.
#[derive(Debug, Clone)]
pub struct GraphOp {
    pub digest: String,
    pub op: pb::Op,
    pub metadata: Option<pb::OpMetadata>,
}

/// A decoded definition: ops in order (every input before its users), the
/// terminal removed.
#[derive(Debug, Clone)]
pub struct Graph {
    pub ops: Vec<GraphOp>,
    /// The op whose output is the result; `None` for an empty definition.
    pub root: Option<String>,
    index: HashMap<String, usize>,
}

impl Graph {
    pub fn from_definition(def: &pb::Definition) -> Result<Graph, DecodeError> {
        let mut ops = Vec::new();
        let mut index = HashMap::new();
        let mut root = None;
        for (i, bytes) in def.def.iter().enumerate() {
            let op = pb::Op::decode(bytes.as_slice()).map_err(|e| DecodeError::Op {
                index: i,
                reason: e.to_string(),
            })?;
            for inp in &op.inputs {
                if !index.contains_key(&inp.digest) {
                    return Err(DecodeError::Input {
                        index: i,
                        input: inp.digest.clone(),
                    });
                }
            }
            if i + 1 == def.def.len() {
                if op.op.is_some() || op.inputs.len() != 1 {
                    return Err(DecodeError::Terminal);
                }
                root = Some(op.inputs[0].digest.clone());
                break;
            }
            let digest = op_digest(bytes);
            index.insert(digest.clone(), ops.len());
            ops.push(GraphOp {
                metadata: def.metadata.get(&digest).cloned(),
                digest,
                op,
            });
        }
        Ok(Graph { ops, root, index })
    }

    pub fn op(&self, digest: &str) -> Option<&GraphOp> {
        self.index.get(digest).map(|&i| &self.ops[i])
    }

    /// The position of `digest` in [`Graph::ops`].
    pub fn position(&self, digest: &str) -> Option<usize> {
        self.index.get(digest).copied()
    }
}

/// File ops with more actions than this (the static base) are shown by
/// their first actions and a summary; the op digest covers the rest.
const MAX_ACTIONS: usize = 12;

/// A readable listing of a marshalled definition, one block per op.
pub fn to_text(def: &pb::Definition) -> Result<String, DecodeError> {
    let g = Graph::from_definition(def)?;
    let mut out = String::new();
    let num = |d: &str| {
        g.position(d)
            .map(|i| format!("#{i}"))
            .unwrap_or_else(|| d.to_string())
    };
    for (i, op) in g.ops.iter().enumerate() {
        let _ = writeln!(out, "#{i} {}", op.digest);
        if let Some(md) = &op.metadata {
            if let Some(n) = md.description.get("llb.customname") {
                let _ = writeln!(out, "  name {n:?}");
            }
            let caps: Vec<&str> = md.caps.keys().map(String::as_str).collect();
            let _ = writeln!(out, "  caps {}", caps.join(" "));
        }
        if let Some(p) = &op.op.platform {
            let mut s = format!("{}/{}", p.os, p.architecture);
            if !p.variant.is_empty() {
                let _ = write!(s, "/{}", p.variant);
            }
            let _ = writeln!(out, "  platform {s}");
        }
        for (n, inp) in op.op.inputs.iter().enumerate() {
            let _ = writeln!(out, "  input {n} = {}[{}]", num(&inp.digest), inp.index);
        }
        match &op.op.op {
            None => {
                let _ = writeln!(out, "  (no operation)");
            }
            Some(Kind::Source(s)) => {
                let _ = writeln!(out, "  source {}", s.identifier);
                for (k, v) in &s.attrs {
                    let _ = writeln!(out, "    {k} = {v}");
                }
            }
            Some(Kind::Exec(x)) => exec_text(&mut out, x),
            Some(Kind::File(f)) => {
                let _ = writeln!(out, "  file ({} actions)", f.actions.len());
                let shown = if f.actions.len() > MAX_ACTIONS {
                    MAX_ACTIONS / 2
                } else {
                    f.actions.len()
                };
                for (n, a) in f.actions.iter().take(shown).enumerate() {
                    let _ = writeln!(out, "    {n}: {}", action_text(a));
                }
                if shown < f.actions.len() {
                    let rest = &f.actions[shown..];
                    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
                    let mut bytes = 0usize;
                    for a in rest {
                        let kind = match &a.action {
                            Some(Action::Copy(_)) => "copy",
                            Some(Action::Mkfile(m)) => {
                                bytes += m.data.len();
                                "mkfile"
                            }
                            Some(Action::Mkdir(_)) => "mkdir",
                            Some(Action::Rm(_)) => "rm",
                            Some(Action::Symlink(_)) => "symlink",
                            None => "none",
                        };
                        *counts.entry(kind).or_default() += 1;
                    }
                    let c: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    let _ = writeln!(
                        out,
                        "    ... {} more ({}; {bytes} bytes of file data); last: {}",
                        rest.len(),
                        c.join(", "),
                        action_text(rest.last().expect("rest is not empty"))
                    );
                }
            }
            Some(Kind::Merge(m)) => {
                let ins: Vec<String> = m.inputs.iter().map(|i| i.input.to_string()).collect();
                let _ = writeln!(out, "  merge inputs {}", ins.join(" "));
            }
            Some(Kind::Diff(d)) => {
                let _ = writeln!(
                    out,
                    "  diff lower {:?} upper {:?}",
                    d.lower.as_ref().map(|l| l.input),
                    d.upper.as_ref().map(|u| u.input)
                );
            }
            // kiln emits neither; shown in case a definition from elsewhere
            // is dumped.
            Some(Kind::Build(b)) => {
                let _ = writeln!(out, "  build (builder input {})", b.builder);
            }
            Some(Kind::Passthrough(_)) => {
                let _ = writeln!(out, "  passthrough");
            }
        }
    }
    match &g.root {
        Some(r) => {
            let _ = writeln!(out, "result {}", num(r));
        }
        None => {
            let _ = writeln!(out, "result scratch");
        }
    }
    if let Some(src) = &def.source {
        for info in &src.infos {
            let _ = writeln!(
                out,
                "source file {} ({} bytes, {})",
                info.filename,
                info.data.len(),
                info.language
            );
        }
        for (d, locs) in &src.locations {
            for l in &locs.locations {
                for r in &l.ranges {
                    let s = r.start.unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  {} at source {} line {} char {}",
                        num(d),
                        l.source_index,
                        s.line,
                        s.character
                    );
                }
            }
        }
    }
    Ok(out)
}

fn exec_text(out: &mut String, x: &pb::ExecOp) {
    if let Some(m) = &x.meta {
        let _ = writeln!(out, "  exec {:?}", m.args);
        for e in &m.env {
            let _ = writeln!(out, "    env {e}");
        }
        let _ = writeln!(out, "    cwd {:?} user {:?}", m.cwd, m.user);
        for u in &m.ulimit {
            let _ = writeln!(out, "    ulimit {} soft={} hard={}", u.name, u.soft, u.hard);
        }
    }
    let net = pb::NetMode::try_from(x.network)
        .map(|n| format!("{n:?}"))
        .unwrap_or_else(|_| x.network.to_string());
    let sec = pb::SecurityMode::try_from(x.security)
        .map(|n| format!("{n:?}"))
        .unwrap_or_else(|_| x.security.to_string());
    let _ = writeln!(out, "    network {net} security {sec}");
    for m in &x.mounts {
        let ty = pb::MountType::try_from(m.mount_type)
            .map(|n| format!("{n:?}"))
            .unwrap_or_else(|_| m.mount_type.to_string());
        let mut s = format!(
            "    mount {} {ty} input={} output={}",
            m.dest, m.input, m.output
        );
        if !m.selector.is_empty() {
            let _ = write!(s, " selector={}", m.selector);
        }
        if m.readonly {
            s.push_str(" readonly");
        }
        if let Some(c) = &m.cache_opt {
            let sharing = pb::CacheSharingOpt::try_from(c.sharing)
                .map(|n| format!("{n:?}"))
                .unwrap_or_default();
            let _ = write!(s, " id={} sharing={sharing}", c.id);
        }
        if let Some(t) = &m.tmpfs_opt {
            let _ = write!(s, " size={}", t.size);
        }
        if let Some(se) = &m.secret_opt {
            let _ = write!(
                s,
                " id={} uid={} gid={} mode={:o} optional={}",
                se.id, se.uid, se.gid, se.mode, se.optional
            );
        }
        let _ = writeln!(out, "{s}");
    }
    for se in &x.secretenv {
        let _ = writeln!(
            out,
            "    secretenv {} id={} optional={}",
            se.name, se.id, se.optional
        );
    }
}

fn user_text(u: &Option<pb::UserOpt>) -> String {
    match u.as_ref().and_then(|u| u.user.as_ref()) {
        Some(pb::user_opt::User::ById(id)) => id.to_string(),
        Some(pb::user_opt::User::ByName(n)) => format!("{}@{}", n.name, n.input),
        None => "-".into(),
    }
}

fn owner_text(o: &Option<pb::ChownOpt>) -> String {
    match o {
        Some(c) => format!(" owner={}:{}", user_text(&c.user), user_text(&c.group)),
        None => String::new(),
    }
}

fn action_text(a: &pb::FileAction) -> String {
    let io = format!(
        "input={} secondary={} output={}",
        a.input, a.secondary_input, a.output
    );
    match &a.action {
        Some(Action::Copy(c)) => {
            let mut s = format!(
                "copy {} -> {} {io} mode={}{}",
                c.src,
                c.dest,
                if c.mode < 0 {
                    "-1".to_string()
                } else {
                    format!("{:o}", c.mode)
                },
                owner_text(&c.owner)
            );
            for (flag, on) in [
                ("follow_symlink", c.follow_symlink),
                ("dir_copy_contents", c.dir_copy_contents),
                ("create_dest_path", c.create_dest_path),
                ("allow_wildcard", c.allow_wildcard),
                ("allow_empty_wildcard", c.allow_empty_wildcard),
            ] {
                if on {
                    let _ = write!(s, " {flag}");
                }
            }
            if !c.include_patterns.is_empty() {
                let _ = write!(s, " include={:?}", c.include_patterns);
            }
            if !c.exclude_patterns.is_empty() {
                let _ = write!(s, " exclude={:?}", c.exclude_patterns);
            }
            let _ = write!(s, " timestamp={}", c.timestamp);
            s
        }
        Some(Action::Mkfile(m)) => format!(
            "mkfile {} {io} mode={:o} data={} bytes sha256:{}{} timestamp={}",
            m.path,
            m.mode,
            m.data.len(),
            &op_digest(&m.data)[7..19],
            owner_text(&m.owner),
            m.timestamp
        ),
        Some(Action::Mkdir(m)) => format!(
            "mkdir {} {io} mode={:o} parents={}{} timestamp={}",
            m.path,
            m.mode,
            m.make_parents,
            owner_text(&m.owner),
            m.timestamp
        ),
        Some(Action::Rm(r)) => format!(
            "rm {} {io} allow_not_found={} allow_wildcard={}",
            r.path, r.allow_not_found, r.allow_wildcard
        ),
        Some(Action::Symlink(l)) => format!(
            "symlink {} -> {} {io}{} timestamp={}",
            l.newpath,
            l.oldpath,
            owner_text(&l.owner),
            l.timestamp
        ),
        None => format!("(no action) {io}"),
    }
}
