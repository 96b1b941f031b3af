//! End-to-end tests of `kiln build`: the real binary with a private
//! `KILN_HOME`, images run by podman (runc), cache behaviour checked through
//! the plain progress output and the printed digests.

mod common;

use common::{Busybox, chown_kilntest, steps};

use std::path::PathBuf;
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kiln(&self, args: &[&str]) -> Output {
        common::kiln_in(self.dir.path(), args)
    }

    /// Runs kiln; returns (stdout, stderr), failing with stderr when it fails.
    fn ok(&self, args: &[&str]) -> (String, String) {
        common::ok_in(self.dir.path(), args)
    }

    fn podman(&self) -> Command {
        common::podman(&self.path(""))
    }

    fn podman_run(&self, archive: &str) -> String {
        let _one = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
        common::podman_run(&self.path(""), &self.path(archive))
    }
}

/// podman 4.3 here sometimes loses a fast container's exit code when two
/// podman processes run at once ("no such exit code"): one at a time within
/// this test binary.
static PODMAN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Env {
    fn drop(&mut self) {
        let _one = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
        if self.path("podman-root").exists() {
            let _ = self.podman().args(["system", "reset", "--force"]).output();
        }
    }
}

const APP: &str = r#"
let app = static_base()
    .copy(context().path("busybox"), "/bin/busybox")
    .entrypoint(["/bin/busybox", "echo", "hello from kiln"]);
"#;

