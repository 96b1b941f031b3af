//! Reads an OCI archive the way a runtime sees it: its image config and the
//! root filesystem its layers make (whiteouts and opaque directories
//! applied), as a listing to compare two builders' results by.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use sha2::Digest as _;

/// One path of the root filesystem. Hard links are listed as the file they
/// point at (builders differ in which name holds the data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `f` file, `d` directory, `l` symlink, `c`/`b` device, `p` fifo
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// sha256 of a file's content
    pub digest: String,
    /// a symlink's target
    pub link: String,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{} size={}",
            self.kind, self.mode, self.uid, self.gid, self.size
        )?;
        if !self.digest.is_empty() {
            write!(f, " sha256={}", &self.digest[..12])?;
        }
        if !self.link.is_empty() {
            write!(f, " -> {}", self.link)?;
        }
        Ok(())
    }
}

pub struct ImageView {
    pub config: serde_json::Value,
    pub files: BTreeMap<String, Entry>,
}

fn blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()
}

fn json(dir: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&blob(dir, digest)).unwrap()
}

/// The image manifest an index (or a nested index) points at, skipping
/// attestation manifests.
fn manifest(dir: &Path, index: &serde_json::Value) -> serde_json::Value {
    for m in index["manifests"].as_array().expect("manifests") {
        let platform_os = m["platform"]["os"].as_str().unwrap_or("");
        if platform_os == "unknown" {
            continue;
        }
        let d = m["digest"].as_str().unwrap();
        let v = json(dir, d);
        if v.get("manifests").is_some() {
            return manifest(dir, &v);
        }
        return v;
    }
    panic!("no image manifest in {index}");
}

fn decompress(data: Vec<u8>) -> Vec<u8> {
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&data[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(&data[..]).unwrap()
    } else {
        data
    }
}

fn clean(p: &Path) -> String {
    let s = p.to_string_lossy();
    let s = s.trim_start_matches("./").trim_start_matches('/');
    s.trim_end_matches('/').to_string()
}

/// Reads the OCI archive at `path`.
pub fn read_oci_archive(path: &Path) -> ImageView {
    let tmp = tempfile::tempdir().unwrap();
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tar::Archive::new(f).unpack(tmp.path()).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("index.json")).unwrap()).unwrap();
    let m = manifest(tmp.path(), &index);
    let config = json(tmp.path(), m["config"]["digest"].as_str().unwrap());
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    for l in m["layers"].as_array().cloned().unwrap_or_default().iter() {
        let data = decompress(blob(tmp.path(), l["digest"].as_str().unwrap()));
        let mut added: BTreeSet<String> = BTreeSet::new();
        let mut ar = tar::Archive::new(&data[..]);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = clean(&e.path().unwrap());
            if p.is_empty() {
                continue;
            }
            let (parent, name) = match p.rsplit_once('/') {
                Some((a, b)) => (a.to_string(), b.to_string()),
                None => (String::new(), p.clone()),
            };
            if name == ".wh..wh..opq" {
                let prefix = if parent.is_empty() {
                    String::new()
                } else {
                    format!("{parent}/")
                };
                files.retain(|k, _| !k.starts_with(&prefix) || added.contains(k));
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let target = if parent.is_empty() {
                    gone.to_string()
                } else {
                    format!("{parent}/{gone}")
                };
                let sub = format!("{target}/");
                files.retain(|k, _| *k != target && !k.starts_with(&sub));
                continue;
            }
            let h = e.header().clone();
            let mode = h.mode().unwrap() & 0o7777;
            let (uid, gid) = (h.uid().unwrap(), h.gid().unwrap());
            let ty = h.entry_type();
            let entry = if ty.is_hard_link() {
                let target = clean(&e.link_name().unwrap().unwrap());
                files
                    .get(&target)
                    .cloned()
                    .unwrap_or_else(|| panic!("hard link {p} to missing {target}"))
            } else if ty.is_symlink() {
                Entry {
                    kind: 'l',
                    mode: 0o777,
                    uid,
                    gid,
                    size: 0,
                    digest: String::new(),
                    link: e
                        .link_name()
                        .unwrap()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                }
            } else if ty.is_dir() {
                Entry {
                    kind: 'd',
                    mode,
                    uid,
                    gid,
                    size: 0,
                    digest: String::new(),
                    link: String::new(),
                }
            } else if ty.is_character_special() || ty.is_block_special() || ty.is_fifo() {
                let kind = if ty.is_fifo() {
                    'p'
                } else if ty.is_block_special() {
                    'b'
                } else {
                    'c'
                };
                Entry {
                    kind,
                    mode,
                    uid,
                    gid,
                    size: 0,
                    digest: String::new(),
                    link: String::new(),
                }
            } else {
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                Entry {
                    kind: 'f',
                    mode,
                    uid,
                    gid,
                    size: content.len() as u64,
                    digest: hex::encode(sha2::Sha256::digest(&content)),
                    link: String::new(),
                }
            };
            // A new file replaces a directory's whole subtree.
            if entry.kind != 'd' {
                let sub = format!("{p}/");
                files.retain(|k, _| !k.starts_with(&sub));
            }
            added.insert(p.clone());
            files.insert(p, entry);
        }
    }
    ImageView { config, files }
}

/// The bytes of the member `name` of the tar archive at `path`.
pub fn tar_member(path: &Path, name: &str) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap();
    let mut a = tar::Archive::new(file);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().trim_start_matches("./") == name {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut out).unwrap();
            return out;
        }
    }
    panic!("no `{name}` in `{}`", path.display())
}
