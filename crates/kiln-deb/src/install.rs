//! Installation without maintainer scripts: the data of each `.deb`
//! unpacked into a directory by `kiln_layer::apply_tar` (openat2-confined,
//! as image layers are), bookworm's merged-/usr layout honoured, and the
//! dpkg records distroless images keep (`/var/lib/dpkg/status.d/<name>`
//! and `<name>.md5sums`, which Syft, Trivy and Grype read).
//!
//! All packages become one tar stream, made by a thread and applied as it
//! comes: first the skeleton (`/usr/{bin,lib,lib64,sbin}` and the
//! symlinks `/bin`, `/lib`, `/lib64`, `/sbin` into them), then each
//! package's entries with `./bin/...` renamed `./usr/bin/...` (so a
//! package's own `./bin/` entry never replaces the symlink), then the
//! status records. Directory times are set at the end from the packages'
//! entries (0 for directories no entry names), so the same packages give
//! the same tree, byte for byte, whatever the clock says.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use kiln_layer::{ApplyError, ApplyOptions, EntryOwner, Owners};
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};

use crate::deb::{DebError, read_deb};

/// The top-level directories that are symlinks into `/usr` (merged /usr).
pub const MERGED: [&str; 4] = ["bin", "lib", "lib64", "sbin"];

/// What is left out, as Debian's slim images leave it out with dpkg's
/// `path-exclude`: manual pages, translations, info manuals and the
/// documentation but for each package's `copyright` (kept for license
/// compliance and the scanners that read it). The `.md5sums` records still
/// list them, as on a slim Debian.
pub fn left_out(path: &[u8]) -> bool {
    const DROP: [&[u8]; 3] = [b"usr/share/man/", b"usr/share/locale/", b"usr/share/info/"];
    if DROP.iter().any(|p| path.starts_with(p)) {
        return true;
    }
    path.starts_with(b"usr/share/doc/") && !path.ends_with(b"/copyright")
}

/// Where dpkg records go in distroless images.
pub const STATUS_DIR: &str = "var/lib/dpkg/status.d";

/// An installation that failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error("cannot unpack `{deb}`")]
    Apply {
        deb: String,
        #[source]
        source: ApplyError,
    },
    #[error("`{deb}`: bad data tar")]
    Data {
        deb: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the times of `{path}`")]
    Times {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("two packages are both called `{package}` (`{first}` and `{second}`)")]
    Duplicate {
        package: String,
        first: String,
        second: String,
    },
}

/// One package to install: a label for messages (`name_version`) and its
/// `.deb` (from the content store, verified).
#[derive(Debug)]
pub struct DebInput {
    pub label: String,
    pub file: File,
}

/// What was installed.
#[derive(Debug, Clone, Default)]
pub struct InstallSummary {
    /// Package names, in installation order.
    pub packages: Vec<String>,
    pub entries: u64,
    pub bytes: u64,
    /// Entries apply_tar left out (device nodes), with why.
    pub skipped: Vec<kiln_layer::Skipped>,
    /// The owner and permission bits of every entry as the packages give
    /// them (the last package's for a path several give), for
    /// [`kiln_layer::write_tar_owned`]: an unprivileged unpacker leaves
    /// files it cannot give away (and drops set-ID bits), the layer must
    /// not.
    pub owners: Owners,
}

/// Installs `debs`, in the order given, into `target` (a fresh directory:
/// on error it is left partly written).
pub fn install(
    target: &Path,
    debs: Vec<DebInput>,
    opts: &ApplyOptions,
) -> Result<InstallSummary, InstallError> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(8);
    let (produced, applied) = std::thread::scope(|scope| {
        let producer = scope.spawn(move || produce(debs, ChanWriter::new(tx)));
        let applied = kiln_layer::apply_tar(ChanReader::new(rx), target, opts);
        let produced = producer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (produced, applied)
    });
    let (packages, dir_times, owners, modes) = match produced {
        Ok(p) => (p.packages, p.dir_times, p.owners, p.modes),
        Err((e, label)) => {
            return Err(match applied {
                // the producer stopped because the unpacker did
                Err(source) if e.is_broken_pipe() => InstallError::Apply { deb: label, source },
                // otherwise the package is at fault: it ended the stream early
                _ => e.into_install(label),
            });
        }
    };
    let applied = applied.map_err(|source| InstallError::Apply {
        deb: error_path(&source)
            .and_then(|p| owners.get(merged_path(p.as_bytes()).as_slice()))
            .cloned()
            .unwrap_or_else(|| "the package set".into()),
        source,
    })?;
    set_dir_times(target, Path::new(""), &dir_times)?;
    Ok(InstallSummary {
        packages,
        entries: applied.entries,
        bytes: applied.bytes,
        skipped: applied.skipped,
        owners: modes,
    })
}

