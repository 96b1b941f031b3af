//! Helpers shared by the peer tests: temp stores, peer tools, podman setup.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_oci::Store;

pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs a peer tool and fails the test with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run .ci/setup)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// podman with its own storage and the containers.conf PEERS.md asks for
/// (runc, cgroupfs), so tests never touch the machine's podman state.
pub struct Podman {
    pub dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Self { dir }
    }

    pub fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--storage-driver")
            .arg("vfs");
        c
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Images of this private storage only (`system reset` would also
        // touch machine-wide network configs); the temp dir goes after.
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
    }
}

/// `(mode, uid, gid, kind)` of every path under `root`, sorted, as text.
pub fn tree_listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if ft.is_symlink() {
                format!("symlink->{}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                format!("file size={} nlink={}", m.len(), m.nlink())
            } else {
                format!("special rdev={:x}", m.rdev())
            };
            out.push(format!(
                "{rel} {:o} {}:{} {kind}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ));
        }
    }
    out.sort();
    out
}
