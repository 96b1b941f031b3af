//! File operations: each op builds its changes in a fresh directory (new
//! files, and `.wh.NAME` markers for removals) that becomes one layer: a
//! directory layer moved into the snapshot area as it is, or, when it
//! deletes something (`.wh.` files cannot serve as an overlay lower), a blob
//! right away. The base and the copy sources are read through the layer
//! stack ([`Union`]) without ever following a symlink out of it.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use kiln_dag::{Chown, FileAction, FileOp};
use kiln_layer::{IdMapping, IdRange, WriteOptions};
use kiln_solver::Selector;

use crate::context;
use crate::patterns::PatternError;
use crate::select::{self, Entry, Kind, SelectError, Selection};
use crate::snapshot::{self, Ref, SnapshotError, Snapshots, TarSpec};
use crate::union::Union;

#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("`{path}` not found in the copy source")]
    SourceMissing { path: String },
    #[error("`{path}` not found (pass `allow_not_found` to ignore it)")]
    RmMissing { path: String },
    #[error("path `{path}` leaves its root through too many symlinks")]
    SymlinkLoop { path: String },
    #[error("cannot {what} `{path}`: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve the owner `{spec}`: {reason}")]
    Owner { spec: String, reason: String },
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Context(#[from] context::ContextError),
    #[error(transparent)]
    Unpack(#[from] crate::unpack::UnpackError),
    #[error(transparent)]
    Mode(#[from] kiln_dag::ModeError),
    #[error("copy source input {from} does not exist")]
    NoInput { from: usize },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileOpError {
    let path = path.to_path_buf();
    move |source| FileOpError::Io { what, path, source }
}

/// `/a/./b/` -> `a/b` (lexically; `..` cannot climb above the root).
pub fn rel(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Resolves the directory components of `rel` against the tree at `root`,
/// following symlinks as the container would see them (absolute targets are
/// relative to `root`), never leaving it. The final component is not
/// followed.
pub fn resolve_in(root: &Union, rel_path: &Path) -> Result<PathBuf, FileOpError> {
    let mut parts: Vec<std::ffi::OsString> = rel_path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    parts.reverse();
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(p) = parts.pop() {
        let next = cur.join(&p);
        if parts.is_empty() {
            return Ok(next);
        }
        match root.lstat(&next).map_err(io("read", &next))? {
            Some(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(FileOpError::SymlinkLoop {
                        path: rel_path.display().to_string(),
                    });
                }
                let target = root.read_link(&next).map_err(io("read", &next))?;
                let base = if target.is_absolute() {
                    PathBuf::new()
                } else {
                    cur.clone()
                };
                let joined = rel(&base.join(target).to_string_lossy());
                let mut t: Vec<_> = joined
                    .components()
                    .map(|c| c.as_os_str().to_os_string())
                    .collect();
                t.reverse();
                parts.extend(t);
                cur = PathBuf::new();
            }
            _ => cur = next,
        }
    }
    Ok(cur)
}

struct Ctx<'a> {
    base: &'a Union,
    change: &'a Path,
    owner: Option<(u32, u32)>,
}

/// Runs `op` on `inputs` (input 0 is the filesystem changed) and returns the
/// result with one new layer.
pub fn run(snaps: &Snapshots, op: &FileOp, inputs: &[Ref], epoch: i64) -> Result<Ref, FileOpError> {
    match run_on(snaps, op, inputs, epoch, false) {
        Err(e) if denied(&e) && !rustix::process::geteuid().is_root() => {
            tracing::debug!("reading through merged trees: {e}");
            run_on(snaps, op, inputs, epoch, true)
        }
        r => r,
    }
}

/// Whether `e` comes from a directory the calling user may not read: rootless,
/// another container user's private directory in a step's layer.
pub fn denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if x.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        cur = x.source();
    }
    false
}