#[test]
fn static_base_copy_runs_and_rebuilds_from_cache() {
    let env = Env::new();
    std::fs::create_dir(env.path("ctx")).unwrap();
    std::fs::copy("/bin/busybox", env.path("ctx/busybox")).unwrap();
    std::fs::write(env.path("ctx/Kilnfile"), APP).unwrap();
    std::fs::write(env.path("ctx/.kilnignore"), "ignored.txt\n").unwrap();
    std::fs::write(env.path("ctx/ignored.txt"), "one").unwrap();

    let (out, err) = env.ok(&[
        "build",
        "ctx",
        "-t",
        "app:1",
        "-o",
        "type=oci,dest=app.tar",
        "--metadata-file",
        "meta.json",
    ]);
    let digest = out.trim().to_string();
    assert!(digest.starts_with("sha256:"), "{out}");
    let first = steps(&err);
    assert!(
        first.iter().any(|(_, s)| s == "done") && !first.iter().any(|(_, s)| s == "CACHED"),
        "a cold build runs its steps:\n{err}"
    );
    assert_eq!(env.podman_run("app.tar"), "hello from kiln\n");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["image.digest"], digest.as_str());
    assert!(meta["steps"].as_array().unwrap().len() >= 3, "{meta}");

    // The local name points at the image.
    let o = env.kiln(&["images"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("app:1"));

    // Nothing changed: every step is CACHED, same digest.
    let (out2, err2) = env.ok(&["build", "ctx"]);
    assert_eq!(out2.trim(), digest);
    let second = steps(&err2);
    assert!(!second.is_empty(), "{err2}");
    assert!(
        second.iter().all(|(_, s)| s == "CACHED"),
        "a no-op rebuild re-ran something:\n{err2}"
    );

    // mtime only, and an ignored file's content: still nothing re-runs.
    let f = std::fs::File::options()
        .write(true)
        .open(env.path("ctx/busybox"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    std::fs::write(env.path("ctx/ignored.txt"), "two").unwrap();
    let (out3, err3) = env.ok(&["build", "ctx"]);
    assert_eq!(out3.trim(), digest);
    assert!(
        steps(&err3).iter().all(|(_, s)| s == "CACHED"),
        "touching the context re-ran something:\n{err3}"
    );

    // A real change re-runs the context and the copy and changes the digest.
    std::fs::write(env.path("ctx/extra"), "new file").unwrap();
    let (out4, err4) = env.ok(&["build", "ctx", "--no-cache"]);
    assert!(
        steps(&err4).iter().all(|(_, s)| s != "CACHED"),
        "--no-cache used the cache:\n{err4}"
    );
    // Only `busybox` is copied, so the image is the same.
    assert_eq!(out4.trim(), digest);
}

#[test]
fn compile_errors_are_rendered_with_location() {
    let env = Env::new();
    std::fs::create_dir(env.path("ctx")).unwrap();
    std::fs::write(
        env.path("ctx/Kilnfile"),
        "let app = static_base().run(\"echo hi\");\n",
    )
    .unwrap();
    let o = env.kiln(&["build", "ctx"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Kilnfile:1:"), "{err}");
    assert!(o.stdout.is_empty());
}

fn busybox_image(env: &Env) {
    Busybox::new(&["sh", "echo", "cat", "false"])
        .dir("tmp")
        .import(&env.path("home"), env.dir.path());
}

#[test]
fn run_steps_add_a_layer_and_failures_point_at_the_kilnfile() {
    let env = Env::new();
    busybox_image(&env);
    std::fs::create_dir(env.path("ctx")).unwrap();
    std::fs::write(
        env.path("ctx/Kilnfile"),
        "let app = image(\"bb:1\")\n    .run(\"echo hi > /x\")\n    .entrypoint([\"/bin/cat\", \"/x\"]);\n",
    )
    .unwrap();
    let (out, _) = env.ok(&["build", "ctx", "-o", "type=oci,dest=app.tar"]);
    assert!(out.starts_with("sha256:"));
    assert_eq!(env.podman_run("app.tar"), "hi\n");
    let (out2, err2) = env.ok(&["build", "ctx"]);
    assert_eq!(out2, out);
    assert!(steps(&err2).iter().all(|(_, s)| s == "CACHED"), "{err2}");

    // `--progress json`: one event object per line, the run step re-run
    // with its output.
    let (out3, err3) = env.ok(&["build", "ctx", "--progress", "json", "--no-cache"]);
    assert_eq!(out3, out);
    let events: Vec<serde_json::Value> = err3
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let run_done = events
        .iter()
        .any(|e| e["event"] == "done" && e["name"].as_str().unwrap_or("").contains("echo hi"));
    assert!(run_done, "{err3}");

    std::fs::write(
        env.path("ctx/Kilnfile"),
        "let app = image(\"bb:1\")\n    .run(\"echo before; exit 3\");\n",
    )
    .unwrap();
    let o = env.kiln(&["build", "ctx"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("echo before; exit 3"), "{err}");
    assert!(err.contains("exit code 3"), "{err}");
    assert!(err.contains("Kilnfile:2:"), "{err}");
    assert!(err.contains("before"), "{err}");
    assert!(o.stdout.is_empty());
}

/// Runs kiln as the unprivileged `kilntest` (made by `.ci/setup`, with a
/// subordinate ID range) in `env`'s directory with its own KILN_HOME.
fn kiln_as_kilntest(env: &Env, args: &[&str]) -> (String, String) {
    common::kilntest_ok(&env.path("home-kilntest"), env.dir.path(), args)
}

#[test]
fn rootless_builds_match_root_and_run_steps() {
    let env = Env::new();
    std::fs::create_dir(env.path("ctx")).unwrap();
    std::fs::copy("/bin/busybox", env.path("ctx/busybox")).unwrap();
    std::fs::write(env.path("ctx/Kilnfile"), APP).unwrap();
    let (root_digest, _) = env.ok(&["build", "ctx"]);

    std::fs::create_dir(env.path("ctx2")).unwrap();
    std::fs::write(
        env.path("ctx2/Kilnfile"),
        "let app = image(\"bb:1\")\n    .run(\"echo rootless > /x\")\n    .entrypoint([\"/bin/cat\", \"/x\"]);\n",
    )
    .unwrap();
    Busybox::new(&["sh", "cat"]).write(&env.path("rootfs"));
    chown_kilntest(env.dir.path());

    // The same Kilnfile and context give the same image as root.
    let (digest, _) = kiln_as_kilntest(&env, &["build", "ctx"]);
    assert_eq!(digest, root_digest);
    let (_, err) = kiln_as_kilntest(&env, &["build", "ctx"]);
    assert!(
        steps(&err).iter().all(|(_, s)| s == "CACHED"),
        "rootless no-op rebuild re-ran something:\n{err}"
    );

    // A run step in a user namespace.
    kiln_as_kilntest(&env, &["import", "rootfs", "-t", "bb:1"]);
    kiln_as_kilntest(&env, &["build", "ctx2", "-o", "type=oci,dest=app2.tar"]);
    assert_eq!(env.podman_run("app2.tar"), "rootless\n");
}

/// The files below `dir`, sorted, directories with a trailing `/`.
fn tree(dir: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(&e.path(), &format!("{rel}/"), out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

#[test]
fn dockerignore_and_copy_patterns_follow_dockers_rules() {
    let env = Env::new();
    // Each line is one where the globset matcher kiln had before answered
    // otherwise than Docker.
    let ignore = "\
# braces are literal
{a,b}.txt
# patterns are cleaned
logs/../tmp
# a leading `**` with no other wildcard matches the end of the path
**.bak
docs
!docs/keep
";
    let files = [
        "a.txt",
        "b.txt",
        "{a,b}.txt",
        "main.txt",
        "tmp/t",
        "y.bak",
        "sub/deep/x.bak",
        "docs/drop",
        "docs/keep/k",
    ];
    for f in files {
        let p = env.path("ctx").join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, f).unwrap();
    }
    std::fs::write(env.path("ctx/.dockerignore"), ignore).unwrap();
    // The second copy's patterns go through the copy from a stage:
    // `keep/../keep` is `keep` cleaned, and `[!m]` is `!` or `m`.
    std::fs::write(
        env.path("ctx/Kilnfile"),
        r#"
let files = static_base().copy(context().path("."), "/ctx/");
let app = static_base()
    .copy(files.path("/ctx"), "/ctx/")
    .copy(files.path("/ctx"), "/sel/", [exclude("docs/keep/../keep"), exclude("[!m]*.txt")]);
"#,
    )
    .unwrap();
    env.ok(&["build", "ctx", "-o", "type=local,dest=rootfs"]);
    assert_eq!(
        tree(&env.path("rootfs/ctx")),
        [
            ".dockerignore",
            "Kilnfile",
            "a.txt",
            "b.txt",
            "docs/",
            "docs/keep/",
            "docs/keep/k",
            "main.txt",
            "sub/",
            "sub/deep/",
        ]
    );
    assert_eq!(
        tree(&env.path("rootfs/sel")),
        [
            ".dockerignore",
            "Kilnfile",
            "a.txt",
            "b.txt",
            "docs/",
            "sub/",
            "sub/deep/",
        ]
    );
}
