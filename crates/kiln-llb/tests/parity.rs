//! Parity: for every example, the DAG kiln runs itself and the LLB handed to
//! BuildKit describe the same build. Both graphs are reduced, each by its
//! own reader, to the same vocabulary (sources, exec commands with their
//! mounts, file actions, merges) with every input named by the description
//! of what produces it; the two sets of descriptions must be equal, which
//! covers the nodes and the edges. Config-only inputs of kiln's run steps
//! (the stage's base, for env/user/workdir) are not edges in LLB.

mod common;

use std::collections::{BTreeSet, HashMap};

use kiln_dag::{Definition, Digest, FileAction, MountKind, Network, Op, SourceOp};
use kiln_llb::pb::{self, file_action::Action, op::Op as Kind};
use kiln_llb::{Graph, Options, decode, emit, encode};
use kiln_oci::static_base::{self, Kind as EntryKind};
use sha2::Digest as _;

const SCRATCH: &str = "scratch";

fn short(s: &str) -> String {
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..6])
}

/// Collects `line` and returns its short id.
fn node(lines: &mut BTreeSet<String>, line: String) -> String {
    let id = short(&line);
    lines.insert(format!("{id} {line}"));
    id
}

fn chown_text(user: &str, group: Option<&str>) -> String {
    format!("{user}:{}", group.unwrap_or("-"))
}

// --- kiln's side ---------------------------------------------------------

fn kiln_side(def: &Definition) -> (BTreeSet<String>, String) {
    let mut lines = BTreeSet::new();
    let mut ids: HashMap<Digest, String> = HashMap::new();
    for v in &def.vertices {
        let input = |i: usize| ids[&v.inputs[i]].clone();
        let id = match &v.op {
            Op::Source(SourceOp::Scratch) => SCRATCH.to_string(),
            Op::Source(SourceOp::StaticBase { .. }) => node(&mut lines, "static_base".into()),
            Op::Source(SourceOp::Image { reference, .. }) => {
                node(&mut lines, format!("image {reference}"))
            }
            Op::Source(SourceOp::Context {
                name,
                include,
                exclude,
            }) => node(
                &mut lines,
                format!("local {name} include={include:?} exclude={exclude:?}"),
            ),
            Op::Source(other) => panic!("no LLB for {other:?}"),
            Op::Exec(x) => {
                let mut env: Vec<String> = x
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .filter(|e| *e != format!("PATH={}", kiln_dag::DEFAULT_PATH))
                    .collect();
                env.sort();
                let mut mounts: Vec<String> = x
                    .mounts
                    .iter()
                    .map(|m| match &m.kind {
                        MountKind::Bind {
                            input: i,
                            selector,
                            readonly,
                        } => format!("{} bind {} {selector} ro={readonly}", m.target, input(*i)),
                        MountKind::Cache { id, sharing } => {
                            // An empty id is the target's cache (as in BuildKit).
                            let id = if id.is_empty() { &m.target } else { id };
                            format!("{} cache {id} {sharing:?}", m.target)
                        }
                        MountKind::Secret {
                            id,
                            required,
                            mode,
                            uid,
                            gid,
                        } => format!(
                            "{} secret {id} required={required} {mode:o} {uid}:{gid}",
                            m.target
                        ),
                        MountKind::SecretEnv { id, required } => {
                            format!("{} secretenv {id} required={required}", m.target)
                        }
                        MountKind::Ssh {
                            id,
                            required,
                            mode,
                            uid,
                            gid,
                        } => format!(
                            "{} ssh {id} required={required} {mode:o} {uid}:{gid}",
                            m.target
                        ),
                        MountKind::Tmpfs { size } => {
                            format!("{} tmpfs {}", m.target, size.unwrap_or(0))
                        }
                    })
                    .collect();
                mounts.sort();
                node(
                    &mut lines,
                    format!(
                        "exec {:?} root={} env={env:?} cwd={} user={} net={} mounts={mounts:?}",
                        x.args,
                        input(0),
                        x.cwd.as_deref().unwrap_or("/"),
                        x.user.as_deref().unwrap_or(""),
                        match x.network {
                            Network::Host | Network::Isolated => "default",
                            Network::None => "none",
                        }
                    ),
                )
            }
            Op::File(f) => {
                let actions: Vec<String> = f
                    .actions
                    .iter()
                    .map(|a| match a {
                        FileAction::Copy(c) => format!(
                            "copy {}:{} -> {} owner={} mode={} include={:?} exclude={:?}",
                            input(c.from),
                            c.src,
                            c.dest,
                            c.chown
                                .as_ref()
                                .map(|c| chown_text(&c.user, c.group.as_deref()))
                                .unwrap_or_default(),
                            c.chmod.map(|m| format!("{m:o}")).unwrap_or_default(),
                            c.include,
                            c.exclude,
                        ),
                        FileAction::Mkdir {
                            path,
                            mode,
                            parents,
                            chown,
                        } => format!(
                            "mkdir {path} {mode:o} parents={parents} owner={}",
                            chown
                                .as_ref()
                                .map(|c| chown_text(&c.user, c.group.as_deref()))
                                .unwrap_or_default()
                        ),
                        FileAction::Mkfile {
                            path,
                            mode,
                            data,
                            chown,
                        } => format!(
                            "mkfile {path} {mode:o} {} owner={}",
                            short(&String::from_utf8_lossy(data)),
                            chown
                                .as_ref()
                                .map(|c| chown_text(&c.user, c.group.as_deref()))
                                .unwrap_or_default()
                        ),
                        FileAction::Symlink { target, link } => {
                            format!("symlink {link} -> {target}")
                        }
                        FileAction::Rm {
                            path,
                            allow_not_found,
                        } => format!("rm {path} allow_not_found={allow_not_found}"),
                    })
                    .collect();
                node(&mut lines, format!("file on {} {actions:?}", input(0)))
            }
            Op::Merge(_) => {
                let parts: Vec<String> = (0..v.inputs.len())
                    .map(input)
                    .filter(|i| i != SCRATCH)
                    .collect();
                match parts.len() {
                    0 => SCRATCH.to_string(),
                    1 => parts[0].clone(),
                    _ => node(&mut lines, format!("merge {parts:?}")),
                }
            }
        };
        ids.insert(v.digest, id);
    }
    let root = ids[&def.root].clone();
    (reachable(lines, &root), root)
}

