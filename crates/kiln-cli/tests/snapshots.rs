//! The worker's snapshot model seen from `kiln build`: what a builder stage's
//! steps change stays a directory (no blob) until an image that contains it
//! is exported, a gone snapshot directory is a cache miss, and the image
//! digests are the ones the tar-per-step worker produced, as root and
//! rootless.

mod common;

use common::{Busybox, steps};

use std::path::{Path, PathBuf};
use std::process::Command;

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

    fn ok(&self, args: &[&str]) -> (String, String) {
        common::ok_in(self.dir.path(), args)
    }

    fn count(&self, dir: &str) -> usize {
        std::fs::read_dir(self.path(dir))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn blobs(&self) -> usize {
        self.count("home/blobs/sha256")
    }

    fn commits(&self) -> usize {
        self.count("home/records/layer-commit")
    }

    fn kilnfile(&self, text: &str) {
        std::fs::create_dir_all(self.path("ctx")).unwrap();
        std::fs::write(self.path("ctx/Kilnfile"), text).unwrap();
    }

    /// A busybox root filesystem (`rootfs/`) imported as `bb:1`.
    fn busybox(&self) {
        Busybox::new(&[
            "sh", "echo", "cat", "false", "rm", "mkdir", "ls", "touch", "chmod",
        ])
        .dir("tmp")
        .file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/group", "root:x:0:\n")
        .write(&self.path("rootfs"));
        self.ok(&["import", "rootfs", "-t", "bb:1"]);
    }
}

const BUILDER: &str = r#"
let build = image("bb:1")
    .run("mkdir /out && echo built > /out/a");

let app = static_base()
    .copy(build.path("/out/a"), "/a")
    .label("purpose", "data only");
"#;

#[test]
fn builder_steps_are_not_committed_until_their_image_is_exported() {
    let env = Env::new();
    env.busybox();
    env.kilnfile(BUILDER);
    let (digest, _) = env.ok(&["build", "ctx"]);
    let (blobs, commits) = (env.blobs(), env.commits());
    // Only the final image's own layer (the copy) was committed.
    assert_eq!(commits, 1);

    // Another builder step that leaves the copied file as it was: it runs,
    // the image stays the same, and not a single blob is written for it.
    env.kilnfile(&BUILDER.replace(
        "> /out/a\")",
        "> /out/a\")\n    .run(\"echo more > /more && echo junk > /out/junk\")",
    ));
    let (again, err) = env.ok(&["build", "ctx"]);
    assert_eq!(again, digest);
    assert!(
        steps(&err)
            .iter()
            .any(|(n, s)| n.contains("echo more") && s == "done"),
        "{err}"
    );
    assert_eq!(env.blobs(), blobs, "a builder-only step wrote a blob");
    assert_eq!(env.commits(), commits);

    // Exporting the builder stage commits its two run layers, once. (This
    // counts the image's blobs: without attestations, whose statements,
    // manifest and index are blobs too, tested in tests/attestations.rs.)
    let builder = ["build", "ctx", "--target", "build", "--provenance=false"];
    env.ok(&[&builder[..], &["-t", "builder:1"]].concat());
    assert_eq!(env.commits(), commits + 2);
    let after = env.blobs();
    assert!(after >= blobs + 2 + 2, "layers, config and manifest");
    env.ok(&[&builder[..], &["-o", "type=oci,dest=builder.tar"]].concat());
    assert_eq!(env.blobs(), after, "the second export committed again");
    assert_eq!(env.commits(), commits + 2);
}

#[test]
fn a_gone_snapshot_directory_is_a_miss_and_the_build_still_succeeds() {
    let env = Env::new();
    env.busybox();
    env.kilnfile(BUILDER);
    let (digest, _) = env.ok(&["build", "ctx"]);
    let snaps = env.path("home/snapshots");
    for e in std::fs::read_dir(&snaps).unwrap() {
        std::fs::remove_dir_all(e.unwrap().path()).unwrap();
    }
    let (again, err) = env.ok(&["build", "ctx"]);
    assert_eq!(again, digest);
    let st = steps(&err);
    // The builder's run step lost its only copy: it runs again. The final
    // copy was committed: its blob stands in for the directory.
    assert!(
        st.iter()
            .any(|(n, s)| n.contains("mkdir /out") && s == "done"),
        "{err}"
    );
    assert!(
        st.iter().any(|(n, s)| n.contains("copy") && s == "CACHED"),
        "{err}"
    );
    let (_, err) = env.ok(&["build", "ctx"]);
    assert!(steps(&err).iter().all(|(_, s)| s == "CACHED"), "{err}");
}

/// Run steps, whiteouts (deleted files, a replaced directory), file ops of
/// every kind and copies out of a builder.
const MIXED: &str = r#"
let build = image("bb:1")
    .run("mkdir -p /out/sub && echo built > /out/sub/a && echo x > /out/b && rm /bin/ls && mkdir -p /etc/d && touch /etc/d/f")
    .run("rm -rf /etc/d && mkdir /etc/d && echo new > /etc/d/g && chmod 0600 /out/b");

