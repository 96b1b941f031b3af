//! Mounting inside the rootfs: targets resolved in it with openat2
//! `RESOLVE_IN_ROOT`, binds, read-only binds that keep locked flags.

use super::*;

pub(super) fn mount(
    stage: &str,
    src: Option<&OsStr>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> R<()> {
    let src = src.map(cstr);
    let target_c = cstr(target);
    let fstype = fstype.map(cstr);
    let data = data.map(cstr);
    // SAFETY: valid C strings or null, per mount(2)
    let r = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr() as *const libc::c_void),
        )
    };
    if r != 0 {
        return Err(fail(format!("{stage} (mount on `{}`)", target.display()))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// What a mount target should be when it has to be created.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Want {
    Dir,
    File,
}

/// Lexical normalization inside a root: `.` dropped, `..` pops (never above).
pub(super) fn norm_push(out: &mut Vec<String>, path: &str) {
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
}

/// Opens (O_PATH) `path` inside the rootfs, resolving symlinks as if the
/// rootfs were `/` (openat2 RESOLVE_IN_ROOT), creating missing components;
/// created ones are recorded in `stubs`. A dangling symlink on the way is
/// followed inside the rootfs, as the kernel would, and its target created.
pub(super) fn target_in_root(
    root: BorrowedFd<'_>,
    path: &str,
    want: Want,
    stubs: &mut Vec<String>,
) -> R<OwnedFd> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open = |rel: &str| {
        let rel = if rel.is_empty() { "." } else { rel };
        rustix::fs::openat2(
            root,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )
    };
    let mut comps = Vec::new();
    norm_push(&mut comps, path);
    let mut hops = 0;
    'restart: loop {
        for i in 1..=comps.len() {
            let rel = comps[..i].join("/");
            let last = i == comps.len();
            match open(&rel) {
                Ok(fd) if last => return Ok(fd),
                Ok(_) => continue,
                Err(Errno::NOENT) => {}
                Err(e) => return Err(errno_fail(format!("open mount target `{path}`"))(e)),
            }
            let parent = open(&comps[..i - 1].join("/")).map_err(errno_fail(format!(
                "open the parent of mount target `{path}`"
            )))?;
            let name = comps[i - 1].as_str();
            let r = if last && want == Want::File {
                rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::CLOEXEC
                        | OFlags::NOFOLLOW,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            } else {
                rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
            };
            match r {
                // where it really is: a symlink on the way (`/var/run` ->
                // `/run`) was followed
                Ok(()) => stubs.push(real_rel(root, &parent, name).unwrap_or_else(|| rel.clone())),
                Err(Errno::EXIST) => {
                    // a dangling symlink: continue from its target, inside the root
                    let link = rustix::fs::readlinkat(&parent, name, Vec::new())
                        .map_err(errno_fail(format!("create mount target `{path}`")))?;
                    hops += 1;
                    if hops > 40 {
                        return Err(errno_fail(format!("mount target `{path}`"))(Errno::LOOP));
                    }
                    let link = link.to_string_lossy().into_owned();
                    let mut next = if link.starts_with('/') {
                        Vec::new()
                    } else {
                        comps[..i - 1].to_vec()
                    };
                    norm_push(&mut next, &link);
                    next.extend_from_slice(&comps[i..]);
                    comps = next;
                    continue 'restart;
                }
                Err(e) => return Err(errno_fail(format!("create mount target `{path}`"))(e)),
            }
            if last {
                return open(&rel).map_err(errno_fail(format!("open mount target `{path}`")));
            }
        }
        return open("").map_err(errno_fail("open the rootfs"));
    }
}

/// The path of `name` in `dir` relative to the rootfs `root`, from the
/// kernel's name of both descriptors.
pub(super) fn real_rel(root: BorrowedFd<'_>, dir: &OwnedFd, name: &str) -> Option<String> {
    let path =
        |fd: BorrowedFd<'_>| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok();
    let (r, d) = (path(root)?, path(dir.as_fd())?);
    let rel = d.strip_prefix(&r).ok()?.join(name);
    Some(rel.to_string_lossy().into_owned())
}

/// The flags a read-only remount must keep: in a user namespace the kernel
/// refuses to clear nosuid/nodev/noexec/atime flags locked on the source
/// mount (mount(2), EPERM).
pub(super) fn locked_flags(source: &Path) -> libc::c_ulong {
    match rustix::fs::statvfs(source) {
        Ok(s) => {
            let f = s.f_flag;
            let mut out = 0;
            for (st, ms) in [
                (rustix::fs::StatVfsMountFlags::NOSUID, libc::MS_NOSUID),
                (rustix::fs::StatVfsMountFlags::NODEV, libc::MS_NODEV),
                (rustix::fs::StatVfsMountFlags::NOEXEC, libc::MS_NOEXEC),
                (rustix::fs::StatVfsMountFlags::NOATIME, libc::MS_NOATIME),
                (
                    rustix::fs::StatVfsMountFlags::NODIRATIME,
                    libc::MS_NODIRATIME,
                ),
                (rustix::fs::StatVfsMountFlags::RELATIME, libc::MS_RELATIME),
            ] {
                if f.contains(st) {
                    out |= ms as libc::c_ulong;
                }
            }
            out
        }
        Err(_) => 0,
    }
}

pub(super) fn bind(source: &Path, target: &Path, stage: &str) -> R<()> {
    mount(
        stage,
        Some(source.as_os_str()),
        target,
        None,
        (libc::MS_BIND | libc::MS_REC) as libc::c_ulong,
        None,
    )
}

/// Binds `source` onto `path` inside the rootfs, read-only when asked. The
/// read-only remount needs a fresh lookup: the O_PATH descriptor used for
/// the bind still names the covered inode, not the new mount (EINVAL).
pub(super) fn bind_in_root(
    root: BorrowedFd<'_>,
    source: &Path,
    path: &str,
    want: Want,
    readonly: bool,
    stubs: &mut Vec<String>,
) -> R<()> {
    let stage = format!("bind `{}` on `{path}`", source.display());
    let t = target_in_root(root, path, want, stubs)?;
    bind(source, &fd_path(&t), &stage)?;
    drop(t);
    if readonly {
        let t = target_in_root(root, path, want, &mut Vec::new())?;
        let flags = (libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY) as libc::c_ulong
            | locked_flags(source);
        mount(&stage, None, &fd_path(&t), None, flags, None)?;
    }
    Ok(())
}