// --- BuildKit's side -----------------------------------------------------

fn owner_text(o: &Option<pb::ChownOpt>) -> String {
    let u = |u: &Option<pb::UserOpt>| match u.as_ref().and_then(|u| u.user.as_ref()) {
        Some(pb::user_opt::User::ById(id)) => Some(id.to_string()),
        Some(pb::user_opt::User::ByName(n)) => Some(n.name.clone()),
        None => None,
    };
    match o {
        Some(c) => chown_text(&u(&c.user).unwrap_or_default(), u(&c.group).as_deref()),
        None => String::new(),
    }
}

/// Whether `f` (on scratch) creates exactly the static base's entries.
fn is_static_base(f: &pb::FileOp) -> bool {
    let entries = static_base::entries();
    if f.actions.len() != entries.len() {
        return false;
    }
    let data_of: HashMap<&str, &[u8]> = entries
        .iter()
        .map(|e| (e.path.as_str(), e.data.as_slice()))
        .collect();
    entries.iter().zip(&f.actions).all(|(e, a)| {
        let path = format!("/{}", e.path);
        match (&e.kind, &a.action) {
            (EntryKind::Dir, Some(Action::Mkdir(m))) => {
                m.path == path && m.mode as u32 == e.mode & 0o7777
            }
            (EntryKind::File, Some(Action::Mkfile(m))) => {
                m.path == path && m.data == e.data && m.mode as u32 == e.mode & 0o7777
            }
            (EntryKind::Hardlink { target }, Some(Action::Mkfile(m))) => {
                m.path == path && m.data == data_of[target.as_str()]
            }
            (EntryKind::Symlink { target }, Some(Action::Symlink(l))) => {
                l.newpath == path && l.oldpath == *target
            }
            _ => false,
        }
    })
}

