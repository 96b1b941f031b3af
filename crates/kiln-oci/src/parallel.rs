//! The chunked compression format of layer streams.
//!
//! The uncompressed stream is cut into fixed 1 MiB chunks, compressed on
//! worker threads ([`crate::pipeline`]) and written in order. The output depends only on the input
//! bytes and the chunk size, never on the number of threads or timing:
//!
//! - gzip: one gzip member; each chunk is a raw deflate run ended with a
//!   full flush (byte-aligned, no back-references across chunks, RFC 1951
//!   §3.2.3 allows any number of non-final blocks), the last chunk ends
//!   with the final block; header fixed (mtime 0, no name, OS 255) and the
//!   CRC-32/ISIZE trailer computed over the whole stream (RFC 1952).
//! - zstd: one frame per chunk; concatenated frames are a valid zstd stream
//!   (RFC 8878 §3.1) that every decoder reads.

use std::io;

/// Chunk size; part of the output format: changing it changes digests.
pub const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip { level: u32 },
    Zstd { level: i32 },
}

pub(crate) const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Compresses one chunk; `last` ends the gzip stream (final deflate block).
pub(crate) fn compress_chunk(codec: Codec, data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    match codec {
        Codec::Zstd { level } => {
            if data.is_empty() {
                // An empty final chunk needs no frame, unless the whole
                // stream is empty; a layer tar never is.
                return Ok(Vec::new());
            }
            zstd::bulk::compress(data, level)
        }
        Codec::Gzip { level } => {
            use flate2::{Compress, FlushCompress, Status};
            let mut c = Compress::new(flate2::Compression::new(level), false);
            let mut out: Vec<u8> = Vec::with_capacity(data.len() / 2 + 4096);
            let flush = if last {
                FlushCompress::Finish
            } else {
                FlushCompress::Full
            };
            loop {
                if out.capacity() - out.len() < 4096 {
                    out.reserve(out.capacity().max(64 * 1024));
                }
                let consumed = c.total_in() as usize;
                let status = c
                    .compress_vec(&data[consumed..], &mut out, flush)
                    .map_err(io::Error::other)?;
                let all_in = c.total_in() as usize == data.len();
                match status {
                    Status::StreamEnd => break,
                    // A full flush is complete once all input is taken and
                    // deflate left output space unused (zlib's contract).
                    _ if !last && all_in && out.len() < out.capacity() => break,
                    _ => {}
                }
            }
            Ok(out)
        }
    }
}
