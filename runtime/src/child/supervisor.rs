//! The supervisor: the re-exec'd process itself. It makes the namespaces,
//! lets the parent write the ID maps, starts the init and reports its exit,
//! then removes the state directory.

use super::*;

pub(super) fn supervise(sock: BorrowedFd<'_>) -> R<i32> {
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
pub(super) fn recv_go(sock: BorrowedFd<'_>, expect: usize) -> R<(bool, Vec<OwnedFd>)> {
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

/// The init's stack: touched only as deep as it goes (a zeroed allocation
/// this size is mapped lazily).
pub(super) const INIT_STACK: usize = 8 << 20;

/// Starts the init, pid 1 of the new pid namespace, and returns its pid
/// once it has exec'd the step (or died). clone(2) with `CLONE_VM |
/// CLONE_VFORK`, as posix_spawn(3) does: the init borrows this process's
/// memory on a stack of its own while this one sleeps, instead of a fork
/// copying its page tables and then faulting in a copy of every page it
/// writes (a fork of the 18 MB kiln binary cost about 0.2 ms more than one
/// of the runtime's test helper). Sound because this process is
/// single-threaded and does nothing until the init is gone from its
/// memory; the init changes only its own credentials and namespaces.
pub(super) fn spawn_init(cfg: &ChildConfig, sock: BorrowedFd<'_>, idmapped: &[OwnedFd]) -> R<i32> {
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
