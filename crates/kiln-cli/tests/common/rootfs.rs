//! Busybox root filesystems for `kiln import`: the host's busybox-static
//! and a chosen list of applets. Tests pin image digests made from these
//! trees, so a layout gives the same tree every time.

use std::path::Path;

/// A busybox-static tree: `bin/busybox`, a symlink `bin/APPLET -> busybox`
/// per applet, and optional directories (with modes) and files.
pub struct Busybox<'a> {
    applets: &'a [&'a str],
    dirs: Vec<(&'a str, Option<u32>)>,
    files: Vec<(&'a str, &'a str)>,
}

impl<'a> Busybox<'a> {
    /// `bin/` with busybox and `applets` only.
    pub fn new(applets: &'a [&'a str]) -> Self {
        Self {
            applets,
            dirs: Vec::new(),
            files: Vec::new(),
        }
    }

    /// An empty directory `path` (relative) with the umask's mode.
    pub fn dir(mut self, path: &'a str) -> Self {
        self.dirs.push((path, None));
        self
    }

    /// An empty directory `path` with `mode` (e.g. a sticky `tmp`).
    pub fn dir_mode(mut self, path: &'a str, mode: u32) -> Self {
        self.dirs.push((path, Some(mode)));
        self
    }

    /// A file `path` holding `text`; its parent directories are made.
    pub fn file(mut self, path: &'a str, text: &'a str) -> Self {
        self.files.push((path, text));
        self
    }

    /// Writes the tree at `root`, which must not hold it yet.
    pub fn write(&self, root: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(root.join("bin")).unwrap();
        for (d, mode) in &self.dirs {
            std::fs::create_dir_all(root.join(d)).unwrap();
            if let Some(mode) = mode {
                std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(*mode))
                    .unwrap();
            }
        }
        for (f, text) in &self.files {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for applet in self.applets {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }

    /// [`Busybox::write`] unless `root` exists already (several stores of
    /// one test import the same tree).
    pub fn write_once(&self, root: &Path) {
        if !root.exists() {
            self.write(root);
        }
    }

    /// Writes `dir/rootfs` (once) and imports it as `bb:1` into the store
    /// `home`, as root.
    pub fn import(&self, home: &Path, dir: &Path) {
        self.write_once(&dir.join("rootfs"));
        super::expect_ok(
            super::kiln_command(home, dir, &["import", "rootfs", "-t", "bb:1"])
                .output()
                .unwrap(),
            "kiln import",
        );
    }
}

/// `chown -R kilntest:kilntest PATH`: temp dirs made by root are 0700 and
/// rootless runs read and write them.
pub fn chown_kilntest(path: &Path) {
    let o = std::process::Command::new("chown")
        .args(["-R", "kilntest:kilntest"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `/etc/passwd` with root and Debian's `_apt` (uid 42, group nogroup).
pub const PASSWD_WITH_APT: &str =
    "root:x:0:0:root:/root:/bin/sh\n_apt:x:42:65534::/nonexistent:/bin/sh\n";

/// `/etc/group` for [`PASSWD_WITH_APT`].
pub const GROUP_WITH_NOGROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
