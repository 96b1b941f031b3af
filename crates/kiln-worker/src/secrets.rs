//! Secret mounts: the `--secret` values of a build (never printed), and
//! the private files (0700 directory, on a tmpfs when there is one) a step
//! mounts them from, removed after the step or, when kiln was killed, by
//! the next kiln process.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::stale::{owner_is_gone, start_time};

/// The secrets of a build by id, as given with `--secret`. Never printed:
/// `Debug` shows the ids only.
#[derive(Clone, Default)]
pub struct Secrets {
    map: HashMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.map.keys().collect();
        ids.sort();
        f.debug_struct("Secrets").field("ids", &ids).finish()
    }
}

impl Secrets {
    pub fn insert(&mut self, id: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.map.insert(id.into(), value.into());
    }

    pub fn get(&self, id: &str) -> Option<&[u8]> {
        self.map.get(id).map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Where secret directories go, best first: a tmpfs when there is one
/// (`/dev/shm`, `$XDG_RUNTIME_DIR`), so the bytes never reach a disk.
fn secret_bases() -> Vec<PathBuf> {
    let mut bases: Vec<PathBuf> = vec![PathBuf::from("/dev/shm")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        bases.push(PathBuf::from(x));
    }
    bases.push(std::env::temp_dir());
    bases
}

const SECRETS_PREFIX: &str = "kiln-secrets-";

/// A fresh 0700 directory for secret files, named
/// `kiln-secrets-<pid>-t<start time>-...`: a later kiln process removes it
/// if this one dies without doing so (SIGKILL), and only then, even once
/// the pid is reused ([`remove_stale_secrets`]).
pub(crate) fn private_dir() -> Result<PathBuf, (PathBuf, std::io::Error)> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let me = std::process::id();
    let start = start_time(me).ok().flatten().unwrap_or(0);
    let mut last = None;
    for base in secret_bases().into_iter().filter(|b| b.is_dir()) {
        // the CLI sweeps at start-up; a library caller gets it here
        remove_stale_secrets_in(&base);
        for _ in 0..8 {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = base.join(format!("{SECRETS_PREFIX}{me}-t{start}-{n}-{nonce:08x}"));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    last = Some((dir, e));
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        (
            std::env::temp_dir(),
            std::io::Error::other("no usable temporary directory"),
        )
    }))
}

/// Removes the secret directories that kiln processes of this user left
/// when they died without cleaning up (SIGKILL): one readdir of each place
/// secrets go, cheap enough for the start of every kiln command. A
/// directory is removed only when it is ours (owner uid) and its process is
/// gone; a running build's stays. Returns how many were removed.
pub fn remove_stale_secrets() -> usize {
    secret_bases()
        .iter()
        .map(|b| remove_stale_secrets_in(b))
        .sum()
}

fn remove_stale_secrets_in(base: &Path) -> usize {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = fs::read_dir(base) else {
        return 0;
    };
    let me = rustix::process::geteuid().as_raw();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name
            .as_encoded_bytes()
            .starts_with(SECRETS_PREFIX.as_bytes())
        {
            continue;
        }
        // lstat: a symlink of that name is not followed, nor removed
        let ours = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && owner_is_gone(&name, SECRETS_PREFIX) {
            match fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %e.path().display(), "removed the secrets of a kiln process that was killed");
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot remove the secrets of a killed kiln process");
                }
            }
        }
    }
    removed
}

/// Writes one secret file, never readable by anyone else on the host while
/// it is written (0600, then the step's mode).
pub(crate) fn write_secret(
    path: &Path,
    value: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(value)?;
    drop(f);
    // Real root maps IDs one to one; in a rootless step the invoking user is
    // root inside, which is the default owner (0:0).
    if rustix::process::geteuid().is_root() && (uid, gid) != (0, 0) {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_dirs_of_dead_processes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let start = start_time(me).unwrap().unwrap();
        // pid_max is at most 2^22: this pid cannot exist
        let dead = d.path().join("kiln-secrets-99999999-t5-0-0");
        let dead_old_style = d.path().join("kiln-secrets-99999999-0-0");
        let alive = d.path().join(format!("kiln-secrets-{me}-t{start}-0-0"));
        let alive_old_style = d.path().join(format!("kiln-secrets-{me}-0-0"));
        // our pid, but another start time: a process that had it before
        let reused = d
            .path()
            .join(format!("kiln-secrets-{me}-t{}-0-0", start + 1));
        let other = d.path().join("unrelated-99999999");
        let not_a_dir = d.path().join("kiln-secrets-99999999-t1-1-1");
        for p in [
            &dead,
            &dead_old_style,
            &alive,
            &alive_old_style,
            &reused,
            &other,
        ] {
            fs::create_dir(p).unwrap();
        }
        std::os::unix::fs::symlink(&other, &not_a_dir).unwrap();
        assert_eq!(remove_stale_secrets_in(d.path()), 3);
        assert!(!dead.exists() && !dead_old_style.exists() && !reused.exists());
        assert!(alive.exists() && alive_old_style.exists() && other.exists());
        assert!(not_a_dir.symlink_metadata().is_ok(), "a symlink stays");
    }
}
