//! Which entries of a tree a selection takes: the one walker behind the
//! build context (its ignore file plus the source's include/exclude) and
//! behind copies' include/exclude, over the context directory or a layer
//! stack ([`Tree`]). The patterns are Docker's ([`crate::patterns`]);
//! symlinks are listed, never followed.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::patterns::{PatternError, Patterns, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("cannot read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

pub(crate) fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> SelectError {
    let path = path.to_path_buf();
    move |source| SelectError::Read { path, source }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { size: u64 },
    Symlink { target: PathBuf },
}

/// One selected entry, relative to where the walk started (`a/b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub rel: String,
    pub kind: Kind,
    pub mode: u32,
    /// uid and gid as they are on disk (host IDs, rootless).
    pub owner: (u32, u32),
}

/// A directory tree the walker can list.
pub trait Tree {
    /// The entries of directory `rel` (relative to the tree's root), sorted
    /// by name: name, the path to read it at, its lstat.
    fn list_dir(&self, rel: &Path) -> Result<Vec<(OsString, PathBuf, fs::Metadata)>, SelectError>;
}

/// A directory on disk, as it is.
impl Tree for Path {
    fn list_dir(&self, rel: &Path) -> Result<Vec<(OsString, PathBuf, fs::Metadata)>, SelectError> {
        let dir = self.join(rel);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(read_error(&dir))? {
            let e = e.map_err(read_error(&dir))?;
            let path = e.path();
            let meta = fs::symlink_metadata(&path).map_err(read_error(&path))?;
            out.push((e.file_name(), path, meta));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// What a walk selects: everything not skipped by `ignore` or `exclude`
/// and, when there are include patterns, matched by one.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    ignore: Patterns,
    include: Patterns,
    exclude: Patterns,
}

impl Selection {
    /// `ignore` is the context's ignore file (empty for copies);
    /// `include`/`exclude` are as a source or copy names them, `origin`
    /// says which for errors.
    pub fn new(
        ignore: Patterns,
        include: &[String],
        exclude: &[String],
        origin: &str,
    ) -> Result<Self, PatternError> {
        Ok(Selection {
            ignore,
            include: Patterns::parse(include.iter().map(String::as_str), origin)?,
            exclude: Patterns::parse(exclude.iter().map(String::as_str), origin)?,
        })
    }

    /// A copy's include/exclude: no ignore file.
    pub fn patterns(include: &[String], exclude: &[String]) -> Result<Self, PatternError> {
        Self::new(Patterns::default(), include, exclude, "the copy's patterns")
    }
}

/// The verdicts of a directory, handed to its entries.
#[derive(Debug, Clone, Copy, Default)]
struct Verdicts {
    ignore: Verdict,
    include: Verdict,
    exclude: Verdict,
}

/// The entries below directory `dir` of `tree` that `sel` selects,
/// relative to `dir`, sorted by path, with every directory on the way to a
/// selected entry, each with the path to read it at.
pub fn walk<T: Tree + ?Sized>(
    tree: &T,
    dir: &Path,
    sel: &Selection,
) -> Result<Vec<(Entry, PathBuf)>, SelectError> {
    let mut out = Vec::new();
    walk_dir(tree, dir, "", Verdicts::default(), sel, &mut out)?;
    Ok(out)
}

/// Appends what is selected below `dir`; whether anything was.
fn walk_dir<T: Tree + ?Sized>(
    tree: &T,
    dir: &Path,
    prefix: &str,
    above: Verdicts,
    sel: &Selection,
    out: &mut Vec<(Entry, PathBuf)>,
) -> Result<bool, SelectError> {
    let mut any = false;
    for (name, path, meta) in tree.list_dir(dir)? {
        let Some(name) = name.to_str() else {
            tracing::warn!("skipping `{}`: the name is not UTF-8", path.display());
            continue;
        };
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let here = Verdicts {
            ignore: sel.ignore.verdict(&rel, above.ignore),
            include: sel.include.verdict(&rel, above.include),
            exclude: sel.exclude.verdict(&rel, above.exclude),
        };
        let skipped = here.ignore.matched() || here.exclude.matched();
        let included = sel.include.is_empty() || here.include.matched();
        let mode = meta.mode() & 0o7777;
        if meta.is_dir() {
            // Docker reads an excluded directory only for an exception
            // that may bring back something in it.
            if skipped && !sel.ignore.may_except_below(&rel) && !sel.exclude.may_except_below(&rel)
            {
                continue;
            }
            if !included && !sel.include.may_match_below(&rel) {
                continue;
            }
            let at = out.len();
            out.push((
                Entry {
                    rel: rel.clone(),
                    kind: Kind::Dir,
                    mode,
                    owner: (meta.uid(), meta.gid()),
                },
                path,
            ));
            let below = walk_dir(tree, &dir.join(name), &rel, here, sel, out)?;
            if below || (!skipped && included) {
                any = true;
            } else {
                out.truncate(at);
            }
            continue;
        }
        if skipped || !included {
            continue;
        }
        let kind = if meta.file_type().is_symlink() {
            Kind::Symlink {
                target: fs::read_link(&path).map_err(read_error(&path))?,
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
        let owner = (meta.uid(), meta.gid());
        out.push((
            Entry {
                rel,
                kind,
                mode,
                owner,
            },
            path,
        ));
        any = true;
    }
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree (directories end in `/`), ignore lines, include and exclude
    /// patterns, and what is selected.
    #[test]
    fn walks_select_as_docker_does() {
        type Case<'a> = (
            &'a [&'a str],
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // an excluded directory goes with everything in it
            (&["target/", "target/debug/x", "main.rs"], "target\n", &[], &[],
             &["main.rs"]),
            // a trailing `/` does not restrict a pattern to directories
            (&["target", "main.rs"], "target/\n", &[], &[],
             &["main.rs"]),
            // an exception re-includes a file inside an excluded directory,
            // with the directories on the way, and nothing else of them
            (&["docs/", "docs/keep/", "docs/keep/k", "docs/drop", "a"], "docs\n!docs/keep/k\n", &[], &[],
             &["a", "docs", "docs/keep", "docs/keep/k"]),
            // an excluded directory with nothing re-included is left out
            (&["docs/", "docs/drop", "a"], "docs\n!other\n", &[], &[],
             &["a"]),
            // `x/**` takes what is below `x`, not `x`
            (&["x/", "x/y", "z"], "x/**\n", &[], &[],
             &["x", "z"]),
            // include: the directories on the way, and what is below a
            // matched directory
            (&["src/", "src/sub/", "src/sub/a.txt", "src/b.txt", "c.txt"], "", &["src/sub"], &[],
             &["src", "src/sub", "src/sub/a.txt"]),
            (&["src/", "src/a.rs", "src/b.txt", "c.rs"], "", &["**/*.rs"], &[],
             &["c.rs", "src", "src/a.rs"]),
            // exclude beside the ignore file, the ignore file's exceptions
            // do not undo it
            (&["a.txt", "b.txt", "c.md"], "*.txt\n!a.txt\n", &[], &["a.*"],
             &["c.md"]),
            // braces are literal
            (&["a.txt", "b.txt", "{a,b}.txt"], "{a,b}.txt\n", &[], &[],
             &["a.txt", "b.txt"]),
            // patterns are cleaned
            (&["tmp/", "tmp/t", "keep"], "logs/../tmp\n", &[], &[],
             &["keep"]),
        ];
        for (tree, ignore, include, exclude, want) in cases {
            let d = tempfile::tempdir().unwrap();
            for p in *tree {
                let path = d.path().join(p);
                if p.ends_with('/') {
                    fs::create_dir_all(path).unwrap();
                } else {
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(path, "x").unwrap();
                }
            }
            let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
            let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
            let lines = Patterns::ignore_file(ignore, "test").unwrap();
            let sel = Selection::new(lines, &include, &exclude, "test").unwrap();
            let got: Vec<String> = walk(d.path(), Path::new(""), &sel)
                .unwrap()
                .into_iter()
                .map(|(e, _)| e.rel)
                .collect();
            assert_eq!(
                got, *want,
                "{tree:?} ignore {ignore:?} include {include:?} exclude {exclude:?}"
            );
        }
    }
}
