//! Helper jobs that run no step, only in the user namespace: a layer
//! applied, a layer written, owners changed, as the namespace's root.

use super::*;

/// Applies the layer on stdin as the namespace's root: the tar's IDs are
/// container IDs here, so `Ownership::Keep` lands them on the mapped host IDs.
pub(super) fn apply(job: &crate::proto::ApplyJob, sock: BorrowedFd<'_>) -> R<i32> {
    let opts = crate::parent::layer_apply_options(job.overlay, job.max_size);
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
pub(super) fn write_layer(job: &crate::proto::WriteJob, sock: BorrowedFd<'_>) -> R<i32> {
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
pub(super) fn chown(entries: &[crate::proto::ChownEntry], sock: BorrowedFd<'_>) -> R<i32> {
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
