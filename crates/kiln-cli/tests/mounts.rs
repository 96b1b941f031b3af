//! End-to-end tests of `run` step mounts (cache, secret, tmpfs, bind) and
//! `kiln build --secret`: the real binary on a busybox image, as root and as
//! the unprivileged `kilntest` (made by `.ci/setup`, with a subordinate ID
//! range). Image content is read from `-o type=tar` (the flattened rootfs)
//! and every blob of an OCI archive and of the store is scanned, gzip
//! layers decompressed, for secret bytes.

mod common;

use common::{Busybox, GROUP_WITH_NOGROUP, PASSWD_WITH_APT, chown_kilntest, steps};

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
    /// Run kiln as `kilntest` (rootless) instead of root.
    rootless: bool,
}

impl Env {
    fn new(rootless: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = Env { dir, rootless };
        busybox_rootfs(&env.path("rootfs"));
        if rootless {
            chown_kilntest(env.dir.path());
        }
        env.ok(&["import", "rootfs", "-t", "bb:1"], &[]);
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn home(&self) -> PathBuf {
        self.path("home")
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        if self.rootless {
            chown_kilntest(self.dir.path());
        }
    }

    fn kiln(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut c = if self.rootless {
            let mut c = common::kilntest_command(&self.home(), self.dir.path(), args);
            c.env("HOME", self.path(""));
            c
        } else {
            common::kiln_command(&self.home(), self.dir.path(), args)
        };
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().expect("run kiln")
    }

    /// Runs kiln; returns (stdout, stderr), failing with stderr when it fails.
    fn ok(&self, args: &[&str], envs: &[(&str, &str)]) -> (String, String) {
        let o = self.kiln(args, envs);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success(),
            "kiln {args:?} failed (rootless: {}):\n{err}",
            self.rootless
        );
        (String::from_utf8(o.stdout).unwrap(), err)
    }

    fn fails(&self, args: &[&str], envs: &[(&str, &str)]) -> String {
        let o = self.kiln(args, envs);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "kiln {args:?} succeeded:\n{err}");
        assert!(o.stdout.is_empty());
        err
    }

    /// Builds `ctx` and returns the flattened rootfs as (path, content of
    /// regular files) pairs.
    fn build_rootfs(
        &self,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> (Vec<(String, Vec<u8>)>, String) {
        let _ = std::fs::remove_file(self.path("fs.tar"));
        let mut args = vec!["build", "ctx", "-o", "type=tar,dest=fs.tar"];
        args.extend_from_slice(extra);
        let (_, err) = self.ok(&args, envs);
        (
            tar_entries(&std::fs::read(self.path("fs.tar")).unwrap()),
            err,
        )
    }
}

/// busybox with what the steps need, a sticky /tmp, and `_apt` (uid 42)
/// in /etc/passwd.
fn busybox_rootfs(root: &Path) {
    Busybox::new(&[
        "sh", "echo", "cat", "ls", "sleep", "test", "wc", "tr", "mkdir", "chown", "chmod", "stat",
        "touch", "head", "rm", "env", "grep", "id", "cut",
    ])
    .dir_mode("tmp", 0o1777)
    .file("etc/passwd", PASSWD_WITH_APT)
    .file("etc/group", GROUP_WITH_NOGROUP)
    .write(root);
}

fn tar_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

fn file<'a>(fs: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    fs.iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| std::str::from_utf8(d).unwrap())
}

fn names(fs: &[(String, Vec<u8>)]) -> Vec<&str> {
    fs.iter().map(|(n, _)| n.as_str()).collect()
}

/// Whether `needle` occurs in `data` or, when `data` is gzip or zstd, in its
/// decompressed bytes, or in any member of it when it is a tar (archives
/// holding gzip layers).
fn contains_bytes(data: &[u8], needle: &[u8]) -> bool {
    if data.windows(needle.len()).any(|w| w == needle) {
        return true;
    }
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        if flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .is_ok()
            && contains_bytes(&out, needle)
        {
            return true;
        }
    }
    if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut out = Vec::new();
        if zstd::stream::read::Decoder::new(data)
            .and_then(|mut d| d.read_to_end(&mut out))
            .is_ok()
            && contains_bytes(&out, needle)
        {
            return true;
        }
    }
    if data.len() > 512 && &data[257..262] == b"ustar" {
        let mut a = tar::Archive::new(data);
        if let Ok(entries) = a.entries() {
            for e in entries.flatten() {
                let mut e = e;
                let mut buf = Vec::new();
                if e.read_to_end(&mut buf).is_ok() && contains_bytes(&buf, needle) {
                    return true;
                }
            }
        }
    }
    false
}

