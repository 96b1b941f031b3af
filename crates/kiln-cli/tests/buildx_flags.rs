//! `docker buildx build` flags of `kiln build`, each run end to end with
//! the real binary: `--push` to the loopback registry, `--load` into a
//! podman store, `--label`, `--annotation`, `--iidfile`, `-q`,
//! `BUILDKIT_PROGRESS` and the `--cache-from`/`--cache-to` shorthands.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Registry;

const APP: &str = r#"
let app = static_base()
    .copy(context().path("busybox"), "/bin/busybox")
    .label("from.kilnfile", "yes")
    .entrypoint(["/bin/busybox", "echo", "hello from kiln"]);
"#;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ctx")).unwrap();
        std::fs::copy("/bin/busybox", dir.path().join("ctx/busybox")).unwrap();
        std::fs::write(dir.path().join("ctx/Kilnfile"), APP).unwrap();
        Env { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    // the flags here are about the image itself, not attestations
    // (attestations.rs tests the default)
    fn kiln(&self, args: &[&str]) -> Command {
        common::kiln_command(
            &self.path("home"),
            self.dir.path(),
            &common::without_attestations(args),
        )
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        common::ok_in(self.dir.path(), &common::without_attestations(args))
    }
}

/// The manifest and config of the one image in an OCI layout.
fn layout_image(dir: &Path) -> (serde_json::Value, serde_json::Value) {
    let blob = |d: &str| -> serde_json::Value {
        let hex = d.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    (manifest, config)
}

#[test]
fn label_annotation_iidfile_and_quiet() {
    let env = Env::new();
    let (plain, _) = env.ok(&["build", "ctx", "--progress", "plain"]);
    let (out, err) = env.ok(&[
        "build",
        "ctx",
        "-q",
        "--label",
        "org.opencontainers.image.title=app",
        "--label",
        "from.kilnfile=overridden",
        "--annotation",
        "org.opencontainers.image.description=an app",
        "--annotation",
        "manifest:com.example.level=manifest",
        "--iidfile",
        "iid",
        "-o",
        "type=oci-layout,dest=layout",
    ]);
    // -q: the image id alone on stdout, no progress on stderr
    let id = out.trim();
    assert!(
        id.starts_with("sha256:") && out.lines().count() == 1,
        "{out}"
    );
    assert!(!err.contains("#1") && !err.contains("built"), "{err}");
    // the id is the manifest digest, written without a newline
    assert_eq!(std::fs::read_to_string(env.path("iid")).unwrap(), id);
    let (manifest, config) = layout_image(&env.path("layout"));
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "app");
    assert_eq!(labels["from.kilnfile"], "overridden", "{labels}");
    let a = &manifest["annotations"];
    assert_eq!(a["org.opencontainers.image.description"], "an app", "{a}");
    assert_eq!(a["com.example.level"], "manifest", "{a}");
    // the same steps (labels are no step's input): all cached, a new id
    assert_ne!(plain.trim(), id);
    let (again, err) = env.ok(&["build", "ctx", "--progress", "plain"]);
    assert_eq!(again, plain);
    assert!(err.contains("CACHED"), "{err}");

    // one platform has no index: refused before anything runs
    let o = env
        .kiln(&["build", "ctx", "--annotation", "index:a=b"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("need a multi-platform"), "{err}");
    let o = env
        .kiln(&["build", "ctx", "--annotation", "index-descriptor:a=b"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("need a multi-platform"), "{err}");
    let o = env
        .kiln(&["build", "ctx", "--label", "=v"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no `KEY=`"));
}

#[test]
fn buildkit_progress_environment() {
    let env = Env::new();
    let o = env
        .kiln(&["build", "ctx"])
        .env("BUILDKIT_PROGRESS", "quiet")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = env
        .kiln(&["build", "ctx"])
        .env("BUILDKIT_PROGRESS", "rawjson")
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{err}"
    );
    // the flag wins over the environment
    let o = env
        .kiln(&["build", "ctx", "--progress", "plain"])
        .env("BUILDKIT_PROGRESS", "quiet")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("CACHED"));
}

#[test]
fn push_and_cache_shorthands() {
    let env = Env::new();
    let reg = Registry::start();
    let name = format!("{}/app:1", reg.addr);
    let cache = format!("{}/app:cache", reg.addr);
    let (out, _) = env.ok(&["build", "ctx", "-t", &name, "--push", "--cache-to", &cache]);
    let id = out.trim();
    // the registry has the image under its tag: the manifest kiln printed
    let raw = reg.raw("app:1");
    assert_eq!(
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&raw))
        ),
        id
    );
    // a fresh store takes every step from the shorthand's registry cache
    let env2 = Env::new();
    let (out2, err) = env2.ok(&[
        "build",
        "ctx",
        "--progress",
        "plain",
        "--cache-from",
        &cache,
    ]);
    assert_eq!(out2.trim(), id);
    assert!(err.contains("cache import:"), "{err}");
    assert!(!err.contains("DONE"), "a step ran: {err}");

    let o = env.kiln(&["build", "ctx", "--push"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("`--push` needs a name"));
}

