//! The deterministic tar writer.
//!
//! Same tree in, same bytes out: entries in byte order of their names, a
//! directory before its children; numeric uid/gid and the permission bits
//! kept, user and group names empty; mtimes clamped to SOURCE_DATE_EPOCH when
//! given; no atime or ctime; ustar headers, with a PAX header only for what
//! ustar cannot hold (long names, big IDs or sizes, xattrs); hard links kept
//! as links to the first path in that order.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};

use tar::{EntryType, Header};

use crate::IdMapping;
use crate::whiteout::{self, EntryClass, Facts, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// How [`write_tar`] turns a tree into a layer.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Treat the tree as an overlay upper directory: turn overlay and
    /// fuse-overlayfs whiteouts and opaque directories into OCI `.wh.` entries.
    /// Off for a plain root filesystem (`kiln import DIR`).
    pub overlay_whiteouts: bool,
    /// Map host IDs on disk back to container IDs (the user namespace the
    /// tree was written in). IDs outside the mapping become 65534 (nobody),
    /// as the kernel's overflow ID does.
    pub id_map: Option<IdMapping>,
    /// Clamp every mtime to at most this many seconds since the epoch.
    pub source_date_epoch: Option<u64>,
    /// Record `security.capability` and `user.*` xattrs (PAX `SCHILY.xattr.`).
    pub xattrs: bool,
}

/// What [`write_tar`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteSummary {
    /// tar entries (PAX extension headers not counted)
    pub entries: u64,
    /// bytes of the uncompressed tar stream, end-of-archive blocks included
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot read `{path}` for the layer")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` changed size while it was being archived (expected {expected} bytes)")]
    Changed { path: PathBuf, expected: u64 },
    #[error("cannot write the layer tar (at `{path}`)")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` is a socket, which a layer cannot hold")]
    Socket { path: PathBuf },
    #[error("`{root}` is not a directory")]
    NotADirectory { root: PathBuf },
}

/// Receives the tar stream in large pieces: the zero-copy path from the
/// walker into a compression pipeline. File data is read straight into the
/// chunk buffer, so a sink that takes the buffer (and leaves a spare one in
/// its place) gets the bytes without any copy.
pub trait ChunkSink {
    /// Takes the next `chunk.len()` bytes of the stream (never empty). Every
    /// chunk but the last has the chunk size given to [`write_tar_chunks`].
    /// The sink may swap in another buffer of any length and content.
    fn put(&mut self, chunk: &mut Vec<u8>) -> io::Result<()>;
}

/// Chunk size of [`write_tar`]'s writes: a quarter of a pipe's buffer, so
/// a reader at the other end of a pipe (`| sha256sum`) works while the tree
/// is still walked. 128 KiB made the writer block on a full pipe and the two
/// take turns: 25% slower for 10,000 small files (`bench/diff.sh`).
const WRITE_CHUNK: usize = 16 * 1024;

struct WriteSink<W>(W);

impl<W: Write> ChunkSink for WriteSink<W> {
    fn put(&mut self, chunk: &mut Vec<u8>) -> io::Result<()> {
        self.0.write_all(chunk)
    }
}

/// The owner and permission bits an entry must have in the layer,
/// whatever the file on disk has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryOwner {
    pub uid: u64,
    pub gid: u64,
    /// Permission bits (`0o7777`, set-ID and sticky bits included).
    pub mode: u32,
}

/// Owners and modes by entry name (relative, no `./`, no trailing `/`),
/// for [`write_tar_owned`].
pub type Owners = HashMap<Vec<u8>, EntryOwner>;

/// Writes the tree under `root` as an uncompressed tar stream to `out`.
/// The root directory itself is not an entry; every name is relative
/// (`etc/passwd`, directories with a trailing `/`).
pub fn write_tar<W: Write>(
    root: &Path,
    out: W,
    opts: &WriteOptions,
) -> Result<WriteSummary, WriteError> {
    write_tar_owned(root, out, opts, None)
}

