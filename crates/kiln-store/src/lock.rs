//! Advisory `flock(2)` locks on files under `locks/`.
//!
//! flock locks belong to the open file description, so they are released
//! when the guard closes the file or the process dies (flock(2)); a killed
//! kiln never leaves the store locked.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::StoreError;

/// Shared (many holders) or exclusive (one holder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    path: PathBuf,
}

impl StoreLock {
    pub(crate) fn acquire(path: &Path, mode: LockMode) -> Result<Self, StoreError> {
        Self::acquire_with(path, mode, true).map(|l| l.expect("a blocking lock is granted"))
    }

    /// Like [`StoreLock::acquire`], but `Ok(None)` instead of waiting when
    /// `wait` is false and another holder conflicts.
    pub(crate) fn acquire_with(
        path: &Path,
        mode: LockMode,
        wait: bool,
    ) -> Result<Option<Self>, StoreError> {
        let lerr = |source: std::io::Error| StoreError::Lock {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(lerr)?;
        let op = match (mode, wait) {
            (LockMode::Shared, true) => FlockOperation::LockShared,
            (LockMode::Exclusive, true) => FlockOperation::LockExclusive,
            (LockMode::Shared, false) => FlockOperation::NonBlockingLockShared,
            (LockMode::Exclusive, false) => FlockOperation::NonBlockingLockExclusive,
        };
        // flock restarts on EINTR only with SA_RESTART; retry ourselves.
        loop {
            match flock(&file, op) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) if !wait => return Ok(None),
                Err(e) => return Err(lerr(e.into())),
            }
        }
        Ok(Some(Self {
            _file: file,
            path: path.to_owned(),
        }))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
