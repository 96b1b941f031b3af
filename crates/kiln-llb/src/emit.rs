//! kiln DAG -> LLB.

use std::collections::{BTreeMap, HashMap};

use kiln_dag::{
    CacheSharing, Chown, Definition, Digest, ExecOp, FileAction, FileOp, Meta, MountKind, Network,
    Op, Platform, SourceOp, Vertex,
};
use kiln_oci::static_base::{self, Kind};
use sha2::{Digest as _, Sha256};

use crate::config::BaseConfig;
use crate::marshal::marshal_op;
use crate::pb;

/// The Kilnfile a definition came from, so BuildKit can point at its lines.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// How to emit.
#[derive(Debug, Clone)]
pub struct Options {
    /// Platform of every op whose source does not name one.
    pub platform: Platform,
    /// The BuildKit session that serves the local sources (`local.session`).
    pub session_id: Option<String>,
    /// Resolved image configs of `image(..)` sources, by kiln vertex digest:
    /// run steps inherit their env, user and workdir. An image without one
    /// runs with the default `PATH` only.
    pub base_configs: HashMap<Digest, BaseConfig>,
    pub source: Option<SourceFile>,
}

impl Options {
    pub fn new(platform: Platform) -> Options {
        Options {
            platform,
            session_id: None,
            base_configs: HashMap::new(),
            source: None,
        }
    }
}

/// An emitted definition.
#[derive(Debug, Clone)]
pub struct Llb {
    pub definition: pb::Definition,
    /// Digest of the op whose output is the result; `None` when the result
    /// is the empty filesystem.
    pub root: Option<String>,
    /// Every kiln vertex's op digest (`None`: scratch, which LLB has no op
    /// for).
    pub vertices: HashMap<Digest, Option<String>>,
}

/// A kiln definition that cannot be expressed as LLB.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error(
        "the Debian package set of `{suite}`{at} is resolved and unpacked by kiln's own worker and has no LLB form yet: build this Kilnfile with `kiln build`"
    )]
    PackageSet { suite: String, at: String },
    #[error(
        "{what} `{path}`{at} is local to kiln and has no BuildKit source: push the image to a registry and use `image(..)` instead"
    )]
    UnsupportedSource {
        what: &'static str,
        path: String,
        at: String,
    },
    #[error("vertex {vertex} uses input {index} but has only {len} inputs")]
    InputIndex {
        vertex: Digest,
        index: usize,
        len: usize,
    },
    #[error("vertex {vertex} uses {input}, which is not defined before it")]
    InputOrder { vertex: Digest, input: Digest },
}

/// The digest BuildKit gives an op: sha256 of its marshalled bytes.
pub fn op_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Converts `def` to LLB.
pub fn emit(def: &Definition, opts: &Options) -> Result<Llb, EmitError> {
    let mut e = Emitter {
        opts,
        by_digest: def.vertices.iter().map(|v| (v.digest, v)).collect(),
        ops: Vec::new(),
        metadata: BTreeMap::new(),
        locations: BTreeMap::new(),
        vertices: HashMap::new(),
        static_base: None,
        platforms: HashMap::new(),
    };
    for v in &def.vertices {
        let out = e.vertex(v)?;
        e.vertices.insert(v.digest, out);
    }
    let root = e
        .vertices
        .get(&def.root)
        .cloned()
        .ok_or(EmitError::InputOrder {
            vertex: def.root,
            input: def.root,
        })?;
    let mut defs: Vec<Vec<u8>> = e.ops.into_iter().map(|(_, b)| b).collect();
    let mut metadata = e.metadata;
    if let Some(r) = &root {
        // The terminal: an op with only an input, naming the result.
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: r.clone(),
                index: 0,
            }],
            ..Default::default()
        };
        let bytes = marshal_op(&terminal);
        metadata.insert(
            op_digest(&bytes),
            pb::OpMetadata {
                caps: caps(&["constraints", "platform"]),
                ..Default::default()
            },
        );
        defs.push(bytes);
    }
    let source = opts.source.as_ref().map(|s| pb::Source {
        locations: e.locations,
        infos: vec![pb::SourceInfo {
            filename: s.name.clone(),
            data: s.text.clone().into_bytes(),
            definition: None,
            language: "Kilnfile".into(),
        }],
    });
    Ok(Llb {
        definition: pb::Definition {
            def: defs,
            metadata,
            source,
        },
        root,
        vertices: e.vertices,
    })
}

