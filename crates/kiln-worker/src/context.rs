//! The build context: which files a context source selects (ignore file,
//! include/exclude patterns, docker's rules), their content digest and the
//! layer that carries them. Symlinks stay symlinks and are never followed, so
//! nothing outside the context directory is read.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read the build context at `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid pattern `{pattern}` in {origin}: {reason}")]
    Pattern {
        pattern: String,
        origin: String,
        reason: String,
    },
}

/// One docker-style pattern: `**`, `*`, `?`, `[...]`, `!` exceptions; a
/// pattern that matches a directory matches everything below it.
#[derive(Debug, Clone)]
struct Pattern {
    matcher: GlobMatcher,
    negated: bool,
}

/// An ordered list of patterns where the last match wins (docker's rule).
#[derive(Debug, Clone, Default)]
pub struct PatternList {
    patterns: Vec<Pattern>,
}

impl PatternList {
    pub fn parse<'a>(
        lines: impl IntoIterator<Item = &'a str>,
        origin: &str,
    ) -> Result<Self, ContextError> {
        let mut patterns = Vec::new();
        for line in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, p) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let p = clean(p);
            if p.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| ContextError::Pattern {
                    pattern: line.to_string(),
                    origin: origin.to_string(),
                    reason: e.kind().to_string(),
                })?;
            patterns.push(Pattern {
                matcher: glob.compile_matcher(),
                negated,
            });
        }
        Ok(PatternList { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.negated)
    }

    /// Whether `rel` (or a directory above it) is matched, after every
    /// exception is considered.
    pub fn matches(&self, rel: &str) -> bool {
        let mut matched = false;
        for p in &self.patterns {
            let hit = p.matcher.is_match(rel) || parents(rel).any(|d| p.matcher.is_match(d));
            if hit {
                matched = !p.negated;
            }
        }
        matched
    }
}

/// `a/b/c` -> `a`, `a/b`.
fn parents(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').map(move |(i, _)| &rel[..i])
}

/// A pattern relative to the context root: no leading `/` or `./`, no `.`
/// components, no trailing `/`.
fn clean(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    parts.join("/")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { size: u64 },
    Symlink { target: PathBuf },
}

/// One selected file, relative to the context root (`a/b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub rel: String,
    pub kind: Kind,
    pub mode: u32,
}

/// The rules of a context source: the ignore file plus the source's own
/// include and exclude patterns.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    ignore: PatternList,
    include: PatternList,
    exclude: PatternList,
}

impl Selection {
    /// Reads `.kilnignore`, else `.dockerignore`, from `root`.
    pub fn new(root: &Path, include: &[String], exclude: &[String]) -> Result<Self, ContextError> {
        let mut ignore = PatternList::default();
        for name in [".kilnignore", ".dockerignore"] {
            let path = root.join(name);
            match fs::read_to_string(&path) {
                Ok(text) => {
                    ignore = PatternList::parse(text.lines(), &format!("`{}`", path.display()))?;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ContextError::Read { path, source }),
            }
        }
        let origin = "the context's patterns";
        Ok(Selection {
            ignore,
            include: PatternList::parse(include.iter().map(String::as_str), origin)?,
            exclude: PatternList::parse(exclude.iter().map(String::as_str), origin)?,
        })
    }

    /// Only include/exclude patterns, no ignore file (copies out of a
    /// stage).
    pub fn patterns(include: &[String], exclude: &[String]) -> Result<Self, ContextError> {
        let origin = "the copy's patterns";
        Ok(Selection {
            ignore: PatternList::default(),
            include: PatternList::parse(include.iter().map(String::as_str), origin)?,
            exclude: PatternList::parse(exclude.iter().map(String::as_str), origin)?,
        })
    }

    pub(crate) fn skipped(&self, rel: &str) -> bool {
        self.ignore.matches(rel) || self.exclude.matches(rel)
    }

    /// Whether a skipped directory may still hold files that an exception
    /// brings back.
    pub(crate) fn descend_skipped(&self) -> bool {
        self.ignore.has_exceptions() || self.exclude.has_exceptions()
    }

