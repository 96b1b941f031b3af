//! `kiln cache du`, `prune` and `check` on a real store (issue 6): sizes
//! follow builds, prune frees space and the next build redoes what it
//! removed, check finds corrupt blobs and dangling records, drops them, and
//! the next build still gives the reference digest.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::{Busybox, Registry, chown_kilntest, expect_ok as ok, kiln_command as kiln};

fn run(home: &Path, dir: &Path, args: &[&str]) -> (String, String) {
    let o = kiln(home, dir, args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (ok(o, &args.join(" ")), err)
}

/// The busybox tree of these tests: `seq` and `cat` for the run step.
const BUSYBOX: &[&str] = &["sh", "seq", "cat"];

/// A busybox rootfs imported as `bb:1` into `home`.
fn busybox_image(home: &Path, dir: &Path) {
    Busybox::new(BUSYBOX).import(home, dir);
}

fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("input.txt"), "input\n").unwrap();
    std::fs::write(
        ctx.join("Kilnfile"),
        r#"
let build = image("bb:1")
    .copy(context().path("input.txt"), "/input.txt")
    .run("seq 1 3000 > /numbers && cat /input.txt >> /numbers");
let app = static_base().copy(build.path("/numbers"), "/numbers");
"#,
    )
    .unwrap();
    ctx
}

fn du(home: &Path, dir: &Path) -> serde_json::Value {
    serde_json::from_str(&run(home, dir, &["cache", "du", "--format", "json"]).0).unwrap()
}

fn bytes(v: &serde_json::Value, kind: &str) -> u64 {
    v[kind]["bytes"].as_u64().unwrap()
}

fn records(v: &serde_json::Value, kind: &str) -> u64 {
    v["records"][kind]["count"].as_u64().unwrap_or(0)
}

fn build_with(home: &Path, dir: &Path, ctx: &Path, extra: &[&str]) -> (String, Vec<String>) {
    let mut args = vec!["build", ctx.to_str().unwrap(), "--progress", "plain"];
    args.extend_from_slice(extra);
    let (digest, err) = run(home, dir, &args);
    let steps = err
        .lines()
        .filter(|l| l.starts_with("=> "))
        .map(str::to_owned)
        .collect();
    (digest, steps)
}

fn ran_the_run_step(steps: &[String]) -> bool {
    steps
        .iter()
        .any(|l| l.contains("seq 1 3000") && !l.ends_with(" CACHED"))
}

