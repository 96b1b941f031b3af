//! What users see from `kiln build`, end to end with the real binary: the
//! tty progress under a real pseudo-terminal (util-linux `script`), the
//! report of a failing `run`, the static/dynamic ELF check with binaries
//! compiled here by gcc, and `--platform`.

mod common;

use common::{Busybox, Registry, steps};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let env = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(env.path("ctx")).unwrap();
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kiln(&self, args: &[&str]) -> Output {
        common::kiln_in(self.dir.path(), args)
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        common::ok_in(self.dir.path(), args)
    }

    /// Runs kiln and expects it to fail; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.kiln(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "kiln {args:?} succeeded:\n{err}");
        assert!(o.stdout.is_empty(), "a failed build printed a digest");
        err
    }

    fn kilnfile(&self, text: &str) {
        std::fs::write(self.path("ctx/Kilnfile"), text).unwrap();
    }

    /// A busybox image `bb:1` with a few applets, for `run` steps.
    fn busybox_image(&self) {
        self.busybox_rootfs();
        self.ok(&["import", "rootfs", "-t", "bb:1"]);
    }

    /// `rootfs/`: busybox and a few applets.
    fn busybox_rootfs(&self) {
        Busybox::new(&["sh", "echo", "cat", "sleep", "seq", "true"])
            .dir("tmp")
            .write(&self.path("rootfs"));
    }

    /// Runs kiln as the unprivileged `kilntest` (made by `.ci/setup`, with
    /// a subordinate ID range) with its own KILN_HOME.
    fn kilntest(&self, args: &[&str]) -> Output {
        let o = Command::new("chown")
            .args(["-R", "kilntest:kilntest"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        common::kilntest_command(&self.path("home-kilntest"), self.dir.path(), args)
            .output()
            .expect("run setpriv")
    }

    /// Compiles `src` with gcc and `flags` into `ctx/<out>`.
    fn gcc(&self, out: &str, flags: &[&str]) {
        let c = self.path("hello.c");
        std::fs::write(
            &c,
            "#include <stdio.h>\nint main(void){puts(\"hi\");return 0;}\n",
        )
        .unwrap();
        let o = Command::new("gcc")
            .args(flags)
            .arg("-o")
            .arg(self.path("ctx").join(out))
            .arg(&c)
            .output()
            .expect("run gcc");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

fn status_of<'a>(steps: &'a [(String, String)], needle: &str) -> &'a str {
    steps
        .iter()
        .find(|(n, _)| n.contains(needle))
        .map(|(_, s)| s.as_str())
        .unwrap_or_else(|| panic!("no step named like `{needle}` in {steps:?}"))
}

/// Runs kiln under a pseudo-terminal (`script` from util-linux) with a
/// fixed terminal size; returns everything the terminal received.
fn kiln_in_pty(env: &Env, args: &str) -> (bool, String) {
    let cmd = format!(
        "stty cols 100 rows 40; exec {} {args}",
        env!("CARGO_BIN_EXE_kiln")
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(env.dir.path())
        .env("KILN_HOME", env.path("home"))
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KILN_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn tty_progress_shows_steps_times_and_live_output() {
    let env = Env::new();
    env.busybox_image();
    env.kilnfile(
        "let app = image(\"bb:1\")\n    .run(\"for i in 1 2 3 4 5; do echo tick-$i; sleep 0.3; done\")\n    .run(\"echo second > /second\");\n",
    );
    // `auto` on a terminal is the tty view.
    let (ok, screen) = kiln_in_pty(&env, "build ctx --progress auto");
    assert!(ok, "{screen}");
    assert!(screen.contains("[+] Building"), "{screen}");
    // The live tail of the running step, in the tty's own format (plain
    // would print `   NAME | tick-1`).
    let tail = screen
        .find("   | tick-1")
        .unwrap_or_else(|| panic!("no live tail:\n{screen}"));
    // Finished steps collapse to one line with their time, after the tail.
    let done = finished_line(
        &screen,
        "=> app: run \"for i in 1 2 3 4 5; do echo tick-$i; sleep 0.3; done\"",
    )
    .unwrap_or_else(|| panic!("no finished line for the first run step:\n{screen}"));
    assert!(tail < done, "{screen}");
    assert!(screen.contains("finished"), "{screen}");
    assert!(
        !screen.contains("   app: run"),
        "plain lines in tty mode:\n{screen}"
    );

    // A rebuild: every step CACHED.
    let (ok, screen) = kiln_in_pty(&env, "build ctx");
    assert!(ok, "{screen}");
    assert!(screen.contains("=> CACHED app: run \"for i in"), "{screen}");
    assert!(
        screen.contains("=> CACHED app: run \"echo second"),
        "{screen}"
    );
    assert!(!screen.contains("tick-1"), "a cached step ran:\n{screen}");

    // A failure in the tty view: the step's ERROR line, the summary says
    // failed, then the report.
    env.kilnfile("let app = image(\"bb:1\")\n    .run(\"echo broken; exit 4\");\n");
    let (ok, screen) = kiln_in_pty(&env, "build ctx --progress tty");
    assert!(!ok, "{screen}");
    assert!(
        screen.contains("=> ERROR app: run \"echo broken; exit 4\""),
        "{screen}"
    );
    assert!(screen.contains(") failed"), "{screen}");
    assert!(screen.contains("exited with exit code 4"), "{screen}");
    assert!(screen.contains("this run step failed"), "{screen}");

    // Without a terminal, `auto` is plain.
    env.kilnfile(
        "let app = image(\"bb:1\")\n    .run(\"for i in 1 2 3 4 5; do echo tick-$i; sleep 0.3; done\")\n    .run(\"echo second > /second\");\n",
    );
    let (_, err) = env.ok(&["build", "ctx"]);
    assert!(
        steps(&err).iter().all(|(_, s)| s == "CACHED") && !steps(&err).is_empty(),
        "{err}"
    );
}

/// Where the one-line summary of a finished step is: `NAME 1.2s` (the live
/// line of a running step pads its time to the right edge instead).
fn finished_line(screen: &str, name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = screen[from..].find(name) {
        let at = from + i;
        let rest = &screen[at + name.len()..];
        if rest.starts_with(' ') && rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
            return Some(at);
        }
        from = at + name.len();
    }
    None
}

#[test]
fn plain_progress_prints_whole_lines_numbered_like_buildkit() {
    let env = Env::new();
    env.busybox_image();
    // a line written in pieces, a `\r`-rewritten line, `\r\n` endings,
    // stdout and stderr interleaved, and a last line without a newline
    env.kilnfile(
        "let app = image(\"bb:1\")\n    .run(\"printf 'pie'; sleep 0.2; printf 'ces\\\\n'; printf '10%%\\\\r50%%\\\\r100%%\\\\r\\\\n'; printf 'dpkg\\\\r\\\\n'; sleep 0.1; echo err >&2; sleep 0.1; printf 'no newline'\");\n",
    );
    let (_, err) = env.ok(&["build", "ctx", "--progress", "plain"]);
    let start = err
        .lines()
        .find(|l| l.starts_with('#') && l.contains("run \"printf"))
        .unwrap_or_else(|| panic!("no start line:\n{err}"));
    let n = start.split_whitespace().next().unwrap();
    let output: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&format!("{n} ")) && *l != start)
        .map(|l| {
            // `#N SECONDS TEXT`
            let mut parts = l.splitn(3, ' ');
            let (_, t) = (parts.next(), parts.next().unwrap());
            t.parse::<f64>()
                .unwrap_or_else(|_| panic!("no time in {l:?}"));
            parts.next().unwrap_or("")
        })
        .collect();
    assert_eq!(
        output,
        ["pieces", "100%", "dpkg", "err", "no newline"],
        "{err}"
    );
    assert!(!err.contains('\r'), "{err:?}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("=> app: run \"printf") && l.contains(" done ")),
        "{err}"
    );
}

