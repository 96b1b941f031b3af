//! Confined application of a layer tar to a directory.
//!
//! Every entry's parent directory is opened with openat2(2)
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: absolute symlinks and `..` are
//! resolved as if the target were `/`, so no path, symlink or hard link in
//! the tar can reach outside it, including symlinks planted by an earlier
//! entry of the same tar. The final component is then created, replaced or
//! removed with `*at` calls relative to that parent, which never follow a
//! symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `linkat` without
//! `AT_SYMLINK_FOLLOW`). Names are also normalized lexically (leading `/`,
//! `.` and `..` above the root dropped), but that is for tidiness: the kernel
//! is the guard.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
};
use rustix::io::Errno;
use tar::EntryType;

use crate::IdMapping;
use crate::sparse::{self, MapIn, PaxSparse};
use crate::whiteout::{OPAQUE_MARKER, OverlayXattr, WHITEOUT_PREFIX};

/// What to do with OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The target holds the merged result of the layers below: a whiteout
    /// deletes what lower layers left, an opaque marker empties its directory
    /// of lower content. What this same tar adds is never deleted by its own
    /// whiteouts (image-spec layer.md).
    Delete,
    /// The target is one overlay layer directory: whiteouts become 0/0
    /// character devices and opaque markers the `overlay.opaque` xattr in the
    /// given namespace, so the directory can serve as an overlay lower.
    Overlay(OverlayXattr),
}

/// Who owns what the tar creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// chown every entry to the uid/gid recorded in the tar (through
    /// [`ApplyOptions::id_map`], container to host). Needs real root or a
    /// user namespace that maps those IDs; an entry that cannot be chowned
    /// is an error.
    Keep,
    /// Leave everything owned by the calling user and drop setuid/setgid
    /// bits, so that an untrusted tar never yields a set-ID file of ours.
    Ignore,
}

impl Ownership {
    /// `Keep` for real root, `Ignore` otherwise.
    pub fn auto() -> Self {
        if rustix::process::geteuid().is_root() {
            Ownership::Keep
        } else {
            Ownership::Ignore
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    pub ownership: Ownership,
    /// Container-to-host mapping applied to the tar's IDs with `Ownership::Keep`.
    pub id_map: Option<IdMapping>,
    /// Restore `SCHILY.xattr.*` records (failures are skipped with a warning).
    pub xattrs: bool,
    /// The most bytes the regular files of one tar may add up to, counted
    /// by apparent size (a sparse file's holes count, though they take no
    /// disk): a bound on what a few compressed or sparse bytes can claim.
    /// [`DEFAULT_MAX_SIZE`] unless the caller says otherwise
    /// ([`max_size_from_env`]).
    pub max_size: u64,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Delete,
            ownership: Ownership::auto(),
            id_map: None,
            xattrs: true,
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// The default of [`ApplyOptions::max_size`]: 64 GiB, above the largest
/// layers of real images (CUDA and model images stay in the tens of GiB),
/// far below what a decompression bomb or a sparse header claims.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;

/// The environment variable kiln's CLI, worker and runtime read
/// [`ApplyOptions::max_size`] from ([`max_size_from_env`]); [`apply_tar`]
/// itself never reads it.
pub const MAX_SIZE_ENV: &str = "KILN_MAX_LAYER_SIZE";

/// A [`MAX_SIZE_ENV`] value that is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid `{MAX_SIZE_ENV}={value}`: write a size in bytes, optionally with a K, M, G or T suffix (powers of 1024), e.g. `{MAX_SIZE_ENV}=200G`"
)]
pub struct SizeLimitError {
    pub value: String,
}

/// The apparent-size limit for applying layers: [`MAX_SIZE_ENV`] when set,
/// else [`DEFAULT_MAX_SIZE`]; a value that is not a size is logged and the
/// default used (the CLI rejects it up front with [`check_max_size_env`]).
pub fn max_size_from_env() -> u64 {
    check_max_size_env().unwrap_or_else(|e| {
        tracing::warn!("{e}; using the default of {DEFAULT_MAX_SIZE} bytes");
        DEFAULT_MAX_SIZE
    })
}

/// [`MAX_SIZE_ENV`] read strictly: `123`, `512M`, `200G`, `1TiB` (powers
/// of 1024); unset or empty is [`DEFAULT_MAX_SIZE`].
pub fn check_max_size_env() -> Result<u64, SizeLimitError> {
    match std::env::var_os(MAX_SIZE_ENV) {
        None => Ok(DEFAULT_MAX_SIZE),
        Some(v) if v.is_empty() => Ok(DEFAULT_MAX_SIZE),
        Some(v) => {
            let s = v.to_string_lossy();
            parse_size(&s).ok_or_else(|| SizeLimitError {
                value: s.into_owned(),
            })
        }
    }
}

/// `123`, `512k`, `200G`, `1TiB`, `3gb`: a byte count, suffixes in powers
/// of 1024 as docker's `--memory` reads them.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// `bytes` for messages: exact, with a binary-unit reading when it helps.
fn show_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        if bytes >= 1 << shift {
            let v = bytes as f64 / (1u64 << shift) as f64;
            return format!("{bytes} bytes ({v:.1} {unit})");
        }
    }
    format!("{bytes} bytes")
}

