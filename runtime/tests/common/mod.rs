//! Test support: a busybox-static rootfs, a runner, and re-running a test as
//! an unprivileged user.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_runtime::{Outcome, Runtime, RuntimeError, SandboxSpec, Stream};

pub const INNER: &str = "KILN_TEST_INNER";

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn inner() -> bool {
    std::env::var_os(INNER).is_some()
}

/// Re-runs test `name` of this binary as `user` when we are root; CI runs
/// as root, so every sandbox test runs both ways.
pub fn rerun_as(user: &str, name: &str) {
    if !is_root() || inner() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={}", group_of(user)),
            "--init-groups",
            "--reset-env",
        ])
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .env("TMPDIR", "/tmp")
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

fn group_of(user: &str) -> String {
    let out = Command::new("id").args(["-g", user]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn runtime() -> Runtime {
    Runtime::new(env!("CARGO_BIN_EXE_kiln-runtime-helper"))
}

pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("kiln-rt-test")
        .tempdir()
        .unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A root filesystem made of Debian's busybox-static: /bin/busybox with a
/// link per applet, and minimal /etc/passwd and /etc/group.
pub fn busybox_rootfs(dir: &Path) {
    for d in [
        "bin",
        "etc",
        "tmp",
        "root",
        "home/nonroot",
        "dev",
        "proc",
        "var",
    ] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("busybox-static is installed (.ci/setup)");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" && !applet.is_empty() {
            symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
         nonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh\n\
         dev:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\nwheel:x:10:dev\nnogroup:x:65534:\nnonroot:x:65532:\ndev:x:1000:\n",
    )
    .unwrap();
    fs::write(dir.join("etc/motd"), "welcome\n").unwrap();
}

/// A test world: a busybox lower and a fresh upper, in a temp dir.
pub struct World {
    pub dir: tempfile::TempDir,
    pub lower: PathBuf,
    pub upper: PathBuf,
}

impl World {
    pub fn new() -> World {
        let dir = tempdir();
        let lower = dir.path().join("lower");
        let upper = dir.path().join("upper");
        busybox_rootfs(&lower);
        fs::create_dir(&upper).unwrap();
        World { dir, lower, upper }
    }

    pub fn spec(&self, script: &str) -> SandboxSpec {
        let mut s = SandboxSpec::new(
            &self.upper,
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        );
        s.lowers = vec![self.lower.clone()];
        s
    }
}

impl Drop for World {
    /// Unprivileged, the step's files owned by subordinate IDs cannot be
    /// removed from outside: remove them from inside a sandbox.
    fn drop(&mut self) {
        // the supervisors of this world's steps may still be removing their
        // state directories
        kiln_runtime::wait_for_cleanup();
        if is_root() {
            return;
        }
        let up = self.dir.path().join("cleanup-upper");
        if fs::create_dir(&up).is_err() {
            return;
        }
        let mut spec = SandboxSpec::new(
            &up,
            vec![
                "/bin/rm".into(),
                "-rf".into(),
                "/w/upper".into(),
                "/w/layer".into(),
            ],
        );
        spec.lowers = vec![self.lower.clone()];
        spec.mounts = vec![kiln_runtime::Mount {
            target: "/w".into(),
            kind: kiln_runtime::MountKind::Cache {
                source: self.dir.path().to_path_buf(),
            },
        }];
        let _ = runtime().run(&spec, &mut |_, _| {}, None);
        // and that step's state directory too, before the temp dir goes
        kiln_runtime::wait_for_cleanup();
    }
}

pub struct Ran {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(spec: &SandboxSpec) -> Result<Ran, RuntimeError> {
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let outcome = runtime().run(
        spec,
        &mut |s, b| match s {
            Stream::Stdout => o.extend_from_slice(b),
            Stream::Stderr => e.extend_from_slice(b),
        },
        None,
    )?;
    // the runtime returns before the supervisor removed the state
    // directory; once it has, nothing of the sandbox is left beside the upper
    kiln_runtime::wait_for_cleanup();
    let left = state_dirs(&spec.upper);
    assert!(left.is_empty(), "sandbox state left on disk: {left:?}");
    Ok(Ran {
        outcome,
        stdout: String::from_utf8_lossy(&o).into_owned(),
        stderr: String::from_utf8_lossy(&e).into_owned(),
    })
}

/// Sandbox state directories (`.kiln-sandbox-*`) beside `upper`.
pub fn state_dirs(upper: &Path) -> Vec<String> {
    let parent = upper.parent().unwrap();
    fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".kiln-sandbox-"))
        .collect()
}

/// The upper directory as a layer: (name, uid, gid, type, content) per entry.
pub fn layer_entries(upper: &Path, outcome: &Outcome) -> Vec<(String, u64, u64, char, String)> {
    let mut tar = Vec::new();
    kiln_layer::write_tar(
        upper,
        &mut tar,
        &kiln_layer::WriteOptions {
            overlay_whiteouts: true,
            id_map: Some(outcome.id_mapping.clone()),
            source_date_epoch: Some(0),
            xattrs: true,
        },
    )
    .unwrap();
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(&tar[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut content = String::new();
        std::io::Read::read_to_string(&mut e, &mut content).unwrap();
        out.push((
            e.path().unwrap().to_string_lossy().into_owned(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.entry_type().as_byte() as char,
            content,
        ));
    }
    out
}

/// A non-blocking TCP listener on `ip`, and its port.
pub fn listener(ip: std::net::IpAddr) -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    (l, port)
}

/// Accepts one connection in a thread (the step runs meanwhile) and returns
/// what it sent, or None when nothing connected within `wait`.
pub fn accept_in_background(
    l: std::net::TcpListener,
    wait: std::time::Duration,
) -> std::thread::JoinHandle<Option<String>> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until {
            if let Ok((mut s, _)) = l.accept() {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 5];
                let n = s.read(&mut buf).unwrap_or(0);
                let _ = s.write_all(b"pong\n");
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    })
}