/// [`write_tar`] where `owners` says the owner and permission bits of the
/// entries it names: a tree unpacked by an unprivileged user (who cannot
/// give files to others or keep set-ID bits) still becomes the layer its
/// source described, byte for byte what root would have written. Entries
/// it does not name keep what is on disk (with `opts.id_map` applied).
pub fn write_tar_owned<W: Write>(
    root: &Path,
    out: W,
    opts: &WriteOptions,
    owners: Option<&Owners>,
) -> Result<WriteSummary, WriteError> {
    let mut sink = WriteSink(out);
    let sum = write_chunks(root, &mut sink, WRITE_CHUNK, opts, owners)?;
    sink.0.flush().map_err(|source| WriteError::Write {
        path: root.to_path_buf(),
        source,
    })?;
    Ok(sum)
}

/// [`write_tar`] into a [`ChunkSink`], in chunks of `chunk_size` bytes
/// (the last one shorter). Same bytes as [`write_tar`].
pub fn write_tar_chunks(
    root: &Path,
    sink: &mut dyn ChunkSink,
    chunk_size: usize,
    opts: &WriteOptions,
) -> Result<WriteSummary, WriteError> {
    write_chunks(root, sink, chunk_size, opts, None)
}

fn write_chunks(
    root: &Path,
    sink: &mut dyn ChunkSink,
    chunk_size: usize,
    opts: &WriteOptions,
    owners: Option<&Owners>,
) -> Result<WriteSummary, WriteError> {
    let meta = fs::symlink_metadata(root).map_err(|source| WriteError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(WriteError::NotADirectory {
            root: root.to_path_buf(),
        });
    }
    let root_fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| WriteError::Read {
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    let mut w = Writer {
        out: ChunkOut {
            buf: vec![0; chunk_size.max(512)],
            fill: 0,
            total: 0,
            sink,
        },
        root,
        opts,
        owners,
        links: HashMap::new(),
        entries: 0,
        xattr_names: vec![0; 1024],
    };
    let mut name = Vec::with_capacity(256);
    w.dir_children(root_fd.as_fd(), &mut name)?;
    w.out
        .write_all(&[0u8; 1024])
        .and_then(|_| w.out.finish())
        .map_err(|source| WriteError::Write {
            path: root.to_path_buf(),
            source,
        })?;
    Ok(WriteSummary {
        entries: w.entries,
        bytes: w.out.total,
    })
}

/// The chunk buffer: always `buf.len()` long (zeroed once), `fill` bytes
/// used, so file data is read into it without initializing it again.
struct ChunkOut<'s> {
    buf: Vec<u8>,
    fill: usize,
    total: u64,
    sink: &'s mut dyn ChunkSink,
}

impl ChunkOut<'_> {
    fn emit(&mut self) -> io::Result<()> {
        let size = self.buf.len();
        let fill = self.fill;
        if fill < size {
            self.buf.truncate(fill);
        }
        self.sink.put(&mut self.buf)?;
        // a spare buffer from the sink, or ours back (cleared if it was cut)
        self.buf.resize(size, 0);
        self.total += fill as u64;
        self.fill = 0;
        Ok(())
    }

    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.fill == self.buf.len() {
                self.emit()?;
            }
            let n = (self.buf.len() - self.fill).min(data.len());
            self.buf[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
        }
        Ok(())
    }

    fn zeros(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            if self.fill == self.buf.len() {
                self.emit()?;
            }
            let k = (self.buf.len() - self.fill).min(n);
            self.buf[self.fill..self.fill + k].fill(0);
            self.fill += k;
            n -= k;
        }
        Ok(())
    }

    /// Pads an entry of `size` bytes to the next 512-byte block.
    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.zeros(512 - rem)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.fill > 0 {
            self.emit()?;
        }
        Ok(())
    }
}

/// Where writing an entry failed: reading the tree or passing the bytes on.
enum Fail {
    Read(io::Error),
    Changed,
    Write(io::Error),
}

struct Writer<'o, 's> {
    out: ChunkOut<'s>,
    root: &'o Path,
    opts: &'o WriteOptions,
    owners: Option<&'o Owners>,
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
    xattr_names: Vec<u8>,
}

