//! `Kilnfile.lock` (issue #15 item 6): `kiln lock` pins image tags (the
//! loopback `docker-registry`) and Debian package sets (deb.debian.org) to
//! digests; `kiln build` follows the lock, with no network once the store
//! is warm; `--locked` fails on a missing entry or a moved tag, naming it;
//! `kiln lock --update=NAME` refreshes.

mod common;

use std::path::Path;

use common::{Busybox, Registry, kiln_command};

/// `kiln ARGS` in `dir` with the store `home`: (success, stdout, stderr).
fn kiln(home: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = kiln_command(home, dir, args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(home: &Path, dir: &Path, args: &[&str]) -> (String, String) {
    let (good, out, err) = kiln(home, dir, args, &[]);
    assert!(good, "kiln {args:?} failed:\n{err}");
    (out, err)
}

/// Pushes a tree whose `/version` says `version` to `reference`; returns
/// the manifest digest.
fn push_version(dir: &Path, reference: &str, version: &str) -> String {
    let root = dir.join(format!("rootfs-{version}"));
    Busybox::new(&[]).file("version", version).write(&root);
    let home = dir.join(format!("home-push-{version}"));
    ok(&home, dir, &["import", root.to_str().unwrap(), "-t", "v:1"]);
    let (out, _) = ok(&home, dir, &["push", "-q", "v:1", reference]);
    out.lines().last().unwrap().to_string()
}

fn lock_of(ctx: &Path) -> toml::Value {
    toml::from_str(&std::fs::read_to_string(ctx.join("Kilnfile.lock")).unwrap()).unwrap()
}

#[test]
fn a_lock_pins_a_tag_until_it_is_updated() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let reg = Registry::start();
    let base = format!("{}/lock/base:1", reg.addr);
    let first = push_version(dir, &base, "1");
    let ctx = dir.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Kilnfile"),
        format!(
            "let base = image(\"{base}\");\nlet app = static_base().copy(base.path(\"/version\"), \"/version\");\n"
        ),
    )
    .unwrap();
    let home = dir.join("home");
    let (_, err) = ok(&home, &ctx, &["check", "."]);
    assert!(err.contains("lint::unpinned-base"), "{err}");
    let (_, err) = ok(&home, &ctx, &["lock", "."]);
    assert!(err.contains("adding"), "{err}");
    // a locked tag is pinned: the lint has nothing to say
    let (_, err) = ok(&home, &ctx, &["check", "."]);
    assert!(!err.contains("lint::unpinned-base"), "{err}");
    let lock = lock_of(&ctx);
    let image = &lock["image"][0];
    assert_eq!(image["reference"].as_str(), Some(base.as_str()));
    assert_eq!(image["digest"].as_str(), Some(first.as_str()));
    assert_eq!(
        image["platforms"][0]["manifest"].as_str(),
        Some(first.as_str())
    );
    assert_eq!(
        image["platforms"][0]["platform"].as_str(),
        Some("linux/amd64")
    );
    // the lock is stable: locking again changes nothing
    let before = std::fs::read(ctx.join("Kilnfile.lock")).unwrap();
    let (_, err) = ok(&home, &ctx, &["lock", "."]);
    assert!(err.contains("up to date"), "{err}");
    assert_eq!(std::fs::read(ctx.join("Kilnfile.lock")).unwrap(), before);

    // the tag moves on
    let second = push_version(dir, &base, "2");
    assert_ne!(first, second);
    // a fresh store follows the lock, not the tag
    let fresh = dir.join("home-fresh");
    ok(&fresh, &ctx, &["build", "-o", "type=local,dest=out1", "."]);
    assert_eq!(
        std::fs::read_to_string(ctx.join("out1/version")).unwrap(),
        "1"
    );
    // `--locked` says the tag moved, naming both digests and the line
    let (good, _, err) = kiln(&fresh, &ctx, &["build", "--locked", "."], &[]);
    assert!(!good, "a moved tag must fail --locked");
    assert!(err.contains(&first) && err.contains(&second), "{err}");
    assert!(err.contains("Kilnfile:1"), "{err}");
    assert!(err.contains("kiln lock --update="), "{err}");
    assert!(!ctx.join("out2").exists());
    // `--update=NAME` takes the new image
    let name = base.trim_end_matches(":1");
    let (_, err) = ok(&home, &ctx, &["lock", &format!("--update={name}")]);
    assert!(err.contains("updating"), "{err}");
    assert_eq!(
        lock_of(&ctx)["image"][0]["digest"].as_str(),
        Some(second.as_str())
    );
    ok(
        &fresh,
        &ctx,
        &["build", "--locked", "-o", "type=local,dest=out2", "."],
    );
    assert_eq!(
        std::fs::read_to_string(ctx.join("out2/version")).unwrap(),
        "2"
    );
    // a name the file does not use is an error, not a silent no-op
    let (good, _, err) = kiln(&home, &ctx, &["lock", "--update=nosuch"], &[]);
    assert!(!good);
    assert!(err.contains("no image or package `nosuch`"), "{err}");

    // a Dockerfile gets a lock of its own beside it
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY Kilnfile /k\n"),
    )
    .unwrap();
    ok(&home, &ctx, &["lock", "-f", "Dockerfile", "."]);
    let text = std::fs::read_to_string(ctx.join("Dockerfile.lock")).unwrap();
    assert!(text.contains(&second), "{text}");
}

const SET: &str =
    "let app = static_base()\n    .packages(debian(\"bookworm\").packages([\"zlib1g\"]));\n";

