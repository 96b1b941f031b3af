//! `kiln cache du`, `prune` and `check` on a real store (issue 6): sizes
//! follow builds, prune frees space and the next build redoes what it
//! removed, check finds corrupt blobs and dangling records, drops them, and
//! the next build still gives the reference digest.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(home: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(args)
        .current_dir(dir)
        .env("KILN_HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KILN_LOG");
    c
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn run(home: &Path, dir: &Path, args: &[&str]) -> (String, String) {
    let o = kiln(home, dir, args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (ok(o, &args.join(" ")), err)
}

/// A busybox rootfs imported as `bb:1` into `home`.
fn busybox_image(home: &Path, dir: &Path) {
    let root = dir.join("rootfs");
    if !root.exists() {
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for applet in ["sh", "seq", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    run(home, dir, &["import", "rootfs", "-t", "bb:1"]);
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

/// Builds `ctx` and names the image `app:1`.
fn build(home: &Path, dir: &Path, ctx: &Path) -> (String, Vec<String>) {
    build_with(home, dir, ctx, &["-t", "app:1"])
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
