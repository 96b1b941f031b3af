//! /dev of the sandbox: a tmpfs with the host's device nodes bound
//! read-only, devpts, shm and the fd links.

use super::*;

pub(super) fn setup_dev(root: BorrowedFd<'_>, rootfs: &Path, stubs: &mut Vec<String>) -> R<()> {
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
    crate::mountattr::readonly_below(&d).map_err(fail("make the devices in /dev read-only"))?;
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