#[test]
fn du_follows_builds_and_prune_frees_what_the_next_build_redoes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let home = dir.join("home");
    busybox_image(&home, dir);
    let ctx = context(dir);

    let before = du(&home, dir);
    assert_eq!(bytes(&before, "snapshots"), 0, "{before}");
    assert_eq!(records(&before, "build-cache"), 0, "{before}");
    assert!(bytes(&before, "image_blobs") > 0, "{before}");

    // this test accounts bytes of build cache against named images: built
    // without attestations, whose `attestations` record stays with a named
    // image outside `image_blobs` (tests/attestations.rs prunes those)
    let plain = ["-t", "app:1", "--provenance=false", "--sbom=false"];
    let build = |home: &Path, dir: &Path, ctx: &Path| build_with(home, dir, ctx, &plain);
    let (reference, steps) = build(&home, dir, &ctx);
    assert!(ran_the_run_step(&steps), "{steps:?}");
    let after = du(&home, dir);
    assert!(records(&after, "build-cache") >= 3, "{after}");
    assert!(bytes(&after, "snapshots") > 0, "{after}");
    assert!(bytes(&after, "cache_blobs") > 0, "{after}");
    assert!(after["total"].as_u64() > before["total"].as_u64());

    // a rebuild is all cached and leaves the sizes alone
    let (again, steps) = build(&home, dir, &ctx);
    assert_eq!(again, reference);
    assert!(steps.iter().all(|l| l.ends_with(" CACHED")), "{steps:?}");

    // prune with a filter that matches nothing removes nothing
    let (freed, err) = run(
        &home,
        dir,
        &[
            "cache",
            "prune",
            "--filter",
            "until=1h",
            "--log-level",
            "debug",
        ],
    );
    assert_eq!(freed, "0", "{err}");
    assert_eq!(
        records(&du(&home, dir), "build-cache"),
        records(&after, "build-cache")
    );

    // keep-storage above the current size removes nothing either
    let total = after["total"].as_u64().unwrap();
    let (freed, err) = run(
        &home,
        dir,
        &[
            "cache",
            "prune",
            "--keep-storage",
            &format!("{}", total * 2),
            "--log-level",
            "debug",
        ],
    );
    assert_eq!(freed, "0", "{err}");

    // keep-storage just above the named images frees the build cache
    let image_bytes = bytes(&after, "image_blobs");
    let (freed, err) = run(
        &home,
        dir,
        &[
            "cache",
            "prune",
            "--keep-storage",
            &format!("{}", image_bytes + 1),
        ],
    );
    assert!(freed.parse::<u64>().unwrap() > 0, "{err}");
    let pruned = du(&home, dir);
    assert!(
        pruned["total"].as_u64().unwrap() <= image_bytes + 1,
        "{pruned}"
    );
    // the named images (bb:1, app:1) survive
    assert_eq!(bytes(&pruned, "image_blobs"), image_bytes);

    // the next build re-runs the step and gives the same image
    let (rebuilt, steps) = build(&home, dir, &ctx);
    assert_eq!(rebuilt, reference);
    assert!(ran_the_run_step(&steps), "{steps:?}");

    // plain prune: every build cache record goes, the named images stay
    let (freed, _) = run(&home, dir, &["cache", "prune"]);
    assert!(freed.parse::<u64>().unwrap() > 0);
    let pruned = du(&home, dir);
    assert_eq!(records(&pruned, "build-cache"), 0, "{pruned}");
    assert_eq!(bytes(&pruned, "snapshots"), 0, "{pruned}");
    assert_eq!(bytes(&pruned, "image_blobs"), image_bytes);
    let (rebuilt, steps) = build(&home, dir, &ctx);
    assert_eq!(rebuilt, reference);
    assert!(ran_the_run_step(&steps), "{steps:?}");

    // --all removes the names too: the build then cannot find bb:1
    run(&home, dir, &["cache", "prune", "--all"]);
    let empty = du(&home, dir);
    assert_eq!(empty["total"].as_u64(), Some(0), "{empty:#}");
    let o = kiln(
        &home,
        dir,
        &["build", ctx.to_str().unwrap(), "--pull", "never"],
    )
    .output()
    .unwrap();
    assert!(!o.status.success());
}

/// The layer blobs the build-cache records name, but no named image.
fn recorded_blobs(home: &Path) -> Vec<String> {
    let tags: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("tags.json")).unwrap()).unwrap();
    let mut named = Vec::new();
    for m in tags["tags"].as_object().unwrap().values() {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob_path(home, m.as_str().unwrap())).unwrap())
                .unwrap();
        for l in manifest["layers"].as_array().unwrap() {
            named.push(l["digest"].as_str().unwrap().to_string());
        }
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(home.join("records/build-cache")).unwrap() {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        for l in v["layers"].as_array().unwrap() {
            let d = l["digest"].as_str().unwrap_or_default();
            if !d.is_empty() && !out.contains(&d.to_string()) && !named.contains(&d.to_string()) {
                out.push(d.to_string());
            }
        }
    }
    out
}

