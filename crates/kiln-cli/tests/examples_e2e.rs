//! `examples/go-hello` and `examples/c-hello` end to end, as issue 5 asks:
//! the real `kiln` binary, a real Debian bookworm builder image
//! (`.ci/builder-image.sh`: `debootstrap --variant=minbase`, cached between
//! runs under /var/cache/kiln-ci) imported with `kiln import`, pushed with
//! `kiln push` to Debian's `docker-registry` on 127.0.0.1 as
//! `library/debian:bookworm`, and the examples' unchanged
//! `docker.io/library/debian:bookworm` redirected there with
//! `--registry-mirror`. The builders `apt-get install` golang-go and gcc from
//! Debian's mirror; the images run under podman (runc).
//!
//! One test as root and one as the unprivileged `kilntest` (made by
//! `.ci/setup`, with a subordinate ID range). Each keeps one KILN_HOME for
//! all its scenarios, so apt-get runs once per example and user. Cache
//! behaviour is read from `--metadata-file` (each step's name and cache hit).
//!
//! Needs root (debootstrap, podman, setpriv) and, on a cold cache, Debian's
//! mirror: run as CI does, `bash .ci/setup && cargo test`.

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Registry;

const GO_LINE: &str = "hello from a static Go binary built by kiln\n";
const C_LINE: &str = "hello from a static C binary built by kiln\n";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Who runs kiln: root, or `kilntest` through setpriv.
#[derive(Clone, Copy, PartialEq)]
enum User {
    Root,
    Kilntest,
}

/// One user's builds: a work directory (owned by that user), one KILN_HOME
/// for every scenario, the mirror pointing docker.io at the local registry.
struct Builds {
    dir: tempfile::TempDir,
    user: User,
    mirror: String,
}

/// What one `kiln build` reported.
struct Built {
    digest: String,
    /// (step name, cached) from `--metadata-file`
    steps: Vec<(String, bool)>,
    stderr: String,
}

impl Built {
    fn step(&self, pat: &str) -> bool {
        let hits: Vec<_> = self.steps.iter().filter(|(n, _)| n.contains(pat)).collect();
        assert_eq!(
            hits.len(),
            1,
            "expected one step matching `{pat}` in {:?}\n{}",
            self.steps,
            self.stderr
        );
        hits[0].1
    }

    fn assert_all_cached(&self, what: &str) {
        let ran: Vec<_> = self.steps.iter().filter(|(_, c)| !c).collect();
        assert!(
            ran.is_empty() && !self.steps.is_empty(),
            "{what}: every step should be CACHED, these ran: {ran:?}\n{}",
            self.stderr
        );
    }

    /// Exactly the steps matching `patterns` re-ran; every other was cached.
    fn assert_ran_only(&self, what: &str, patterns: &[&str]) {
        for (name, cached) in &self.steps {
            let expected_run = patterns.iter().any(|p| name.contains(p));
            assert_eq!(
                !cached,
                expected_run,
                "{what}: step `{name}` should have {} (steps: {:?})\n{}",
                if expected_run {
                    "re-run"
                } else {
                    "been CACHED"
                },
                self.steps,
                self.stderr
            );
        }
    }
}

impl Builds {
    fn new(user: User, reg: &Registry) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        let b = Builds {
            dir,
            user,
            mirror: format!("docker.io={}", reg.addr),
        };
        b.chown(b.dir.path());
        b
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn chown(&self, p: &Path) {
        if self.user == User::Kilntest {
            let o = Command::new("chown")
                .args(["-R", "kilntest:kilntest"])
                .arg(p)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }

    /// A copy of `examples/NAME` as a build context of this user.
    fn context(&self, name: &str) -> PathBuf {
        let src = repo().join("examples").join(name);
        let dest = self.path(name);
        std::fs::create_dir(&dest).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
        self.chown(&dest);
        dest
    }

    fn kiln(&self, args: &[&str]) -> Command {
        let mut c = match self.user {
            User::Root => Command::new(env!("CARGO_BIN_EXE_kiln")),
            User::Kilntest => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=kilntest", "--regid=kilntest", "--init-groups"])
                    .arg(env!("CARGO_BIN_EXE_kiln"));
                c
            }
        };
        c.args(args)
            .current_dir(self.dir.path())
            .env("KILN_HOME", self.path("home/kiln"))
            .env("HOME", self.path("home"))
            .env("NO_COLOR", "1")
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_LOG")
            .env_remove("KILN_REGISTRY_MIRROR");
        c
    }

