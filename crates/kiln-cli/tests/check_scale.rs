//! `kiln check` stays linear in memory on long chains of configuration
//! calls (issue #13 item 6): 8,000 `.env` bindings took 3.5 GB, 65,535 were
//! killed at 24 GB, because every binding held its own copy of the whole
//! env and label lists. A resource assertion, not a timing one.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Runs `kiln check` in `dir` and returns (exit code, stderr, peak RSS in
/// KiB) of that child alone, from wait4's rusage.
fn check_rss(dir: &Path) -> (i32, String, i64) {
    let err = dir.join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("check")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain syscall on our own child with valid out-pointers; the
    // std handle is not waited afterwards.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    (code, std::fs::read_to_string(err).unwrap(), usage.ru_maxrss)
}

const CALLS: usize = 65_535;
const LIMIT_KIB: i64 = 500 * 1024;

#[test]
fn a_65535_binding_env_and_label_chain_checks_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = String::from("let e0 = image(\"docker.io/library/debian:bookworm\");\n");
    for i in 1..CALLS {
        let call = if i % 2 == 0 { "env" } else { "label" };
        src.push_str(&format!("let e{i} = e{}.{call}(\"K{i}\", \"v\");\n", i - 1));
    }
    std::fs::write(tmp.path().join("Kilnfile"), &src).unwrap();
    let (code, err, rss) = check_rss(tmp.path());
    assert_eq!(code, 0, "{err}");
    eprintln!("{CALLS} bindings, {} bytes: peak RSS {rss} KiB", src.len());
    assert!(rss < LIMIT_KIB, "peak RSS {rss} KiB for {CALLS} bindings");
}

#[test]
fn a_65535_call_chain_in_one_binding_checks_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = String::from("let app = image(\"docker.io/library/debian:bookworm\")\n");
    for i in 0..CALLS {
        let call = if i % 2 == 0 { "env" } else { "label" };
        src.push_str(&format!("    .{call}(\"K{i}\", \"v{i}\")\n"));
    }
    src.push_str("    .run(\"env\");\n");
    std::fs::write(tmp.path().join("Kilnfile"), &src).unwrap();
    let (code, err, rss) = check_rss(tmp.path());
    assert_eq!(code, 0, "{err}");
    eprintln!("{CALLS} calls, {} bytes: peak RSS {rss} KiB", src.len());
    assert!(rss < LIMIT_KIB, "peak RSS {rss} KiB for {CALLS} calls");
}
