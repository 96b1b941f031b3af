//! Dockerfile conformance, side by side with BuildKit v0.32.2: every
//! `tests/dockerfiles/*/Dockerfile` is built from the same context by
//! `kiln build` and by `buildctl build --frontend dockerfile.v0`, and the
//! two images are compared as a runtime sees them: every path of the final
//! root filesystem with its type, mode, owner, size, content digest and
//! link target, and the config fields `Env`, `Entrypoint`, `Cmd`,
//! `WorkingDir`, `User`, `ExposedPorts`, `Labels`, `Volumes`, `StopSignal`
//! and `Healthcheck`. Timestamps and history are not compared
//! (docs/dockerfile.md says why).
//!
//! A first line `# test: FLAGS` passes `--target T`, `--build-arg K=V`,
//! `--secret ID` (a file with a fixed text) and `--ssh ID` (an
//! `ssh-agent` the test starts) to both builders. A line
//! `# known-difference: TEXT` accepts the difference lines containing TEXT
//! (each is documented in docs/dockerfile.md); one that no longer occurs
//! fails the test, so the list only shrinks. Bases come
//! from a loopback registry that both builders use as docker.io's mirror:
//! the debootstrapped Debian builder as `library/debian:bookworm`.
//!
//! `KILN_CONFORMANCE_CASES=47-,36-` runs only the cases whose names contain
//! one of the parts.
//!
//! Needs root (BuildKit's runc worker, debootstrap); as another user it
//! says so and returns.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Registry;
use common::buildkit::Buildkitd;
use common::oci::{ImageView, read_oci_archive};

const SECRET_TEXT: &str = "s3cr3t-token-value";

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A child process killed (by its pid) and reaped when dropped.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfiles");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    v.sort();
    v
}

/// The flags of a `# test:` first line.
#[derive(Default)]
struct Flags {
    target: Option<String>,
    build_args: Vec<String>,
    secrets: Vec<String>,
    ssh: Vec<String>,
}

fn flags(dockerfile: &str) -> Flags {
    let mut f = Flags::default();
    let Some(line) = dockerfile
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# test:"))
    else {
        return f;
    };
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        let v = words.next().expect("flag value").to_string();
        match w {
            "--target" => f.target = Some(v),
            "--build-arg" => f.build_args.push(v),
            "--secret" => f.secrets.push(v),
            "--ssh" => f.ssh.push(v),
            other => panic!("unknown test flag {other}"),
        }
    }
    f
}

/// The config fields compared, with absent, null and empty alike.
fn config_fields(img: &ImageView) -> BTreeMap<&'static str, serde_json::Value> {
    let c = &img.config["config"];
    let mut out = BTreeMap::new();
    for k in [
        "Env",
        "Entrypoint",
        "Cmd",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Labels",
        "Volumes",
        "StopSignal",
        "Healthcheck",
    ] {
        let v = c.get(k).cloned().unwrap_or(serde_json::Value::Null);
        let empty = match &v {
            serde_json::Value::Null => true,
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            _ => false,
        };
        out.insert(k, if empty { serde_json::Value::Null } else { v });
    }
    out
}

/// What differs between kiln's image and BuildKit's, one line each.
fn differences(kiln: &ImageView, bk: &ImageView) -> Vec<String> {
    let mut out = Vec::new();
    let (kc, bc) = (config_fields(kiln), config_fields(bk));
    for (k, kv) in &kc {
        if bc[k] != *kv {
            out.push(format!("config {k}: kiln {kv} / buildkit {}", bc[k]));
        }
    }
    for (p, e) in &kiln.files {
        match bk.files.get(p) {
            None => out.push(format!("only kiln has /{p} ({e})")),
            Some(b) if b != e => out.push(format!("/{p}: kiln {e} / buildkit {b}")),
            Some(_) => {}
        }
    }
    for (p, e) in &bk.files {
        if !kiln.files.contains_key(p) {
            out.push(format!("only buildkit has /{p} ({e})"));
        }
    }
    out
}