/// How a step reads a chain: through its layer stack, or (`merged`, the
/// rootless fallback for unreadable directories) through a merged tree made
/// from the layers' tars, which the runtime writes inside the user
/// namespace and which then belongs to the calling user.
pub fn view(snaps: &Snapshots, r: &Ref, merged: bool) -> Result<Union, SnapshotError> {
    if merged {
        Ok(Union::plain(snaps.merged(r)?))
    } else {
        snaps.union(r)
    }
}

fn run_on(
    snaps: &Snapshots,
    op: &FileOp,
    inputs: &[Ref],
    epoch: i64,
    merged: bool,
) -> Result<Ref, FileOpError> {
    let store = snaps.store();
    let base_ref = inputs.first().ok_or(FileOpError::NoInput { from: 0 })?;
    let base = view(snaps, base_ref, merged)?;
    let change = snapshot::temp_dir(store, "fileop")?;
    DEFERRED.with(|d| d.borrow_mut().clear());
    let r = build_change(snaps, op, inputs, &base, &change, merged)
        .and_then(|whiteouts| chown_deferred(snaps, &change).map(|()| whiteouts));
    let r = r.and_then(|whiteouts| {
        if !whiteouts {
            // The tar is written at commit, with the options below.
            let tar = TarSpec {
                overlay_whiteouts: false,
                xattrs: false,
                epoch: epoch.max(0) as u64,
            };
            return Ok(snaps.add_dir_layer(&change, b"fileop", tar)?);
        }
        let id_map = (!rustix::process::geteuid().is_root()).then(|| {
            let one = |host: u32| {
                vec![IdRange {
                    container: 0,
                    host,
                    size: 1,
                }]
            };
            IdMapping {
                uids: one(rustix::process::geteuid().as_raw()),
                gids: one(rustix::process::getegid().as_raw()),
            }
        });
        let opts = WriteOptions {
            overlay_whiteouts: false,
            id_map,
            source_date_epoch: Some(epoch.max(0) as u64),
            xattrs: false,
        };
        Ok(snapshot::layer_from_dir(store, &change, &opts)?)
    });
    if change.exists() {
        let _ = fs::remove_dir_all(&change);
    }
    let layer = r?;
    let mut out = base_ref.clone();
    out.layers.push(layer);
    Ok(out)
}

/// Writes the op's changes into `change`; true when it wrote a whiteout.
fn build_change(
    snaps: &Snapshots,
    op: &FileOp,
    inputs: &[Ref],
    base: &Union,
    change: &Path,
    merged: bool,
) -> Result<bool, FileOpError> {
    let mut whiteouts = false;
    for a in &op.actions {
        match a {
            FileAction::Copy(c) => {
                let src_ref = inputs
                    .get(c.from)
                    .ok_or(FileOpError::NoInput { from: c.from })?;
                let src_root = view(snaps, src_ref, merged)?;
                let owner = resolve_owner(base, c.chown.as_ref())?;
                let cx = Ctx {
                    base,
                    change,
                    owner,
                };
                copy(&cx, &src_root, c)?;
            }
            FileAction::Mkdir {
                path,
                mode,
                parents,
                chown,
            } => {
                let owner = resolve_owner(base, chown.as_ref())?;
                let cx = Ctx {
                    base,
                    change,
                    owner,
                };
                let r = resolve_in(base, &rel(path))?;
                if *parents {
                    ensure_parents(&cx, &r)?;
                }
                let p = change.join(&r);
                if !p.is_dir() {
                    fs::create_dir(&p).map_err(io("create directory", &p))?;
                }
                set_meta(&p, *mode, owner)?;
            }
            FileAction::Mkfile {
                path,
                mode,
                data,
                chown,
            } => {
                let owner = resolve_owner(base, chown.as_ref())?;
                let cx = Ctx {
                    base,
                    change,
                    owner,
                };
                let r = resolve_in(base, &rel(path))?;
                ensure_parents(&cx, &r)?;
                let p = change.join(&r);
                remove_any(&p)?;
                fs::write(&p, data).map_err(io("write", &p))?;
                set_meta(&p, *mode, owner)?;
            }
            FileAction::Symlink { target, link } => {
                let cx = Ctx {
                    base,
                    change,
                    owner: None,
                };
                let r = resolve_in(base, &rel(link))?;
                ensure_parents(&cx, &r)?;
                let p = change.join(&r);
                remove_any(&p)?;
                symlink(target, &p).map_err(io("create symlink", &p))?;
            }
            FileAction::Rm {
                path,
                allow_not_found,
            } => {
                let cx = Ctx {
                    base,
                    change,
                    owner: None,
                };
                let r = resolve_in(base, &rel(path))?;
                let in_change = fs::symlink_metadata(change.join(&r)).is_ok();
                let in_base = base.lstat(&r).map_err(io("read", &r))?.is_some();
                if in_change {
                    remove_any(&change.join(&r))?;
                }
                if in_base {
                    let (Some(parent), Some(name)) = (r.parent(), r.file_name()) else {
                        continue;
                    };
                    ensure_parents(&cx, &r)?;
                    let mut wh = std::ffi::OsString::from(kiln_layer::WHITEOUT_PREFIX);
                    wh.push(name);
                    let p = change.join(parent).join(wh);
                    fs::write(&p, b"").map_err(io("write whiteout", &p))?;
                    whiteouts = true;
                } else if !in_change && !allow_not_found {
                    return Err(FileOpError::RmMissing { path: path.clone() });
                }
            }
        }
    }
    Ok(whiteouts)
}

