//! A read-only merged view of a stack of layer directories in overlay form,
//! computed per lookup: what overlayfs would show, without mounting or
//! copying anything. Copying `/hello` out of a chain whose lower layers hold
//! a 700 MB toolchain touches only the layers' entries on the way to
//! `/hello` (an lstat per path component per layer).
//!
//! The rules are overlayfs's (Documentation/filesystems/overlayfs.rst):
//! going from the top layer down, the first layer with an entry at a path
//! decides it; a whiteout (0/0 character device) hides the path and
//! everything below it in lower layers; a non-directory hides what lower
//! layers have below its path; an opaque directory (the `overlay.opaque`
//! xattr, or fuse-overlayfs's own) hides the lower layers' content of that
//! directory; directories present in several layers merge.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::select::{SelectError, Tree, read_error};

/// Layer directories, top layer first.
#[derive(Debug, Clone)]
pub struct Union {
    top_first: Vec<PathBuf>,
}

/// A visible entry: where it is on disk, and its metadata.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub meta: fs::Metadata,
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Whether the directory at `p` hides lower layers' content.
fn is_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 1024];
    let names = match rustix::fs::llistxattr(p, &mut buf[..]) {
        Ok(0) => return false,
        Ok(n) => &buf[..n],
        // more names than fit: look for the known ones directly
        Err(rustix::io::Errno::RANGE) => {
            b"user.overlay.opaque\0trusted.overlay.opaque\0user.fuseoverlayfs.opaque\0"
        }
        Err(_) => return false,
    };
    names
        .split(|b| *b == 0)
        .filter(|n| n.ends_with(b".opaque"))
        .any(|n| {
            let Ok(name) = std::str::from_utf8(n) else {
                return false;
            };
            let mut buf = [0u8; 8];
            rustix::fs::lgetxattr(p, name, &mut buf[..])
                .is_ok_and(|len| kiln_layer::is_opaque_xattr(n, &buf[..len.min(8)]))
        })
}

/// The normal components of a relative path (`.` and `/` dropped).
fn parts(rel: &Path) -> Vec<&std::ffi::OsStr> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// What one layer says about a path's ancestors.
enum Ancestors {
    /// all ancestors are directories in this layer; `opaque` when one hides
    /// the lower layers
    Dirs { opaque: bool },
    /// an ancestor is missing in this layer: it says nothing about the path
    /// (`opaque`: an ancestor above the missing one hides the lower layers)
    Absent { opaque: bool },
    /// an ancestor is a whiteout or a non-directory: the path does not exist
    /// here or below
    Hidden,
}

/// lstat that tells "not there" (`None`) from a real failure (a directory
/// we may not search, rootless).
fn lstat_at(p: &Path) -> std::io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => Ok(None),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("`{}`: {e}", p.display()),
        )),
    }
}

fn ancestors(layer: &Path, dirs: &[&std::ffi::OsStr]) -> std::io::Result<Ancestors> {
    let mut p = layer.to_path_buf();
    let mut opaque = false;
    for c in dirs {
        p.push(c);
        match lstat_at(&p)? {
            None => return Ok(Ancestors::Absent { opaque }),
            Some(m) if !m.is_dir() => return Ok(Ancestors::Hidden),
            Some(_) => opaque |= is_opaque(&p),
        }
    }
    Ok(Ancestors::Dirs { opaque })
}

impl Union {
    pub fn new(top_first: Vec<PathBuf>) -> Self {
        Union { top_first }
    }

    /// A plain directory (no whiteouts in it) as a one-layer view.
    pub fn plain(dir: impl Into<PathBuf>) -> Self {
        Union {
            top_first: vec![dir.into()],
        }
    }

    pub fn layers_top_first(&self) -> &[PathBuf] {
        &self.top_first
    }

    /// The visible entry at `rel` (relative to the root; the empty path is
    /// the root), `None` when there is none. Symlinks are not followed. An
    /// error is a layer directory that cannot be read (rootless, one of
    /// another container user's private directories).
    pub fn lookup(&self, rel: &Path) -> std::io::Result<Option<Found>> {
        let ps = parts(rel);
        let Some((last, dirs)) = ps.split_last() else {
            let Some(top) = self.top_first.first() else {
                return Ok(None);
            };
            return Ok(lstat_at(top)?.map(|meta| Found {
                path: top.clone(),
                meta,
            }));
        };
        for layer in &self.top_first {
            let stop = match ancestors(layer, dirs)? {
                Ancestors::Hidden | Ancestors::Absent { opaque: true } => return Ok(None),
                Ancestors::Absent { opaque: false } => continue,
                Ancestors::Dirs { opaque } => opaque,
            };
            let mut p = layer.clone();
            p.extend(dirs);
            p.push(last);
            if let Some(meta) = lstat_at(&p)? {
                if is_whiteout(&meta) {
                    return Ok(None);
                }
                return Ok(Some(Found { path: p, meta }));
            }
            if stop {
                return Ok(None);
            }
        }
        Ok(None)
    }

