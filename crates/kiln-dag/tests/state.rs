//! The digest contract of the DAG, through the public `State` API.

use kiln_dag::{
    CacheSharing, Chown, CopyOptions, Exec, ExecMount, Location, Meta, Network, Op, State,
};
use proptest::prelude::*;

fn go_hello() -> State {
    let ctx = State::context("context", vec!["main.go".into()], vec![]);
    let build = State::image("docker.io/library/debian:bookworm", None)
        .run(Exec::shell(
            "apt-get update && apt-get install -y golang-go",
        ))
        .workdir("/src")
        .copy(&ctx, "main.go", "main.go", CopyOptions::default())
        .env("CGO_ENABLED", "0")
        .run(
            Exec::shell("go build -o /hello main.go").mount(ExecMount::Cache {
                target: "/root/.cache/go-build".into(),
                id: "go".into(),
                sharing: CacheSharing::Locked,
            }),
        );
    State::static_base()
        .copy(
            &build,
            "/hello",
            "/usr/local/bin/hello",
            CopyOptions::default(),
        )
        .entrypoint(vec!["/usr/local/bin/hello".into()])
}

#[test]
fn go_hello_definition_is_stable() {
    // The snapshot pins the canonical encoding: a change here changes every
    // cache key kiln has ever written, so it must be deliberate.
    insta::assert_snapshot!(go_hello().definition().to_text());
    insta::assert_snapshot!("go_hello_json", go_hello().definition().to_json());
    insta::assert_snapshot!("go_hello_dot", go_hello().definition().to_dot());
}

#[test]
fn same_build_same_digest() {
    assert_eq!(go_hello().definition(), go_hello().definition());
    assert_eq!(
        go_hello().definition().digest(),
        go_hello().definition().digest()
    );
}

#[test]
fn meta_never_changes_digests() {
    let plain = State::scratch().mkdir("/a", 0o755, true, None);
    let named = plain.with_meta(Meta {
        name: Some("app: mkdir /a".into()),
        location: Some(Location {
            file: "Kilnfile".into(),
            line: 3,
            column: 5,
        }),
    });
    assert_eq!(plain.digest(), named.digest());
    assert_eq!(plain.definition().digest(), named.definition().digest());
    let def = named.definition();
    assert_eq!(
        def.vertex(&def.root).unwrap().meta.name.as_deref(),
        Some("app: mkdir /a")
    );
}

#[test]
fn topological_order_and_dedup() {
    let base = State::image("docker.io/library/alpine:3", None);
    let a = base.run(Exec::shell("echo a"));
    let b = base.run(Exec::shell("echo b"));
    let out = State::scratch()
        .copy(&a, "/x", "/a", CopyOptions::default())
        .copy(&b, "/x", "/b", CopyOptions::default())
        .copy(&a, "/y", "/c", CopyOptions::default());
    let def = out.definition();
    let mut seen = std::collections::HashSet::new();
    for v in &def.vertices {
        for i in &v.inputs {
            assert!(
                seen.contains(i),
                "input {i} of {} listed after it",
                v.digest
            );
        }
        assert!(seen.insert(v.digest), "vertex {} listed twice", v.digest);
    }
    // image, 2 execs, scratch, 3 copies
    assert_eq!(def.vertices.len(), 7);
    assert_eq!(def.vertices.last().unwrap().digest, def.root);
}

#[test]
fn exec_inherits_config_and_records_its_base() {
    let s = State::image("docker.io/library/debian:bookworm", None)
        .env("A", "1")
        .user("nobody")
        .workdir("/w")
        .workdir("sub")
        .env("A", "2")
        .run(Exec::argv(["make"]).network(Network::None));
    let Op::Exec(x) = s.op() else {
        panic!("not exec")
    };
    assert_eq!(x.env, vec![("A".to_string(), "2".to_string())]);
    assert_eq!(x.cwd.as_deref(), Some("/w/sub"));
    assert_eq!(x.user.as_deref(), Some("nobody"));
    assert_eq!(x.args, vec!["make"]);
    assert_eq!(
        x.config_from,
        Some(0),
        "image is both root and config source"
    );
}

