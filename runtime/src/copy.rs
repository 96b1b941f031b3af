//! The copying snapshot driver, the last resort when neither kernel
//! overlayfs nor fuse-overlayfs can mount (old kernels, no /dev/fuse in a
//! container, seccomp profiles that deny mount of either).
//!
//! Before the step, the supervisor (root of the user namespace, so ownership
//! is kept even rootless) merges the lower directories into a plain directory
//! and remembers every entry's inode and ctime. After the step it compares:
//! the kernel updates ctime on every content or metadata change and nobody
//! can set it back (inode(7), "Last status change timestamp"), and a file
//! replaced by rename has a new inode, so a changed (ino, ctime) pair is
//! exactly "touched by the step". Changed and new entries are moved (not
//! copied) into the upper directory, deleted ones become 0/0 character device
//! whiteouts and replaced directories get `user.overlay.opaque`: the same
//! overlay form the kernel driver leaves, so kiln-layer writes the same layer.
//!
//! Hard links inside a lower are copied as separate files.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

use kiln_layer::{EntryClass, Facts};

/// An error with the path and the operation it failed at.
fn ctx(what: &str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let msg = format!("{what} `{}`", path.display());
    move |e| io::Error::new(e.kind(), format!("{msg}: {e}"))
}

fn errno(what: &str, path: &Path) -> impl FnOnce(rustix::io::Errno) -> io::Error {
    let f = ctx(what, path);
    move |e| f(e.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    ctime: (i64, i64),
    /// birth time (statx), where the filesystem has one: an entry removed
    /// and made anew may get the same inode number back, but not the same
    /// birth time once the clock moved on (`settle_clock`)
    born: Option<std::time::SystemTime>,
    is_dir: bool,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
            born: m.created().ok(),
            is_dir: m.is_dir(),
        }
    }

    /// The same inode as recorded (not a new one with a reused number).
    fn same_inode(&self, m: &fs::Metadata) -> bool {
        self.ino == m.ino() && self.born == m.created().ok()
    }
}

/// Every entry of the merged tree as it was before the step.
#[derive(Debug, Default)]
pub struct Manifest {
    entries: HashMap<PathBuf, Stamp>,
}

fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            // filesystems without xattr support have none to copy
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(errno("list the xattrs of", path)(e)),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut val = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name, &mut val[..]) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => val.resize(val.len() * 4, 0),
                // removed meanwhile, or not readable here: nothing to keep
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(errno("read an xattr of", path)(e)),
            }
        };
        if len != usize::MAX {
            val.truncate(len);
            out.push((name.to_vec(), val));
        }
    }
    Ok(out)
}

fn classify(m: &fs::Metadata, xattrs: &[(Vec<u8>, Vec<u8>)]) -> EntryClass {
    let rdev = m.rdev();
    kiln_layer::classify(&Facts {
        is_dir: m.is_dir(),
        is_file: m.is_file(),
        is_char_device: m.file_type().is_char_device(),
        rdev_major: rustix::fs::major(rdev),
        rdev_minor: rustix::fs::minor(rdev),
        size: m.len(),
        xattrs,
    })
}

/// Owner, mode, the xattrs a layer keeps, and the times of `src` onto `dst`
/// (a non-directory or a directory whose children are final).
fn copy_meta(src_meta: &fs::Metadata, xattrs: &[(Vec<u8>, Vec<u8>)], dst: &Path) -> io::Result<()> {
    let is_link = src_meta.file_type().is_symlink();
    std::os::unix::fs::lchown(dst, Some(src_meta.uid()), Some(src_meta.gid()))
        .map_err(ctx("set the owner of", dst))?;
    if !is_link {
        // after chown, which clears set-id bits (chown(2))
        rustix::fs::chmod(dst, Mode::from_raw_mode(src_meta.mode() & 0o7777))
            .map_err(errno("set the mode of", dst))?;
    }
    for (name, value) in xattrs {
        if !kiln_layer::keep_xattr(name) {
            continue;
        }
        match rustix::fs::lsetxattr(dst, &name[..], value, XattrFlags::empty()) {
            Ok(()) => {}
            // e.g. security.* without the privilege for it: the layer
            // writer would drop it the same way
            Err(rustix::io::Errno::PERM | rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(errno("set an xattr of", dst)(e)),
        }
    }
    set_times(src_meta, dst)
}

fn set_times(m: &fs::Metadata, dst: &Path) -> io::Result<()> {
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, dst, &ts, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno("set the times of", dst))
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(ctx("remove", p)),
        Ok(_) => fs::remove_file(p).map_err(ctx("remove", p)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ctx("inspect", p)(e)),
    }
}