    pub fn lstat(&self, rel: &Path) -> std::io::Result<Option<fs::Metadata>> {
        Ok(self.lookup(rel)?.map(|f| f.meta))
    }

    pub fn read_link(&self, rel: &Path) -> std::io::Result<PathBuf> {
        match self.lookup(rel)? {
            Some(f) => fs::read_link(&f.path),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    pub fn read_to_string(&self, rel: &Path) -> std::io::Result<String> {
        match self.lookup(rel)? {
            Some(f) => fs::read_to_string(&f.path),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    /// The merged entries of directory `rel`, sorted by name.
    pub fn list(&self, rel: &Path) -> std::io::Result<Vec<(OsString, Found)>> {
        let ps = parts(rel);
        let mut seen: BTreeMap<OsString, Option<Found>> = BTreeMap::new();
        for layer in &self.top_first {
            let mut stop = match ancestors(layer, &ps[..ps.len().saturating_sub(1)])? {
                Ancestors::Hidden | Ancestors::Absent { opaque: true } => break,
                Ancestors::Absent { opaque: false } => continue,
                Ancestors::Dirs { opaque } => opaque,
            };
            let mut dir = layer.clone();
            dir.extend(&ps);
            match lstat_at(&dir)? {
                None => {
                    if stop {
                        break;
                    }
                    continue;
                }
                Some(m) if !m.is_dir() => break,
                Some(_) => {}
            }
            stop |= !ps.is_empty() && is_opaque(&dir);
            for e in fs::read_dir(&dir)? {
                let e = e?;
                let name = e.file_name();
                if seen.contains_key(&name) {
                    continue;
                }
                let path = e.path();
                let meta = fs::symlink_metadata(&path)?;
                let v = (!is_whiteout(&meta)).then_some(Found { path, meta });
                seen.insert(name, v);
            }
            if stop {
                break;
            }
        }
        Ok(seen
            .into_iter()
            .filter_map(|(n, f)| f.map(|f| (n, f)))
            .collect())
    }
}

/// The merged view, for [`crate::select::walk`].
impl Tree for Union {
    fn list_dir(&self, rel: &Path) -> Result<Vec<(OsString, PathBuf, fs::Metadata)>, SelectError> {
        Ok(self
            .list(rel)
            .map_err(read_error(rel))?
            .into_iter()
            .map(|(name, f)| (name, f.path, f.meta))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whiteout(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
    }

    #[test]
    fn overlay_rules() {
        let t = tempfile::tempdir().unwrap();
        let (lo, mid, top) = (
            t.path().join("lo"),
            t.path().join("mid"),
            t.path().join("top"),
        );
        for d in [&lo, &mid, &top] {
            fs::create_dir_all(d.join("etc")).unwrap();
        }
        fs::create_dir_all(lo.join("opq/sub")).unwrap();
        fs::write(lo.join("etc/a"), "lo-a").unwrap();
        fs::write(lo.join("etc/b"), "lo-b").unwrap();
        fs::write(lo.join("opq/sub/x"), "x").unwrap();
        fs::write(lo.join("opq/keep"), "hidden").unwrap();
        fs::create_dir_all(lo.join("gone/deep")).unwrap();
        fs::write(lo.join("gone/deep/f"), "f").unwrap();
        fs::create_dir_all(lo.join("file/x")).unwrap();
        fs::write(mid.join("etc/a"), "mid-a").unwrap();
        whiteout(&mid.join("etc/b"));
        whiteout(&mid.join("gone"));
        fs::write(mid.join("file"), "now a file").unwrap();
        fs::create_dir_all(top.join("opq")).unwrap();
        fs::write(top.join("opq/new"), "n").unwrap();
        rustix::fs::setxattr(
            top.join("opq"),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let u = Union::new(vec![top.clone(), mid.clone(), lo.clone()]);
        let read = |p: &str| u.read_to_string(Path::new(p)).ok();
        assert_eq!(read("etc/a").as_deref(), Some("mid-a"));
        assert_eq!(read("etc/b"), None);
        assert_eq!(read("gone/deep/f"), None);
        assert!(u.lookup(Path::new("gone")).unwrap().is_none());
        assert_eq!(read("file").as_deref(), Some("now a file"));
        assert!(u.lookup(Path::new("file/x")).unwrap().is_none());
        assert_eq!(read("opq/new").as_deref(), Some("n"));
        assert_eq!(read("opq/keep"), None);
        assert!(u.lookup(Path::new("opq/sub/x")).unwrap().is_none());
        let names = |p: &str| -> Vec<String> {
            u.list(Path::new(p))
                .unwrap()
                .into_iter()
                .map(|(n, _)| n.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("etc"), ["a"]);
        assert_eq!(names("opq"), ["new"]);
        assert_eq!(names(""), ["etc", "file", "opq"]);
        let sel = crate::select::Selection::default();
        let all: Vec<String> = crate::select::walk(&u, Path::new(""), &sel)
            .unwrap()
            .into_iter()
            .map(|(e, _)| e.rel)
            .collect();
        assert_eq!(all, ["etc", "etc/a", "file", "opq", "opq/new"]);
    }
}
