//! The init, pid 1 of the new pid namespace: mounts, pivot_root, the
//! step's user and limits, then the exec of the step.

use super::*;

pub(super) fn loopback_up() -> R<()> {
    // SAFETY: plain socket + ioctl(SIOCSIFFLAGS) on a zeroed ifreq, netdevice(7)
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(fail("open a socket for loopback")(
                io::Error::last_os_error(),
            ));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let r = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
        let e = io::Error::last_os_error();
        libc::close(s);
        if r != 0 {
            return Err(fail("bring loopback up")(e));
        }
    }
    Ok(())
}

pub(super) struct InitArgs<'a> {
    pub(super) cfg: &'a ChildConfig,
    pub(super) sock: BorrowedFd<'a>,
    pub(super) idmapped: &'a [OwnedFd],
}

pub(super) extern "C" fn init_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn_init` passes its `InitArgs`, alive until we exec or exit
    let a = unsafe { &*(arg as *const InitArgs<'_>) };
    let code = match init(a.cfg, a.sock, a.idmapped) {
        Ok(code) => code,
        Err(f) => {
            report(a.sock, &f);
            125
        }
    };
    // SAFETY: leave without running the supervisor's atexit handlers
    unsafe { libc::_exit(code) }
}

pub(super) fn init(cfg: &ChildConfig, sock: BorrowedFd<'_>, idmapped: &[OwnedFd]) -> R<i32> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(errno_fail("set the parent death signal"))?;
    // the init's own mount namespace: its only member (with a fuse-overlayfs
    // daemon, which dies with the pid namespace), so every mount of the step
    // is gone when the init's exit reaches the supervisor; pivot_root(2)
    // also leaves the supervisor's root alone
    // SAFETY: plain syscall; this process is single-threaded
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(fail("unshare the init's mount namespace")(
            io::Error::last_os_error(),
        ));
    }
    mount(
        "make mounts private",
        None,
        Path::new("/"),
        None,
        (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong,
        None,
    )?;
    // real root's sandbox: the store's directories through the idmapped
    // clones, attached on their own paths while this process is still the
    // host's root (kuid 0 owns the store's private ancestors, `/root` or
    // a 0700 KILN_HOME, and may walk them); then it becomes the namespace's
    // root (kuid 0 is unmapped here: every file it made would be refused,
    // EOVERFLOW) and reaches them through the clones' descriptors only,
    // walking no ancestor
    let rooted;
    let cfg = if cfg.idmap.is_empty() {
        cfg
    } else {
        crate::idmap::attach(&cfg.idmap, idmapped).map_err(fail("attach the idmapped mounts"))?;
        // SAFETY: plain syscalls on this single-threaded process; the
        // capabilities unshare(2) gave stay (no root ID is dropped,
        // capabilities(7))
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(0, 0, 0) != 0
                || libc::setresuid(0, 0, 0) != 0
            {
                return Err(fail("become the namespace's root")(
                    io::Error::last_os_error(),
                ));
            }
        }
        rooted = crate::idmap::rewrite(cfg, idmapped);
        &rooted
    };
    let (driver, rootfs) = mount_rootfs(cfg, idmapped)?;
    if cfg.probe {
        send(sock, &ToParent::Driver(driver));
        return Ok(0);
    }
    let root = rustix::fs::open(
        &rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_fail("open the rootfs"))?;
    let mut stubs = Vec::new();

    // /dev first: a step's own mounts below it (a heredoc script at
    // /dev/pipes, a tmpfs at /dev/shm) go on top of the sandbox's /dev
    // instead of under it, where the /dev tmpfs would hide them
    setup_dev(root.as_fd(), &rootfs, &mut stubs)?;
    for m in &cfg.mounts {
        let stage = format!("mount `{}`", m.target);
        match &m.kind {
            MountKind::Bind { source, readonly } => {
                let want = if source.is_dir() {
                    Want::Dir
                } else {
                    Want::File
                };
                bind_in_root(root.as_fd(), source, &m.target, want, *readonly, &mut stubs)?;
            }
            MountKind::Cache { source } => {
                bind_in_root(
                    root.as_fd(),
                    source,
                    &m.target,
                    Want::Dir,
                    false,
                    &mut stubs,
                )?;
            }
            // a socket's read-only bind still connects: connect(2) checks
            // write permission on the socket inode, not the mount
            // (path_resolution(7))
            MountKind::Secret { source } | MountKind::Socket { source } => {
                bind_in_root(
                    root.as_fd(),
                    source,
                    &m.target,
                    Want::File,
                    true,
                    &mut stubs,
                )?;
            }
            MountKind::Tmpfs { size } => {
                let t = target_in_root(root.as_fd(), &m.target, Want::Dir, &mut stubs)?;
                // a finite default: the kernel's is half of RAM per mount
                let size = size.unwrap_or(crate::spec::DEFAULT_TMPFS_SIZE);
                let data = format!("mode=1777,size={size}");
                mount(
                    &stage,
                    Some(OsStr::new("tmpfs")),
                    &fd_path(&t),
                    Some("tmpfs"),
                    (libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong,
                    Some(&data),
                )?;
            }
        }
    }
    let proc_fd = target_in_root(root.as_fd(), "/proc", Want::Dir, &mut stubs)?;
    mount(
        "mount /proc",
        Some(OsStr::new("proc")),
        &fd_path(&proc_fd),
        Some("proc"),
        (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as libc::c_ulong,
        None,
    )?;
    drop(proc_fd);
    protect_proc(&rootfs.join("proc"), &rootfs.join("dev/null"))?;
    if cfg.network == Network::Host {
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            // a file of the step's own (extra hosts) replaces the host's
            let own = cfg.net_files.iter().any(|(_, t)| t == f);
            if !own && Path::new(f).exists() {
                bind_in_root(root.as_fd(), Path::new(f), f, Want::File, true, &mut stubs)?;
            }
        }
    }
    for (source, target) in &cfg.net_files {
        bind_in_root(root.as_fd(), source, target, Want::File, true, &mut stubs)?;
    }
    // both just before the exec: the parent wakes once for them
    send(sock, &ToParent::Driver(driver));
    send(sock, &ToParent::Stubs(stubs));
    rustix::system::sethostname(cfg.hostname.as_bytes()).map_err(errno_fail("set the hostname"))?;
    // slirp4netns --configure brought lo up too; it costs one ioctl to be sure
    if cfg.network != Network::Host {
        loopback_up()?;
    }

    // pivot_root(".", ".") then detach the old root stacked on top
    // (pivot_root(2), NOTES)
    rustix::process::fchdir(&root).map_err(errno_fail("enter the rootfs"))?;
    drop(root);
    rustix::process::pivot_root(".", ".").map_err(errno_fail("pivot_root into the rootfs"))?;
    rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)
        .map_err(errno_fail("detach the old root"))?;
    std::env::set_current_dir("/").map_err(fail("enter /"))?;

    if !cfg.cwd.is_empty() && cfg.cwd != "/" {
        std::fs::create_dir_all(&cfg.cwd)
            .map_err(fail(format!("create the working directory `{}`", cfg.cwd)))?;
    }
    std::env::set_current_dir(if cfg.cwd.is_empty() { "/" } else { &cfg.cwd })
        .map_err(fail(format!("enter the working directory `{}`", cfg.cwd)))?;

    crate::harden::drop_capabilities().map_err(fail("drop capabilities"))?;
    crate::harden::limit_processes(cfg.pids_limit).map_err(fail("limit the step's processes"))?;
    // after the pids limit: an `nproc` ulimit of the build replaces it
    crate::harden::set_rlimits(&cfg.rlimits).map_err(fail("set the step's ulimits"))?;

    // drop to the step's user: groups, then gid, then uid
    if cfg.setgroups {
        let groups: Vec<libc::gid_t> = cfg.groups.clone();
        // SAFETY: valid pointer and length
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
            return Err(fail("set the supplementary groups")(
                io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: plain syscalls; raw syscalls act on this (only) thread
    unsafe {
        if libc::setresgid(cfg.gid, cfg.gid, cfg.gid) != 0 {
            return Err(fail(format!("switch to gid {} (is it mapped?)", cfg.gid))(
                io::Error::last_os_error(),
            ));
        }
        if libc::setresuid(cfg.uid, cfg.uid, cfg.uid) != 0 {
            return Err(fail(format!("switch to uid {} (is it mapped?)", cfg.uid))(
                io::Error::last_os_error(),
            ));
        }
    }
    rustix::thread::set_no_new_privs(true).map_err(errno_fail("set no_new_privs"))?;
    // setresuid cleared the death signal (prctl(2)): set it again
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(errno_fail("set the parent death signal"))?;

    exec(cfg)
}

pub(super) fn exec(cfg: &ChildConfig) -> R<i32> {
    let argv: Vec<CString> = cfg.args.iter().map(cstr).collect();
    let envp: Vec<CString> = cfg.env.iter().map(cstr).collect();
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let prog = &cfg.args[0];
    let candidates: Vec<String> = if prog.contains('/') {
        vec![prog.clone()]
    } else {
        let path = cfg
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/{prog}", d.trim_end_matches('/')))
            .collect()
    };
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for c in candidates {
        let p = cstr(&c);
        // SAFETY: null-terminated arrays of valid C strings, execve(2)
        unsafe { libc::execve(p.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
        let e = io::Error::last_os_error();
        // like execvp(3): keep looking after ENOENT, remember EACCES
        if e.raw_os_error() != Some(libc::ENOENT) || last.raw_os_error() == Some(libc::ENOENT) {
            last = e;
        }
    }
    Err(Fail {
        stage: format!("exec `{prog}`"),
        err: last,
    })
}
