//! End-to-end tests of `kiln base`, `import`, `images`, `tag` and `save`:
//! the real binary, a private `KILN_HOME`, and podman, umoci, runc and
//! skopeo consuming what it writes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Busybox;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.dir.path().join(p)
    }

    fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_env(args, &[])
    }

    fn kiln_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = common::kiln_command(&self.path("home"), self.dir.path(), args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run kiln")
    }

    /// Runs kiln and returns stdout, failing with stderr when it fails.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.kiln(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn podman(&self) -> Command {
        common::podman(&self.path(""))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.path("podman-root").exists() {
            // Only this private storage; `system reset` would also touch
            // machine-wide network configs.
            let _ = self.podman().args(["rmi", "--all", "--force"]).output();
        }
    }
}

fn check(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn busybox_rootfs(root: &Path) {
    Busybox::new(&["sh", "echo", "id", "ls"])
        .dir("tmp")
        .write(root);
}

#[test]
fn imported_busybox_runs_with_podman_and_runc() {
    let env = Env::new();
    busybox_rootfs(&env.path("rootfs"));
    let digest = env.ok(&["import", "rootfs", "-t", "bb:1"]);
    assert!(digest.starts_with("sha256:"), "{digest}");
    let listing = env.ok(&["images"]);
    assert!(
        listing.contains("bb:1") && listing.contains(&digest.trim()[..19]),
        "{listing}"
    );

    // OCI archive -> podman run (runc).
    env.ok(&["save", "bb:1", "-o", "bb.tar"]);
    let out = check(
        env.podman()
            .args(["run", "--rm", "--network", "none"])
            .arg(format!("oci-archive:{}", env.path("bb.tar").display()))
            .args(["/bin/busybox", "echo", "hi"]),
    );
    assert_eq!(out, "hi\n");

    // docker archive -> podman load -> podman run.
    env.ok(&["save", "bb:1", "--format", "docker", "-o", "bb-docker.tar"]);
    let loaded = check(
        env.podman()
            .args(["load", "-i"])
            .arg(env.path("bb-docker.tar")),
    );
    assert!(loaded.contains("bb:1"), "{loaded}");
    let out = check(env.podman().args([
        "run",
        "--rm",
        "--network",
        "none",
        "bb:1",
        "/bin/echo",
        "loaded",
    ]));
    assert_eq!(out, "loaded\n");

    // OCI layout -> umoci unpack -> runc run.
    env.ok(&["save", "bb:1", "-o", "type=oci-layout,dest=layout"]);
    let bundle = env.path("bundle");
    check(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:1", env.path("layout").display()))
            .arg(&bundle),
    );
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["/bin/busybox", "echo", "hi from runc"]);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let id = format!("kiln-cli-test-{}", std::process::id());
    let out = check(Command::new("runc").args(["run", &id]).current_dir(&bundle));
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .output();
    assert_eq!(out, "hi from runc\n");
}

#[test]
fn base_static_is_reproducible_and_follows_source_date_epoch() {
    let env = Env::new();
    let a = env.ok(&["base", "static", "-o", "type=oci,dest=a.tar"]);
    let b = env.ok(&["base", "static", "-o", "type=oci,dest=b.tar"]);
    assert_eq!(a, b);
    assert_eq!(
        std::fs::read(env.path("a.tar")).unwrap(),
        std::fs::read(env.path("b.tar")).unwrap()
    );
    let o = env.kiln_env(
        &["base", "static", "-o", "type=oci,dest=c.tar"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success());
    let c = String::from_utf8(o.stdout).unwrap();
    assert_ne!(a, c, "SOURCE_DATE_EPOCH changes the digest");
    let z = env.ok(&[
        "base",
        "static",
        "--compression",
        "zstd",
        "-o",
        "type=oci,dest=z.tar",
    ]);
    assert_ne!(a, z);
    // The archive imports back to the same image, in a fresh store too.
    let back = env.kiln_env(
        &["import", "a.tar", "--format", "oci-archive", "-t", "back"],
        &[("KILN_HOME", env.path("home2").to_str().unwrap())],
    );
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert_eq!(String::from_utf8(back.stdout).unwrap(), a);
    let inspect = check(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", env.path("z.tar").display())),
    );
    assert!(
        inspect.contains("application/vnd.oci.image.layer.v1.tar+zstd"),
        "{inspect}"
    );
    let created = check(
        Command::new("skopeo")
            .args(["inspect"])
            .arg(format!("oci-archive:{}", env.path("c.tar").display())),
    );
    assert!(created.contains("2023-11-14T22:13:20Z"), "{created}");
}

#[test]
fn tag_images_json_and_errors() {
    let env = Env::new();
    let d = env.ok(&["base", "static", "-t", "kiln/static"]);
    let d = d.trim();
    assert_eq!(
        env.ok(&["tag", "kiln/static", "example.com/base:v1"])
            .trim(),
        d
    );
    assert_eq!(env.ok(&["tag", d, "by-digest"]).trim(), d);
    let pinned = format!("anything/at/all@{d}");
    assert_eq!(env.ok(&["tag", &pinned, "by-digest"]).trim(), d);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "by-digest:latest",
            "example.com/base:v1",
            "kiln/static:latest"
        ]
    );
    for r in v.as_array().unwrap() {
        assert_eq!(r["digest"], d);
        assert!(r["size"].as_u64().unwrap() > 100_000);
        assert_eq!(r["layers"], 1);
    }
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 3);

    let o = env.kiln(&["tag", "nothere", "x"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no local image named `nothere`"), "{err}");

    let o = env.kiln(&["base", "static", "-o", "type=zip,dest=x"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown type `zip`"), "{err}");
    assert!(!env.path("x").exists());

    let o = env.kiln(&["import", "missing-dir", "-t", "x"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing-dir"), "{err}");

    // `save` to stdout when it is not a terminal.
    let o = env.kiln(&["save", "kiln/static", "--format", "docker"]);
    assert!(o.status.success());
    let mut a = tar::Archive::new(&o.stdout[..]);
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"manifest.json".to_owned()), "{names:?}");
}
