//! The sandbox child: runs in a fresh process (a re-exec of the kiln binary
//! through its hidden subcommand, never a fork of a threaded or async
//! parent). Two roles:
//!
//! - the supervisor (the re-exec'd process itself) creates the namespaces,
//!   lets the parent write the ID maps, forks the init and reports its exit;
//! - the init (pid 1 of the new pid namespace) mounts the rootfs, /dev,
//!   /proc and the step's mounts, pivots into the rootfs, drops to the step's
//!   user and execs the command. When it dies the kernel kills everything
//!   else in the pid namespace (pid_namespaces(7)), and with it goes the
//!   mount namespace and every mount: nothing to unmount on any path.
//!
//! Both are single-threaded, so plain fork(2) and allocation after it are
//! fine. Nothing here prints: stdout and stderr belong to the step; errors
//! travel to the parent over the socket.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::proto::{ChildConfig, FD_ENV, GO, PARENT_ENV, ToParent};
use crate::spec::{Driver, DriverChoice, MountKind, Network};

struct Fail {
    stage: String,
    err: io::Error,
}

type R<T> = Result<T, Fail>;

fn fail(stage: impl Into<String>) -> impl FnOnce(io::Error) -> Fail {
    let stage = stage.into();
    move |err| Fail { stage, err }
}

fn errno_fail(stage: impl Into<String>) -> impl FnOnce(Errno) -> Fail {
    let f = fail(stage);
    move |e| f(e.into())
}

fn send(sock: BorrowedFd<'_>, msg: &ToParent) {
    if let Ok(bytes) = serde_json::to_vec(msg) {
        let _ = rustix::net::send(sock, &bytes, rustix::net::SendFlags::NOSIGNAL);
    }
}

fn report(sock: BorrowedFd<'_>, f: &Fail) {
    send(
        sock,
        &ToParent::Failed {
            stage: f.stage.clone(),
            error: f.err.to_string(),
            errno: f.err.raw_os_error(),
        },
    );
}

/// Entry point of the hidden `__sandbox-child` subcommand. Never returns.
pub fn child_main() -> ! {
    let fd: i32 = match std::env::var(FD_ENV).ok().and_then(|v| v.parse().ok()) {
        Some(fd) => fd,
        None => {
            eprintln!("kiln: the sandbox child is started by kiln itself, not by hand");
            std::process::exit(125);
        }
    };
    // What the parent's spawn leaves to us (it has no fork hook, see
    // parent.rs): a session of our own, so terminal signals go to kiln,
    // which decides; and death with the thread that started us, once we
    // know that parent is still there (prctl(2): a parent gone before the
    // prctl would never send the signal).
    let _ = rustix::process::setsid();
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let parent = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    if parent.is_some_and(|p| p != ppid) {
        std::process::exit(125);
    }
    // SAFETY: the parent passed this descriptor for us to own
    let mut sock = unsafe { OwnedFd::from_raw_fd(fd) };
    if fd == 0 {
        // the socket came as stdin: off fd 0, and the step reads /dev/null
        match take_stdin_socket(sock) {
            Ok(s) => sock = s,
            Err(_) => std::process::exit(125),
        }
    }
    let _ = rustix::io::fcntl_setfd(&sock, rustix::io::FdFlags::CLOEXEC);
    // Descriptors kiln inherited without close-on-exec (from a CI runner,
    // a shell) must not reach the step: a sandbox sees only what it was
    // given. The socket is close-on-exec already; stdio is the step's.
    if let Err(e) = cloexec_from(3) {
        report(
            sock.as_fd(),
            &fail("mark inherited descriptors close-on-exec")(e),
        );
        std::process::exit(125);
    }
    let code = match supervise(sock.as_fd()) {
        Ok(code) => code,
        Err(f) => {
            report(sock.as_fd(), &f);
            125
        }
    };
    std::process::exit(code)
}

