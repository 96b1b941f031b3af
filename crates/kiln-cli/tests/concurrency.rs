//! Several kiln processes on one store at once (issue 6, "Crashes and
//! concurrency"): the same build and different ones, all at the same time,
//! all succeed with the digests a build on a store of its own gives.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

mod common;

use common::{Busybox, expect_ok as ok, kiln_command as kiln};

/// A busybox rootfs imported as `bb:1` into `home`.
fn busybox_image(home: &Path, dir: &Path) {
    Busybox::new(&["sh", "echo", "cat", "sleep", "seq"])
        .dir("tmp")
        .import(home, dir);
}

/// Two builds sharing their base and first step, differing after it.
fn contexts(dir: &Path) -> Vec<PathBuf> {
    ["one", "two"]
        .iter()
        .map(|name| {
            let ctx = dir.join(format!("ctx-{name}"));
            std::fs::create_dir_all(&ctx).unwrap();
            std::fs::write(ctx.join("input.txt"), format!("input {name}\n")).unwrap();
            std::fs::write(
                ctx.join("Kilnfile"),
                format!(
                    r#"
let common = image("bb:1").run("seq 1 2000 > /numbers && sleep 0.3");
let build = common
    .copy(context().path("input.txt"), "/input.txt")
    .run("cat /input.txt /numbers > /out-{name} && sleep 0.2");
let app = static_base().copy(build.path("/out-{name}"), "/out");
"#
                ),
            )
            .unwrap();
            ctx
        })
        .collect()
}

#[test]
fn four_builds_at_once_on_one_store() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let ctxs = contexts(dir);

    // reference digests, each from a store of its own
    let mut reference = Vec::new();
    for (i, ctx) in ctxs.iter().enumerate() {
        let home = dir.join(format!("ref-home-{i}"));
        busybox_image(&home, dir);
        let out = kiln(&home, dir, &["build", ctx.to_str().unwrap()])
            .output()
            .unwrap();
        reference.push(ok(out, "reference build"));
    }
    assert_ne!(reference[0], reference[1]);

    // four at once on one fresh store: each context twice
    let shared = dir.join("shared-home");
    busybox_image(&shared, dir);
    let children: Vec<(usize, Child)> = [0usize, 1, 0, 1]
        .iter()
        .map(|&i| {
            let c = kiln(&shared, dir, &["build", ctxs[i].to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (i, c)
        })
        .collect();
    for (i, c) in children {
        let got = ok(c.wait_with_output().unwrap(), "a concurrent build");
        assert_eq!(
            got, reference[i],
            "build of context {i} gave another digest"
        );
    }

    // and the store they shared is whole: a rebuild is all cache hits
    for (i, ctx) in ctxs.iter().enumerate() {
        let o = kiln(
            &shared,
            dir,
            &["build", ctx.to_str().unwrap(), "--progress", "plain"],
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(ok(o, "the rebuild"), reference[i]);
        let steps: Vec<&str> = err.lines().filter(|l| l.starts_with("=> ")).collect();
        assert!(!steps.is_empty(), "{err}");
        assert!(
            steps.iter().all(|l| l.ends_with(" CACHED")),
            "a rebuild after the concurrent builds re-ran something:\n{err}"
        );
    }
}
