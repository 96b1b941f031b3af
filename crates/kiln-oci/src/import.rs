//! Bringing images into the store: OCI layouts and archives, and root
//! filesystems (a tar or a directory) as one-layer images (`kiln import`).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use kiln_store::{Digest, DigestError, Store, StoreError};
use oci_spec::image::{ImageIndex, Platform};

use crate::compression::{Compression, CompressionError, LayerInfo, LayerWriter};
use crate::image::{Image, ImageError, NewImage};
use crate::output::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, is_index};

/// Errors of importing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` is not an OCI layout: {reason}")]
    NotALayout { path: PathBuf, reason: String },
    #[error("`{path}` has no image named `{name}`; it has: {available}")]
    NoSuchRef {
        path: PathBuf,
        name: String,
        available: String,
    },
    #[error("`{path}` holds {count} images; pick one with a name (it has: {available})")]
    Ambiguous {
        path: PathBuf,
        count: usize,
        available: String,
    },
    #[error("`{path}`: the index has no image for {platform}")]
    NoPlatform { path: PathBuf, platform: String },
    #[error("`{path}`: blob `{name}` is not named by a sha256 digest")]
    BadBlobName {
        path: PathBuf,
        name: String,
        #[source]
        source: DigestError,
    },
    #[error("`{path}`: blob {digest} is missing or damaged")]
    Blob {
        path: PathBuf,
        digest: Digest,
        #[source]
        source: StoreError,
    },
    #[error("`{path}`: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error("`{path}`: tar entry `{entry}` escapes the root (`..`); refusing to import it")]
    Escape { path: PathBuf, entry: String },
    #[error("`{path}` is not a tar archive (after {entries} entries)")]
    NotATar {
        path: PathBuf,
        entries: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the layer for `{path}`")]
    Layer {
        path: PathBuf,
        #[source]
        source: CompressionError,
    },
    #[error("cannot turn directory `{path}` into a layer")]
    Walk {
        path: PathBuf,
        #[source]
        source: kiln_layer::WriteError,
    },
}

type Result<T, E = ImportError> = std::result::Result<T, E>;

/// Where the blobs of a layout come from.
enum Source<'a> {
    /// a layout directory: copy blobs in (verified) as they are needed
    Dir(&'a Path),
    /// an archive already ingested into the store
    Ingested,
}

impl Source<'_> {
    fn ensure(&self, store: &Store, origin: &Path, d: &Digest) -> Result<()> {
        let berr = |source| ImportError::Blob {
            path: origin.to_owned(),
            digest: *d,
            source,
        };
        match self {
            Source::Dir(dir) => {
                if store.has_blob(d) {
                    return Ok(());
                }
                let path = dir.join("blobs").join(d.algorithm().name()).join(d.hex());
                let mut f =
                    File::open(&path).map_err(|source| ImportError::Read { path, source })?;
                store.put_blob_from_reader(&mut f, Some(d)).map_err(berr)?;
                Ok(())
            }
            Source::Ingested => {
                if store.has_blob(d) {
                    Ok(())
                } else {
                    Err(berr(StoreError::BlobNotFound {
                        digest: *d,
                        path: store.blob_path(d),
                    }))
                }
            }
        }
    }
}

fn to_digest(origin: &Path, d: &oci_spec::image::Digest) -> Result<Digest> {
    Digest::try_from(d).map_err(|source| ImportError::BadBlobName {
        path: origin.to_owned(),
        name: d.to_string(),
        source,
    })
}

/// Imports one image from an OCI layout directory. `name` picks an image by
/// its `org.opencontainers.image.ref.name` (or `io.containerd.image.name`);
/// without it the layout must hold exactly one.
pub fn import_oci_layout(store: &Store, dir: &Path, name: Option<&str>) -> Result<Image> {
    let index_path = dir.join("index.json");
    if !dir.join("oci-layout").is_file() {
        return Err(ImportError::NotALayout {
            path: dir.to_owned(),
            reason: "no `oci-layout` file".into(),
        });
    }
    let bytes = fs::read(&index_path).map_err(|source| ImportError::Read {
        path: index_path.clone(),
        source,
    })?;
    resolve(store, dir, &bytes, name, &Source::Dir(dir))
}