fn remove_any(p: &Path) -> Result<(), FileOpError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(io("remove", p)),
        Ok(_) => fs::remove_file(p).map_err(io("remove", p)),
        Err(_) => Ok(()),
    }
}

fn set_meta(p: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), FileOpError> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io("set the mode of", p))?;
    if let Some(o) = owner {
        set_owner(p, o)?;
    }
    Ok(())
}

thread_local! {
    /// Owners [`set_owner`] could not set itself, for [`chown_deferred`].
    static DEFERRED: std::cell::RefCell<Vec<(PathBuf, u32, u32)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// lchown(2) as real root. Rootless, giving a file to another ID is refused
/// (EPERM), so the change is noted and made once the change directory is
/// complete, by the runtime inside the user namespace ([`chown_deferred`]).
fn set_owner(p: &Path, (u, g): (u32, u32)) -> Result<(), FileOpError> {
    if rustix::process::geteuid().is_root() {
        return std::os::unix::fs::lchown(p, Some(u), Some(g))
            .map_err(io("change the owner of", p));
    }
    DEFERRED.with(|d| d.borrow_mut().push((p.to_path_buf(), u, g)));
    Ok(())
}

/// Makes the owner changes [`set_owner`] deferred on this thread.
fn chown_deferred(snaps: &Snapshots, change: &Path) -> Result<(), FileOpError> {
    let list = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
    if list.is_empty() {
        return Ok(());
    }
    let helper = snaps.helper().ok_or_else(|| FileOpError::Owner {
        spec: format!("{}:{}", list[0].1, list[0].2),
        reason: "rootless, changing owners needs the sandbox helper".into(),
    })?;
    let scratch = change.parent().unwrap_or(change);
    kiln_runtime::Runtime::new(helper)
        .chown(scratch, &list)
        .map_err(|e| FileOpError::Io {
            what: "change the owner of",
            path: list[0].0.clone(),
            source: std::io::Error::other(crate::chain(&e)),
        })
}

/// Creates the parent directories of `r` in the change directory, with the
/// mode and owner they have in the base (0755 root when new).
fn ensure_parents(cx: &Ctx<'_>, r: &Path) -> Result<(), FileOpError> {
    let Some(parent) = r.parent() else {
        return Ok(());
    };
    let mut cur = PathBuf::new();
    for c in parent.components() {
        cur.push(c);
        let p = cx.change.join(&cur);
        if p.is_dir() {
            continue;
        }
        fs::create_dir(&p).map_err(io("create directory", &p))?;
        match cx.base.lstat(&cur).map_err(io("read", &cur))? {
            Some(m) if m.is_dir() => {
                use std::os::unix::fs::MetadataExt;
                fs::set_permissions(&p, m.permissions()).map_err(io("set the mode of", &p))?;
                if rustix::process::geteuid().is_root() {
                    std::os::unix::fs::lchown(&p, Some(m.uid()), Some(m.gid()))
                        .map_err(io("change the owner of", &p))?;
                }
            }
            _ => {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                    .map_err(io("set the mode of", &p))?;
                if let Some(o) = cx.owner {
                    set_owner(&p, o)?;
                }
            }
        }
    }
    Ok(())
}

/// `user[:group]` through the base's /etc/passwd and /etc/group.
fn resolve_owner(base: &Union, chown: Option<&Chown>) -> Result<Option<(u32, u32)>, FileOpError> {
    let Some(c) = chown else { return Ok(None) };
    let spec = match &c.group {
        Some(g) => format!("{}:{g}", c.user),
        None => c.user.clone(),
    };
    let read = |p: &str| base.read_to_string(Path::new(p)).unwrap_or_default();
    let u = kiln_runtime::passwd::resolve(&spec, &read("etc/passwd"), &read("etc/group")).map_err(
        |e| FileOpError::Owner {
            spec: spec.clone(),
            reason: e.to_string(),
        },
    )?;
    Ok(Some((u.uid, u.gid)))
}

/// A copy's source as found in its tree.
struct Found {
    /// Where `src` names it (its directories resolved, a final symlink
    /// not): the name a file takes under a destination directory.
    named: PathBuf,
    /// Where it is, a followed final symlink resolved.
    at: PathBuf,
    /// The path to read it at.
    path: PathBuf,
    meta: fs::Metadata,
}

/// Finds `src` in `root`; with `follow`, a symlink it names is followed
/// (as often as it takes, never leaving `root`), as BuildKit's copy with
/// `FollowSymlinks` resolves its source.
fn find_source(root: &Union, src: &str, follow: bool) -> Result<Found, FileOpError> {
    let named = resolve_in(root, &rel(src))?;
    let mut at = named.clone();
    let mut hops = 0;
    loop {
        let found = root.lookup(&at).map_err(io("read", &at))?.ok_or_else(|| {
            FileOpError::SourceMissing {
                path: src.to_string(),
            }
        })?;
        if !(follow && found.meta.file_type().is_symlink()) {
            return Ok(Found {
                named,
                at,
                path: found.path,
                meta: found.meta,
            });
        }
        hops += 1;
        if hops > 40 {
            return Err(FileOpError::SymlinkLoop {
                path: src.to_string(),
            });
        }
        let target = fs::read_link(&found.path).map_err(io("read", &found.path))?;
        let base = if target.is_absolute() {
            PathBuf::new()
        } else {
            at.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        at = resolve_in(root, &rel(&base.join(target).to_string_lossy()))?;
    }
}

/// The owner a copied entry gets: `--chown`'s, the source's (read as
/// host IDs, kept as the container IDs they stand for), or root's (`None`,
/// what the copying process makes).
#[derive(Clone, Copy)]
enum Owner<'a> {
    Fixed(Option<(u32, u32)>),
    Keep(&'a IdMapping),
}

impl Owner<'_> {
    fn of(self, host: (u32, u32)) -> Option<(u32, u32)> {
        match self {
            Owner::Fixed(o) => o,
            Owner::Keep(map) => {
                let ids = container_ids(map, host);
                // what the copying process creates anyway
                (ids != (0, 0)).then_some(ids)
            }
        }
    }
}

/// How the layers' files are owned on disk: container IDs as they are
/// for real root, the namespace's host IDs rootless.
fn disk_mapping() -> IdMapping {
    match kiln_runtime::plan_mapping() {
        Ok((plan, _)) => plan.disk_mapping(),
        Err(e) => {
            tracing::debug!("no ID mapping, reading owners as they are: {e}");
            IdMapping::identity()
        }
    }
}

/// The container IDs a file owned by `host` on disk belongs to; an ID the
/// mapping does not hold reads as root's, as the sandbox's overflow ID
/// would be unusable in an image.
fn container_ids(map: &IdMapping, (u, g): (u32, u32)) -> (u32, u32) {
    (
        map.uid_to_container(u).unwrap_or(0),
        map.gid_to_container(g).unwrap_or(0),
    )
}

fn copy(cx: &Ctx<'_>, src_root: &Union, c: &kiln_dag::CopyAction) -> Result<(), FileOpError> {
    let (src, dest) = (c.src.as_str(), c.dest.as_str());
    let symbolic = c
        .chmod_symbolic
        .as_deref()
        .map(kiln_dag::SymbolicMode::parse)
        .transpose()?;
    // `--chmod`: an octal mode, or a symbolic one applied to each
    // entry's own mode (BuildKit's copy applies it per entry)
    let mode_of = |mode: u32, is_dir: bool| match (c.chmod, &symbolic) {
        (Some(m), _) => m,
        (None, Some(s)) => s.apply(mode, is_dir),
        (None, None) => mode,
    };
    let map = c.keeps_owners().then(disk_mapping);
    let owner = match &map {
        Some(m) => Owner::Keep(m),
        None => Owner::Fixed(cx.owner),
    };
    let found = find_source(src_root, src, c.follow_symlinks)?;
    let (src_path, meta) = (&found.path, &found.meta);
    // Resolve every component of the destination, its last one included,
    // inside the base (e.g. `/bin/` where `/bin -> usr/bin`).
    let dest_dir = resolve_in(cx.base, &rel(dest).join("x"))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let is_dir = |p: &Path| {
        p.as_os_str().is_empty()
            || cx.base.lstat(p).ok().flatten().is_some_and(|m| m.is_dir())
            || fs::symlink_metadata(cx.change.join(p)).is_ok_and(|m| m.is_dir())
    };
    use std::os::unix::fs::MetadataExt;
    if meta.is_dir() {
        let sel = Selection::patterns(&c.include, &c.exclude)?;
        let entries = select::walk(src_root, &found.at, &sel)?;
        // A destination directory the copy creates takes the source
        // directory's mode (or `chmod`), as BuildKit's copy does, and the
        // `--chown` owner or root's (BuildKit makes it before it copies
        // the contents, so a kept owner does not reach it).
        let new_dest = !dest_dir.as_os_str().is_empty()
            && !is_dir(&dest_dir)
            && !cx.change.join(&dest_dir).exists();
        ensure_parents(cx, &dest_dir.join("x"))?;
        if new_dest {
            // A symbolic mode leaves it BuildKit's 0755 (its MkdirAll).
            let mode = match (c.chmod, &symbolic) {
                (None, Some(_)) => 0o755,
                _ => mode_of(meta.mode() & 0o7777, true),
            };
            set_meta(&cx.change.join(&dest_dir), mode, cx.owner)?;
        }
        for (e, from) in entries {
            let to = cx.change.join(&dest_dir).join(&e.rel);
            let mode = mode_of(e.mode, e.kind == Kind::Dir);
            copy_entry(&from, &to, &e.kind, mode, owner.of(e.owner))?;
        }
        return Ok(());
    }
    if c.unpack && meta.file_type().is_file() && crate::unpack::is_archive(src_path) {
        // BuildKit: the destination is a directory (its missing parts made
        // 0755 with the `--chown` owner); the entries keep their own.
        ensure_parents(cx, &dest_dir.join("x"))?;
        let target = cx.change.join(&dest_dir);
        crate::unpack::extract(src_path, src, &target)?;
        if let Some(o) = cx.owner {
            // BuildKit's untar takes `--chown` for every entry. The op has
            // this one action (kiln makes one file op per copy), so what
            // is below the destination in the change came from the archive.
            chown_tree(&target, o)?;
        }
        return Ok(());
    }
    // include/exclude select below a directory; a file source is copied
    // as it is (BuildKit matches them only below the source, and the
    // content digest never applied them to a file). Under a destination
    // directory it keeps the name `src` gave it, a followed link's.
    let target = if dest.ends_with('/') || is_dir(&dest_dir) {
        dest_dir.join(found.named.file_name().unwrap_or_default())
    } else {
        resolve_in(cx.base, &rel(dest))?
    };
    ensure_parents(cx, &target)?;
    let kind = if meta.file_type().is_symlink() {
        Kind::Symlink {
            target: fs::read_link(src_path).map_err(io("read", src_path))?,
        }
    } else {
        Kind::File { size: meta.len() }
    };
    copy_entry(
        src_path,
        &cx.change.join(&target),
        &kind,
        mode_of(meta.mode() & 0o7777, false),
        owner.of((meta.uid(), meta.gid())),
    )
}

/// Gives everything below `dir` the owner `o`, never following a symlink.
fn chown_tree(dir: &Path, o: (u32, u32)) -> Result<(), FileOpError> {
    for e in fs::read_dir(dir).map_err(io("read", dir))? {
        let p = e.map_err(io("read", dir))?.path();
        let m = fs::symlink_metadata(&p).map_err(io("read", &p))?;
        set_owner(&p, o)?;
        if m.is_dir() {
            chown_tree(&p, o)?;
        }
    }
    Ok(())
}

fn copy_entry(
    from: &Path,
    to: &Path,
    kind: &Kind,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), FileOpError> {
    match kind {
        Kind::Dir => {
            if !to.is_dir() {
                remove_any(to)?;
                fs::create_dir(to).map_err(io("create directory", to))?;
            }
            set_meta(to, mode, owner)?;
        }
        Kind::File { .. } => {
            remove_any(to)?;
            fs::copy(from, to).map_err(io("copy to", to))?;
            set_meta(to, mode, owner)?;
        }
        Kind::Symlink { target } => {
            remove_any(to)?;
            symlink(target, to).map_err(io("create symlink", to))?;
            if let Some(o) = owner {
                set_owner(to, o)?;
            }
        }
    }
    Ok(())
}

/// The digest of what a copy would read from the tree at `root`: `src`
/// and, for a directory, the selected files below it; with
/// `sel.owners`, their owners as container IDs too.
pub fn content_digest(root: &Union, sel: &Selector) -> Result<kiln_dag::Digest, FileOpError> {
    use std::os::unix::fs::MetadataExt;
    let found = find_source(root, &sel.path, sel.follow)?;
    let (path, meta) = (found.path, found.meta);
    let mut cache = context::StatCache::default();
    let (entries, paths) = if meta.is_dir() {
        let pats = Selection::patterns(&sel.include, &sel.exclude)?;
        let selected = select::walk(root, &found.at, &pats)?;
        let paths: std::collections::HashMap<String, PathBuf> = selected
            .iter()
            .map(|(e, p)| (e.rel.clone(), p.clone()))
            .collect();
        (selected.into_iter().map(|(e, _)| e).collect(), paths)
    } else {
        let name = found
            .named
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = if meta.file_type().is_symlink() {
            Kind::Symlink {
                target: fs::read_link(&path).map_err(io("read", &path))?,
            }
        } else {
            Kind::File { size: meta.len() }
        };
        let entry = Entry {
            rel: name.clone(),
            kind,
            mode: meta.mode() & 0o7777,
            owner: (meta.uid(), meta.gid()),
        };
        (vec![entry], [(name, path)].into_iter().collect())
    };
    let content = context::digest_with(&entries, &mut cache, |e| {
        paths.get(&e.rel).cloned().unwrap_or_default()
    })?;
    if !sel.owners {
        return Ok(content);
    }
    // The owners as the copy will set them, so a rootless and a root
    // build of the same stage agree.
    let map = disk_mapping();
    let mut e = kiln_dag::canonical::Encoder::new();
    e.tag("kiln-copy-owners/v1");
    e.bytes(content.as_bytes());
    for entry in &entries {
        let (u, g) = container_ids(&map, entry.owner);
        e.str(&entry.rel);
        e.u64(u64::from(u));
        e.u64(u64::from(g));
    }
    Ok(kiln_dag::Digest::of(&e.into_bytes()))
}
