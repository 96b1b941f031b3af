//! Every op, mount and file action kiln has, as LLB: a snapshot of the
//! decoded definition and the wire details BuildKit depends on.

mod common;

use kiln_llb::pb::{self, file_action::Action, op::Op as Kind, user_opt::User};
use kiln_llb::{EmitError, Graph, Options, decode, emit, encode, to_text};

fn graph() -> (kiln_dag::Definition, Graph, pb::Definition) {
    let def = common::feature_graph();
    let llb = emit(&def, &Options::new(common::amd64())).unwrap();
    let wire = decode(&encode(&llb.definition)).unwrap();
    (def, Graph::from_definition(&wire).unwrap(), wire)
}

#[test]
fn every_feature_emits_its_snapshot() {
    let (_, _, wire) = graph();
    insta::assert_snapshot!(to_text(&wire).unwrap());
}

#[test]
fn exec_mounts_and_sources_follow_ops_proto() {
    let (_, g, _) = graph();
    let image = g
        .ops
        .iter()
        .find(|o| matches!(&o.op.op, Some(Kind::Source(s)) if s.identifier.starts_with("docker-image://")))
        .unwrap();
    let Some(Kind::Source(s)) = &image.op.op else {
        unreachable!()
    };
    assert!(
        s.identifier
            .ends_with(&format!("@sha256:{}", "a".repeat(64))),
        "pinned digest kept"
    );
    assert_eq!(image.op.platform.as_ref().unwrap().architecture, "arm64");

    let exec = g.ops.iter().find_map(|o| match &o.op.op {
        Some(Kind::Exec(x)) => Some((o, x)),
        _ => None,
    });
    let (op, x) = exec.unwrap();
    // A step on an arm64 image runs on arm64.
    assert_eq!(op.op.platform.as_ref().unwrap().architecture, "arm64");
    let meta = x.meta.as_ref().unwrap();
    assert_eq!((meta.cwd.as_str(), meta.user.as_str()), ("/w", "builder"));
    assert!(meta.env.contains(&"A=1".to_string()));
    assert_eq!(x.network, pb::NetMode::None as i32);
    let by_dest = |d: &str| x.mounts.iter().find(|m| m.dest == d).unwrap();
    assert_eq!(x.mounts[0].dest, "/");
    let bind = by_dest("/src");
    assert!(bind.readonly);
    assert_eq!((bind.selector.as_str(), bind.output), ("/src", -1));
    let ctx = &op.op.inputs[bind.input as usize].digest;
    assert!(
        matches!(&g.op(ctx).unwrap().op.op, Some(Kind::Source(s)) if s.identifier == "local://context")
    );
    let tmpfs = by_dest("/tmp");
    assert_eq!(tmpfs.mount_type, pb::MountType::Tmpfs as i32);
    assert_eq!(tmpfs.tmpfs_opt.as_ref().unwrap().size, 1 << 20);
    let cache = by_dest("/root/.cache");
    let c = cache.cache_opt.as_ref().unwrap();
    assert_eq!(
        (c.id.as_str(), c.sharing),
        ("/root/.cache", pb::CacheSharingOpt::Private as i32)
    );
    let secret = by_dest("/run/secrets/npmrc");
    let so = secret.secret_opt.as_ref().unwrap();
    assert_eq!(
        (so.id.as_str(), so.mode, so.uid, so.gid, so.optional),
        ("npmrc", 0o440, 1000, 1000, false)
    );
    assert_eq!(
        x.mounts.last().unwrap().dest,
        "/run/secrets/npmrc",
        "secrets after mounts"
    );
    assert_eq!(x.secretenv.len(), 1);
    assert_eq!(
        (x.secretenv[0].name.as_str(), x.secretenv[0].optional),
        ("TOKEN", true)
    );
}

