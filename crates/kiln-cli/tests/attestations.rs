//! SBOM and provenance as their consumers read them: buildx's `imagetools
//! inspect` on an image kiln pushed to the loopback registry, skopeo
//! copying it, podman running it from an archive that holds the
//! attestations, `kiln sbom` on local and remote images, and no build
//! secret anywhere in what was attached.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Registry, kiln_in, ok_in, podman_run};

/// A value no document may contain: passed as a `--secret` and, by
/// mistake, as a build arg too.
const SECRET: &str = "kiln-test-secret-4f1d9c";

fn buildx() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/buildkit/buildx")
}

/// A context with a static busybox and a Kilnfile shipping it on the static base.
fn project(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox"))
        .expect("busybox-static (.ci/setup) is installed");
    std::fs::write(
        ctx.join("Kilnfile"),
        "let version = arg(\"VERSION\", \"1\");\n\
         let app = static_base()\n\
             .copy(context().path(\"busybox\"), \"/usr/local/bin/busybox\")\n\
             .label(\"org.example.version\", version)\n\
             .entrypoint([\"/usr/local/bin/busybox\", \"echo\", \"hello from kiln\"]);\n",
    )
    .unwrap();
    ctx
}

fn sha256_hex(bytes: &[u8]) -> String {
    kiln_types::Digest::of(bytes).hex()
}

