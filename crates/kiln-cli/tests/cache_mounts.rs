//! `run` cache mounts exported and imported with the build cache
//! (`--cache-to ...,cache-mounts=true`, issue 6 item 3): the real binary on
//! a busybox image, across two stores and two context paths, to a local
//! directory and to Debian's `docker-registry` on 127.0.0.1, as root and as
//! the unprivileged `kilntest` (subordinate ID range, made by `.ci/setup`).
//!
//! The step under test reports in `/seen` whether its cache mount held the
//! file an earlier build left there, and the owner of a 0700 directory of
//! uid 42 in it (what apt's `partial/` looks like), so ownership survives
//! the trip too.

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Busybox, GROUP_WITH_NOGROUP, PASSWD_WITH_APT, Registry, chown_kilntest};

/// A step using cache mount `compiler`; `version` changes its command so
/// that it re-runs.
fn kilnfile(version: &str) -> String {
    format!(
        r#"
let app = image("bb:1")
    .run("echo {version} > /version; if test -f /c/obj; then echo hit:$(cat /c/obj):$(stat -c %u /c/p) > /seen; else echo miss > /seen; fi; test -f /c/obj || echo compiled-{version} > /c/obj; mkdir -p /c/p && echo x > /c/p/f && chown -R 42:65534 /c/p && chmod 700 /c/p",
         [cache("/c").id("compiler")]);
"#
    )
}

/// One store and one context directory (at a path of its own), run as root
/// or as `kilntest`.
struct Env {
    dir: tempfile::TempDir,
    rootless: bool,
}