fn llb_side(def: &pb::Definition) -> (BTreeSet<String>, String) {
    let g = Graph::from_definition(def).expect("well-formed LLB");
    let mut lines = BTreeSet::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    for op in &g.ops {
        let input = |i: i64| -> String {
            if i < 0 {
                SCRATCH.to_string()
            } else {
                ids[&op.op.inputs[i as usize].digest].clone()
            }
        };
        let id = match op.op.op.as_ref().expect("an operation") {
            Kind::Source(s) => {
                if let Some(r) = s.identifier.strip_prefix("docker-image://") {
                    node(&mut lines, format!("image {r}"))
                } else if let Some(n) = s.identifier.strip_prefix("local://") {
                    let list = |k: &str| -> Vec<String> {
                        s.attrs
                            .get(k)
                            .map(|j| serde_json::from_str(j).expect("json list"))
                            .unwrap_or_default()
                    };
                    node(
                        &mut lines,
                        format!(
                            "local {n} include={:?} exclude={:?}",
                            list("local.includepattern"),
                            list("local.excludepatterns")
                        ),
                    )
                } else {
                    panic!("unexpected source {}", s.identifier)
                }
            }
            Kind::File(f) if op.op.inputs.is_empty() && is_static_base(f) => {
                node(&mut lines, "static_base".into())
            }
            Kind::File(f) => {
                let n = op.op.inputs.len() as i64;
                let mut base = None;
                let actions: Vec<String> = f
                    .actions
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        if i == 0 {
                            base = Some(input(a.input));
                        } else {
                            assert_eq!(a.input, n + i as i64 - 1, "actions form a chain");
                        }
                        match a.action.as_ref().expect("an action") {
                            Action::Copy(c) => format!(
                                "copy {}:{} -> {} owner={} mode={} include={:?} exclude={:?}",
                                input(a.secondary_input),
                                c.src,
                                c.dest,
                                owner_text(&c.owner),
                                if c.mode < 0 {
                                    String::new()
                                } else {
                                    format!("{:o}", c.mode)
                                },
                                c.include_patterns,
                                c.exclude_patterns
                            ),
                            Action::Mkdir(m) => format!(
                                "mkdir {} {:o} parents={} owner={}",
                                m.path,
                                m.mode,
                                m.make_parents,
                                owner_text(&m.owner)
                            ),
                            Action::Mkfile(m) => format!(
                                "mkfile {} {:o} {} owner={}",
                                m.path,
                                m.mode,
                                short(&String::from_utf8_lossy(&m.data)),
                                owner_text(&m.owner)
                            ),
                            Action::Symlink(l) => format!("symlink {} -> {}", l.newpath, l.oldpath),
                            Action::Rm(r) => {
                                format!("rm {} allow_not_found={}", r.path, r.allow_not_found)
                            }
                        }
                    })
                    .collect();
                assert_eq!(f.actions.last().map(|a| a.output), Some(0));
                node(
                    &mut lines,
                    format!("file on {} {actions:?}", base.expect("an action")),
                )
            }
            Kind::Exec(x) => {
                let meta = x.meta.as_ref().expect("exec meta");
                let root = &x.mounts[0];
                assert_eq!((root.dest.as_str(), root.output), ("/", 0));
                let mut env: Vec<String> = meta
                    .env
                    .iter()
                    .filter(|e| **e != format!("PATH={}", kiln_dag::DEFAULT_PATH))
                    .cloned()
                    .collect();
                env.sort();
                let mut mounts: Vec<String> =
                    x.mounts[1..]
                        .iter()
                        .map(|m| {
                            assert_eq!(m.output, -1, "only the root mount has an output");
                            match pb::MountType::try_from(m.mount_type).unwrap() {
                                pb::MountType::Bind => format!(
                                    "{} bind {} {} ro={}",
                                    m.dest,
                                    input(m.input),
                                    if m.selector.is_empty() {
                                        "/"
                                    } else {
                                        &m.selector
                                    },
                                    m.readonly
                                ),
                                pb::MountType::Cache => {
                                    let c = m.cache_opt.as_ref().unwrap();
                                    let sharing =
                                        match pb::CacheSharingOpt::try_from(c.sharing).unwrap() {
                                            pb::CacheSharingOpt::Shared => "Shared",
                                            pb::CacheSharingOpt::Private => "Private",
                                            pb::CacheSharingOpt::Locked => "Locked",
                                        };
                                    format!("{} cache {} {sharing}", m.dest, c.id)
                                }
                                pb::MountType::Secret => {
                                    let s = m.secret_opt.as_ref().unwrap();
                                    format!(
                                        "{} secret {} required={} {:o} {}:{}",
                                        m.dest, s.id, !s.optional, s.mode, s.uid, s.gid
                                    )
                                }
                                pb::MountType::Tmpfs => format!(
                                    "{} tmpfs {}",
                                    m.dest,
                                    m.tmpfs_opt.as_ref().map_or(0, |t| t.size)
                                ),
                                pb::MountType::Ssh => {
                                    let s = m.ssh_opt.as_ref().unwrap();
                                    format!(
                                        "{} ssh {} required={} {:o} {}:{}",
                                        m.dest, s.id, !s.optional, s.mode, s.uid, s.gid
                                    )
                                }
                            }
                        })
                        .chain(x.secretenv.iter().map(|s| {
                            format!("{} secretenv {} required={}", s.name, s.id, !s.optional)
                        }))
                        .collect();
                mounts.sort();
                let net = match pb::NetMode::try_from(x.network).unwrap() {
                    pb::NetMode::Unset => "default",
                    pb::NetMode::None => "none",
                    pb::NetMode::Host => "host",
                };
                node(
                    &mut lines,
                    format!(
                        "exec {:?} root={} env={env:?} cwd={} user={} net={net} mounts={mounts:?}",
                        meta.args,
                        input(root.input),
                        meta.cwd,
                        meta.user,
                    ),
                )
            }
            Kind::Merge(m) => {
                let parts: Vec<String> = m.inputs.iter().map(|i| input(i.input)).collect();
                node(&mut lines, format!("merge {parts:?}"))
            }
            Kind::Diff(_) | Kind::Build(_) | Kind::Passthrough(_) => {
                panic!("kiln emits no diff, build or passthrough ops")
            }
        };
        ids.insert(op.digest.clone(), id);
    }
    let root = g
        .root
        .as_ref()
        .map(|r| ids[r].clone())
        .unwrap_or_else(|| SCRATCH.into());
    (reachable(lines, &root), root)
}