/// The stdout of `kiln ARGS` in `ctx` with the store `home`, which must
/// succeed.
fn kiln_ok(home: &Path, ctx: &Path, args: &[&str]) -> String {
    let o = common::kiln_command(home, ctx, args).output().unwrap();
    assert!(
        o.status.success(),
        "kiln {args:?}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `buildx imagetools inspect --format FORMAT REF` with a throwaway config
/// that lets it talk plain HTTP to the loopback registry.
fn imagetools(dir: &Path, reference: &str, format: &str) -> serde_json::Value {
    let cfg = dir.join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let o = Command::new(buildx())
        .args(["imagetools", "inspect", "--format", format, reference])
        .env("DOCKER_CONFIG", &cfg)
        .env("HOME", dir)
        .output()
        .expect("run buildx");
    assert!(
        o.status.success(),
        "buildx imagetools inspect {format} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("buildx prints JSON")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files_under(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

#[test]
fn buildx_reads_what_kiln_pushed_and_no_secret_is_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    let reg = Registry::start();
    let remote = format!("{}/attest/app:1", reg.addr);
    let archive = dir.join("app.tar");
    let local = dir.join("rootfs");
    let o = common::kiln_command(
        &dir.join("home"),
        &ctx,
        &[
            "build",
            "--progress",
            "plain",
            "--provenance=mode=max",
            "--secret",
            "id=token,env=KILN_TEST_TOKEN",
            "--build-arg",
            "VERSION=2.5",
            "--build-arg",
            &format!("TOKEN={SECRET}"),
            "-t",
            "app:1",
            "-o",
            &format!("type=registry,name={remote},registry.insecure=true"),
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
            ".",
        ],
    )
    .env("KILN_TEST_TOKEN", SECRET)
    .output()
    .unwrap();
    assert!(
        o.status.success(),
        "kiln build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let digest = String::from_utf8(o.stdout).unwrap().trim().to_string();

    // buildx finds both attestations on the pushed index
    let sbom = imagetools(dir, &remote, "{{json .SBOM}}");
    let spdx = &sbom["SPDX"];
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3", "{sbom}");
    let busybox = std::fs::read(ctx.join("busybox")).unwrap();
    let file = spdx["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fileName"] == "./usr/local/bin/busybox")
        .unwrap_or_else(|| panic!("busybox not in the SBOM: {sbom}"));
    let sums = file["checksums"].to_string();
    assert!(sums.contains(&sha256_hex(&busybox)), "{file}");
    let names: Vec<&str> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"ca-certificates") && names.contains(&"tzdata"),
        "{names:?}"
    );
    let prov = imagetools(dir, &remote, "{{json .Provenance}}");
    let slsa = &prov["SLSA"];
    let kilnfile = std::fs::read(ctx.join("Kilnfile")).unwrap();
    assert_eq!(
        slsa["buildDefinition"]["externalParameters"]["configSource"]["digest"]["sha256"],
        sha256_hex(&kilnfile),
        "{prov}"
    );
    assert_eq!(
        slsa["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:VERSION"],
        "2.5",
        "{prov}"
    );

    // skopeo copies the image out of the index, and it is the one kiln built
    let copy = dir.join("copy");
    let o = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{remote}"),
            &format!("oci:{}:x", copy.display()),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("skopeo")
        .args(["inspect", &format!("oci:{}:x", copy.display())])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Digest"], digest.as_str());

    // podman runs it from the archive that holds the attestations
    assert_eq!(podman_run(dir, &archive).trim(), "hello from kiln");

    // the local export has the statements beside the root filesystem
    for f in ["sbom.spdx.json", "provenance.json"] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(local.join(f)).unwrap()).unwrap();
        assert_eq!(v["_type"], "https://in-toto.io/Statement/v1", "{f}");
        assert_eq!(
            v["subject"][0]["digest"]["sha256"],
            digest.trim_start_matches("sha256:"),
            "{f}"
        );
    }

    // no secret in any document: what buildx read, the archive's blobs
    // (statements are uncompressed JSON), the local statements, kiln sbom
    let mut docs = vec![sbom.to_string(), prov.to_string()];
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .unpack(&unpacked)
        .unwrap();
    let mut files = Vec::new();
    files_under(&unpacked, &mut files);
    files.push(local.join("sbom.spdx.json"));
    files.push(local.join("provenance.json"));
    let mut statements = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        if bytes.starts_with(br#"{"_type":"#) {
            statements += 1;
        }
        docs.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    assert!(
        statements >= 4,
        "the archive and the local export hold the statements"
    );
    let o = common::kiln_command(&dir.join("home"), &ctx, &["sbom", "app:1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    docs.push(String::from_utf8(o.stdout).unwrap());
    for d in &docs {
        assert!(!d.contains(SECRET), "a secret in an attestation:\n{d}");
    }
}

#[test]
fn kiln_sbom_prints_the_attached_sbom_or_generates_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    let home = dir.join("home");
    let run = |args: &[&str]| kiln_ok(&home, &ctx, args);
    run(&["build", "--progress", "plain", "--sbom", "-t", "app:1", "."]);
    let attached: serde_json::Value = serde_json::from_str(&run(&["sbom", "app:1"])).unwrap();
    let generated: serde_json::Value =
        serde_json::from_str(&run(&["sbom", "--generate", "app:1"])).unwrap();
    // the same generator: the same packages and files
    assert_eq!(attached["packages"], generated["packages"]);
    assert_eq!(attached["files"], generated["files"]);
    let cdx: serde_json::Value =
        serde_json::from_str(&run(&["sbom", "--format", "cyclonedx", "app:1"])).unwrap();
    assert_eq!(cdx["specVersion"], "1.6");
    assert!(
        cdx["components"]
            .to_string()
            .contains("/usr/local/bin/busybox")
    );

    // a remote image without attestations gets a generated SBOM
    let reg = Registry::start();
    let remote = format!("{}/plain/app:1", reg.addr);
    run(&[
        "build",
        "--progress",
        "plain",
        "--sbom=false",
        "--provenance=false",
        "-o",
        &format!("type=registry,name={remote},registry.insecure=true"),
        ".",
    ]);
    let fresh = dir.join("fresh");
    let o = common::kiln_command(
        &fresh,
        &ctx,
        &["sbom", "--insecure-registry", &reg.addr, &remote],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["spdxVersion"], "SPDX-2.3");
    assert!(v["files"].to_string().contains("./usr/local/bin/busybox"));
    let missing = common::kiln_command(
        &fresh,
        &ctx,
        &[
            "sbom",
            "--insecure-registry",
            &reg.addr,
            &format!("{}/nothing:1", reg.addr),
        ],
    )
    .output()
    .unwrap();
    assert!(!missing.status.success());
}