#[test]
fn load_into_podman_store() {
    let env = Env::new();
    let store = env.path("podman");
    std::fs::write(
        env.path("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
            store.display()
        ),
    )
    .unwrap();
    std::fs::write(
        env.path("containers.conf"),
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
         [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    let podman_env = [
        ("CONTAINERS_STORAGE_CONF", env.path("storage.conf")),
        ("CONTAINERS_CONF", env.path("containers.conf")),
        ("TMPDIR", env.path("")),
    ];
    let mut c = env.kiln(&["build", "ctx", "-t", "loaded:1", "--load"]);
    c.envs(podman_env.clone());
    common::expect_ok(c.output().unwrap(), "kiln build --load");
    let mut run = Command::new("podman");
    run.envs(podman_env.clone())
        .args(["run", "--rm", "--network", "none", "loaded:1"]);
    let out = common::expect_ok(run.output().unwrap(), "podman run");
    assert_eq!(out, "hello from kiln");
    let mut reset = Command::new("podman");
    let _ = reset
        .envs(podman_env)
        .args(["system", "reset", "--force"])
        .output();

    // neither podman nor docker: said before anything is built
    let empty = env.path("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let o = env
        .kiln(&["build", "ctx", "--load"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("found neither `podman` nor `docker`"), "{err}");
    assert!(err.contains("type=docker,dest="), "{err}");
}

#[test]
fn check_call_targets_and_network() {
    let env = Env::new();
    std::fs::write(
        env.path("ctx/Kilnfile"),
        format!("{APP}\nlet debug = app.env(\"DEBUG\", \"1\");\n"),
    )
    .unwrap();
    // --call targets: every target, the default marked; nothing built
    let (out, _) = env.ok(&["build", "ctx", "--call", "targets"]);
    assert_eq!(out, "app\ndebug (default)\n");
    // --check and --call check: kiln check's verdict, nothing built
    let (out, _) = env.ok(&["build", "ctx", "--check"]);
    assert!(out.is_empty(), "{out}");
    std::fs::write(
        env.path("ctx/Kilnfile"),
        "let app = static_base().nope();\n",
    )
    .unwrap();
    for flags in [&["--check"][..], &["--call", "check"], &["--call=check"]] {
        let o = env
            .kiln(&[&["build", "ctx"][..], flags].concat())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {err}");
        assert!(err.contains("nope"), "{err}");
        assert!(o.stdout.is_empty());
    }
    std::fs::write(env.path("ctx/Kilnfile"), APP).unwrap();
    // --network: the default and host build; a build-wide none is refused
    // with the per-step way
    for n in ["default", "host"] {
        env.ok(&["build", "ctx", "--network", n, "--progress", "none"]);
    }
    let o = env
        .kiln(&["build", "ctx", "--network", "none"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("network(none)"), "{err}");
}

#[test]
fn no_cache_filter_reruns_one_binding() {
    let env = Env::new();
    std::fs::write(env.path("ctx/extra"), "x").unwrap();
    std::fs::write(
        env.path("ctx/Kilnfile"),
        "let base = static_base()\n    .copy(context().path(\"busybox\"), \"/bin/busybox\");\n\
         let app = base.copy(context().path(\"extra\"), \"/extra\")\n    \
         .entrypoint([\"/bin/busybox\", \"echo\", \"hi\"]);\n",
    )
    .unwrap();
    let (first, _) = env.ok(&["build", "ctx", "--progress", "plain"]);
    let (again, err) = env.ok(&[
        "build",
        "ctx",
        "--progress",
        "plain",
        "--no-cache-filter",
        "app",
    ]);
    assert_eq!(again, first);
    let steps = common::steps(&err);
    assert!(!steps.is_empty(), "{err}");
    for (name, status) in steps {
        let want = if name.starts_with("app: ") {
            "done"
        } else {
            "CACHED"
        };
        assert_eq!(status, want, "{name}: {err}");
    }
    // several platforms: the platform-named steps belong to it too
    let multi = [
        "--platform",
        "linux/amd64,linux/arm64",
        "--progress",
        "plain",
    ];
    std::fs::write(
        env.path("ctx/Kilnfile"),
        "let base = static_base();\n\
         let app = base.copy(context().path(\"extra\"), \"/extra\");\n",
    )
    .unwrap();
    env.ok(&[&["build", "ctx"][..], &multi].concat());
    let (_, err) = env.ok(&[&["build", "ctx", "--no-cache-filter", "app"][..], &multi].concat());
    let steps = common::steps(&err);
    assert!(
        steps
            .iter()
            .any(|(n, s)| n.contains("app: ") && s == "done"),
        "{err}"
    );
    for (name, status) in steps {
        if !name.contains("app: ") {
            assert_eq!(status, "CACHED", "{name}: {err}");
        }
    }
    let o = env
        .kiln(&["build", "ctx", "--no-cache-filter", "nothing"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no step of this build belongs to `nothing`")
    );
}

#[test]
fn specs_are_read_with_buildx_csv_quoting() {
    let env = Env::new();
    std::fs::write(env.path("secret"), "s3cr3t").unwrap();
    env.ok(&[
        "build",
        "ctx",
        "-o",
        "type=local,\"dest=out,dir\"",
        "--cache-to",
        "type=local,\"dest=cache,dir\"",
        "--secret",
        "\"id=tok\",src=secret",
    ]);
    assert!(env.path("out,dir/bin/busybox").is_file());
    assert!(env.path("cache,dir/index.json").is_file());
    let o = env
        .kiln(&["build", "ctx", "-o", "type=local,\"dest=a"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("a quote is not closed"), "{err}");
}

#[test]
fn build_context_stands_in_for_an_image() {
    let env = Env::new();
    // the stand-in: the app image as an OCI layout and in a registry
    let reg = Registry::start();
    let pushed = format!("{}/stand:1", reg.addr);
    env.ok(&[
        "build",
        "ctx",
        "-t",
        &pushed,
        "--push",
        "-o",
        "type=oci-layout,dest=layout",
    ]);
    std::fs::create_dir(env.path("user")).unwrap();
    std::fs::write(env.path("user/extra"), "x").unwrap();
    std::fs::write(
        env.path("user/Kilnfile"),
        "let app = image(\"alias:1\").copy(context().path(\"extra\"), \"/extra\");\n",
    )
    .unwrap();
    std::fs::create_dir_all(env.path("rootdir/etc")).unwrap();
    std::fs::write(env.path("rootdir/etc/from-dir"), "d").unwrap();
    for (value, file) in [
        ("oci-layout://layout".to_string(), "bin/busybox"),
        (format!("docker-image://{pushed}"), "bin/busybox"),
        ("rootdir".to_string(), "etc/from-dir"),
    ] {
        let out = format!("out-{}", file.replace('/', "-"));
        let _ = std::fs::remove_dir_all(env.path(&out));
        env.ok(&[
            "build",
            "user",
            "--build-context",
            &format!("alias:1={value}"),
            "-o",
            &format!("type=local,dest={out}"),
        ]);
        assert!(env.path(&out).join(file).is_file(), "{value}");
        assert!(env.path(&out).join("extra").is_file(), "{value}");
    }
    let o = env
        .kiln(&[
            "build",
            "user",
            "--build-context",
            "alias:1=git://host/repo",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("git contexts are not supported"));
}

#[test]
fn index_and_descriptor_annotations_of_a_multi_platform_build() {
    let env = Env::new();
    std::fs::write(env.path("ctx/f"), "f").unwrap();
    std::fs::write(
        env.path("ctx/Kilnfile"),
        "let app = static_base().copy(context().path(\"f\"), \"/f\");\n",
    )
    .unwrap();
    env.ok(&[
        "build",
        "ctx",
        "--platform",
        "linux/amd64,linux/arm64",
        "--annotation",
        "index:com.example.on=index",
        "--annotation",
        "manifest-descriptor:com.example.on=descriptor",
        "--annotation",
        "manifest:com.example.on=manifest",
        "--annotation",
        "index-descriptor:com.example.on=index-descriptor",
        "-o",
        "type=oci-layout,dest=layout",
        "-o",
        "type=oci,dest=image.tar",
    ]);
    let dir = env.path("layout");
    let blob = |d: &str| -> serde_json::Value {
        let hex = d.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    // `index-descriptor:` is on the index's entry in index.json, in the
    // layout and in the archive alike
    assert_eq!(
        top["manifests"][0]["annotations"]["com.example.on"], "index-descriptor",
        "{top}"
    );
    let archived = common::oci::tar_member(&env.path("image.tar"), "index.json");
    let archived: serde_json::Value = serde_json::from_slice(&archived).unwrap();
    assert_eq!(
        archived["manifests"][0]["annotations"]["com.example.on"], "index-descriptor",
        "{archived}"
    );
    let index = blob(top["manifests"][0]["digest"].as_str().unwrap());
    assert_eq!(index["annotations"]["com.example.on"], "index", "{index}");
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    for e in entries {
        assert_eq!(e["annotations"]["com.example.on"], "descriptor", "{e}");
        let m = blob(e["digest"].as_str().unwrap());
        assert_eq!(m["annotations"]["com.example.on"], "manifest", "{m}");
    }
}