#[test]
fn entrypoint_resets_inherited_cmd_only() {
    let a = State::scratch().entrypoint(vec!["/app".into()]);
    assert_eq!(a.config().cmd, Some(vec![]));
    let b = State::scratch()
        .cmd(vec!["--help".into()])
        .entrypoint(vec!["/app".into()]);
    assert_eq!(b.config().cmd, Some(vec!["--help".to_string()]));
}

#[test]
fn paths_resolve_against_workdir() {
    assert_eq!(kiln_dag::resolve_path("/src", "main.go"), "/src/main.go");
    assert_eq!(kiln_dag::resolve_path("/src", "../../etc/x"), "/etc/x");
    assert_eq!(kiln_dag::resolve_path("/", "a/./b/"), "/a/b/");
    assert_eq!(kiln_dag::resolve_path("/src", "/abs"), "/abs");
}

/// One change of meaning applied to the go-hello-like build.
#[derive(Debug, Clone)]
enum Change {
    Command(String),
    EnvValue(String),
    CopyDest(String),
    Chmod(u32),
    Chown(String),
    Sharing(u8),
    Network(u8),
    Image(String),
    ContextInclude(String),
    Entrypoint(String),
    Label(String),
}

fn build(change: Option<&Change>) -> State {
    let c = change;
    let include = match c {
        Some(Change::ContextInclude(s)) => s.clone(),
        _ => "main.go".into(),
    };
    let ctx = State::context("context", vec![include], vec![]);
    let image = match c {
        Some(Change::Image(s)) => s.clone(),
        _ => "docker.io/library/debian:bookworm".into(),
    };
    let cmd = match c {
        Some(Change::Command(s)) => s.clone(),
        _ => "go build -o /hello main.go".into(),
    };
    let env = match c {
        Some(Change::EnvValue(s)) => s.clone(),
        _ => "0".into(),
    };
    let sharing = match c {
        Some(Change::Sharing(1)) => CacheSharing::Private,
        Some(Change::Sharing(_)) => CacheSharing::Locked,
        _ => CacheSharing::Shared,
    };
    let network = match c {
        Some(Change::Network(1)) => Network::None,
        Some(Change::Network(_)) => Network::Isolated,
        _ => Network::Host,
    };
    let build = State::image(image, None)
        .copy(&ctx, "main.go", "/src/main.go", CopyOptions::default())
        .env("CGO_ENABLED", env)
        .run(
            Exec::shell(cmd)
                .mount(ExecMount::Cache {
                    target: "/root/.cache".into(),
                    id: "c".into(),
                    sharing,
                })
                .network(network),
        );
    let dest = match c {
        Some(Change::CopyDest(s)) => s.clone(),
        _ => "/usr/local/bin/hello".into(),
    };
    let opts = CopyOptions {
        chmod: match c {
            Some(Change::Chmod(m)) => Some(*m),
            _ => Some(0o755),
        },
        chown: Some(Chown {
            user: match c {
                Some(Change::Chown(u)) => u.clone(),
                _ => "65532".into(),
            },
            group: None,
        }),
        ..CopyOptions::default()
    };
    let mut app = State::static_base()
        .copy(&build, "/hello", &dest, opts)
        .entrypoint(vec![match c {
            Some(Change::Entrypoint(e)) => e.clone(),
            _ => "/usr/local/bin/hello".into(),
        }]);
    if let Some(Change::Label(l)) = c {
        app = app.label("org.opencontainers.image.title", l.clone());
    }
    app
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        "[a-z ]{1,20}"
            .prop_filter("differs", |s| s != "go build -o /hello main.go")
            .prop_map(Change::Command),
        "[0-9a-z]{0,5}"
            .prop_filter("differs", |s| s != "0")
            .prop_map(Change::EnvValue),
        "/[a-z]{1,10}".prop_map(Change::CopyDest),
        (0u32..0o7777)
            .prop_filter("differs", |m| *m != 0o755)
            .prop_map(Change::Chmod),
        "[0-9]{1,5}"
            .prop_filter("differs", |s| s != "65532")
            .prop_map(Change::Chown),
        (1u8..3).prop_map(Change::Sharing),
        (1u8..3).prop_map(Change::Network),
        "[a-z]{1,8}:[0-9]".prop_map(Change::Image),
        "[a-z]{1,8}\\.go"
            .prop_filter("differs", |s| s != "main.go")
            .prop_map(Change::ContextInclude),
        "/[a-z]{1,10}".prop_map(Change::Entrypoint),
        "[a-z]{0,10}".prop_map(Change::Label),
    ]
}

