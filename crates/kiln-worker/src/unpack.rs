//! `ADD` of a local archive: a source file that is a tar, plain or
//! compressed with gzip, bzip2, xz or zstd, is extracted into the
//! destination. Told by content as BuildKit does (its file backend's
//! `isArchivePath`: a regular file whose decompressed stream starts with a
//! valid tar header), never by name. The extraction is kiln-layer's
//! confined apply, the one image layers go through: no entry leaves the
//! destination, whatever its name or the links before it.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use kiln_layer::{ApplyError, ApplyOptions, ApplySummary, Ownership, WhiteoutMode};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot read the archive `{path}`")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot extract the archive `{name}`")]
    Apply {
        name: String,
        #[source]
        source: ApplyError,
    },
}

/// The compression of a stream, by its magic number (as moby's
/// `compression.DetectCompression`, which BuildKit uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// `path` opened and decompressed as its first bytes say.
fn open(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut f = BufReader::new(File::open(path)?);
    let head = {
        use std::io::BufRead;
        f.fill_buf()?.to_vec()
    };
    Ok(match detect(&head) {
        Compression::None => Box::new(f),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(f)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(f)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(f)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(f)?),
    })
}

/// Whether the regular file at `path` is a tar archive: its (decompressed)
/// stream starts with a tar header whose checksum holds. Anything else,
/// unreadable or corrupt included, is copied as it is, as BuildKit does.
pub fn is_archive(path: &Path) -> bool {
    let Ok(r) = open(path) else { return false };
    let mut ar = tar::Archive::new(r);
    let Ok(mut entries) = ar.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

/// Extracts the archive at `path` into the directory `target`. Entries keep
/// the owners the tar records (the calling user's when rootless, with
/// set-ID bits dropped), as BuildKit's untar does; `--chown` applies only
/// to the directories the copy creates.
pub fn extract(path: &Path, name: &str, target: &Path) -> Result<ApplySummary, UnpackError> {
    let r = open(path).map_err(|source| UnpackError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Delete,
        ownership: Ownership::auto(),
        id_map: None,
        xattrs: true,
        max_size: kiln_layer::max_size_from_env(),
    };
    kiln_layer::apply_tar(r, target, &opts).map_err(|source| UnpackError::Apply {
        name: name.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(detect(&[0x1f, 0x8b, 0x08, 0]), Compression::Gzip);
        assert_eq!(detect(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(
            detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]),
            Compression::Xz
        );
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 1]), Compression::Zstd);
        assert_eq!(detect(b"hello"), Compression::None);
        assert_eq!(detect(&[0x1f]), Compression::None);
    }
}
