//! Crash safety (issue 6): builds, cache exports and prunes SIGKILLed at
//! random moments on one store never leave it, or the exported cache,
//! inconsistent. Afterwards `kiln cache check`
//! finds nothing to drop but temp leftovers, and a build gives the digest a
//! build on a store of its own gives.
//!
//! The moments come from a seeded generator; the seed and the number of
//! kills are printed, and `KILN_CHAOS_SEED=<seed>` replays a run
//! (`KILN_CHAOS_ROUNDS` changes how many).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Busybox, expect_ok as ok, kiln_command as kiln};

/// splitmix64: a seeded sequence, enough to pick kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn busybox_image(home: &Path, dir: &Path) {
    Busybox::new(&["sh", "seq", "cat", "sleep", "mkdir"])
        .dir("tmp")
        .import(home, dir);
}

/// A build with every kind of step: context copy, run steps in two stages,
/// a cache mount, a copy out of another stage onto the static base.
fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    for i in 0..20 {
        std::fs::write(
            ctx.join(format!("src/f{i}.txt")),
            format!("file {i}\n").repeat(50),
        )
        .unwrap();
    }
    std::fs::write(
        ctx.join("Kilnfile"),
        r#"
let deps = image("bb:1").run("seq 1 20000 > /deps && sleep 0.2");
let build = deps
    .copy(context().path("src"), "/src")
    .run("cat /src/*.txt /deps > /out && seq 1 100 > /cache/seen && sleep 0.2",
         [cache("/cache").id("chaos")]);
let app = static_base()
    .copy(build.path("/out"), "/out")
    .copy(context().path("src/f1.txt"), "/f1.txt");
"#,
    )
    .unwrap();
    ctx
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// SIGKILL (what `Child::kill` sends on Unix): no destructor, no cleanup,
/// like the OOM killer or a cancelled CI job.
fn kill(child: &mut std::process::Child) {
    let _ = child.kill();
}

#[test]
fn sigkilled_builds_and_prunes_leave_the_store_consistent() {
    let seed: u64 = std::env::var("KILN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let rounds: usize = std::env::var("KILN_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    println!("chaos: seed {seed}, {rounds} rounds (replay with KILN_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);

    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let ctx = context(dir);
    let ctx_s = ctx.to_str().unwrap();

    let ref_home = dir.join("ref-home");
    busybox_image(&ref_home, dir);
    let t0 = Instant::now();
    let reference = ok(
        kiln(&ref_home, dir, &["build", ctx_s]).output().unwrap(),
        "the reference build",
    );
    let full = t0.elapsed();
    let t0 = Instant::now();
    ok(
        kiln(&ref_home, dir, &["cache", "prune"]).output().unwrap(),
        "a prune of the reference store",
    );
    let prune_time = t0.elapsed();
    std::fs::remove_dir_all(&ref_home).unwrap();

    let home = dir.join("home");
    busybox_image(&home, dir);
    let cache = dir.join("cache");
    let cache_to = format!("type=local,dest={},mode=max", cache.display());
    let mut kills = 0;
    for round in 0..rounds {
        // every third round kills a prune of a full cache; the others a
        // build, half of them on an emptied cache so that the kill lands
        // while steps run, the rest on what the killed rounds left
        let pruning = round % 3 == 2;
        // half the builds also export their cache, so kills land in
        // exports too
        let mut build: Vec<&str> = vec!["build", ctx_s];
        if rng.below(2) == 0 {
            build.extend(["--cache-to", &cache_to]);
        }
        let (before, args, span): (Option<Vec<&str>>, Vec<&str>, Duration) = if pruning {
            (
                Some(vec!["build", ctx_s]),
                vec!["cache", "prune"],
                prune_time,
            )
        } else if rng.below(2) == 0 {
            (Some(vec!["cache", "prune"]), build, full)
        } else {
            (None, build, full)
        };
        if let Some(b) = &before {
            ok(kiln(&home, dir, b).output().unwrap(), &b.join(" "));
        }
        let at = Duration::from_millis(rng.below(span.as_millis() as u64 * 11 / 10 + 1));
        let mut child = kiln(&home, dir, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let killed = child.try_wait().unwrap().is_none();
        if killed {
            kill(&mut child);
            kills += 1;
        }
        let status = child.wait().unwrap();
        println!(
            "chaos: round {round}: `kiln {}` {} after {at:?}",
            args.join(" ")
                .replace(ctx_s, "ctx")
                .replace(&cache_to, "CACHE"),
            if killed {
                "SIGKILLed".to_string()
            } else {
                format!("finished first ({status})")
            }
        );
        // A killed build's sandbox children die with it (PDEATHSIG); give
        // them a moment to go before the next round.
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("chaos: {kills} of {rounds} processes killed");

    // The store is consistent: check drops no blob, record or name (it
    // only removes the killed processes' temp leftovers).
    let o = kiln(&home, dir, &["cache", "check"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    println!("chaos: kiln cache check:\n{err}");
    assert!(o.status.success(), "kiln cache check failed:\n{err}");
    assert!(
        !err.lines()
            .any(|l| l.starts_with("blob ") || l.starts_with("record ") || l.starts_with("image ")),
        "the killed processes left broken data (seed {seed}):\n{err}"
    );

    let got = ok(
        kiln(&home, dir, &["build", ctx_s]).output().unwrap(),
        "the build after the chaos",
    );
    assert_eq!(got, reference, "seed {seed}");

    // The exported cache (if an export got that far) is whole: every blob
    // its index names is there with the right bytes, and a fresh store
    // builds the reference from it.
    if cache.join("index.json").exists() {
        let index = json(&cache.join("index.json"));
        let m = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let manifest = json(&blob(&cache, &m));
        let mut names = vec![
            m,
            manifest["config"]["digest"].as_str().unwrap().to_string(),
        ];
        for l in manifest["layers"].as_array().unwrap() {
            names.push(l["digest"].as_str().unwrap().to_string());
        }
        for d in &names {
            let o = Command::new("sha256sum")
                .arg(blob(&cache, d))
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success() && out.starts_with(d.strip_prefix("sha256:").unwrap()),
                "cache blob {d} is missing or damaged (seed {seed}): {out}"
            );
        }
        let fresh = dir.join("fresh-home");
        busybox_image(&fresh, dir);
        let from = format!("type=local,src={}", cache.display());
        let got = ok(
            kiln(&fresh, dir, &["build", ctx_s, "--cache-from", &from])
                .output()
                .unwrap(),
            "a build from the exported cache",
        );
        assert_eq!(got, reference, "seed {seed}");
        println!("chaos: the exported cache ({} blobs) is whole", names.len());
    }
    let o = kiln(&home, dir, &["cache", "check"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success() && err.contains("the store is consistent"),
        "{err}"
    );
}
