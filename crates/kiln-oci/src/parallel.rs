//! Deterministic parallel compression of a layer stream.
//!
//! The uncompressed stream is cut into fixed 1 MiB chunks, compressed on
//! worker threads and written in order. The output depends only on the input
//! bytes and the chunk size, never on the number of threads or timing:
//!
//! - gzip: one gzip member; each chunk is a raw deflate run ended with a
//!   full flush (byte-aligned, no back-references across chunks, RFC 1951
//!   §3.2.3 allows any number of non-final blocks), the last chunk ends
//!   with the final block; header fixed (mtime 0, no name, OS 255) and the
//!   CRC-32/ISIZE trailer computed over the whole stream (RFC 1952).
//! - zstd: one frame per chunk; concatenated frames are a valid zstd stream
//!   (RFC 8878 §3.1) that every decoder reads.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Chunk size; part of the output format: changing it changes digests.
pub const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip { level: u32 },
    Zstd { level: i32 },
}

struct Job {
    data: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// Compresses what is written to it into `out`, using worker threads.
pub(crate) struct ParallelEncoder<W: Write> {
    out: Option<W>,
    codec: Codec,
    buf: Vec<u8>,
    crc: flate2::Crc,
    jobs: Option<SyncSender<Job>>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    workers: Vec<JoinHandle<()>>,
    max_pending: usize,
    header_written: bool,
}

const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

impl<W: Write> ParallelEncoder<W> {
    pub(crate) fn new(out: W, codec: Codec) -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        let (tx, rx) = sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let res = compress_chunk(codec, &job.data, job.last);
                        let _ = job.reply.send(res);
                    }
                })
            })
            .collect();
        Self {
            out: Some(out),
            codec,
            buf: Vec::with_capacity(CHUNK),
            crc: flate2::Crc::new(),
            jobs: Some(tx),
            pending: VecDeque::new(),
            workers,
            max_pending: threads * 2,
            header_written: false,
        }
    }

    fn out(&mut self) -> &mut W {
        self.out.as_mut().expect("encoder used after finish")
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        if !self.header_written {
            self.header_written = true;
            if matches!(self.codec, Codec::Gzip { .. }) {
                self.out().write_all(&GZIP_HEADER)?;
            }
        }
        let data = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(if last { 0 } else { CHUNK }),
        );
        if let Codec::Gzip { .. } = self.codec {
            self.crc.update(&data);
        }
        let (reply, rx) = sync_channel(1);
        let jobs = self.jobs.as_ref().expect("encoder used after finish");
        jobs.send(Job { data, last, reply })
            .map_err(|_| io::Error::other("compression worker stopped"))?;
        self.pending.push_back(rx);
        while self.pending.len() > self.max_pending {
            self.drain_one()?;
        }
        Ok(())
    }

    fn drain_one(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let bytes = rx
                .recv()
                .map_err(|_| io::Error::other("compression worker died"))??;
            self.out().write_all(&bytes)?;
        }
        Ok(())
    }

    /// Compresses the rest, writes the trailer and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        if let Codec::Gzip { .. } = self.codec {
            let (sum, amount) = (self.crc.sum(), self.crc.amount());
            let out = self.out();
            out.write_all(&sum.to_le_bytes())?;
            out.write_all(&amount.to_le_bytes())?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        Ok(self.out.take().expect("writer present"))
    }
}

impl<W: Write> Write for ParallelEncoder<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let room = CHUNK - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == CHUNK {
                self.submit(false)?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelEncoder<W> {
    fn drop(&mut self) {
        // Close the queue so workers exit; results nobody reads are dropped.
        self.jobs = None;
        self.pending.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn compress_chunk(codec: Codec, data: &[u8], last: bool) -> io::Result<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut x: u32 = 1;
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            // Half text-like, half noise: both compressible and not.
            if (v.len() / 4096) % 2 == 0 {
                v.extend_from_slice(b"the quick brown fox jumps over the lazy dog ");
            } else {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.truncate(n);
        v
    }

    fn encode(codec: Codec, data: &[u8], piece: usize) -> Vec<u8> {
        let mut e = ParallelEncoder::new(Vec::new(), codec);
        for p in data.chunks(piece.max(1)) {
            e.write_all(p).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn gzip_roundtrips_and_is_deterministic() {
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 777] {
            let data = sample(n);
            let a = encode(Codec::Gzip { level: 6 }, &data, 7919);
            let b = encode(Codec::Gzip { level: 6 }, &data, 65536);
            assert_eq!(a, b, "same bytes whatever the write sizes (n={n})");
            assert_eq!(&a[..10], &GZIP_HEADER);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&a[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "n={n}");
        }
    }

    #[test]
    fn gzip_is_read_by_gnu_gzip() {
        let data = sample(2 * CHUNK + 5);
        let gz = encode(Codec::Gzip { level: 6 }, &data, 100_000);
        let mut child = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&gz).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn zstd_roundtrips_and_is_deterministic() {
        for n in [1, CHUNK, 2 * CHUNK + 3] {
            let data = sample(n);
            let a = encode(Codec::Zstd { level: 3 }, &data, 4096);
            let b = encode(Codec::Zstd { level: 3 }, &data, 1 << 20);
            assert_eq!(a, b);
            let mut back = Vec::new();
            zstd::stream::read::Decoder::new(&a[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }
}
