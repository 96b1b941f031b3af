//! The frontend's answers to subrequests and its reading of BuildKit's other
//! inputs, without a daemon (`crates/kiln-cli/tests/buildkit_e2e.rs` runs
//! them on a real BuildKit).

use std::collections::BTreeMap;

use kiln_dag::{Op, SourceOp};
use kiln_frontend_gateway::inputs::{self, NamedContext};
use kiln_frontend_gateway::subrequest::{self, Input};
use kiln_frontend_gateway::{GatewayError, pb};

const KILNFILE: &str = r#"// syntax=example/kiln-frontend:1
let greeting = arg("GREETING", "hello");
let token = arg("TOKEN_ID", "tok");

/// Writes the message.
let gen = image("debian:bookworm")
    .run(format!("echo '{}' > /msg", greeting), [secret(token).required(true), cache("/var/cache/apt")]);

// Shows the message,
// on two lines.
let app = image("docker.io/library/debian:bookworm")
    .copy(gen.path("/msg"), "/msg");
"#;

fn json(meta: &BTreeMap<String, Vec<u8>>) -> serde_json::Value {
    serde_json::from_slice(&meta["result.json"]).expect("result.json is JSON")
}

fn ask(request: &str, opts: &kiln_frontend::Options) -> BTreeMap<String, Vec<u8>> {
    subrequest::answer(
        request,
        &Input {
            filename: "Kilnfile",
            text: KILNFILE,
            opts,
        },
    )
    .unwrap_or_else(|| panic!("{request} is answered"))
}

#[test]
fn targets_lists_the_bindings_with_their_comments_and_the_default() {
    let meta = ask(subrequest::TARGETS, &Default::default());
    assert_eq!(meta["version"], b"1.0.0");
    let v = json(&meta);
    let targets = v["targets"].as_array().unwrap();
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gen", "app"]);
    assert_eq!(targets[0]["description"], "Writes the message.");
    assert_eq!(
        targets[1]["description"],
        "Shows the message, on two lines."
    );
    assert_eq!(targets[1]["default"], true);
    assert!(targets[0].get("default").is_none());
    // `gen` is on line 6.
    assert_eq!(targets[0]["location"]["ranges"][0]["start"]["line"], 6);
}

#[test]
fn outline_has_the_args_with_defaults_and_the_targets_secrets_and_caches() {
    let opts = kiln_frontend::Options {
        target: Some("gen".into()),
        ..Default::default()
    };
    let v = json(&ask(subrequest::OUTLINE, &opts));
    assert_eq!(v["name"], "gen");
    assert_eq!(v["description"], "Writes the message.");
    let args: Vec<(String, String)> = v["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        args,
        [
            ("GREETING".to_string(), "hello".to_string()),
            ("TOKEN_ID".to_string(), "tok".to_string())
        ]
    );
    assert_eq!(
        v["secrets"],
        serde_json::json!([{"name": "tok", "required": true}])
    );
    assert_eq!(v["cache"][0]["ID"], "/var/cache/apt");
}

