//! The store is private to its owner: the layers root's builds extract
//! under `KILN_HOME` keep their images' set-ID files, which no other local
//! user may reach. End to end with the real binary as root; the other user
//! is `kilntest` (made by `.ci/setup`).

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Busybox;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// `runuser -u kilntest -- ARGS`: (succeeded, stderr).
fn as_kilntest(args: &[&str]) -> (bool, String) {
    let o = Command::new("runuser")
        .args(["-u", "kilntest", "--"])
        .args(args)
        .output()
        .expect("run runuser");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Set-user-ID files under `dir`, without following symlinks.
fn setuid_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && m.mode() & 0o4000 != 0 {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn other_users_cannot_reach_into_roots_store() {
    // SAFETY: geteuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (the store of root against kilntest)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // everything above the store open to all: only its own mode guards it
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    Busybox::new(&["sh", "echo"]).write(&dir.join("rootfs"));
    // a set-uid copy of busybox in the image, as `su` or `passwd` would be
    let suid = dir.join("rootfs/bin/suid-busybox");
    std::fs::copy(dir.join("rootfs/bin/busybox"), &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir(dir.join("ctx")).unwrap();
    std::fs::write(
        dir.join("ctx/Kilnfile"),
        "let app = image(\"bb:1\").run(\"echo hi > /hi\");\n",
    )
    .unwrap();

    // a store an older kiln made 0755
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = common::kiln_command(&home, dir, &["import", "rootfs", "-t", "bb:1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("was open to other users (mode 755); made it 700"),
        "no note about the tightened store:\n{err}"
    );
    assert_eq!(mode(&home), 0o700);
    let (_, err) = common::ok_in(dir, &["build", "ctx"]);
    assert!(!err.contains("open to other users"), "said twice:\n{err}");

    // the build extracted the image's layer, set-uid file included
    let snapshots = home.join("snapshots");
    let suids = setuid_files(&snapshots);
    assert!(
        !suids.is_empty(),
        "no set-uid file extracted under {snapshots:?}"
    );

    let h = home.display().to_string();
    for args in [
        vec!["ls", &format!("{h}/snapshots")],
        vec!["ls", &h],
        vec!["cat", &format!("{h}/tags.json")],
        vec![suids[0].to_str().unwrap(), "true"],
    ] {
        let (ok, err) = as_kilntest(&args);
        assert!(!ok, "kilntest ran {args:?}");
        assert!(err.contains("Permission denied"), "{args:?}: {err}");
    }
    // the parent is open: it is the store's mode that refuses
    let (ok, err) = as_kilntest(&["ls", &dir.display().to_string()]);
    assert!(ok, "{err}");
}