fn blob_path(home: &Path, digest: &str) -> PathBuf {
    home.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

#[test]
fn check_drops_corrupt_blobs_and_dangling_records() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let home = dir.join("home");
    busybox_image(&home, dir);
    let ctx = context(dir);
    let (reference, _) = build_with(&home, dir, &ctx, &[]);

    let (_, err) = run(&home, dir, &["cache", "check"]);
    assert!(err.contains("the store is consistent"), "{err}");

    // Records name blob layers (the context's, the static base's, the
    // imported base's): corrupt one and delete another.
    let blobs = recorded_blobs(&home);
    assert!(blobs.len() >= 2, "{blobs:?}");
    let corrupt = &blobs[0];
    let missing = &blobs[1];
    let p = blob_path(&home, corrupt);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::remove_file(blob_path(&home, missing)).unwrap();
    // and a temp leftover of a killed writer
    std::fs::write(home.join("tmp/blob-leftover"), b"half a blob").unwrap();

    let (_, err) = run(&home, dir, &["cache", "check"]);
    assert!(
        err.contains(&format!("blob {corrupt}")) && err.contains("removed"),
        "check did not report the corrupt blob:\n{err}"
    );
    assert!(
        err.contains(&format!("{missing} is missing")) && err.contains("dropped"),
        "check did not report the record naming the deleted blob:\n{err}"
    );
    assert!(!blob_path(&home, corrupt).exists());
    assert!(!home.join("tmp/blob-leftover").exists());

    // consistent now, and a second check finds nothing
    let (_, err) = run(&home, dir, &["cache", "check"]);
    assert!(err.contains("the store is consistent"), "{err}");

    // the next build redoes what was dropped and gives the reference
    let (rebuilt, _) = build_with(&home, dir, &ctx, &[]);
    assert_eq!(rebuilt, reference);
    let (_, err) = run(&home, dir, &["cache", "check"]);
    assert!(err.contains("the store is consistent"), "{err}");
}