#[test]
fn a_locked_package_set_builds_without_network_and_is_checked() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let ctx = dir.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Kilnfile"), SET).unwrap();
    let home = dir.join("home");
    ok(&home, &ctx, &["lock", "."]);
    let lock = lock_of(&ctx);
    let set = &lock["packages"][0];
    assert_eq!(set["suite"].as_str(), Some("bookworm"));
    assert_eq!(set["architecture"].as_str(), Some("amd64"));
    let debs = set["debs"].as_array().unwrap();
    let zlib = debs
        .iter()
        .find(|d| d["name"].as_str() == Some("zlib1g"))
        .expect("zlib1g is locked");
    assert!(
        zlib["filename"]
            .as_str()
            .unwrap()
            .starts_with("pool/main/z/zlib/zlib1g_"),
        "{zlib}"
    );
    assert!(debs.iter().any(|d| d["name"].as_str() == Some("libc6")));
    let (digest, _) = ok(&home, &ctx, &["build", "--locked", "."]);

    // the provenance names every `.deb` by the SHA256 the lock has (#17)
    ok(
        &home,
        &ctx,
        &["build", "--provenance", "-o", "type=local,dest=prov", "."],
    );
    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ctx.join("prov/provenance.json")).unwrap()).unwrap();
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap_or_else(|| panic!("no resolvedDependencies in {prov}"));
    for d in debs {
        let name = d["name"].as_str().unwrap();
        let sha = d["sha256"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(
            deps.iter().any(|r| {
                r["uri"]
                    .as_str()
                    .is_some_and(|u| u.starts_with(&format!("pkg:deb/debian/{name}@")))
                    && r["digest"]["sha256"].as_str() == Some(sha)
            }),
            "{name} {sha} not in {deps:?}"
        );
    }

    // every HTTP request would now fail: the locked rebuild needs none
    let dead = [
        ("http_proxy", "http://127.0.0.1:9"),
        ("https_proxy", "http://127.0.0.1:9"),
        ("HTTP_PROXY", "http://127.0.0.1:9"),
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
    ];
    let (good, again, err) = kiln(&home, &ctx, &["build", "."], &dead);
    assert!(good, "the locked rebuild asked the network:\n{err}");
    assert_eq!(again, digest);
    // ...which is the lock's doing: without it the index is fetched
    std::fs::rename(ctx.join("Kilnfile.lock"), dir.join("saved.lock")).unwrap();
    let (good, _, _) = kiln(&home, &ctx, &["build", "."], &dead);
    assert!(!good, "the proxy did not stop the unlocked build");
    std::fs::rename(dir.join("saved.lock"), ctx.join("Kilnfile.lock")).unwrap();

    // a set the lock lacks: `--locked` and `kiln lock --check` name it
    std::fs::write(
        ctx.join("Kilnfile"),
        SET.replace("\"zlib1g\"", "\"zlib1g\", \"libzstd1\""),
    )
    .unwrap();
    let (good, _, err) = kiln(&home, &ctx, &["build", "--locked", "."], &[]);
    assert!(!good);
    assert!(
        err.contains("has no entry for the bookworm package set"),
        "{err}"
    );
    assert!(err.contains("Kilnfile:2"), "{err}");
    let (good, _, err) = kiln(&home, &ctx, &["lock", "--check", "."], &[]);
    assert!(!good, "{err}");
    // the old set's entry goes, the new one comes
    ok(&home, &ctx, &["lock", "."]);
    let lock = lock_of(&ctx);
    assert_eq!(lock["packages"].as_array().unwrap().len(), 1);
    assert!(
        lock["packages"][0]["debs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"].as_str() == Some("libzstd1"))
    );

    // a tampered lock: the download does not match, nothing is stored
    std::fs::write(ctx.join("Kilnfile"), SET).unwrap();
    ok(&home, &ctx, &["lock", "."]);
    let text = std::fs::read_to_string(ctx.join("Kilnfile.lock")).unwrap();
    let real = zlib["sha256"].as_str().unwrap();
    let fake = format!("sha256:{}", "0".repeat(64));
    std::fs::write(ctx.join("Kilnfile.lock"), text.replace(real, &fake)).unwrap();
    let fresh = dir.join("home-fresh");
    let (good, _, err) = kiln(&fresh, &ctx, &["build", "."], &[]);
    assert!(!good, "a .deb that does not match the lock was used");
    assert!(err.contains(&fake) || err.contains("0000000000"), "{err}");
    let (out, err) = ok(&fresh, &ctx, &["cache", "check"]);
    assert!(
        format!("{out}{err}").contains("the store is consistent"),
        "{out}{err}"
    );
}

#[test]
fn a_malformed_lock_is_an_error_at_its_line() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path();
    std::fs::write(ctx.join("Kilnfile"), "let app = static_base();\n").unwrap();
    std::fs::write(
        ctx.join("Kilnfile.lock"),
        "version = 1\n\n[[image]]\nreference = \"docker.io/library/x:1\"\ndigest = \"sha256:zz\"\n",
    )
    .unwrap();
    let home = ctx.join("home");
    for args in [&["build", "."][..], &["lock", "."]] {
        let (good, _, err) = kiln(&home, ctx, args, &[]);
        assert!(!good, "{args:?}");
        assert!(err.contains("Kilnfile.lock"), "{err}");
        assert!(err.contains("sha256:zz"), "{err}");
        assert!(err.contains("kiln lock"), "help names the fix: {err}");
    }
    // `--locked` without a lock says to write one
    std::fs::remove_file(ctx.join("Kilnfile.lock")).unwrap();
    let (good, _, err) = kiln(&home, ctx, &["build", "--locked", "."], &[]);
    assert!(!good);
    assert!(err.contains("needs `Kilnfile.lock`"), "{err}");
}