/// Every file under `dir` whose bytes (or decompressed bytes) hold `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file()
                && let Ok(data) = std::fs::read(e.path())
                && contains_bytes(&data, needle)
            {
                hits.push(e.path());
            }
        }
    }
    hits
}

/// The host directory of cache mount `id` (found by the `id` file kiln
/// writes beside it).
fn cache_data(home: &Path, id: &str) -> PathBuf {
    for e in std::fs::read_dir(home.join("cache-mounts")).unwrap() {
        let p = e.unwrap().path();
        if std::fs::read_to_string(p.join("id")).ok().as_deref() == Some(id) {
            return p.join("data");
        }
    }
    panic!("no cache mount `{id}` under {}", home.display());
}

// ---------------------------------------------------------------- cache

const COUNTER: &str = r#"
let app = image("bb:1")
    .run("n=$(cat /var/cache/c/n 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /var/cache/c/n; echo $n > /count",
         [cache("/var/cache/c").id("counter")])
    // what apt does: a directory of `_apt` (42) that only it may write
    .run("mkdir -p /var/cache/c/partial && chown 42:65534 /var/cache/c/partial && chmod 700 /var/cache/c/partial",
         [cache("/var/cache/c").id("counter")])
    .user("42")
    .run("echo deb >> /var/cache/c/partial/pkgs && wc -l < /var/cache/c/partial/pkgs > /tmp/debs",
         [cache("/var/cache/c").id("counter")]);
"#;

fn cache_persists(rootless: bool) {
    let env = Env::new(rootless);
    env.write("ctx/Kilnfile", COUNTER);
    let (fs1, _) = env.build_rootfs(&[], &[]);
    assert_eq!(file(&fs1, "count"), Some("1\n"));
    assert_eq!(file(&fs1, "tmp/debs"), Some("1\n"));
    // --no-cache re-runs the steps: they see what the first build left
    let (fs2, _) = env.build_rootfs(&["--no-cache"], &[]);
    assert_eq!(
        file(&fs2, "count"),
        Some("2\n"),
        "the cache mount was not kept"
    );
    assert_eq!(file(&fs2, "tmp/debs"), Some("2\n"));
    for fs in [&fs1, &fs2] {
        assert!(
            !names(fs).iter().any(|n| n.starts_with("var/cache")),
            "cache content or mount point in the image: {:?}",
            names(fs)
        );
    }
    // it lives in KILN_HOME, outside every layer
    let data = cache_data(&env.home(), "counter");
    assert_eq!(std::fs::read_to_string(data.join("n")).unwrap(), "2\n");
    assert!(data.join("partial/pkgs").exists());
}

#[test]
fn cache_mount_persists_between_builds_and_stays_out_of_the_image() {
    cache_persists(false);
}

#[test]
fn rootless_cache_mount_persists_between_builds() {
    cache_persists(true);
}

/// Two stages that use one cache id at once: each logs its start and end in
/// the cache, and the shared variant waits (bounded) for the other's start
/// before ending, so it proves the two run at the same time.
fn two_stages(sharing: &str) -> String {
    let step = |name: &str| {
        format!(
            "echo start {name} >> /c/log; i=0; while [ $i -lt 100 ] && [ $(grep -c start /c/log) -lt 2 ]; do sleep 0.1; i=$((i + 1)); done; echo end {name} >> /c/log; echo {name} > /done"
        )
    };
    format!(
        r#"
let a = image("bb:1").run("{}", [cache("/c").id("shared-log").sharing("{sharing}")]);
let b = image("bb:1").run("{}", [cache("/c").id("shared-log").sharing("{sharing}")]);
let app = image("bb:1").copy(a.path("/done"), "/a").copy(b.path("/done"), "/b");
"#,
        step("a"),
        step("b")
    )
}