impl Env {
    fn new(rootless: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = Env { dir, rootless };
        busybox_rootfs(&env.path("rootfs"));
        env.chown();
        env.ok(&["import", "rootfs", "-t", "bb:1"]);
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn home(&self) -> PathBuf {
        self.path("home")
    }

    fn chown(&self) {
        if self.rootless {
            chown_kilntest(self.dir.path());
        }
    }

    /// Writes the Kilnfile of `ctx` (the context directory is named
    /// `ctx` here: each Env has its own absolute path).
    fn kilnfile(&self, text: &str) {
        std::fs::create_dir_all(self.path("ctx")).unwrap();
        std::fs::write(self.path("ctx/Kilnfile"), text).unwrap();
        self.chown();
    }

    fn kiln(&self, args: &[&str]) -> Output {
        let mut c = if self.rootless {
            let mut c = common::kilntest_command(&self.home(), self.dir.path(), args);
            c.env("HOME", self.path(""));
            c
        } else {
            common::kiln_command(&self.home(), self.dir.path(), args)
        };
        c.output().expect("run kiln")
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let o = self.kiln(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success(),
            "kiln {args:?} failed (rootless: {}):\n{err}",
            self.rootless
        );
        (String::from_utf8(o.stdout).unwrap(), err)
    }

    /// Builds `ctx` with `extra` flags; returns `/seen` of the image and
    /// the stderr.
    fn build(&self, extra: &[&str]) -> (String, String) {
        let _ = std::fs::remove_file(self.path("fs.tar"));
        let mut args = vec![
            "build",
            "ctx",
            "--progress",
            "plain",
            "-o",
            "type=tar,dest=fs.tar",
        ];
        args.extend_from_slice(extra);
        let (_, err) = self.ok(&args);
        let tar = std::fs::read(self.path("fs.tar")).unwrap();
        let seen = tar_file(&tar, "seen").unwrap_or_default();
        (seen.trim().to_string(), err)
    }

    /// The host directory of cache mount `id`, if the store has one.
    fn cache_data(&self, id: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(self.home().join("cache-mounts")).ok()? {
            let p = e.unwrap().path();
            if std::fs::read_to_string(p.join("id")).ok().as_deref() == Some(id) {
                return Some(p.join("data"));
            }
        }
        None
    }
}

/// busybox with what the step needs, and `_apt` (uid 42) in /etc/passwd.
fn busybox_rootfs(root: &Path) {
    Busybox::new(&[
        "sh", "echo", "cat", "test", "mkdir", "chown", "chmod", "stat", "ls",
    ])
    .dir("tmp")
    .file("etc/passwd", PASSWD_WITH_APT)
    .file("etc/group", GROUP_WITH_NOGROUP)
    .write(root);
}

fn tar_file(tar: &[u8], name: &str) -> Option<String> {
    let mut a = tar::Archive::new(tar);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if p.trim_start_matches("./") == name {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return Some(s);
        }
    }
    None
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(cache: &Path, digest: &str) -> PathBuf {
    cache
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The manifest of the cache in the OCI layout `cache`.
fn manifest(cache: &Path) -> serde_json::Value {
    let index = json(&cache.join("index.json"));
    json(&blob(
        cache,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
}

/// The cache mount entries of the records blob: (id, digest).
fn cache_mount_entries(cache: &Path) -> Vec<(String, String)> {
    let m = manifest(cache);
    let recs = json(&blob(cache, m["config"]["digest"].as_str().unwrap()));
    recs["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `(written, already there)` of the `cache export to ...: N record(s),
/// W blob(s) written (B bytes), P already there` line.
fn export_counts(err: &str) -> (u64, u64) {
    let line = err
        .lines()
        .find(|l| l.starts_with("cache export to"))
        .unwrap_or_else(|| panic!("no export line:\n{err}"));
    let count = |what: &str| -> u64 {
        line.split(", ")
            .find(|p| p.contains(what))
            .and_then(|p| p.rsplit(": ").next())
            .and_then(|p| p.split(' ').next())
            .unwrap_or_else(|| panic!("no `{what}` in {line}"))
            .parse()
            .unwrap()
    };
    (count("blob(s) written"), count("already there"))
}

fn zstd_tar_names(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    let mut a = tar::Archive::new(&out[..]);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn cache_mounts_travel_through_a_local_cache() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let to = format!("type=local,dest={},cache-mounts=true", cache.display());
    let from = format!("type=local,src={}", cache.display());

    // runner A: the step finds an empty cache and fills it
    let a = Env::new(false);
    a.kilnfile(&kilnfile("v1"));
    let (seen, _) = a.build(&["--cache-to", &to]);
    assert_eq!(seen, "miss");
    let mounts = cache_mount_entries(&cache);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].0, "compiler");
    // a layer of the manifest, annotated with its id, a tar of the mount
    let layer = manifest(&cache)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["digest"].as_str() == Some(&mounts[0].1))
        .cloned()
        .expect("the mount's blob is a layer of the manifest");
    assert_eq!(
        layer["annotations"]["dev.kiln.cache-mount.id"].as_str(),
        Some("compiler")
    );
    let mut names = zstd_tar_names(&std::fs::read(blob(&cache, &mounts[0].1)).unwrap());
    names.sort();
    assert_eq!(names, ["obj", "p/", "p/f"]);

    // a re-export after a build that changed nothing writes no blob
    let (_, err) = a.build(&["--cache-to", &to]);
    assert_eq!(export_counts(&err).0, 0, "{err}");
    assert_eq!(cache_mount_entries(&cache), mounts);
    // without cache-mounts=true the mount is not exported
    let plain = t.path().join("plain");
    a.build(&[
        "--cache-to",
        &format!("type=local,dest={}", plain.display()),
    ]);
    assert!(cache_mount_entries(&plain).is_empty());

    // runner B: another store, another context path; a fully cached build
    // does not touch the mount at all (lazy)
    let b = Env::new(false);
    b.kilnfile(&kilnfile("v1"));
    let (seen, err) = b.build(&["--cache-from", &from]);
    assert_eq!(seen, "miss", "the image is A's: {err}");
    assert!(
        common::steps(&err).iter().all(|(_, s)| s == "CACHED"),
        "{err}"
    );
    assert!(
        b.cache_data("compiler")
            .is_none_or(|d| !d.exists() || std::fs::read_dir(d).unwrap().next().is_none()),
        "a CACHED step imported the mount"
    );
    // ... and its export keeps the mount it did not fill (from A's cache)
    let carried = t.path().join("carried");
    let (_, err) = b.build(&[
        "--cache-from",
        &from,
        "--cache-to",
        &format!("type=local,dest={},cache-mounts=true", carried.display()),
    ]);
    assert_eq!(cache_mount_entries(&carried), mounts, "{err}");

    // the step changes and runs: it sees what A's build left, owners kept
    b.kilnfile(&kilnfile("v2"));
    let (seen, err) = b.build(&["--cache-from", &from, "--log-level", "info"]);
    assert_eq!(seen, "hit:compiled-v1:42", "{err}");
    assert!(err.contains("imported the cache mount"), "{err}");
    assert!(
        err.contains("kiln: cache mount `compiler` restored from the imported cache ("),
        "the step's output says so: {err}"
    );

    // a non-empty local mount is kept, not overwritten by the cache
    let c = Env::new(false);
    c.kilnfile(&kilnfile("local"));
    assert_eq!(c.build(&[]).0, "miss");
    c.kilnfile(&kilnfile("v3"));
    let (seen, err) = c.build(&["--cache-from", &from, "--log-level", "debug"]);
    assert_eq!(seen, "hit:compiled-local:42", "{err}");
    assert!(err.contains("not importing the cached one"), "{err}");

    // cache-mounts=false on the import leaves the mounts alone
    let d = Env::new(false);
    d.kilnfile(&kilnfile("v4"));
    let (seen, _) = d.build(&["--cache-from", &format!("{from},cache-mounts=false")]);
    assert_eq!(seen, "miss");

    // a bad value is a spec error that says what to write
    let o = a.kiln(&[
        "build",
        "ctx",
        "--cache-to",
        &format!("type=local,dest={},cache-mounts=yes", cache.display()),
    ]);
    // miette wraps the message at 80 columns (at `-` too): unwrap it
    let err = String::from_utf8_lossy(&o.stderr)
        .replace("-\n  │ ", "-")
        .replace("\n  │ ", " ");
    assert!(!o.status.success());
    assert!(
        err.contains("`cache-mounts=yes` is not `true` or `false`")
            && err.contains("cache-mounts=true"),
        "{err}"
    );
}

#[test]
fn a_corrupt_or_missing_mount_blob_is_a_warning_and_an_empty_cache() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let a = Env::new(false);
    a.kilnfile(&kilnfile("v1"));
    a.build(&[
        "--cache-to",
        &format!("type=local,dest={},cache-mounts=true", cache.display()),
    ]);
    let mounts = cache_mount_entries(&cache);
    let path = blob(&cache, &mounts[0].1);
    let good = std::fs::read(&path).unwrap();

    for (what, bytes) in [
        ("corrupt", Some(b"not a zstd tar at all".to_vec())),
        ("truncated", Some(good[..good.len() / 2].to_vec())),
        ("missing", None),
    ] {
        match &bytes {
            Some(b) => std::fs::write(&path, b).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        let b = Env::new(false);
        b.kilnfile(&kilnfile("v2"));
        let (seen, err) = b.build(&[
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ]);
        assert_eq!(seen, "miss", "{what}: {err}");
        assert!(
            err.contains("cache mount `compiler`")
                && err.contains("the step runs with an empty cache mount"),
            "{what}: {err}"
        );
        // no temp directory is left beside the mount
        let data = b.cache_data("compiler").unwrap();
        let left: Vec<_> = std::fs::read_dir(data.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("import-"))
            .collect();
        assert!(left.is_empty(), "{what}: {left:?}");
    }
}

#[test]
fn rootless_import_and_export_keep_owners() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let cache2 = t.path().join("cache2");
    std::fs::create_dir_all(&cache2).unwrap();
    chown_kilntest(t.path());
    // exported by root ...
    let a = Env::new(false);
    a.kilnfile(&kilnfile("v1"));
    a.build(&[
        "--cache-to",
        &format!("type=local,dest={},cache-mounts=true", cache.display()),
    ]);
    // ... imported by kilntest: uid 42 is a subordinate ID on the host and
    // 42 again inside the step
    let b = Env::new(true);
    b.kilnfile(&kilnfile("v2"));
    let (seen, err) = b.build(&[
        "--cache-from",
        &format!("type=local,src={}", cache.display()),
        "--cache-to",
        &format!("type=local,dest={},cache-mounts=true", cache2.display()),
    ]);
    assert_eq!(seen, "hit:compiled-v1:42", "{err}");
    // kilntest's export (read inside its user namespace) reaches a third
    // rootless runner with the same content and owners
    assert_eq!(cache_mount_entries(&cache2).len(), 1);
    let c = Env::new(true);
    c.kilnfile(&kilnfile("v3"));
    let (seen, err) = c.build(&[
        "--cache-from",
        &format!("type=local,src={}", cache2.display()),
    ]);
    assert_eq!(seen, "hit:compiled-v1:42", "{err}");
}

#[test]
fn secrets_and_tmpfs_inside_a_cache_mount_are_not_exported() {
    const SECRET: &str = "kiln-mount-secret-p0o9i8";
    const TMPFS: &str = "kiln-tmpfs-data-l5k4j3";
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let a = Env::new(false);
    a.kilnfile(&format!(
        r#"
let app = image("bb:1")
    .run("cat /c/tok > /dev/null && echo {TMPFS} > /c/t/f && echo kept > /c/kept && echo done > /seen",
         [cache("/c").id("with-secret"), secret("tok").target("/c/tok"), tmpfs("/c/t")]);
"#
    ));
    std::fs::write(a.path("secret.txt"), SECRET).unwrap();
    let (seen, err) = a.build(&[
        "--secret",
        "id=tok,src=secret.txt",
        "--cache-to",
        &format!("type=local,dest={},cache-mounts=true", cache.display()),
    ]);
    assert_eq!(seen, "done", "{err}");
    let mounts = cache_mount_entries(&cache);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(&std::fs::read(blob(&cache, &mounts[0].1)).unwrap()[..])
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    let has = |needle: &str| out.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has("kept"), "the mount's own file is exported");
    assert!(!has(SECRET), "the secret reached the cache");
    assert!(!has(TMPFS), "the tmpfs content reached the cache");
    // and no other blob of the cache holds them
    for e in std::fs::read_dir(cache.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        for needle in [SECRET, TMPFS] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()));
        }
    }
}

#[test]
fn cache_mounts_travel_through_a_registry_cache() {
    let registry = Registry::start();
    let cache_ref = format!("{}/cache/mounts:buildcache", registry.addr);
    let to = format!("type=registry,ref={cache_ref},cache-mounts=true");
    let from = format!("type=registry,ref={cache_ref}");

    let a = Env::new(false);
    a.kilnfile(&kilnfile("v1"));
    let (seen, err) = a.build(&["--cache-to", &to]);
    assert_eq!(seen, "miss");
    let (written, _) = export_counts(&err);
    assert!(written > 0, "{err}");
    // nothing changed: every blob is in the registry already
    let (_, err) = a.build(&["--cache-to", &to]);
    assert_eq!(export_counts(&err).0, 0, "{err}");

    let b = Env::new(false);
    b.kilnfile(&kilnfile("v2"));
    let (seen, err) = b.build(&["--cache-from", &from]);
    assert_eq!(seen, "hit:compiled-v1:42", "{err}");
}
