//! `build_platform()` and `target_platform()`: a stage pinned to the build
//! platform lowers to the same vertices for every target, a stage that reads
//! the target platform to different ones.

use kiln_frontend::{Options, Platform, compile};

const SRC: &str = r#"
let builder = image("docker.io/library/golang:1.23", [platform(build_platform())])
    .run("go build -o /out/app .", [env("GOARCH", target_platform().arch())]);
let tools = image("docker.io/library/debian:bookworm", [platform(build_platform())])
    .run("echo tools > /tools");
let app = static_base()
    .copy(tools.path("/tools"), "/tools")
    .copy(builder.path("/out/app"), "/app")
    .label("platform", format!("{} {} {}", target_platform(), build_platform().os(), target_platform().variant()));
"#;

fn for_target(p: &str) -> kiln_frontend::Compiled {
    let opts = Options {
        platform: Some(p.parse().unwrap()),
        ..Options::default()
    };
    compile("Kilnfile", SRC, &opts).unwrap()
}

/// The digest of the last vertex whose name contains `prefix`.
fn named(c: &kiln_frontend::Compiled, prefix: &str) -> kiln_dag::Digest {
    c.definition
        .vertices
        .iter()
        .filter(|v| v.meta.name.as_deref().is_some_and(|n| n.contains(prefix)))
        .map(|v| v.digest)
        .next_back()
        .unwrap_or_else(|| panic!("no step named {prefix}..: {}", c.definition.to_text()))
}

#[test]
fn build_platform_stages_are_shared_and_target_ones_differ() {
    let amd = for_target("linux/amd64");
    let arm = for_target("linux/arm64");
    // pinned to the build platform and independent of the target: one vertex
    assert_eq!(named(&amd, "echo tools"), named(&arm, "echo tools"));
    // reads target_platform(): one per target
    assert_ne!(named(&amd, "go build"), named(&arm, "go build"));
    assert_ne!(amd.definition.digest(), arm.definition.digest());
    let env = |c: &kiln_frontend::Compiled| {
        c.definition
            .vertices
            .iter()
            .find_map(|v| match &v.op {
                kiln_dag::Op::Exec(e) if e.args.iter().any(|a| a.contains("go build")) => {
                    Some(e.env.clone())
                }
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(env(&amd), [("GOARCH".to_string(), "amd64".to_string())]);
    assert_eq!(env(&arm), [("GOARCH".to_string(), "arm64".to_string())]);
    // the builder's source names the build platform whatever the target
    let sources = |c: &kiln_frontend::Compiled| -> Vec<Option<Platform>> {
        c.definition
            .vertices
            .iter()
            .filter_map(|v| match &v.op {
                kiln_dag::Op::Source(kiln_dag::SourceOp::Image { platform, .. }) => {
                    Some(platform.clone())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(sources(&amd), vec![Some(Platform::host()); 2]);
    assert_eq!(sources(&arm), vec![Some(Platform::host()); 2]);
    // a build platform set in the options (as the snapshot tests do) is
    // the one the builders are pinned to
    let riscv: Platform = "linux/riscv64".parse().unwrap();
    let opts = Options {
        platform: Some("linux/arm64".parse().unwrap()),
        build_platform: Some(riscv.clone()),
        ..Options::default()
    };
    let pinned = compile("Kilnfile", SRC, &opts).unwrap();
    assert_eq!(sources(&pinned), vec![Some(riscv); 2]);
    assert_ne!(named(&pinned, "echo tools"), named(&arm, "echo tools"));
}

#[test]
fn platform_parts_and_format() {
    let c = for_target("linux/arm/v7");
    let label = c.state.config().labels.get("platform").cloned();
    assert_eq!(label.as_deref(), Some("linux/arm/v7 linux v7"));
    // without --platform the target is this machine
    let c = compile("Kilnfile", SRC, &Options::default()).unwrap();
    let host = Platform::host();
    let label = c.state.config().labels.get("platform").cloned().unwrap();
    assert!(label.starts_with(&format!("{host} linux")), "{label}");
}

#[test]
fn platform_parts_take_no_arguments_and_platforms_are_not_strings() {
    let src = "let app = static_base().env(\"A\", target_platform().arch(1));\n";
    let d = compile("Kilnfile", src, &Options::default()).unwrap_err();
    assert!(
        d.to_string().contains("arch") || format!("{d:?}").contains("kiln::arity"),
        "{d:?}"
    );
    let src = "let app = static_base().env(\"A\", target_platform());\n";
    let d = compile("Kilnfile", src, &Options::default()).unwrap_err();
    assert!(format!("{d:?}").contains("a platform"), "{d:?}");
    let src = "let app = static_base().env(\"A\", target_platform().cpu());\n";
    let d = compile("Kilnfile", src, &Options::default()).unwrap_err();
    assert!(
        format!("{d:?}").contains("methods of a platform: os, arch, variant"),
        "{d:?}"
    );
}
