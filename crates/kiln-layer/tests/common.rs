//! Shared test helpers: run a test's body again as an unprivileged user.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub const INNER: &str = "KILN_TEST_INNER";

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn inner() -> bool {
    std::env::var_os(INNER).is_some()
}

/// Re-runs the test `name` of this test binary as `user` (when we are
/// root), failing when it fails. CI runs as root, so every test also runs
/// unprivileged this way.
pub fn rerun_as(user: &str, name: &str) {
    if !is_root() || inner() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            "--reset-env",
        ])
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .current_dir("/")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "test {name} as {user} failed:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "test {name} as {user} did not run:\n{text}"
    );
}

/// A temp dir the unprivileged user can use too.
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("kiln-layer-test")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    d
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap();
}
