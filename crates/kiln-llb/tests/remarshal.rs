//! kiln's LLB bytes are BuildKit's: every op of every example and of two
//! graphs that use every op kind and option kiln emits keeps its digest
//! when BuildKit's own Go code re-marshals it (which BuildKit does to every
//! op it receives before it digests it).
//!
//! The goldens in `tests/remarshal/` are the output of
//! `../shared/peers/buildkit/llb-remarshal` (built from BuildKit v0.32.2's
//! `solver/pb`): one `DIGEST same` line per op. Without the tool the test
//! still pins kiln's digests to them; with it (CI, these machines) it runs
//! the tool too. `KILN_UPDATE_GOLDENS=1` rewrites a golden, only ever from
//! an all-`same` run of the tool.

// The test says on stderr what it could not check.
#![allow(clippy::print_stderr)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kiln_dag::{
    CacheSharing, Chown, CopyOptions, Definition, Exec, ExecMount, Network, RunSettings, State,
    settings,
};
use kiln_llb::{Options, SourceFile, emit, encode, marshal_op, op_digest, pb};
use prost::Message as _;

fn remarshal_tool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_LLB_REMARSHAL") {
        return Some(PathBuf::from(p));
    }
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/buildkit/llb-remarshal");
    p.is_file().then_some(p)
}

/// Steps with the options the examples and `feature_graph` leave out:
/// the other network modes and cache sharings, a pids limit, copies with
/// an owner and without parents, a variant platform, the gateway's
/// Kilnfile load with a session.
fn options_graph() -> Definition {
    let base = State::image(
        "docker.io/library/debian:bookworm",
        Some("linux/arm/v7".parse().unwrap()),
    );
    let host = base.run(
        Exec::argv(["/bin/sh", "-c", "apt-get update"])
            .mount(ExecMount::Cache {
                target: "/var/cache/apt".into(),
                id: "apt".into(),
                sharing: CacheSharing::Locked,
            })
            .mount(ExecMount::Cache {
                target: "/var/lib/apt".into(),
                id: "apt-lists".into(),
                sharing: CacheSharing::Shared,
            })
            .network(Network::Host)
            .pids_limit(512)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    let isolated = host.run(Exec::shell("true").network(Network::Isolated));
    let ctx = State::context("dockerfile", vec!["Kilnfile".into()], Vec::new());
    base.mkdir("/a/b", 0o755, false, None)
        .copy(
            &isolated,
            "/etc/hostname",
            "/out/",
            CopyOptions {
                chown: Some(Chown {
                    user: "1000".into(),
                    group: Some("1000".into()),
                }),
                allow_dynamic: true,
                ..Default::default()
            },
        )
        .copy(&ctx, "/Kilnfile", "/Kilnfile", CopyOptions::default())
        .entrypoint(vec!["/bin/true".into()])
        .definition()
}

/// A step with buildx's `--add-host`, `--ulimit`, `--shm-size` and two
/// `--ssh` agents (one at BuildKit's default target), beside a pids limit
/// that becomes a second ulimit.
fn run_settings_graph() -> Definition {
    let settings = RunSettings {
        extra_hosts: vec![
            settings::parse_add_host("db=10.0.0.5").unwrap(),
            settings::parse_add_host("v6:[::1]").unwrap(),
        ],
        ulimits: vec![settings::parse_ulimit("nofile=1024:2048").unwrap()],
        shm_size: Some(128 << 20),
    };
    State::image("docker.io/library/debian:bookworm", None)
        .run(
            Exec::shell("ssh-add -l && git clone git@example.com:x.git")
                .mount(ExecMount::Ssh {
                    target: None,
                    id: "default".into(),
                    required: true,
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                })
                .mount(ExecMount::Ssh {
                    target: Some("/agent.sock".into()),
                    id: "deploy".into(),
                    required: false,
                    mode: 0o660,
                    uid: 1000,
                    gid: 1000,
                })
                .pids_limit(256)
                .settings(&settings),
        )
        .definition()
}

fn cases() -> Vec<(String, Definition, Option<String>)> {
    let mut out: Vec<_> = common::examples()
        .into_iter()
        .map(|(name, text)| (name, common::compile("Kilnfile", &text), Some(text)))
        .collect();
    out.push(("features".into(), common::feature_graph(), None));
    out.push(("options".into(), options_graph(), None));
    out.push(("run-settings".into(), run_settings_graph(), None));
    out
}

#[test]
fn every_op_keeps_its_digest_when_buildkit_remarshals_it() {
    let tool = remarshal_tool();
    if tool.is_none() {
        eprintln!("llb-remarshal not found (set KILN_LLB_REMARSHAL): checking the goldens only");
    }
    let update = std::env::var_os("KILN_UPDATE_GOLDENS").is_some();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/remarshal");
    for (name, def, text) in cases() {
        let mut opts = Options::new(common::amd64());
        opts.session_id = Some("kiln-test-session".into());
        opts.source = text.map(|text| SourceFile {
            name: "Kilnfile".into(),
            text,
        });
        let llb = emit(&def, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = &llb.definition;

        // prost decodes what kiln wrote and `marshal_op` writes it back
        // byte for byte: nothing kiln emits is lost to an unknown field.
        for bytes in &d.def {
            let op = pb::Op::decode(bytes.as_slice()).expect("an op");
            assert_eq!(&marshal_op(&op), bytes, "{name}: op does not round-trip");
        }
        // Source locations are keyed by those digests (BuildKit looks them
        // up by the digests it recomputes), and every step has one.
        if let Some(src) = &d.source {
            let digests: Vec<String> = d.def.iter().map(|b| op_digest(b)).collect();
            assert!(!src.locations.is_empty(), "{name}: no locations");
            for key in src.locations.keys() {
                assert!(
                    digests.contains(key),
                    "{name}: location for unknown op {key}"
                );
            }
        }
        let ours: String = d
            .def
            .iter()
            .map(|b| format!("{} same\n", op_digest(b)))
            .collect();

        let golden_path = dir.join(format!("{name}.txt"));
        if let Some(tool) = &tool {
            let mut child = Command::new(tool)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", tool.display()));
            child
                .stdin
                .take()
                .unwrap()
                .write_all(&encode(d))
                .expect("writes the definition");
            let out = child.wait_with_output().expect("llb-remarshal runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name}: BuildKit re-marshals ops differently:\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(stdout, ours, "{name}: llb-remarshal saw other ops");
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&golden_path, stdout.as_bytes()).unwrap();
            }
        }
        let golden = std::fs::read_to_string(&golden_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with llb-remarshal and KILN_UPDATE_GOLDENS=1)",
                golden_path.display()
            )
        });
        assert_eq!(ours, golden, "{name}: digests differ from the golden");
    }
}