enum ProduceError {
    Deb(DebError),
    Data(io::Error),
    /// Writing the stream failed: the applier stopped.
    Write(io::Error),
    Duplicate(String, String),
}

impl ProduceError {
    fn is_broken_pipe(&self) -> bool {
        match self {
            ProduceError::Write(e) => e.kind() == io::ErrorKind::BrokenPipe,
            ProduceError::Deb(DebError::Read { source, .. }) => {
                source.kind() == io::ErrorKind::BrokenPipe
            }
            _ => false,
        }
    }

    fn into_install(self, deb: String) -> InstallError {
        match self {
            ProduceError::Deb(e) => InstallError::Deb(e),
            ProduceError::Data(source) | ProduceError::Write(source) => {
                InstallError::Data { deb, source }
            }
            ProduceError::Duplicate(package, first) => InstallError::Duplicate {
                package,
                first,
                second: deb,
            },
        }
    }
}

struct Produced {
    packages: Vec<String>,
    /// Which package (label) wrote each path last, to name the package
    /// an unpacking error is about.
    owners: HashMap<Vec<u8>, String>,
    /// Directory path (relative, no `./`) to the last mtime an entry gave.
    dir_times: HashMap<Vec<u8>, u64>,
    /// Owner and permission bits of every entry written.
    modes: Owners,
}

/// The owner and permission bits a header gives.
fn owner_of(h: &tar::Header) -> io::Result<EntryOwner> {
    Ok(EntryOwner {
        uid: h.uid()?,
        gid: h.gid()?,
        mode: h.mode()? & 0o7777,
    })
}

fn root_owned(mode: u32) -> EntryOwner {
    EntryOwner {
        uid: 0,
        gid: 0,
        mode,
    }
}

fn dir_header(mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h
}

/// A tar name made relative and lexically clean (empty and `.`
/// components dropped, `..` popping but never above the root, as
/// kiln-layer reads names; openat2 is the guard either way), with the
/// merged-/usr rename: `./bin/x` -> `usr/bin/x`.
fn merged_path(raw: &[u8]) -> Vec<u8> {
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                comps.pop();
            }
            _ => comps.push(c),
        }
    }
    if comps
        .first()
        .is_some_and(|first| MERGED.iter().any(|m| m.as_bytes() == *first))
    {
        comps.insert(0, b"usr");
    }
    comps.join(&b'/')
}

fn os(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(b))
}

fn produce(debs: Vec<DebInput>, out: ChanWriter) -> Result<Produced, (ProduceError, String)> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let w = |e| (ProduceError::Write(e), "the package set".to_string());
    let mut modes = Owners::new();
    for d in ["usr", "usr/bin", "usr/lib", "usr/lib64", "usr/sbin"] {
        b.append_data(&mut dir_header(0o755), d, io::empty())
            .map_err(w)?;
        modes.insert(d.as_bytes().to_vec(), root_owned(0o755));
    }
    for m in MERGED {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        b.append_link(&mut h, m, format!("usr/{m}")).map_err(w)?;
        modes.insert(m.as_bytes().to_vec(), root_owned(0o777));
    }
    let mut dir_times = HashMap::new();
    let mut owners = HashMap::new();
    let mut controls: Vec<(String, crate::deb::Control)> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for deb in debs {
        let label = deb.label.clone();
        let (control, ()) = read_deb(&label, io::BufReader::new(deb.file), |_, data| {
            let seen = Seen {
                dir_times: &mut dir_times,
                owners: &mut owners,
                modes: &mut modes,
            };
            copy_data(data, &mut b, seen, &label).map_err(|e| match e {
                ProduceError::Deb(e) => e,
                ProduceError::Data(source) | ProduceError::Write(source) => DebError::Read {
                    deb: label.clone(),
                    source,
                },
                ProduceError::Duplicate(..) => unreachable!("not made by copy_data"),
            })
        })
        .map_err(|e| (ProduceError::Deb(e), label.clone()))?;
        if let Some(first) = seen.insert(control.package.clone(), label.clone()) {
            return Err((
                ProduceError::Duplicate(control.package.clone(), first),
                label,
            ));
        }
        controls.push((label, control));
    }
    for d in ["var", "var/lib", "var/lib/dpkg", STATUS_DIR] {
        b.append_data(&mut dir_header(0o755), d, io::empty())
            .map_err(w)?;
        dir_times.insert(d.as_bytes().to_vec(), 0);
        modes.insert(d.as_bytes().to_vec(), root_owned(0o755));
    }
    let mut packages = Vec::new();
    for (_, c) in &controls {
        let status = status_stanza(&c.control);
        let path = format!("{STATUS_DIR}/{}", c.package);
        append_file(&mut b, &path, status.as_bytes()).map_err(w)?;
        modes.insert(path.into_bytes(), root_owned(0o644));
        if let Some(m) = &c.md5sums {
            let path = format!("{STATUS_DIR}/{}.md5sums", c.package);
            append_file(&mut b, &path, m).map_err(w)?;
            modes.insert(path.into_bytes(), root_owned(0o644));
        }
        packages.push(c.package.clone());
    }
    b.into_inner().and_then(|mut out| out.flush()).map_err(w)?;
    Ok(Produced {
        packages,
        owners,
        dir_times,
        modes,
    })
}

