//! Where pulled blobs go and pushed blobs come from. The client only needs
//! this narrow interface, so it is tested against [`MemoryStore`] as well as
//! kiln's real content store ([`kiln_store::Store`]).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use kiln_store::Digest;
use sha2::{Digest as _, Sha256};

/// A store error, kept opaque: the client wraps it with the registry,
/// repository and digest it was working on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Content-addressed blobs, as the registry client sees them.
pub trait BlobStore: Send + Sync {
    /// Whether the blob is present (pulls skip it).
    fn has_blob(&self, digest: &Digest) -> bool;
    /// Starts writing a blob whose bytes arrive in pieces.
    fn begin_blob(&self) -> Result<Box<dyn BlobSink>, BoxError>;
    /// Opens a blob for pushing, with its size.
    fn open_blob(&self, digest: &Digest) -> Result<(u64, Box<dyn Read + Send>), BoxError>;
    /// Reads a small blob (a manifest or config) whole.
    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, BoxError> {
        let (_, mut r) = self.open_blob(digest)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }
    /// Records that `digest` is fetched later as `locator` says (a lazy
    /// pull); returns `false` when this store cannot keep lazy blobs, and
    /// the pull then fetches the blob at once.
    fn register_remote(&self, digest: &Digest, locator: &[u8]) -> Result<bool, BoxError> {
        let _ = (digest, locator);
        Ok(false)
    }
    /// Stores the blob from somewhere nearer than the registry, when this
    /// store knows such a place (an imported build cache), verified like a
    /// download; returns whether it did. Blocking: for small blobs.
    fn fill_locally(&self, digest: &Digest) -> Result<bool, BoxError> {
        let _ = digest;
        Ok(false)
    }
}

/// A blob being written. Dropping it without [`BlobSink::commit`] stores
/// nothing.
pub trait BlobSink: Send {
    fn write(&mut self, data: &[u8]) -> Result<(), BoxError>;
    /// Publishes the blob. Implementations check the digest and size
    /// themselves and store nothing when they differ, so a bad blob never
    /// lands even if a caller forgot to verify.
    fn commit(self: Box<Self>, digest: &Digest, size: u64) -> Result<(), BoxError>;
}

impl BlobStore for kiln_store::Store {
    fn has_blob(&self, digest: &Digest) -> bool {
        kiln_store::Store::has_blob(self, digest)
    }

    fn begin_blob(&self) -> Result<Box<dyn BlobSink>, BoxError> {
        Ok(Box::new(self.blob_writer()?))
    }

    fn open_blob(&self, digest: &Digest) -> Result<(u64, Box<dyn Read + Send>), BoxError> {
        let f = kiln_store::Store::open_blob(self, digest)?;
        let size = f.metadata()?.len();
        Ok((size, Box::new(f)))
    }

    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, BoxError> {
        Ok(kiln_store::Store::read_blob(self, digest)?)
    }

    fn register_remote(&self, digest: &Digest, locator: &[u8]) -> Result<bool, BoxError> {
        self.put_remote_blob(digest, locator)?;
        Ok(true)
    }

    fn fill_locally(&self, digest: &Digest) -> Result<bool, BoxError> {
        Ok(self.fill_from_source(digest)?)
    }
}

impl BlobSink for kiln_store::BlobWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), BoxError> {
        self.write_all(data)?;
        Ok(())
    }

    fn commit(self: Box<Self>, digest: &Digest, size: u64) -> Result<(), BoxError> {
        (*self).commit_sized(digest, size)?;
        Ok(())
    }
}

/// Blobs in memory: for tests and for pushing content built in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    blobs: Arc<Mutex<BTreeMap<Digest, Arc<Vec<u8>>>>>,
}

/// A [`MemoryStore`] commit that did not match.
#[derive(Debug, thiserror::Error)]
pub enum MemoryStoreError {
    #[error("blob {0} is not in the memory store")]
    NotFound(Digest),
    #[error("content of {expected} hashed to {actual} ({size} bytes); nothing was stored")]
    Mismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores bytes and returns their digest.
    pub fn put(&self, bytes: impl Into<Vec<u8>>) -> Digest {
        let bytes = bytes.into();
        let d = Digest::of(&bytes);
        self.blobs
            .lock()
            .expect("memory store lock")
            .insert(d, Arc::new(bytes));
        d
    }

    pub fn get(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.blobs
            .lock()
            .expect("memory store lock")
            .get(digest)
            .map(|b| b.as_ref().clone())
    }

    pub fn len(&self) -> usize {
        self.blobs.lock().expect("memory store lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn digests(&self) -> Vec<Digest> {
        self.blobs
            .lock()
            .expect("memory store lock")
            .keys()
            .cloned()
            .collect()
    }
}

struct MemorySink {
    store: MemoryStore,
    buf: Vec<u8>,
    hasher: Sha256,
}

impl BlobSink for MemorySink {
    fn write(&mut self, data: &[u8]) -> Result<(), BoxError> {
        self.hasher.update(data);
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn commit(self: Box<Self>, digest: &Digest, _size: u64) -> Result<(), BoxError> {
        let actual = Digest::from_hasher(self.hasher);
        if &actual != digest {
            return Err(Box::new(MemoryStoreError::Mismatch {
                expected: *digest,
                actual,
                size: self.buf.len() as u64,
            }));
        }
        self.store.put(self.buf);
        Ok(())
    }
}

impl BlobStore for MemoryStore {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.blobs
            .lock()
            .expect("memory store lock")
            .contains_key(digest)
    }

    fn begin_blob(&self) -> Result<Box<dyn BlobSink>, BoxError> {
        Ok(Box::new(MemorySink {
            store: self.clone(),
            buf: Vec::new(),
            hasher: Sha256::new(),
        }))
    }

    fn open_blob(&self, digest: &Digest) -> Result<(u64, Box<dyn Read + Send>), BoxError> {
        let b = self
            .blobs
            .lock()
            .expect("memory store lock")
            .get(digest)
            .cloned()
            .ok_or(MemoryStoreError::NotFound(*digest))?;
        Ok((
            b.len() as u64,
            Box::new(std::io::Cursor::new(b.as_ref().clone())),
        ))
    }
}
