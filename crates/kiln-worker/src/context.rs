//! The build context: its ignore file, the files a context source selects
//! (through [`crate::select`], Docker's rules), their content digest and
//! the layer that carries them. Symlinks stay symlinks and are never
//! followed, so nothing outside the context directory is read.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::patterns::{PatternError, Patterns};
use crate::select::{self, Entry, Kind, SelectError, Selection};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read the build context at `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error(transparent)]
    Select(#[from] SelectError),
}

/// The context's ignore file: `.kilnignore`, else `.dockerignore`, else
/// none. Read once per build.
pub fn ignore_file(root: &Path) -> Result<Patterns, ContextError> {
    for name in [".kilnignore", ".dockerignore"] {
        let path = root.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => {
                return Ok(Patterns::ignore_file(
                    &text,
                    &format!("`{}`", path.display()),
                )?);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ContextError::Read { path, source }),
        }
    }
    Ok(Patterns::default())
}

/// The selected entries of the context directory `root`, sorted by path,
/// with every directory on the way to a selected file.
pub fn select(root: &Path, sel: &Selection) -> Result<Vec<Entry>, ContextError> {
    Ok(select::walk(root, Path::new(""), sel)?
        .into_iter()
        .map(|(e, _)| e)
        .collect())
}

/// File hashes remembered by (size, mtime, ctime, inode), so unchanged
/// context files are not re-read. Only a speedup: the digest itself never
/// depends on these stats. ctime is in the check because `touch -m` or a
/// rewrite with a restored mtime still changes it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StatCache {
    files: std::collections::BTreeMap<String, (u64, i64, i64, u64, String)>,
}

impl StatCache {
    fn stat_key(m: &fs::Metadata) -> (u64, i64, i64, u64) {
        (
            m.size(),
            m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            m.ino(),
        )
    }
}

/// sha256 over path, kind, mode and content of every entry; never mtimes,
/// owners or the checkout path.
pub fn digest(root: &Path, entries: &[Entry]) -> Result<kiln_dag::Digest, ContextError> {
    digest_cached(root, entries, &mut StatCache::default())
}

/// [`digest`], reading only files whose stats changed since `cache` saw them.
pub fn digest_cached(
    root: &Path,
    entries: &[Entry],
    cache: &mut StatCache,
) -> Result<kiln_dag::Digest, ContextError> {
    digest_with(entries, cache, |e| root.join(&e.rel))
}

/// [`digest_cached`] with each file read from `path_of(entry)` (a layer
/// stack keeps every file in the layer that last wrote it).
pub fn digest_with(
    entries: &[Entry],
    cache: &mut StatCache,
    path_of: impl Fn(&Entry) -> PathBuf,
) -> Result<kiln_dag::Digest, ContextError> {
    let mut h = Sha256::new();
    h.update(b"kiln-context/v1\0");
    let mut buf = vec![0u8; 64 * 1024];
    for e in entries {
        h.update(e.rel.as_bytes());
        h.update([0]);
        h.update(e.mode.to_le_bytes());
        match &e.kind {
            Kind::Dir => h.update(b"d"),
            Kind::Symlink { target } => {
                h.update(b"l");
                h.update(target.as_os_str().as_encoded_bytes());
                h.update([0]);
            }
            Kind::File { .. } => {
                h.update(b"f");
                let path = path_of(e);
                let mut f = fs::File::open(&path).map_err(|source| ContextError::Read {
                    path: path.clone(),
                    source,
                })?;
                let stat = f.metadata().map(|m| StatCache::stat_key(&m)).ok();
                if let (Some((size, mt, ct, ino)), Some(hit)) = (stat, cache.files.get(&e.rel))
                    && (hit.0, hit.1, hit.2, hit.3) == (size, mt, ct, ino)
                    && let Ok(bytes) = hex::decode(&hit.4)
                {
                    h.update(&bytes);
                    continue;
                }
                let mut fh = Sha256::new();
                loop {
                    let n = f.read(&mut buf).map_err(|source| ContextError::Read {
                        path: path.clone(),
                        source,
                    })?;
                    if n == 0 {
                        break;
                    }
                    fh.update(&buf[..n]);
                }
                let fd = fh.finalize();
                if let Some((size, mt, ct, ino)) = stat {
                    cache
                        .files
                        .insert(e.rel.clone(), (size, mt, ct, ino, hex::encode(fd)));
                }
                h.update(fd);
            }
        }
    }
    Ok(kiln_dag::Digest::from_bytes(h.finalize().into()))
}

/// Writes the entries as a layer tar: owner 0:0, mtime `epoch`.
pub fn write_tar<W: std::io::Write>(
    root: &Path,
    entries: &[Entry],
    epoch: u64,
    out: W,
) -> Result<W, ContextError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContextError::Read { path, source }
    };
    let mut b = tar::Builder::new(out);
    for e in entries {
        let path = root.join(&e.rel);
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(epoch);
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.rel), std::io::empty())
                    .map_err(werr(&path))?;
            }
            Kind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &e.rel, target).map_err(werr(&path))?;
            }
            Kind::File { .. } => {
                let f = fs::File::open(&path).map_err(werr(&path))?;
                let size = f.metadata().map_err(werr(&path))?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(size);
                b.append_data(&mut h, &e.rel, f.take(size))
                    .map_err(werr(&path))?;
            }
        }
    }
    b.into_inner().map_err(werr(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(root: &Path, include: &[String]) -> Selection {
        Selection::new(ignore_file(root).unwrap(), include, &[], "test").unwrap()
    }

    #[test]
    fn kilnignore_wins_over_dockerignore() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a", "b"] {
            fs::write(d.path().join(f), f).unwrap();
        }
        fs::write(d.path().join(".dockerignore"), "a\n").unwrap();
        let names = |sel: &Selection| -> Vec<String> {
            select(d.path(), sel)
                .unwrap()
                .into_iter()
                .map(|e| e.rel)
                .collect()
        };
        assert_eq!(names(&selection(d.path(), &[])), [".dockerignore", "b"]);
        fs::write(d.path().join(".kilnignore"), "b\n").unwrap();
        assert_eq!(
            names(&selection(d.path(), &[])),
            [".dockerignore", ".kilnignore", "a"]
        );
    }

    #[test]
    fn selection_and_digest_ignore_mtimes() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("src/sub")).unwrap();
        fs::create_dir_all(d.path().join("target")).unwrap();
        fs::write(d.path().join("src/sub/a.txt"), "a").unwrap();
        fs::write(d.path().join("target/junk"), "j").unwrap();
        fs::write(d.path().join("main.go"), "package main").unwrap();
        fs::write(d.path().join(".dockerignore"), "target\n").unwrap();
        let sel = selection(d.path(), &[]);
        let e = select(d.path(), &sel).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(
            names,
            [
                ".dockerignore",
                "main.go",
                "src",
                "src/sub",
                "src/sub/a.txt"
            ]
        );
        let before = digest(d.path(), &e).unwrap();
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("main.go"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            digest(d.path(), &select(d.path(), &sel).unwrap()).unwrap(),
            before
        );
        fs::write(d.path().join("main.go"), "package main2").unwrap();
        assert_ne!(
            digest(d.path(), &select(d.path(), &sel).unwrap()).unwrap(),
            before
        );

        // The stat cache gives the same digests and sees content changes
        // even when the mtime is put back.
        let mut cache = StatCache::default();
        let e = select(d.path(), &sel).unwrap();
        let plain = digest(d.path(), &e).unwrap();
        assert_eq!(digest_cached(d.path(), &e, &mut cache).unwrap(), plain);
        assert_eq!(digest_cached(d.path(), &e, &mut cache).unwrap(), plain);
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("main.go"))
            .unwrap();
        let mtime = f.metadata().unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(d.path().join("main.go"), "package main3").unwrap();
        f.set_modified(mtime).unwrap();
        let changed = digest_cached(d.path(), &e, &mut cache).unwrap();
        assert_ne!(changed, plain);
        assert_eq!(changed, digest(d.path(), &e).unwrap());

        let only = selection(d.path(), &["src/sub/a.txt".into()]);
        let names: Vec<_> = select(d.path(), &only)
            .unwrap()
            .into_iter()
            .map(|e| e.rel)
            .collect();
        assert_eq!(names, ["src", "src/sub", "src/sub/a.txt"]);
    }
}