/// An entry that was not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct ApplySummary {
    /// tar entries applied (whiteouts included)
    pub entries: u64,
    /// bytes of file data written
    pub bytes: u64,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot open the target directory `{path}`")]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the layer tar (after {entries} entries)")]
    Read {
        entries: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot {action} `{path}` in `{target}`")]
    Entry {
        action: &'static str,
        path: String,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot give `{path}` the owner {uid}:{gid} from the tar: {source}; apply inside a user namespace that maps these IDs, or with `Ownership::Ignore`"
    )]
    Chown {
        path: String,
        uid: u64,
        gid: u64,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` has owner {uid}:{gid}, outside the ID mapping of the target")]
    Unmapped { path: String, uid: u64, gid: u64 },
    #[error("`{path}` needs `{parent}` to be a directory, but it is not")]
    NotADirectory { path: String, parent: String },
    #[error(
        "`{path}` brings the files of this layer to {} by apparent size, over the limit of {}; if the image is trusted, raise the limit with `{MAX_SIZE_ENV}` (e.g. `{MAX_SIZE_ENV}=200G`)",
        show_size(*total),
        show_size(*limit)
    )]
    TooLarge {
        path: String,
        total: u64,
        limit: u64,
    },
    #[error("`{path}` is a sparse file with a bad sparse map: {reason}")]
    SparseMap { path: String, reason: String },
}

type Comps = Vec<Vec<u8>>;

/// Splits a tar name into components: empty, `.` and leading `/` dropped,
/// `..` pops (never above the root).
fn normalize(raw: &[u8]) -> Comps {
    let mut out: Comps = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(c.to_vec()),
        }
    }
    out
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

/// The entry's path for messages; a hostile name of kilobytes is cut.
fn show(comps: &[Vec<u8>]) -> String {
    let s = String::from_utf8_lossy(&join(comps)).into_owned();
    if s.len() <= 200 {
        return s;
    }
    let cut = (0..=120)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}... ({} bytes)", &s[..cut], s.len())
}

fn os(b: &[u8]) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b)
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// openat2 below `root`, retrying the EAGAIN the kernel returns when a
/// concurrent rename races a `..` lookup (openat2(2), ERRORS).
fn open_in(root: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
    let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
    let mut tries = 0;
    loop {
        match rfs::openat2(
            root,
            os(rel),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        ) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

fn dir_path_fd(root: BorrowedFd<'_>, comps: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
    open_in(root, &join(comps), OFlags::PATH | OFlags::DIRECTORY)
}

/// Removes `name` under `parent`, recursively for a directory, never
/// following a symlink.
fn remove_all(parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let st = match rfs::statat(parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let fd = rfs::openat(
            parent,
            os(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // a read-only directory of ours must become writable to be emptied
        let _ = rfs::fchmod(&fd, Mode::from_raw_mode(0o700));
        for child in list_dir(fd.as_fd())? {
            remove_all(fd.as_fd(), &child)?;
        }
        rfs::unlinkat(parent, os(name), AtFlags::REMOVEDIR)
    } else {
        rfs::unlinkat(parent, os(name), AtFlags::empty())
    }
}

fn list_dir(fd: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut out = Vec::new();
    let dir = rfs::Dir::read_from(fd)?;
    for e in dir {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

struct Applier<'a> {
    root: OwnedFd,
    target: &'a Path,
    opts: &'a ApplyOptions,
    /// paths this tar wrote, with their ancestors
    written: HashSet<Vec<u8>>,
    /// directories whose mode and mtime are set at the end (children change
    /// the mtime; a read-only mode would block the children)
    dirs: Vec<(Comps, u32, u64)>,
    /// apparent size of the regular files so far, against `opts.max_size`
    apparent: u64,
    summary: ApplySummary,
}

/// Applies the layer tar read from `input` to the directory `target`.
///
/// On error the target is left partly applied: apply into a fresh or
/// disposable directory and discard it on failure.
pub fn apply_tar<R: Read>(
    input: R,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplySummary, ApplyError> {
    let root = rfs::open(
        target,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ApplyError::Target {
        path: target.to_path_buf(),
        source: e.into(),
    })?;
    let mut a = Applier {
        root,
        target,
        opts,
        written: HashSet::new(),
        dirs: Vec::new(),
        apparent: 0,
        summary: ApplySummary::default(),
    };
    let mut ar = tar::Archive::new(input);
    let entries = ar
        .entries()
        .map_err(|source| ApplyError::Read { entries: 0, source })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| ApplyError::Read {
            entries: a.summary.entries,
            source,
        })?;
        a.entry(&mut entry)?;
    }
    a.finish_dirs();
    Ok(a.summary)
}

struct Meta {
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// `GNU.sparse.*` records, in archive order
    sparse: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Applier<'_> {
    fn err(&self, action: &'static str, comps: &[Vec<u8>], e: impl Into<io::Error>) -> ApplyError {
        ApplyError::Entry {
            action,
            path: show(comps),
            target: self.target.to_path_buf(),
            source: e.into(),
        }
    }

    fn skip(&mut self, comps: &[Vec<u8>], reason: String) {
        let path = show(comps);
        tracing::warn!(path = %path, "layer entry skipped: {reason}");
        self.summary.skipped.push(Skipped { path, reason });
    }

    fn mark_written(&mut self, comps: &[Vec<u8>]) {
        for i in 1..=comps.len() {
            self.written.insert(join(&comps[..i]));
        }
    }

    /// Opens (creating as needed) the directory `comps` inside the root.
    fn ensure_dir(
        &mut self,
        comps: &[Vec<u8>],
        for_path: &[Vec<u8>],
    ) -> Result<OwnedFd, ApplyError> {
        match dir_path_fd(self.root.as_fd(), comps) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(Errno::NOTDIR) => {
                return Err(ApplyError::NotADirectory {
                    path: show(for_path),
                    parent: show(comps),
                });
            }
            Err(e) => return Err(self.err("open the parent directory of", for_path, e)),
        }
        let mut parent = dir_path_fd(self.root.as_fd(), &[])
            .map_err(|e| self.err("open the root for", for_path, e))?;
        for i in 1..=comps.len() {
            parent = match dir_path_fd(self.root.as_fd(), &comps[..i]) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rfs::mkdirat(&parent, os(&comps[i - 1]), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(self.err("create the parent directory of", for_path, e));
                        }
                    }
                    match dir_path_fd(self.root.as_fd(), &comps[..i]) {
                        Ok(fd) => fd,
                        Err(Errno::NOTDIR) | Err(Errno::NOENT) => {
                            // e.g. a dangling symlink in the way
                            return Err(ApplyError::NotADirectory {
                                path: show(for_path),
                                parent: show(&comps[..i]),
                            });
                        }
                        Err(e) => {
                            return Err(self.err("open the parent directory of", for_path, e));
                        }
                    }
                }
                Err(Errno::NOTDIR) => {
                    return Err(ApplyError::NotADirectory {
                        path: show(for_path),
                        parent: show(&comps[..i]),
                    });
                }
                Err(e) => return Err(self.err("open the parent directory of", for_path, e)),
            };
        }
        Ok(parent)
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, io::Error> {
        let h = entry.header();
        let mut m = Meta {
            uid: h.uid()?,
            gid: h.gid()?,
            mode: h.mode()?,
            mtime: h.mtime()?,
            xattrs: Vec::new(),
            sparse: Vec::new(),
        };
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                let k = ext.key_bytes();
                let v = ext.value_bytes();
                let num = || {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                };
                match k {
                    b"uid" => m.uid = num().unwrap_or(m.uid),
                    b"gid" => m.gid = num().unwrap_or(m.gid),
                    b"mtime" => {
                        // pax mtimes may carry a fraction; whole seconds are kept
                        let s = std::str::from_utf8(v).unwrap_or("");
                        if let Ok(t) = s.split('.').next().unwrap_or("").parse::<i64>() {
                            m.mtime = t.max(0) as u64;
                        }
                    }
                    _ if k.starts_with(b"GNU.sparse.") => {
                        m.sparse.push((k.to_vec(), v.to_vec()));
                    }
                    _ => {
                        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                            m.xattrs.push((name.to_vec(), v.to_vec()));
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    fn host_ids(&self, comps: &[Vec<u8>], m: &Meta) -> Result<(u32, u32), ApplyError> {
        let unmapped = || ApplyError::Unmapped {
            path: show(comps),
            uid: m.uid,
            gid: m.gid,
        };
        let uid = u32::try_from(m.uid).map_err(|_| unmapped())?;
        let gid = u32::try_from(m.gid).map_err(|_| unmapped())?;
        match &self.opts.id_map {
            None => Ok((uid, gid)),
            Some(map) => Ok((
                map.uid_to_host(uid).ok_or_else(unmapped)?,
                map.gid_to_host(gid).ok_or_else(unmapped)?,
            )),
        }
    }

    fn chown(
        &self,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        comps: &[Vec<u8>],
        m: &Meta,
    ) -> Result<(), ApplyError> {
        if self.opts.ownership != Ownership::Keep {
            return Ok(());
        }
        let (uid, gid) = self.host_ids(comps, m)?;
        let (u, g) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        rfs::chownat(pfd, os(name), Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
            ApplyError::Chown {
                path: show(comps),
                uid: m.uid,
                gid: m.gid,
                source: e.into(),
            }
        })
    }

    fn mode(&self, m: &Meta) -> Mode {
        let mut bits = m.mode & 0o7777;
        if self.opts.ownership == Ownership::Ignore {
            bits &= !0o6000;
        }
        Mode::from_raw_mode(bits)
    }

    fn set_xattrs(&mut self, fd: BorrowedFd<'_>, comps: &[Vec<u8>], m: &Meta) {
        if !self.opts.xattrs {
            return;
        }
        for (k, v) in &m.xattrs {
            if let Err(e) = rfs::fsetxattr(fd, os(k), v, rfs::XattrFlags::empty()) {
                let reason = format!("xattr `{}` not restored: {e}", String::from_utf8_lossy(k));
                self.skip(comps, reason);
            }
        }
    }

    fn whiteout(&mut self, parent: &[Vec<u8>], name: &[u8]) -> Result<(), ApplyError> {
        let mut full = parent.to_vec();
        full.push(name.to_vec());
        if name == OPAQUE_MARKER.as_bytes() {
            match self.opts.whiteouts {
                WhiteoutMode::Delete => {
                    let fd = match open_in(
                        self.root.as_fd(),
                        &join(parent),
                        OFlags::RDONLY | OFlags::DIRECTORY,
                    ) {
                        Ok(fd) => fd,
                        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(()),
                        Err(e) => return Err(self.err("open the opaque directory", parent, e)),
                    };
                    let children = list_dir(fd.as_fd())
                        .map_err(|e| self.err("list the opaque directory", parent, e))?;
                    for c in children {
                        let mut p = parent.to_vec();
                        p.push(c.clone());
                        if !self.written.contains(&join(&p)) {
                            remove_all(fd.as_fd(), &c)
                                .map_err(|e| self.err("remove (opaque directory)", &p, e))?;
                        }
                    }
                }
                WhiteoutMode::Overlay(x) => {
                    self.ensure_dir(parent, &full)?;
                    let fd = open_in(
                        self.root.as_fd(),
                        &join(parent),
                        OFlags::RDONLY | OFlags::DIRECTORY,
                    )
                    .map_err(|e| self.err("open the opaque directory", parent, e))?;
                    rfs::fsetxattr(&fd, x.opaque_name(), b"y", rfs::XattrFlags::empty())
                        .map_err(|e| self.err("mark opaque", parent, e))?;
                    self.mark_written(parent);
                }
            }
            return Ok(());
        }
        let victim = &name[WHITEOUT_PREFIX.len()..];
        let mut vpath = parent.to_vec();
        vpath.push(victim.to_vec());
        if victim.is_empty() || victim == b"." || victim == b".." || victim.contains(&b'/') {
            self.skip(&full, "whiteout names no file".into());
            return Ok(());
        }
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                if self.written.contains(&join(&vpath)) {
                    return Ok(());
                }
                let pfd = match dir_path_fd(self.root.as_fd(), parent) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(self.err("open the parent of whiteout", &full, e)),
                };
                remove_all(pfd.as_fd(), victim)
                    .map_err(|e| self.err("remove (whiteout)", &vpath, e))?;
            }
            WhiteoutMode::Overlay(_) => {
                let pfd = self.ensure_dir(parent, &full)?;
                remove_all(pfd.as_fd(), victim).map_err(|e| self.err("replace", &vpath, e))?;
                // a 0/0 character device needs no privilege since Linux 5.8
                // (a3c751a50fe6, "vfs: allow unprivileged whiteout creation")
                rfs::mknodat(
                    &pfd,
                    os(victim),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    0,
                )
                .map_err(|e| self.err("create the overlay whiteout", &vpath, e))?;
                self.mark_written(&vpath);
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let kind = entry.header().entry_type();
        let mut comps = normalize(&entry.path_bytes());
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let m = self
            .meta(entry)
            .map_err(|e| self.err("read the header of", &comps, e))?;
        let file = matches!(
            kind,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
        );
        // the old GNU format (`S`) is read by the tar crate, the PAX ones here
        let pax_sparse = if file && kind != EntryType::GNUSparse {
            PaxSparse::from_records(&m.sparse).map_err(|reason| ApplyError::SparseMap {
                path: show(&comps),
                reason,
            })?
        } else {
            None
        };
        if let Some(name) = pax_sparse.as_ref().and_then(|s| s.name.as_ref()) {
            // the header's name is a placeholder (`GNUSparseFile.<pid>/...`)
            comps = normalize(name);
        }
        if file {
            // counted before anything is created: an entry over the limit
            // leaves no trace in the target
            let size = pax_sparse.as_ref().map_or(entry.size(), |s| s.real_size);
            let total = self.apparent.saturating_add(size);
            if total > self.opts.max_size {
                return Err(ApplyError::TooLarge {
                    path: show(&comps),
                    total,
                    limit: self.opts.max_size,
                });
            }
            self.apparent = total;
        }
        // the map too is checked before anything is created
        let sparse_map = match &pax_sparse {
            Some(sp) => Some(self.sparse_map(entry, sp, &comps)?),
            None => None,
        };
        self.summary.entries += 1;
        let Some((name, parent)) = comps.split_last() else {
            // the root itself (`./`): its mode and mtime
            if kind == EntryType::Directory {
                self.dirs.push((Vec::new(), m.mode, m.mtime));
            }
            return Ok(());
        };
        let (name, parent) = (name.clone(), parent.to_vec());
        if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&parent, &name);
        }
        if kind == EntryType::Link {
            let target = normalize(&entry.link_name_bytes().unwrap_or_default());
            if target == comps {
                self.skip(&comps, "hard link to itself".into());
                return Ok(());
            }
        }
        let pfd = self.ensure_dir(&parent, &comps)?;
        let pfd = pfd.as_fd();
        // what is there already goes, unless a directory meets a directory
        match rfs::statat(pfd, os(&name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if !(is_dir && kind == EntryType::Directory) {
                    remove_all(pfd, &name).map_err(|e| self.err("replace", &comps, e))?;
                }
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(self.err("inspect", &comps, e)),
        }
        let times = |t: u64| {
            let ts = Timespec {
                tv_sec: t as i64,
                tv_nsec: 0,
            };
            Timestamps {
                last_access: ts,
                last_modification: ts,
            }
        };
        match kind {
            EntryType::Directory => {
                match rfs::mkdirat(pfd, os(&name), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(self.err("create the directory", &comps, e)),
                }
                self.chown(pfd, &name, &comps, &m)?;
                if !m.xattrs.is_empty()
                    && let Ok(fd) = rfs::openat(
                        pfd,
                        os(&name),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                {
                    self.set_xattrs(fd.as_fd(), &comps, &m);
                }
                self.dirs.push((comps.clone(), m.mode, m.mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = rfs::openat(
                    pfd,
                    os(&name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.err("create", &comps, e))?;
                let mut f = File::from(fd);
                let n = match (&pax_sparse, &sparse_map, kind) {
                    (Some(sp), Some(map), _) => {
                        sparse::write_segments(entry, &f, map, sp.real_size)
                            .map_err(|e| self.err("write", &comps, e))?
                    }
                    (_, _, EntryType::GNUSparse) => sparse::write_skipping_zeros(entry, &f)
                        .map_err(|e| self.err("write", &comps, e))?,
                    _ => io::copy(entry, &mut f).map_err(|e| self.err("write", &comps, e))?,
                };
                self.summary.bytes += n;
                self.chown(pfd, &name, &comps, &m)?;
                rfs::fchmod(&f, self.mode(&m)).map_err(|e| self.err("chmod", &comps, e))?;
                self.set_xattrs(f.as_fd(), &comps, &m);
                rfs::futimens(&f, &times(m.mtime))
                    .map_err(|e| self.err("set the mtime of", &comps, e))?;
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                rfs::symlinkat(os(&target), pfd, os(&name))
                    .map_err(|e| self.err("create the symlink", &comps, e))?;
                self.chown(pfd, &name, &comps, &m)?;
                rfs::utimensat(pfd, os(&name), &times(m.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.err("set the mtime of", &comps, e))?;
            }
            EntryType::Link => {
                let target = normalize(&entry.link_name_bytes().unwrap_or_default());
                let Some((tname, tparent)) = target.split_last() else {
                    self.skip(&comps, "hard link to the root directory".into());
                    return Ok(());
                };
                let tpfd = dir_path_fd(self.root.as_fd(), tparent)
                    .map_err(|e| self.err("find the hard link target of", &comps, e))?;
                // no AT_SYMLINK_FOLLOW: a symlink target is linked itself,
                // never what it points to
                rfs::linkat(&tpfd, os(tname), pfd, os(&name), AtFlags::empty())
                    .map_err(|e| self.err("create the hard link", &comps, e))?;
            }
            EntryType::Char | EntryType::Block => {
                // A layer's device node is never made a usable device on the
                // host, as root included: whoever could reach the extracted
                // tree (a store, a `-o type=local` export) would get the raw
                // disk or memory behind it. The image keeps it: its layer is
                // the tar, not this directory. (Overlay whiteouts, 0/0
                // character devices, are made above, not from the tar.)
                let h = entry.header();
                let ma = h.device_major().ok().flatten().unwrap_or(0);
                let mi = h.device_minor().ok().flatten().unwrap_or(0);
                self.skip(
                    &comps,
                    format!(
                        "device node {ma}:{mi} not created on the host (the image's layer keeps it)"
                    ),
                );
                return Ok(());
            }
            EntryType::Fifo => {
                rfs::mknodat(pfd, os(&name), FileType::Fifo, self.mode(&m), 0)
                    .map_err(|e| self.err("create the fifo", &comps, e))?;
                self.chown(pfd, &name, &comps, &m)?;
                rfs::chmodat(pfd, os(&name), self.mode(&m), AtFlags::empty())
                    .map_err(|e| self.err("chmod", &comps, e))?;
                rfs::utimensat(pfd, os(&name), &times(m.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.err("set the mtime of", &comps, e))?;
            }
            other => {
                self.skip(&comps, format!("unsupported tar entry type {other:?}"));
                return Ok(());
            }
        }
        self.mark_written(&comps);
        Ok(())
    }

    /// The checked map of a PAX-format sparse entry; for 1.0 read from the
    /// start of its data, so what is left to read are the segments.
    fn sparse_map<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        sp: &PaxSparse,
        comps: &[Vec<u8>],
    ) -> Result<Vec<sparse::Segment>, ApplyError> {
        let stored = entry.size();
        let bad = |reason| ApplyError::SparseMap {
            path: show(comps),
            reason,
        };
        let (map, data) = match &sp.map {
            MapIn::Records(map) => (map.clone(), stored),
            MapIn::Data => {
                let (map, used) = sparse::read_map(entry, stored).map_err(bad)?;
                (map, stored - used)
            }
        };
        sparse::check_map(&map, sp.real_size, data).map_err(bad)?;
        Ok(map)
    }

    fn finish_dirs(&mut self) {
        let dirs = std::mem::take(&mut self.dirs);
        for (comps, mode, mtime) in dirs.into_iter().rev() {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
            let Ok(fd) = open_in(self.root.as_fd(), &join(&comps), flags) else {
                // replaced by a later entry: nothing to fix
                continue;
            };
            let m = Meta {
                uid: 0,
                gid: 0,
                mode,
                mtime,
                xattrs: Vec::new(),
                sparse: Vec::new(),
            };
            let ts = Timespec {
                tv_sec: mtime as i64,
                tv_nsec: 0,
            };
            if let Err(e) = rfs::fchmod(&fd, self.mode(&m)) {
                self.skip(&comps, format!("directory mode not set: {e}"));
            }
            let _ = rfs::futimens(
                &fd,
                &Timestamps {
                    last_access: ts,
                    last_modification: ts,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        for (text, want) in [
            ("123", Some(123)),
            (" 512k ", Some(512 << 10)),
            ("200G", Some(200 << 30)),
            ("3gb", Some(3 << 30)),
            ("1TiB", Some(1 << 40)),
            ("7b", Some(7)),
            ("", None),
            ("G", None),
            ("1.5G", None),
            ("-1", None),
            ("10X", None),
            ("99999999T", None),
        ] {
            assert_eq!(parse_size(text), want, "{text:?}");
        }
        assert_eq!(show_size(DEFAULT_MAX_SIZE), "68719476736 bytes (64.0 GiB)");
        assert_eq!(show_size(100), "100 bytes");
    }

    #[test]
    fn normalize_clamps_at_root() {
        let cases: &[(&str, &str)] = &[
            ("a/b", "a/b"),
            ("/etc/passwd", "etc/passwd"),
            ("./a/./b/", "a/b"),
            ("../../x", "x"),
            ("a/../../b", "b"),
            ("a//b", "a/b"),
            ("./", ""),
            ("..", ""),
        ];
        for (i, o) in cases {
            assert_eq!(join(&normalize(i.as_bytes())), o.as_bytes(), "{i}");
        }
    }
}
