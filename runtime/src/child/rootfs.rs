//! The rootfs: kernel overlay (with the mount-target layer), fuse-overlayfs
//! or the copying driver's copy.

use super::*;

/// Escapes a path for overlay's comma- and colon-separated options.
pub(super) fn escape_overlay(p: &Path) -> String {
    let mut s = String::new();
    for ch in p.to_string_lossy().chars() {
        if matches!(ch, ',' | ':' | '\\') {
            s.push('\\');
        }
        s.push(ch);
    }
    s
}

/// A detached tmpfs (fsopen(2)/fsmount(2): no mount point needed) holding
/// every mount target of the step plus `/dev`, `/proc` and, for the host
/// network, `/etc/resolv.conf` and `/etc/hosts`. It is the bottom lower of
/// the kernel overlay, under the image: a target the image lacks then
/// exists without being created in the upper directory, so nothing has to
/// be removed from the upper afterwards (removing the parent directories a
/// stub copied up costs an rmdir each, a synchronous discard on ext4 with
/// `-o discard`). The image's own entries win; a target it shadows (a
/// symlink, an opaque directory) is still created in the rootfs by
/// `target_in_root` and removed by the parent, as before. Best effort: a
/// target that cannot be made here is simply made later.
/// The overlay of a chain whose options pass mount(2)'s one-page limit
/// (about 65 layers of snapshot paths): each lower directory given on its
/// own with fsconfig(2) `lowerdir+` (Linux 6.8, overlayfs.rst "Specifying
/// layers"), then mounted on the upper directory like the short form.
pub(super) fn mount_overlay_by_layer(cfg: &ChildConfig, stubs: Option<&OwnedFd>) -> R<()> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
    let stage = "mount the overlay rootfs layer by layer";
    let fs =
        rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(errno_fail(stage))?;
    let stub = stubs.map(fd_path);
    for l in cfg.lowers_top_first.iter().chain(stub.as_ref()) {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l.as_path()).map_err(|e| Fail {
            stage: stage.into(),
            err: io::Error::other(format!(
                "{} lower directories are over mount(2)'s one-page limit and this kernel does not take them one by one (`lowerdir+` needs Linux 6.8): {e}",
                cfg.lowers_top_first.len()
            )),
        })?;
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", cfg.upper.as_path())
        .and_then(|()| rustix::mount::fsconfig_set_string(&fs, "workdir", cfg.work.as_path()))
        .and_then(|()| rustix::mount::fsconfig_set_flag(&fs, "userxattr"))
        .and_then(|()| rustix::mount::fsconfig_set_flag(&fs, "volatile"))
        .and_then(|()| rustix::mount::fsconfig_create(&fs))
        .map_err(errno_fail(stage))?;
    let m = rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .map_err(errno_fail(stage))?;
    rustix::mount::move_mount(
        &m,
        "",
        rustix::fs::CWD,
        cfg.upper.as_path(),
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(errno_fail(stage))
}

pub(super) fn stub_layer(cfg: &ChildConfig) -> R<OwnedFd> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
    let fs = rustix::mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(errno_fail("open a tmpfs for the mount targets"))?;
    rustix::mount::fsconfig_set_string(&fs, "mode", "755")
        .and_then(|()| rustix::mount::fsconfig_set_string(&fs, "size", "1m"))
        .and_then(|()| rustix::mount::fsconfig_create(&fs))
        .map_err(errno_fail("create a tmpfs for the mount targets"))?;
    let layer = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(errno_fail("mount a tmpfs for the mount targets"))?;
    let add = |path: &str, want: Want| {
        let mut comps = Vec::new();
        norm_push(&mut comps, path);
        for i in 1..=comps.len() {
            // only our own directories and files in there: no symlink to follow
            let rel = comps[..i].join("/");
            let r = if i == comps.len() && want == Want::File {
                rustix::fs::openat(
                    &layer,
                    rel.as_str(),
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            } else {
                rustix::fs::mkdirat(&layer, rel.as_str(), Mode::from_raw_mode(0o755))
            };
            match r {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(_) => return,
            }
        }
    };
    // exact modes (0755, 0644): the parent recognizes copied-up directories
    // of this layer by them
    let umask = rustix::process::umask(Mode::empty());
    for (path, file) in stub_targets(&cfg.mounts, cfg.network, !cfg.extra_hosts.is_empty()) {
        add(&path, if file { Want::File } else { Want::Dir });
    }
    rustix::process::umask(umask);
    Ok(layer)
}