#[test]
fn failing_run_reports_command_status_tail_and_location_and_keeps_the_cache() {
    let env = Env::new();
    env.busybox_image();
    let failing = "let app = image(\"bb:1\")\n    .run(\"echo one > /one\")\n    .run(\"for i in $(seq 1 40); do echo line-$i; done; exit 7\");\n";
    env.kilnfile(failing);
    let err = env.fails(&["build", "ctx", "-t", "app:1", "--progress", "plain"]);
    assert!(
        err.contains(
            "`for i in $(seq 1 40); do echo line-$i; done; exit 7` exited with exit code 7"
        ),
        "{err}"
    );
    assert!(err.contains("ctx/Kilnfile:3:6"), "{err}");
    // The last 30 lines: 11..=40.
    let (_, report) = err
        .split_once("error: the last lines of output of")
        .unwrap_or_else(|| panic!("no output tail:\n{err}"));
    assert!(report.contains("| line-40\n"), "{err}");
    assert!(report.contains("| line-11\n"), "{err}");
    assert!(
        !report.contains("| line-10\n"),
        "more than 30 lines:\n{err}"
    );
    // The miette report at the CLI edge: the Kilnfile line and a help.
    assert!(err.contains("this run step failed"), "{err}");
    assert!(err.contains("help:"), "{err}");
    assert!(
        err.contains(".run(\"for i in $(seq 1 40)"),
        "the source line is shown:\n{err}"
    );
    // Nothing was named.
    let o = env.kiln(&["images"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("app:1"));

    // Fix the step: what finished before the failure is CACHED.
    env.kilnfile(&failing.replace("exit 7", "true"));
    let (out, err) = env.ok(&["build", "ctx", "--progress", "plain"]);
    assert!(out.starts_with("sha256:"), "{out}");
    let s = steps(&err);
    assert_eq!(status_of(&s, "echo one"), "CACHED", "{err}");
    assert_eq!(status_of(&s, "seq 1 40"), "done", "{err}");
}

#[test]
fn json_progress_carries_locations_of_failures() {
    let env = Env::new();
    env.busybox_image();
    env.kilnfile("let app = image(\"bb:1\")\n    .run(\"echo oops; exit 2\");\n");
    let err = env.fails(&["build", "ctx", "--progress", "json"]);
    // Every line is an object, the report too.
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let failed: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{err}");
    assert_eq!(failed[0]["location"], "ctx/Kilnfile:2:6", "{err}");
    assert!(failed[0]["error"].as_str().unwrap().contains("exit code 2"));
    let report = events.last().unwrap();
    assert_eq!(report["event"], "error", "{err}");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("exited with exit code 2"),
        "{err}"
    );
    assert!(report["output"].as_str().unwrap().contains("oops"), "{err}");
}