/// Runs kiln as the unprivileged `kilntest` (made by `.ci/setup`).
fn kiln_as_kilntest(home: &Path, dir: &Path, args: &[&str]) -> (String, String) {
    let (out, err) = common::kilntest_ok(home, dir, args);
    (out.trim().to_string(), err)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The blob digests of the cache layout's manifest (its layers).
fn cache_layers(cache: &Path) -> Vec<String> {
    let index = json(&cache.join("index.json"));
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = json(&blob_path(cache, m));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn blob_files(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The (digest, size) of each layer of the image tagged `tag` in `home`
/// (the tag names the index of the image and its attestations).
fn image_layers(home: &Path, tag: &str) -> Vec<(String, u64)> {
    let tags = json(&home.join("tags.json"));
    let top = json(&blob_path(home, tags["tags"][tag].as_str().unwrap()));
    let manifest = common::image_manifest(top, &|d| json(&blob_path(home, d)));
    common::manifest_layers(&manifest)
}

/// Who runs kiln in a cache import.
#[derive(Clone, Copy)]
enum User {
    Root,
    /// the unprivileged `kilntest`, through setpriv
    Kilntest,
}

fn kiln_as(user: User, home: &Path, dir: &Path, args: &[&str]) -> (String, String) {
    match user {
        User::Root => run(home, dir, args),
        User::Kilntest => kiln_as_kilntest(home, dir, args),
    }
}

/// A cache import somewhere else: `user` copies the context `ctx` to `ctx2`,
/// imports the busybox image into the fresh store `home` and builds `ctx2`
/// with `--cache-from FROM`. Every step hits, the image is `reference`, what
/// comes from the cache is more than nothing and at most the final image's
/// `final_bytes`, and the store is whole after it.
fn build_elsewhere_from_cache(
    user: User,
    home: &Path,
    dir: &Path,
    (ctx, ctx2): (&Path, &Path),
    from: &str,
    (reference, final_bytes): (&str, u64),
) {
    std::fs::create_dir_all(ctx2).unwrap();
    for f in ["Kilnfile", "input.txt"] {
        std::fs::copy(ctx.join(f), ctx2.join(f)).unwrap();
    }
    match user {
        User::Root => busybox_image(home, dir),
        User::Kilntest => {
            chown_kilntest(dir);
            kiln_as_kilntest(home, dir, &["import", "rootfs", "-t", "bb:1"]);
        }
    }
    let ctx2 = ctx2.to_str().unwrap();
    let args = ["build", ctx2, "--progress", "plain", "--cache-from", from];
    let (digest, err) = kiln_as(user, home, dir, &args);
    assert_eq!(digest, reference, "{err}");
    let steps: Vec<&str> = err.lines().filter(|l| l.starts_with("=> ")).collect();
    assert!(!steps.is_empty(), "{err}");
    assert!(
        steps.iter().all(|l| l.ends_with(" CACHED")),
        "an imported build re-ran a step:\n{err}"
    );
    let read = bytes_read(&err);
    assert!(
        read > 0 && read <= final_bytes,
        "{read} bytes read, the final layers are {final_bytes} bytes:\n{err}"
    );
    let (_, err) = kiln_as(user, home, dir, &["cache", "check"]);
    assert!(err.contains("the store is consistent"), "{err}");
}

#[test]
fn cache_export_import_across_stores_paths_and_users() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // the base image is the same for both users (its files' owners are
    // part of it): imported from a tree kilntest owns
    Busybox::new(BUSYBOX).write_once(&dir.join("rootfs"));
    chown_kilntest(dir);
    let home1 = dir.join("home1");
    busybox_image(&home1, dir);
    let ctx = context(dir);
    let cache = dir.join("cache");
    let to = format!("type=local,dest={},mode=max", cache.display());

    let (reference, _) = build_with(&home1, dir, &ctx, &["-t", "app:1", "--cache-to", &to]);
    let layers = cache_layers(&cache);
    assert!(cache.join("oci-layout").is_file());

    // a re-export after a build that changed nothing writes no blob
    let before = blob_files(&cache);
    let (again, err) = run(
        &home1,
        dir,
        &["build", ctx.to_str().unwrap(), "--cache-to", &to],
    );
    assert_eq!(again, reference);
    assert!(err.contains("0 blob(s) written (0 bytes)"), "{err}");
    assert_eq!(blob_files(&cache), before);

    // The final image's layers; every other layer leaves the cache, so a
    // build that reads anything else fails.
    let final_layers = image_layers(&home1, "app:1");
    let mut removed = 0;
    for l in &layers {
        if !final_layers.iter().any(|(d, _)| d == l) {
            std::fs::remove_file(blob_path(&cache, l)).unwrap();
            removed += 1;
        }
    }
    // the builder's own layers were exported (mode=max) and are gone now
    assert!(removed >= 2, "{layers:?} vs {final_layers:?}");

    // Another user, another store, the context at another path.
    let ctx2 = dir.join("elsewhere/checkout/ctx");
    let home2 = dir.join("home2");
    let from = format!("type=local,src={}", cache.display());
    let final_bytes = final_layers.iter().map(|(_, s)| s).sum();
    build_elsewhere_from_cache(
        User::Kilntest,
        &home2,
        dir,
        (&ctx, &ctx2),
        &from,
        (&reference, final_bytes),
    );

    // rootless, a step's files are removed by prune too, and the build
    // after it redoes the step
    let ctx2_s = ctx2.to_str().unwrap();
    kiln_as_kilntest(&home2, dir, &["build", ctx2_s, "--no-cache"]);
    kiln_as_kilntest(&home2, dir, &["cache", "prune"]);
    let (out, _) = kiln_as_kilntest(&home2, dir, &["cache", "du", "--format", "json"]);
    let usage: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(usage["snapshots"]["count"], 0, "{usage:#}");
    assert_eq!(usage["temp"]["count"], 0, "{usage:#}");
    let (digest, err) = kiln_as_kilntest(&home2, dir, &["build", ctx2_s, "--progress", "plain"]);
    assert_eq!(digest, reference);
    assert!(
        err.lines()
            .any(|l| l.contains("seq 1 3000") && !l.ends_with(" CACHED")),
        "{err}"
    );

    // min mode exports only the final stage's steps: a fresh store still
    // runs the builder, and the final copy hits when its bytes match
    let min = dir.join("cache-min");
    let (_, _) = run(
        &home1,
        dir,
        &[
            "build",
            ctx.to_str().unwrap(),
            "--cache-to",
            &format!("type=local,dest={}", min.display()),
        ],
    );
    let home3 = dir.join("home3");
    busybox_image(&home3, dir);
    let (digest, steps) = build_with(
        &home3,
        dir,
        &ctx2,
        &["--cache-from", &format!("type=local,src={}", min.display())],
    );
    assert_eq!(digest, reference);
    assert!(ran_the_run_step(&steps), "{steps:?}");
    assert!(
        steps
            .iter()
            .any(|l| l.contains("copy build:/numbers") && l.ends_with(" CACHED")),
        "{steps:?}"
    );
}

fn bytes_read(err: &str) -> u64 {
    let line = err
        .lines()
        .find(|l| l.starts_with("cache import:"))
        .unwrap_or_else(|| panic!("{err}"));
    line.split_once("blob(s) (")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn registry_cache_export_and_import() {
    let registry = Registry::start();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let home1 = dir.join("home1");
    busybox_image(&home1, dir);
    let ctx = context(dir);
    let cache_ref = format!("{}/cache/app:buildcache", registry.addr);
    let to = format!("type=registry,ref={cache_ref},mode=max");

    let (reference, err) = run(
        &home1,
        dir,
        &[
            "build",
            ctx.to_str().unwrap(),
            "-t",
            "app:1",
            "--cache-to",
            &to,
        ],
    );
    assert!(!err.contains(" 0 blob(s) written"), "{err}");
    // a no-op rebuild pushes nothing
    let (again, err) = run(
        &home1,
        dir,
        &["build", ctx.to_str().unwrap(), "--cache-to", &to],
    );
    assert_eq!(again, reference);
    assert!(err.contains("0 blob(s) written (0 bytes)"), "{err}");

    // the registry holds an OCI artifact manifest (skopeo reads it back)
    let manifest: serde_json::Value =
        serde_json::from_slice(&registry.raw("cache/app:buildcache")).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.kiln.cache.v1");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.kiln.cache.records.v1+json"
    );

    // a fresh store, the context elsewhere: every step hits and only the
    // final image's layers come over the wire
    let from = format!("type=registry,ref={cache_ref}");
    let final_bytes = image_layers(&home1, "app:1").iter().map(|(_, s)| s).sum();
    build_elsewhere_from_cache(
        User::Root,
        &dir.join("home2"),
        dir,
        (&ctx, &dir.join("other/place/ctx")),
        &from,
        (&reference, final_bytes),
    );

    // a cache tag that does not exist yet is no error (a first CI run)
    let home3 = dir.join("home3");
    busybox_image(&home3, dir);
    let missing = format!("type=registry,ref={}/cache/app:nothing-yet", registry.addr);
    let (digest, _) = build_with(&home3, dir, &ctx, &["--cache-from", &missing]);
    assert_eq!(digest, reference);
}

#[test]
fn prune_waits_for_a_running_build() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let home = dir.join("home");
    busybox_image(&home, dir);
    let ctx = dir.join("slow");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Kilnfile"),
        "let app = image(\"bb:1\").run(\"seq 1 10 > /ten && sleep 2\");\n",
    )
    .unwrap();
    let build = kiln(&home, dir, &["build", ctx.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait until its `run` step runs (its upper directory exists)
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(home.join("worker-tmp")).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("exec-"))
    }) {
        assert!(
            Instant::now() < deadline,
            "the build never started its step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, err) = run(&home, dir, &["cache", "prune", "--all"]);
    assert!(
        err.contains("waiting for the other kiln processes"),
        "prune did not wait:\n{err}"
    );
    let out = build.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the build failed under a prune:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // and then it did prune: nothing is left
    let usage = du(&home, dir);
    assert_eq!(usage["total"].as_u64(), Some(0), "{usage:#}");
}
