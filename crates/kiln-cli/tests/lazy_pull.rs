//! Lazy base-image pulls (issue 6, fresh runner): a build whose steps on a
//! registry image are all cache hits fetches that image's manifest and
//! config only; its layers stay in the registry until a step reads them.
//! Against Debian's docker-registry on 127.0.0.1, whose access log counts
//! the blob downloads.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{Busybox, Registry, expect_ok as ok, kiln_command as kiln};

fn run(home: &Path, dir: &Path, args: &[&str]) -> (String, String) {
    let o = kiln(home, dir, args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (ok(o, &args.join(" ")), err)
}

/// The builder step of the first runner's build.
const SEQ_300: &str = "seq 1 300 > /numbers && cat /input.txt >> /numbers";

fn make_rootfs(dir: &Path) {
    Busybox::new(&["sh", "seq", "cat"]).write(&dir.join("rootfs"));
}

/// A context whose builder stage runs `command` on the registry image
/// `base`; the final image is the static base plus the step's output.
fn context(dir: &Path, name: &str, base: &str, command: &str) -> PathBuf {
    let ctx = dir.join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("input.txt"), "input\n").unwrap();
    std::fs::write(
        ctx.join("Kilnfile"),
        format!(
            r#"
let build = image("{base}")
    .copy(context().path("input.txt"), "/input.txt")
    .run("{command}");
let app = static_base().copy(build.path("/numbers"), "/numbers");
"#
        ),
    )
    .unwrap();
    ctx
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob_path(home: &Path, digest: &str) -> PathBuf {
    home.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The layer digests of the image the store knows as `name`.
fn layers_of(home: &Path, name: &str) -> Vec<String> {
    let tags = json(&home.join("tags.json"));
    let m = tags["tags"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no tag {name} in {tags}"));
    json(&blob_path(home, m))["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn steps(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.starts_with("=> ")).collect()
}

fn build_args<'a>(ctx: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["build", ctx.to_str().unwrap(), "--progress", "plain"];
    a.extend_from_slice(extra);
    a
}

/// A first runner exports a max cache of a build on `REGISTRY/lazy/bb:1`;
/// returns (registry, base reference, cache dir, reference digest).
fn first_runner(dir: &Path) -> (Registry, String, PathBuf, String) {
    let registry = Registry::start();
    make_rootfs(dir);
    let base = format!("{}/lazy/bb:1", registry.addr);
    let seed = dir.join("home-seed");
    run(&seed, dir, &["import", "rootfs", "-t", "bb:1"]);
    run(&seed, dir, &["push", "-q", "bb:1", &base]);
    let ctx = context(dir, "ctx-a", &base, SEQ_300);
    let cache = dir.join("cache");
    let to = format!("type=local,dest={},mode=max", cache.display());
    let (digest, _) = run(
        &dir.join("home-a"),
        dir,
        &build_args(&ctx, &["--cache-to", &to]),
    );
    (registry, base, cache, digest)
}

#[test]
fn cached_steps_leave_base_layers_in_the_registry_until_a_step_reads_them() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let (registry, base, cache, reference) = first_runner(dir);
    let from = format!("type=local,src={}", cache.display());

    // a fresh runner at another path: every step CACHED, the base's
    // manifest and config fetched, its layers not
    let home = dir.join("home-b");
    let ctx = context(dir, "elsewhere/ctx-b", &base, SEQ_300);
    let (digest, err) = run(&home, dir, &build_args(&ctx, &["--cache-from", &from]));
    assert_eq!(digest, reference);
    assert!(!steps(&err).is_empty(), "{err}");
    assert!(steps(&err).iter().all(|l| l.ends_with(" CACHED")), "{err}");
    let layers = layers_of(&home, &base);
    assert!(!layers.is_empty());
    let gets_before: Vec<usize> = layers.iter().map(|l| registry.blob_gets(l)).collect();
    for l in &layers {
        assert!(
            !blob_path(&home, l).exists(),
            "layer {l} was fetched:\n{err}"
        );
        let hex = l.strip_prefix("sha256:").unwrap();
        assert!(
            home.join("remote/sha256").join(hex).is_file(),
            "{l} is not lazy"
        );
    }
    // `kiln cache check` takes lazy layers for what they are
    let (_, err) = run(&home, dir, &["cache", "check"]);
    assert!(err.contains("the store is consistent"), "{err}");
    assert!(
        !err.contains("dropped") && !err.contains("removed"),
        "{err}"
    );
    // and so does a second fresh-runner build: still nothing fetched
    let (again, err) = run(&home, dir, &build_args(&ctx, &["--cache-from", &from]));
    assert_eq!(again, reference);
    assert!(steps(&err).iter().all(|l| l.ends_with(" CACHED")), "{err}");
    for (l, n) in layers.iter().zip(&gets_before) {
        assert_eq!(registry.blob_gets(l), *n, "layer {l} was downloaded");
        assert!(!blob_path(&home, l).exists());
    }

    // a step that runs on the base: its layers come now, verified, and the
    // result matches a build on an eagerly pulled base
    let cmd = "seq 1 400 > /numbers && cat /input.txt >> /numbers";
    let ctx2 = context(dir, "ctx-c", &base, cmd);
    let (lazy_digest, err) = run(&home, dir, &build_args(&ctx2, &[]));
    assert!(
        steps(&err)
            .iter()
            .any(|l| l.contains("seq 1 400") && !l.ends_with(" CACHED")),
        "{err}"
    );
    for (l, n) in layers.iter().zip(&gets_before) {
        assert!(blob_path(&home, l).is_file(), "layer {l} was not fetched");
        assert!(registry.blob_gets(l) > *n, "layer {l} was not downloaded");
    }
    let eager = dir.join("home-eager");
    run(&eager, dir, &["pull", "-q", &base]);
    for l in &layers {
        assert!(blob_path(&eager, l).is_file(), "`kiln pull` left {l} lazy");
    }
    let (eager_digest, _) = run(&eager, dir, &build_args(&ctx2, &[]));
    assert_eq!(lazy_digest, eager_digest);
    let (_, err) = run(&home, dir, &["cache", "check"]);
    assert!(err.contains("the store is consistent"), "{err}");

    // `kiln save` of the lazily pulled image reads its layers: fetched too
    let home_d = dir.join("home-d");
    run(&home_d, dir, &build_args(&ctx, &["--cache-from", &from]));
    assert!(layers.iter().all(|l| !blob_path(&home_d, l).exists()));
    let archive = dir.join("bb.tar");
    run(
        &home_d,
        dir,
        &["save", &base, "-o", archive.to_str().unwrap()],
    );
    assert!(layers.iter().all(|l| blob_path(&home_d, l).is_file()));
    let o = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // prune keeps the locators of a named image, `--all` drops them, and
    // the next build pulls lazily again
    let home_p = dir.join("home-p");
    let locator = |l: &String| {
        home_p
            .join("remote/sha256")
            .join(l.strip_prefix("sha256:").unwrap())
    };
    run(&home_p, dir, &build_args(&ctx, &["--cache-from", &from]));
    run(&home_p, dir, &["cache", "prune"]);
    assert!(layers.iter().all(|l| locator(l).is_file()));
    run(&home_p, dir, &["cache", "prune", "--all"]);
    assert!(layers.iter().all(|l| !locator(l).exists()));
    let (again, _) = run(&home_p, dir, &build_args(&ctx, &["--cache-from", &from]));
    assert_eq!(again, reference);
    assert!(layers.iter().all(|l| locator(l).is_file()));
    assert!(layers.iter().all(|l| !blob_path(&home_p, l).exists()));
}

#[test]
fn registry_faults_at_lazy_fetch_time_are_clear_errors_and_leave_the_store_sound() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let (mut registry, base, cache, reference) = first_runner(dir);
    let from = format!("type=local,src={}", cache.display());
    let ctx = context(dir, "ctx-b", &base, SEQ_300);
    let ctx2 = context(
        dir,
        "ctx-c",
        &base,
        "seq 1 400 > /numbers && cat /input.txt >> /numbers",
    );

    // a corrupted blob in the registry: the digest check refuses it
    let home = dir.join("home-corrupt");
    let (digest, _) = run(&home, dir, &build_args(&ctx, &["--cache-from", &from]));
    assert_eq!(digest, reference);
    let layers = layers_of(&home, &base);
    let data = registry.blob_data(&layers[0]);
    let good = std::fs::read(&data).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&data, &bad).unwrap();
    let o = kiln(&home, dir, &build_args(&ctx2, &[])).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a corrupt layer was accepted:\n{err}");
    assert!(err.contains(&layers[0]) && err.contains(&base), "{err}");
    assert!(err.contains("digest"), "{err}");
    assert!(!blob_path(&home, &layers[0]).exists());
    let (_, err) = run(&home, dir, &["cache", "check"]);
    assert!(err.contains("the store is consistent"), "{err}");
    // repaired, the same store builds
    std::fs::write(&data, &good).unwrap();
    let (fixed, _) = run(&home, dir, &build_args(&ctx2, &[]));

    // a registry that is gone: the error names the image and the layer
    let home = dir.join("home-gone");
    run(&home, dir, &build_args(&ctx, &["--cache-from", &from]));
    registry.stop();
    let o = kiln(&home, dir, &build_args(&ctx2, &[])).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains(&base) && err.contains(&layers[0]), "{err}");
    assert!(err.contains("pulled lazily"), "{err}");
    assert!(layers.iter().all(|l| !blob_path(&home, l).exists()));
    // the fully cached build still works with the registry gone
    let (digest, _) = run(&home, dir, &build_args(&ctx, &["--cache-from", &from]));
    assert_eq!(digest, reference);
    let (_, err) = run(&home, dir, &["cache", "check"]);
    assert!(err.contains("the store is consistent"), "{err}");
    assert!(!fixed.is_empty());
}