/// Imports one image from an OCI archive (a tar of a layout, optionally
/// compressed). Every blob is verified against its name as it is stored.
pub fn import_oci_archive(store: &Store, path: &Path, name: Option<&str>) -> Result<Image> {
    let rerr = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut f = File::open(path).map_err(rerr)?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head).map_err(rerr)?;
    drop(f);
    let f = File::open(path).map_err(rerr)?;
    let reader = Compression::sniff(&head[..n]).decoder(f).map_err(rerr)?;
    let mut archive = tar::Archive::new(reader);
    let mut index = None;
    let mut has_layout = false;
    let terr = |entries, source| ImportError::NotATar {
        path: path.to_owned(),
        entries,
        source,
    };
    for (entries, entry) in archive.entries().map_err(|e| terr(0, e))?.enumerate() {
        let entries = entries as u64 + 1;
        let mut entry = entry.map_err(|e| terr(entries, e))?;
        let p = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_owned();
        if p == "index.json" {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(|e| terr(entries, e))?;
            index = Some(buf);
        } else if p == "oci-layout" {
            has_layout = true;
        } else if let Some(hex) = p.strip_prefix("blobs/sha256/") {
            if hex.is_empty() || !entry.header().entry_type().is_file() {
                continue;
            }
            let d = Digest::from_hex(hex).map_err(|source| ImportError::BadBlobName {
                path: path.to_owned(),
                name: p.clone(),
                source,
            })?;
            if !store.has_blob(&d) {
                store
                    .put_blob_from_reader(&mut entry, Some(&d))
                    .map_err(|source| ImportError::Blob {
                        path: path.to_owned(),
                        digest: d,
                        source,
                    })?;
            }
        }
    }
    if !has_layout {
        return Err(ImportError::NotALayout {
            path: path.to_owned(),
            reason: "no `oci-layout` member".into(),
        });
    }
    let index = index.ok_or_else(|| ImportError::NotALayout {
        path: path.to_owned(),
        reason: "no `index.json` member".into(),
    })?;
    resolve(store, path, &index, name, &Source::Ingested)
}

fn describe(d: &oci_spec::image::Descriptor) -> Option<String> {
    let a = d.annotations().as_ref()?;
    a.get(ANNOTATION_IMAGE_NAME)
        .or_else(|| a.get(ANNOTATION_REF_NAME))
        .cloned()
}

fn resolve(
    store: &Store,
    origin: &Path,
    index_bytes: &[u8],
    name: Option<&str>,
    src: &Source<'_>,
) -> Result<Image> {
    let index: ImageIndex =
        serde_json::from_slice(index_bytes).map_err(|e| ImportError::NotALayout {
            path: origin.to_owned(),
            reason: format!("bad index.json: {e}"),
        })?;
    let all = index.manifests();
    let available = || {
        let names: Vec<String> = all
            .iter()
            .map(|d| describe(d).unwrap_or_else(|| d.digest().to_string()))
            .collect();
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(", ")
        }
    };
    let chosen = match name {
        Some(n) => all
            .iter()
            .find(|d| {
                d.annotations().as_ref().is_some_and(|a| {
                    a.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(n)
                        || a.get(ANNOTATION_IMAGE_NAME).map(String::as_str) == Some(n)
                })
            })
            .ok_or_else(|| ImportError::NoSuchRef {
                path: origin.to_owned(),
                name: n.to_owned(),
                available: available(),
            })?,
        None if all.len() == 1 => &all[0],
        None => {
            return Err(ImportError::Ambiguous {
                path: origin.to_owned(),
                count: all.len(),
                available: available(),
            });
        }
    };
    let mut desc = chosen.clone();
    // Follow nested indexes down to this machine's platform.
    for _ in 0..4 {
        let d = to_digest(origin, desc.digest())?;
        src.ensure(store, origin, &d)?;
        if !is_index(desc.media_type().as_ref()) {
            break;
        }
        let bytes = store.read_blob(&d).map_err(|source| ImportError::Blob {
            path: origin.to_owned(),
            digest: d,
            source,
        })?;
        let inner: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| ImportError::NotALayout {
                path: origin.to_owned(),
                reason: format!("bad nested index {d}: {e}"),
            })?;
        let host = kiln_types::Platform::host();
        desc = inner
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p: &Platform| {
                    host.matches(&kiln_types::Platform::new(
                        &p.os().to_string(),
                        &p.architecture().to_string(),
                        p.variant().as_deref(),
                    ))
                })
            })
            .cloned()
            .ok_or_else(|| ImportError::NoPlatform {
                path: origin.to_owned(),
                platform: host.to_string(),
            })?;
    }
    let manifest_digest = to_digest(origin, desc.digest())?;
    src.ensure(store, origin, &manifest_digest)?;
    // Pull in config and layers before loading, so loading finds them.
    let bytes = store
        .read_blob(&manifest_digest)
        .map_err(|source| ImportError::Blob {
            path: origin.to_owned(),
            digest: manifest_digest,
            source,
        })?;
    let manifest: oci_spec::image::ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| ImportError::NotALayout {
            path: origin.to_owned(),
            reason: format!("bad manifest {manifest_digest}: {e}"),
        })?;
    src.ensure(
        store,
        origin,
        &to_digest(origin, manifest.config().digest())?,
    )?;
    for l in manifest.layers() {
        src.ensure(store, origin, &to_digest(origin, l.digest())?)?;
    }
    Image::load(store, &manifest_digest).map_err(|source| ImportError::Image {
        path: origin.to_owned(),
        source,
    })
}

