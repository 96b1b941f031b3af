//! A full disk is a clear error that says what to do, and the store stays
//! whole: the same build succeeds, with the reference digest, once there
//! is room. KILN_HOME and a cache destination on small ext4 filesystems
//! (loop devices, so as root, as CI runs), filled with a ballast file that
//! is removed to make room.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{expect_ok as ok, kiln_command as kiln};

/// An ext4 filesystem in a file, loop-mounted; unmounted when dropped.
struct LoopFs {
    mnt: PathBuf,
}

fn sh(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl LoopFs {
    fn new(dir: &Path, name: &str, mib: u64) -> LoopFs {
        let uid = Command::new("id").arg("-u").output().unwrap().stdout;
        assert_eq!(
            String::from_utf8_lossy(&uid).trim(),
            "0",
            "the full-disk tests mount loop devices: run them as root (CI does)"
        );
        let image = dir.join(format!("{name}.img"));
        let mnt = dir.join(name);
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt));
        LoopFs { mnt }
    }

    /// Fills the filesystem with a ballast file until `mib` MiB are left.
    fn leave(&self, mib: u64) -> PathBuf {
        let st = available(&self.mnt);
        let ballast = self.mnt.join("ballast");
        let size = st.saturating_sub(mib << 20);
        sh(Command::new("fallocate")
            .args(["-l", &size.to_string()])
            .arg(&ballast));
        ballast
    }
}

/// Bytes available to root on the filesystem of `path` (`df`).
fn available(path: &Path) -> u64 {
    let o = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// A context whose final image carries `mib` MiB of incompressible but
/// reproducible bytes.
fn context(dir: &Path, mib: usize) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(mib << 20);
    while data.len() < mib << 20 {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(ctx.join("blob.bin"), data).unwrap();
    std::fs::write(
        ctx.join("Kilnfile"),
        "let app = static_base().copy(context().path(\"blob.bin\"), \"/blob.bin\");\n",
    )
    .unwrap();
    ctx
}

fn run(home: &Path, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let o = kiln(home, dir, args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_disk_full(err: &str) {
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("help:") && err.contains("is full") && err.contains("KILN_HOME"),
        "no advice for a full disk:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

fn assert_consistent(home: &Path, dir: &Path) {
    let (okay, _, err) = run(home, dir, &["cache", "check"]);
    assert!(okay && err.contains("the store is consistent"), "{err}");
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_next_build_with_room_matches() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let ctx = context(dir, 20);
    let ctx_s = ctx.to_str().unwrap();
    let reference = ok(
        kiln(&dir.join("home-ref"), dir, &["build", ctx_s])
            .output()
            .unwrap(),
        "reference build",
    );

    // 30 MiB left cannot hold the copied 20 MiB and its 20 MiB layer blob
    let fs = LoopFs::new(dir, "small", 96);
    let ballast = fs.leave(30);
    let home = fs.mnt.join("home");
    let (okay, _, err) = run(&home, dir, &["build", ctx_s, "--progress", "plain"]);
    assert!(!okay, "the build fit in 40 MiB:\n{err}");
    assert_disk_full(&err);
    assert_consistent(&home, dir);

    // with room made, the same store builds the same image
    std::fs::remove_file(&ballast).unwrap();
    let (okay, digest, err) = run(&home, dir, &["build", ctx_s, "-t", "app:1"]);
    assert!(okay, "{err}");
    assert_eq!(digest, reference);
    assert_consistent(&home, dir);

    // a cache export to a full destination fails the same way and leaves
    // the store whole; exported elsewhere, the cache serves a fresh store
    let dest = LoopFs::new(dir, "dest", 16);
    let to = format!("type=local,dest={}", dest.mnt.join("cache").display());
    let (okay, _, err) = run(&home, dir, &["build", ctx_s, "--cache-to", &to]);
    assert!(!okay, "the cache fit in 16 MiB:\n{err}");
    assert_disk_full(&err);
    assert_consistent(&home, dir);
    // what the failed export left is not a cache a build would trust
    let from_full = format!("type=local,src={}", dest.mnt.join("cache").display());
    let (okay, digest, err) = run(
        &dir.join("home-from-full"),
        dir,
        &["build", ctx_s, "--cache-from", &from_full],
    );
    assert!(okay, "{err}");
    assert_eq!(digest, reference);

    let cache = dir.join("cache");
    let to = format!("type=local,dest={}", cache.display());
    let (okay, _, err) = run(&home, dir, &["build", ctx_s, "--cache-to", &to]);
    assert!(okay, "{err}");
    let from = format!("type=local,src={}", cache.display());
    let (okay, digest, err) = run(
        &dir.join("home-fresh"),
        dir,
        &["build", ctx_s, "--progress", "plain", "--cache-from", &from],
    );
    assert!(okay, "{err}");
    assert_eq!(digest, reference);
    assert!(
        err.contains("copy context:/blob.bin -> /blob.bin CACHED"),
        "{err}"
    );
}
