//! `kiln pull` and `kiln push` end to end: the real binary, a temp
//! `KILN_HOME`, Debian's `docker-registry` on 127.0.0.1, and skopeo to seed
//! and check the registry.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use kiln_store::{Digest, Store};
use serde_json::json;

use common::Registry;

/// The kiln binary with a private store and no ambient credentials.
fn kiln(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env("KILN_HOME", home.join("kiln"))
        .env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("KILN_REGISTRY_MIRROR");
    c
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "kiln failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An OCI layout with one small image for `arch`; returns its manifest digest.
fn layout(dir: &Path, arch: &str, seed: u8) -> Digest {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = Digest::of(b);
        std::fs::write(blobs.join(d.hex()), b).unwrap();
        (d, b.len())
    };
    let layer: Vec<u8> = (0..4096u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
    let (ld, ls) = put(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [ld.to_string()]},
    }))
    .unwrap();
    let (cd, cs) = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.to_string(), "size": ls}],
    }))
    .unwrap();
    let (md, ms) = put(&manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(), "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
        .unwrap(),
    )
    .unwrap();
    md
}

/// Copies a layout into the registry with skopeo (which may recompress
/// layers) and returns the manifest digest the registry holds.
fn seed(reg: &Registry, dir: &Path, dest: &str, creds: Option<&str>) -> String {
    let mut c = Command::new("skopeo");
    c.args(["copy", "--dest-tls-verify=false"]);
    if let Some(cr) = creds {
        c.args(["--dest-creds", cr]);
    }
    let out = c
        .arg(format!("oci:{}:v1", dir.display()))
        .arg(format!("docker://{}/{dest}", reg.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    inspect(reg, dest, creds)["Digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn inspect(reg: &Registry, name: &str, creds: Option<&str>) -> serde_json::Value {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--tls-verify=false"]);
    if let Some(cr) = creds {
        c.args(["--creds", cr]);
    }
    let out = c
        .arg(format!("docker://{}/{name}", reg.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pull_then_push_elsewhere_with_mount() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let lay = tempfile::tempdir().unwrap();
    layout(lay.path(), "amd64", 3);
    let digest = seed(&reg, lay.path(), "src/app:v1", None);

    let name = format!("{}/src/app:v1", reg.addr);
    let out = ok(kiln(home.path()).args(["pull", &name]).output().unwrap());
    assert_eq!(out, digest);
    let store = Store::open(home.path().join("kiln")).unwrap();
    assert_eq!(store.get_tag(&name).unwrap().unwrap().to_string(), digest);

    // Same registry, other repository: blobs are mounted, not uploaded.
    let dest = format!("{}/dst/app:v2", reg.addr);
    let out = kiln(home.path())
        .args(["push", &name, &dest, "--tag", "extra"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(ok(out), digest);
    assert!(
        stderr.contains("0 blob(s) uploaded") && stderr.contains("2 mounted"),
        "{stderr}"
    );
    let v = inspect(&reg, "dst/app:v2", None);
    assert_eq!(v["Digest"], digest);
    let mut tags: Vec<String> = serde_json::from_value(v["RepoTags"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, ["extra", "v2"]);

    // Pushing again: everything is there already.
    let out = kiln(home.path())
        .args(["push", &name, &dest])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out);
    assert!(stderr.contains("2 already present"), "{stderr}");
}

#[test]
fn mirror_flag_and_env_keep_the_original_name() {
    let reg = Registry::start();
    let lay = tempfile::tempdir().unwrap();
    layout(lay.path(), "amd64", 5);
    let digest = seed(&reg, lay.path(), "library/debian:bookworm", None);

    for via_env in [false, true] {
        let home = tempfile::tempdir().unwrap();
        let mut c = kiln(home.path());
        if via_env {
            c.env("KILN_REGISTRY_MIRROR", format!("docker.io={}", reg.addr));
        } else {
            c.arg("--registry-mirror")
                .arg(format!("docker.io={}", reg.addr));
        }
        let out = ok(c.args(["pull", "debian:bookworm"]).output().unwrap());
        assert_eq!(out, digest);
        let store = Store::open(home.path().join("kiln")).unwrap();
        let tags = store.tags().unwrap();
        assert_eq!(
            tags.keys().collect::<Vec<_>>(),
            ["docker.io/library/debian:bookworm"]
        );
    }
}

#[test]
fn platform_selection_and_auth_file() {
    let reg = Registry::with_htpasswd("bob", "hunter2");
    let (amd, arm) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    layout(amd.path(), "amd64", 7);
    layout(arm.path(), "arm64", 9);
    let creds = Some("bob:hunter2");
    let amd_digest = seed(&reg, amd.path(), "multi/app:amd64", creds);
    let arm_digest = seed(&reg, arm.path(), "multi/app:arm64", creds);
    // An index over both, pushed as raw bytes with skopeo's credentials.
    let size = |t: &str| reg.raw(&format!("multi/app:{t}")).len();
    let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd_digest, "size": size("amd64"),
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_digest, "size": size("arm64"),
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]});
    reg.put_index("multi/app", "1", &idx);
    let auth = base64::engine::general_purpose::STANDARD.encode("bob:hunter2");

    let home = tempfile::tempdir().unwrap();
    let name = format!("{}/multi/app:1", reg.addr);
    // No credentials: a clear error that says where they go.
    let out = kiln(home.path()).args(["pull", &name]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("authentication required") && err.contains("REGISTRY_AUTH_FILE"),
        "{err}"
    );

    let authfile = home.path().join("auth.json");
    std::fs::write(
        &authfile,
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    for (platform, want) in [("linux/amd64", &amd_digest), ("linux/arm64", &arm_digest)] {
        let out = ok(kiln(home.path())
            .env("REGISTRY_AUTH_FILE", &authfile)
            .args(["pull", "--platform", platform, &name])
            .output()
            .unwrap());
        assert_eq!(&out, want, "{platform}");
    }
    // The same credentials from docker's config.json.
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    std::fs::copy(&authfile, home.path().join(".docker/config.json")).unwrap();
    let out = ok(kiln(home.path())
        .args(["pull", "--platform", "linux/arm64", &name])
        .output()
        .unwrap());
    assert_eq!(&out, &arm_digest);
}

#[test]
fn bad_input_gets_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["pull", "Bad:Name"], "must be lowercase"),
        (&["pull", "x@sha256:abc"], "invalid digest"),
        (&["pull", "--platform", "linux", "x"], "invalid platform"),
        (
            &["--registry-mirror", "docker.io", "pull", "x"],
            "REGISTRY=MIRROR",
        ),
        (
            &["push", "never-pulled:1"],
            "no local image named `never-pulled:1`",
        ),
    ];
    for (args, want) in cases {
        let out = kiln(home.path()).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        // miette wraps long messages at the terminal's width: compare the
        // words, not the lines
        let words = err
            .replace('│', " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(words.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn registry_output_pushes_and_image_output_only_names() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let dest = format!("{}/kiln/static:1", reg.addr);
    let local = format!("{}/kiln/static:local", reg.addr);
    let pushed = kiln(home.path())
        .args([
            "base",
            "static",
            "-o",
            &format!("type=registry,name={dest}"),
        ])
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    // `type=image` without push=true names the image locally and sends
    // nothing.
    ok(kiln(home.path())
        .args(["base", "static", "-o", &format!("type=image,name={local}")])
        .output()
        .unwrap());
    // A fresh store pulls exactly the image that was pushed.
    let other = tempfile::tempdir().unwrap();
    let pulled = ok(kiln(other.path()).args(["pull", &dest]).output().unwrap());
    let first = Store::open(home.path().join("kiln")).unwrap();
    let tagged = first
        .get_tag(&dest)
        .unwrap()
        .expect("the pushed name is tagged locally");
    let named = first
        .get_tag(&local)
        .unwrap()
        .expect("type=image names the image locally");
    assert_eq!(named, tagged, "the same static base under both names");
    assert_eq!(pulled, tagged.to_string());
    // Nothing was pushed for the image-only output.
    let manifest = inspect(&reg, "kiln/static:1", None);
    assert_eq!(manifest["Digest"], tagged.to_string());
    let missing = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{local}"),
        ])
        .output()
        .unwrap();
    assert!(
        !missing.status.success(),
        "type=image without push=true pushed"
    );
}