struct Emitter<'a> {
    opts: &'a Options,
    by_digest: HashMap<Digest, &'a Vertex>,
    ops: Vec<(String, Vec<u8>)>,
    metadata: BTreeMap<String, pb::OpMetadata>,
    locations: BTreeMap<String, pb::Locations>,
    vertices: HashMap<Digest, Option<String>>,
    static_base: Option<String>,
    /// The platform of every op emitted so far.
    platforms: HashMap<String, pb::Platform>,
}

/// An op's input list: equal inputs share one index.
#[derive(Default)]
struct Inputs(Vec<pb::Input>);

impl Inputs {
    /// The index of `d`, -1 for scratch.
    fn add(&mut self, d: &Option<String>) -> i64 {
        let Some(d) = d else { return -1 };
        if let Some(i) = self.0.iter().position(|x| x.digest == *d) {
            return i as i64;
        }
        self.0.push(pb::Input {
            digest: d.clone(),
            index: 0,
        });
        (self.0.len() - 1) as i64
    }
}

fn caps(list: &[&str]) -> BTreeMap<String, bool> {
    list.iter().map(|c| (c.to_string(), true)).collect()
}

fn pb_platform(p: &Platform) -> pb::Platform {
    pb::Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: p.variant.clone().unwrap_or_default(),
        ..Default::default()
    }
}

