//! Data-driven lowering tests: every `tests/corpus/*.Dockerfile` compiles
//! and its graph (vertices, digests, step names, locations) and image
//! config are pinned by a snapshot. The platform is fixed so the automatic
//! platform args do not depend on the machine.

mod common;

use kiln_dockerfile::{Platform, compile};

#[test]
fn corpus() {
    insta::glob!("corpus/*.Dockerfile", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let mut opts = common::options(&src);
        if opts.platform.is_none() {
            opts.platform = Some(Platform::parse("linux/amd64").unwrap());
        }
        let compiled = match compile("Dockerfile", &src, &opts, &common::DebianLike) {
            Ok(c) => c,
            Err(d) => panic!("{}:\n{}", path.display(), d.render_plain()),
        };
        let def = &compiled.definition;
        let config = serde_json::to_string_pretty(&def.config).unwrap();
        let report = format!(
            "target: {} of {:?}\n{}\nconfig: {config}\nwarnings:\n{}",
            compiled.target,
            compiled.targets,
            def.to_text(),
            compiled.warnings.render_plain()
        );
        insta::assert_snapshot!(report);
    });
}

/// The same Dockerfile gives the same graph whatever its formatting.
#[test]
fn digests_ignore_layout() {
    let a = "FROM debian:bookworm\nRUN echo a && echo b\nCOPY x /x\n";
    let b = "# a comment\nfrom debian:bookworm\n\nrun echo a && echo b\n  COPY   x   /x\n";
    let opts = kiln_frontend::Options::default();
    let da = compile("Dockerfile", a, &opts, &common::DebianLike).unwrap();
    let db = compile("Dockerfile", b, &opts, &common::DebianLike).unwrap();
    assert_eq!(da.definition.root, db.definition.root);
}

/// A Kilnfile and a Dockerfile that ask for the same thing are one graph.
#[test]
fn same_graph_as_a_kilnfile() {
    let docker = "FROM scratch AS app\nCOPY --from=docker.io/library/busybox:1.36 /bin/busybox /bin/busybox\n";
    let kiln = "let app = scratch().env(\"PATH\", \"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\").workdir(\"/\").copy(image(\"busybox:1.36\").path(\"/bin/busybox\"), \"/bin/busybox\", [keep_owner(), follow_symlinks()]);";
    let opts = kiln_frontend::Options::default();
    let d = compile("Dockerfile", docker, &opts, &common::DebianLike).unwrap();
    let k = kiln_frontend::compile("Kilnfile", kiln, &opts).unwrap();
    assert_eq!(d.definition.root, k.definition.root);
}

/// A multi-platform build lowers once per target platform: a stage on
/// `$BUILDPLATFORM` is the same vertices for every target up to the first
/// step that reads a target arg, which differs.
#[test]
fn build_platform_stages_are_shared_between_targets() {
    let src = "FROM --platform=$BUILDPLATFORM debian:bookworm AS build\n\
               RUN echo tools > /tools\n\
               ARG TARGETARCH\n\
               RUN echo $TARGETARCH > /arch\n\
               FROM scratch\n\
               COPY --from=build /tools /tools\n\
               COPY --from=build /arch /arch\n";
    let lower = |p: &str| {
        let opts = kiln_frontend::Options {
            platform: Some(Platform::parse(p).unwrap()),
            ..Default::default()
        };
        compile("Dockerfile", src, &opts, &common::DebianLike)
            .unwrap()
            .definition
    };
    let (amd, arm) = (lower("linux/amd64"), lower("linux/arm64"));
    let exec = |d: &kiln_dag::Definition, what: &str| {
        d.vertices
            .iter()
            .find(|v| match &v.op {
                kiln_dag::Op::Exec(e) => e.args.iter().any(|a| a.contains(what)),
                _ => false,
            })
            .map(|v| v.digest)
            .unwrap()
    };
    assert_eq!(exec(&amd, "echo tools"), exec(&arm, "echo tools"));
    assert_ne!(exec(&amd, "TARGETARCH"), exec(&arm, "TARGETARCH"));
    // the builder's image is the build platform's for both targets
    let sources = |d: &kiln_dag::Definition| -> Vec<Option<Platform>> {
        (d.vertices.iter())
            .filter_map(|v| match &v.op {
                kiln_dag::Op::Source(kiln_dag::SourceOp::Image { platform, .. }) => {
                    Some(platform.clone())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(sources(&amd), vec![Some(Platform::host())]);
    assert_eq!(sources(&arm), vec![Some(Platform::host())]);
}
