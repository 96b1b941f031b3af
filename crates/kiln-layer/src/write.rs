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
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
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

struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Writer<'o, W: Write> {
    out: Counting<W>,
    opts: &'o WriteOptions,
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
    buf: Vec<u8>,
}

/// Writes the tree under `root` as an uncompressed tar stream to `out`.
/// The root directory itself is not an entry; every name is relative
/// (`etc/passwd`, directories with a trailing `/`).
pub fn write_tar<W: Write>(
    root: &Path,
    out: W,
    opts: &WriteOptions,
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
    let mut w = Writer {
        out: Counting {
            inner: io::BufWriter::with_capacity(256 * 1024, out),
            bytes: 0,
        },
        opts,
        links: HashMap::new(),
        entries: 0,
        buf: vec![0; 64 * 1024],
    };
    let root_fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| read_err(root)(e.into()))?;
    w.dir_children(root_fd.as_fd(), root, b"")?;
    w.out
        .write_all(&[0u8; 1024])
        .and_then(|_| w.out.flush())
        .map_err(|source| WriteError::Write {
            path: root.to_path_buf(),
            source,
        })?;
    Ok(WriteSummary {
        entries: w.entries,
        bytes: w.out.bytes,
    })
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// (name, value) pairs of extended attributes.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads the xattrs of an open file or directory. Filesystems without
/// xattr support give an empty list.
fn read_xattrs(fd: BorrowedFd<'_>, path: &Path) -> Result<Xattrs, WriteError> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::flistxattr(fd, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(path)(e.into())),
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
                Err(e) => return Err(read_err(path)(e.into())),
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

impl<W: Write> Writer<'_, W> {
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

    /// Writes one header (with a PAX header first when needed) and the data.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        src: &Path,
        name: &[u8],
        kind: EntryType,
        mode: u32,
        ids: (u64, u64),
        mtime: u64,
        link: Option<&[u8]>,
        dev: Option<(u32, u32)>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        data: Option<(File, u64)>,
    ) -> Result<(), WriteError> {
        let mut h = Header::new_ustar();
        let mut pax = Vec::new();
        h.set_entry_type(kind);
        h.set_mode(mode & 0o7777);
        h.set_mtime(mtime);
        if !set_ustar_name(&mut h, name) {
            pax_record(&mut pax, b"path", name);
            let cut = &name[..name.len().min(99)];
            set_ustar_name(&mut h, cut);
        }
        for (val, key, is_uid) in [(ids.0, b"uid", true), (ids.1, b"gid", false)] {
            let v = if val > USTAR_ID_MAX {
                pax_record(&mut pax, key, val.to_string().as_bytes());
                0
            } else {
                val
            };
            if is_uid { h.set_uid(v) } else { h.set_gid(v) }
        }
        if let Some(l) = link {
            if l.len() <= 100 {
                let u = h.as_ustar_mut().expect("ustar header");
                u.linkname = [0; 100];
                u.linkname[..l.len()].copy_from_slice(l);
            } else {
                pax_record(&mut pax, b"linkpath", l);
            }
        }
        if let Some((ma, mi)) = dev {
            let _ = h.set_device_major(ma);
            let _ = h.set_device_minor(mi);
        }
        let size = data.as_ref().map(|d| d.1).unwrap_or(0);
        if size > USTAR_SIZE_MAX {
            pax_record(&mut pax, b"size", size.to_string().as_bytes());
            h.set_size(0);
        } else {
            h.set_size(size);
        }
        for (k, v) in xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        h.set_cksum();
        let werr = |source| WriteError::Write {
            path: src.to_path_buf(),
            source,
        };
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
            self.out.write_all(ph.as_bytes()).map_err(werr)?;
            self.out.write_all(&pax).map_err(werr)?;
            pad(&mut self.out, pax.len() as u64).map_err(werr)?;
        }
        self.out.write_all(h.as_bytes()).map_err(werr)?;
        if let Some((mut f, size)) = data {
            let mut left = size;
            while left > 0 {
                let want = left.min(self.buf.len() as u64) as usize;
                let n = f.read(&mut self.buf[..want]).map_err(read_err(src))?;
                if n == 0 {
                    return Err(WriteError::Changed {
                        path: src.to_path_buf(),
                        expected: size,
                    });
                }
                self.out.write_all(&self.buf[..n]).map_err(werr)?;
                left -= n as u64;
            }
            pad(&mut self.out, size).map_err(werr)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Writes the children of the open directory `dir` (at `dir_path`, for
    /// messages), sorted by name. Everything below is reached relative to
    /// directory descriptors: no path is resolved twice.
    fn dir_children(
        &mut self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        prefix: &[u8],
    ) -> Result<(), WriteError> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        let rd = rfs::Dir::read_from(dir).map_err(|e| read_err(dir_path)(e.into()))?;
        for e in rd {
            let e = e.map_err(|e| read_err(dir_path)(e.into()))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        names.sort();
        for n in names {
            self.entry(dir, dir_path, &n, prefix)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        base: &[u8],
        prefix: &[u8],
    ) -> Result<(), WriteError> {
        let path = dir_path.join(OsStr::from_bytes(base));
        let bos = OsStr::from_bytes(base);
        let m = rfs::statat(dir, bos, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| read_err(&path)(e.into()))?;
        let ft = FileType::from_raw_mode(m.st_mode);
        let mut name = prefix.to_vec();
        name.extend_from_slice(base);
        let size = m.st_size as u64;
        // regular files and directories are opened anyway: their xattrs come
        // from the descriptor; others carry none a layer keeps
        let fd = match ft {
            FileType::Directory => Some(
                rfs::openat(
                    dir,
                    bos,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| read_err(&path)(e.into()))?,
            ),
            FileType::RegularFile => Some(
                rfs::openat(
                    dir,
                    bos,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| read_err(&path)(e.into()))?,
            ),
            _ => None,
        };
        let want_xattrs = self.opts.xattrs
            || (self.opts.overlay_whiteouts
                && (ft == FileType::Directory || (ft == FileType::RegularFile && size == 0)));
        let xattrs = match (&fd, want_xattrs) {
            (Some(fd), true) => read_xattrs(fd.as_fd(), &path)?,
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
        let kept: Vec<(Vec<u8>, Vec<u8>)> = if self.opts.xattrs {
            xattrs
                .into_iter()
                .filter(|(n, _)| whiteout::keep_xattr(n))
                .collect()
        } else {
            Vec::new()
        };
        let mtime = self.mtime(&m);
        let ids = self.ids(&m);
        let mode = m.st_mode;
        if class == EntryClass::Whiteout {
            let mut wname = prefix.to_vec();
            wname.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
            wname.extend_from_slice(base);
            return self.emit(
                &path,
                &wname,
                EntryType::Regular,
                0o644,
                (0, 0),
                mtime,
                None,
                None,
                &[],
                None,
            );
        }
        match ft {
            FileType::Directory => {
                name.push(b'/');
                self.emit(
                    &path,
                    &name,
                    EntryType::Directory,
                    mode,
                    ids,
                    mtime,
                    None,
                    None,
                    &kept,
                    None,
                )?;
                if class == EntryClass::OpaqueDir {
                    let mut oname = name.clone();
                    oname.extend_from_slice(OPAQUE_MARKER.as_bytes());
                    self.emit(
                        &path,
                        &oname,
                        EntryType::Regular,
                        0o644,
                        (0, 0),
                        mtime,
                        None,
                        None,
                        &[],
                        None,
                    )?;
                }
                let fd = fd.expect("directories are opened");
                self.dir_children(fd.as_fd(), &path, &name)
            }
            FileType::Symlink => {
                let target =
                    rfs::readlinkat(dir, bos, Vec::new()).map_err(|e| read_err(&path)(e.into()))?;
                self.emit(
                    &path,
                    &name,
                    EntryType::Symlink,
                    0o777,
                    ids,
                    mtime,
                    Some(target.as_bytes()),
                    None,
                    &[],
                    None,
                )
            }
            FileType::RegularFile => {
                if m.st_nlink > 1 {
                    let key = (m.st_dev, m.st_ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        return self.emit(
                            &path,
                            &name,
                            EntryType::Link,
                            mode,
                            ids,
                            mtime,
                            Some(&first),
                            None,
                            &[],
                            None,
                        );
                    }
                    self.links.insert(key, name.clone());
                }
                let f = File::from(fd.expect("files are opened"));
                self.emit(
                    &path,
                    &name,
                    EntryType::Regular,
                    mode,
                    ids,
                    mtime,
                    None,
                    None,
                    &kept,
                    Some((f, size)),
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
                self.emit(&path, &name, kind, mode, ids, mtime, None, dev, &kept, None)
            }
            _ => Err(WriteError::Socket { path }),
        }
    }
}

fn pad<W: Write>(out: &mut W, size: u64) -> io::Result<()> {
    let rem = (size % 512) as usize;
    if rem != 0 {
        out.write_all(&[0u8; 512][..512 - rem])?;
    }
    Ok(())
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
    fn ustar_split() {
        let mut h = Header::new_ustar();
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(90));
        assert!(set_ustar_name(&mut h, long.as_bytes()));
        assert_eq!(h.path_bytes().as_ref(), long.as_bytes());
        let too_long = "x".repeat(101);
        assert!(!set_ustar_name(&mut h, too_long.as_bytes()));
    }
}
