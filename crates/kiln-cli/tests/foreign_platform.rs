//! Images for a platform other than the host's (#18 items 3 and 4), end to
//! end with the real binary: `static_base()` for every platform kiln knows,
//! Debian package sets resolved for the target architecture (arm64 `.deb`s
//! from Debian's mirror), the ELF check naming a binary's machine and the
//! image's platform, and `run` steps under binfmt_misc emulation
//! (qemu-user-static's `qemu-aarch64`, registered by the test as root and
//! removed after) or refused without a handler. The programs copied in are
//! the real ELF fixtures of kiln-worker (`tests/fixtures/elf/make.sh`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

struct Env {
    dir: tempfile::TempDir,
    /// kiln runs as the unprivileged `kilntest` (made by `.ci/setup`)
    rootless: bool,
}

impl Env {
    fn new() -> Self {
        let env = Self {
            dir: tempfile::tempdir().unwrap(),
            rootless: false,
        };
        std::fs::create_dir(env.path("ctx")).unwrap();
        env
    }

    /// An [`Env`] whose kiln runs as `kilntest`, through setpriv (so the
    /// test itself runs as root); files the test writes stay readable.
    fn kilntest() -> Self {
        let mut env = Self::new();
        env.rootless = true;
        common::chown_kilntest(env.dir.path());
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kilnfile(&self, text: &str) {
        std::fs::write(self.path("ctx/Kilnfile"), text).unwrap();
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        // about platforms, not attestations: root's and kilntest's digests compare
        let args = &common::without_attestations(args);
        if self.rootless {
            return common::kilntest_ok(&self.path("home"), self.dir.path(), args);
        }
        common::ok_in(self.dir.path(), args)
    }

    /// Runs kiln and expects it to fail; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        // about platforms, not attestations: root's and kilntest's digests compare
        let args = &common::without_attestations(args);
        let o: Output = if self.rootless {
            common::kilntest_command(&self.path("home"), self.dir.path(), args)
                .output()
                .expect("run setpriv")
        } else {
            common::kiln_in(self.dir.path(), args)
        };
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "kiln {args:?} succeeded:\n{err}");
        err
    }

    /// Copies the ELF fixture `name` into the context.
    fn fixture(&self, name: &str) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kiln-worker/tests/fixtures/elf")
            .join(name);
        std::fs::copy(from, self.path(&format!("ctx/{name}"))).unwrap();
    }

    /// A busybox image with `sh` as `bb:1` in the store, imported by
    /// whoever runs kiln here.
    fn import_busybox(&self) {
        let bb = common::Busybox::new(&["sh"]);
        if !self.rootless {
            return bb.import(&self.path("home"), self.dir.path());
        }
        bb.write_once(&self.path("rootfs"));
        common::chown_kilntest(&self.path("rootfs"));
        self.ok(&["import", "rootfs", "-t", "bb:1"]);
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `skopeo inspect [--config]` of an OCI archive (layers; the config's
/// architecture and variant).
fn skopeo(archive: &Path, config: bool) -> serde_json::Value {
    let o = Command::new("skopeo")
        .arg("inspect")
        .args(config.then_some("--config"))
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .expect("run skopeo");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn goarch_of(path: &Path) -> Option<&'static str> {
    kiln_worker::elfcheck::goarch(&std::fs::read(path).unwrap())
}

#[test]
fn static_base_for_every_platform_has_the_same_files() {
    static_base_for_every_platform(&Env::new());
}

#[test]
fn static_base_for_every_platform_rootless() {
    if !is_root() {
        return; // setpriv to `kilntest` needs root
    }
    static_base_for_every_platform(&Env::kilntest());
}

fn static_base_for_every_platform(env: &Env) {
    std::fs::write(env.path("ctx/hello.txt"), "hello\n").unwrap();
    env.kilnfile(
        "let app = static_base()\n    .copy(context().path(\"hello.txt\"), \"/hello.txt\");\n",
    );
    let mut platforms: Vec<String> = kiln_types::platform::ARCHES
        .iter()
        .map(|a| {
            kiln_types::Platform::new("linux", a.oci, None)
                .normalized()
                .to_string()
        })
        .collect();
    platforms.push("linux/arm/v6".into());
    let mut layers = None;
    for p in &platforms {
        let tar = env.path(&format!("{}.tar", p.replace('/', "-")));
        env.ok(&[
            "build",
            "ctx",
            "--platform",
            p,
            "-o",
            &format!("type=oci,dest={}", tar.display()),
        ]);
        let c = skopeo(&tar, true);
        let want = kiln_types::Platform::parse(p).unwrap();
        assert_eq!(c["os"], "linux", "{p}: {c}");
        assert_eq!(c["architecture"], want.architecture.as_str(), "{p}: {c}");
        match &want.variant {
            Some(v) => assert_eq!(c["variant"], v.as_str(), "{p}: {c}"),
            None => assert!(c.get("variant").is_none(), "{p}: {c}"),
        }
        // the same files for every platform: only the config differs
        let l = skopeo(&tar, false)["Layers"].clone();
        assert_eq!(layers.get_or_insert_with(|| l.clone()), &l, "{p}");
    }
}

/// The arm64 image of the fixture `program` on `static_base()` with glibc
/// from Debian bookworm's arm64 packages.
fn arm64_app(program: &str) -> String {
    format!(
        "let app = static_base()\n    .packages(debian(\"bookworm\").packages([\"libc6\"]))\n    .copy(context().path(\"{program}\"), \"/usr/local/bin/hello\", [chmod(0o755)])\n    .entrypoint([\"/usr/local/bin/hello\"]);\n"
    )
}

#[test]
fn package_sets_and_the_elf_check_follow_the_target_architecture() {
    package_sets_and_the_elf_check(&Env::new());
}

#[test]
fn package_sets_and_the_elf_check_rootless() {
    if !is_root() {
        return; // setpriv to `kilntest` needs root
    }
    package_sets_and_the_elf_check(&Env::kilntest());
}

fn package_sets_and_the_elf_check(env: &Env) {
    env.fixture("hello-arm64-dynamic");
    env.fixture("hello-amd64-dynamic");
    env.kilnfile(&arm64_app("hello-arm64-dynamic"));
    env.ok(&[
        "build",
        "ctx",
        "--platform",
        "linux/arm64",
        "-o",
        "type=oci,dest=app.tar",
        "-o",
        "type=local,dest=armroot",
    ]);
    assert_eq!(skopeo(&env.path("app.tar"), true)["architecture"], "arm64");
    // arm64 .debs, unpacked into the multiarch directories of arm64
    let root = env.path("armroot");
    let libc = root.join("usr/lib/aarch64-linux-gnu/libc.so.6");
    assert_eq!(goarch_of(&libc), Some("arm64"), "{}", libc.display());
    assert_eq!(
        goarch_of(&root.join("usr/lib/ld-linux-aarch64.so.1")),
        Some("arm64")
    );
    assert!(!root.join("usr/lib/x86_64-linux-gnu").exists());
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status.d/libc6")).unwrap();
    assert!(status.contains("Architecture: arm64"), "{status}");

    // an amd64 program in the arm64 image: both machines named, at the copy
    env.kilnfile(&arm64_app("hello-amd64-dynamic"));
    let err = env.fails(&[
        "build",
        "ctx",
        "--platform",
        "linux/arm64",
        "-o",
        "type=oci,dest=bad.tar",
    ]);
    assert!(
        err.contains("`/usr/local/bin/hello` is built for amd64"),
        "{err}"
    );
    assert!(err.contains("the image is for linux/arm64"), "{err}");
    assert!(err.contains("Kilnfile:3:6"), "{err}");
    assert!(err.contains("GOARCH=arm64"), "{err}");
    assert!(!env.path("bad.tar").exists());
    // the same program is right for amd64, with amd64's libc6
    if kiln_types::Platform::host().architecture == "amd64" {
        env.ok(&[
            "build",
            "ctx",
            "--platform",
            "linux/amd64",
            "-o",
            "type=local,dest=amd",
        ]);
        let libc = env.path("amd/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(goarch_of(&libc), Some("amd64"));
    }

    // on an image base (no static check) the machine is still checked
    env.import_busybox();
    env.kilnfile("let app = image(\"bb:1\")\n    .copy(context().path(\"hello-arm64-dynamic\"), \"/hello\");\n");
    let err = env.fails(&["build", "ctx", "--platform", "linux/amd64"]);
    assert!(err.contains("`/hello` is built for arm64"), "{err}");
    assert!(err.contains("the image is for linux/amd64"), "{err}");
    assert!(err.contains("Kilnfile:2:6"), "{err}");
    // the command check sees a program of another machine too, wherever
    // it comes from (here a copy the ELF check is told to skip)
    env.kilnfile("let app = image(\"bb:1\")\n    .copy(context().path(\"hello-arm64-dynamic\"), \"/hello\", [allow_dynamic(), chmod(0o755)])\n    .entrypoint([\"/hello\"]);\n");
    let err = env.fails(&["build", "ctx", "--platform", "linux/amd64"]);
    assert!(
        err.contains("entrypoint `/hello` is built for arm64, but the image is for linux/amd64"),
        "{err}"
    );
}

/// binfmt_misc is one machine-wide table: the tests of this file that
/// change it take turns.
static BINFMT: Mutex<()> = Mutex::new(());

const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// Removes a binfmt_misc entry (writing -1 to it, binfmt-misc.rst).
fn unregister(name: &str) {
    let entry = Path::new(BINFMT_MISC).join(name);
    if entry.exists() {
        std::fs::write(&entry, "-1").unwrap();
    }
}

/// qemu-user-static's `qemu-aarch64` as binfmt-support registers it (flags
/// `PF`), removed on drop.
struct QemuAarch64;

impl QemuAarch64 {
    fn enable() -> QemuAarch64 {
        let o = Command::new("update-binfmts")
            .args(["--enable", "qemu-aarch64"])
            .output()
            .expect("update-binfmts (binfmt-support, .ci/setup installs it)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let entry = std::fs::read_to_string(Path::new(BINFMT_MISC).join("qemu-aarch64")).unwrap();
        assert!(
            entry.contains("flags: PF") || entry.contains("F"),
            "{entry}"
        );
        QemuAarch64
    }
}

impl Drop for QemuAarch64 {
    fn drop(&mut self) {
        unregister("qemu-aarch64");
    }
}

/// binfmt_misc mounted (as systemd does; a bare container may not have it).
fn mount_binfmt_misc() {
    if Path::new(BINFMT_MISC).join("register").exists() {
        return;
    }
    let o = Command::new("mount")
        .args(["-t", "binfmt_misc", "binfmt_misc", BINFMT_MISC])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn foreign_run_steps_run_under_binfmt_misc_or_are_refused() {
    if !is_root() {
        // registering a handler needs root; the rootless build is the same
        return;
    }
    if kiln_types::Platform::host().architecture != "amd64" {
        return; // the fixtures and the handler are amd64 host → arm64
    }
    let _turn = BINFMT.lock().unwrap_or_else(|e| e.into_inner());
    mount_binfmt_misc();
    unregister("qemu-aarch64");
    unregister("kiln-test-aarch64");
    let env = Env::new();
    // an arm64 image with a shell, made without running anything
    env.kilnfile("let base = static_base()\n    .packages(debian(\"bookworm\").packages([\"dash\", \"coreutils\"]));\n");
    env.ok(&[
        "build",
        "ctx",
        "--platform",
        "linux/arm64",
        "-t",
        "armbase:1",
    ]);
    let step = "let app = image(\"armbase:1\")\n    .run([\"/bin/sh\", \"-c\", \"uname -m > /tmp/arch\"]);\n";
    env.kilnfile(step);

    // no handler: refused before anything runs, with both ways out
    let err = env.fails(&["build", "ctx", "--platform", "linux/arm64"]);
    assert!(err.contains("runs a command for linux/arm64"), "{err}");
    assert!(
        err.contains("no binfmt_misc handler is registered"),
        "{err}"
    );
    assert!(err.contains("build_platform()"), "{err}");
    assert!(err.contains("qemu-user-static"), "{err}");
    assert!(err.contains("Kilnfile:2:6"), "{err}");
    assert!(!err.contains("exec format error"), "{err}");

    // a handler without the F flag cannot work inside the sandbox: said so
    let register = ":kiln-test-aarch64:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:P";
    std::fs::write(Path::new(BINFMT_MISC).join("register"), register).unwrap();
    let err = env.fails(&["build", "ctx", "--platform", "linux/arm64"]);
    unregister("kiln-test-aarch64");
    assert!(err.contains("`kiln-test-aarch64`"), "{err}");
    assert!(err.contains("without the `F` flag"), "{err}");

    // qemu-user-static's handler: the step runs, emulated, with a warning
    let qemu = QemuAarch64::enable();
    let (_, err) = env.ok(&[
        "build",
        "ctx",
        "--platform",
        "linux/arm64",
        "-o",
        "type=local,dest=out",
    ]);
    assert!(
        err.contains("warning: 1 run step for linux/arm64 ran emulated"),
        "{err}"
    );
    assert!(err.contains("`qemu-aarch64`"), "{err}");
    assert_eq!(
        std::fs::read_to_string(env.path("out/tmp/arch")).unwrap(),
        "aarch64\n"
    );
    // the same build again: the step is cached, nothing ran emulated
    let (_, err) = env.ok(&["build", "ctx", "--platform", "linux/arm64"]);
    assert!(!err.contains("emulated"), "{err}");

    // and an arm64 image made without emulation runs under it (podman)
    env.fixture("hello-arm64-dynamic");
    env.kilnfile(&arm64_app("hello-arm64-dynamic"));
    env.ok(&[
        "build",
        "ctx",
        "--platform",
        "linux/arm64",
        "-o",
        "type=oci,dest=app.tar",
    ]);
    let out = common::podman_run(env.dir.path(), &env.path("app.tar"));
    assert_eq!(out, "hello from arm64\n");
    drop(qemu);
    assert!(!Path::new(BINFMT_MISC).join("qemu-aarch64").exists());
}

/// An OCI archive read whole: blobs by digest and the index.
struct Archive {
    blobs: std::collections::HashMap<String, Vec<u8>>,
    index: serde_json::Value,
}

impl Archive {
    fn open(path: &Path) -> Archive {
        use std::io::Read as _;
        let mut blobs = std::collections::HashMap::new();
        let mut index = None;
        let mut tar = tar::Archive::new(std::fs::File::open(path).unwrap());
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if name == "index.json" {
                index = Some(serde_json::from_slice(&data).unwrap());
            } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                blobs.insert(format!("sha256:{hex}"), data);
            }
        }
        Archive {
            blobs,
            index: index.expect("index.json"),
        }
    }

    fn json(&self, digest: &str) -> serde_json::Value {
        serde_json::from_slice(&self.blobs[digest]).unwrap()
    }

    /// The image index of the archive: index.json itself, or the one index
    /// it points at.
    fn image_index(&self) -> serde_json::Value {
        let m = &self.index["manifests"][0];
        if m["mediaType"] == "application/vnd.oci.image.index.v1+json" {
            self.json(m["digest"].as_str().unwrap())
        } else {
            self.index.clone()
        }
    }

    /// The bytes of `path` in the image manifest `digest` (its last layer
    /// holding it).
    fn file(&self, manifest: &str, path: &str) -> Vec<u8> {
        use std::io::Read as _;
        let m = self.json(manifest);
        for l in m["layers"].as_array().unwrap().iter().rev() {
            let blob = &self.blobs[l["digest"].as_str().unwrap()];
            let rd: Box<dyn std::io::Read> = match blob.get(..4) {
                Some([0x1f, 0x8b, ..]) => Box::new(flate2::read::GzDecoder::new(&blob[..])),
                Some([0x28, 0xb5, 0x2f, 0xfd]) => Box::new(zstd::Decoder::new(&blob[..]).unwrap()),
                _ => Box::new(&blob[..]),
            };
            let mut tar = tar::Archive::new(rd);
            for e in tar.entries().unwrap() {
                let mut e = e.unwrap();
                if e.path().unwrap().to_string_lossy().trim_start_matches("./") == path {
                    let mut data = Vec::new();
                    e.read_to_end(&mut data).unwrap();
                    return data;
                }
            }
        }
        panic!("no /{path} in {manifest}")
    }
}

/// examples/go-hello and examples/rust-hello for linux/amd64 and
/// linux/arm64 by cross-compiling in a builder on the build platform: no
/// binfmt_misc handler is registered while they build (nothing is
/// emulated), the index has both platforms' manifests, each image's binary
/// is of its platform's machine, and the arm64 image runs under
/// qemu-user-static, registered for that and removed after.
#[test]
fn cross_compiled_examples_for_amd64_and_arm64() {
    if !is_root() || kiln_types::Platform::host().architecture != "amd64" {
        return; // debootstrap and binfmt_misc need root; the Rust example an amd64 builder
    }
    let _turn = BINFMT.lock().unwrap_or_else(|e| e.into_inner());
    mount_binfmt_misc();
    unregister("qemu-aarch64");
    let reg = common::Registry::start();
    let env = Env::new();
    common::serve_debian_builder(&reg, env.dir.path());
    let mirror = format!("docker.io={}", reg.addr);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for (example, line) in [
        ("go-hello", "hello from a static Go binary built by kiln\n"),
        (
            "rust-hello",
            "hello from a static Rust binary built by kiln\n",
        ),
    ] {
        let ctx = examples.join(example);
        let ctx = ctx.to_str().unwrap();
        let both = env.path(&format!("{example}.tar"));
        let (_, err) = env.ok(&[
            "build",
            ctx,
            "--registry-mirror",
            &mirror,
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            &format!("type=oci,dest={}", both.display()),
        ]);
        assert!(!err.contains("emulated"), "{example}: {err}");
        // skopeo's view of the index: one manifest per platform
        let o = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", both.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let raw: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let platforms: Vec<(String, String)> = raw["manifests"]
            .as_array()
            .unwrap_or_else(|| panic!("{example}: not an index: {raw}"))
            .iter()
            .map(|m| {
                let p = &m["platform"];
                (
                    p["os"].as_str().unwrap().into(),
                    p["architecture"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            platforms,
            [
                ("linux".into(), "amd64".into()),
                ("linux".into(), "arm64".into())
            ],
            "{example}: {raw}"
        );
        // each manifest's binary is of its platform's machine
        let archive = Archive::open(&both);
        let index = archive.image_index();
        for m in index["manifests"].as_array().unwrap() {
            let arch = m["platform"]["architecture"].as_str().unwrap();
            let digest = m["digest"].as_str().unwrap();
            let hello = archive.file(digest, "usr/local/bin/hello");
            assert_eq!(
                kiln_worker::elfcheck::goarch(&hello),
                Some(arch),
                "{example} {arch}"
            );
            assert_eq!(
                kiln_worker::elfcheck::linkage(&hello),
                kiln_worker::elfcheck::Linkage::Static,
                "{example} {arch}"
            );
            let config = archive.json(m_config(&archive, digest).as_str());
            assert_eq!(config["architecture"], arch, "{example}");
        }
        // the arm64 image alone (from the same cache), run under qemu
        let arm = env.path(&format!("{example}-arm64.tar"));
        let (_, err) = env.ok(&[
            "build",
            ctx,
            "--registry-mirror",
            &mirror,
            "--platform",
            "linux/arm64",
            "-o",
            &format!("type=oci,dest={}", arm.display()),
        ]);
        assert!(!err.contains("emulated"), "{example}: {err}");
        let qemu = QemuAarch64::enable();
        let out = common::podman_run(env.dir.path(), &arm);
        drop(qemu);
        assert_eq!(out, line, "{example} on arm64 under qemu-user-static");
    }
}

/// The config digest of the image manifest `digest`.
fn m_config(archive: &Archive, digest: &str) -> String {
    archive.json(digest)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// examples/go-hello for linux/amd64 and linux/arm64 as the unprivileged
/// `kilntest` (the builder's apt-get and the two cross-compiles rootless):
/// nothing emulated, and the same index, byte for byte, as root's build.
/// (Running the arm64 image needs a binfmt_misc handler, which only root
/// registers: that part is root's, above.)
#[test]
fn cross_compiled_go_hello_rootless_is_roots_index() {
    if !is_root() || kiln_types::Platform::host().architecture != "amd64" {
        return; // debootstrap and setpriv need root; the fixtures an amd64 host
    }
    let reg = common::Registry::start();
    let env = Env::kilntest();
    common::serve_debian_builder(&reg, env.dir.path());
    let mirror = format!("docker.io={}", reg.addr);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/go-hello");
    let ctx = env.path("go-hello");
    std::fs::create_dir(&ctx).unwrap();
    for f in ["Kilnfile", "main.go"] {
        std::fs::copy(examples.join(f), ctx.join(f)).unwrap();
    }
    let ctx = ctx.to_str().unwrap();
    let args = |out: &str| -> Vec<String> {
        let dest = format!("type=oci,dest={out}");
        let platforms = "linux/amd64,linux/arm64";
        let a = ["build", ctx, "--registry-mirror", mirror.as_str()];
        (a.iter()
            .chain(&["--platform", platforms, "-o", dest.as_str()])
            .chain(&common::NO_ATTESTATIONS))
        .map(|s| s.to_string())
        .collect()
    };
    let as_root = args(env.path("root.tar").to_str().unwrap());
    let as_root: Vec<&str> = as_root.iter().map(String::as_str).collect();
    let root_digest = common::expect_ok(
        common::kiln_command(&env.path("root-home"), env.dir.path(), &as_root)
            .output()
            .unwrap(),
        "the build as root",
    );
    let rootless = args(env.path("kilntest.tar").to_str().unwrap());
    let rootless: Vec<&str> = rootless.iter().map(String::as_str).collect();
    // its own store: the builder pulled, apt-get and both compiles run again
    let (digest, err) = env.ok(&rootless);
    assert!(!err.contains("emulated"), "{err}");
    assert_eq!(digest.trim(), root_digest, "{err}");
    let archive = Archive::open(&env.path("kilntest.tar"));
    let index = archive.image_index();
    let mut arches = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        let arch = m["platform"]["architecture"].as_str().unwrap();
        let hello = archive.file(m["digest"].as_str().unwrap(), "usr/local/bin/hello");
        assert_eq!(kiln_worker::elfcheck::goarch(&hello), Some(arch));
        arches.push(arch);
    }
    assert_eq!(arches, ["amd64", "arm64"]);
}
