//! kiln's BuildKit frontend on a real BuildKit (v0.32.2 from
//! `../shared/peers/buildkit/`, issue #19): one buildkitd as root with the
//! runc worker and one loopback `docker-registry` for every case. The
//! frontend binary is linked statically and put on kiln's static base by
//! kiln itself (`frontend/gateway/Kilnfile`, as `build-image.sh` does), and
//! pushed to the registry; BuildKit pulls it through each Kilnfile's
//! `// syntax=` line. `docker.io` is mirrored to the registry, which serves
//! the debootstrapped Debian builder as `library/debian:bookworm`.
//!
//! The cases build through `buildctl` and `buildx build` (remote driver):
//! go-hello, cache-secret (a secret and cache mounts), a two-stage build
//! with a build argument and a target that is not the last; each result
//! runs under podman (or its files are read) and has kiln's image config.
//! Then what a user sees when things go wrong (a failing step at its
//! Kilnfile line, a compile error at its line, an unknown target with
//! kiln's help and no line, a warning through the gateway), subrequests
//! (`buildx build --call targets|outline`, `--check`), named contexts,
//! `no-cache` and a cache import.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Registry;
use common::buildkit::Buildkitd;

const PEERS: &str = "../../../shared/peers/buildkit";

fn peer(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(PEERS).join(name)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// `buildctl build` of the Kilnfile in `dir` with its syntax line;
/// `extra` are further flags (outputs, options, secrets).
fn build(bk: &Buildkitd, dir: &Path, extra: &[&str]) -> Output {
    let ctx = format!("context={}", dir.display());
    let df = format!("dockerfile={}", dir.display());
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        &ctx,
        "--local",
        &df,
        "--opt",
        "filename=Kilnfile",
    ];
    args.extend_from_slice(extra);
    bk.run(&args)
}