fn append_file(b: &mut tar::Builder<ChanWriter>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, path, data)
}

/// The entry an unpacking error names, if it names one.
fn error_path(e: &ApplyError) -> Option<&str> {
    match e {
        ApplyError::Entry { path, .. }
        | ApplyError::Chown { path, .. }
        | ApplyError::Unmapped { path, .. }
        | ApplyError::NotADirectory { path, .. }
        | ApplyError::TooLarge { path, .. }
        | ApplyError::SparseMap { path, .. } => Some(path),
        _ => None,
    }
}

/// The control stanza with dpkg's `Status` after `Package`, as in
/// dpkg's own `status` file.
pub fn status_stanza(control: &str) -> String {
    let mut out = String::with_capacity(control.len() + 32);
    for line in control.lines() {
        if line.trim().is_empty() || line.starts_with("Status:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("Package:") {
            out.push_str("Status: install ok installed\n");
        }
    }
    out
}

/// What [`copy_data`] keeps of the entries it writes.
struct Seen<'a> {
    dir_times: &'a mut HashMap<Vec<u8>, u64>,
    owners: &'a mut HashMap<Vec<u8>, String>,
    modes: &'a mut Owners,
}

fn copy_data(
    data: &mut dyn Read,
    b: &mut tar::Builder<ChanWriter>,
    seen: Seen<'_>,
    label: &str,
) -> Result<(), ProduceError> {
    let Seen {
        dir_times,
        owners,
        modes,
    } = seen;
    let mut tar = tar::Archive::new(data);
    for e in tar.entries().map_err(ProduceError::Data)? {
        let mut e = e.map_err(ProduceError::Data)?;
        let kind = e.header().entry_type();
        let path = merged_path(&e.path_bytes());
        let name = path.rsplit(|b| *b == b'/').next().unwrap_or(b"");
        if path.is_empty() || name.starts_with(b".wh.") {
            // the root itself, or a name an OCI layer cannot carry
            if !path.is_empty() {
                tracing::warn!(path = %String::from_utf8_lossy(&path), "package entry with a whiteout name skipped");
            }
            continue;
        }
        // directories of the documentation stay (a `copyright` lives in one)
        let skip = if kind == tar::EntryType::Directory {
            !path.starts_with(b"usr/share/doc/") && left_out(&[&path[..], b"/"].concat())
        } else {
            left_out(&path)
        };
        if skip {
            continue;
        }
        if kind == tar::EntryType::Link
            && left_out(&merged_path(&e.link_name_bytes().unwrap_or_default()))
        {
            continue;
        }
        let mut h = e.header().clone();
        owners.insert(path.clone(), label.to_string());
        let mode = owner_of(&h).map_err(ProduceError::Data)?;
        modes.insert(path.clone(), mode);
        match kind {
            tar::EntryType::Directory => {
                let t = h.mtime().map_err(ProduceError::Data)?;
                dir_times.insert(path.clone(), t);
                b.append_data(&mut h, os(&path), io::empty())
                    .map_err(ProduceError::Write)?;
            }
            tar::EntryType::Symlink => {
                let target = e.link_name_bytes().unwrap_or_default().into_owned();
                b.append_link(&mut h, os(&path), os(&target))
                    .map_err(ProduceError::Write)?;
            }
            tar::EntryType::Link => {
                let target = merged_path(&e.link_name_bytes().unwrap_or_default());
                // one inode: the layer gives both names the target's owner
                if let Some(t) = modes.get(&target).copied() {
                    modes.insert(path.clone(), t);
                }
                b.append_link(&mut h, os(&path), os(&target))
                    .map_err(ProduceError::Write)?;
            }
            _ => {
                // the data is read here: an error on the way is the package's
                let mut buf = Vec::with_capacity(e.size() as usize);
                e.read_to_end(&mut buf).map_err(ProduceError::Data)?;
                b.append_data(&mut h, os(&path), &buf[..])
                    .map_err(ProduceError::Write)?;
            }
        }
    }
    Ok(())
}