#[test]
fn lint_reports_warnings_with_a_failing_status_code() {
    let opts = kiln_frontend::Options {
        build_args: [("UNUSED".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    let meta = ask(subrequest::LINT, &opts);
    assert_eq!(meta["result.statuscode"], b"1");
    let v = json(&meta);
    assert_eq!(v["warnings"][0]["ruleName"], "kiln::unused-build-arg");
    let clean = ask(subrequest::LINT, &Default::default());
    assert_eq!(clean["result.statuscode"], b"0");
    assert_eq!(json(&clean)["warnings"], serde_json::json!([]));
}

#[test]
fn describe_lists_the_requests_and_unknown_ones_are_refused() {
    let v = json(&ask(subrequest::DESCRIBE, &Default::default()));
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for r in [subrequest::OUTLINE, subrequest::TARGETS, subrequest::LINT] {
        assert!(names.contains(&r), "{names:?}");
    }
    assert!(
        subrequest::answer(
            "frontend.convertllb",
            &Input {
                filename: "Kilnfile",
                text: KILNFILE,
                opts: &Default::default(),
            }
        )
        .is_none()
    );
}

#[test]
fn named_contexts_replace_images_by_normalized_name() {
    let opts: BTreeMap<String, String> = [
        (
            "context:debian:bookworm".to_string(),
            "docker-image://registry.example/base:2".to_string(),
        ),
        ("filename".to_string(), "Kilnfile".to_string()),
    ]
    .into();
    let contexts = inputs::named_contexts(&opts).unwrap();
    assert_eq!(
        contexts.get("docker.io/library/debian:bookworm"),
        Some(&NamedContext::Image("registry.example/base:2".into()))
    );
    let mut def = kiln_frontend::compile("Kilnfile", KILNFILE, &Default::default())
        .unwrap()
        .definition;
    inputs::apply_contexts(&mut def, &contexts);
    let images: Vec<&str> = def
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::Source(SourceOp::Image { reference, .. }) => Some(reference.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(images, ["registry.example/base:2"]);

    let local: BTreeMap<String, String> = [(
        "context:docker.io/library/debian:bookworm".to_string(),
        "local:base".to_string(),
    )]
    .into();
    inputs::apply_contexts(&mut def, &inputs::named_contexts(&local).unwrap());
    // Already replaced by the first context: the second names nothing now.
    assert!(def.vertices.iter().all(|v| !matches!(
        &v.op,
        Op::Source(SourceOp::Context { name, .. }) if name == "base"
    )));

    let bad: BTreeMap<String, String> =
        [("context:alpine".to_string(), "oci-layout://x".to_string())].into();
    let err = inputs::named_contexts(&bad).unwrap_err();
    assert!(matches!(err, GatewayError::Option { .. }), "{err}");
    assert!(err.to_string().contains("docker-image://"), "{err}");
}

#[test]
fn no_cache_marks_all_steps_or_a_bindings_steps() {
    let def = kiln_frontend::compile("Kilnfile", KILNFILE, &Default::default())
        .unwrap()
        .definition;
    let llb = kiln_llb::emit(
        &def,
        &kiln_llb::Options::new("linux/amd64".parse().unwrap()),
    )
    .unwrap()
    .definition;
    let ignored = |d: &pb::Definition| -> Vec<String> {
        d.metadata
            .values()
            .filter(|m| m.ignore_cache)
            .filter_map(|m| m.description.get("llb.customname").cloned())
            .collect()
    };
    let mut one = llb.clone();
    inputs::apply_no_cache(
        &[("no-cache".to_string(), "gen".to_string())].into(),
        &mut one,
    );
    let names = ignored(&one);
    assert!(!names.is_empty());
    assert!(names.iter().all(|n| n.starts_with("gen: ")), "{names:?}");
    let mut all = llb.clone();
    inputs::apply_no_cache(&[("no-cache".to_string(), String::new())].into(), &mut all);
    assert!(all.metadata.values().all(|m| m.ignore_cache));
    let mut none = llb;
    inputs::apply_no_cache(&BTreeMap::new(), &mut none);
    assert!(ignored(&none).is_empty());
}

#[test]
fn cache_imports_are_read_from_their_json() {
    let opts: BTreeMap<String, String> = [(
        "cache-imports".to_string(),
        r#"[{"Type":"registry","Attrs":{"ref":"r.example/cache:1"}}]"#.to_string(),
    )]
    .into();
    let got = inputs::cache_imports(&opts).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].r#type, "registry");
    assert_eq!(got[0].attrs["ref"], "r.example/cache:1");
    let bad: BTreeMap<String, String> =
        [("cache-imports".to_string(), "not json".to_string())].into();
    assert!(inputs::cache_imports(&bad).is_err());
}