impl Emitter<'_> {
    fn input(&self, v: &Vertex, index: usize) -> Result<Option<String>, EmitError> {
        let d = v.inputs.get(index).ok_or(EmitError::InputIndex {
            vertex: v.digest,
            index,
            len: v.inputs.len(),
        })?;
        self.vertices.get(d).cloned().ok_or(EmitError::InputOrder {
            vertex: v.digest,
            input: *d,
        })
    }

    fn op(&self, inputs: Inputs, kind: pb::op::Op, platform: Option<&Platform>) -> pb::Op {
        self.op_on(
            inputs,
            kind,
            pb_platform(platform.unwrap_or(&self.opts.platform)),
        )
    }

    /// An op that builds on `base`: it runs on `base`'s platform (a step on
    /// an `arm64` image is an `arm64` step), the build's for scratch.
    fn op_inheriting(&self, inputs: Inputs, kind: pb::op::Op, base: &Option<String>) -> pb::Op {
        let platform = base
            .as_ref()
            .and_then(|d| self.platforms.get(d))
            .cloned()
            .unwrap_or_else(|| pb_platform(&self.opts.platform));
        self.op_on(inputs, kind, platform)
    }

    fn op_on(&self, inputs: Inputs, kind: pb::op::Op, platform: pb::Platform) -> pb::Op {
        pb::Op {
            inputs: inputs.0,
            op: Some(kind),
            platform: Some(platform),
            constraints: Some(pb::WorkerConstraints::default()),
        }
    }

    /// Marshals `op`, records its metadata and returns its digest.
    fn push(&mut self, op: pb::Op, name: String, meta: &Meta, cap_list: &[&str]) -> String {
        let bytes = marshal_op(&op);
        let digest = op_digest(&bytes);
        if !self.platforms.contains_key(&digest) {
            self.ops.push((digest.clone(), bytes));
            self.platforms
                .insert(digest.clone(), op.platform.clone().unwrap_or_default());
            let mut c = caps(cap_list);
            c.insert("constraints".into(), true);
            c.insert("platform".into(), true);
            c.insert("meta.description".into(), true);
            self.metadata.insert(
                digest.clone(),
                pb::OpMetadata {
                    description: [("llb.customname".to_string(), name)].into(),
                    caps: c,
                    ..Default::default()
                },
            );
        }
        if let (Some(loc), Some(_)) = (&meta.location, &self.opts.source) {
            let pos = pb::Position {
                line: loc.line as i32,
                character: loc.column.saturating_sub(1) as i32,
            };
            self.locations
                .entry(digest.clone())
                .or_default()
                .locations
                .push(pb::Location {
                    source_index: 0,
                    ranges: vec![pb::Range {
                        start: Some(pos),
                        end: Some(pos),
                    }],
                });
        }
        digest
    }

    fn vertex(&mut self, v: &Vertex) -> Result<Option<String>, EmitError> {
        let at = v
            .meta
            .location
            .as_ref()
            .map(|l| format!(" (at {l})"))
            .unwrap_or_default();
        match &v.op {
            Op::Source(s) => match s {
                SourceOp::Scratch => Ok(None),
                SourceOp::StaticBase { .. } => Ok(Some(self.static_base(&v.meta))),
                SourceOp::Image {
                    reference,
                    platform,
                } => {
                    let op = self.op(
                        Inputs::default(),
                        pb::op::Op::Source(pb::SourceOp {
                            identifier: format!("docker-image://{reference}"),
                            attrs: BTreeMap::new(),
                        }),
                        platform.as_ref(),
                    );
                    let name = v
                        .meta
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("image {reference}"));
                    Ok(Some(self.push(op, name, &v.meta, &["source.image"])))
                }
                SourceOp::Context {
                    name,
                    include,
                    exclude,
                } => {
                    let mut attrs = BTreeMap::new();
                    let mut cap_list = vec!["source.local", "source.local.sharedkeyhint"];
                    if !include.is_empty() {
                        attrs.insert(
                            "local.includepattern".to_string(),
                            serde_json::to_string(include).expect("strings serialize"),
                        );
                        cap_list.push("source.local.includepatterns");
                    }
                    if !exclude.is_empty() {
                        attrs.insert(
                            "local.excludepatterns".to_string(),
                            serde_json::to_string(exclude).expect("strings serialize"),
                        );
                        cap_list.push("source.local.excludepatterns");
                    }
                    if let Some(s) = &self.opts.session_id {
                        attrs.insert("local.session".to_string(), s.clone());
                        cap_list.push("source.local.sessionid");
                    }
                    attrs.insert("local.sharedkeyhint".to_string(), name.clone());
                    let op = self.op(
                        Inputs::default(),
                        pb::op::Op::Source(pb::SourceOp {
                            identifier: format!("local://{name}"),
                            attrs,
                        }),
                        None,
                    );
                    let label = v.meta.name.clone().unwrap_or_else(|| name.clone());
                    Ok(Some(self.push(op, label, &v.meta, &cap_list)))
                }
                SourceOp::OciLayout { path, .. } => Err(EmitError::UnsupportedSource {
                    what: "the OCI layout",
                    path: path.clone(),
                    at,
                }),
                SourceOp::OciArchive { path } => Err(EmitError::UnsupportedSource {
                    what: "the OCI archive",
                    path: path.clone(),
                    at,
                }),
                SourceOp::DebianPackages(d) => Err(EmitError::PackageSet {
                    suite: d.suite.clone(),
                    at,
                }),
            },
            Op::Exec(x) => self.exec(v, x).map(Some),
            Op::File(f) => self.file(v, f),
            Op::Merge(_) => self.merge(v),
        }
    }

    /// The config a step inherits from the source its stage started from.
    fn base_config(&self, v: &Vertex, config_from: Option<usize>) -> BaseConfig {
        let Some(d) = config_from.and_then(|i| v.inputs.get(i)) else {
            return BaseConfig::default();
        };
        if let Some(c) = self.opts.base_configs.get(d) {
            return c.clone();
        }
        match self.by_digest.get(d).map(|v| &v.op) {
            Some(Op::Source(SourceOp::StaticBase { .. })) => BaseConfig::static_base(),
            _ => BaseConfig::default(),
        }
    }

    fn exec(&mut self, v: &Vertex, x: &ExecOp) -> Result<String, EmitError> {
        let base = self.base_config(v, x.config_from);
        let mut inputs = Inputs::default();
        let root = self.input(v, 0)?;
        let mut mounts = vec![pb::Mount {
            input: inputs.add(&root),
            dest: "/".into(),
            output: 0,
            ..Default::default()
        }];
        let mut secrets = Vec::new();
        let mut ssh = Vec::new();
        let mut secretenv = Vec::new();
        let mut cap_list = vec!["exec.meta.base", "exec.mount.bind"];
        for m in &x.mounts {
            let dest = m.target.clone();
            match &m.kind {
                MountKind::Bind {
                    input,
                    selector,
                    readonly,
                } => {
                    let d = self.input(v, *input)?;
                    let selector = if selector == "/" {
                        String::new()
                    } else {
                        selector.clone()
                    };
                    if !selector.is_empty() {
                        cap_list.push("exec.mount.selector");
                    }
                    // kiln discards writes to a bind mount: no output.
                    if !readonly {
                        cap_list.push("exec.mount.bind.readwrite-nooutput");
                    }
                    mounts.push(pb::Mount {
                        input: inputs.add(&d),
                        selector,
                        dest,
                        output: -1,
                        readonly: *readonly,
                        ..Default::default()
                    });
                }
                MountKind::Cache { id, sharing } => {
                    cap_list.extend(["exec.mount.cache", "exec.mount.cache.sharing"]);
                    mounts.push(pb::Mount {
                        input: -1,
                        output: -1,
                        mount_type: pb::MountType::Cache as i32,
                        cache_opt: Some(pb::CacheOpt {
                            id: if id.is_empty() {
                                dest.clone()
                            } else {
                                id.clone()
                            },
                            sharing: match sharing {
                                CacheSharing::Shared => pb::CacheSharingOpt::Shared,
                                CacheSharing::Private => pb::CacheSharingOpt::Private,
                                CacheSharing::Locked => pb::CacheSharingOpt::Locked,
                            } as i32,
                        }),
                        dest,
                        ..Default::default()
                    });
                }
                MountKind::Tmpfs { size } => {
                    cap_list.push("exec.mount.tmpfs");
                    if size.is_some() {
                        cap_list.push("exec.mount.tmpfs.size");
                    }
                    mounts.push(pb::Mount {
                        input: -1,
                        output: -1,
                        dest,
                        mount_type: pb::MountType::Tmpfs as i32,
                        tmpfs_opt: Some(pb::TmpfsOpt {
                            size: size.map_or(0, |s| s.min(i64::MAX as u64) as i64),
                        }),
                        ..Default::default()
                    });
                }
                MountKind::Secret {
                    id,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    cap_list.push("exec.mount.secret");
                    secrets.push(pb::Mount {
                        input: -1,
                        output: -1,
                        dest,
                        mount_type: pb::MountType::Secret as i32,
                        secret_opt: Some(pb::SecretOpt {
                            id: id.clone(),
                            uid: *uid,
                            gid: *gid,
                            mode: *mode,
                            optional: !required,
                        }),
                        ..Default::default()
                    });
                }
                MountKind::Ssh {
                    id,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    cap_list.push("exec.mount.ssh");
                    ssh.push(pb::Mount {
                        input: -1,
                        output: -1,
                        dest,
                        mount_type: pb::MountType::Ssh as i32,
                        ssh_opt: Some(pb::SshOpt {
                            id: id.clone(),
                            uid: *uid,
                            gid: *gid,
                            mode: *mode,
                            optional: !required,
                        }),
                        ..Default::default()
                    });
                }
                MountKind::SecretEnv { id, required } => {
                    cap_list.push("exec.secretenv");
                    secretenv.push(pb::SecretEnv {
                        id: id.clone(),
                        name: dest,
                        optional: !required,
                    });
                }
            }
        }
        // BuildKit's llb client sorts mounts by destination ("/" first) and
        // appends secrets, then ssh sockets, after them.
        mounts[1..].sort_by(|a, b| a.dest.cmp(&b.dest));
        mounts.extend(secrets);
        mounts.extend(ssh);

        let mut env = base.env();
        for (k, val) in &x.env {
            set_env(&mut env, k, val);
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={}", kiln_dag::DEFAULT_PATH));
        }
        let network = match x.network {
            // kiln's default network is BuildKit's default (the worker's
            // sandbox); BuildKit's HOST mode needs the network.host
            // entitlement.
            // `isolated` too, with no outbound-only mode in BuildKit: UNSET
            // is the worker's own network, a namespace behind CNI or
            // rootlesskit's slirp4netns where the daemon is set up so
            Network::Host | Network::Isolated => pb::NetMode::Unset,
            Network::None => {
                cap_list.push("exec.meta.network");
                pb::NetMode::None
            }
        };
        // BuildKit has no pids cgroup setting per step; its `nproc` ulimit is
        // the same bound as kiln's fallback (RLIMIT_NPROC in the step's user
        // namespace).
        // `--ulimit` values first, in their order, as BuildKit's llb keeps
        // them.
        let mut ulimit: Vec<pb::Ulimit> = x
            .ulimits
            .iter()
            .map(|u| pb::Ulimit {
                name: u.name.clone(),
                soft: u.soft,
                hard: u.hard,
            })
            .collect();
        if let Some(n) = x.pids_limit
            && !ulimit.iter().any(|u| u.name == "nproc")
        {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            ulimit.push(pb::Ulimit {
                name: "nproc".into(),
                soft: n,
                hard: n,
            });
        }
        if !ulimit.is_empty() {
            cap_list.push("exec.meta.ulimit");
        }
        // BuildKit has no capability for extra hosts (they came with
        // `exec.meta.base`)
        let extra_hosts = x
            .extra_hosts
            .iter()
            .map(|h| pb::HostIp {
                host: h.host.clone(),
                ip: h.ip.clone(),
            })
            .collect();
        let exec = pb::ExecOp {
            meta: Some(pb::Meta {
                args: x.args.clone(),
                env,
                cwd: x
                    .cwd
                    .clone()
                    .or_else(|| base.workdir())
                    .unwrap_or_else(|| "/".into()),
                user: x.user.clone().or_else(|| base.user()).unwrap_or_default(),
                ulimit,
                extra_hosts,
                ..Default::default()
            }),
            mounts,
            network: network as i32,
            security: pb::SecurityMode::Sandbox as i32,
            secretenv,
            ..Default::default()
        };
        let op = self.op_inheriting(inputs, pb::op::Op::Exec(exec), &root);
        let name = v
            .meta
            .name
            .clone()
            .unwrap_or_else(|| format!("run {}", x.args.join(" ")));
        Ok(self.push(op, name, &v.meta, &cap_list))
    }

    fn file(&mut self, v: &Vertex, f: &FileOp) -> Result<Option<String>, EmitError> {
        if f.actions.is_empty() {
            return self.input(v, 0);
        }
        let mut inputs = Inputs::default();
        let base = self.input(v, 0)?;
        let base_idx = inputs.add(&base);
        // Every input first: relative action indexes start after them.
        let mut froms = Vec::with_capacity(f.actions.len());
        for a in &f.actions {
            froms.push(match a {
                FileAction::Copy(c) => {
                    let d = self.input(v, c.from)?;
                    inputs.add(&d)
                }
                _ => -1,
            });
        }
        let n_inputs = inputs.0.len() as i64;
        let mut cap_list = vec!["file.base"];
        let last = f.actions.len() - 1;
        let mut actions = Vec::with_capacity(f.actions.len());
        for (i, (a, from)) in f.actions.iter().zip(froms).enumerate() {
            let action = match a {
                FileAction::Copy(c) => {
                    if !c.include.is_empty() || !c.exclude.is_empty() {
                        cap_list.push("file.copy.includeexcludepatterns");
                    }
                    pb::file_action::Action::Copy(pb::FileActionCopy {
                        attempt_unpack_docker_compatibility: c.unpack,
                        // BuildKit applies it per entry, as kiln's worker
                        mode_str: c.chmod_symbolic.clone().unwrap_or_default(),
                        ..copy_action(
                            &c.src,
                            &c.dest,
                            c.chown.as_ref().map(|o| chown_opt(o, base_idx)),
                            c.chmod.map(|m| m as i32),
                            &c.include,
                            &c.exclude,
                        )
                    })
                }
                FileAction::Mkdir {
                    path,
                    mode,
                    parents,
                    chown,
                } => pb::file_action::Action::Mkdir(pb::FileActionMkDir {
                    path: path.clone(),
                    mode: *mode as i32,
                    make_parents: *parents,
                    owner: chown.as_ref().map(|c| chown_opt(c, base_idx)),
                    timestamp: -1,
                }),
                FileAction::Mkfile {
                    path,
                    mode,
                    data,
                    chown,
                } => pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                    path: path.clone(),
                    mode: *mode as i32,
                    data: data.clone(),
                    owner: chown.as_ref().map(|c| chown_opt(c, base_idx)),
                    timestamp: -1,
                }),
                FileAction::Symlink { target, link } => {
                    cap_list.push("file.symlink.create");
                    pb::file_action::Action::Symlink(pb::FileActionSymlink {
                        oldpath: target.clone(),
                        newpath: link.clone(),
                        owner: None,
                        timestamp: -1,
                    })
                }
                FileAction::Rm {
                    path,
                    allow_not_found,
                } => pb::file_action::Action::Rm(pb::FileActionRm {
                    path: path.clone(),
                    allow_not_found: *allow_not_found,
                    allow_wildcard: false,
                }),
            };
            actions.push(pb::FileAction {
                input: if i == 0 {
                    base_idx
                } else {
                    n_inputs + i as i64 - 1
                },
                secondary_input: from,
                output: if i == last { 0 } else { -1 },
                action: Some(action),
            });
        }
        let op = self.op_inheriting(inputs, pb::op::Op::File(pb::FileOp { actions }), &base);
        let name = v.meta.name.clone().unwrap_or_else(|| file_name(f));
        Ok(Some(self.push(op, name, &v.meta, &cap_list)))
    }

    fn merge(&mut self, v: &Vertex) -> Result<Option<String>, EmitError> {
        let mut parts = Vec::new();
        for i in 0..v.inputs.len() {
            // Scratch adds nothing to a merge (as in BuildKit's llb.Merge).
            if let Some(d) = self.input(v, i)? {
                parts.push(Some(d));
            }
        }
        match parts.len() {
            0 => Ok(None),
            1 => Ok(parts.pop().flatten()),
            _ => {
                let mut inputs = Inputs::default();
                let merge = pb::MergeOp {
                    inputs: parts
                        .iter()
                        .map(|d| pb::MergeInput {
                            input: inputs.add(d),
                        })
                        .collect(),
                };
                let op = self.op_inheriting(inputs, pb::op::Op::Merge(merge), &parts[0]);
                let name = v.meta.name.clone().unwrap_or_else(|| "merge".into());
                Ok(Some(self.push(op, name, &v.meta, &["mergeop"])))
            }
        }
    }

    /// kiln's static base as one file op on scratch, made from the same
    /// entry list `kiln-oci` builds its layer from.
    fn static_base(&mut self, meta: &Meta) -> String {
        if let Some(d) = &self.static_base {
            return d.clone();
        }
        let (op, cap_list) = static_base_op(&self.opts.platform);
        let name = meta
            .name
            .clone()
            .unwrap_or_else(|| "static_base (kiln built-in)".into());
        let d = self.push(op, name, meta, &cap_list);
        self.static_base = Some(d.clone());
        d
    }
}