    /// `kiln build CTX` with the mirror, plain progress and metadata; with
    /// `out`, also exported as an OCI archive there.
    fn build(&self, ctx: &Path, out: Option<&str>) -> Built {
        let meta = self.path("meta.json");
        let _ = std::fs::remove_file(&meta);
        let mut args = vec![
            "build".to_string(),
            ctx.display().to_string(),
            "--registry-mirror".into(),
            self.mirror.clone(),
            "--progress".into(),
            "plain".into(),
            "--metadata-file".into(),
            meta.display().to_string(),
        ];
        if let Some(o) = out {
            args.push("-o".into());
            args.push(format!("type=oci,dest={}", self.path(o).display()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.kiln(&args).output().expect("run kiln");
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success(),
            "kiln build {} as {} failed:\n{stderr}",
            ctx.display(),
            self.who()
        );
        let digest = String::from_utf8(o.stdout).unwrap().trim().to_string();
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap())
            .expect("--metadata-file is JSON");
        assert_eq!(meta["image.digest"], digest.as_str(), "{meta}");
        let steps = meta["steps"]
            .as_array()
            .expect("metadata has steps")
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or_default().to_string(),
                    s["cached"].as_bool().expect("a step's `cached` is a bool"),
                )
            })
            .collect();
        Built {
            digest,
            steps,
            stderr,
        }
    }

    fn who(&self) -> &'static str {
        match self.user {
            User::Root => "root",
            User::Kilntest => "kilntest",
        }
    }

    /// Runs an exported OCI archive with podman (as root: the image is the
    /// same whoever built it) and returns what it printed.
    fn run(&self, archive: &str) -> String {
        let podman_dir = self.path("podman");
        std::fs::create_dir_all(&podman_dir).unwrap();
        common::podman_run(&podman_dir, &self.path(archive))
    }
}

