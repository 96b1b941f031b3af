//! The layer export pipeline: the tar stream (from kiln-layer's walker, in
//! 1 MiB chunks) flows through threads so that reading the tree, hashing,
//! compressing and writing the blob overlap instead of taking turns:
//!
//! ```text
//! caller (walk, read files      stage thread          workers (N)        writer thread
//! into chunk buffers) ──chunk──▶ diff_id sha256 ──job──▶ compress chunk ──▶ in order: sha256 of
//!        ▲                       (+ gzip CRC-32)                            the blob, write, flush
//!        └──────────── spare buffers (no allocation per chunk) ◀───────────┘
//! ```
//!
//! Bytes never depend on the thread count or on timing: chunks are cut at
//! fixed [`CHUNK`] offsets of the stream and written in stream order (see
//! [`crate::parallel`] for the per-chunk formats). A chunk goes from stage to
//! stage by ownership, so the walker's buffer is hashed and compressed
//! without a copy.
//!
//! Failure: if any stage fails, the others stop; the caller sees the first
//! real cause (a full disk, say), and the output writer is dropped unfinished
//! (a store blob writer then deletes its temp file).

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use crate::parallel::{CHUNK, Codec, GZIP_HEADER, compress_chunk};

/// What the caller hands to the stage thread.
enum Msg {
    /// exactly [`CHUNK`] bytes
    Full(Vec<u8>),
    /// the rest of the stream (shorter than a chunk, possibly empty)
    End(Vec<u8>),
}

/// What the writer thread writes, in order.
enum Out {
    /// bytes as they are (headers, trailers, uncompressed chunks); the
    /// buffer goes back to the spare pool when `recycle` is set
    Raw(Vec<u8>, bool),
    /// a chunk being compressed by a worker
    Pending(Receiver<io::Result<Vec<u8>>>),
    /// the stream is complete
    Done,
}

struct Job {
    data: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// What the stage thread computed over the uncompressed stream.
struct Sums {
    diff: Option<Sha256>,
}

/// A pipeline from an uncompressed tar stream to `W`, compressed with
/// `codec` (or passed through when `None`).
pub(crate) struct Pipeline<W: Write + Send + 'static> {
    tx: Option<SyncSender<Msg>>,
    spare: Receiver<Vec<u8>>,
    stage: Option<JoinHandle<io::Result<Sums>>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
    /// the `Write` path's partial chunk
    staging: Vec<u8>,
    bytes: u64,
}

fn stopped() -> io::Error {
    io::Error::other("layer pipeline stopped before the end of the stream")
}

impl<W: Write + Send + 'static> Pipeline<W> {
    /// Starts the threads. `hash_diff`: compute the sha256 of the
    /// uncompressed stream (the diff ID) on the way.
    pub(crate) fn new(out: W, codec: Option<Codec>, hash_diff: bool) -> Self {
        let threads = match codec {
            None => 0,
            Some(_) => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 8),
        };
        let (spare_tx, spare) = channel::<Vec<u8>>();
        let (tx, rx) = sync_channel::<Msg>(2);
        let (out_tx, out_rx) = sync_channel::<Out>(2 * threads + 2);
        let (job_tx, job_rx) = sync_channel::<Job>(threads.max(1));
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let spare = spare_tx.clone();
                let codec = codec.expect("workers only for a codec");
                std::thread::spawn(move || worker(codec, &rx, &spare))
            })
            .collect();
        let writer_spare = spare_tx.clone();
        let writer = std::thread::spawn(move || write_out(out, &out_rx, &writer_spare));
        let stage = std::thread::spawn(move || {
            stage(
                codec,
                hash_diff,
                &rx,
                if threads > 0 { Some(job_tx) } else { None },
                &out_tx,
            )
        });
        Self {
            tx: Some(tx),
            spare,
            stage: Some(stage),
            workers,
            writer: Some(writer),
            staging: Vec::with_capacity(CHUNK),
            bytes: 0,
        }
    }

    /// Bytes of uncompressed stream received.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    fn spare(&self) -> Vec<u8> {
        self.spare.try_recv().unwrap_or_default()
    }

    fn send(&mut self, m: Msg) -> io::Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(m).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // A stage stopped: report why, not just that it did.
            Err(self.shutdown().err().unwrap_or_else(stopped))
        }
    }

    /// Takes a whole chunk buffer without copying it when it is exactly
    /// [`CHUNK`] long and nothing is staged; otherwise copies. Leaves a spare
    /// buffer in its place.
    pub(crate) fn put(&mut self, chunk: &mut Vec<u8>) -> io::Result<()> {
        if self.staging.is_empty() && chunk.len() == CHUNK {
            let spare = self.spare();
            let full = std::mem::replace(chunk, spare);
            self.bytes += CHUNK as u64;
            self.send(Msg::Full(full))
        } else {
            self.write_all(chunk)
        }
    }

    /// Sends the rest, waits for every stage and returns the writer and the
    /// diff ID hasher (when asked for).
    pub(crate) fn finish(mut self) -> io::Result<(W, Option<Sha256>)> {
        let rest = std::mem::take(&mut self.staging);
        self.send(Msg::End(rest))?;
        self.tx = None;
        let stage = self.stage.take().expect("stage present").join();
        let writer = self.writer.take().expect("writer present").join();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let out = writer.map_err(|_| io::Error::other("layer writer thread panicked"))??;
        let sums = stage.map_err(|_| io::Error::other("layer hash thread panicked"))??;
        Ok((out, sums.diff))
    }

    /// Stops every thread; the first real error, if any.
    fn shutdown(&mut self) -> io::Result<()> {
        self.tx = None;
        let stage = self.stage.take().map(|h| h.join());
        let writer = self.writer.take().map(|h| h.join());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // The writer's error is the cause (a full disk); the stage's is
        // usually just "stopped" because the writer went away.
        if let Some(Ok(Err(e))) = writer {
            return Err(e);
        }
        if let Some(Ok(Err(e))) = stage {
            return Err(e);
        }
        Ok(())
    }
}