fn copy_action(
    src: &str,
    dest: &str,
    owner: Option<pb::ChownOpt>,
    mode: Option<i32>,
    include: &[String],
    exclude: &[String],
) -> pb::FileActionCopy {
    pb::FileActionCopy {
        src: src.to_string(),
        dest: dest.to_string(),
        owner,
        mode: mode.unwrap_or(-1),
        // Dockerfile COPY semantics, which kiln's copy shares: a directory's
        // contents are copied, missing destination parents are created.
        follow_symlink: true,
        dir_copy_contents: true,
        create_dest_path: true,
        // kiln paths are literal.
        allow_wildcard: false,
        allow_empty_wildcard: false,
        timestamp: -1,
        include_patterns: include.to_vec(),
        exclude_patterns: exclude.to_vec(),
        ..Default::default()
    }
}

fn user_opt(s: &str, base: i64) -> pb::UserOpt {
    pb::UserOpt {
        user: Some(match s.parse::<u32>() {
            Ok(id) => pb::user_opt::User::ById(id),
            Err(_) => pb::user_opt::User::ByName(pb::NamedUserOpt {
                name: s.to_string(),
                input: base,
            }),
        }),
    }
}

fn chown_opt(c: &Chown, base: i64) -> pb::ChownOpt {
    pb::ChownOpt {
        user: Some(user_opt(&c.user, base)),
        group: c.group.as_deref().map(|g| user_opt(g, base)),
    }
}