/// Sets close-on-exec on every descriptor from `first` up:
/// close_range(2) `CLOSE_RANGE_CLOEXEC` (Linux 5.11), else one fcntl per
/// descriptor listed in /proc/self/fd.
fn cloexec_from(first: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number; a closed one (the
        // directory's own) fails with EBADF, which is fine
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Moves the control socket from stdin to a descriptor of its own and
/// puts /dev/null on stdin.
fn take_stdin_socket(stdin: OwnedFd) -> io::Result<OwnedFd> {
    let sock = rustix::io::fcntl_dupfd_cloexec(&stdin, 3)?;
    let null = std::fs::File::open("/dev/null")?;
    // replaces fd 0 (our copy of the socket) atomically
    rustix::stdio::dup2_stdin(&null)?;
    std::mem::forget(stdin);
    Ok(sock)
}

fn recv_config(sock: BorrowedFd<'_>) -> R<ChildConfig> {
    let mut buf = vec![0u8; 1 << 20];
    let n = rustix::net::recv(sock, &mut buf[..], rustix::net::RecvFlags::empty())
        .map_err(errno_fail("read the sandbox config"))?
        .0;
    serde_json::from_slice(&buf[..n]).map_err(|e| Fail {
        stage: "parse the sandbox config".into(),
        err: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

fn supervise(sock: BorrowedFd<'_>) -> R<i32> {
    let cfg = recv_config(sock)?;
    let job_only = cfg.apply.is_some() || cfg.write.is_some() || cfg.chown.is_some();
    // no mount namespace here: the init makes its own, so that it dies with
    // the init and takes every mount of the step with it before the init's
    // exit is reported (exit_task_namespaces runs before exit_notify)
    let mut flags = if job_only {
        0
    } else {
        libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS
    };
    flags |= libc::CLONE_NEWUSER;
    if !job_only && (cfg.network != Network::Host || cfg.probe) {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: plain syscall; this process is single-threaded
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(fail("unshare")(io::Error::last_os_error()));
    }
    // the parent writes our maps (only it may map more than its own ID)
    send(sock, &ToParent::NeedMaps);
    let (go, idmapped) = recv_go(sock, cfg.idmap.len())?;
    if !go {
        return Ok(125); // the parent gave up (and said why itself)
    }
    if idmapped.len() != cfg.idmap.len() {
        return Err(fail("receive the idmapped mounts")(io::Error::other(
            format!("expected {}, got {}", cfg.idmap.len(), idmapped.len()),
        )));
    }
    // a credential change cleared it: die with the parent (prctl(2))
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(errno_fail("set the parent death signal"))?;

    if let Some(job) = &cfg.apply {
        return apply(job, sock);
    }
    if let Some(job) = &cfg.write {
        return write_layer(job, sock);
    }
    if let Some(entries) = &cfg.chown {
        return chown(entries, sock);
    }
    // the copying driver: merged here, as the namespace's root (so ownership
    // is kept rootless), before the init exists; diffed after it is gone
    // (real root's copy is the parent's: it needs the host's root)
    let copied = if cfg.driver == DriverChoice::Copy && !cfg.probe && cfg.idmap.is_empty() {
        let dest = cfg.rootfs.join("copy");
        std::fs::create_dir(&dest).map_err(fail("create the copied rootfs"))?;
        let manifest = crate::copy::populate(&cfg.lowers_top_first, &dest)
            .map_err(fail("copy the lower directories"))?;
        Some((dest, manifest))
    } else {
        None
    };
    let pid = spawn_init(&cfg, sock, &idmapped)?;
    // the init has them (or exited): ours go
    drop(idmapped);
    send(sock, &ToParent::InitPid(pid));
    // the step owns stdout/stderr: let them close when it is done
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(fail("wait for the init")(io::Error::last_os_error()));
        }
    }
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, Some(libc::WTERMSIG(status)))
    };
    if let Some((dest, manifest)) = copied {
        // a killed step (timeout, cancel) leaves nothing anyone will read
        if signal != Some(libc::SIGKILL) {
            let diffed = crate::copy::diff(&dest, &manifest, &cfg.upper).map(|_| ());
            if let Err(e) = diffed {
                // files of subordinate IDs: only this namespace's root can remove them
                if let Some(state) = &cfg.cleanup {
                    crate::parent::force_remove(state);
                }
                return Err(fail("move the step's changes to the upper directory")(e));
            }
        }
    }
    if let Some(state) = &cfg.cleanup {
        // The step and its mounts are gone; what is left is the state
        // directory on the upper's filesystem, whose rmdirs can cost a
        // synchronous discard each (ext4 `-o discard`). The parent returns
        // as soon as it has the status; this process removes the directory
        // (as the namespace's root, which may remove files of subordinate
        // IDs) and must not die with the parent while doing so.
        let _ = rustix::process::set_parent_process_death_signal(None);
        send(sock, &ToParent::Exited { code, signal });
        crate::parent::force_remove(state);
    } else {
        send(sock, &ToParent::Exited { code, signal });
    }
    Ok(0)
}

/// Waits for `GO` (true) or a refusal, with the `expect` idmapped mounts
/// the parent attaches to it (unix(7), SCM_RIGHTS; close-on-exec, so the
/// step never holds them).
fn recv_go(sock: BorrowedFd<'_>, expect: usize) -> R<(bool, Vec<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut go = [0u8; 8];
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(expect.max(1)))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [io::IoSliceMut::new(&mut go)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(errno_fail("wait for the id maps"))?;
    let n = msg.bytes;
    let mut fds = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    Ok((&go[..n] == GO, fds))
}

/// Applies the layer on stdin as the namespace's root: the tar's IDs are
/// container IDs here, so `Ownership::Keep` lands them on the mapped host IDs.
fn apply(job: &crate::proto::ApplyJob, sock: BorrowedFd<'_>) -> R<i32> {
    let opts = kiln_layer::ApplyOptions {
        whiteouts: if job.overlay {
            kiln_layer::WhiteoutMode::Overlay(kiln_layer::OverlayXattr::User)
        } else {
            kiln_layer::WhiteoutMode::Delete
        },
        ownership: kiln_layer::Ownership::Keep,
        id_map: None,
        xattrs: true,
        max_size: job.max_size,
    };
    let stdin = std::io::stdin().lock();
    let sum = kiln_layer::apply_tar(stdin, &job.target, &opts).map_err(|e| Fail {
        stage: "apply the layer".into(),
        err: io::Error::other(error_chain(&e)),
    })?;
    send(
        sock,
        &ToParent::Applied {
            entries: sum.entries,
            bytes: sum.bytes,
            skipped: sum
                .skipped
                .into_iter()
                .map(|s| (s.path, s.reason))
                .collect(),
        },
    );
    Ok(0)
}

/// Writes `job.dir` as a layer tar to stdout as the namespace's root, which
/// may read every file a step made (CAP_DAC_READ_SEARCH over the mapped IDs,
/// user_namespaces(7)); here the IDs on disk read as container IDs already.
fn write_layer(job: &crate::proto::WriteJob, sock: BorrowedFd<'_>) -> R<i32> {
    use std::io::Write as _;
    let opts = kiln_layer::WriteOptions {
        overlay_whiteouts: job.overlay_whiteouts,
        id_map: None,
        source_date_epoch: job.source_date_epoch,
        xattrs: job.xattrs,
    };
    // a plain file on fd 1: std's stdout is line-buffered
    let fd = rustix::io::dup(std::io::stdout()).map_err(errno_fail("open stdout"))?;
    let mut out = io::BufWriter::with_capacity(256 * 1024, std::fs::File::from(fd));
    let sum = kiln_layer::write_tar(&job.dir, &mut out, &opts).map_err(|e| Fail {
        stage: "write the layer".into(),
        err: io::Error::other(error_chain(&e)),
    })?;
    out.flush().map_err(fail("send the layer"))?;
    drop(out);
    if job.remove {
        std::fs::remove_dir_all(&job.dir).map_err(fail("remove the written directory"))?;
    }
    send(
        sock,
        &ToParent::Written {
            entries: sum.entries,
            bytes: sum.bytes,
        },
    );
    Ok(0)
}

/// Gives each path to its container IDs as the namespace's root. chown(2)
/// clears the set-user-ID and set-group-ID bits of a file; they are put back
/// (the mode was chosen before the owner).
fn chown(entries: &[crate::proto::ChownEntry], sock: BorrowedFd<'_>) -> R<i32> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for e in entries {
        let what = || format!("change the owner of `{}`", e.path.display());
        let meta = std::fs::symlink_metadata(&e.path).map_err(fail(what()))?;
        std::os::unix::fs::lchown(&e.path, Some(e.uid), Some(e.gid)).map_err(fail(what()))?;
        if !meta.file_type().is_symlink() && meta.mode() & 0o6000 != 0 {
            std::fs::set_permissions(
                &e.path,
                std::fs::Permissions::from_mode(meta.mode() & 0o7777),
            )
            .map_err(fail(what()))?;
        }
    }
    send(sock, &ToParent::Chowned(entries.len() as u64));
    Ok(0)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

fn cstr(p: impl AsRef<OsStr>) -> CString {
    CString::new(p.as_ref().as_bytes()).unwrap_or_default()
}

fn mount(
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

/// Escapes a path for overlay's comma- and colon-separated options.
fn escape_overlay(p: &Path) -> String {
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
fn mount_overlay_by_layer(cfg: &ChildConfig, stubs: Option<&OwnedFd>) -> R<()> {
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

fn stub_layer(cfg: &ChildConfig) -> R<OwnedFd> {
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
    for (path, file) in stub_targets(&cfg.mounts, cfg.network) {
        add(&path, if file { Want::File } else { Want::Dir });
    }
    rustix::process::umask(umask);
    Ok(layer)
}

/// What [`stub_layer`] holds: (absolute path, is a file). The parent uses
/// it too, to recognize directories copied up from that layer.
pub(crate) fn stub_targets(mounts: &[crate::spec::Mount], network: Network) -> Vec<(String, bool)> {
    let mut out = vec![("/dev".to_string(), false), ("/proc".to_string(), false)];
    for f in ["/etc/resolv.conf", "/etc/hosts"] {
        // the isolated network's own files are always there
        if network == Network::Isolated || (network == Network::Host && Path::new(f).exists()) {
            out.push((f.to_string(), true));
        }
    }
    for m in mounts {
        let file = match &m.kind {
            MountKind::Bind { source, .. } => !source.is_dir(),
            MountKind::Secret { .. } => true,
            _ => false,
        };
        out.push((m.target.clone(), file));
    }
    out
}

/// The directories [`stub_layer`] makes, relative and normalized.
pub(crate) fn stub_dirs(mounts: &[crate::spec::Mount], network: Network) -> Vec<String> {
    let mut dirs = Vec::new();
    for (path, file) in stub_targets(mounts, network) {
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
fn mount_rootfs(cfg: &ChildConfig, idmapped: &[OwnedFd]) -> R<(Driver, std::path::PathBuf)> {
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

/// What a mount target should be when it has to be created.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    Dir,
    File,
}

/// Lexical normalization inside a root: `.` dropped, `..` pops (never above).
fn norm_push(out: &mut Vec<String>, path: &str) {
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
fn target_in_root(
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
fn real_rel(root: BorrowedFd<'_>, dir: &OwnedFd, name: &str) -> Option<String> {
    let path =
        |fd: BorrowedFd<'_>| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok();
    let (r, d) = (path(root)?, path(dir.as_fd())?);
    let rel = d.strip_prefix(&r).ok()?.join(name);
    Some(rel.to_string_lossy().into_owned())
}

fn fd_path(fd: &OwnedFd) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}

/// The flags a read-only remount must keep: in a user namespace the kernel
/// refuses to clear nosuid/nodev/noexec/atime flags locked on the source
/// mount (mount(2), EPERM).
fn locked_flags(source: &Path) -> libc::c_ulong {
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

fn bind(source: &Path, target: &Path, stage: &str) -> R<()> {
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
fn bind_in_root(
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

fn setup_dev(root: BorrowedFd<'_>, rootfs: &Path, stubs: &mut Vec<String>) -> R<()> {
    let dev = target_in_root(root, "/dev", Want::Dir, stubs)?;
    let devp = fd_path(&dev);
    mount(
        "mount /dev",
        Some(OsStr::new("tmpfs")),
        &devp,
        Some("tmpfs"),
        (libc::MS_NOSUID | libc::MS_NOEXEC) as libc::c_ulong,
        Some("mode=755,size=65536k"),
    )?;
    drop(dev);
    // the tmpfs is ours now: plain paths below it are safe
    let d = rootfs.join("dev");
    // the host's device nodes, bound read-only: the nodes still read and
    // write (a read-only mount does not stop I/O on a device, mount(2)),
    // but their inodes (owner, mode, times) cannot change
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let t = d.join(name);
        std::fs::File::create(&t).map_err(fail(format!("create `/dev/{name}`")))?;
        let host = Path::new("/dev").join(name);
        bind(&host, &t, "bind a device into /dev")?;
    }
    crate::harden::readonly_below(&d).map_err(fail("make the devices in /dev read-only"))?;
    std::fs::create_dir(d.join("pts")).map_err(fail("create `/dev/pts`"))?;
    mount(
        "mount /dev/pts",
        Some(OsStr::new("devpts")),
        &d.join("pts"),
        Some("devpts"),
        (libc::MS_NOSUID | libc::MS_NOEXEC) as libc::c_ulong,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    std::os::unix::fs::symlink("pts/ptmx", d.join("ptmx")).map_err(fail("link `/dev/ptmx`"))?;
    std::fs::create_dir(d.join("shm")).map_err(fail("create `/dev/shm`"))?;
    mount(
        "mount /dev/shm",
        Some(OsStr::new("tmpfs")),
        &d.join("shm"),
        Some("tmpfs"),
        (libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong,
        Some("mode=1777,size=65536k"),
    )?;
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, d.join(name))
            .map_err(fail(format!("link `/dev/{name}`")))?;
    }
    Ok(())
}

fn loopback_up() -> R<()> {
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

/// The init's stack: touched only as deep as it goes (a zeroed allocation
/// this size is mapped lazily).
const INIT_STACK: usize = 8 << 20;

struct InitArgs<'a> {
    cfg: &'a ChildConfig,
    sock: BorrowedFd<'a>,
    idmapped: &'a [OwnedFd],
}

extern "C" fn init_entry(arg: *mut libc::c_void) -> libc::c_int {
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

/// Starts the init, pid 1 of the new pid namespace, and returns its pid
/// once it has exec'd the step (or died). clone(2) with `CLONE_VM |
/// CLONE_VFORK`, as posix_spawn(3) does: the init borrows this process's
/// memory on a stack of its own while this one sleeps, instead of a fork
/// copying its page tables and then faulting in a copy of every page it
/// writes (a fork of the 18 MB kiln binary cost about 0.2 ms more than one
/// of the runtime's test helper). Sound because this process is
/// single-threaded and does nothing until the init is gone from its
/// memory; the init changes only its own credentials and namespaces.
fn spawn_init(cfg: &ChildConfig, sock: BorrowedFd<'_>, idmapped: &[OwnedFd]) -> R<i32> {
    let mut stack = vec![0u8; INIT_STACK];
    // SAFETY: one past the end of the allocation; aligned down to 16 bytes
    // for the x86-64 ABI (the stack grows down from there)
    let top = unsafe { stack.as_mut_ptr().add(INIT_STACK) };
    let top = ((top as usize) & !15) as *mut libc::c_void;
    let args = InitArgs {
        cfg,
        sock,
        idmapped,
    };
    // SAFETY: `init_entry` never returns into our frames (it _exits or
    // execs); `args` and `stack` outlive the call, which returns only once
    // the init exec'd or exited (CLONE_VFORK)
    let pid = unsafe {
        libc::clone(
            init_entry,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const InitArgs<'_> as *mut libc::c_void,
        )
    };
    drop(stack);
    if pid < 0 {
        return Err(fail("start the init")(io::Error::last_os_error()));
    }
    Ok(pid)
}

fn init(cfg: &ChildConfig, sock: BorrowedFd<'_>, idmapped: &[OwnedFd]) -> R<i32> {
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
            MountKind::Secret { source } => {
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
    setup_dev(root.as_fd(), &rootfs, &mut stubs)?;
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
    crate::harden::protect_proc(
        &rootfs.join("proc"),
        &rootfs.join("dev/null"),
        &|stage, src, target, fstype, flags, data| {
            mount(stage, src, target, fstype, flags, data).map_err(|f| (f.stage, f.err))
        },
    )
    .map_err(fail("protect /proc"))?;
    if cfg.network == Network::Host {
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            if Path::new(f).exists() {
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

fn exec(cfg: &ChildConfig) -> R<i32> {
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