impl Drop for Builds {
    fn drop(&mut self) {
        let podman_dir = self.path("podman");
        if podman_dir.join("podman-root").exists() {
            let _ = common::podman(&podman_dir)
                .args(["system", "reset", "--force"])
                .output();
        }
        // Rootless, the store holds files of subordinate IDs that root can
        // remove but tempdir's drop may not read in order: do it here.
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

/// An OCI archive's blobs by digest, and its one manifest's layers as
/// (digest, compressed size).
struct Archive {
    blobs: std::collections::HashMap<String, Vec<u8>>,
    layers: Vec<(String, u64)>,
}

impl Archive {
    fn open(path: &Path) -> Self {
        let mut blobs = std::collections::HashMap::new();
        let mut index = None;
        let mut tar = tar::Archive::new(std::fs::File::open(path).unwrap());
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if name.trim_start_matches("./") == "index.json" {
                index = Some(data);
            } else if let Some(hex) = name.trim_start_matches("./").strip_prefix("blobs/sha256/") {
                blobs.insert(format!("sha256:{hex}"), data);
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&index.expect("index.json")).unwrap();
        let manifest =
            common::image_manifest(index, &|d| serde_json::from_slice(&blobs[d]).unwrap());
        let layers = common::manifest_layers(&manifest);
        Archive { blobs, layers }
    }

    /// The uncompressed tar of a layer (gzip, zstd or plain).
    fn layer_tar(&self, digest: &str) -> Vec<u8> {
        let blob = &self.blobs[digest];
        let tool = match blob.get(..4) {
            Some([0x1f, 0x8b, ..]) => Some("gzip"),
            Some([0x28, 0xb5, 0x2f, 0xfd]) => Some("zstd"),
            _ => None,
        };
        let Some(tool) = tool else {
            return blob.clone();
        };
        let mut c = Command::new(tool)
            .arg("-dc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        let mut stdin = c.stdin.take().unwrap();
        let data = blob.clone();
        let feeder = std::thread::spawn(move || stdin.write_all(&data));
        let o = c.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(o.status.success(), "{tool} -dc of {digest} failed");
        o.stdout
    }
}

/// go-hello's image is the static base plus one layer holding the binary,
/// and no bigger than the Go binary plus the static base plus 100 KB.
fn check_go_image_size(b: &Builds, archive: &str) {
    let o = b
        .kiln(&["base", "static", "-o", "type=oci,dest=base.tar"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let base = Archive::open(&b.path("base.tar"));
    let img = Archive::open(&b.path(archive));
    assert!(
        img.layers.len() > base.layers.len() && img.layers[..base.layers.len()] == base.layers[..],
        "the image's first layers are not the static base's: image {:?}, base {:?}",
        img.layers,
        base.layers
    );
    let added = &img.layers[base.layers.len()..];
    let mut binary = None;
    let mut added_tar = 0u64;
    for (digest, _) in added {
        let t = img.layer_tar(digest);
        added_tar += t.len() as u64;
        let mut a = tar::Archive::new(&t[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            if p.trim_start_matches("./") == "usr/local/bin/hello" {
                let h = e.header();
                // the Kilnfile's chown("65532:65532") and chmod(0o755),
                // rootless too
                assert_eq!(
                    (
                        h.uid().unwrap(),
                        h.gid().unwrap(),
                        h.mode().unwrap() & 0o7777
                    ),
                    (65532, 65532, 0o755),
                    "owner and mode of /usr/local/bin/hello in the image"
                );
                binary = Some(h.size().unwrap());
            }
        }
    }
    let binary = binary.expect("usr/local/bin/hello in the layers added to the static base");
    let base_size: u64 = base.layers.iter().map(|l| l.1).sum();
    let image_size: u64 = img.layers.iter().map(|l| l.1).sum();
    let limit = binary + base_size + 100 * 1024;
    assert!(
        image_size <= limit,
        "go-hello's layers take {image_size} bytes, more than the binary ({binary}) + the static \
         base ({base_size}) + 100 KB = {limit}"
    );
    // Uncompressed too: what was added is the binary and its tar headers.
    assert!(
        added_tar <= binary + 100 * 1024,
        "the layers added to the static base unpack to {added_tar} bytes for a {binary}-byte binary"
    );
}

/// Both examples, every scenario of issue 5 item 7, as `user`.
fn examples_end_to_end(user: User) {
    assert!(
        is_root(),
        "this test needs root (debootstrap, podman, setpriv); run it as CI does: \
         `bash .ci/setup && cargo test`"
    );
    let reg = Registry::start();
    let b = Builds::new(user, &reg);
    common::serve_debian_builder(&reg, b.dir.path());

    // go-hello, cold: runs and prints its line.
    let go = b.context("go-hello");
    let cold = b.build(&go, Some("go.tar"));
    assert!(cold.digest.starts_with("sha256:"), "{}", cold.digest);
    assert!(
        !cold.step("go build"),
        "a cold build compiled nothing:\n{}",
        cold.stderr
    );
    assert_eq!(b.run("go.tar"), GO_LINE);
    check_go_image_size(&b, "go.tar");

    // Nothing changed: every step CACHED, the same digest.
    let again = b.build(&go, None);
    again.assert_all_cached("go-hello rebuilt with nothing changed");
    assert_eq!(again.digest, cold.digest);

    // mtime only.
    let main_go = go.join("main.go");
    let f = std::fs::File::options().write(true).open(&main_go).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let touched = b.build(&go, None);
    touched.assert_all_cached("go-hello after `touch main.go`");
    assert_eq!(touched.digest, cold.digest);

    // A real edit: the context, its copy, the compile and what follows
    // re-run; apt-get does not.
    let src = std::fs::read_to_string(&main_go).unwrap();
    let edited = src.replace(
        "hello from a static Go binary",
        "hello again from a static Go binary",
    );
    assert_ne!(
        src, edited,
        "examples/go-hello/main.go no longer prints the line this test edits"
    );
    std::fs::write(&main_go, edited).unwrap();
    let rebuilt = b.build(&go, Some("go2.tar"));
    rebuilt.assert_ran_only(
        "go-hello after editing main.go",
        &[
            "context main.go",
            "main.go -> main.go",
            "go build",
            "/usr/local/bin/hello",
        ],
    );
    assert_ne!(rebuilt.digest, cold.digest);
    assert_eq!(
        b.run("go2.tar"),
        GO_LINE.replace("hello from", "hello again from")
    );

    // c-hello, cold (the debian image is in the store already).
    let c = b.context("c-hello");
    let cold = b.build(&c, Some("c.tar"));
    assert!(!cold.step("gcc"), "{}", cold.stderr);
    assert_eq!(b.run("c.tar"), C_LINE);
    let again = b.build(&c, None);
    again.assert_all_cached("c-hello rebuilt with nothing changed");
    assert_eq!(again.digest, cold.digest);

    // A comment-only edit: the compile re-runs, its output is byte for byte
    // the same, so the copy into the static base stays cached and the image
    // keeps its digest.
    let hello_c = c.join("hello.c");
    let src = std::fs::read_to_string(&hello_c).unwrap();
    std::fs::write(&hello_c, format!("/* only a comment changed */\n{src}")).unwrap();
    let commented = b.build(&c, None);
    commented.assert_ran_only(
        "c-hello after a comment-only edit",
        &["context hello.c", "hello.c -> hello.c", "gcc"],
    );
    assert_eq!(
        commented.digest, cold.digest,
        "a comment-only edit changed the image"
    );
}

#[test]
fn go_and_c_hello_as_root() {
    examples_end_to_end(User::Root);
}

#[test]
fn go_and_c_hello_rootless() {
    examples_end_to_end(User::Kilntest);
}