#[test]
fn dockerfiles_build_like_buildkit() {
    if !is_root() {
        eprintln!("skipped: BuildKit's runc worker needs root (CI runs this as root)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    common::serve_debian_builder(&reg, work.path());
    let bk = Buildkitd::start(&reg.addr);
    let home = work.path().join("kiln-home");
    let secret = work.path().join("secret.txt");
    std::fs::write(&secret, SECRET_TEXT).unwrap();

    // the agent `--ssh` cases forward, ended by its pid when the test ends
    let agent_sock = work.path().join("agent.sock");
    let agent = Agent(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_sock)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client, .ci/setup)"),
    );
    for _ in 0..200 {
        if agent_sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let mut failures = Vec::new();
    let mut all = cases();
    assert!(all.len() >= 40, "the corpus holds {} cases", all.len());
    // `KILN_CONFORMANCE_CASES=47-,36-` runs the cases whose names contain
    // one of the comma-separated parts (for iterating on a few)
    if let Ok(only) = std::env::var("KILN_CONFORMANCE_CASES") {
        let parts: Vec<&str> = only.split(',').filter(|p| !p.is_empty()).collect();
        all.retain(|c| {
            let n = c.file_name().unwrap().to_string_lossy();
            parts.iter().any(|p| n.contains(p))
        });
        assert!(!all.is_empty(), "no case matches `{only}`");
    }
    for case in &all {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let f = flags(&text);
        let out = work.path().join(&name);
        std::fs::create_dir_all(&out).unwrap();
        let (kiln_tar, bk_tar) = (out.join("kiln.tar"), out.join("buildkit.tar"));

        let mut k = Command::new(env!("CARGO_BIN_EXE_kiln"));
        k.arg("build")
            .arg("--registry-mirror")
            .arg(format!("docker.io={}", reg.addr))
            .args(["--progress", "plain"])
            .arg("-o")
            .arg(format!("type=oci,dest={}", kiln_tar.display()))
            .env("KILN_HOME", &home)
            .env("NO_COLOR", "1")
            .env_remove("KILN_REGISTRY_MIRROR")
            .env_remove("SOURCE_DATE_EPOCH");
        let mut extra = Vec::new();
        if let Some(t) = &f.target {
            k.args(["--target", t]);
            extra.push(format!("--opt=target={t}"));
        }
        for a in &f.build_args {
            k.args(["--build-arg", a]);
            extra.push(format!("--opt=build-arg:{a}"));
        }
        for s in &f.secrets {
            let spec = format!("id={s},src={}", secret.display());
            k.args(["--secret", &spec]);
            extra.push(format!("--secret={spec}"));
        }
        for s in &f.ssh {
            let spec = format!("{s}={}", agent_sock.display());
            k.args(["--ssh", &spec]);
            extra.push(format!("--ssh={spec}"));
        }
        k.arg(case);
        let ko = k.output().unwrap();
        if !ko.status.success() {
            failures.push(format!(
                "{name}: kiln build failed:\n{}",
                String::from_utf8_lossy(&ko.stderr)
            ));
            continue;
        }
        let bo = bk.build_dockerfile(case, &bk_tar, &extra);
        if !bo.status.success() {
            failures.push(format!(
                "{name}: buildctl build failed:\n{}",
                String::from_utf8_lossy(&bo.stderr)
            ));
            continue;
        }
        let (ki, bi) = (read_oci_archive(&kiln_tar), read_oci_archive(&bk_tar));
        let known: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# known-difference:"))
            .map(str::trim)
            .collect();
        let diffs = differences(&ki, &bi);
        for k in &known {
            if !diffs.iter().any(|d| d.contains(k)) {
                failures.push(format!(
                    "{name}: the known difference `{k}` is gone: drop it"
                ));
            }
        }
        let unknown: Vec<&String> = diffs
            .iter()
            .filter(|d| !known.iter().any(|k| d.contains(k)))
            .collect();
        if !unknown.is_empty() {
            let lines: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
            failures.push(format!("{name}:\n  {}", lines.join("\n  ")));
        }
        // A secret never reaches an image as a file of its own.
        let secret_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(SECRET_TEXT));
        assert!(
            !ki.files.values().any(|e| e.digest == secret_digest),
            "{name}: the secret reached kiln's image"
        );
    }
    drop(agent);
    assert!(
        failures.is_empty(),
        "{} of {} Dockerfiles differ from BuildKit:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}