#[test]
fn locked_cache_serializes_concurrent_steps() {
    let env = Env::new(false);
    // shared: both steps are in the cache at once (they interleave)
    env.write("ctx/Kilnfile", &two_stages("shared"));
    env.build_rootfs(&["--jobs", "4"], &[]);
    let log = std::fs::read_to_string(cache_data(&env.home(), "shared-log").join("log")).unwrap();
    let kinds: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(kinds, ["start", "start", "end", "end"], "{log}");

    // locked: one after the other, whatever the scheduling
    std::fs::remove_file(cache_data(&env.home(), "shared-log").join("log")).unwrap();
    env.write("ctx/Kilnfile", &two_stages("locked"));
    let (fs, err) = env.build_rootfs(&["--jobs", "4"], &[]);
    // the waiting step says why it waits
    assert!(
        err.contains("waiting for cache mount `shared-log`: another step holds it"),
        "{err}"
    );
    assert_eq!(file(&fs, "a"), Some("a\n"));
    assert_eq!(file(&fs, "b"), Some("b\n"));
    let log = std::fs::read_to_string(cache_data(&env.home(), "shared-log").join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    let first = lines[0].strip_prefix("start ").unwrap();
    assert_eq!(lines[1], format!("end {first}"), "{log}");
    assert!(
        lines[2].starts_with("start ") && lines[3].starts_with("end "),
        "{log}"
    );

    // private: the second step gets its own instance while the first runs
    // (each waits in vain for a second start in its own log, so they
    // overlap)
    std::fs::remove_file(cache_data(&env.home(), "shared-log").join("log")).unwrap();
    env.write("ctx/Kilnfile", &two_stages("private"));
    env.build_rootfs(&["--jobs", "4"], &[]);
    let data = cache_data(&env.home(), "shared-log");
    let one = std::fs::read_to_string(data.join("log")).unwrap();
    let two = std::fs::read_to_string(data.with_file_name("data-1").join("log")).unwrap();
    let who = |log: &str| {
        let l: Vec<&str> = log.lines().collect();
        assert_eq!(l.len(), 2, "{log}");
        let w = l[0].strip_prefix("start ").unwrap().to_string();
        assert_eq!(l[1], format!("end {w}"));
        w
    };
    assert_ne!(who(&one), who(&two));
}

// ---------------------------------------------------------------- secrets

const SECRET_FILE: &str = "kiln-file-secret-q7w8e9";
const SECRET_ENV: &str = "kiln-env-secret-z1x2c3";

const SECRETS: &str = r#"
let app = image("bb:1")
    .run("tr a-z A-Z < /run/secrets/tok > /upper; stat -c '%a %u %g' /run/secrets/tok > /stat; echo \"$TOKEN\" | tr a-z A-Z > /envupper; test -e /run/secrets/opt && echo present > /opt || echo absent > /opt",
         [secret("tok").required(true), secret("envtok").env("TOKEN"), secret("opt")]);
"#;

fn secrets(rootless: bool) {
    let env = Env::new(rootless);
    env.write("ctx/Kilnfile", SECRETS);
    env.write("secret.txt", SECRET_FILE);
    let flags = [
        "--secret",
        "id=tok,src=secret.txt",
        "--secret",
        "id=envtok,env=MY_TOKEN",
    ];
    let mut args = flags.to_vec();
    args.extend(["-o", "type=oci,dest=app.tar"]);
    let (fs, _) = env.build_rootfs(&args, &[("MY_TOKEN", SECRET_ENV)]);
    assert_eq!(
        file(&fs, "upper"),
        Some(SECRET_FILE.to_uppercase().as_str())
    );
    assert_eq!(
        file(&fs, "envupper"),
        Some(format!("{}\n", SECRET_ENV.to_uppercase()).as_str())
    );
    assert_eq!(file(&fs, "stat"), Some("400 0 0\n"));
    assert_eq!(
        file(&fs, "opt"),
        Some("absent\n"),
        "an optional missing secret is absent"
    );
    assert!(
        !names(&fs).iter().any(|n| n.starts_with("run/secrets")),
        "{:?}",
        names(&fs)
    );
    // Not in any layer or config of the exported image, nor anywhere in
    // the store (blobs, records, snapshots, cache mounts).
    for secret in [SECRET_FILE, SECRET_ENV] {
        for (what, data) in [
            (
                "the OCI archive",
                std::fs::read(env.path("app.tar")).unwrap(),
            ),
            ("the rootfs tar", std::fs::read(env.path("fs.tar")).unwrap()),
        ] {
            assert!(
                !contains_bytes(&data, secret.as_bytes()),
                "{secret} in {what}"
            );
        }
        let hits = files_containing(&env.home(), secret.as_bytes());
        assert!(hits.is_empty(), "{secret} in the store: {hits:?}");
    }
    // the scanner finds what is there
    assert!(contains_bytes(
        &std::fs::read(env.path("app.tar")).unwrap(),
        SECRET_FILE.to_uppercase().as_bytes()
    ));

    // A changed secret does not invalidate the cache.
    env.write("secret.txt", "another-value");
    let (fs2, err) = env.build_rootfs(&flags, &[("MY_TOKEN", "other")]);
    let s = steps(&err);
    assert!(
        !s.is_empty() && s.iter().all(|(_, st)| st == "CACHED"),
        "{err}"
    );
    assert_eq!(file(&fs2, "upper"), file(&fs, "upper"));

    // A required secret that is not given: the id and the flag to pass.
    let err = env.fails(&["build", "ctx", "--no-cache"], &[]);
    assert!(
        err.contains("secret `tok`") && err.contains("--secret id=tok,src=PATH"),
        "{err}"
    );
}

#[test]
fn secrets_reach_the_step_but_never_a_layer_or_the_store() {
    secrets(false);
}

#[test]
fn rootless_secrets_reach_the_step_but_never_a_layer_or_the_store() {
    secrets(true);
}

#[test]
fn bad_secret_flags_are_clear_errors() {
    let env = Env::new(false);
    env.write("ctx/Kilnfile", SECRETS);
    let err = env.fails(&["build", "ctx", "--secret", "tok"], &[]);
    assert!(
        err.contains("invalid `--secret tok`") && err.contains("id=ID,src=PATH"),
        "{err}"
    );
    let err = env.fails(&["build", "ctx", "--secret", "id=tok,src=nope.txt"], &[]);
    assert!(
        err.contains("cannot read secret `tok`") && err.contains("nope.txt"),
        "{err}"
    );
    let err = env.fails(
        &["build", "ctx", "--secret", "id=tok,env=KILN_SURELY_UNSET"],
        &[],
    );
    assert!(err.contains("KILN_SURELY_UNSET"), "{err}");
}

// ---------------------------------------------------------------- tmpfs, bind

#[test]
fn tmpfs_is_empty_sized_and_not_in_the_layer() {
    let env = Env::new(false);
    env.write(
        "ctx/Kilnfile",
        r#"
let app = image("bb:1")
    .run("ls -A /scratch | wc -l > /entries; echo data > /scratch/f && cat /scratch/f > /seen; head -c 2000000 /dev/zero > /scratch/big 2>/dev/null && echo fits > /size || echo full > /size",
         [tmpfs("/scratch").size(1048576)]);
"#,
    );
    let (fs, _) = env.build_rootfs(&[], &[]);
    assert_eq!(file(&fs, "entries"), Some("0\n"));
    assert_eq!(file(&fs, "seen"), Some("data\n"));
    assert_eq!(
        file(&fs, "size"),
        Some("full\n"),
        "the size limit is not applied"
    );
    assert!(
        !names(&fs).iter().any(|n| n.starts_with("scratch")),
        "{:?}",
        names(&fs)
    );
}

// ---------------------------------------------------------------- limits

/// Starts 24 background sleeps: fine under the default limit (4096), a
/// fork failure under `pids(8)` (the step, its shell and 6 more).
const FORKS: &str = r#"
let free = image("bb:1")
    .run("i=0; while [ $i -lt 24 ]; do sleep 1 & i=$((i+1)); done; wait; echo $i > /forked");
let limited = image("bb:1")
    .run("i=0; while [ $i -lt 24 ]; do sleep 1 & i=$((i+1)); done; wait; echo $i > /forked", [pids(8)]);
"#;

fn pids_limit_stops_forks(rootless: bool) {
    let env = Env::new(rootless);
    env.write("ctx/Kilnfile", FORKS);
    let (fs, _) = env.build_rootfs(&["--target", "free"], &[]);
    assert_eq!(file(&fs, "forked"), Some("24\n"));
    let err = env.fails(&["build", "ctx", "--target", "limited"], &[]);
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "rootless {rootless}: {err}"
    );
}

