//! The merged filesystem of an image, read once from its layers (whiteouts
//! and opaque directories applied), keeping only what the SBOM needs: the
//! bytes of package records (`/var/lib/dpkg/status`, `*.dist-info/METADATA`,
//! `package.json`, `/etc/os-release`) and, for every ELF executable, its
//! digests and what its sections say about how it was built. Everything
//! else is a name in the tree, so a large builder image costs a walk, not
//! its size in memory.

use std::collections::BTreeMap;
use std::io::Read;

use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::binary::{self, BinaryInfo};

/// Records bigger than this are not read (a dpkg status of every Debian
/// package is about 3 MB).
const MAX_RECORD: u64 = 64 << 20;

/// What the tree keeps of a regular file.
#[derive(Debug, Clone)]
pub struct FileData {
    pub mode: u32,
    pub size: u64,
    /// `Some` for the files read whole (records and ELF executables)
    pub digests: Option<Digests>,
    /// the bytes of a package record
    pub record: Option<Vec<u8>>,
    /// what an ELF executable says about its build
    pub binary: Option<BinaryInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub sha1: String,
}

impl Digests {
    pub fn of(bytes: &[u8]) -> Self {
        Digests {
            sha256: hex::encode(Sha256::digest(bytes)),
            sha1: hex::encode(Sha1::digest(bytes)),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Node {
    Dir,
    File(Box<FileData>),
    Symlink(String),
    /// another path of the same file, as the tar names it (absolute)
    Hardlink(String),
    Other,
}

/// The merged filesystem: absolute path -> entry.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
}

pub(crate) fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether the bytes of `path` are a package record the scanners read.
pub(crate) fn is_record(path: &str) -> bool {
    path == "/var/lib/dpkg/status"
        || path == "/etc/os-release"
        || path == "/usr/lib/os-release"
        || (path.starts_with("/var/lib/dpkg/status.d/") && !path.ends_with(".md5sums"))
        || (path.ends_with(".dist-info/METADATA"))
        || (path.ends_with("/package.json") && path.contains("/node_modules/"))
        || path == kiln_oci::static_base::CA_BUNDLE
        // the static base's zoneinfo check reads UTC, a hard link to one of these
        || path.starts_with("/usr/share/zoneinfo/Etc/")
        || path == "/usr/share/zoneinfo/UTC"
}

fn remove_under(entries: &mut BTreeMap<String, Node>, dir: &str, keep_dir: bool) {
    let prefix = if dir == "/" {
        "/".to_string()
    } else {
        format!("{dir}/")
    };
    let doomed: Vec<String> = entries
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        entries.remove(&k);
    }
    if !keep_dir {
        entries.remove(dir);
    }
}

impl Tree {
    /// Adds one layer (an uncompressed tar) on top of what is there.
    pub fn add_layer(&mut self, tar: impl Read) -> std::io::Result<()> {
        let mut layer: Vec<(String, Node)> = Vec::new();
        let mut ar = tar::Archive::new(tar);
        for e in ar.entries()? {
            let mut e = e?;
            let path = clean(&String::from_utf8_lossy(&e.path_bytes()));
            let h = e.header().clone();
            let mode = h.mode().unwrap_or(0);
            let link = |e: &tar::Entry<'_, _>| {
                e.link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            let node = match h.entry_type() {
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Symlink => Node::Symlink(link(&e)),
                tar::EntryType::Link => Node::Hardlink(clean(&link(&e))),
                t if t.is_file() => Node::File(Box::new(read_file(&path, mode, &mut e)?)),
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => Node::Other,
                _ => continue,
            };
            layer.push((path, node));
        }
        // whiteouts first: they hide what the layers below left (and only that)
        for (path, _) in &layer {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            let dir = if dir.is_empty() { "/" } else { dir };
            if name == ".wh..wh..opq" {
                remove_under(&mut self.entries, dir, true);
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                remove_under(&mut self.entries, &clean(&format!("{dir}/{hidden}")), false);
            }
        }
        for (path, node) in layer {
            let name = path.rsplit('/').next().unwrap_or_default();
            if name.starts_with(".wh.") {
                continue;
            }
            if !matches!(node, Node::Dir) {
                // a file replacing a directory hides what was under it
                remove_under(&mut self.entries, &path, true);
            }
            self.entries.insert(path, node);
        }
        Ok(())
    }

    /// Regular files (hard links resolved to the file they share), in path order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &FileData)> {
        self.entries.iter().filter_map(|(p, n)| match n {
            Node::File(f) => Some((p.as_str(), &**f)),
            Node::Hardlink(t) => match self.entries.get(t) {
                Some(Node::File(f)) => Some((p.as_str(), &**f)),
                _ => None,
            },
            _ => None,
        })
    }

    /// The file at exactly `path` (no symlinks followed).
    pub fn file(&self, path: &str) -> Option<&FileData> {
        match self.entries.get(path)? {
            Node::File(f) => Some(&**f),
            Node::Hardlink(t) => match self.entries.get(t)? {
                Node::File(f) => Some(&**f),
                _ => None,
            },
            _ => None,
        }
    }

    /// Paths under `dir` (exclusive), in order.
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a str> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.as_str())
    }

    /// The bytes of a record file at `path`, following one level of symlink
    /// (distroless links `/etc/os-release` to `/usr/lib/os-release`).
    pub fn record(&self, path: &str) -> Option<&[u8]> {
        match self.entries.get(path)? {
            Node::Symlink(t) => {
                let target = if t.starts_with('/') {
                    clean(t)
                } else {
                    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                    clean(&format!("{dir}/{t}"))
                };
                self.file(&target)?.record.as_deref()
            }
            _ => self.file(path)?.record.as_deref(),
        }
    }
}

fn read_file(path: &str, mode: u32, e: &mut impl Read) -> std::io::Result<FileData> {
    let mut data = FileData {
        mode,
        size: 0,
        digests: None,
        record: None,
        binary: None,
    };
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        match e.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let elf = n == 4 && head == *b"\x7fELF";
    let record = is_record(path);
    let executable = elf && mode & 0o111 != 0;
    if !executable && !record {
        data.size = n as u64 + std::io::copy(e, &mut std::io::sink())?;
        return Ok(data);
    }
    let mut bytes = head[..n].to_vec();
    e.read_to_end(&mut bytes)?;
    data.size = bytes.len() as u64;
    data.digests = Some(Digests::of(&bytes));
    if elf {
        data.binary = Some(binary::inspect(&bytes));
    } else if (bytes.len() as u64) <= MAX_RECORD {
        data.record = Some(bytes);
    }
    Ok(data)
}