/// (name, value) pairs of extended attributes.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads the xattrs of an open file or directory into a list (no allocation
/// when there are none, the usual case). Filesystems without xattr support
/// give an empty list.
fn read_xattrs(fd: BorrowedFd<'_>, names: &mut Vec<u8>) -> io::Result<Xattrs> {
    let n = loop {
        match rustix::fs::flistxattr(fd, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut val = vec![0u8; 256];
        loop {
            let cname = std::ffi::OsStr::from_bytes(name);
            match rustix::fs::fgetxattr(fd, cname, &mut val[..]) {
                Ok(len) => {
                    val.truncate(len);
                    out.push((name.to_vec(), val));
                    break;
                }
                Err(rustix::io::Errno::RANGE) => val.resize(val.len() * 4, 0),
                // removed between list and get, or not readable by us
                Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::PERM) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.sort();
    Ok(out)
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // "%d %s=%s\n" where the length counts itself (POSIX pax format)
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let total = body + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Puts `name` in the ustar name/prefix fields; false when it does not fit.
fn set_ustar_name(h: &mut Header, name: &[u8]) -> bool {
    let u = h.as_ustar_mut().expect("ustar header");
    if name.len() <= 100 {
        u.name = [0; 100];
        u.name[..name.len()].copy_from_slice(name);
        u.prefix = [0; 155];
        return true;
    }
    // split at a '/' so that the prefix has at most 155 bytes and the rest 100
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    for (i, b) in trimmed.iter().enumerate().rev() {
        if *b != b'/' {
            continue;
        }
        let (prefix, rest) = (&name[..i], &name[i + 1..]);
        if rest.len() > 100 {
            break;
        }
        if prefix.len() <= 155 && !prefix.is_empty() {
            u.name = [0; 100];
            u.name[..rest.len()].copy_from_slice(rest);
            u.prefix = [0; 155];
            u.prefix[..prefix.len()].copy_from_slice(prefix);
            return true;
        }
    }
    false
}

const USTAR_ID_MAX: u64 = 0o7777777;
const USTAR_SIZE_MAX: u64 = 0o77777777777;

/// A numeric ustar field: octal digits, zero-padded, NUL-terminated; the
/// same bytes as the `tar` crate's setters for values that fit (callers
/// make sure they do), without their per-field `format!` allocation.
fn octal(dst: &mut [u8], mut v: u64) {
    let (last, digits) = dst.split_last_mut().expect("non-empty field");
    *last = 0;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v & 7) as u8;
        v >>= 3;
    }
}

/// The header checksum (POSIX ustar: the byte sum with the checksum field
/// read as spaces), written as the `tar` crate's `set_cksum` does.
fn set_cksum(h: &mut Header) {
    let sum: u64 = h.as_bytes()[..148].iter().map(|b| *b as u64).sum::<u64>()
        + 8 * b' ' as u64
        + h.as_bytes()[156..].iter().map(|b| *b as u64).sum::<u64>();
    octal(&mut h.as_old_mut().cksum, sum);
}

/// An entry's metadata, ready for its header.
struct Meta<'a> {
    kind: EntryType,
    mode: u32,
    ids: (u64, u64),
    mtime: u64,
    link: Option<&'a [u8]>,
    dev: Option<(u32, u32)>,
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Header of a marker entry (whiteout, opaque marker): an empty file.
fn marker(mtime: u64) -> Meta<'static> {
    Meta {
        kind: EntryType::Regular,
        mode: 0o644,
        ids: (0, 0),
        mtime,
        link: None,
        dev: None,
        xattrs: &[],
    }
}

impl Writer<'_, '_> {
    fn mtime(&self, m: &Stat) -> u64 {
        let t = m.st_mtime.max(0) as u64;
        match self.opts.source_date_epoch {
            Some(e) => t.min(e),
            None => t,
        }
    }

    fn ids(&self, m: &Stat) -> (u64, u64) {
        match &self.opts.id_map {
            None => (m.st_uid as u64, m.st_gid as u64),
            Some(map) => (
                map.uid_to_container(m.st_uid).unwrap_or(65534) as u64,
                map.gid_to_container(m.st_gid).unwrap_or(65534) as u64,
            ),
        }
    }

    /// The on-disk path of the entry `name` (relative), for messages only.
    fn path_of(&self, name: &[u8]) -> PathBuf {
        let name = name.strip_suffix(b"/").unwrap_or(name);
        if name.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(OsStr::from_bytes(name))
        }
    }

    fn fail(&self, name: &[u8], size: u64, f: Fail) -> WriteError {
        let path = self.path_of(name);
        match f {
            Fail::Read(source) => WriteError::Read { path, source },
            Fail::Changed => WriteError::Changed {
                path,
                expected: size,
            },
            Fail::Write(source) => WriteError::Write { path, source },
        }
    }

    /// Writes one header (with a PAX header first when needed) and the data.
    fn emit(
        &mut self,
        name: &[u8],
        m: &Meta<'_>,
        data: Option<(OwnedFd, u64)>,
    ) -> Result<(), WriteError> {
        let size = data.as_ref().map(|d| d.1).unwrap_or(0);
        self.emit_inner(name, m, data)
            .map_err(|f| self.fail(name, size, f))
    }

    fn emit_inner(
        &mut self,
        name: &[u8],
        m: &Meta<'_>,
        data: Option<(OwnedFd, u64)>,
    ) -> Result<(), Fail> {
        let mut h = Header::new_ustar();
        let mut pax = Vec::new();
        h.set_entry_type(m.kind);
        octal(&mut h.as_old_mut().mode, (m.mode & 0o7777) as u64);
        if m.mtime <= USTAR_SIZE_MAX {
            octal(&mut h.as_old_mut().mtime, m.mtime);
        } else {
            h.set_mtime(m.mtime);
        }
        if !set_ustar_name(&mut h, name) {
            pax_record(&mut pax, b"path", name);
            let cut = &name[..name.len().min(99)];
            set_ustar_name(&mut h, cut);
        }
        for (val, key, is_uid) in [(m.ids.0, b"uid", true), (m.ids.1, b"gid", false)] {
            let v = if val > USTAR_ID_MAX {
                pax_record(&mut pax, key, val.to_string().as_bytes());
                0
            } else {
                val
            };
            let old = h.as_old_mut();
            octal(if is_uid { &mut old.uid } else { &mut old.gid }, v);
        }
        if let Some(l) = m.link {
            if l.len() <= 100 {
                let u = h.as_ustar_mut().expect("ustar header");
                u.linkname = [0; 100];
                u.linkname[..l.len()].copy_from_slice(l);
            } else {
                pax_record(&mut pax, b"linkpath", l);
            }
        }
        if let Some((ma, mi)) = m.dev {
            let _ = h.set_device_major(ma);
            let _ = h.set_device_minor(mi);
        }
        let size = data.as_ref().map(|d| d.1).unwrap_or(0);
        if size > USTAR_SIZE_MAX {
            pax_record(&mut pax, b"size", size.to_string().as_bytes());
            octal(&mut h.as_old_mut().size, 0);
        } else {
            octal(&mut h.as_old_mut().size, size);
        }
        for (k, v) in m.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        set_cksum(&mut h);
        if !pax.is_empty() {
            let mut ph = Header::new_ustar();
            ph.set_entry_type(EntryType::XHeader);
            ph.set_mode(0o644);
            ph.set_mtime(0);
            ph.set_uid(0);
            ph.set_gid(0);
            let mut pname = b"PaxHeaders/".to_vec();
            let base = name
                .rsplit(|b| *b == b'/')
                .find(|s| !s.is_empty())
                .unwrap_or(b"x");
            pname.extend_from_slice(&base[..base.len().min(80)]);
            set_ustar_name(&mut ph, &pname);
            ph.set_size(pax.len() as u64);
            ph.set_cksum();
            self.out.write_all(ph.as_bytes()).map_err(Fail::Write)?;
            self.out.write_all(&pax).map_err(Fail::Write)?;
            self.out.pad(pax.len() as u64).map_err(Fail::Write)?;
        }
        self.out.write_all(h.as_bytes()).map_err(Fail::Write)?;
        if let Some((fd, size)) = data {
            if size >= 4 << 20 {
                // Doubles the readahead window for big files, which helps a
                // cold page cache (posix_fadvise(2)); only a hint.
                let _ = rfs::fadvise(&fd, 0, None, rfs::Advice::Sequential);
            }
            let mut left = size;
            while left > 0 {
                if self.out.fill == self.out.buf.len() {
                    self.out.emit().map_err(Fail::Write)?;
                }
                let room = self.out.buf.len() - self.out.fill;
                let want = left.min(room as u64) as usize;
                let at = self.out.fill;
                let n = match rustix::io::read(&fd, &mut self.out.buf[at..at + want]) {
                    Ok(n) => n,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(Fail::Read(e.into())),
                };
                if n == 0 {
                    return Err(Fail::Changed);
                }
                self.out.fill += n;
                left -= n as u64;
            }
            self.out.pad(size).map_err(Fail::Write)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Writes the children of the open directory `dir` (entry `name`, empty
    /// for the root), sorted by name. Everything below is reached relative to
    /// directory descriptors: no path is resolved twice.
    fn dir_children(&mut self, dir: BorrowedFd<'_>, name: &mut Vec<u8>) -> Result<(), WriteError> {
        // names in one buffer, sorted through their spans: two allocations
        // per directory instead of one per child
        let mut all: Vec<u8> = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let rd = rfs::Dir::read_from(dir).map_err(|e| self.fail(name, 0, Fail::Read(e.into())))?;
        for e in rd {
            let e = e.map_err(|e| self.fail(name, 0, Fail::Read(e.into())))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                spans.push((all.len(), all.len() + n.len()));
                all.extend_from_slice(n);
            }
        }
        spans.sort_unstable_by(|a, b| all[a.0..a.1].cmp(&all[b.0..b.1]));
        let len = name.len();
        for (s, e) in spans {
            let r = self.entry(dir, &all[s..e], name);
            name.truncate(len);
            r?;
        }
        Ok(())
    }

    /// Writes the entry `base` of `dir`; `name` holds the directory's entry
    /// name (with its `/`) and is extended in place.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        base: &[u8],
        name: &mut Vec<u8>,
    ) -> Result<(), WriteError> {
        let prefix_len = name.len();
        name.extend_from_slice(base);
        let bos = OsStr::from_bytes(base);
        let m = rfs::statat(dir, bos, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail(name, 0, Fail::Read(e.into())))?;
        let ft = FileType::from_raw_mode(m.st_mode);
        let size = m.st_size as u64;
        // regular files and directories are opened anyway: their xattrs come
        // from the descriptor; others carry none a layer keeps
        let flags = match ft {
            FileType::Directory => {
                Some(OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC)
            }
            FileType::RegularFile => Some(OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC),
            _ => None,
        };
        let fd = match flags {
            Some(f) => Some(
                rfs::openat(dir, bos, f, Mode::empty())
                    .map_err(|e| self.fail(name, 0, Fail::Read(e.into())))?,
            ),
            None => None,
        };
        let want_xattrs = self.opts.xattrs
            || (self.opts.overlay_whiteouts
                && (ft == FileType::Directory || (ft == FileType::RegularFile && size == 0)));
        let xattrs = match (&fd, want_xattrs) {
            (Some(fd), true) => read_xattrs(fd.as_fd(), &mut self.xattr_names)
                .map_err(|e| self.fail(name, 0, Fail::Read(e)))?,
            _ => Vec::new(),
        };
        let rdev = m.st_rdev;
        let class = if self.opts.overlay_whiteouts {
            whiteout::classify(&Facts {
                is_dir: ft == FileType::Directory,
                is_file: ft == FileType::RegularFile,
                is_char_device: ft == FileType::CharacterDevice,
                rdev_major: rfs::major(rdev),
                rdev_minor: rfs::minor(rdev),
                size,
                xattrs: &xattrs,
            })
        } else {
            EntryClass::Plain
        };
        let kept: Vec<(Vec<u8>, Vec<u8>)> = if self.opts.xattrs && !xattrs.is_empty() {
            xattrs
                .into_iter()
                .filter(|(n, _)| whiteout::keep_xattr(n))
                .collect()
        } else {
            Vec::new()
        };
        let mtime = self.mtime(&m);
        let (ids, mode) = match self.owners.and_then(|o| o.get(name.as_slice())) {
            Some(o) => ((o.uid, o.gid), (m.st_mode & !0o7777) | (o.mode & 0o7777)),
            None => (self.ids(&m), m.st_mode),
        };
        let meta = |kind| Meta {
            kind,
            mode,
            ids,
            mtime,
            link: None,
            dev: None,
            xattrs: &[],
        };
        if class == EntryClass::Whiteout {
            name.truncate(prefix_len);
            name.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
            name.extend_from_slice(base);
            return self.emit(name, &marker(mtime), None);
        }
        match ft {
            FileType::Directory => {
                name.push(b'/');
                self.emit(
                    name,
                    &Meta {
                        xattrs: &kept,
                        ..meta(EntryType::Directory)
                    },
                    None,
                )?;
                if class == EntryClass::OpaqueDir {
                    let dir_len = name.len();
                    name.extend_from_slice(OPAQUE_MARKER.as_bytes());
                    self.emit(name, &marker(mtime), None)?;
                    name.truncate(dir_len);
                }
                let fd = fd.expect("directories are opened");
                self.dir_children(fd.as_fd(), name)
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, bos, Vec::new())
                    .map_err(|e| self.fail(name, 0, Fail::Read(e.into())))?;
                self.emit(
                    name,
                    &Meta {
                        mode: 0o777,
                        link: Some(target.as_bytes()),
                        ..meta(EntryType::Symlink)
                    },
                    None,
                )
            }
            FileType::RegularFile => {
                if m.st_nlink > 1 {
                    let key = (m.st_dev, m.st_ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        return self.emit(
                            name,
                            &Meta {
                                link: Some(&first),
                                ..meta(EntryType::Link)
                            },
                            None,
                        );
                    }
                    self.links.insert(key, name.clone());
                }
                let fd = fd.expect("files are opened");
                self.emit(
                    name,
                    &Meta {
                        xattrs: &kept,
                        ..meta(EntryType::Regular)
                    },
                    Some((fd, size)),
                )
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                let (kind, dev) = match ft {
                    FileType::CharacterDevice => {
                        (EntryType::Char, Some((rfs::major(rdev), rfs::minor(rdev))))
                    }
                    FileType::BlockDevice => {
                        (EntryType::Block, Some((rfs::major(rdev), rfs::minor(rdev))))
                    }
                    _ => (EntryType::Fifo, None),
                };
                self.emit(
                    name,
                    &Meta {
                        dev,
                        xattrs: &kept,
                        ..meta(kind)
                    },
                    None,
                )
            }
            _ => Err(WriteError::Socket {
                path: self.path_of(name),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"abc");
        assert_eq!(v, b"12 path=abc\n");
        let mut v = Vec::new();
        // 3 digits + ' ' + "path" + '=' + 94 + '\n' = 104
        pax_record(&mut v, b"path", &[b'a'; 94]);
        assert!(v.starts_with(b"104 path="));
        assert_eq!(v.len(), 104);
    }

    #[test]
    fn numeric_fields_match_the_tar_crate() {
        for v in [
            0u64,
            1,
            0o644,
            0o7777,
            65534,
            USTAR_ID_MAX,
            1_700_000_000,
            USTAR_SIZE_MAX,
        ] {
            let mut ours = Header::new_ustar();
            let mut theirs = Header::new_ustar();
            octal(&mut ours.as_old_mut().mtime, v);
            theirs.set_mtime(v);
            octal(&mut ours.as_old_mut().size, v);
            theirs.set_size(v);
            if v <= USTAR_ID_MAX {
                octal(&mut ours.as_old_mut().uid, v);
                theirs.set_uid(v);
                octal(&mut ours.as_old_mut().mode, v & 0o7777);
                theirs.set_mode((v & 0o7777) as u32);
            }
            set_cksum(&mut ours);
            theirs.set_cksum();
            assert_eq!(ours.as_bytes()[..], theirs.as_bytes()[..], "{v:o}");
        }
    }

    /// Collects chunks and checks that all but the last have the chunk size.
    struct Collect {
        size: usize,
        chunks: Vec<Vec<u8>>,
    }

    impl ChunkSink for Collect {
        fn put(&mut self, chunk: &mut Vec<u8>) -> io::Result<()> {
            assert!(!chunk.is_empty());
            if let Some(prev) = self.chunks.last() {
                assert_eq!(prev.len(), self.size, "only the last chunk is short");
            }
            // take the buffer and leave a spare of another length
            self.chunks.push(std::mem::replace(chunk, vec![7; 3]));
            Ok(())
        }
    }

    #[test]
    fn chunked_output_is_the_same_stream_for_any_chunk_size() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20usize {
            let sub = dir.path().join(format!("d{}", i % 3));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(format!("f{i}")), vec![i as u8; i * 700]).unwrap();
        }
        fs::write(dir.path().join("x".repeat(120)), b"long").unwrap();
        let opts = WriteOptions {
            source_date_epoch: Some(0),
            ..Default::default()
        };
        let mut whole = Vec::new();
        let sum = write_tar(dir.path(), &mut whole, &opts).unwrap();
        assert_eq!(sum.bytes, whole.len() as u64);
        for size in [512, 1000, 4096, 65536, 1 << 20] {
            let mut c = Collect {
                size,
                chunks: Vec::new(),
            };
            let s = write_tar_chunks(dir.path(), &mut c, size, &opts).unwrap();
            assert_eq!(s, sum);
            assert_eq!(c.chunks.concat(), whole, "chunk size {size}");
        }
    }

    #[test]
    fn owners_win_over_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), b"x").unwrap();
        fs::write(dir.path().join("g"), b"y").unwrap();
        let mut owners = Owners::new();
        let o = |uid, gid, mode| EntryOwner { uid, gid, mode };
        owners.insert(b"d".to_vec(), o(6, 12, 0o2775));
        owners.insert(b"d/f".to_vec(), o(0, 42, 0o4755));
        let opts = WriteOptions::default();
        let mut out = Vec::new();
        write_tar_owned(dir.path(), &mut out, &opts, Some(&owners)).unwrap();
        let mut seen = Vec::new();
        for e in tar::Archive::new(&out[..]).entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            seen.push((
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mode().unwrap(),
            ));
        }
        let me = |p: &str| {
            let m = fs::metadata(dir.path().join(p)).unwrap();
            use std::os::unix::fs::MetadataExt;
            (m.uid() as u64, m.gid() as u64, m.mode() & 0o7777)
        };
        let g = me("g");
        assert_eq!(
            seen,
            vec![
                ("d/".into(), 6, 12, 0o2775),
                ("d/f".into(), 0, 42, 0o4755),
                ("g".into(), g.0, g.1, g.2),
            ]
        );
    }

    #[test]
    fn a_failing_sink_is_a_write_error() {
        struct Full;
        impl ChunkSink for Full {
            fn put(&mut self, _: &mut Vec<u8>) -> io::Result<()> {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("big"), vec![1u8; 10_000]).unwrap();
        let err =
            write_tar_chunks(dir.path(), &mut Full, 4096, &WriteOptions::default()).unwrap_err();
        match err {
            WriteError::Write { path, source } => {
                assert_eq!(path, dir.path().join("big"));
                assert_eq!(source.kind(), io::ErrorKind::StorageFull);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ustar_split() {
        let mut h = Header::new_ustar();
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(90));
        assert!(set_ustar_name(&mut h, long.as_bytes()));
        assert_eq!(h.path_bytes().as_ref(), long.as_bytes());
        let too_long = "x".repeat(101);
        assert!(!set_ustar_name(&mut h, too_long.as_bytes()));
    }
}