/// What [`stub_layer`] holds: (absolute path, is a file). The parent uses
/// it too, to recognize directories copied up from that layer.
/// `own_hosts`: the step gets an `/etc/hosts` of its own (extra hosts).
pub(crate) fn stub_targets(
    mounts: &[crate::spec::Mount],
    network: Network,
    own_hosts: bool,
) -> Vec<(String, bool)> {
    let mut out = vec![("/dev".to_string(), false), ("/proc".to_string(), false)];
    for f in ["/etc/resolv.conf", "/etc/hosts"] {
        // the isolated network's own files are always there
        if network == Network::Isolated
            || (network == Network::Host && Path::new(f).exists())
            || (own_hosts && f == "/etc/hosts")
        {
            out.push((f.to_string(), true));
        }
    }
    for m in mounts {
        let file = match &m.kind {
            MountKind::Bind { source, .. } => !source.is_dir(),
            MountKind::Secret { .. } | MountKind::Socket { .. } => true,
            _ => false,
        };
        out.push((m.target.clone(), file));
    }
    out
}

/// The directories [`stub_layer`] makes, relative and normalized.
pub(crate) fn stub_dirs(
    mounts: &[crate::spec::Mount],
    network: Network,
    own_hosts: bool,
) -> Vec<String> {
    let mut dirs = Vec::new();
    for (path, file) in stub_targets(mounts, network, own_hosts) {
        let mut comps = Vec::new();
        norm_push(&mut comps, &path);
        let n = if file {
            comps.len().saturating_sub(1)
        } else {
            comps.len()
        };
        for i in 1..=n {
            let d = comps[..i].join("/");
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    dirs
}

/// Mounts the rootfs; returns the driver and where the rootfs is mounted.
/// `idmapped`: descriptors the paths in `cfg` go through (real root's
/// sandbox, `idmap::rewrite`), which the fuse-overlayfs daemon must inherit.
pub(super) fn mount_rootfs(
    cfg: &ChildConfig,
    idmapped: &[OwnedFd],
) -> R<(Driver, std::path::PathBuf)> {
    if cfg.driver == DriverChoice::Copy {
        let dest = cfg.rootfs.join("copy");
        if cfg.probe {
            return Ok((Driver::Copy, dest));
        }
        // pivot_root wants a mount point
        mount(
            "bind the copied rootfs",
            Some(dest.as_os_str()),
            &dest,
            None,
            (libc::MS_BIND | libc::MS_REC) as libc::c_ulong,
            None,
        )?;
        return Ok((Driver::Copy, dest));
    }
    let lower = cfg
        .lowers_top_first
        .iter()
        .map(|p| escape_overlay(p))
        .collect::<Vec<_>>()
        .join(":");
    // the mount targets as the bottom layer (kernel overlay only: the
    // fuse-overlayfs daemon could not see this process's descriptors)
    let stubs = if cfg.driver == DriverChoice::FuseOverlayfs {
        None
    } else {
        Some(stub_layer(cfg)?)
    };
    let kernel_lower = match stubs.as_ref().map(fd_path) {
        Some(stub) if lower.is_empty() => stub.display().to_string(),
        Some(stub) => format!("{lower}:{}", stub.display()),
        None => lower.clone(),
    };
    // volatile: no sync of the upper filesystem at unmount (overlayfs.rst,
    // "Volatile mount"); that sync (an ext4 journal commit) was most of the
    // teardown time, and a step's upper directory is disposable until the
    // store has written its layer, which the store makes durable itself
    let opts = format!(
        "lowerdir={kernel_lower},upperdir={},workdir={},userxattr,volatile",
        escape_overlay(&cfg.upper),
        escape_overlay(&cfg.work)
    );
    let kernel = if cfg.driver == DriverChoice::FuseOverlayfs {
        None
    } else if opts.len() >= 4000 {
        // mount(2) data is one page: a long chain goes layer by layer
        match mount_overlay_by_layer(cfg, stubs.as_ref()) {
            Ok(()) => return Ok((Driver::Overlay, cfg.upper.clone())),
            Err(f) => Some(f),
        }
    } else {
        // mounted on the upper directory itself (in this private mount
        // namespace; overlay holds the layers it resolved, the covered path
        // is never looked up again): the state directory is only the
        // workdir, one directory less to make and remove per step
        match mount(
            "mount the overlay rootfs",
            Some(OsStr::new("overlay")),
            &cfg.upper,
            Some("overlay"),
            libc::MS_NOSUID as libc::c_ulong,
            Some(&opts),
        ) {
            Ok(()) => return Ok((Driver::Overlay, cfg.upper.clone())),
            Err(f) => Some(f),
        }
    };
    drop(stubs);
    if cfg.driver == DriverChoice::Overlay {
        return Err(kernel.expect("overlay was tried"));
    }
    // fuse-overlayfs mounts from inside our namespaces and daemonizes; the
    // daemon lives in our pid namespace and dies with it.
    //
    // pivot_root(2) moves the root of every process of the mount namespace
    // whose root is the old root, the daemon's too: it would then resolve its
    // own paths through its own mount and deadlock. So the daemon is chrooted
    // into a recursive bind of `/` (another mount, same files), which
    // pivot_root leaves alone; its mount then appears under that bind.
    // (the kernel may have left its `work` in cfg.work: a workdir of our own)
    let fuse_work = cfg.rootfs.join("fuse-work");
    std::fs::create_dir(&fuse_work).map_err(fail("create the fuse workdir"))?;
    let lower = if lower.is_empty() {
        // overlay needs a lower: an empty one
        let empty = cfg.rootfs.join("fuse-empty");
        std::fs::create_dir(&empty).map_err(fail("create an empty lower"))?;
        escape_overlay(&empty)
    } else {
        lower
    };
    let fuse_opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        escape_overlay(&cfg.upper),
        escape_overlay(&fuse_work)
    );
    // cfg.rootfs is the state directory; the fuse mount gets its own
    // mountpoint below it
    let fuse_root = cfg.rootfs.join("rootfs");
    std::fs::create_dir(&fuse_root).map_err(fail("create the fuse mountpoint"))?;
    let host = cfg.rootfs.join("host");
    std::fs::create_dir(&host).map_err(fail("create the fuse daemon's root"))?;
    mount(
        "bind / for the fuse daemon",
        Some(OsStr::new("/")),
        &host,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    let mountpoint = host.join(fuse_root.strip_prefix("/").unwrap_or(&fuse_root));
    let host_c = cstr(&host);
    let mut cmd = std::process::Command::new("fuse-overlayfs");
    cmd.arg("-o")
        .arg(&fuse_opts)
        .arg(&fuse_root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: chroot and chdir are async-signal-safe
    unsafe {
        let keep: Vec<i32> = idmapped.iter().map(|f| f.as_raw_fd()).collect();
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::chroot(host_c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            // its paths are /proc/self/fd/N/..: the daemon needs those N
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output();
    let why_kernel = kernel
        .map(|k| format!("kernel overlay refused: {}: {}; ", k.stage, k.err))
        .unwrap_or_default();
    match out {
        Ok(o) if o.status.success() => Ok((Driver::FuseOverlayfs, mountpoint)),
        Ok(o) => Err(Fail {
            stage: "mount the rootfs".into(),
            err: io::Error::other(format!(
                "{why_kernel}fuse-overlayfs failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        }),
        Err(e) => Err(Fail {
            stage: "mount the rootfs".into(),
            err: io::Error::other(format!(
                "{why_kernel}fuse-overlayfs could not start ({e}): install the fuse-overlayfs package"
            )),
        }),
    }
}
