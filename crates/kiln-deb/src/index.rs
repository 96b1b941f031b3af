//! A `Packages` index (or a dpkg `status` file): one record per package
//! with the fields resolution and download need. Field values are spans of
//! the index text, so loading the 60,000 stanzas of Debian `main` costs one
//! pass and no allocation per field.

use std::collections::HashMap;

use deb822_fast::borrowed::BorrowedParagraphIter;
use kiln_store::Digest;

/// An index that cannot be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IndexError {
    #[error("`{name}`: stanza {stanza} is not deb822 text: {detail}")]
    Syntax {
        name: String,
        stanza: usize,
        detail: String,
    },
    #[error("`{name}`: stanza {stanza} has no `Package` field")]
    NoName { name: String, stanza: usize },
    #[error("`{name}`: package `{package}` has an unreadable `{field}: {value}`")]
    Field {
        name: String,
        package: String,
        field: &'static str,
        value: String,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

/// One package of an index; read its fields with [`Index`]'s accessors.
#[derive(Debug, Clone, Copy)]
struct Record {
    name: Span,
    version: Span,
    arch: Span,
    multi_arch: Span,
    depends: Span,
    pre_depends: Span,
    provides: Span,
    filename: Span,
    sha256: Span,
    priority: Span,
    status: Span,
    essential: bool,
    size: u64,
}

/// Handle of a package in an [`Index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PkgId(pub u32);

/// The packages of one or more `Packages` files.
#[derive(Debug, Default)]
pub struct Index {
    text: String,
    records: Vec<Record>,
    /// Package name to its slot in `slots`.
    by_name: HashMap<Box<str>, u32>,
    /// Per name, every version of it.
    slots: Vec<Vec<PkgId>>,
    /// Virtual (provided) name to the packages providing it, with the
    /// provided version.
    provided: HashMap<Box<str>, Vec<(PkgId, Option<Span>)>>,
}

impl Index {
    /// Parses one `Packages` (or dpkg `status`) text named `name` (for
    /// messages) and adds its packages.
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), IndexError> {
        let base = self.text.len();
        self.text.reserve(text.len() + 1);
        self.text.push_str(text);
        self.text.push('\n');
        let own = &self.text[base..base + text.len()];
        let origin = own.as_ptr() as usize;
        let span = |s: &str| Span {
            start: (s.as_ptr() as usize - origin + base) as u32,
            len: s.len() as u32,
        };
        for (i, para) in BorrowedParagraphIter::new(own).enumerate() {
            let para = para.map_err(|e| IndexError::Syntax {
                name: name.to_string(),
                stanza: i + 1,
                detail: e.to_string(),
            })?;
            let mut r = Record {
                name: Span::default(),
                version: Span::default(),
                arch: Span::default(),
                multi_arch: Span::default(),
                depends: Span::default(),
                pre_depends: Span::default(),
                provides: Span::default(),
                filename: Span::default(),
                sha256: Span::default(),
                priority: Span::default(),
                status: Span::default(),
                essential: false,
                size: 0,
            };
            let mut size = "";
            for f in para.iter() {
                let Some(v) = f.as_single_line() else {
                    continue;
                };
                let v = v.trim();
                match f.name() {
                    "Package" => r.name = span(v),
                    "Version" => r.version = span(v),
                    "Architecture" => r.arch = span(v),
                    "Multi-Arch" => r.multi_arch = span(v),
                    "Depends" => r.depends = span(v),
                    "Pre-Depends" => r.pre_depends = span(v),
                    "Provides" => r.provides = span(v),
                    "Filename" => r.filename = span(v),
                    "SHA256" => r.sha256 = span(v),
                    "Priority" => r.priority = span(v),
                    "Status" => r.status = span(v),
                    "Essential" => r.essential = v == "yes",
                    "Size" => size = v,
                    _ => {}
                }
            }
            if r.name.len == 0 {
                return Err(IndexError::NoName {
                    name: name.to_string(),
                    stanza: i + 1,
                });
            }
            if !size.is_empty() {
                r.size = size.parse().map_err(|_| IndexError::Field {
                    name: name.to_string(),
                    package: self.text[r.name.start as usize..][..r.name.len as usize].to_string(),
                    field: "Size",
                    value: size.to_string(),
                })?;
            }
            let id = PkgId(self.records.len() as u32);
            self.records.push(r);
            let pname = &self.text[r.name.start as usize..(r.name.start + r.name.len) as usize];
            match self.by_name.get(pname) {
                Some(&slot) => self.slots[slot as usize].push(id),
                None => {
                    self.by_name.insert(pname.into(), self.slots.len() as u32);
                    self.slots.push(vec![id]);
                }
            }
            if r.provides.len > 0 {
                let text = &self.text
                    [r.provides.start as usize..(r.provides.start + r.provides.len) as usize];
                for (name, version) in provides(text) {
                    let v = version.map(span);
                    match self.provided.get_mut(name) {
                        Some(list) => list.push((id, v)),
                        None => {
                            self.provided.insert(name.into(), vec![(id, v)]);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// An index of one text.
    pub fn parse(name: &str, text: &str) -> Result<Index, IndexError> {
        let mut index = Index::default();
        index.add(name, text)?;
        Ok(index)
    }

    fn get(&self, s: Span) -> &str {
        &self.text[s.start as usize..(s.start + s.len) as usize]
    }

    fn rec(&self, id: PkgId) -> &Record {
        &self.records[id.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every version of the package called `name`.
    pub fn named(&self, name: &str) -> &[PkgId] {
        self.slot(name).map_or(&[], |s| self.slot_ids(s))
    }

    /// The slot of a name: names are numbered `0..slot_count()`.
    pub fn slot(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Every version of the name in `slot`.
    pub fn slot_ids(&self, slot: u32) -> &[PkgId] {
        &self.slots[slot as usize]
    }

    /// All package names (for did-you-mean).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(|k| &**k)
    }

    /// The packages whose `Provides` names `name`, with the version they
    /// provide.
    pub fn providers(&self, name: &str) -> Vec<(PkgId, Option<&str>)> {
        self.provided.get(name).map_or_else(Vec::new, |list| {
            list.iter()
                .map(|(id, v)| (*id, v.map(|v| self.get(v))))
                .collect()
        })
    }

    /// Every package.
    pub fn ids(&self) -> impl Iterator<Item = PkgId> + use<> {
        (0..self.records.len() as u32).map(PkgId)
    }

    pub fn name(&self, id: PkgId) -> &str {
        self.get(self.rec(id).name)
    }
    pub fn version(&self, id: PkgId) -> &str {
        self.get(self.rec(id).version)
    }
    pub fn arch(&self, id: PkgId) -> &str {
        self.get(self.rec(id).arch)
    }
    /// `same`, `foreign`, `allowed` or empty.
    pub fn multi_arch(&self, id: PkgId) -> &str {
        self.get(self.rec(id).multi_arch)
    }
    pub fn depends(&self, id: PkgId) -> &str {
        self.get(self.rec(id).depends)
    }
    pub fn pre_depends(&self, id: PkgId) -> &str {
        self.get(self.rec(id).pre_depends)
    }
    pub fn provides(&self, id: PkgId) -> &str {
        self.get(self.rec(id).provides)
    }
    /// The pool path below the mirror root.
    pub fn filename(&self, id: PkgId) -> &str {
        self.get(self.rec(id).filename)
    }
    pub fn size(&self, id: PkgId) -> u64 {
        self.rec(id).size
    }
    /// The `.deb`'s SHA256 as the index gives it, if it does.
    pub fn sha256(&self, id: PkgId) -> Option<Digest> {
        Digest::from_hex(self.get(self.rec(id).sha256)).ok()
    }
    pub fn priority(&self, id: PkgId) -> &str {
        self.get(self.rec(id).priority)
    }
    pub fn essential(&self, id: PkgId) -> bool {
        self.rec(id).essential
    }
    /// dpkg's `Status` (status files only).
    pub fn status(&self, id: PkgId) -> &str {
        self.get(self.rec(id).status)
    }
}

/// The names a `Provides` field gives, with their versions (`name (=
/// version)`), read without allocating.
pub(crate) fn provides(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    text.split([',', '|']).filter_map(|p| {
        let p = p.trim();
        let end = p.find([' ', '(', ':']).unwrap_or(p.len());
        let name = &p[..end];
        if name.is_empty() {
            return None;
        }
        let version = p[end..].split_once('(').and_then(|(_, rest)| {
            let inner = rest.split_once(')')?.0.trim();
            Some(inner.trim_start_matches(['=', '<', '>']).trim())
        });
        Some((name, version.filter(|v| !v.is_empty())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_spans() {
        let mut idx = Index::parse(
            "a",
            "Package: a\nVersion: 1.0\nArchitecture: amd64\nDepends: b (>= 2) | c\nSize: 10\nSHA256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nDescription: x\n more\n\nPackage: b\nVersion: 2\nArchitecture: all\nEssential: yes\n",
        )
        .unwrap();
        idx.add("second", "Package: a\nVersion: 1.1\n").unwrap();
        assert_eq!(idx.len(), 3);
        let a = idx.named("a");
        assert_eq!(a.len(), 2);
        assert_eq!(idx.depends(a[0]), "b (>= 2) | c");
        assert_eq!(idx.size(a[0]), 10);
        assert!(idx.sha256(a[0]).is_some());
        assert_eq!(idx.version(a[1]), "1.1");
        assert!(idx.essential(idx.named("b")[0]));
        assert!(idx.named("zz").is_empty());
    }

    #[test]
    fn bad_size_is_named() {
        let e = Index::parse("p", "Package: a\nSize: ten\n").unwrap_err();
        assert!(e.to_string().contains("Size: ten"), "{e}");
        assert!(Index::parse("p", "Version: 1\n").is_err());
    }
}