#[test]
fn defaults_and_flags_decide_what_is_attached() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    let index_of = |args: &[&str], name: &str| -> serde_json::Value {
        let dest = dir.join(name);
        let out = format!("type=oci,dest={}", dest.display());
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", &out, "."]);
        ok_in(&ctx, &all);
        archive_raw(&dest)
    };
    let predicate_types = |index: &serde_json::Value, name: &str| -> Vec<String> {
        // the attestation manifest of the archive, read from the tar
        let dest = dir.join(name);
        let unpacked = dir.join(format!("{name}.d"));
        std::fs::create_dir_all(&unpacked).unwrap();
        tar::Archive::new(std::fs::File::open(&dest).unwrap())
            .unpack(&unpacked)
            .unwrap();
        let att = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")
            .expect("an attestation manifest");
        let d = att["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(unpacked.join("blobs/sha256").join(d)).unwrap())
                .unwrap();
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l["annotations"]["in-toto.io/predicate-type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    // no flag: BuildKit's min provenance and, on the static base, the SBOM
    let i = index_of(&[], "default.tar");
    assert_eq!(i["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(
        predicate_types(&i, "default.tar"),
        [
            "https://spdx.dev/Document",
            "https://slsa.dev/provenance/v1"
        ]
    );
    let i = index_of(&["--provenance=true"], "provenance.tar");
    assert_eq!(
        predicate_types(&i, "provenance.tar"),
        [
            "https://spdx.dev/Document",
            "https://slsa.dev/provenance/v1"
        ]
    );
    // buildx's long form
    let i = index_of(
        &[
            "--attest",
            "type=sbom,disabled=true",
            "--attest",
            "type=provenance,mode=max",
        ],
        "attest.tar",
    );
    assert_eq!(
        predicate_types(&i, "attest.tar"),
        ["https://slsa.dev/provenance/v1"]
    );
    let i = index_of(
        &["--sbom=format=cyclonedx", "--provenance=false"],
        "cdx.tar",
    );
    assert_eq!(
        predicate_types(&i, "cdx.tar"),
        ["https://cyclonedx.org/bom"]
    );
    // none: the archive holds the plain image manifest
    let i = index_of(&["--sbom=false", "--provenance=false"], "none.tar");
    assert_eq!(
        i["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{i}"
    );
    // buildx's switch for the defaults: only what a flag asks for
    let dest = dir.join("nodefault.tar");
    let o = common::kiln_command(
        &ctx.join("home"),
        &ctx,
        &[
            "build",
            "--progress",
            "plain",
            "-o",
            &format!("type=oci,dest={}", dest.display()),
            ".",
        ],
    )
    .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let i = archive_raw(&dest);
    assert_eq!(
        i["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{i}"
    );
    // a flat tar holds the statements beside the root filesystem
    let flat = dir.join("flat.tar");
    ok_in(
        &ctx,
        &[
            "build",
            "--progress",
            "plain",
            "--sbom",
            "-o",
            &format!("type=tar,dest={}", flat.display()),
            ".",
        ],
    );
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&flat).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    for f in ["sbom.spdx.json", "provenance.json", "usr/local/bin/busybox"] {
        assert!(
            names.iter().any(|n| n.trim_start_matches("./") == f),
            "{f} not in {names:?}"
        );
    }
    // not on the static base: provenance alone by default, as BuildKit
    // (whose SBOM is opt-in everywhere)
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        scratch.join("Kilnfile"),
        "let app = scratch().copy(context().path(\"hello.txt\"), \"/hello.txt\");\n",
    )
    .unwrap();
    let dest = dir.join("scratch.tar");
    ok_in(
        &scratch,
        &[
            "build",
            "--progress",
            "plain",
            "-o",
            &format!("type=oci,dest={}", dest.display()),
            ".",
        ],
    );
    let i = archive_raw(&dest);
    assert_eq!(
        predicate_types(&i, "scratch.tar"),
        ["https://slsa.dev/provenance/v1"]
    );
    let bad = kiln_in(&ctx, &["build", "--attest", "type=nonsense", "."]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown attestation type `nonsense`"));
}

/// Copies `examples/NAME` (the files only) into `dir`.
fn example(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let ctx = dir.join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), ctx.join(e.file_name())).unwrap();
        }
    }
    ctx
}