#[test]
fn pids_limit_stops_forks_as_root() {
    pids_limit_stops_forks(false);
}

#[test]
fn rootless_pids_limit_stops_forks() {
    pids_limit_stops_forks(true);
}

#[test]
fn bind_mounts_from_stages_and_the_context() {
    let env = Env::new(false);
    env.write("ctx/vendor/lib.txt", "vendored\n");
    env.write(
        "ctx/Kilnfile",
        r#"
let data = image("bb:1").run("mkdir -p /out && echo from-data > /out/f");
let app = image("bb:1")
    .run("cat /mnt/f > /seen; touch /mnt/x 2>/dev/null && echo writable > /ro || echo readonly > /ro; cat /src/vendor/lib.txt > /vendor",
         [bind(data.path("/out"), "/mnt"), bind(context().path("vendor"), "/src/vendor")])
    .run("echo changed > /mnt/f && cat /mnt/f > /rw", [bind(data.path("/out"), "/mnt").rw()])
    .run("cat /mnt/f > /after", [bind(data.path("/out"), "/mnt")]);
"#,
    );
    let (fs, _) = env.build_rootfs(&[], &[]);
    assert_eq!(file(&fs, "seen"), Some("from-data\n"));
    assert_eq!(file(&fs, "ro"), Some("readonly\n"));
    assert_eq!(file(&fs, "vendor"), Some("vendored\n"));
    assert_eq!(file(&fs, "rw"), Some("changed\n"));
    assert_eq!(
        file(&fs, "after"),
        Some("from-data\n"),
        "rw writes were kept"
    );
    assert!(
        !names(&fs)
            .iter()
            .any(|n| n.starts_with("mnt") || n.starts_with("src")),
        "{:?}",
        names(&fs)
    );
}