fn id_owner(uid: u32, gid: u32) -> Option<pb::ChownOpt> {
    (uid != 0 || gid != 0).then_some(pb::ChownOpt {
        user: Some(pb::UserOpt {
            user: Some(pb::user_opt::User::ById(uid)),
        }),
        group: Some(pb::UserOpt {
            user: Some(pb::user_opt::User::ById(gid)),
        }),
    })
}

/// The static base's file op and the capabilities it needs. Hard links
/// become files of their own (same bytes): a copy from an earlier action
/// would make BuildKit commit a snapshot per link.
fn static_base_op(platform: &Platform) -> (pb::Op, Vec<&'static str>) {
    let entries = static_base::entries();
    let data_of: HashMap<&str, &[u8]> = entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .map(|e| (e.path.as_str(), e.data.as_slice()))
        .collect();
    let mut actions = Vec::with_capacity(entries.len());
    let last = entries.len().saturating_sub(1);
    let mut symlinks = false;
    for (i, e) in entries.iter().enumerate() {
        let path = format!("/{}", e.path);
        let mode = (e.mode & 0o7777) as i32;
        let action = match &e.kind {
            Kind::Dir => pb::file_action::Action::Mkdir(pb::FileActionMkDir {
                path,
                mode,
                make_parents: false,
                owner: id_owner(e.uid, e.gid),
                timestamp: -1,
            }),
            Kind::File => pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                path,
                mode,
                data: e.data.clone(),
                owner: id_owner(e.uid, e.gid),
                timestamp: -1,
            }),
            Kind::Hardlink { target } => pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                path,
                mode,
                data: data_of
                    .get(target.as_str())
                    .map(|d| d.to_vec())
                    .unwrap_or_default(),
                owner: id_owner(e.uid, e.gid),
                timestamp: -1,
            }),
            Kind::Symlink { target } => {
                symlinks = true;
                pb::file_action::Action::Symlink(pb::FileActionSymlink {
                    oldpath: target.clone(),
                    newpath: path,
                    owner: id_owner(e.uid, e.gid),
                    timestamp: -1,
                })
            }
        };
        actions.push(pb::FileAction {
            input: if i == 0 { -1 } else { i as i64 - 1 },
            secondary_input: -1,
            output: if i == last { 0 } else { -1 },
            action: Some(action),
        });
    }
    let op = pb::Op {
        inputs: Vec::new(),
        op: Some(pb::op::Op::File(pb::FileOp { actions })),
        platform: Some(pb_platform(platform)),
        constraints: Some(pb::WorkerConstraints::default()),
    };
    let mut cap_list = vec!["file.base"];
    if symlinks {
        cap_list.push("file.symlink.create");
    }
    (op, cap_list)
}

fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let kv = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
    {
        Some(slot) => *slot = kv,
        None => env.push(kv),
    }
}

fn file_name(f: &FileOp) -> String {
    let parts: Vec<String> = f
        .actions
        .iter()
        .map(|a| match a {
            FileAction::Copy(c) => format!("copy {} {}", c.src, c.dest),
            FileAction::Mkdir { path, .. } => format!("mkdir {path}"),
            FileAction::Mkfile { path, .. } => format!("mkfile {path}"),
            FileAction::Symlink { target, link } => format!("symlink {link} -> {target}"),
            FileAction::Rm { path, .. } => format!("rm {path}"),
        })
        .collect();
    parts.join("; ")
}
