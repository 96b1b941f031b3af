//! Every example under `examples/` checks cleanly, and its lowered graph is
//! pinned by a snapshot (digests included: a change to them is a change to
//! every cache key and must be deliberate).

use std::path::Path;

use kiln_frontend::{Options, compile};

fn examples() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Kilnfile").is_file())
        .collect();
    out.sort();
    out
}

/// Options with `linux/amd64` as the build platform on every host: the
/// cross-compiling examples pin their builder to `build_platform()`, so
/// their snapshots would otherwise depend on the host's architecture.
fn amd64_build() -> Options {
    Options {
        build_platform: Some("linux/amd64".parse().expect("platform")),
        ..Options::default()
    }
}

#[test]
fn examples_lower_to_their_snapshot() {
    let all = examples();
    assert!(all.len() >= 4, "expected the four examples, found {all:?}");
    for dir in all {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let src = std::fs::read_to_string(dir.join("Kilnfile")).unwrap();
        let compiled = match compile("Kilnfile", &src, &amd64_build()) {
            Ok(c) => c,
            Err(d) => panic!("{name} does not compile:\n{}", d.render_plain()),
        };
        assert!(
            compiled.warnings.is_empty(),
            "{name} has warnings:\n{}",
            compiled.warnings.render_plain()
        );
        let mut text = format!("target {} of {:?}\n", compiled.target, compiled.targets);
        text.push_str(&compiled.definition.to_text());
        text.push_str(&format!(
            "config {}\n",
            serde_json::to_string(&compiled.definition.config).unwrap()
        ));
        insta::assert_snapshot!(format!("example_{name}"), text);
    }
}

#[test]
fn examples_referenced_context_files_exist() {
    // A `context().path("x")` in an example must name a file that ships
    // with it, or the example could never build.
    for dir in examples() {
        let src = std::fs::read_to_string(dir.join("Kilnfile")).unwrap();
        let compiled = compile("Kilnfile", &src, &Options::default()).unwrap();
        for v in &compiled.definition.vertices {
            if let kiln_dag::Op::Source(kiln_dag::SourceOp::Context { include, .. }) = &v.op {
                for p in include {
                    assert!(dir.join(p).exists(), "{}: {p} is missing", dir.display());
                }
            }
        }
    }
}
