//! Layer compression: reproducible gzip, zstd or none, and the layer writer
//! that hashes the uncompressed stream (diff ID) and the stored blob at once.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use kiln_store::{BlobWriter, Digest, Store, StoreError};

use crate::parallel::{CHUNK, Codec};
use crate::pipeline::Pipeline;

/// OCI and Docker media types for layers.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_DOCKER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("unknown compression `{0}`: use gzip, zstd or none")]
    Unknown(String),
    #[error("layer media type `{0}` is not a tar layer kiln can read")]
    UnknownMediaType(String),
    #[error("cannot compress layer ({compression})")]
    Encode {
        compression: Compression,
        #[source]
        source: io::Error,
    },
    #[error("cannot store layer")]
    Store(#[source] StoreError),
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        })
    }
}

impl FromStr for Compression {
    type Err = CompressionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "uncompressed" => Ok(Compression::None),
            other => Err(CompressionError::Unknown(other.to_owned())),
        }
    }
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => MEDIA_LAYER_GZIP,
            Compression::Zstd => MEDIA_LAYER_ZSTD,
            Compression::None => MEDIA_LAYER_TAR,
        }
    }

    /// The compression of a layer with this media type (OCI or Docker).
    pub fn from_media_type(media_type: &str) -> Result<Self, CompressionError> {
        match media_type {
            MEDIA_LAYER_GZIP
            | MEDIA_DOCKER_LAYER_GZIP
            | MEDIA_DOCKER_FOREIGN_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
                Ok(Compression::Gzip)
            }
            MEDIA_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Ok(Compression::Zstd)
            }
            MEDIA_LAYER_TAR
            | MEDIA_DOCKER_LAYER_TAR
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
            other => Err(CompressionError::UnknownMediaType(other.to_owned())),
        }
    }

    /// Guesses the compression of a stream from its first bytes (magic numbers).
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// Wraps `r` in the matching decompressor.
    pub fn decoder<'a, R: Read + 'a>(self, r: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            // Multi-member gzip streams are legal layers.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(r))),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
            Compression::None => Box::new(r),
        })
    }
}

/// Compression level for gzip. Level 6 matches `gzip`'s default; the header
/// is fixed (mtime 0, no name, OS byte 255 "unknown") and chunking is fixed
/// (see [`crate::parallel`]), so output depends on the input bytes only.
const GZIP_LEVEL: u32 = 6;
/// zstd level 1: about three times level 3's speed on this class of CPU for a
/// ratio a tenth lower (2.5 vs 2.8 on /usr/bin), the trade the 400 MB/s
/// layer export goal asks for
const ZSTD_LEVEL: i32 = 1;

/// A finished layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// digest of the stored (compressed) blob
    pub digest: Digest,
    /// size of the stored blob
    pub size: u64,
    /// sha256 of the uncompressed tar
    pub diff_id: Digest,
    /// OCI or Docker media type of the blob
    pub media_type: String,
}

/// Receives an uncompressed layer tar, compresses it into the store and
/// computes its diff ID on the way. Hashing, compression and the blob write
/// run on threads of their own ([`crate::pipeline`]), overlapping with
/// whatever produces the tar; [`LayerWriter::write_tree`] feeds kiln-layer's
/// walker into it without copying.
pub struct LayerWriter {
    pipe: Pipeline<BlobWriter>,
    compression: Compression,
}

impl LayerWriter {
    /// Starts a layer blob in `store`.
    pub fn new(store: &Store, compression: Compression) -> Result<Self, CompressionError> {
        let blob = store.blob_writer().map_err(CompressionError::Store)?;
        let pipe = match compression {
            Compression::Gzip => Pipeline::new(blob, Some(Codec::Gzip { level: GZIP_LEVEL }), true),
            Compression::Zstd => Pipeline::new(blob, Some(Codec::Zstd { level: ZSTD_LEVEL }), true),
            // Uncompressed, the blob is the tar: the store's hash serves both.
            Compression::None => Pipeline::new(blob, None, false),
        };
        Ok(Self { pipe, compression })
    }

    /// Bytes of uncompressed tar handed to the pipeline so far (whole
    /// chunks; the rest is counted by [`LayerWriter::finish`]).
    pub fn uncompressed_size(&self) -> u64 {
        self.pipe.bytes()
    }

    /// Writes the tree under `dir` into the layer with kiln-layer's
    /// deterministic writer, chunk buffers passed on without a copy. The
    /// same bytes as `kiln_layer::write_tar(dir, &mut layer_writer, opts)`.
    pub fn write_tree(
        &mut self,
        dir: &std::path::Path,
        opts: &kiln_layer::WriteOptions,
    ) -> Result<kiln_layer::WriteSummary, kiln_layer::WriteError> {
        kiln_layer::write_tar_chunks(dir, self, CHUNK, opts)
    }

    /// Flushes the compressor and commits the blob.
    pub fn finish(self) -> Result<LayerInfo, CompressionError> {
        let compression = self.compression;
        let (blob, diff) = self
            .pipe
            .finish()
            .map_err(|source| CompressionError::Encode {
                compression,
                source,
            })?;
        let size = blob.size();
        let digest = blob.commit(None).map_err(CompressionError::Store)?;
        let diff_id = match diff {
            Some(h) => Digest::from_hasher(h),
            None => digest,
        };
        Ok(LayerInfo {
            digest,
            size,
            diff_id,
            media_type: compression.media_type().to_owned(),
        })
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pipe.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl kiln_layer::ChunkSink for LayerWriter {
    fn put(&mut self, chunk: &mut Vec<u8>) -> io::Result<()> {
        self.pipe.put(chunk)
    }
}

/// Stores an uncompressed tar held in memory as a layer.
pub fn layer_from_bytes(
    store: &Store,
    tar: &[u8],
    compression: Compression,
) -> Result<LayerInfo, CompressionError> {
    let mut w = LayerWriter::new(store, compression)?;
    w.write_all(tar)
        .map_err(|source| CompressionError::Encode {
            compression,
            source,
        })?;
    w.finish()
}