#[test]
fn go_hello_sbom_names_the_go_toolchain_and_the_builder_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let reg = Registry::start();
    common::serve_debian_builder(&reg, dir);
    let ctx = example("go-hello", dir);
    let home = dir.join("home");
    let archive = dir.join("go.tar");
    let mirror = format!("docker.io={}", reg.addr);
    let o = common::kiln_command(
        &home,
        &ctx,
        &[
            "build",
            "--registry-mirror",
            &mirror,
            "--progress",
            "plain",
            "--sbom",
            "-t",
            "go-hello:1",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            ".",
        ],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = common::kiln_command(&home, &ctx, &["sbom", "go-hello:1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sbom: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let packages = sbom["packages"].as_array().unwrap();
    let purl = |p: &serde_json::Value| {
        p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let id_of = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        packages
            .iter()
            .find(|p| pred(p))
            .map(|p| p["SPDXID"].as_str().unwrap().to_string())
    };
    // the Go toolchain that built the binary, read from its build info
    let stdlib = id_of(&|p| purl(p).starts_with("pkg:golang/stdlib@1."))
        .unwrap_or_else(|| panic!("no Go stdlib: {sbom}"));
    // the builder stage and the digest of its Debian base
    let debian = id_of(&|p| purl(p).starts_with("pkg:oci/debian@sha256"))
        .unwrap_or_else(|| panic!("no base: {sbom}"));
    let rels = sbom["relationships"].as_array().unwrap();
    let has = |a: &str, t: &str, b: &str| {
        rels.iter().any(|r| {
            r["spdxElementId"] == a && r["relationshipType"] == t && r["relatedSpdxElement"] == b
        })
    };
    let file = sbom["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fileName"] == "./usr/local/bin/hello")
        .unwrap_or_else(|| panic!("no hello: {sbom}"));
    let file = file["SPDXID"].as_str().unwrap();
    let stage = rels
        .iter()
        .find(|r| {
            r["spdxElementId"] == file
                && r["relationshipType"] == "GENERATED_FROM"
                && has(
                    r["relatedSpdxElement"].as_str().unwrap(),
                    "GENERATED_FROM",
                    &debian,
                )
        })
        .unwrap_or_else(|| panic!("hello is not GENERATED_FROM a stage on debian: {sbom}"));
    assert!(
        stage["relatedSpdxElement"]
            .as_str()
            .unwrap()
            .contains("stage")
    );
    assert!(rels.iter().any(
        |r| r["relationshipType"] == "DEPENDS_ON" && r["relatedSpdxElement"] == stdlib.as_str()
    ));
    // provenance names the Debian base by digest too
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .unpack(&unpacked)
        .unwrap();
    let mut files = Vec::new();
    files_under(&unpacked, &mut files);
    let prov = files
        .iter()
        .filter_map(|f| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(f).unwrap()).ok()
        })
        .find(|v| v["predicateType"] == "https://slsa.dev/provenance/v1")
        .expect("a provenance statement in the archive");
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"].to_string();
    assert!(
        deps.contains("pkg:docker/docker.io/library/debian:bookworm"),
        "{deps}"
    );
}

/// The blob `digest` (`sha256:...`) of an unpacked OCI layout, as JSON.
fn blob_json(layout: &Path, digest: &serde_json::Value) -> serde_json::Value {
    let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// The image index of an OCI archive (through `index.json`'s one entry
/// when that is an index, as BuildKit writes it), unpacked into `into`.
fn archive_index(archive: &Path, into: &Path) -> serde_json::Value {
    std::fs::create_dir_all(into).unwrap();
    tar::Archive::new(std::fs::File::open(archive).unwrap())
        .unpack(into)
        .unwrap();
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(into.join("index.json")).unwrap()).unwrap();
    let first = &top["manifests"][0];
    if first["mediaType"] == "application/vnd.oci.image.index.v1+json" {
        blob_json(into, &first["digest"])
    } else {
        top
    }
}

