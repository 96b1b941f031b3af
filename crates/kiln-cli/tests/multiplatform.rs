//! Multi-platform builds (`--platform linux/amd64,linux/arm64`): one solve,
//! one OCI index with one manifest per platform (and one attestation
//! manifest per platform), `kiln images`/`save`/`push`/`pull` on it, read
//! back by skopeo from the loopback registry. The Kilnfile needs no
//! emulation: file operations only, so it runs on any host.

mod common;

use std::path::Path;

use common::{Registry, expect_ok, kiln_command};

const KILNFILE: &str = r#"
let shared = scratch().file("/shared.txt", "the same for every platform\n");
let app = static_base()
    .copy(shared.path("/shared.txt"), "/shared.txt")
    .copy(context().path("notes.txt"), "/notes.txt")
    .file("/platform", format!("{} on {}", target_platform(), build_platform().os()))
    .label("arch", target_platform().arch());
"#;

fn project(dir: &Path) -> std::path::PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Kilnfile"), KILNFILE).unwrap();
    std::fs::write(ctx.join("notes.txt"), "notes\n").unwrap();
    ctx
}

fn kiln(home: &Path, ctx: &Path, args: &[&str]) -> String {
    let o = kiln_command(home, ctx, args).output().unwrap();
    expect_ok(o, &format!("kiln {args:?}"))
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The blob `digest` of the OCI layout `dir`.
fn layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// (platform, digest) of the image entries of an index, in order.
fn images_of(index: &serde_json::Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["platform"]["os"] != "unknown")
        .map(|m| {
            (
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn two_platforms_make_one_index_that_save_push_and_pull_carry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    let home = dir.join("home");
    let layout = dir.join("layout");
    let archive = dir.join("app.tar");
    let meta = dir.join("meta.json");
    let digest = kiln(
        &home,
        &ctx,
        &[
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=mode=min",
            "-t",
            "app:multi",
            "-o",
            &format!("type=oci-layout,dest={}", layout.display()),
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            "--metadata-file",
            meta.to_str().unwrap(),
            ".",
        ],
    );
    // the layout names the index, which lists both images and an
    // attestation manifest for each
    let top = json(&std::fs::read(layout.join("index.json")).unwrap());
    assert_eq!(top["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(top["manifests"][0]["digest"], digest.as_str());
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index = json(&layout_blob(&layout, &digest));
    let images = images_of(&index);
    let platforms: Vec<&str> = images.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_ne!(images[0].1, images[1].1);
    for (p, d) in &images {
        let m = json(&layout_blob(&layout, d));
        let c = json(&layout_blob(
            &layout,
            m["config"]["digest"].as_str().unwrap(),
        ));
        assert_eq!(
            format!(
                "{}/{}",
                c["os"].as_str().unwrap(),
                c["architecture"].as_str().unwrap()
            ),
            *p
        );
        assert_eq!(
            c["config"]["Labels"]["arch"],
            p.trim_start_matches("linux/")
        );
        let att: Vec<_> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["annotations"]["vnd.docker.reference.digest"] == d.as_str())
            .collect();
        assert_eq!(att.len(), 1, "one attestation manifest for {p}: {index}");
        assert_eq!(
            att[0]["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        assert_eq!(att[0]["platform"]["os"], "unknown");
    }
    assert_eq!(index["manifests"].as_array().unwrap().len(), 4);
    // the archive holds the same index
    let listing = std::process::Command::new("tar")
        .args(["-tf", archive.to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for (_, d) in &images {
        assert!(
            listing.contains(d.trim_start_matches("sha256:")),
            "{listing}"
        );
    }
    // one solve: the steps both platforms share ran (were reported) once
    let meta = json(&std::fs::read(&meta).unwrap());
    assert_eq!(meta["image.digest"], digest.as_str());
    let per: Vec<usize> = meta["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["steps"].as_array().unwrap().len())
        .collect();
    let unique = meta["steps"].as_array().unwrap().len();
    assert!(unique < per.iter().sum::<usize>(), "{meta}");
    // static base, scratch, its file, context, both copies are shared; the
    // platform file differs
    assert_eq!(per.iter().sum::<usize>() - unique, per[0] - 1, "{meta}");

    // `kiln images`: one row with both platforms
    let rows = json(kiln(&home, &ctx, &["images", "--format", "json"]).as_bytes());
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"].as_str().unwrap().ends_with("app:multi"))
        .unwrap();
    assert_eq!(row["digest"], digest.as_str());
    assert_eq!(
        row["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    let table = kiln(&home, &ctx, &["images"]);
    assert!(table.contains("(linux/amd64, linux/arm64)"), "{table}");

    // `kiln tag` names the whole index
    assert_eq!(kiln(&home, &ctx, &["tag", "app:multi", "app:copy"]), digest);
    // `kiln save` carries the whole index, `--platform` one image
    let saved = dir.join("saved-layout");
    kiln(
        &home,
        &ctx,
        &[
            "save",
            "app:multi",
            "-o",
            &format!("type=oci-layout,dest={}", saved.display()),
        ],
    );
    let top = json(&std::fs::read(saved.join("index.json")).unwrap());
    assert_eq!(top["manifests"][0]["digest"], digest.as_str());
    assert_eq!(layout_blob(&saved, &digest), layout_blob(&layout, &digest));
    let rootfs = dir.join("arm-rootfs");
    kiln(
        &home,
        &ctx,
        &[
            "save",
            "app:multi",
            "--platform",
            "linux/arm64",
            "-o",
            &format!("type=local,dest={}", rootfs.display()),
        ],
    );
    let host = kiln_types::Platform::host();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("platform")).unwrap(),
        format!("linux/arm64 on {}", host.os)
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("shared.txt")).unwrap(),
        "the same for every platform\n"
    );
    let o = kiln_command(
        &home,
        &ctx,
        &["save", "app:multi", "--format", "docker", "-o", "x.tar"],
    )
    .output()
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--platform"), "{err}");

    // push carries the index; skopeo reads both manifests with their
    // platforms; a pull for arm64 into a fresh store gets arm64's manifest
    let reg = Registry::start();
    let remote = format!("{}/multi/app:1", reg.addr);
    let settings = ["--insecure-registry", reg.addr.as_str()];
    let mut push = vec!["push", "app:multi", remote.as_str()];
    push.extend(settings);
    assert_eq!(kiln(&home, &ctx, &push), digest);
    let raw = reg.raw("multi/app:1");
    assert_eq!(kiln_types::Digest::of(&raw).to_string(), digest);
    let remote_index = json(&raw);
    assert_eq!(images_of(&remote_index), images);
    assert_eq!(remote_index["manifests"].as_array().unwrap().len(), 4);
    let fresh = dir.join("fresh-home");
    let mut pull = vec!["pull", "--platform", "linux/arm64", remote.as_str()];
    pull.extend(settings);
    assert_eq!(kiln(&fresh, &ctx, &pull), images[1].1);
    let mut pull = vec!["pull", "--platform", "linux/amd64", remote.as_str()];
    pull.extend(settings);
    assert_eq!(kiln(&fresh, &ctx, &pull), images[0].1);

    // a no-op rebuild: every step cached, the same index
    let (again, err) = {
        let o = kiln_command(
            &home,
            &ctx,
            &[
                "build",
                "--progress",
                "plain",
                "--platform",
                "linux/amd64",
                "--platform",
                "linux/arm64",
                "--provenance=mode=min",
                "-t",
                "app:multi",
                ".",
            ],
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (expect_ok(o, "rebuild"), err)
    };
    assert_eq!(again, digest, "{err}");
    let steps = all_cached(&err);
    // the step that differs is named per platform, the shared ones once
    let names: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        names.contains(&"[linux/amd64] app: file /platform"),
        "{err}"
    );
    assert!(
        names.contains(&"[linux/arm64] app: file /platform"),
        "{err}"
    );
    assert_eq!(
        names.iter().filter(|n| n.contains("static_base")).count(),
        1,
        "{err}"
    );
}

/// `--attest-layout referrers` with two platforms: the pushed index lists
/// each platform's image and attestation manifest, and every image has its
/// referrers fallback tag (`sha256-<image hex>`) naming an index of its
/// attestation manifest, whose `subject` is that image.
#[test]
fn referrers_layout_pushes_a_fallback_tag_per_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    let reg = Registry::start();
    let digest = kiln(
        &dir.join("home"),
        &ctx,
        &[
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=mode=min",
            "--attest-layout",
            "referrers",
            "-o",
            &format!(
                "type=registry,name={}/multi/ref:1,registry.insecure=true",
                reg.addr
            ),
            ".",
        ],
    );
    let raw = reg.raw("multi/ref:1");
    assert_eq!(kiln_types::Digest::of(&raw).to_string(), digest);
    let index = json(&raw);
    // the referrer attestation manifests have an artifact type, no platform
    let entries = index["manifests"].as_array().unwrap();
    let images: Vec<(String, String)> = entries
        .iter()
        .filter(|m| m.get("artifactType").is_none())
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let arches: Vec<&str> = images.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(arches, ["amd64", "arm64"], "{index}");
    assert_eq!(entries.len(), 4, "{index}");
    for (platform, image) in &images {
        let hex = image.trim_start_matches("sha256:");
        let fallback = json(&reg.raw(&format!("multi/ref:sha256-{hex}")));
        let entries = fallback["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{platform}: {fallback}");
        assert_eq!(
            entries[0]["artifactType"], "application/vnd.docker.attestation.manifest.v1+json",
            "{platform}: {fallback}"
        );
        let att = json(&reg.raw(&format!(
            "multi/ref@{}",
            entries[0]["digest"].as_str().unwrap()
        )));
        assert_eq!(
            att["subject"]["digest"],
            image.as_str(),
            "{platform}: {att}"
        );
    }
}

/// `--cache-to` of a two-platform build is one cache holding both
/// platforms' steps (`mode=max`: every stage's): a fresh store importing it
/// rebuilds nothing.
#[test]
fn cache_export_of_two_platforms_holds_both() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    let cache = dir.join("cache");
    let build = |home: &str, cache_flag: &str, cache_value: String| {
        let o = kiln_command(
            &dir.join(home),
            &ctx,
            &[
                "build",
                "--progress",
                "plain",
                "--platform",
                "linux/amd64,linux/arm64",
                cache_flag,
                &cache_value,
                ".",
            ],
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (expect_ok(o, &format!("kiln build in {home}")), err)
    };
    let (digest, err) = build(
        "home",
        "--cache-to",
        format!("type=local,dest={},mode=max", cache.display()),
    );
    assert_eq!(
        err.matches("cache export to").count(),
        1,
        "one export for both platforms:\n{err}"
    );
    let (again, err) = build(
        "fresh-home",
        "--cache-from",
        format!("type=local,src={}", cache.display()),
    );
    assert_eq!(again, digest, "{err}");
    let steps = all_cached(&err);
    assert!(
        steps
            .iter()
            .any(|(s, _)| s == "[linux/amd64] app: file /platform"),
        "{err}"
    );
}

/// The steps of a build's plain progress, every one of them CACHED.
fn all_cached(err: &str) -> Vec<(String, String)> {
    let steps = common::steps(err);
    for (step, status) in &steps {
        assert_eq!(status, "CACHED", "{step} ran again:\n{err}");
    }
    steps
}

#[test]
fn outputs_that_hold_one_platform_are_refused_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    for kind in ["docker", "tar", "local"] {
        let dest = dir.join(format!("out-{kind}"));
        let o = kiln_command(
            &dir.join("home"),
            &ctx,
            &[
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "-o",
                &format!("type={kind},dest={}", dest.display()),
                ".",
            ],
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "type={kind} with two platforms succeeded"
        );
        // (miette may wrap the message)
        assert!(err.contains("`--platform linux/"), "{err}");
        assert!(err.contains("2 platforms"), "{err}");
        assert!(err.contains(&format!("type={kind}")), "{err}");
        assert!(!dest.exists(), "type={kind} wrote something");
    }
    let o = kiln_command(
        &dir.join("home"),
        &ctx,
        &["build", "--platform", "linux/amd64,linux/nope/x/y", "."],
    )
    .output()
    .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid platform `linux/nope/x/y`"));
}

#[test]
fn an_unprivileged_user_builds_the_same_index() {
    let euid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    assert_eq!(
        euid.unwrap(),
        0,
        "needs root to run kiln as `kilntest` (.ci/setup)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    // the images, not their attestations: provenance carries each build's
    // wall-clock times (tests/attestations.rs compares the attestations of
    // root and kilntest under SOURCE_DATE_EPOCH)
    let args = [
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "--provenance=false",
        "--sbom=false",
        "-t",
        "app:multi",
        ".",
    ];
    let as_root = kiln(&dir.join("root-home"), &ctx, &args);
    common::chown_kilntest(dir);
    let layout = dir.join("layout");
    let out = format!("type=oci-layout,dest={}", layout.display());
    let mut with_out = args.to_vec();
    with_out.splice(7..7, ["-o", out.as_str()]);
    let (stdout, _) = common::kilntest_ok(&dir.join("kilntest-home"), &ctx, &with_out);
    assert_eq!(
        stdout.trim(),
        as_root,
        "the same index for root and kilntest"
    );
    let index = json(&layout_blob(&layout, &as_root));
    let platforms: Vec<String> = images_of(&index).into_iter().map(|(p, _)| p).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
}