/// The lines of the nodes the root depends on (LLB holds only those; kiln's
/// definition does too, but this keeps the comparison honest either way).
fn reachable(lines: BTreeSet<String>, root: &str) -> BTreeSet<String> {
    let by_id: HashMap<String, String> = lines
        .iter()
        .map(|l| (l[..12].to_string(), l.clone()))
        .collect();
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_string()];
    while let Some(id) = stack.pop() {
        let Some(line) = by_id.get(&id) else { continue };
        if !out.insert(line.clone()) {
            continue;
        }
        for other in by_id.keys() {
            if line[12..].contains(other.as_str()) {
                stack.push(other.clone());
            }
        }
    }
    out
}

#[test]
fn every_example_describes_the_same_build_in_kiln_and_in_llb() {
    for (name, text) in common::examples() {
        let def = common::compile("Kilnfile", &text);
        let llb = emit(&def, &Options::new(common::amd64())).unwrap();
        let wire = decode(&encode(&llb.definition)).unwrap();
        let (kiln, kiln_root) = kiln_side(&def);
        let (bk, bk_root) = llb_side(&wire);
        assert_eq!(kiln, bk, "{name}: kiln's graph and the LLB differ");
        assert_eq!(kiln_root, bk_root, "{name}: different results");
        assert!(
            kiln.iter().any(|l| l.contains("static_base")),
            "{name}: the examples ship on the static base"
        );
    }
}

#[test]
fn parity_notices_a_difference() {
    // The comparison is not vacuous: a changed command shows up.
    let (name, text) = common::examples().remove(0);
    let def = common::compile("Kilnfile", &text);
    let mut other = def.clone();
    for v in &mut other.vertices {
        if let Op::Exec(x) = &mut v.op {
            x.args.push("--changed".into());
        }
    }
    let llb = emit(&other, &Options::new(common::amd64())).unwrap();
    let (kiln, _) = kiln_side(&def);
    let (bk, _) = llb_side(&llb.definition);
    assert_ne!(kiln, bk, "{name}");
}

#[test]
fn every_feature_has_parity() {
    let def = common::feature_graph();
    let llb = emit(&def, &Options::new(common::amd64())).unwrap();
    let (kiln, kiln_root) = kiln_side(&def);
    let (bk, bk_root) = llb_side(&decode(&encode(&llb.definition)).unwrap());
    assert_eq!(kiln, bk);
    assert_eq!(kiln_root, bk_root);
    assert!(kiln.iter().any(|l| l.contains("merge")), "{kiln:#?}");
}
