//! Bind mounts: the selected path of an input's merged snapshot, resolved
//! inside that snapshot; a writable bind gets a throwaway copy.

use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// `selector` inside `root`, with symlinks resolved as they would be inside
/// the step (openat2 `RESOLVE_IN_ROOT`), so a symlink in a stage cannot make
/// the bind source a host path. The snapshot is immutable, so the path
/// stays what was resolved.
pub(crate) fn resolve_in_root(root: &Path, selector: &str) -> Result<PathBuf, String> {
    let rel = selector.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(root.to_path_buf());
    }
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open `{}`: {e}", root.display()))?;
    let fd = rustix::fs::openat2(
        dir.as_fd(),
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| e.to_string())?;
    let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("cannot resolve: {e}"))?;
    let croot = fs::canonicalize(root).map_err(|e| e.to_string())?;
    if !real.starts_with(&croot) {
        return Err("it resolves outside its stage".into());
    }
    Ok(real)
}

/// Copies `src` (a file or a tree) to `dest` with modes, symlinks and, for
/// root, owners. Special files are skipped: a bind source is data.
pub(crate) fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    let root = rustix::process::geteuid().is_root();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dest)?;
    } else if ft.is_dir() {
        fs::create_dir(dest)?;
        for e in fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dest.join(e.file_name()))?;
        }
        fs::set_permissions(dest, meta.permissions())?;
    } else if ft.is_file() {
        fs::copy(src, dest)?;
    } else {
        return Ok(());
    }
    if root {
        use std::os::unix::fs::MetadataExt as _;
        std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))?;
        if !ft.is_symlink() {
            fs::set_permissions(dest, meta.permissions())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_sources_resolve_inside_the_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/a/b", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc", root.join("up")).unwrap();
        let croot = fs::canonicalize(&root).unwrap();
        assert_eq!(resolve_in_root(&root, "/").unwrap(), root);
        assert_eq!(
            resolve_in_root(&root, "/a/b/f").unwrap(),
            croot.join("a/b/f")
        );
        // an absolute symlink means the stage's own /a/b, not the host's
        assert_eq!(resolve_in_root(&root, "/abs").unwrap(), croot.join("a/b"));
        // `..` stops at the stage's root
        assert_eq!(resolve_in_root(&root, "/up").unwrap(), croot.join("etc"));
        assert!(resolve_in_root(&root, "/missing").is_err());

        let copy = d.path().join("copy");
        copy_tree(&root, &copy).unwrap();
        assert_eq!(fs::read(copy.join("a/b/f")).unwrap(), b"x");
        assert_eq!(fs::read_link(copy.join("abs")).unwrap(), Path::new("/a/b"));
    }
}