#[test]
fn file_actions_chain_and_merge_drops_scratch() {
    let (_, g, _) = graph();
    let (op, f) = g
        .ops
        .iter()
        .find_map(|o| match &o.op.op {
            Some(Kind::File(f))
                if f.actions.len() == 1
                    && matches!(&f.actions[0].action, Some(Action::Copy(_))) =>
            {
                Some((o, f))
            }
            _ => None,
        })
        .unwrap();
    let Some(Action::Copy(c)) = &f.actions[0].action else {
        unreachable!()
    };
    assert_eq!((c.mode, c.timestamp), (0o644, -1));
    assert_eq!(c.include_patterns, ["*.so"]);
    assert_eq!(c.exclude_patterns, ["test*"]);
    assert!(c.create_dest_path && c.dir_copy_contents && !c.allow_wildcard);
    assert_eq!(f.actions[0].secondary_input, 1);
    assert_eq!(op.op.inputs.len(), 2);

    // mkdir on scratch: input -1, owner by name.
    let mkdir = g
        .ops
        .iter()
        .find_map(|o| match &o.op.op {
            Some(Kind::File(f)) => f.actions.iter().find_map(|a| match &a.action {
                Some(Action::Mkdir(m)) if m.path == "/etc/app" => Some((a.input, m.clone())),
                _ => None,
            }),
            _ => None,
        })
        .unwrap();
    assert_eq!(mkdir.0, -1);
    assert!(mkdir.1.make_parents);
    assert!(matches!(
        mkdir.1.owner.as_ref().unwrap().user.as_ref().unwrap().user,
        Some(User::ByName(ref n)) if n.name == "app"
    ));

    let merge = g
        .ops
        .iter()
        .find_map(|o| match &o.op.op {
            Some(Kind::Merge(m)) => Some((o, m)),
            _ => None,
        })
        .unwrap();
    assert_eq!(merge.1.inputs.len(), 2, "scratch adds nothing to a merge");
    assert_eq!(g.root.as_deref(), Some(merge.0.digest.as_str()));
}

#[test]
fn local_oci_sources_are_a_clear_error() {
    let def = kiln_dag::State::oci_layout("/srv/layout", Some("v1".into()))
        .run(kiln_dag::Exec::shell("true"))
        .definition();
    let err = emit(&def, &Options::new(common::amd64())).unwrap_err();
    assert!(matches!(err, EmitError::UnsupportedSource { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("`/srv/layout`") && msg.contains("image(..)"),
        "{msg}"
    );
}

#[test]
fn a_process_limit_is_an_nproc_ulimit() {
    let base = kiln_dag::State::image("docker.io/library/debian:bookworm", None);
    let emit_exec = |exec: kiln_dag::Exec| {
        let def = base.run(exec).definition();
        let llb = emit(&def, &Options::new(common::amd64())).unwrap();
        let wire = decode(&encode(&llb.definition)).unwrap();
        let g = Graph::from_definition(&wire).unwrap();
        g.ops
            .iter()
            .find_map(|o| match &o.op.op {
                Some(Kind::Exec(x)) => Some((x.clone(), o.metadata.clone().unwrap())),
                _ => None,
            })
            .unwrap()
    };
    let (x, meta) = emit_exec(kiln_dag::Exec::shell("make").pids_limit(64));
    assert_eq!(
        x.meta.unwrap().ulimit,
        [pb::Ulimit {
            name: "nproc".into(),
            soft: 64,
            hard: 64
        }]
    );
    assert_eq!(meta.caps.get("exec.meta.ulimit"), Some(&true));
    // Without a limit nothing is added (and no cap is required).
    let (x, meta) = emit_exec(kiln_dag::Exec::shell("make"));
    assert!(x.meta.unwrap().ulimit.is_empty());
    assert!(!meta.caps.contains_key("exec.meta.ulimit"));
}

#[test]
fn the_isolated_network_is_buildkits_default_sandbox() {
    let base = kiln_dag::State::image("docker.io/library/debian:bookworm", None);
    let emit_exec = |n: kiln_dag::Network| {
        let def = base
            .run(kiln_dag::Exec::shell("make").network(n))
            .definition();
        let llb = emit(&def, &Options::new(common::amd64())).unwrap();
        let wire = decode(&encode(&llb.definition)).unwrap();
        let g = Graph::from_definition(&wire).unwrap();
        g.ops
            .iter()
            .find_map(|o| match &o.op.op {
                Some(Kind::Exec(x)) => Some((x.network, o.metadata.clone().unwrap())),
                _ => None,
            })
            .unwrap()
    };
    let (net, meta) = emit_exec(kiln_dag::Network::Isolated);
    assert_eq!(net, pb::NetMode::Unset as i32);
    // UNSET needs neither the network cap nor an entitlement
    assert!(!meta.caps.contains_key("exec.meta.network"));
    assert_eq!(
        emit_exec(kiln_dag::Network::None).0,
        pb::NetMode::None as i32
    );
}