/// Reads a tar, passing its bytes on unchanged, while checking that no entry
/// climbs out of the root with `..`.
struct Tee<R, W> {
    inner: R,
    out: W,
}

impl<R: Read, W: io::Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Turns a root filesystem tar (plain, gzip or zstd) into a layer, keeping
/// its entries, owners and modes byte for byte.
pub fn rootfs_tar_layer(store: &Store, path: &Path, compression: Compression) -> Result<LayerInfo> {
    let rerr = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut f = File::open(path).map_err(rerr)?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head).map_err(rerr)?;
    drop(f);
    let reader = Compression::sniff(&head[..n])
        .decoder(File::open(path).map_err(rerr)?)
        .map_err(rerr)?;
    let lerr = |source| ImportError::Layer {
        path: path.to_owned(),
        source,
    };
    let mut writer = LayerWriter::new(store, compression).map_err(lerr)?;
    let mut tee = Tee {
        inner: reader,
        out: &mut writer,
    };
    {
        let mut archive = tar::Archive::new(&mut tee);
        let mut count = 0u64;
        let terr = |entries, source| ImportError::NotATar {
            path: path.to_owned(),
            entries,
            source,
        };
        for entry in archive.entries().map_err(|e| terr(0, e))? {
            let entry = entry.map_err(|e| terr(count, e))?;
            count += 1;
            let p = entry.path_bytes();
            if p.split(|b| *b == b'/').any(|c| c == b"..") {
                return Err(ImportError::Escape {
                    path: path.to_owned(),
                    entry: String::from_utf8_lossy(&p).into_owned(),
                });
            }
            let is_link = entry.header().entry_type().is_hard_link();
            let link = if is_link {
                entry.link_name_bytes()
            } else {
                None
            };
            if let Some(l) = link.filter(|l| l.split(|b| *b == b'/').any(|c| c == b"..")) {
                return Err(ImportError::Escape {
                    path: path.to_owned(),
                    entry: String::from_utf8_lossy(&l).into_owned(),
                });
            }
        }
        if count == 0 {
            return Err(terr(
                0,
                io::Error::new(io::ErrorKind::InvalidData, "no entries"),
            ));
        }
    }
    // Whatever follows the end-of-archive blocks belongs to the tar too.
    io::copy(&mut tee, &mut io::sink()).map_err(rerr)?;
    writer.finish().map_err(lerr)
}

/// Turns a directory tree into a layer with kiln-layer's deterministic writer.
pub fn rootfs_dir_layer(
    store: &Store,
    dir: &Path,
    compression: Compression,
    epoch: i64,
) -> Result<LayerInfo> {
    let lerr = |source| ImportError::Layer {
        path: dir.to_owned(),
        source,
    };
    let mut writer = LayerWriter::new(store, compression).map_err(lerr)?;
    let opts = kiln_layer::WriteOptions {
        source_date_epoch: Some(epoch.max(0) as u64),
        xattrs: true,
        ..Default::default()
    };
    writer
        .write_tree(dir, &opts)
        .map_err(|source| ImportError::Walk {
            path: dir.to_owned(),
            source,
        })?;
    writer.finish().map_err(lerr)
}

/// `kiln import`: a root filesystem (tar file or directory) becomes a
/// one-layer image with the default `PATH`.
pub fn import_rootfs(
    store: &Store,
    path: &Path,
    compression: Compression,
    epoch: i64,
) -> Result<Image> {
    let meta = fs::metadata(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    let layer = if meta.is_dir() {
        rootfs_dir_layer(store, path, compression, epoch)?
    } else {
        rootfs_tar_layer(store, path, compression)?
    };
    let mut img = NewImage::scratch(epoch);
    img.config
        .set_env(Some(vec![format!("PATH={}", crate::static_base::PATH)]));
    img.push_layer(layer, "kiln import");
    img.commit(store).map_err(|source| ImportError::Image {
        path: path.to_owned(),
        source,
    })
}