/// The config of the image the store knows as `name`.
fn config_of(home: &Path, name: &str) -> String {
    let tags = json(&home.join("tags.json"));
    let m = tags["tags"][name].as_str().unwrap();
    json(&blob_path(home, m))["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Stores `bytes` in the OCI layout `cache`; returns their digest.
fn put_cache_blob(cache: &Path, bytes: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
    let hex = out.split_whitespace().next().unwrap().to_string();
    std::fs::write(cache.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

#[test]
fn a_fresh_runner_takes_the_base_config_and_the_elf_verdict_from_the_cache() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let (registry, base, cache, reference) = first_runner(dir);
    let from = format!("type=local,src={}", cache.display());
    // the first runner checked its final image (static base) and pulled
    // the base's config from the registry
    let checked = |home: &Path| home.join("records/elf-check").is_dir();
    assert!(checked(&dir.join("home-a")));
    let config = config_of(&dir.join("home-a"), &base);
    let config_gets = registry.blob_gets(&config);
    assert!(config_gets >= 1);

    let ctx = context(dir, "elsewhere/ctx-b", &base, SEQ_300);
    let home = dir.join("home-b");
    let (digest, err) = run(&home, dir, &build_args(&ctx, &["--cache-from", &from]));
    assert_eq!(digest, reference);
    assert!(steps(&err).iter().all(|l| l.ends_with(" CACHED")), "{err}");
    // the config came out of the cache, the check's verdict too: nothing
    // was scanned or recorded here
    assert_eq!(registry.blob_gets(&config), config_gets);
    assert!(blob_path(&home, &config).is_file());
    assert!(
        !checked(&home),
        "the fresh runner scanned the final image again"
    );
    let (_, err) = run(&home, dir, &["cache", "check"]);
    assert!(err.contains("the store is consistent"), "{err}");

    // The verdict counts: a cache that claims `/numbers` is a dynamic
    // binary fails the fresh runner's check, naming it.
    let index = json(&cache.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let mut manifest = json(&blob_path(&cache, manifest_digest));
    let records_digest = manifest["config"]["digest"].as_str().unwrap();
    let mut records = json(&blob_path(&cache, records_digest));
    let checks = records["checks"]
        .as_array_mut()
        .expect("the cache has checks");
    assert_eq!(checks.len(), 1, "{checks:?}");
    checks[0]["value"] = serde_json::json!(
        r#"[{"path":"/numbers","dynamic":true,"interpreter":"/lib64/ld-linux-x86-64.so.2","needed":["libc.so.6"],"arch":"amd64"}]"#
    );
    let bytes = serde_json::to_vec(&records).unwrap();
    manifest["config"]["digest"] = put_cache_blob(&cache, &bytes).into();
    manifest["config"]["size"] = bytes.len().into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = put_cache_blob(&cache, &bytes).into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(
        cache.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let home = dir.join("home-c");
    let o = kiln(&home, dir, &build_args(&ctx, &["--cache-from", &from]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("`/numbers` is dynamically linked"), "{err}");
}

#[test]
fn a_registry_cache_gives_a_fresh_runner_the_base_config_too() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let (registry, base, _, reference) = first_runner(dir);
    let ctx = context(dir, "ctx-a", &base, SEQ_300);
    let cache_ref = format!("{}/cache/app:buildcache", registry.addr);
    run(
        &dir.join("home-a"),
        dir,
        &build_args(
            &ctx,
            &[
                "--cache-to",
                &format!("type=registry,ref={cache_ref},mode=max"),
            ],
        ),
    );
    let config = config_of(&dir.join("home-a"), &base);
    let from_base = registry.blob_gets_from("lazy/bb", &config);
    let from_cache = registry.blob_gets_from("cache/app", &config);

    // the pull asks the cache for the config from inside the pull's own
    // runtime: the registry source fetches it on a thread of its own
    let home = dir.join("home-r");
    let ctx_b = context(dir, "elsewhere/ctx-r", &base, SEQ_300);
    let (digest, err) = run(
        &home,
        dir,
        &build_args(
            &ctx_b,
            &["--cache-from", &format!("type=registry,ref={cache_ref}")],
        ),
    );
    assert_eq!(digest, reference);
    assert!(steps(&err).iter().all(|l| l.ends_with(" CACHED")), "{err}");
    assert_eq!(registry.blob_gets_from("lazy/bb", &config), from_base);
    assert_eq!(
        registry.blob_gets_from("cache/app", &config),
        from_cache + 1
    );
    let (_, err) = run(&home, dir, &["cache", "check"]);
    assert!(err.contains("the store is consistent"), "{err}");
}
