//! Shared helpers: the examples, compiled the way `kiln graph` does.

#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};

use kiln_dag::{Definition, Platform};

pub fn amd64() -> Platform {
    "linux/amd64".parse().expect("valid platform")
}

/// `(example name, Kilnfile text)` for every `examples/*/Kilnfile` that
/// BuildKit can build: the ones with a Debian package set (`debian(..)`,
/// unpacked by kiln's own worker, no LLB form yet) are
/// [`package_set_examples`].
pub fn examples() -> Vec<(String, String)> {
    let mut out = all_examples();
    out.retain(|(_, text)| !uses_package_sets(text));
    assert!(out.len() >= 5, "expected the examples, found {out:?}");
    out
}

/// The examples with a Debian package set.
pub fn package_set_examples() -> Vec<(String, String)> {
    let mut out = all_examples();
    out.retain(|(_, text)| uses_package_sets(text));
    out
}

fn uses_package_sets(text: &str) -> bool {
    text.contains(".packages(debian(")
}

fn all_examples() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Kilnfile").is_file())
        .map(|p: PathBuf| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(p.join("Kilnfile")).expect("readable Kilnfile");
            (name, text)
        })
        .collect();
    out.sort();
    out
}

/// The build platform is [`amd64`] on every host (the cross-compiling
/// examples' builders are pinned to `build_platform()`).
pub fn compile(name: &str, text: &str) -> Definition {
    let opts = kiln_frontend::Options {
        build_platform: Some(amd64()),
        ..kiln_frontend::Options::default()
    };
    match kiln_frontend::compile(name, text, &opts) {
        Ok(c) => c.definition,
        Err(d) => panic!("example {name} does not compile: {d:?}"),
    }
}

/// A graph with every kind of op, mount and file action kiln has, built
/// with the `State` API (the examples do not use them all).
pub fn feature_graph() -> Definition {
    use kiln_dag::{CacheSharing, Chown, CopyOptions, Exec, ExecMount, Network, State};
    let ctx = State::context("context", vec!["src".into()], vec!["src/*.tmp".into()]);
    let base = State::image(
        format!("docker.io/library/alpine:3.20@sha256:{}", "a".repeat(64)),
        Some("linux/arm64".parse().unwrap()),
    );
    let step = base.workdir("/w").user("builder").env("A", "1").run(
        Exec::shell("make")
            .mount(ExecMount::Bind {
                target: "/src".into(),
                from: ctx.clone(),
                selector: "/src".into(),
                readonly: true,
            })
            .mount(ExecMount::SecretEnv {
                name: "TOKEN".into(),
                id: "tok".into(),
                required: false,
            })
            .mount(ExecMount::Tmpfs {
                target: "/tmp".into(),
                size: Some(1 << 20),
            })
            .mount(ExecMount::Cache {
                target: "/root/.cache".into(),
                id: String::new(),
                sharing: CacheSharing::Private,
            })
            .mount(ExecMount::Secret {
                target: "/run/secrets/npmrc".into(),
                id: "npmrc".into(),
                required: true,
                mode: 0o440,
                uid: 1000,
                gid: 1000,
            })
            .network(Network::None),
    );
    let files = State::scratch()
        .mkdir(
            "/etc/app",
            0o750,
            true,
            Some(Chown {
                user: "app".into(),
                group: Some("app".into()),
            }),
        )
        .mkfile(
            "/etc/app/conf",
            b"x=1\n",
            0o640,
            Some(Chown {
                user: "1000".into(),
                group: None,
            }),
        )
        .symlink("/etc/app/conf", "/conf")
        .rm("/nothing", true)
        .copy(
            &step,
            "/out",
            "/usr/lib/",
            CopyOptions {
                include: vec!["*.so".into()],
                exclude: vec!["test*".into()],
                chmod: Some(0o644),
                ..Default::default()
            },
        );
    State::merge(&[State::static_base(), files, State::scratch()])
        .cmd(vec!["/conf".into()])
        .definition()
}