    pub(crate) fn include_matches(&self, rel: &str) -> bool {
        self.include.matches(rel)
    }

    pub(crate) fn include_is_empty(&self) -> bool {
        self.include.is_empty()
    }

    pub(crate) fn included(&self, rel: &str) -> bool {
        self.include.is_empty() || self.include.matches(rel)
    }

    /// Whether something below directory `rel` could be included.
    pub(crate) fn may_include_below(&self, rel: &str) -> bool {
        if self.include.is_empty() || self.include.matches(rel) {
            return true;
        }
        // An include pattern whose literal prefix lies on this directory's
        // path (or whose first component is a wildcard) may match below it.
        self.include.patterns.iter().any(|p| {
            let g = p.matcher.glob().glob();
            let lit: String = g.chars().take_while(|c| !"*?[{\\".contains(*c)).collect();
            lit.starts_with(&format!("{rel}/")) || format!("{rel}/").starts_with(&lit)
        })
    }
}

/// The selected entries of `root`, sorted by path, with every directory on
/// the way to a selected file.
pub fn select(root: &Path, sel: &Selection) -> Result<Vec<Entry>, ContextError> {
    let mut out = Vec::new();
    walk(root, "", sel, &mut out)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    prefix: &str,
    sel: &Selection,
    out: &mut Vec<Entry>,
) -> Result<bool, ContextError> {
    let rerr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContextError::Read { path, source }
    };
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(rerr(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(rerr(dir))?;
    names.sort();
    let mut any = false;
    for name in names {
        let Some(name) = name.to_str() else {
            tracing::warn!(
                "skipping `{}`: the name is not UTF-8",
                dir.join(&name).display()
            );
            continue;
        };
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let path = dir.join(name);
        let meta = fs::symlink_metadata(&path).map_err(rerr(&path))?;
        let skipped = sel.skipped(&rel);
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            if skipped && !sel.descend_skipped() {
                continue;
            }
            if !sel.may_include_below(&rel) {
                continue;
            }
            let at = out.len();
            out.push(Entry {
                rel: rel.clone(),
                kind: Kind::Dir,
                mode,
            });
            let below = walk(&path, &rel, sel, out)?;
            let itself = !skipped && sel.include.matches(&rel);
            if below || itself || (!skipped && sel.include.is_empty()) {
                any = true;
            } else {
                out.truncate(at);
            }
            continue;
        }
        if skipped || !sel.included(&rel) {
            continue;
        }
        let kind = if meta.file_type().is_symlink() {
            Kind::Symlink {
                target: fs::read_link(&path).map_err(rerr(&path))?,
            }
        } else if meta.is_file() {
            Kind::File { size: meta.size() }
        } else {
            tracing::warn!(
                "skipping `{}`: not a file, directory or symlink",
                path.display()
            );
            continue;
        };
        out.push(Entry { rel, kind, mode });
        any = true;
    }
    Ok(any)
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

    fn list(lines: &[&str]) -> PatternList {
        PatternList::parse(lines.iter().copied(), "test").unwrap()
    }

    #[test]
    fn docker_pattern_rules() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*.log"], "a.log", true),
            (&["*.log"], "dir/a.log", false),
            (&["**/*.log"], "dir/a.log", true),
            (&["target"], "target/debug/x", true),
            (&["/target/"], "target/x", true),
            (&["*.md", "!README.md"], "README.md", false),
            (&["*.md", "!README.md"], "CHANGES.md", true),
            (&["docs", "!docs/keep"], "docs/keep", false),
            (&["docs", "!docs/keep"], "docs/drop", true),
            (&["# comment", ""], "# comment", false),
        ];
        for (pats, path, want) in cases {
            assert_eq!(list(pats).matches(path), *want, "{pats:?} on {path}");
        }
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
        let sel = Selection::new(d.path(), &[], &[]).unwrap();
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

        let only = Selection::new(d.path(), &["src/sub/a.txt".into()], &[]).unwrap();
        let names: Vec<_> = select(d.path(), &only)
            .unwrap()
            .into_iter()
            .map(|e| e.rel)
            .collect();
        assert_eq!(names, ["src", "src/sub", "src/sub/a.txt"]);
    }
}