/// The shape of an attestation: what a reader depends on, without digests,
/// sizes and contents.
fn attestation_shape(layout: &Path, index: &serde_json::Value) -> serde_json::Value {
    let entries = index["manifests"].as_array().unwrap();
    let att = entries
        .iter()
        .find(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")
        .unwrap_or_else(|| panic!("no attestation manifest in {index}"));
    let image = entries
        .iter()
        .find(|m| m["platform"]["os"] == "linux")
        .expect("the image entry");
    let m = blob_json(layout, &att["digest"]);
    let config = blob_json(layout, &m["config"]["digest"]);
    let layer = &m["layers"][0];
    let statement = blob_json(layout, &layer["digest"]);
    serde_json::json!({
        "index": index["mediaType"],
        "entries": entries.len(),
        "entry": {
            "mediaType": att["mediaType"],
            "platform": att["platform"],
            "annotations": att["annotations"].as_object().unwrap().keys().collect::<Vec<_>>(),
            "points at the image": att["annotations"]["vnd.docker.reference.digest"] == image["digest"],
        },
        "manifest": {
            "mediaType": m["mediaType"],
            "config": m["config"]["mediaType"],
            "config os/arch": [&config["os"], &config["architecture"]],
            "layer": layer["mediaType"],
            "layer annotations": layer["annotations"].as_object().unwrap().keys().collect::<Vec<_>>(),
        },
        "statement": {
            "_type": statement["_type"],
            "predicateType is the annotation": statement["predicateType"] == layer["annotations"]["in-toto.io/predicate-type"],
            // BuildKit leaves the subject to the index's reference
            // annotation; kiln names the image there too
            "subject is the image or implied": statement["subject"] == serde_json::json!([])
                || statement["subject"][0]["digest"]["sha256"].as_str().map(|h| format!("sha256:{h}"))
                    == image["digest"].as_str().map(str::to_string),
        },
    })
}

#[test]
fn the_attestation_layout_is_buildkits() {
    assert!(
        rustix_free_is_root(),
        "buildkitd's runc worker needs root: run as CI does"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    std::fs::write(
        ctx.join("Kilnfile"),
        "let app = scratch().copy(context().path(\"hello.txt\"), \"/hello.txt\");\n",
    )
    .unwrap();
    let reg = Registry::start();
    let bk = common::buildkit::Buildkitd::start(&reg.addr);
    let theirs = dir.join("buildkit.tar");
    let o = bk.build_dockerfile(
        &ctx,
        &theirs,
        &["--opt".into(), "attest:provenance=mode=max".into()],
    );
    assert!(
        o.status.success(),
        "buildctl build:\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        bk.log()
    );
    let ours = dir.join("kiln.tar");
    ok_in(
        &ctx,
        &[
            "build",
            "--progress",
            "plain",
            "--provenance=mode=max",
            "-o",
            &format!("type=oci,dest={}", ours.display()),
            ".",
        ],
    );
    let t = dir.join("t");
    let b = archive_index(&theirs, &t);
    let o = dir.join("o");
    let k = archive_index(&ours, &o);
    assert_eq!(attestation_shape(&o, &k), attestation_shape(&t, &b));
}

/// Whether the test runs as root (the uid of `/proc/self`).
fn rustix_free_is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn a_no_op_rebuild_reuses_its_attestations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    let index = |name: &str| {
        let dest = dir.join(name);
        ok_in(
            &ctx,
            &[
                "build",
                "--progress",
                "plain",
                "--provenance=true",
                "-o",
                &format!("type=oci,dest={}", dest.display()),
                ".",
            ],
        );
        archive_index(&dest, &dir.join(format!("{name}.d")))
    };
    let first = index("1.tar");
    // provenance carries wall-clock times: a second later they would differ
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = index("2.tar");
    assert_eq!(first, second, "the no-op rebuild made new attestations");
    // a changed build arg is a new provenance (mode=max records it)
    let dest = dir.join("3.tar");
    ok_in(
        &ctx,
        &[
            "build",
            "--progress",
            "plain",
            "--provenance=mode=max",
            "--build-arg",
            "VERSION=9",
            "-o",
            &format!("type=oci,dest={}", dest.display()),
            ".",
        ],
    );
    let third = archive_index(&dest, &dir.join("3.d"));
    assert_ne!(
        first["manifests"][1]["digest"],
        third["manifests"][1]["digest"]
    );
}

#[test]
fn an_unprivileged_user_gets_the_same_attestations() {
    assert!(
        rustix_free_is_root(),
        "needs root to run kiln as `kilntest` (.ci/setup)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    common::chown_kilntest(dir);
    let home = dir.join("kilntest-home");
    let archive = dir.join("app.tar");
    let out = format!("type=oci,dest={}", archive.display());
    common::kilntest_ok(
        &home,
        &ctx,
        &[
            "build",
            "--progress",
            "plain",
            "--sbom",
            "-t",
            "app:1",
            "-o",
            &out,
            ".",
        ],
    );
    let index = archive_index(&archive, &dir.join("unpacked"));
    let shape = attestation_shape(&dir.join("unpacked"), &index);
    assert_eq!(shape["entries"], 2, "{shape}");
    let (sbom, _) = common::kilntest_ok(&home, &ctx, &["sbom", "app:1"]);
    let v: serde_json::Value = serde_json::from_str(&sbom).unwrap();
    assert!(
        v["files"].to_string().contains("./usr/local/bin/busybox"),
        "{v}"
    );
    // the same SBOM as root's build of the same project
    let root_home = dir.join("root-home");
    let o = common::kiln_command(
        &root_home,
        &ctx,
        &["build", "--progress", "plain", "--sbom", "-t", "app:1", "."],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = common::kiln_command(&root_home, &ctx, &["sbom", "app:1"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), sbom);
}

/// `skopeo inspect --raw` of a reference on the loopback registry.
fn raw(reference: &str) -> serde_json::Value {
    let o = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn referrers_layout_pushes_the_image_and_a_subject_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    let reg = Registry::start();
    let repo = format!("{}/referrers/app", reg.addr);
    let (digest, _) = ok_in(
        &ctx,
        &[
            "build",
            "--progress",
            "plain",
            "--provenance=true",
            "--attest-layout",
            "referrers",
            "-o",
            &format!("type=registry,name={repo}:1,registry.insecure=true"),
            ".",
        ],
    );
    let digest = digest.trim();
    // the tag names the image manifest itself
    let image = raw(&format!("{repo}:1"));
    assert_eq!(
        image["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{image}"
    );
    // the referrers tag schema's index lists the attestation manifest
    let hex = digest.trim_start_matches("sha256:");
    let fallback = raw(&format!("{repo}:sha256-{hex}"));
    let entry = &fallback["manifests"][0];
    assert_eq!(
        entry["artifactType"], "application/vnd.docker.attestation.manifest.v1+json",
        "{fallback}"
    );
    let att = raw(&format!("{repo}@{}", entry["digest"].as_str().unwrap()));
    assert_eq!(att["subject"]["digest"], digest, "{att}");
    let types: Vec<&str> = att["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        types,
        [
            "https://spdx.dev/Document",
            "https://slsa.dev/provenance/v1"
        ]
    );
}

/// Every blob an index (or manifest) names, itself included, read from the
/// store under `home`; panics naming the first one missing.
fn assert_closure_present(home: &Path, top: &str) -> usize {
    let blob = |d: &str| {
        home.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let mut todo = vec![top.to_string()];
    let mut n = 0;
    while let Some(d) = todo.pop() {
        let bytes = std::fs::read(blob(&d)).unwrap_or_else(|e| panic!("blob {d} is gone: {e}"));
        n += 1;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        for key in ["manifests", "layers"] {
            for e in v[key].as_array().into_iter().flatten() {
                todo.push(e["digest"].as_str().unwrap().to_string());
            }
        }
        if let Some(c) = v["config"]["digest"].as_str() {
            todo.push(c.to_string());
        }
    }
    n
}

#[test]
fn cache_prune_keeps_the_attestations_of_named_images() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    let home = dir.join("home");
    let run = |args: &[&str]| kiln_ok(&home, &ctx, args);
    // `kiln cache check` reports on stderr
    let check = || {
        let o = common::kiln_command(&home, &ctx, &["cache", "check"])
            .output()
            .unwrap();
        assert!(o.status.success());
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(e.contains("the store is consistent"), "{e}");
    };
    run(&[
        "build",
        "--progress",
        "plain",
        "--sbom",
        "--provenance=mode=max",
        "-t",
        "app:1",
        ".",
    ]);
    // the image's attestation index, as kiln-oci recorded it
    let recs: Vec<_> = std::fs::read_dir(home.join("records/attestations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(recs.len(), 1, "one attested image: {recs:?}");
    let index = std::fs::read_to_string(&recs[0]).unwrap();
    // index, image manifest, config, layer, attestation manifest, `{}`, 2 statements
    assert!(assert_closure_present(&home, index.trim()) >= 8);
    let before = run(&["sbom", "app:1"]);

    run(&["cache", "prune"]);
    check();
    assert!(assert_closure_present(&home, index.trim()) >= 8);
    assert_eq!(run(&["sbom", "app:1"]), before);
    // the SBOM documents kept to make no-op rebuilds cheap are build cache
    let cached = std::fs::read_dir(home.join("records/sbom")).map_or(0, |d| d.count());
    assert_eq!(cached, 0, "prune leaves `sbom` records");

    // a multi-platform index's tag: every platform's manifest and its
    // attestation manifest stay
    // (no binary: busybox is for the host only)
    let multi_ctx = dir.join("multi");
    std::fs::create_dir_all(&multi_ctx).unwrap();
    std::fs::write(multi_ctx.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        multi_ctx.join("Kilnfile"),
        "let app = static_base().copy(context().path(\"hello.txt\"), \"/hello.txt\");\n",
    )
    .unwrap();
    let o = common::kiln_command(
        &home,
        &multi_ctx,
        &[
            "build",
            "--progress",
            "plain",
            "--provenance",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "multi:1",
            ".",
        ],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tags: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("tags.json")).unwrap()).unwrap();
    let multi = tags.to_string();
    run(&["cache", "prune"]);
    check();
    let tags: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("tags.json")).unwrap()).unwrap();
    assert_eq!(tags.to_string(), multi, "no name was dropped");
    let top = tags["tags"]["multi:1"]
        .as_str()
        .expect("the multi-platform tag")
        .to_string();
    // index, 2 x (image manifest, config, layer, attestation manifest, `{}`, statement)
    assert!(assert_closure_present(&home, &top) >= 13);
    let saved = dir.join("multi.tar");
    run(&["save", "-o", saved.to_str().unwrap(), "multi:1"]);
    let o = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", saved.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("attestation-manifest"),
        "the saved index keeps its attestation manifests"
    );
}

/// The digest `tags.json` of the store under `home` gives `name`.
fn tag_of(home: &Path, name: &str) -> String {
    let tags: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("tags.json")).unwrap()).unwrap();
    tags["tags"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no tag {name}: {tags}"))
        .to_string()
}

/// The raw top manifest (the index when there is one) of an OCI archive.
fn archive_raw(archive: &Path) -> serde_json::Value {
    let o = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The one image entry and the attestation manifest entries of an index.
fn attested_entries(index: &serde_json::Value) -> (serde_json::Value, Vec<serde_json::Value>) {
    let entries = index["manifests"].as_array().expect("an index");
    let (att, images): (Vec<_>, Vec<_>) = entries
        .iter()
        .cloned()
        .partition(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest");
    assert_eq!(images.len(), 1, "one image: {index}");
    (images[0].clone(), att)
}

#[test]
fn a_tag_carries_its_attestations_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ctx = project(dir);
    let home = dir.join("home");
    let run = |args: &[&str]| kiln_ok(&home, &ctx, args).trim().to_string();
    // no flag: min provenance and, on the static base, the SBOM; the tag
    // names the index of the image and its attestation manifest
    let image = run(&["build", "--progress", "plain", "-t", "app:1", "."]);
    let index = tag_of(&home, "app:1");
    assert_ne!(index, image, "the tag names the index");
    let listed: serde_json::Value =
        serde_json::from_str(&run(&["images", "--format", "json"])).unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "app:1")
        .unwrap_or_else(|| panic!("app:1 not listed: {listed}"));
    assert_eq!(row["digest"], index.as_str(), "{row}");

    // a no-op rebuild: the same image manifest and the same index, though
    // provenance has wall-clock times (they are the first build's)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = run(&["build", "--progress", "plain", "-t", "app:1", "."]);
    assert_eq!(again, image, "the image manifest digest is stable");
    assert_eq!(tag_of(&home, "app:1"), index, "the index is stable");

    // `kiln tag` names the whole; `kiln sbom` reads the attached SBOM of
    // either name
    assert_eq!(run(&["tag", "app:1", "app:2"]), index);
    assert_eq!(tag_of(&home, "app:2"), index);
    let attached: serde_json::Value = serde_json::from_str(&run(&["sbom", "app:2"])).unwrap();
    assert_eq!(
        attached["name"], "app:1",
        "the attached SBOM (named by the build), not a generated one"
    );

    // `kiln push` of the name pushes the index: buildx reads both
    let reg = Registry::start();
    let remote = format!("{}/tagged/app:1", reg.addr);
    let pushed = run(&["push", "--insecure-registry", &reg.addr, "app:1", &remote]);
    assert_eq!(pushed, index);
    let (entry, att) = attested_entries(&raw(&remote));
    assert_eq!(entry["digest"], image.as_str());
    assert_eq!(att.len(), 1);
    assert_eq!(
        att[0]["annotations"]["vnd.docker.reference.digest"],
        image.as_str()
    );
    let sbom = imagetools(dir, &remote, "{{json .SBOM}}");
    assert_eq!(sbom["SPDX"]["spdxVersion"], "SPDX-2.3", "{sbom}");
    let prov = imagetools(dir, &remote, "{{json .Provenance}}");
    assert!(
        prov["SLSA"]["runDetails"]["metadata"]["startedOn"].is_string(),
        "min provenance keeps the build's times: {prov}"
    );

    // `kiln save`: an OCI archive holds the index, podman runs it; a docker
    // archive holds the image alone, as BuildKit's docker exporter writes it
    let oci = dir.join("app.tar");
    run(&["save", "-o", oci.to_str().unwrap(), "app:1"]);
    let top = archive_raw(&oci);
    let (entry, att) = attested_entries(&top);
    assert_eq!(entry["digest"], image.as_str());
    assert_eq!(att.len(), 1);
    assert_eq!(podman_run(dir, &oci).trim(), "hello from kiln");
    let layout = dir.join("layout");
    run(&[
        "save",
        "-o",
        &format!("type=oci-layout,dest={}", layout.display()),
        "app:1",
    ]);
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], index.as_str(), "{idx}");
    let docker = dir.join("docker.tar");
    run(&[
        "save",
        "--format",
        "docker",
        "-o",
        docker.to_str().unwrap(),
        "app:1",
    ]);
    let mut names = Vec::new();
    let mut manifest = serde_json::Value::Null;
    for e in tar::Archive::new(std::fs::File::open(&docker).unwrap())
        .entries()
        .unwrap()
    {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        if p == "manifest.json" {
            manifest = serde_json::from_reader(&mut e).unwrap();
        }
        names.push(p);
    }
    assert_eq!(manifest.as_array().map(Vec::len), Some(1), "{manifest}");
    let tar_text = names.join("\n");
    for s in [&att[0]["digest"], &entry["digest"]] {
        let hex = s.as_str().unwrap().trim_start_matches("sha256:");
        assert!(
            !tar_text.contains(hex),
            "{hex} in the docker archive: {names:?}"
        );
    }

    // `kiln cache prune` keeps what the name holds
    run(&["cache", "prune"]);
    assert!(assert_closure_present(&home, &index) >= 8);

    // both off: the tag names the plain image manifest, and so do its push
    // and save
    let plain = run(&[
        "build",
        "--progress",
        "plain",
        "--provenance=false",
        "--sbom=false",
        "-t",
        "app:3",
        ".",
    ]);
    assert_eq!(plain, image, "the same image");
    assert_eq!(tag_of(&home, "app:3"), image);
    let remote3 = format!("{}/tagged/app:3", reg.addr);
    run(&["push", "--insecure-registry", &reg.addr, "app:3", &remote3]);
    assert_eq!(
        raw(&remote3)["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let saved = dir.join("plain.tar");
    run(&["save", "-o", saved.to_str().unwrap(), "app:3"]);
    assert_eq!(
        archive_raw(&saved)["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}