proptest! {
    #[test]
    fn any_change_of_meaning_changes_the_image_digest(c in change()) {
        let reference = build(None).definition();
        let changed = build(Some(&c)).definition();
        prop_assert_ne!(reference.digest(), changed.digest(), "change {:?} kept the digest", c);
    }

    #[test]
    fn filesystem_changes_change_the_root(c in change()) {
        prop_assume!(!matches!(c, Change::Entrypoint(_) | Change::Label(_)));
        prop_assert_ne!(build(None).digest(), build(Some(&c)).digest());
    }
}

#[test]
fn each_network_mode_has_its_own_digest_and_name() {
    let base = State::image("docker.io/library/debian:bookworm", None);
    let [host, none, isolated] = [Network::Host, Network::None, Network::Isolated]
        .map(|n| base.run(Exec::shell("make").network(n)).definition());
    assert_ne!(host.root, none.root);
    assert_ne!(host.root, isolated.root);
    assert_ne!(none.root, isolated.root);
    assert!(isolated.to_json().contains("\"network\": \"isolated\""));
    assert!(
        isolated.to_text().contains("network=isolated"),
        "{}",
        isolated.to_text()
    );
    assert!(none.to_text().contains("network=none"));
    assert!(!host.to_text().contains("network="));
}

#[test]
fn pids_limit_is_digested_only_when_set() {
    let base = State::image("docker.io/library/debian:bookworm", None);
    let plain = base.run(Exec::shell("make"));
    let limited = base.run(Exec::shell("make").pids_limit(100));
    let other = base.run(Exec::shell("make").pids_limit(200));
    assert_ne!(plain.digest(), limited.digest());
    assert_ne!(limited.digest(), other.digest());
    let Op::Exec(x) = limited.op() else {
        panic!("not exec")
    };
    assert_eq!(x.pids_limit, Some(100));
    // Unset, it is absent from the JSON form (and, as the go-hello snapshot
    // shows, from the encoding).
    assert!(!plain.definition().to_json().contains("pids_limit"));
    assert!(
        limited
            .definition()
            .to_json()
            .contains("\"pids_limit\": 100")
    );
}

#[test]
fn config_chains_keep_set_order_and_last_value() {
    let s = State::scratch()
        .env("A", "1")
        .env("B", "2")
        .label("z", "1")
        .label("a", "1")
        .expose("80")
        .env("A", "3")
        .label("z", "2")
        .expose("80");
    let c = s.config();
    assert_eq!(
        c.env,
        vec![("A".into(), "3".into()), ("B".into(), "2".into())]
    );
    assert_eq!(
        c.labels.iter().collect::<Vec<_>>(),
        [
            (&"a".to_string(), &"1".to_string()),
            (&"z".into(), &"2".into())
        ]
    );
    assert_eq!(c.exposed_ports.len(), 1);
    // A run in between remembers the environment at that point; later sets
    // still replace in place.
    let mid = State::scratch().env("A", "1").env("B", "2");
    let ran = mid.run(Exec::shell("x")).env("A", "9").env("C", "3");
    let Op::Exec(x) = ran.run(Exec::shell("y")).op().clone() else {
        panic!("not exec")
    };
    assert_eq!(
        x.env,
        vec![
            ("A".into(), "9".into()),
            ("B".into(), "2".into()),
            ("C".into(), "3".into())
        ]
    );
    // The earlier state is unchanged.
    assert_eq!(mid.config().env.len(), 2);
    assert_eq!(mid.config().env[0].1, "1");
}

#[test]
fn long_config_chains_are_linear_and_drop_without_overflow() {
    // Every state of the chain kept alive, as a Kilnfile binding each does:
    // with a copied config per state this held 65,535²/2 entries.
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let mut kept = vec![State::scratch()];
            for i in 0..65_535 {
                let last = kept.last().unwrap();
                let next = if i % 2 == 0 {
                    last.env(format!("K{i}"), "v")
                } else {
                    last.label(format!("l{i}"), "v")
                };
                kept.push(next);
            }
            let c = kept.last().unwrap().config();
            assert_eq!(c.env.len(), 32_768);
            assert_eq!(c.labels.len(), 32_767);
            drop(kept);
        })
        .unwrap()
        .join()
        .unwrap();
}