/// A step cannot turn its read-only bind writable (`mount -o remount,rw`,
/// directly or from a user namespace of its own) and write into the store's
/// shared snapshot of the stage: a later build binding the same stage still
/// sees the original.
fn a_readonly_bind_cannot_poison_the_store(rootless: bool) {
    let env = Env::new(rootless);
    env.write(
        "ctx/Kilnfile",
        r#"
let data = image("bb:1").run("mkdir -p /out && echo from-data > /out/f");
let attack = image("bb:1")
    .run("mount -o remount,rw,bind /mnt 2>/dev/null && echo remounted >> /log; unshare -Urm sh -c 'mount -o remount,rw,bind /mnt && echo poisoned > /mnt/f' 2>/dev/null && echo nested >> /log; echo poisoned > /mnt/f 2>/dev/null && echo written >> /log; cat /mnt/f > /seen",
         [bind(data.path("/out"), "/mnt")]);
let later = image("bb:1").run("cat /mnt/f > /seen-later", [bind(data.path("/out"), "/mnt")]);
"#,
    );
    let (fs, _) = env.build_rootfs(&["--target", "attack"], &[]);
    assert_eq!(
        file(&fs, "seen"),
        Some("from-data\n"),
        "rootless {rootless}"
    );
    assert_eq!(
        file(&fs, "log"),
        None,
        "rootless {rootless}: {:?}",
        file(&fs, "log")
    );
    let (fs, _) = env.build_rootfs(&["--target", "later"], &[]);
    assert_eq!(
        file(&fs, "seen-later"),
        Some("from-data\n"),
        "rootless {rootless}"
    );
}

#[test]
fn a_readonly_bind_cannot_poison_the_store_as_root() {
    a_readonly_bind_cannot_poison_the_store(false);
}

#[test]
fn rootless_readonly_bind_cannot_poison_the_store() {
    a_readonly_bind_cannot_poison_the_store(true);
}

// ---------------------------------------------------------------- example