fn ok(o: Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "{what} failed:\n{err}\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

fn kiln(home: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("KILN_REGISTRY_MIRROR")
        .output()
        .unwrap();
    ok(o, &format!("kiln {args:?}"))
}

/// The frontend binary linked statically (as `build-image.sh` links it),
/// built with the dev profile into this workspace's target directory.
fn static_frontend() -> PathBuf {
    let kiln_bin = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
    // target/<profile>/kiln
    let target_dir = kiln_bin.parent().unwrap().parent().unwrap().to_path_buf();
    let triple = {
        let o = Command::new("rustc").arg("-vV").output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
            .expect("rustc -vV names the host")
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "build",
            "--locked",
            "-p",
            "kiln-frontend-gateway",
            "--bin",
            "kiln-frontend",
            "--target",
            &triple,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .output()
        .unwrap();
    ok(o, "cargo build of the static kiln-frontend");
    target_dir.join(&triple).join("debug/kiln-frontend")
}

/// Builds the frontend image with kiln and pushes it; its reference.
fn push_frontend(reg: &Registry, home: &Path, scratch: &Path) -> String {
    let ctx = scratch.join("frontend-ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let bin = ctx.join("kiln-frontend");
    std::fs::copy(static_frontend(), &bin).unwrap();
    // The dev build's debug info is most of its 120 MB: BuildKit pulls
    // the image for every case's first solve.
    let st = Command::new("strip").arg(&bin).status().expect("run strip");
    assert!(st.success(), "strip failed");
    let name = format!("{}/kiln-frontend:e2e", reg.addr);
    let kilnfile = workspace().join("frontend/gateway/Kilnfile");
    kiln(
        home,
        &[
            "build",
            "-f",
            kilnfile.to_str().unwrap(),
            ctx.to_str().unwrap(),
            "-o",
            &format!("type=registry,name={name}"),
        ],
    );
    name
}

/// The Debian builder as `REGISTRY/library/debian:bookworm`.
fn push_builder(reg: &Registry, home: &Path) {
    let rootfs = common::debian_builder_rootfs();
    kiln(home, &["import", &rootfs, "-t", "debian-builder:bookworm"]);
    let dest = format!("{}/library/debian:bookworm", reg.addr);
    kiln(home, &["push", "-q", "debian-builder:bookworm", &dest]);
}

/// A copy of `examples/NAME` (or an empty directory) whose Kilnfile starts
/// with the syntax line naming `frontend`.
fn project(
    scratch: &Path,
    name: &str,
    example: Option<&str>,
    kilnfile: &str,
    frontend: &str,
) -> PathBuf {
    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(ex) = example {
        for e in std::fs::read_dir(workspace().join("examples").join(ex)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let body = match example {
        Some(_) => std::fs::read_to_string(dir.join("Kilnfile")).unwrap(),
        None => kilnfile.to_string(),
    };
    // The examples' own syntax line names a registry these machines cannot
    // reach: replace it.
    let body: String = body
        .lines()
        .filter(|l| !l.starts_with("// syntax="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        dir.join("Kilnfile"),
        format!("// syntax={frontend}\n{body}"),
    )
    .unwrap();
    dir
}

/// The image config in the OCI archive `tar`.
fn oci_config(tar: &Path, scratch: &Path) -> serde_json::Value {
    let out = scratch.join(format!(
        "unpacked-{}",
        tar.file_stem().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&out).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    };
    let blob = |d: &serde_json::Value| {
        let d = d.as_str().unwrap();
        out.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = json(out.join("index.json"));
    let manifest = json(blob(&index["manifests"][0]["digest"]));
    json(blob(&manifest["config"]["digest"]))
}

#[test]
fn kilnfiles_build_on_buildkit_through_the_syntax_line() {
    if !is_root() {
        // buildkitd's runc worker needs root (CI runs as root).
        println!("skipped: buildkitd with the runc worker needs root");
        return;
    }
    for tool in ["buildkitd", "buildctl", "buildx"] {
        assert!(
            peer(tool).is_file(),
            "`{}` is missing: ../shared/peers/buildkit/ holds BuildKit v0.32.2",
            peer(tool).display()
        );
    }
    let scratch_dir = tempfile::tempdir().unwrap();
    let scratch = scratch_dir.path();
    let home = scratch.join("kiln-home");
    let reg = Registry::start();
    push_builder(&reg, &home);
    let frontend = push_frontend(&reg, &home, scratch);
    let bk = Buildkitd::start(&reg.addr);

    // go-hello through buildctl: the binary on the static base, kiln's config.
    let go = project(scratch, "go-hello", Some("go-hello"), "", &frontend);
    let go_tar = scratch.join("go-hello.tar");
    let out = format!("type=oci,dest={}", go_tar.display());
    ok(
        build(&bk, &go, &["--output", &out]),
        "buildctl build of go-hello",
    );
    assert_eq!(
        common::podman_run(scratch, &go_tar).trim(),
        "hello from a static Go binary built by kiln"
    );
    let cfg = oci_config(&go_tar, scratch);
    assert_eq!(cfg["config"]["User"], "65532", "{cfg}");
    assert_eq!(cfg["config"]["WorkingDir"], "/home/nonroot", "{cfg}");
    assert_eq!(
        cfg["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/hello"]),
        "{cfg}"
    );
    let env = cfg["config"]["Env"].to_string();
    assert!(
        env.contains("SSL_CERT_FILE="),
        "the static base's env: {cfg}"
    );

    // cache-secret: the secret from a file, cache mounts, no network.
    let cs = project(scratch, "cache-secret", Some("cache-secret"), "", &frontend);
    let token = scratch.join("token");
    std::fs::write(&token, "s3cr3t-of-17bytes").unwrap();
    let cs_out = scratch.join("cache-secret-out");
    let secret = format!("id=token,src={}", token.display());
    let out = format!("type=local,dest={}", cs_out.display());
    ok(
        build(&bk, &cs, &["--secret", &secret, "--output", &out]),
        "buildctl build of cache-secret",
    );
    assert_eq!(
        std::fs::read_to_string(cs_out.join("greeting")).unwrap(),
        "hello, the build saw a token of 17 bytes\n"
    );

    // Two stages, a build argument and a target that is not the last.
    let stages = project(
        scratch,
        "stages",
        None,
        r#"let greeting = arg("GREETING", "hello");

/// Writes the message.
let gen = image("docker.io/library/debian:bookworm")
    .run(format!("mkdir -p /out && echo '{} from stage one' > /out/msg", greeting));

/// Shows the message.
let app = image("docker.io/library/debian:bookworm")
    .copy(gen.path("/out/msg"), "/msg")
    .entrypoint(["/bin/cat", "/msg"]);

/// Shows it louder.
let debug = app.entrypoint(["/bin/sh", "-c", "echo debug: $(cat /msg)"]);
"#,
        &frontend,
    );
    let st_tar = scratch.join("stages.tar");
    let out = format!("type=oci,dest={}", st_tar.display());
    ok(
        build(
            &bk,
            &stages,
            &[
                "--opt",
                "target=app",
                "--opt",
                "build-arg:GREETING=howdy",
                "--output",
                &out,
            ],
        ),
        "buildctl build of the app target",
    );
    assert_eq!(
        common::podman_run(scratch, &st_tar).trim(),
        "howdy from stage one"
    );

    // Several platforms: BuildKit's multi-platform result (a ref and a
    // config per platform, `refs.platforms`), exported as one index with a
    // manifest per platform, and no "not multi-platform" warning. File
    // operations only, so no emulation is needed.
    let multi = project(
        scratch,
        "multi",
        None,
        r#"let app = static_base()
    .file("/platform", format!("{}", target_platform()))
    .label("arch", target_platform().arch());
"#,
        &frontend,
    );
    let mp_tar = scratch.join("multi.tar");
    let out = format!("type=oci,dest={}", mp_tar.display());
    let err = ok(
        build(
            &bk,
            &multi,
            &[
                "--opt",
                "platform=linux/amd64,linux/arm64",
                "--output",
                &out,
            ],
        ),
        "buildctl build for two platforms",
    );
    assert!(
        !err.contains("result is not multi-platform"),
        "BuildKit warned:\n{err}"
    );
    let unpacked = scratch.join("unpacked-multi");
    std::fs::create_dir_all(&unpacked).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&mp_tar)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(st.success());
    let read = |d: &serde_json::Value| -> serde_json::Value {
        let d = d.as_str().unwrap().trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(unpacked.join("blobs/sha256").join(d)).unwrap())
            .unwrap()
    };
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let index = if top["manifests"][0]["mediaType"] == "application/vnd.oci.image.index.v1+json" {
        read(&top["manifests"][0]["digest"])
    } else {
        top
    };
    let images: Vec<&serde_json::Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["platform"]["os"] != "unknown")
        .collect();
    let platforms: Vec<String> = images
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{index}");
    for m in &images {
        let manifest = read(&m["digest"]);
        let cfg = read(&manifest["config"]["digest"]);
        assert_eq!(cfg["architecture"], m["platform"]["architecture"], "{cfg}");
        assert_eq!(
            cfg["config"]["Labels"]["arch"], m["platform"]["architecture"],
            "{cfg}"
        );
    }

    // The same through buildx's remote driver (no Docker daemon).
    let docker_config = scratch.join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let buildx = |args: &[&str]| {
        Command::new(peer("buildx"))
            .args(args)
            .env("DOCKER_CONFIG", &docker_config)
            .output()
            .expect("run buildx")
    };
    ok(
        buildx(&[
            "create", "--name", "kiln-e2e", "--driver", "remote", &bk.sock,
        ]),
        "buildx create",
    );
    let bx_tar = scratch.join("stages-buildx.tar");
    ok(
        buildx(&[
            "build",
            "--builder",
            "kiln-e2e",
            "--progress",
            "plain",
            "-f",
            stages.join("Kilnfile").to_str().unwrap(),
            "--build-arg",
            "GREETING=hi",
            "--target",
            "app",
            "--output",
            &format!("type=oci,dest={}", bx_tar.display()),
            stages.to_str().unwrap(),
        ]),
        "buildx build of the app target",
    );
    assert_eq!(
        common::podman_run(scratch, &bx_tar).trim(),
        "hi from stage one"
    );
    let cfg = oci_config(&bx_tar, scratch);
    assert_eq!(
        cfg["config"]["Entrypoint"],
        serde_json::json!(["/bin/cat", "/msg"]),
        "{cfg}"
    );

    // go-hello and cache-secret through buildx too (their steps are
    // cached by now: this is buildx's side of the protocol).
    let bx_go = scratch.join("go-hello-buildx.tar");
    ok(
        buildx(&[
            "build",
            "--builder",
            "kiln-e2e",
            "-f",
            go.join("Kilnfile").to_str().unwrap(),
            "--output",
            &format!("type=oci,dest={}", bx_go.display()),
            go.to_str().unwrap(),
        ]),
        "buildx build of go-hello",
    );
    assert_eq!(
        common::podman_run(scratch, &bx_go).trim(),
        "hello from a static Go binary built by kiln"
    );
    assert_eq!(oci_config(&bx_go, scratch)["config"]["User"], "65532");
    let bx_cs = scratch.join("cache-secret-buildx");
    ok(
        buildx(&[
            "build",
            "--builder",
            "kiln-e2e",
            "-f",
            cs.join("Kilnfile").to_str().unwrap(),
            "--secret",
            &secret,
            "--output",
            &format!("type=local,dest={}", bx_cs.display()),
            cs.to_str().unwrap(),
        ]),
        "buildx build of cache-secret",
    );
    assert_eq!(
        std::fs::read_to_string(bx_cs.join("greeting")).unwrap(),
        "hello, the build saw a token of 17 bytes\n"
    );

    // A failing step: BuildKit shows the Kilnfile at the step's line, which
    // needs the op digests kiln sent to be the ones BuildKit computes.
    let failing = project(
        scratch,
        "failing",
        None,
        "let app = image(\"docker.io/library/debian:bookworm\")\n    .run(\"echo about to fail && exit 3\");\n",
        &frontend,
    );
    let o = build(&bk, &failing, &[]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    println!("--- a failing step:\n{err}");
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("Kilnfile:3"), "no location:\n{err}");
    assert!(
        err.lines()
            .any(|l| l.contains(">>>") && l.contains("echo about to fail")),
        "no snippet at the step:\n{err}"
    );

    // An unknown target: kiln's help, and no line at all (not the syntax
    // line).
    let o = build(&bk, &stages, &["--opt", "target=apq"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    println!("--- an unknown target:\n{err}");
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("unknown target `apq`"), "{err}");
    assert!(err.contains("did you mean `app`?"), "{err}");
    assert!(
        !err.contains(">>>"),
        "an unknown target has no line:\n{err}"
    );

    // A compile error at its line.
    let broken = project(
        scratch,
        "broken",
        None,
        "let app = image(\"docker.io/library/debian:bookworm\")\n    .run(42);\n",
        &frontend,
    );
    let o = build(&bk, &broken, &[]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    println!("--- a compile error:\n{err}");
    assert!(!o.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains(">>>") && l.contains(".run(42)")),
        "no snippet at the error:\n{err}"
    );

    // A warning (an unused build argument) reaches the client.
    let err = ok(
        build(&bk, &stages, &["--opt", "build-arg:UNUSED=1"]),
        "buildctl build with an unused build argument",
    );
    println!("--- a warning:\n{err}");
    assert!(
        err.lines().any(|l| l.contains("WARN:")
            && l.contains("`UNUSED` is not used")
            && l.contains("kiln::unused-build-arg")),
        "no warning:\n{err}"
    );

    // Subrequests: `buildx build --call targets|outline|check`.
    let call = |extra: &[&str]| {
        let mut args = vec!["build", "--builder", "kiln-e2e", "-f"];
        let kf = stages.join("Kilnfile");
        args.push(kf.to_str().unwrap());
        args.extend_from_slice(extra);
        args.push(stages.to_str().unwrap());
        let o = buildx(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        println!("--- buildx {extra:?}:\n{text}");
        (o.status.success(), text)
    };
    let (good, text) = call(&["--call", "targets"]);
    assert!(good, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("app ") && l.contains("Shows the message.")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("debug (default)") && l.contains("Shows it louder.")),
        "{text}"
    );
    let (good, text) = call(&["--call", "outline", "--target", "app"]);
    assert!(good, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("GREETING") && l.contains("hello")),
        "{text}"
    );
    let (good, text) = call(&["--check", "--build-arg", "UNUSED=1"]);
    assert!(!good, "a warning fails --check:\n{text}");
    assert!(text.contains("kiln::unused-build-arg"), "{text}");
    let (good, text) = call(&["--check"]);
    assert!(good, "no warnings, no failure:\n{text}");

    // Named contexts replace an image: with another image (buildctl's
    // `context:` option) and with a directory of the client (buildx's
    // `--build-context`).
    let named = project(
        scratch,
        "named",
        None,
        "let app = image(\"example.invalid/base:1\")\n    .copy(context().path(\"f\"), \"/f\");\n",
        &frontend,
    );
    std::fs::write(named.join("f"), "from the context\n").unwrap();
    let named_out = scratch.join("named-out");
    let ctx_opt = format!("context:example.invalid/base:1=docker-image://{frontend}");
    let out = format!("type=local,dest={}", named_out.display());
    ok(
        build(&bk, &named, &["--opt", &ctx_opt, "--output", &out]),
        "buildctl build with a named image context",
    );
    assert!(named_out.join("usr/local/bin/kiln-frontend").is_file());
    assert!(named_out.join("f").is_file());
    let altbase = scratch.join("altbase");
    std::fs::create_dir_all(&altbase).unwrap();
    std::fs::write(altbase.join("from-local"), "x").unwrap();
    let named_out2 = scratch.join("named-out2");
    ok(
        buildx(&[
            "build",
            "--builder",
            "kiln-e2e",
            "-f",
            named.join("Kilnfile").to_str().unwrap(),
            "--build-context",
            &format!("example.invalid/base:1={}", altbase.display()),
            "--output",
            &format!("type=local,dest={}", named_out2.display()),
            named.to_str().unwrap(),
        ]),
        "buildx build with a local named context",
    );
    assert!(named_out2.join("from-local").is_file());
    assert!(named_out2.join("f").is_file());
    assert!(!named_out2.join("usr").exists());

    // no-cache: the named binding's steps run again, the others stay cached.
    let vertex_of = |log: &str, prefix: &str| -> String {
        log.lines()
            .find_map(|l| {
                let (n, rest) = l.split_once(' ')?;
                rest.starts_with(prefix).then(|| n.to_string())
            })
            .unwrap_or_else(|| panic!("no `{prefix}` step:\n{log}"))
    };
    let cached = |log: &str, prefix: &str| {
        let n = vertex_of(log, prefix);
        log.lines().any(|l| l == format!("{n} CACHED"))
    };
    let log = ok(
        build(&bk, &stages, &["--opt", "target=app"]),
        "a cached build",
    );
    assert!(cached(&log, "gen: run"), "{log}");
    let log = ok(
        build(
            &bk,
            &stages,
            &["--opt", "target=app", "--opt", "no-cache=gen"],
        ),
        "a build with no-cache=gen",
    );
    println!("--- no-cache=gen:\n{log}");
    assert!(!cached(&log, "gen: run"), "{log}");
    assert!(cached(&log, "app: image"), "{log}");

    // cache-imports: export the build's cache to the registry, drop
    // BuildKit's own, and build again from the import.
    let cache_ref = format!("{}/kiln-e2e-cache:stages", reg.addr);
    let export = format!("type=registry,ref={cache_ref},mode=max");
    ok(
        build(
            &bk,
            &stages,
            &["--opt", "target=app", "--export-cache", &export],
        ),
        "a build exporting its cache",
    );
    ok(bk.run(&["prune", "--all"]), "buildctl prune");
    let import = format!("type=registry,ref={cache_ref}");
    let log = ok(
        build(
            &bk,
            &stages,
            &["--opt", "target=app", "--import-cache", &import],
        ),
        "a build importing the cache",
    );
    println!("--- cache import:\n{log}");
    assert!(cached(&log, "gen: run"), "{log}");
    drop(bk);
}