/// Gives every directory below `root` its time from `times`, 0 where no
/// entry named it; never follows a symlink.
fn set_dir_times(
    root: &Path,
    rel: &Path,
    times: &HashMap<Vec<u8>, u64>,
) -> Result<(), InstallError> {
    use std::os::unix::ffi::OsStrExt;
    let dir = root.join(rel);
    let terr = |path: &Path, source: io::Error| InstallError::Times {
        path: path.to_path_buf(),
        source,
    };
    let rd = std::fs::read_dir(&dir).map_err(|e| terr(&dir, e))?;
    let mut children: Vec<PathBuf> = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| terr(&dir, e))?;
        if ent.file_type().map_err(|e| terr(&dir, e))?.is_dir() {
            children.push(rel.join(ent.file_name()));
        }
    }
    for c in children {
        set_dir_times(root, &c, times)?;
    }
    if !rel.as_os_str().is_empty() {
        let t = times.get(rel.as_os_str().as_bytes()).copied().unwrap_or(0) as i64;
        let ts = Timespec {
            tv_sec: t,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            CWD,
            &dir,
            &Timestamps {
                last_access: ts,
                last_modification: ts,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| terr(&dir, e.into()))?;
    }
    Ok(())
}

/// The writing end of the in-process stream (a channel of chunks, not a
/// pipe: no SIGPIPE whatever the process's disposition).
struct ChanWriter {
    tx: mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 << 10;

impl ChanWriter {
    fn new(tx: mpsc::SyncSender<Vec<u8>>) -> ChanWriter {
        ChanWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the unpacker stopped reading"))
    }
}

struct ChanReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChanReader {
    fn new(rx: mpsc::Receiver<Vec<u8>>) -> ChanReader {
        ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_names() {
        assert_eq!(merged_path(b"./bin/bash"), b"usr/bin/bash");
        assert_eq!(merged_path(b"./bin/"), b"usr/bin");
        assert_eq!(merged_path(b"../../etc/x"), b"etc/x");
        assert_eq!(merged_path(b"./a/../../bin/x"), b"usr/bin/x");
        assert_eq!(merged_path(b"./lib64/ld"), b"usr/lib64/ld");
        assert_eq!(merged_path(b"./binx/y"), b"binx/y");
        assert_eq!(merged_path(b"./usr/bin/x"), b"usr/bin/x");
        assert_eq!(merged_path(b"/sbin"), b"usr/sbin");
    }

    #[test]
    fn slim_paths() {
        assert!(left_out(b"usr/share/man/man1/python3.1.gz"));
        assert!(left_out(b"usr/share/locale/de/LC_MESSAGES/x.mo"));
        assert!(left_out(b"usr/share/doc/libc6/changelog.Debian.gz"));
        assert!(!left_out(b"usr/share/doc/libc6/copyright"));
        assert!(!left_out(b"usr/share/zoneinfo/UTC"));
        assert!(!left_out(b"usr/lib/python3.11/locale.py"));
    }

    #[test]
    fn status_after_package() {
        assert_eq!(
            status_stanza("Package: a\nVersion: 1\nDescription: x\n more\n\n"),
            "Package: a\nStatus: install ok installed\nVersion: 1\nDescription: x\n more\n"
        );
    }
}