/// `examples/cache-secret` end to end on the real Debian builder
/// (`.ci/builder-image.sh`: debootstrap --variant=minbase bookworm, cached
/// under /var/cache/kiln-ci; needs root, and Debian's mirror for apt-get):
/// the apt cache mounts keep the downloaded packages between builds and
/// out of every layer, the secret reaches the step and nothing else.
fn cache_secret_example(rootless: bool) {
    let rootfs = common::debian_builder_rootfs();
    let env = Env::new(rootless);
    // The builder under the example's own name (a local tag wins with
    // `--pull=missing`, so no registry is needed). Rootless kiln cannot
    // read the root-owned rootfs: root imports it and hands over an archive.
    let import_home = env.path("import-home");
    let root_kiln = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_HOME", &import_home)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    root_kiln(&["import", &rootfs, "-t", "debian:bookworm"]);
    root_kiln(&[
        "save",
        "debian:bookworm",
        "-o",
        env.path("builder.tar").to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&import_home).unwrap();
    if rootless {
        chown_kilntest(env.dir.path());
    }
    env.ok(
        &[
            "import",
            "--format",
            "oci-archive",
            "builder.tar",
            "-t",
            "docker.io/library/debian:bookworm",
        ],
        &[],
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cache-secret");
    std::fs::create_dir(env.path("ctx")).unwrap();
    for f in ["Kilnfile", "greet.sh"] {
        std::fs::copy(example.join(f), env.path("ctx").join(f)).unwrap();
    }
    const TOKEN: &str = "example-token-m4n5b6";
    env.write("token.txt", TOKEN);
    let secret = ["--secret", "id=token,src=token.txt"];

    let mut args = secret.to_vec();
    args.extend(["-o", "type=oci,dest=app.tar"]);
    let (fs, _) = env.build_rootfs(&args, &[]);
    assert_eq!(
        file(&fs, "greeting"),
        Some(format!("hello, the build saw a token of {} bytes\n", TOKEN.len()).as_str())
    );
    let debs = |what: &str| -> Vec<String> {
        let dir = cache_data(&env.home(), "/var/cache/apt").join("archives");
        let list: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".deb"))
            .collect();
        assert!(
            list.iter().any(|n| n.starts_with("ca-certificates_")),
            "{what}: {list:?}"
        );
        list
    };
    let first = debs("after the first build");
    let lists = cache_data(&env.home(), "/var/lib/apt/lists");
    assert!(
        std::fs::read_dir(&lists).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with("_Packages")),
        "apt lists are kept in {}",
        lists.display()
    );

    // The fetch stage's filesystem has neither the packages nor the lists.
    let (fetch, _) = env.build_rootfs(&["--target", "fetch", secret[0], secret[1]], &[]);
    let leaked: Vec<&str> = names(&fetch)
        .into_iter()
        .filter(|n| {
            (n.starts_with("var/cache/apt/") && n.ends_with(".deb"))
                || (n.starts_with("var/lib/apt/lists/") && n.ends_with("_Packages"))
        })
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    assert!(names(&fetch).contains(&"usr/sbin/update-ca-certificates"));
    assert!(!contains_bytes(
        &std::fs::read(env.path("app.tar")).unwrap(),
        TOKEN.as_bytes()
    ));
    let hits = files_containing(&env.home(), TOKEN.as_bytes());
    assert!(hits.is_empty(), "the token in the store: {hits:?}");

    // A changed token keeps everything cached; a missing one is an error
    // only when the step has to run.
    env.write("token.txt", "another-token");
    let (_, err) = env.build_rootfs(&secret, &[]);
    assert!(steps(&err).iter().all(|(_, s)| s == "CACHED"), "{err}");
    let err = env.fails(&["build", "ctx", "--no-cache"], &[]);
    assert!(err.contains("--secret id=token"), "{err}");

    // Re-running apt-get with the cache: the packages are the ones kept.
    let (fs2, _) = env.build_rootfs(&["--no-cache", secret[0], secret[1]], &[]);
    assert!(file(&fs2, "greeting").is_some());
    assert_eq!(debs("after the second build"), first);
}

#[test]
fn cache_secret_example_as_root() {
    cache_secret_example(false);
}

#[test]
fn cache_secret_example_rootless() {
    cache_secret_example(true);
}
