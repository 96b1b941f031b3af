//! Flattening: the final filesystem of an image as one tar (`type=tar`),
//! computed from the layer tars with OCI whiteout rules, without extracting.
//!
//! Pass 1 walks the layers top-down and decides which layer's entry wins each
//! path: the topmost one, unless an upper layer whited it out
//! (`.wh.NAME`), made its parent opaque (`.wh..wh..opq`) or replaced an
//! ancestor with a non-directory. Pass 2 walks bottom-up and copies the
//! winning entries, so parents come before their children.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use kiln_store::{Digest, Store, StoreError};

use crate::compression::{Compression, CompressionError};
use crate::image::{Image, Layer};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Errors of reading layers back.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("cannot open layer {digest}")]
    Open {
        digest: Digest,
        #[source]
        source: StoreError,
    },
    #[error("layer {digest}: {source}")]
    Compression {
        digest: Digest,
        #[source]
        source: CompressionError,
    },
    #[error("cannot read layer {digest} as a tar")]
    Read {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the flattened tar (at `{path}`)")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Opens a stored layer blob as its uncompressed tar stream.
pub fn open_layer(store: &Store, layer: &Layer) -> Result<Box<dyn Read>, FlattenError> {
    let compression = Compression::from_media_type(&layer.media_type).map_err(|source| {
        FlattenError::Compression {
            digest: layer.digest,
            source,
        }
    })?;
    let f = store
        .open_blob(&layer.digest)
        .map_err(|source| FlattenError::Open {
            digest: layer.digest,
            source,
        })?;
    compression.decoder(f).map_err(|source| FlattenError::Read {
        digest: layer.digest,
        source,
    })
}

/// `./a/b/` -> `a/b`
fn normalize(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut parts: Vec<&str> = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Writes the merged filesystem of `image` as an uncompressed tar.
pub fn write_flat_tar<W: Write>(store: &Store, image: &Image, out: W) -> Result<W, FlattenError> {
    write_flat_tar_with(store, image, &[], out)
}

/// [`write_flat_tar`] with `extra` files (name, bytes) after the root
/// filesystem: the attestations BuildKit's tar exporter puts beside it.
pub fn write_flat_tar_with<W: Write>(
    store: &Store,
    image: &Image,
    extra: &[(&str, &[u8])],
    out: W,
) -> Result<W, FlattenError> {
    // winner: path -> (layer index, entry index within the layer)
    let mut winner: HashMap<String, (usize, usize)> = HashMap::new();
    let mut deleted: HashSet<String> = HashSet::new(); // subtree gone for lower layers
    let mut opaque: HashSet<String> = HashSet::new(); // children gone for lower layers
    for (li, layer) in image.layers.iter().enumerate().rev() {
        let rerr = |source| FlattenError::Read {
            digest: layer.digest,
            source,
        };
        let mut archive = tar::Archive::new(open_layer(store, layer)?);
        let mut new_deleted = Vec::new();
        let mut new_opaque = Vec::new();
        for (ei, entry) in archive.entries().map_err(rerr)?.enumerate() {
            let entry = entry.map_err(rerr)?;
            let path = normalize(&entry.path_bytes());
            if path.is_empty() {
                continue;
            }
            let (parent, base) = match path.rfind('/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => ("", path.as_str()),
            };
            if base == OPAQUE {
                new_opaque.push(parent.to_owned());
                continue;
            }
            if let Some(name) = base.strip_prefix(WHITEOUT) {
                let target = if parent.is_empty() {
                    name.to_owned()
                } else {
                    format!("{parent}/{name}")
                };
                new_deleted.push(target);
                continue;
            }
            // The sets only hold what upper layers did, never this layer.
            let hidden = deleted.contains(&path)
                || opaque.contains("")
                || ancestors(&path).any(|a| deleted.contains(a) || opaque.contains(a));
            if hidden {
                continue;
            }
            match winner.get(&path) {
                Some((l, _)) if *l != li => continue, // an upper layer has it
                _ => {
                    winner.insert(path.clone(), (li, ei));
                }
            }
            if !entry.header().entry_type().is_dir() {
                new_deleted.push(path);
            }
        }
        deleted.extend(new_deleted);
        opaque.extend(new_opaque);
    }

    let mut builder = tar::Builder::new(out);
    for (li, layer) in image.layers.iter().enumerate() {
        let rerr = |source| FlattenError::Read {
            digest: layer.digest,
            source,
        };
        let mut archive = tar::Archive::new(open_layer(store, layer)?);
        for (ei, entry) in archive.entries().map_err(rerr)?.enumerate() {
            let entry = entry.map_err(rerr)?;
            let path = normalize(&entry.path_bytes());
            if winner.get(&path) != Some(&(li, ei)) {
                continue;
            }
            copy_entry(&mut builder, entry, &path)?;
        }
    }
    for (name, bytes) in extra {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(bytes.len() as u64);
        builder
            .append_data(&mut h, name, *bytes)
            .map_err(|source| FlattenError::Write {
                path: (*name).to_owned(),
                source,
            })?;
    }
    builder.into_inner().map_err(|source| FlattenError::Write {
        path: "end of archive".into(),
        source,
    })
}

fn copy_entry<W: Write, R: Read>(
    b: &mut tar::Builder<W>,
    mut entry: tar::Entry<'_, R>,
    path: &str,
) -> Result<(), FlattenError> {
    let werr = |source| FlattenError::Write {
        path: path.to_owned(),
        source,
    };
    // Keep PAX records (xattrs such as `security.capability`, big IDs,
    // precise times); path, link and size are written afresh below.
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(werr)? {
        for ext in exts {
            let ext = ext.map_err(werr)?;
            let key = ext
                .key()
                .map_err(|e| werr(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            if !matches!(key, "path" | "linkpath" | "size") {
                pax.push((key.to_owned(), ext.value_bytes().to_vec()));
            }
        }
    }
    if !pax.is_empty() {
        let data = pax_records(&pax);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, "PaxHeader", data.as_slice())
            .map_err(werr)?;
    }
    let mut header = entry.header().clone();
    let kind = header.entry_type();
    let name = if kind.is_dir() {
        format!("{path}/")
    } else {
        path.to_owned()
    };
    if kind.is_hard_link() || kind.is_symlink() {
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let link = String::from_utf8_lossy(&link).into_owned();
        let link = if kind.is_hard_link() {
            normalize(link.as_bytes())
        } else {
            link
        };
        header.set_size(0);
        b.append_link(&mut header, &name, &link).map_err(werr)
    } else {
        let size = entry.size();
        header.set_size(size);
        b.append_data(&mut header, &name, &mut entry).map_err(werr)
    }
}

/// PAX extended header records: `LEN key=value\n`, LEN counting itself.
fn pax_records(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        let body = k.len() + v.len() + 3; // space, `=`, newline
        let mut len = body + 1;
        while body + len.to_string().len() != len {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pax_record_lengths_count_themselves() {
        let r = super::pax_records(&[("a".into(), b"b".to_vec())]);
        assert_eq!(r, b"6 a=b\n");
        let v = vec![b'x'; 95];
        let r = super::pax_records(&[("SCHILY.xattr.user.k".into(), v)]);
        let s = String::from_utf8(r).unwrap();
        let (n, _) = s.split_once(' ').unwrap();
        assert_eq!(n.parse::<usize>().unwrap(), s.len(), "{s}");
    }
}
