//! The frontend binary against a stand-in for BuildKit's gateway on its
//! stdio: the requests it makes and the result or error it returns.

mod support;

use std::path::Path;

use kiln_frontend_gateway::pb;
use kiln_llb::pb::op::Op as Kind;
use prost::Message as _;
use support::{BUILD_REF, Call, Fake, KILNFILE_REF, run_frontend};

fn go_hello() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/go-hello/Kilnfile"),
    )
    .expect("the go-hello example")
}

fn solves(calls: &[(std::time::Instant, Call)]) -> Vec<pb::SolveRequest> {
    calls
        .iter()
        .filter_map(|(_, c)| match c {
            Call::Solve(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn the_return(calls: &[(std::time::Instant, Call)]) -> pb::ReturnRequest {
    let rets: Vec<_> = calls
        .iter()
        .filter_map(|(_, c)| match c {
            Call::Return(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(rets.len(), 1, "exactly one Return: {calls:?}");
    assert!(
        matches!(calls.last(), Some((_, Call::Return(_)))),
        "Return is the last call"
    );
    rets[0].clone()
}

fn image_config(ret: &pb::ReturnRequest) -> serde_json::Value {
    let result = ret.result.as_ref().expect("a result");
    let cfg = result
        .metadata
        .get("containerimage.config")
        .expect("containerimage.config metadata");
    serde_json::from_slice(cfg).expect("the config is JSON")
}

fn llb_graph(req: &pb::SolveRequest) -> kiln_llb::Graph {
    kiln_llb::Graph::from_definition(req.definition.as_ref().expect("a definition"))
        .expect("well-formed LLB")
}

#[tokio::test(flavor = "multi_thread")]
async fn go_hello_builds_through_the_gateway() {
    let text = go_hello();
    let fake = Fake::new(&[("Kilnfile", &text)]);
    let run = run_frontend(&fake, &["filename=Kilnfile"]).await;
    assert!(
        run.status.success(),
        "exit {:?}: {}",
        run.status,
        run.stderr
    );
    let calls = &run.calls;
    assert!(matches!(calls[0].1, Call::Ping), "Ping first: {calls:?}");

    // The Kilnfile is loaded from the dockerfile local, only that file.
    let solves = solves(calls);
    assert_eq!(solves.len(), 2, "{calls:?}");
    let load = llb_graph(&solves[0]);
    let src = load.op(load.root.as_ref().unwrap()).unwrap();
    let Some(Kind::Source(s)) = &src.op.op else {
        panic!("a source: {src:?}")
    };
    assert_eq!(s.identifier, "local://dockerfile");
    assert_eq!(s.attrs["local.includepattern"], r#"["Kilnfile"]"#);
    assert_eq!(s.attrs["local.session"], "session-1");
    let reads: Vec<_> = calls
        .iter()
        .filter_map(|(_, c)| match c {
            Call::ReadFile(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reads.len(), 1);
    assert_eq!(
        (reads[0].r#ref.as_str(), reads[0].file_path.as_str()),
        (KILNFILE_REF, "Kilnfile")
    );

    // The builder image's config is resolved for the worker's platform.
    let resolves: Vec<_> = calls
        .iter()
        .filter_map(|(_, c)| match c {
            Call::Resolve(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(resolves.len(), 1, "{resolves:?}");
    assert_eq!(resolves[0].r#ref, "docker.io/library/debian:bookworm");
    assert_eq!(resolves[0].platform.as_ref().unwrap().architecture, "amd64");

    // The build's LLB is exactly what kiln-llb emits for the Kilnfile with
    // that config; run steps inherit the image's environment.
    let build = &solves[1];
    assert!(build.allow_result_return);
    let compiled = kiln_frontend::compile(
        "Kilnfile",
        &text,
        &kiln_frontend::Options {
            platform: Some("linux/amd64".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    let def = compiled.definition;
    let mut opts = kiln_llb::Options::new("linux/amd64".parse().unwrap());
    opts.session_id = Some("session-1".into());
    opts.source = Some(kiln_llb::SourceFile {
        name: "Kilnfile".into(),
        text: text.clone(),
    });
    for v in &def.vertices {
        if let kiln_dag::Op::Source(kiln_dag::SourceOp::Image { .. }) = v.op {
            opts.base_configs
                .insert(v.digest, kiln_llb::BaseConfig(fake.image_config.clone()));
        }
    }
    let expected = kiln_llb::emit(&def, &opts).unwrap().definition;
    assert_eq!(build.definition.as_ref(), Some(&expected));
    let graph = llb_graph(build);
    let execs: Vec<_> = graph
        .ops
        .iter()
        .filter_map(|o| match &o.op.op {
            Some(Kind::Exec(x)) => x.meta.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(execs.len(), 2);
    assert!(
        execs
            .iter()
            .all(|m| m.env.contains(&"LANG=C.UTF-8".to_string()))
    );

    // The result and its image config: kiln's entrypoint on the static base.
    let ret = the_return(calls);
    assert!(ret.error.is_none(), "{ret:?}");
    match &ret.result.as_ref().unwrap().result {
        Some(pb::build_result::Result::Ref(r)) => {
            assert_eq!(r.id, BUILD_REF);
            assert_eq!(r.def.as_ref(), Some(&expected));
        }
        other => panic!("a ref result: {other:?}"),
    }
    let cfg = image_config(&ret);
    assert_eq!(
        cfg["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/hello"])
    );
    assert_eq!(cfg["config"]["User"], "65532");
    assert_eq!(cfg["config"]["WorkingDir"], "/home/nonroot");
    assert!(
        cfg["config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
            ))
    );
    assert_eq!(
        (cfg["os"].as_str(), cfg["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filename_target_and_build_args_are_honoured() {
    let text = go_hello();
    let fake = Fake::new(&[("ci/Kilnfile.prod", &text)]);
    let run = run_frontend(
        &fake,
        &[
            "filename=ci/Kilnfile.prod",
            "target=build",
            "build-arg:GO_VERSION=1.23",
        ],
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    let solves = solves(&run.calls);
    let load = llb_graph(&solves[0]);
    let src = load.op(load.root.as_ref().unwrap()).unwrap();
    let Some(Kind::Source(s)) = &src.op.op else {
        panic!()
    };
    assert_eq!(s.attrs["local.includepattern"], r#"["ci/Kilnfile.prod"]"#);

    // The builder stage is the result: its label takes the build arg, its
    // config is the resolved image's plus kiln's settings.
    let ret = the_return(&run.calls);
    let cfg = image_config(&ret);
    assert_eq!(cfg["config"]["Labels"]["org.example.go-version"], "1.23");
    assert_eq!(cfg["config"]["WorkingDir"], "/src");
    let env = cfg["config"]["Env"].as_array().unwrap();
    assert!(env.contains(&serde_json::json!("LANG=C.UTF-8")));
    assert!(env.contains(&serde_json::json!("CGO_ENABLED=0")));
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["bash"]));
    // No static base in the builder target's graph.
    let build = llb_graph(&solves[1]);
    assert!(
        !build
            .ops
            .iter()
            .any(|o| matches!(&o.op.op, Some(Kind::File(f)) if f.actions.len() > 100))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_kilnfile_is_returned_as_an_error_with_its_location() {
    let text = "let app = static_base()\n    .copy(context().path(\"a\"), \"/a\"\n    .entrypoint([\"/a\"]);\n";
    let fake = Fake::new(&[("Kilnfile", text)]);
    let run = run_frontend(&fake, &[]).await;
    assert!(run.status.success(), "{}", run.stderr);
    // No build was attempted.
    assert_eq!(solves(&run.calls).len(), 1, "{:?}", run.calls);
    assert!(!run.calls.iter().any(|(_, c)| matches!(c, Call::Resolve(_))));

    let ret = the_return(&run.calls);
    assert!(ret.result.is_none());
    let err = ret.error.expect("an error");
    assert_eq!(err.code, 3, "InvalidArgument");
    assert!(err.message.starts_with("Kilnfile:"), "{}", err.message);
    assert!(err.message.contains("error["), "{}", err.message);
    assert!(!err.details.is_empty());
    let d = &err.details[0];
    assert_eq!(d.type_url, "type.googleapis.com/errdefs.Source");
    let src = pb::ErrorSource::decode(d.value.as_slice()).unwrap();
    let info = src.info.unwrap();
    assert_eq!(info.filename, "Kilnfile");
    assert_eq!(info.data, text.as_bytes());
    let line = src.ranges[0].start.unwrap().line;
    assert!((2..=4).contains(&line), "line {line}: {}", err.message);
    assert!(
        err.message.contains(&format!("Kilnfile:{line}:")),
        "the message names the same line: {}",
        err.message
    );
    // Logs go to stderr (stdout is the connection).
    assert!(run.stderr.contains("Kilnfile:"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_kilnfile_is_returned_as_an_error() {
    let fake = Fake::new(&[]);
    let run = run_frontend(&fake, &["filename=Nope"]).await;
    let ret = the_return(&run.calls);
    let err = ret.error.expect("an error");
    assert_eq!(err.code, 5, "BuildKit's NotFound is passed on: {err:?}");
    assert!(!run.status.success());
    assert!(run.stderr.contains("ReadFile"), "{}", run.stderr);
}