impl<W: Write + Send + 'static> Write for Pipeline<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let n = (CHUNK - self.staging.len()).min(data.len());
            self.staging.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.staging.len() == CHUNK {
                let mut next = self.spare();
                next.clear();
                next.reserve(CHUNK);
                let full = std::mem::replace(&mut self.staging, next);
                self.bytes += CHUNK as u64;
                self.send(Msg::Full(full))?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for Pipeline<W> {
    fn drop(&mut self) {
        // Unfinished: closing the input makes every stage stop, and the
        // writer drops `W` without finishing it.
        let _ = self.shutdown();
    }
}

fn stage(
    codec: Option<Codec>,
    hash_diff: bool,
    rx: &Receiver<Msg>,
    jobs: Option<SyncSender<Job>>,
    out: &SyncSender<Out>,
) -> io::Result<Sums> {
    let mut diff = hash_diff.then(Sha256::new);
    let mut crc = flate2::Crc::new();
    let gzip = matches!(codec, Some(Codec::Gzip { .. }));
    let send = |o: Out| out.send(o).map_err(|_| stopped());
    if gzip {
        send(Out::Raw(GZIP_HEADER.to_vec(), false))?;
    }
    loop {
        // A closed channel without `End` means the caller gave up.
        let (data, last) = match rx.recv().map_err(|_| stopped())? {
            Msg::Full(d) => (d, false),
            Msg::End(d) => (d, true),
        };
        if let Some(h) = diff.as_mut() {
            h.update(&data);
        }
        if gzip {
            crc.update(&data);
        }
        match &jobs {
            None => {
                if !data.is_empty() {
                    send(Out::Raw(data, true))?;
                }
            }
            Some(jobs) => {
                let (reply, result) = sync_channel(1);
                jobs.send(Job { data, last, reply })
                    .map_err(|_| stopped())?;
                send(Out::Pending(result))?;
            }
        }
        if last {
            break;
        }
    }
    if gzip {
        let mut trailer = crc.sum().to_le_bytes().to_vec();
        trailer.extend_from_slice(&crc.amount().to_le_bytes());
        send(Out::Raw(trailer, false))?;
    }
    send(Out::Done)?;
    Ok(Sums { diff })
}

fn worker(codec: Codec, jobs: &Mutex<Receiver<Job>>, spare: &Sender<Vec<u8>>) {
    // One zstd context per thread, reused: the same frames as a fresh
    // context (parameters are set once and every call is a whole frame),
    // without re-allocating its tables for every chunk.
    let mut zstd = match codec {
        Codec::Zstd { level } => zstd::bulk::Compressor::new(level).ok(),
        Codec::Gzip { .. } => None,
    };
    loop {
        let job = match jobs.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let res = match (&mut zstd, codec) {
            (Some(z), Codec::Zstd { .. }) if !job.data.is_empty() => z.compress(&job.data),
            _ => compress_chunk(codec, &job.data, job.last),
        };
        let _ = job.reply.send(res);
        let _ = spare.send(job.data);
    }
}

fn write_out<W: Write>(mut w: W, rx: &Receiver<Out>, spare: &Sender<Vec<u8>>) -> io::Result<W> {
    loop {
        // A closed channel without `Done`: an earlier stage stopped; `w`
        // is dropped unfinished.
        match rx.recv().map_err(|_| stopped())? {
            Out::Raw(bytes, recycle) => {
                w.write_all(&bytes)?;
                if recycle {
                    let _ = spare.send(bytes);
                }
            }
            Out::Pending(result) => {
                let bytes = result
                    .recv()
                    .map_err(|_| io::Error::other("compression worker died"))??;
                w.write_all(&bytes)?;
            }
            Out::Done => {
                w.flush()?;
                return Ok(w);
            }
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
            if (v.len() / 4096) % 2 == 0 {
                v.extend_from_slice(b"the quick brown fox jumps over the lazy dog ");
            } else {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.truncate(n);
        v
    }

    /// The format spelled out sequentially: what the pipeline must produce.
    fn reference(codec: Codec, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let gzip = matches!(codec, Codec::Gzip { .. });
        if gzip {
            out.extend_from_slice(&GZIP_HEADER);
        }
        let full = data.len() / CHUNK;
        for c in data.chunks(CHUNK).take(full) {
            out.extend(compress_chunk(codec, c, false).unwrap());
        }
        out.extend(compress_chunk(codec, &data[full * CHUNK..], true).unwrap());
        if gzip {
            let mut crc = flate2::Crc::new();
            crc.update(data);
            out.extend_from_slice(&crc.sum().to_le_bytes());
            out.extend_from_slice(&crc.amount().to_le_bytes());
        }
        out
    }

    fn run(codec: Option<Codec>, data: &[u8], piece: usize, whole_chunks: bool) -> Vec<u8> {
        let mut p = Pipeline::new(Vec::new(), codec, true);
        if whole_chunks {
            for c in data.chunks(CHUNK) {
                let mut v = c.to_vec();
                p.put(&mut v).unwrap();
            }
        } else {
            for c in data.chunks(piece) {
                p.write_all(c).unwrap();
            }
        }
        assert_eq!(p.bytes() as usize, data.len() / CHUNK * CHUNK);
        let (out, diff) = p.finish().unwrap();
        assert_eq!(diff.unwrap().finalize()[..], Sha256::digest(data)[..]);
        out
    }

    #[test]
    fn same_bytes_as_the_sequential_format() {
        for n in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK,
            5 * CHUNK + 777,
        ] {
            let data = sample(n);
            for codec in [Codec::Gzip { level: 6 }, Codec::Zstd { level: 1 }] {
                let want = reference(codec, &data);
                for (piece, whole) in [(7919, false), (CHUNK, false), (0, true)] {
                    let got = run(Some(codec), &data, piece.max(1), whole);
                    assert!(got == want, "{codec:?} n={n} piece={piece} whole={whole}");
                }
            }
            assert!(run(None, &data, 4096, false) == data, "n={n}");
            assert!(run(None, &data, 0, true) == data, "n={n}");
        }
    }

    #[test]
    fn gzip_output_is_read_by_gnu_gzip() {
        let data = sample(2 * CHUNK + 5);
        let gz = run(Some(Codec::Gzip { level: 6 }), &data, 100_000, false);
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
    fn zstd_output_decodes() {
        let data = sample(3 * CHUNK + 3);
        let z = run(Some(Codec::Zstd { level: 1 }), &data, 65536, false);
        let mut back = Vec::new();
        zstd::stream::read::Decoder::new(&z[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    /// A writer that fails like a full disk after `room` bytes, and records
    /// whether it was dropped.
    struct Full {
        room: usize,
        dropped: Arc<Mutex<bool>>,
    }

    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if b.len() > self.room {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            self.room -= b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for Full {
        fn drop(&mut self) {
            *self.dropped.lock().unwrap() = true;
        }
    }

    #[test]
    fn a_full_disk_is_reported_as_such_and_stops_the_stream() {
        for codec in [
            None,
            Some(Codec::Zstd { level: 1 }),
            Some(Codec::Gzip { level: 1 }),
        ] {
            let dropped = Arc::new(Mutex::new(false));
            let w = Full {
                room: 100_000,
                dropped: Arc::clone(&dropped),
            };
            let mut p = Pipeline::new(w, codec, true);
            let data = sample(40 * CHUNK);
            // The error reaches the producer while it writes, or at the end.
            let err = match data.chunks(CHUNK).try_for_each(|c| p.put(&mut c.to_vec())) {
                Err(e) => {
                    drop(p);
                    e
                }
                Ok(()) => p.finish().err().expect("a full disk fails the layer"),
            };
            assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{codec:?}: {err}");
            assert!(*dropped.lock().unwrap(), "{codec:?}: the writer was let go");
        }
    }

    #[test]
    fn dropping_an_unfinished_pipeline_drops_the_writer_unfinished() {
        let dropped = Arc::new(Mutex::new(false));
        let w = Full {
            room: usize::MAX,
            dropped: Arc::clone(&dropped),
        };
        let mut p = Pipeline::new(w, Some(Codec::Zstd { level: 1 }), true);
        p.write_all(&sample(3 * CHUNK + 5)).unwrap();
        drop(p);
        assert!(*dropped.lock().unwrap());
    }
}
