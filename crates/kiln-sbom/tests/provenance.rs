//! SLSA v1 provenance: what min and max keep, and that a secret passed as
//! a build arg (by name or by value) never appears in either.

use std::collections::BTreeMap;

use kiln_sbom::provenance::{BuildInputs, Mode, Secrets, predicate};

fn inputs() -> BuildInputs {
    BuildInputs {
        file_path: "Kilnfile".into(),
        file_sha256: "ab".repeat(32),
        frontend: "kilnfile".into(),
        target: Some("app".into()),
        platform: "linux/amd64".into(),
        build_args: BTreeMap::from([
            ("VERSION".into(), "1.2.3".into()),
            ("TOKEN".into(), "s3cr3t-value".into()),
            (
                "URL".into(),
                "https://user:s3cr3t-value@example.invalid".into(),
            ),
        ]),
        context_digest: Some(format!("sha256:{}", "cd".repeat(32))),
        base_images: vec![(
            "docker.io/library/debian:bookworm".into(),
            kiln_types::Digest::of(b"debian"),
        )],
        debs: vec![(
            "ca-certificates".into(),
            "20230311".into(),
            "all".into(),
            "ef".repeat(32),
        )],
        steps: vec![("sha256:00".into(), "go build".into())],
        builder_platform: "linux/amd64".into(),
        started: 10,
        finished: 20,
    }
}

fn secrets() -> Secrets {
    Secrets {
        ids: vec!["TOKEN".into()],
        values: vec![b"s3cr3t-value".to_vec()],
    }
}

#[test]
fn max_keeps_build_args_but_never_a_secret() {
    let p = predicate(&inputs(), &secrets(), Mode::Max).unwrap();
    let text = String::from_utf8(p.clone()).unwrap();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(!text.contains("TOKEN"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
    let args = &v["buildDefinition"]["externalParameters"]["request"]["args"];
    assert_eq!(args["build-arg:VERSION"], "1.2.3");
    assert_eq!(args["target"], "app");
    assert_eq!(
        v["buildDefinition"]["internalParameters"]["steps"][0]["name"],
        "go build"
    );
}

#[test]
fn min_keeps_what_buildkit_min_keeps() {
    let v: serde_json::Value =
        serde_json::from_slice(&predicate(&inputs(), &secrets(), Mode::Min).unwrap()).unwrap();
    let def = &v["buildDefinition"];
    assert_eq!(
        def["externalParameters"]["configSource"]["path"],
        "Kilnfile"
    );
    assert!(
        def["externalParameters"]["request"]["args"]
            .get("build-arg:VERSION")
            .is_none()
    );
    assert!(def.get("internalParameters").is_none());
    let deps: Vec<&str> = def["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uri"].as_str().unwrap())
        .collect();
    assert!(
        deps.iter()
            .any(|d| d.starts_with("pkg:docker/docker.io/library/debian:bookworm"))
    );
    assert!(deps.contains(&"context"));
    assert!(
        deps.iter()
            .any(|d| d.starts_with("pkg:deb/debian/ca-certificates@"))
    );
    assert!(deps.iter().any(|d| d.starts_with("pkg:cargo/kiln@")));
    assert_eq!(
        v["runDetails"]["metadata"]["startedOn"],
        "1970-01-01T00:00:10Z"
    );
    assert_eq!(
        v["runDetails"]["metadata"]["https://mobyproject.org/buildkit@v1#metadata"]["completeness"]
            ["request"],
        false
    );
}

#[test]
fn the_statement_names_the_image_as_buildkit_does() {
    let d = kiln_types::Digest::of(b"image");
    let s = kiln_sbom::statement::subject(Some("registry.example/app:1"), &d, "linux/amd64");
    let st = kiln_sbom::statement::wrap(kiln_sbom::statement::PREDICATE_SLSA1, s, b"{}").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st).unwrap();
    assert_eq!(v["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        v["subject"][0]["name"],
        "pkg:docker/registry.example/app@1?platform=linux%2Famd64"
    );
    assert_eq!(v["subject"][0]["digest"]["sha256"], d.hex());
}
