//! `kiln graph --format llb`: the real binary writes a binary BuildKit
//! `pb.Definition` that decodes into the expected graph.

use std::path::Path;
use std::process::Command;

use kiln_llb::pb::op::Op as Kind;

#[test]
fn graph_llb_writes_a_definition_buildkit_reads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/go-hello");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["graph", "--format", "llb", "--platform", "linux/arm64"])
        .arg(&dir)
        .output()
        .expect("run kiln");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let def = kiln_llb::decode(&out.stdout).expect("a marshalled pb.Definition");
    let g = kiln_llb::Graph::from_definition(&def).expect("well-formed LLB");
    let sources: Vec<String> = g
        .ops
        .iter()
        .filter_map(|o| match &o.op.op {
            Some(Kind::Source(s)) => Some(s.identifier.clone()),
            _ => None,
        })
        .collect();
    assert!(sources.contains(&"docker-image://docker.io/library/debian:bookworm".into()));
    assert!(sources.contains(&"local://context".into()));
    // the builder is pinned to build_platform(): it runs on this machine's
    // platform and cross-compiles; the image is arm64
    let arch = |o: &kiln_llb::pb::Op| o.platform.as_ref().unwrap().architecture.clone();
    let host = kiln_types::Platform::host().architecture;
    for o in &g.ops {
        if let Some(Kind::Source(s)) = &o.op.op
            && s.identifier.starts_with("docker-image://")
        {
            assert_eq!(arch(&o.op), host, "{}", s.identifier);
        }
    }
    let root = g.op(g.root.as_deref().unwrap()).unwrap();
    assert_eq!(arch(&root.op), "arm64");
    assert!(
        matches!(root.op.op, Some(Kind::File(_))),
        "the final copy is the result"
    );
    let src = def.source.expect("source locations");
    assert!(src.infos[0].filename.ends_with("Kilnfile"));
}

#[test]
fn graph_llb_of_a_broken_kilnfile_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Kilnfile"), "let app = static_base(;\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["graph", "--format", "llb"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run kiln");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Kilnfile:1:"));
}