let fat = image("bb:1")
    .copy(build.path("/out"), "/out")
    .copy(context().path("data.txt"), "/data.txt")
    .mkdir("/data/cache", [mode(0o700)])
    .file("/etc/app.conf", "listen = 8080\n")
    .symlink("/out/b", "/b")
    .rm("/bin/false")
    .run("echo final > /final; rm /bin/cat")
    .entrypoint(["/bin/sh"]);

let app = static_base()
    .copy(build.path("/out/sub/a"), "/a")
    .copy(build.path("/bin/busybox"), "/bin/busybox")
    .entrypoint(["/bin/busybox", "cat", "/a"]);
"#;

/// The host's busybox the pinned digests were made with.
const BUSYBOX_SHA256: &str = "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6";

fn sha256_file(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn as_kilntest(env: &Env, args: &[&str]) -> String {
    common::kilntest_ok(&env.path("home-kilntest"), env.dir.path(), args).0
}

/// Root's builds of `targets`, then the same as kilntest from the same base
/// image (saved by root, imported by kilntest): the digests must match.
fn same_as_rootless(env: &Env, targets: &[&str]) {
    let root: Vec<String> = targets
        .iter()
        .map(|t| env.ok(&["build", "ctx", "--target", t]).0)
        .collect();
    env.ok(&["save", "bb:1", "-o", "bb.tar"]);
    let o = Command::new("chown")
        .args(["-R", "kilntest:kilntest"])
        .arg(env.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    as_kilntest(
        env,
        &["import", "bb.tar", "--format", "oci-archive", "-t", "bb:1"],
    );
    for (t, want) in targets.iter().zip(&root) {
        let got = as_kilntest(env, &["build", "ctx", "--target", t]);
        assert_eq!(&got, want, "rootless {t}");
    }
}

#[test]
fn rootless_copies_read_other_users_private_directories() {
    let env = Env::new();
    env.busybox();
    // Rootless, /home/app belongs to a subordinate ID with mode 0700: the
    // calling user cannot read it in the layer directory itself.
    env.kilnfile(
        r#"
let build = image("bb:1")
    .run("mkdir -p /home/app/bin && echo private > /home/app/bin/f && busybox chown -R 1000:1000 /home/app && chmod 0700 /home/app");

let app = static_base()
    .copy(build.path("/home/app/bin"), "/app")
    .label("purpose", "data only");
"#,
    );
    same_as_rootless(&env, &["app", "build"]);
}

#[test]
fn digests_are_those_of_the_tar_per_step_worker_root_and_rootless() {
    let env = Env::new();
    env.busybox();
    env.kilnfile(MIXED);
    std::fs::write(env.path("ctx/data.txt"), "data\n").unwrap();
    let build = |t: &str| env.ok(&["build", "ctx", "--target", t]).0;
    let (fat, bld) = (build("fat"), build("build"));
    // Pinned from the worker before this snapshot model (commit 541471b),
    // with this machine's busybox.
    assert_eq!(
        sha256_file(Path::new("/bin/busybox")),
        BUSYBOX_SHA256,
        "/bin/busybox changed: re-pin the digests below with the old worker"
    );
    assert_eq!(
        fat.trim(),
        "sha256:5027791ec794f8325cfc441285cc73a5106ea070db9b40a47fdcafdf8fa77d0f"
    );
    assert_eq!(
        bld.trim(),
        "sha256:21dafef77a82b07ef21ba32adf043ec5903009d1ff68a54747a0796f2ab44304"
    );

    // Rootless, from the very same base image: the same images.
    same_as_rootless(&env, &["fat", "build", "app"]);
}

#[test]
fn a_killed_build_leaves_nothing_a_later_build_trusts() {
    let env = Env::new();
    env.busybox();
    env.kilnfile(
        r#"
let app = image("bb:1")
    .run("echo started > /half && sleep 30 && echo done > /x")
    .entrypoint(["/bin/cat", "/x"]);
"#,
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "ctx"])
        .current_dir(env.dir.path())
        .env("KILN_HOME", env.path("home"))
        .env_remove("SOURCE_DATE_EPOCH")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the step's upper holds its first write, then SIGKILL kiln.
    let wt = env.path("home/worker-tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let upper = loop {
        let found = std::fs::read_dir(&wt).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.join("half").exists())
        });
        if let Some(p) = found {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let snaps_before = env.count("home/snapshots");

    // The next build runs the step again (nothing of the killed one counts)
    // and removes what the dead process left in the scratch area.
    env.kilnfile(
        r#"
let app = image("bb:1")
    .run("echo started > /half && echo done > /x")
    .entrypoint(["/bin/cat", "/x"]);
"#,
    );
    let (_, err) = env.ok(&["build", "ctx"]);
    assert!(
        steps(&err)
            .iter()
            .any(|(n, s)| n.contains("echo started") && s == "done"),
        "{err}"
    );
    assert!(!upper.exists(), "the killed step's upper is still there");
    let left: Vec<_> = std::fs::read_dir(&wt)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "worker-tmp still holds {left:?}");
    // Only the new step's layer was added.
    assert_eq!(env.count("home/snapshots"), snaps_before + 1);
}
