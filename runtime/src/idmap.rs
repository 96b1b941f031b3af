//! Idmapped mounts for real root's sandboxes.
//!
//! Real root's sandbox maps its IDs to an unprivileged host range
//! ([`crate::MapPlan::Root`]), but the store keeps files owned by their
//! container IDs, as real root writes them. So that the step sees its
//! layers with their owners and its changes land in the upper directory as
//! container IDs, every host directory the sandbox uses (the lowers' parent,
//! the upper's parent, the sources of binds, cache mounts and secrets) is
//! given to it through an idmapped clone made with the sandbox's own user
//! namespace (mount_setattr(2), `MOUNT_ATTR_IDMAP`): on-disk ID `n` reads as
//! the namespace's `n`.
//!
//! Only a process privileged over the filesystem's user namespace (the
//! parent, real root) may make such a mount, and only one privileged over a
//! mount's namespace may use it as an overlay layer (overlayfs clones its
//! layers: `clone_private_mount` wants `CAP_SYS_ADMIN` there). So the parent
//! makes detached clones ([`make`]), the supervisor passes them on and the
//! init, in its own mount namespace and while it is still the host's root
//! (who may walk the store's private ancestors), attaches each on top of
//! its own path ([`attach`]); as the namespace's root it then reaches them
//! through their descriptors ([`rewrite`]). The supervisor, still the
//! host's kuid 0, removes the state directory by its plain path; the
//! copying driver's copy and diff are the parent's (real root), which
//! keeps every owner.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use crate::mountattr::{MOUNT_ATTR_IDMAP, MountAttr, mount_setattr};
use crate::proto::ChildConfig;
use crate::spec::MountKind;

/// The directories (or files) to map for a sandbox: `paths` reduced to
/// distinct entries, parents before what lies below them (a later attach
/// on a path inside an earlier one lands on top of it, not under it).
pub(crate) fn roots(paths: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = paths.into_iter().collect();
    out.sort_by_key(|p| (p.components().count(), p.clone()));
    out.dedup();
    out
}

/// Detached clones of `roots`, idmapped with the user namespace `userns`.
pub(crate) fn make(roots: &[PathBuf], userns: BorrowedFd<'_>) -> io::Result<Vec<OwnedFd>> {
    roots
        .iter()
        .map(|root| {
            let fd = rustix::mount::open_tree(
                rustix::fs::CWD,
                root.as_path(),
                OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
            .map_err(|e| with_path(e.into(), "clone", root))?;
            let attr = MountAttr {
                attr_set: MOUNT_ATTR_IDMAP,
                attr_clr: 0,
                propagation: 0,
                userns_fd: userns.as_raw_fd() as u64,
            };
            mount_setattr(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH, &attr)
                .map_err(|e| with_path(e, "idmap", root))?;
            Ok(fd)
        })
        .collect()
}

fn with_path(e: io::Error, what: &str, p: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "cannot {what} `{}` as an idmapped mount ({e}; idmapped mounts need Linux 5.19, and 6.3 for tmpfs)",
            p.display()
        ),
    )
}

/// Attaches each clone on top of its own path, in the caller's mount
/// namespace (the init's own, which belongs to the sandbox's user
/// namespace: overlay may then use the mounts as layers).
pub(crate) fn attach(roots: &[PathBuf], fds: &[OwnedFd]) -> io::Result<()> {
    for (root, fd) in roots.iter().zip(fds) {
        rustix::mount::move_mount(
            fd.as_fd(),
            "",
            rustix::fs::CWD,
            root.as_path(),
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| with_path(e.into(), "attach", root))?;
    }
    Ok(())
}

/// `p` through the attached clones: `/proc/self/fd/N/REST` of the deepest
/// root that holds it (the one attached last on top), else `p` itself.
fn through(p: &Path, roots: &[PathBuf], fds: &[OwnedFd]) -> PathBuf {
    roots
        .iter()
        .zip(fds)
        .rev()
        .find_map(|(root, fd)| {
            let rest = p.strip_prefix(root).ok()?;
            let base = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            Some(if rest.as_os_str().is_empty() {
                base
            } else {
                base.join(rest)
            })
        })
        .unwrap_or_else(|| p.to_path_buf())
}

/// `cfg` with every host path the sandbox uses reached through the clones
/// ([`through`]), so that nothing walks the store's private ancestors.
pub(crate) fn rewrite(cfg: &ChildConfig, fds: &[OwnedFd]) -> ChildConfig {
    let roots = &cfg.idmap;
    let t = |p: &PathBuf| through(p, roots, fds);
    let mut out = cfg.clone();
    out.lowers_top_first = cfg.lowers_top_first.iter().map(t).collect();
    out.upper = t(&cfg.upper);
    out.work = t(&cfg.work);
    out.rootfs = t(&cfg.rootfs);
    out.net_files = cfg
        .net_files
        .iter()
        .map(|(src, target)| (t(src), target.clone()))
        .collect();
    for m in &mut out.mounts {
        match &mut m.kind {
            MountKind::Bind { source, .. }
            | MountKind::Cache { source }
            | MountKind::Secret { source }
            | MountKind::Socket { source } => *source = t(source),
            MountKind::Tmpfs { .. } => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_distinct_and_parents_come_first() {
        let got = roots(
            [
                "/s/snapshots/m1",
                "/s/snapshots",
                "/s/tmp/exec-1",
                "/s/snapshots",
                "/dev/shm/kiln-secrets-1/a",
            ]
            .map(PathBuf::from),
        );
        let want: Vec<PathBuf> = [
            "/s/snapshots",
            "/s/snapshots/m1",
            "/s/tmp/exec-1",
            "/dev/shm/kiln-secrets-1/a",
        ]
        .map(PathBuf::from)
        .to_vec();
        assert_eq!(got, want);
    }
}
