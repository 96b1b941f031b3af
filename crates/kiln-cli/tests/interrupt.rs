//! Ctrl-C during a build (issue 5, the solver): kiln stops, the running
//! step's sandbox dies with every process in it, and the store stays usable.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Busybox, expect_ok as ok, kiln_command as kiln};

/// Pids of processes whose command line contains `token`.
fn processes_with(token: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(token)
        {
            out.push(name);
        }
    }
    out
}

fn busybox_image(home: &Path, dir: &Path) {
    Busybox::new(&["sh", "sleep", "echo"])
        .dir("tmp")
        .import(home, dir);
}

#[test]
fn ctrl_c_stops_the_build_and_kills_its_steps() {
    let t = tempfile::tempdir().unwrap();
    let (dir, home) = (t.path(), t.path().join("home"));
    busybox_image(&home, dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    // a token no other process has, to find the step's processes by
    let token = format!("kiln-interrupt-{}", std::process::id());
    std::fs::write(
        ctx.join("Kilnfile"),
        format!(
            "let s = image(\"bb:1\").run(\"echo {token} && sleep 300 && echo {token}-done > /out\");\n\
             let app = static_base().copy(s.path(\"/out\"), \"/out\");\n"
        ),
    )
    .unwrap();
    let mut child = kiln(&home, dir, &["build", "ctx", "--progress", "plain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !processes_with(&format!("sleep 300 && echo {token}"))
        .iter()
        .any(|p| *p != child.id().to_string())
    {
        assert!(
            Instant::now() < deadline,
            "the step never started; kiln's stderr: {:?}",
            child.try_wait()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!processes_with(&token).is_empty());
    // what the terminal sends on Ctrl-C
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "an interrupted build succeeded:\n{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "an interrupted build printed a digest"
    );
    // the kernel reaps a killed pid namespace right after its init: allow
    // it a moment, but no more
    let gone_by = Instant::now() + Duration::from_secs(5);
    while !processes_with(&token).is_empty() && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        processes_with(&token).is_empty(),
        "the step's processes outlived kiln:\n{err}"
    );

    // the store is whole: the same build, with the step made quick, works
    std::fs::write(
        ctx.join("Kilnfile"),
        format!(
            "let s = image(\"bb:1\").run(\"echo {token}-done > /out\");\n\
             let app = static_base().copy(s.path(\"/out\"), \"/out\");\n"
        ),
    )
    .unwrap();
    let digest = ok(
        kiln(&home, dir, &["build", "ctx"]).output().unwrap(),
        "the build after the interrupted one",
    );
    assert!(digest.starts_with("sha256:"), "{digest}");
}