fn elf_kilnfile(base: &str, file: &str, opts: &str) -> String {
    format!(
        "let app = {base}\n    .copy(context().path(\"{file}\"), \"/usr/local/bin/{file}\"{opts})\n    .entrypoint([\"/usr/local/bin/{file}\"]);\n"
    )
}

#[test]
fn dynamic_binaries_on_a_static_base_fail_before_export() {
    let env = Env::new();
    env.gcc("dyn", &[]);
    env.kilnfile(&elf_kilnfile("static_base()", "dyn", ""));
    let err = env.fails(&["build", "ctx", "-t", "app:1", "-o", "type=oci,dest=app.tar"]);
    assert!(
        err.contains("`/usr/local/bin/dyn` is dynamically linked"),
        "{err}"
    );
    assert!(err.contains("ld-linux-x86-64.so.2"), "{err}");
    assert!(err.contains("static_base()"), "{err}");
    for fix in [
        "CGO_ENABLED=0",
        "-static",
        "-C target-feature=+crt-static",
        "allow_dynamic()",
    ] {
        assert!(err.contains(fix), "no `{fix}` in:\n{err}");
    }
    assert!(err.contains("Kilnfile:2:6"), "{err}");
    assert!(!env.path("app.tar").exists(), "exported anyway");
    // Again, with every step and the check's per-layer record cached.
    let again = env.fails(&["build", "ctx", "-o", "type=oci,dest=app.tar"]);
    assert!(
        again.contains("`/usr/local/bin/dyn` is dynamically linked"),
        "{again}"
    );
    assert!(!env.path("app.tar").exists(), "exported anyway");
    let o = env.kiln(&["images"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("app:1"));

    // The host's /bin/true on scratch, copied as a directory: the path in
    // the image is named.
    std::fs::create_dir(env.path("ctx/bin")).unwrap();
    std::fs::copy("/bin/true", env.path("ctx/bin/true")).unwrap();
    std::fs::write(env.path("ctx/bin/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    env.kilnfile("let app = scratch()\n    .copy(context().path(\"bin\"), \"/app/\");\n");
    let err = env.fails(&["build", "ctx"]);
    assert!(err.contains("`/app/true` is dynamically linked"), "{err}");
    assert!(err.contains("scratch()"), "{err}");
    assert!(!err.contains("run.sh"), "{err}");
}

#[test]
fn static_binaries_scripts_and_allow_dynamic_pass() {
    let env = Env::new();
    env.gcc("stat", &["-static"]);
    env.gcc("dyn", &[]);
    std::fs::write(env.path("ctx/script"), "#!/bin/sh\necho hi\n").unwrap();

    env.kilnfile(&elf_kilnfile("static_base()", "stat", ""));
    env.ok(&["build", "ctx", "-o", "type=oci,dest=stat.tar"]);
    assert!(env.path("stat.tar").exists());

    // (without a command: the image's command is checked on its own, below)
    let no_command = |k: String| format!("{};\n", k.split("\n    .entrypoint").next().unwrap());
    env.kilnfile(&no_command(elf_kilnfile("static_base()", "script", "")));
    env.ok(&["build", "ctx"]);

    env.kilnfile(&no_command(elf_kilnfile(
        "scratch()",
        "dyn",
        ", [allow_dynamic()]",
    )));
    env.ok(&["build", "ctx"]);

    // A builder image is not checked: it has its own loader.
    env.busybox_image();
    env.kilnfile(&no_command(elf_kilnfile("image(\"bb:1\")", "dyn", "")));
    env.ok(&["build", "ctx"]);
}

#[test]
fn an_image_whose_command_cannot_start_fails_before_export() {
    let env = Env::new();
    env.gcc("dyn", &[]);
    env.gcc("stat", &["-static"]);
    std::fs::write(env.path("ctx/script"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(env.path("ctx/data"), "just text\n").unwrap();
    let cases = [
        (
            "static_base()\n    .cmd([\"python3\", \"app.py\"])",
            "the image's cmd `python3` is not in the image: not found in PATH",
            "Kilnfile:2:10",
        ),
        (
            "static_base()\n    .copy(context().path(\"data\"), \"/greeting\")\n    .cmd([\"/greeting\"])",
            "the image's cmd `/greeting` is `/greeting` with mode 644, not an executable file",
            "Kilnfile:3:10",
        ),
        (
            "static_base()\n    .copy(context().path(\"script\"), \"/usr/local/bin/script\", [chmod(0o755)])\n    .entrypoint([\"script\"])",
            "the image's entrypoint `script` needs `/bin/sh`, which the image does not have",
            "Kilnfile:3:17",
        ),
        (
            "scratch()\n    .copy(context().path(\"dyn\"), \"/dyn\", [allow_dynamic()])\n    .entrypoint([\"/dyn\"])",
            "the image's entrypoint `/dyn` needs `/lib64/ld-linux-x86-64.so.2`, which the image does not have",
            "Kilnfile:3:17",
        ),
    ];
    for (app, message, at) in cases {
        env.kilnfile(&format!("let app = {app};\n"));
        let err = env.fails(&["build", "ctx", "-t", "app:1", "-o", "type=oci,dest=app.tar"]);
        assert!(err.contains(message), "{app}:\n{err}");
        assert!(err.contains(at), "{app}:\n{err}");
        assert!(err.contains("help:"), "{app}:\n{err}");
        assert!(!env.path("app.tar").exists(), "{app}: exported anyway");
    }
    let o = env.kiln(&["images"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("app:1"));
    // commands that start: through PATH and symlinks, a static binary, a
    // script whose interpreter is there
    env.busybox_image();
    for app in [
        "static_base()\n    .copy(context().path(\"stat\"), \"/usr/local/bin/stat\")\n    .entrypoint([\"stat\"])",
        "image(\"bb:1\")\n    .copy(context().path(\"script\"), \"/script\", [chmod(0o755)])\n    .cmd([\"/script\"])",
        "image(\"bb:1\")\n    .entrypoint([\"sh\", \"-c\", \"true\"])",
    ] {
        env.kilnfile(&format!("let app = {app};\n"));
        env.ok(&["build", "ctx", "-o", "type=oci,dest=ok.tar"]);
    }
}

/// An architecture this machine cannot execute (no binfmt_misc handler;
/// arm64 last, as foreign_platform.rs registers qemu-aarch64 for a while).
fn foreign_arch() -> &'static str {
    let host = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    [
        ("s390x", "s390x"),
        ("riscv64", "riscv64"),
        ("ppc64le", "ppc64le"),
        ("arm64", "aarch64"),
    ]
    .into_iter()
    .find(|(goarch, qemu)| {
        *goarch != host && !Path::new(&format!("/proc/sys/fs/binfmt_misc/qemu-{qemu}")).exists()
    })
    .map(|(goarch, _)| goarch)
    .expect("some architecture has no binfmt_misc handler here")
}

/// The image config of an OCI archive, as skopeo reads it for the image's
/// own architecture (a build's archive holds the index of the image and
/// its attestation manifest; skopeo would pick the host's platform).
fn config_of(archive: &Path) -> serde_json::Value {
    let mut blobs = std::collections::BTreeMap::new();
    let mut index = serde_json::Value::Null;
    for e in tar::Archive::new(std::fs::File::open(archive).unwrap())
        .entries()
        .unwrap()
    {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if let Some(hex) = name.trim_start_matches("./").strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{hex}"), data);
        } else if name.trim_start_matches("./") == "index.json" {
            index = serde_json::from_slice(&data).unwrap();
        }
    }
    let read = |d: &str| serde_json::from_slice(&blobs[d]).unwrap();
    let manifest = common::image_manifest(index, &read);
    let arch = read(manifest["config"]["digest"].as_str().unwrap())["architecture"].clone();
    let o = Command::new("skopeo")
        .args([
            "--override-arch",
            arch.as_str().unwrap(),
            "inspect",
            "--config",
        ])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .expect("run skopeo");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn platform_sets_the_config_and_refuses_foreign_run_steps() {
    let env = Env::new();
    let arch = foreign_arch();
    let platform = format!("linux/{arch}");
    std::fs::write(env.path("ctx/hello.txt"), "hello\n").unwrap();
    env.kilnfile(
        "let app = static_base()\n    .copy(context().path(\"hello.txt\"), \"/hello.txt\");\n",
    );
    let (out, _) = env.ok(&[
        "build",
        "ctx",
        "--platform",
        &platform,
        "-o",
        "type=oci,dest=x.tar",
    ]);
    let cfg = config_of(&env.path("x.tar"));
    assert_eq!(cfg["architecture"], arch, "{cfg}");
    assert_eq!(cfg["os"], "linux", "{cfg}");
    // The host build of the same Kilnfile is a different image.
    let (host_out, _) = env.ok(&["build", "ctx", "-o", "type=oci,dest=h.tar"]);
    assert_ne!(out, host_out);
    assert_ne!(config_of(&env.path("h.tar"))["architecture"], arch);

    // A host binary in that image: caught before export, unless opted out.
    env.gcc("stat", &["-static"]);
    env.kilnfile(&elf_kilnfile("static_base()", "stat", ""));
    let err = env.fails(&[
        "build",
        "ctx",
        "--platform",
        &platform,
        "-o",
        "type=oci,dest=s.tar",
    ]);
    let host = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    assert!(
        err.contains(&format!("`/usr/local/bin/stat` is built for {host}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("the image is for {platform}")),
        "{err}"
    );
    assert!(err.contains("exec format error"), "{err}");
    assert!(err.contains(&format!("GOARCH={arch}")), "{err}");
    assert!(!env.path("s.tar").exists());
    // allow_dynamic() skips the copy's check; the image's command is
    // still checked for the image's machine
    env.kilnfile(&elf_kilnfile(
        "static_base()",
        "stat",
        ", [allow_dynamic()]",
    ));
    let err = env.fails(&["build", "ctx", "--platform", &platform]);
    assert!(
        err.contains(&format!(
            "entrypoint `/usr/local/bin/stat` is built for {host}, but the image is for {platform}"
        )),
        "{err}"
    );
    env.kilnfile(
        "let app = static_base()\n    .copy(context().path(\"stat\"), \"/stat\", [allow_dynamic()]);\n",
    );
    env.ok(&["build", "ctx", "--platform", &platform]);

    // A run step for that platform: a clear error before anything runs.
    env.busybox_image();
    env.kilnfile("let app = image(\"bb:1\")\n    .run(\"echo hi\");\n");
    let err = env.fails(&["build", "ctx", "--platform", &platform]);
    assert!(err.contains("cannot execute"), "{err}");
    assert!(err.contains(&platform), "{err}");
    assert!(err.contains("binfmt_misc"), "{err}");
    assert!(err.contains("qemu-user-static"), "{err}");
    assert!(err.contains("Kilnfile:2:6"), "{err}");
    assert!(!err.contains("exec format error"), "{err}");

    let err = env.fails(&["build", "ctx", "--platform", "linux"]);
    assert!(err.contains("invalid platform `linux`"), "{err}");
}

#[test]
fn platform_pulls_the_matching_manifest_of_an_index() {
    let reg = Registry::start();
    // Two single-platform images made by kiln itself and pushed to the
    // local registry, then an index over both.
    let seed = Env::new();
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        std::fs::write(seed.path("ctx/arch.txt"), format!("{arch}\n")).unwrap();
        seed.kilnfile(
            "let base = static_base()\n    .copy(context().path(\"arch.txt\"), \"/arch.txt\");\n",
        );
        let dest = format!("{}/multi:{arch}", reg.addr);
        // plain image manifests to compose the index of, as a script over
        // `docker manifest create` does (with the default attestations each
        // push is an index of its own)
        seed.ok(&[
            "build",
            "ctx",
            "--platform",
            &format!("linux/{arch}"),
            "--provenance=false",
            "--sbom=false",
            "-o",
            &format!("type=registry,name={dest}"),
        ]);
        let raw = reg.raw(&format!("multi:{arch}"));
        let digest = format!("sha256:{}", sha256_hex(&raw));
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": raw.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    reg.put_index(
        "multi",
        "1",
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }),
    );

    // A build on that index for each platform (a fresh store each, so
    // nothing local is reused) gets the matching image and says so.
    for arch in ["arm64", "amd64"] {
        let env = Env::new();
        std::fs::write(env.path("ctx/app.txt"), "app\n").unwrap();
        env.kilnfile(&format!(
            "let app = image(\"{}/multi:1\")\n    .copy(context().path(\"app.txt\"), \"/app.txt\");\n",
            reg.addr
        ));
        env.ok(&[
            "build",
            "ctx",
            "--platform",
            &format!("linux/{arch}"),
            "-o",
            "type=oci,dest=app.tar",
            "-o",
            "type=local,dest=rootfs",
        ]);
        assert_eq!(
            std::fs::read_to_string(env.path("rootfs/arch.txt")).unwrap(),
            format!("{arch}\n")
        );
        assert_eq!(config_of(&env.path("app.tar"))["architecture"], arch);
    }

    // One store, one platform after the other: the second build must not
    // reuse the first one's base because the local name points at it.
    let env = Env::new();
    std::fs::write(env.path("ctx/app.txt"), "app\n").unwrap();
    env.kilnfile(&format!(
        "let app = image(\"{}/multi:1\")\n    .copy(context().path(\"app.txt\"), \"/app.txt\");\n",
        reg.addr
    ));
    for arch in ["arm64", "amd64", "arm64"] {
        let _ = std::fs::remove_dir_all(env.path("rootfs"));
        env.ok(&[
            "build",
            "ctx",
            "--platform",
            &format!("linux/{arch}"),
            "-o",
            "type=local,dest=rootfs",
        ]);
        assert_eq!(
            std::fs::read_to_string(env.path("rootfs/arch.txt")).unwrap(),
            format!("{arch}\n"),
            "a build for {arch} after another platform's in the same store"
        );
    }

    // A source's own platform wins over the build's: an arm64 stage copied
    // from in a build for the host platform, in the same store as above.
    env.kilnfile(&format!(
        "let arm = image(\"{}/multi:1\", [platform(\"linux/arm64\")]);\nlet app = static_base()\n    .copy(arm.path(\"/arch.txt\"), \"/arch.txt\");\n",
        reg.addr
    ));
    for platform in ["linux/amd64", "linux/arm64"] {
        let _ = std::fs::remove_dir_all(env.path("rootfs"));
        env.ok(&[
            "build",
            "ctx",
            "--platform",
            platform,
            "-o",
            "type=local,dest=rootfs",
        ]);
        assert_eq!(
            std::fs::read_to_string(env.path("rootfs/arch.txt")).unwrap(),
            "arm64\n",
            "image(.., [platform(\"linux/arm64\")]) in a build for {platform}"
        );
    }
}

fn sha256_hex(b: &[u8]) -> String {
    kiln_store::Digest::of(b).hex().to_string()
}

#[test]
fn rootless_failure_report_cache_and_elf_check() {
    let env = Env::new();
    env.busybox_rootfs();
    env.gcc("dyn", &[]);
    let o = env.kilntest(&["import", "rootfs", "-t", "bb:1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let failing = "let app = image(\"bb:1\")\n    .run(\"echo one > /one\")\n    .run(\"echo bad; exit 9\");\n";
    env.kilnfile(failing);
    let o = env.kilntest(&["build", "ctx"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("`echo bad; exit 9` exited with exit code 9"),
        "{err}"
    );
    assert!(err.contains("| bad"), "{err}");
    assert!(err.contains("ctx/Kilnfile:3:6"), "{err}");

    env.kilnfile(&failing.replace("exit 9", "true"));
    let o = env.kilntest(&["build", "ctx"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let s = steps(&err);
    assert_eq!(status_of(&s, "echo one"), "CACHED", "{err}");
    assert_eq!(status_of(&s, "echo bad"), "done", "{err}");

    env.kilnfile(&elf_kilnfile("static_base()", "dyn", ""));
    let o = env.kilntest(&["build", "ctx", "-o", "type=oci,dest=app.tar"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("`/usr/local/bin/dyn` is dynamically linked"),
        "{err}"
    );
    assert!(!env.path("app.tar").exists());
}

/// Rootless without a subordinate range (`kilnnosub`, made by `.ci/setup`):
/// a step that gives a file to another user fails, and the help says why
/// (the single-ID fallback) and what to do, instead of "fix the command".
#[test]
fn a_refused_chown_under_the_single_id_fallback_names_the_cause() {
    let env = Env::new();
    Busybox::new(&["sh", "chown", "touch"])
        .dir("tmp")
        .write(&env.path("rootfs"));
    env.kilnfile("let app = image(\"bb:1\")\n    .run(\"touch /f && chown 1:1 /f\");\n");
    let gid = String::from_utf8(
        Command::new("id")
            .args(["-g", "kilnnosub"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let o = Command::new("chown")
        .args(["-R", &format!("kilnnosub:{gid}")])
        .arg(env.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kiln = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=kilnnosub",
                &format!("--regid={gid}"),
                "--init-groups",
            ])
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .current_dir(env.dir.path())
            .env("KILN_HOME", env.path("home-nosub"))
            .env("HOME", env.path("home-nosub"))
            .env("USER", "kilnnosub")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let o = kiln(&["import", "rootfs", "-t", "bb:1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = kiln(&["build", "ctx"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("single ID"), "{err}");
    assert!(
        err.contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 kilnnosub"),
        "{err}"
    );
    assert!(err.contains("APT::Sandbox::User=root"), "{err}");
}