/// Copies one non-directory entry `src` to the fresh path `dst`.
fn copy_entry(src: &Path, m: &fs::Metadata, dst: &Path) -> io::Result<bool> {
    let ft = m.file_type();
    if ft.is_file() {
        let mut from = fs::File::open(src).map_err(ctx("open", src))?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(ctx("create", dst))?;
        // a reflink where the filesystem can (btrfs, xfs), else std's copy,
        // which uses copy_file_range(2) between files
        if rustix::fs::ioctl_ficlone(&to, &from).is_err() {
            io::copy(&mut from, &mut to).map_err(ctx("copy", src))?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(ctx("read the link", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(ctx("create the link", dst))?;
    } else {
        let kind = if ft.is_char_device() {
            FileType::CharacterDevice
        } else if ft.is_block_device() {
            FileType::BlockDevice
        } else if ft.is_fifo() {
            FileType::Fifo
        } else {
            FileType::Socket
        };
        match rustix::fs::mknodat(
            CWD,
            dst,
            kind,
            Mode::from_raw_mode(m.mode() & 0o7777),
            m.rdev(),
        ) {
            Ok(()) => {}
            // device nodes need CAP_MKNOD in the initial namespace; a
            // rootless sandbox goes without them, as the layer apply does
            Err(rustix::io::Errno::PERM) => return Ok(false),
            Err(e) => return Err(errno("create the node", dst)(e)),
        }
    }
    Ok(true)
}

/// Merges `lowers_top_first` (overlay form) into the empty directory `dest`
/// and returns what it holds.
pub fn populate(lowers_top_first: &[PathBuf], dest: &Path) -> io::Result<Manifest> {
    // the metadata of each directory comes from the topmost lower holding it
    // and is set once all children are in place (they change its mtime)
    let mut dir_meta: HashMap<PathBuf, PathBuf> = HashMap::new();
    for lower in lowers_top_first.iter().rev() {
        merge_dir(lower, lower, dest, &mut dir_meta)?;
    }
    let mut dirs: Vec<(PathBuf, PathBuf)> = dir_meta.into_iter().collect();
    // deepest first, so a parent's times are set after its children's
    dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
    for (rel, src) in dirs {
        let dst = dest.join(&rel);
        if !dst.is_dir() {
            continue; // removed again by a higher lower
        }
        let m = fs::symlink_metadata(&src).map_err(ctx("inspect", &src))?;
        let xa = xattrs(&src)?;
        copy_meta(&m, &xa, &dst)?;
    }
    if let Some(src) = lowers_top_first.first() {
        // the root's own metadata, from the topmost lower
        let m = fs::symlink_metadata(src).map_err(ctx("inspect", src))?;
        copy_meta(&m, &xattrs(src)?, dest)?;
    }
    let mut manifest = Manifest::default();
    record(dest, dest, &mut manifest)?;
    settle_clock(dest, &manifest)?;
    Ok(manifest)
}

/// Waits until a new inode on `dest`'s filesystem gets a ctime newer than
/// every recorded one. Timestamps are coarse (a clock tick, inode(7)
/// "Timestamp granularity"), and a step that removes an entry and makes a
/// new one may get the same inode number back: only its birth time (or, on
/// filesystems without one, its ctime) then tells it apart, and only once
/// the clock moved on (seen: a whiteout per child instead of an opaque
/// directory).
fn settle_clock(dest: &Path, manifest: &Manifest) -> io::Result<()> {
    let newest = manifest
        .entries
        .values()
        .map(|s| s.ctime)
        .max()
        .unwrap_or((0, 0));
    let probe = dest.with_file_name(".kiln-ctime-probe");
    for _ in 0..1000 {
        let f = fs::File::create(&probe).map_err(ctx("create", &probe))?;
        let m = f.metadata().map_err(ctx("inspect", &probe))?;
        drop(f);
        fs::remove_file(&probe).map_err(ctx("remove", &probe))?;
        if (m.ctime(), m.ctime_nsec()) > newest {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

fn merge_dir(
    lower: &Path,
    dir: &Path,
    dest: &Path,
    dir_meta: &mut HashMap<PathBuf, PathBuf>,
) -> io::Result<()> {
    for e in fs::read_dir(dir).map_err(ctx("read the directory", dir))? {
        let e = e.map_err(ctx("read the directory", dir))?;
        let src = e.path();
        let rel = src.strip_prefix(lower).unwrap_or(&src).to_path_buf();
        let dst = dest.join(&rel);
        let m = fs::symlink_metadata(&src).map_err(ctx("inspect", &src))?;
        let xa = xattrs(&src)?;
        match classify(&m, &xa) {
            EntryClass::Whiteout => remove_any(&dst)?,
            class if m.is_dir() => {
                let existing = fs::symlink_metadata(&dst).ok();
                match existing {
                    Some(x) if x.is_dir() && class == EntryClass::OpaqueDir => {
                        fs::remove_dir_all(&dst).map_err(ctx("remove", &dst))?;
                        fs::create_dir(&dst).map_err(ctx("create", &dst))?;
                    }
                    Some(x) if x.is_dir() => {}
                    Some(_) => {
                        fs::remove_file(&dst).map_err(ctx("remove", &dst))?;
                        fs::create_dir(&dst).map_err(ctx("create", &dst))?;
                    }
                    None => fs::create_dir(&dst).map_err(ctx("create", &dst))?,
                }
                dir_meta.insert(rel, src.clone());
                merge_dir(lower, &src, dest, dir_meta)?;
            }
            _ => {
                remove_any(&dst)?;
                if copy_entry(&src, &m, &dst)? {
                    copy_meta(&m, &xa, &dst)?;
                }
            }
        }
    }
    Ok(())
}

fn record(root: &Path, dir: &Path, manifest: &mut Manifest) -> io::Result<()> {
    for e in fs::read_dir(dir).map_err(ctx("read the directory", dir))? {
        let e = e.map_err(ctx("read the directory", dir))?;
        let p = e.path();
        let m = fs::symlink_metadata(&p).map_err(ctx("inspect", &p))?;
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        manifest.entries.insert(rel, Stamp::of(&m));
        if m.is_dir() {
            record(root, &p, manifest)?;
        }
    }
    Ok(())
}

/// What the step did to one path.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// new or changed: move the entry (a whole new subtree for directories)
    Move {
        rel: PathBuf,
        opaque: bool,
    },
    /// an existing directory whose own metadata changed
    Dir(PathBuf),
    Whiteout(PathBuf),
}

/// How many entries the step changed, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiffSummary {
    pub moved: usize,
    pub whiteouts: usize,
}

/// Moves what the step changed in `rootfs` (populated from `manifest`) into
/// the empty `upper`, in overlay form. `rootfs` is left partly emptied.
pub fn diff(rootfs: &Path, manifest: &Manifest, upper: &Path) -> io::Result<DiffSummary> {
    let mut changes = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    scan(rootfs, rootfs, manifest, &mut changes, &mut seen)?;
    for (rel, stamp) in &manifest.entries {
        if seen.contains(rel) {
            continue;
        }
        // only the topmost deleted path needs a whiteout: below a deleted
        // or replaced directory there is nothing of the lower left to hide
        let parent_kept = match rel.parent() {
            Some(p) if p.as_os_str().is_empty() => true,
            Some(p) => seen.contains(p) && !replaced(rootfs, p, manifest),
            None => true,
        };
        if parent_kept {
            let _ = stamp;
            changes.push(Change::Whiteout(rel.clone()));
        }
    }
    // parents before children, so copy-up of ancestors finds nothing to do
    changes.sort_by(|a, b| key(a).cmp(key(b)));
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut summary = DiffSummary::default();
    for c in &changes {
        match c {
            Change::Move { rel, opaque } => {
                copy_up_parents(rootfs, upper, rel, &mut made)?;
                let (from, to) = (rootfs.join(rel), upper.join(rel));
                fs::rename(&from, &to).map_err(ctx("move", &from))?;
                if *opaque {
                    rustix::fs::lsetxattr(&to, "user.overlay.opaque", b"y", XattrFlags::empty())
                        .map_err(errno("mark opaque", &to))?;
                }
                summary.moved += 1;
            }
            Change::Dir(rel) => {
                copy_up_parents(rootfs, upper, rel, &mut made)?;
                copy_up(rootfs, upper, rel, &mut made)?;
                summary.moved += 1;
            }
            Change::Whiteout(rel) => {
                copy_up_parents(rootfs, upper, rel, &mut made)?;
                let to = upper.join(rel);
                // a 0/0 character device: allowed in a user namespace since
                // Linux 5.8 (whiteouts for unprivileged overlay)
                rustix::fs::mknodat(CWD, &to, FileType::CharacterDevice, Mode::empty(), 0)
                    .map_err(errno("create the whiteout", &to))?;
                summary.whiteouts += 1;
            }
        }
    }
    // directory times last: the moves above changed them
    let mut made: Vec<PathBuf> = made.into_iter().collect();
    made.sort_by_key(|rel| std::cmp::Reverse(rel.components().count()));
    for rel in made {
        let m = fs::symlink_metadata(rootfs.join(&rel)).map_err(ctx("inspect", &rel))?;
        set_times(&m, &upper.join(&rel))?;
    }
    Ok(summary)
}

fn key(c: &Change) -> &Path {
    match c {
        Change::Move { rel, .. } | Change::Dir(rel) | Change::Whiteout(rel) => rel,
    }
}

/// Whether the directory at `rel` is a new one in place of the lower's.
fn replaced(rootfs: &Path, rel: &Path, manifest: &Manifest) -> bool {
    match (
        manifest.entries.get(rel),
        fs::symlink_metadata(rootfs.join(rel)),
    ) {
        (Some(s), Ok(m)) => !s.same_inode(&m),
        _ => true,
    }
}

fn scan(
    root: &Path,
    dir: &Path,
    manifest: &Manifest,
    changes: &mut Vec<Change>,
    seen: &mut HashSet<PathBuf>,
) -> io::Result<()> {
    for e in fs::read_dir(dir).map_err(ctx("read the directory", dir))? {
        let e = e.map_err(ctx("read the directory", dir))?;
        let p = e.path();
        let m = fs::symlink_metadata(&p).map_err(ctx("inspect", &p))?;
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        let now = Stamp::of(&m);
        let before = manifest.entries.get(&rel);
        seen.insert(rel.clone());
        match before {
            Some(b) if b.same_inode(&m) => {
                if m.is_dir() {
                    if b.ctime != now.ctime {
                        changes.push(Change::Dir(rel));
                    }
                    scan(root, &p, manifest, changes, seen)?;
                } else if b.ctime != now.ctime {
                    changes.push(Change::Move { rel, opaque: false });
                }
            }
            // new, or a new inode in place of the lower's entry: a new
            // directory hides whatever the lower had below it
            Some(b) => changes.push(Change::Move {
                opaque: m.is_dir() && b.is_dir,
                rel,
            }),
            None => changes.push(Change::Move { rel, opaque: false }),
        }
    }
    Ok(())
}

/// Creates the upper directory for `rel` with the rootfs's metadata (what
/// overlay's copy-up does for the parents of a changed entry).
fn copy_up(rootfs: &Path, upper: &Path, rel: &Path, made: &mut HashSet<PathBuf>) -> io::Result<()> {
    if made.contains(rel) {
        return Ok(());
    }
    let src = rootfs.join(rel);
    let dst = upper.join(rel);
    let m = fs::symlink_metadata(&src).map_err(ctx("inspect", &src))?;
    match fs::create_dir(&dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ctx("create", &dst)(e)),
    }
    copy_meta(&m, &xattrs(&src)?, &dst)?;
    made.insert(rel.to_path_buf());
    Ok(())
}

fn copy_up_parents(
    rootfs: &Path,
    upper: &Path,
    rel: &Path,
    made: &mut HashSet<PathBuf>,
) -> io::Result<()> {
    let mut ancestors: Vec<&Path> = rel
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .collect();
    ancestors.reverse();
    for a in ancestors {
        copy_up(rootfs, upper, a, made)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
            let mut es: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            es.sort();
            for p in es {
                let m = fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let kind = if m.is_dir() {
                    "/"
                } else if m.file_type().is_char_device() {
                    " (whiteout)"
                } else {
                    ""
                };
                out.push(format!("{rel}{kind}"));
                if m.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        walk(dir, dir, &mut out);
        out
    }

    /// Pure-filesystem parts, as whatever user runs the unit tests: the
    /// real driver (in a user namespace) is tested in tests/sandbox.rs.
    #[test]
    fn populate_merges_lowers_and_diff_finds_changes() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, root, up) = (
            t.path().join("l1"),
            t.path().join("l2"),
            t.path().join("root"),
            t.path().join("up"),
        );
        for d in [&l1, &l2, &root, &up] {
            fs::create_dir(d).unwrap();
        }
        fs::create_dir_all(l1.join("etc")).unwrap();
        fs::write(l1.join("etc/a"), "a1").unwrap();
        fs::write(l1.join("etc/b"), "b1").unwrap();
        fs::create_dir_all(l1.join("keep/deep")).unwrap();
        fs::write(l1.join("keep/deep/x"), "x").unwrap();
        fs::create_dir_all(l2.join("etc")).unwrap();
        fs::write(l2.join("etc/a"), "a2").unwrap();
        std::os::unix::fs::symlink("a", l2.join("etc/link")).unwrap();
        let m = populate(&[l2.clone(), l1.clone()], &root).unwrap();
        assert_eq!(fs::read_to_string(root.join("etc/a")).unwrap(), "a2");
        assert_eq!(
            fs::read_link(root.join("etc/link")).unwrap(),
            Path::new("a")
        );
        assert_eq!(m.entries.len(), 7, "{:?}", m.entries.keys());

        // the step: read, edit, create, delete, replace a directory
        let _ = fs::read(root.join("etc/link")).unwrap();
        fs::write(root.join("etc/b"), "b2").unwrap();
        fs::write(root.join("new"), "n").unwrap();
        fs::remove_file(root.join("etc/a")).unwrap();
        fs::remove_dir_all(root.join("keep")).unwrap();
        fs::create_dir(root.join("keep")).unwrap();
        fs::write(root.join("keep/y"), "y").unwrap();
        let s = diff(&root, &m, &up).unwrap();
        assert_eq!(
            names(&up),
            [
                "etc/",
                "etc/a (whiteout)",
                "etc/b",
                "keep/",
                "keep/y",
                "new"
            ],
        );
        assert_eq!(s.whiteouts, 1);
        let opaque = rustix::fs::lgetxattr(up.join("keep"), "user.overlay.opaque", &mut [0u8; 4]);
        // user xattrs need a filesystem that has them (tmpfs before 6.6 did not)
        if let Ok(n) = opaque {
            assert_eq!(n, 1);
        }
    }
}
