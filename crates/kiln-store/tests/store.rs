//! Store behaviour under concurrency, corruption and bad input.

use std::io::Write;
use std::process::Command;

use kiln_store::{Digest, LockMode, Store, StoreError};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("kiln")).unwrap();
    (dir, store)
}

fn tmp_files(store: &Store) -> usize {
    std::fs::read_dir(store.tmp_dir()).unwrap().count()
}

fn big_payload(seed: u8) -> Vec<u8> {
    (0..3_000_000u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn put_and_read_back() {
    let (_d, store) = store();
    let digest = store.put_blob(b"hello").unwrap();
    assert_eq!(digest, Digest::of(b"hello"));
    assert!(store.has_blob(&digest));
    assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
    assert_eq!(store.blob_size(&digest).unwrap(), 5);
    store.verify_blob(&digest).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(store.blob_path(&digest))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444, "blobs are read-only");
    assert_eq!(store.list_blobs().unwrap(), vec![digest]);
    assert_eq!(tmp_files(&store), 0);
}

#[test]
fn digest_mismatch_stores_nothing() {
    let (_d, store) = store();
    let wrong = Digest::of(b"something else");
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"actual bytes").unwrap();
    let err = w.commit(Some(&wrong)).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("nothing was stored"));
    assert!(!store.has_blob(&wrong));
    assert!(!store.has_blob(&Digest::of(b"actual bytes")));
    assert!(store.list_blobs().unwrap().is_empty());
    assert_eq!(tmp_files(&store), 0, "temp file removed on mismatch");
}

#[test]
fn a_sha512_name_is_refused_and_never_aliases_a_sha256_blob() {
    let (_d, store) = store();
    let sha512 = Digest::compute(kiln_types::Algorithm::Sha512, b"bytes");
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"bytes").unwrap();
    let err = w.commit(Some(&sha512)).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedAlgorithm { .. }),
        "{err}"
    );
    assert!(!store.has_blob(&sha512));
    assert!(
        !store
            .blob_path(&sha512)
            .starts_with(store.blob_path(&Digest::of(b"")).parent().unwrap())
    );
    assert_eq!(tmp_files(&store), 0);
}

#[test]
fn size_mismatch_stores_nothing() {
    let (_d, store) = store();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"truncat").unwrap();
    let err = w.commit_sized(&Digest::of(b"truncated"), 9).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SizeMismatch {
                expected: 9,
                actual: 7,
                ..
            }
        ),
        "{err}"
    );
    assert!(store.list_blobs().unwrap().is_empty());
}

#[test]
fn abandoned_writer_leaves_no_blob() {
    let (_d, store) = store();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"half of a la").unwrap();
    drop(w);
    assert!(store.list_blobs().unwrap().is_empty());
    assert_eq!(tmp_files(&store), 0);
}

/// A temp file corrupted on disk (or left by a killed writer) is never
/// published: publishing renames only the writer's own, verified temp file,
/// and `verify_blob` catches corruption of a stored blob.
#[test]
fn corrupted_blob_is_detected() {
    let (_d, store) = store();
    // A stray temp file, as a killed process leaves, is never a blob.
    std::fs::write(store.tmp_dir().join("blob-stray"), b"partial").unwrap();
    assert!(store.list_blobs().unwrap().is_empty());
    assert_eq!(store.clean_tmp(std::time::Duration::ZERO).unwrap(), 1);

    let digest = store.put_blob(b"good bytes").unwrap();
    let path = store.blob_path(&digest);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, b"bad bytes!").unwrap();
    let err = store.verify_blob(&digest).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
}

#[test]
fn concurrent_threads_write_same_blob() {
    let (_d, store) = store();
    let payload = big_payload(7);
    let expected = Digest::of(&payload);
    std::thread::scope(|s| {
        for _ in 0..8 {
            let store = store.clone();
            let payload = &payload;
            let expected = &expected;
            s.spawn(move || {
                let mut w = store.blob_writer().unwrap();
                for chunk in payload.chunks(4096) {
                    w.write_all(chunk).unwrap();
                }
                assert_eq!(&w.commit(Some(expected)).unwrap(), expected);
            });
        }
    });
    assert_eq!(store.list_blobs().unwrap(), vec![expected]);
    store.verify_blob(&expected).unwrap();
    assert_eq!(tmp_files(&store), 0);
}

/// Child mode of `concurrent_processes_*`: when `KILN_STORE_CHILD` is set this
/// test writes into the store named there and exits.
#[test]
fn child_writer() {
    let Ok(root) = std::env::var("KILN_STORE_CHILD") else {
        return;
    };
    let id: usize = std::env::var("KILN_STORE_CHILD_ID")
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(root).unwrap();
    let payload = big_payload(42);
    let mut w = store.blob_writer().unwrap();
    for chunk in payload.chunks(1000) {
        w.write_all(chunk).unwrap();
    }
    w.commit(Some(&Digest::of(&payload))).unwrap();
    for i in 0..20 {
        store
            .set_tag(&format!("img-{id}-{i}"), &Digest::of(&payload))
            .unwrap();
        store
            .put_record(
                "cache",
                format!("k{i}").as_bytes(),
                format!("value from {id}").as_bytes(),
            )
            .unwrap();
    }
}

#[test]
fn concurrent_processes_share_one_store() {
    let (_d, store) = store();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..6)
        .map(|id| {
            Command::new(&exe)
                .args(["--exact", "child_writer", "--test-threads=1", "--nocapture"])
                .env("KILN_STORE_CHILD", store.root())
                .env("KILN_STORE_CHILD_ID", id.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let payload = big_payload(42);
    let d = Digest::of(&payload);
    assert_eq!(store.list_blobs().unwrap(), vec![d]);
    store.verify_blob(&d).unwrap();
    // No tag update was lost: every process's 20 tags are there.
    let tags = store.tags().unwrap();
    assert_eq!(tags.len(), 6 * 20, "{tags:?}");
    // Each record holds one whole value from one of the writers.
    for i in 0..20 {
        let v = store
            .get_record("cache", format!("k{i}").as_bytes())
            .unwrap()
            .unwrap();
        let v = String::from_utf8(v).unwrap();
        assert!(
            v.starts_with("value from ") && v.len() == "value from 0".len(),
            "{v}"
        );
    }
    assert_eq!(tmp_files(&store), 0);
}

#[test]
fn tags_roundtrip_and_validate() {
    let (_d, store) = store();
    let a = Digest::of(b"a");
    let b = Digest::of(b"b");
    assert_eq!(store.set_tag("example.com/app:1", &a).unwrap(), None);
    assert_eq!(store.set_tag("example.com/app:1", &b).unwrap(), Some(a));
    assert_eq!(store.get_tag("example.com/app:1").unwrap(), Some(b));
    assert_eq!(store.remove_tag("example.com/app:1").unwrap(), Some(b));
    assert!(store.tags().unwrap().is_empty());
    assert!(matches!(
        store.set_tag("bad name", &a),
        Err(StoreError::BadTag(_))
    ));
    std::fs::write(store.root().join("tags.json"), b"{not json").unwrap();
    let err = store.tags().unwrap_err();
    assert!(err.to_string().contains("tags.json"), "{err}");
}

#[test]
fn records_are_replaced_atomically() {
    let (_d, store) = store();
    assert_eq!(store.get_record("cache", b"key").unwrap(), None);
    store.put_record("cache", b"key", b"one").unwrap();
    store.put_record("cache", b"key", b"two").unwrap();
    assert_eq!(
        store.get_record("cache", b"key").unwrap().as_deref(),
        Some(&b"two"[..])
    );
    // Kinds are separate namespaces.
    assert_eq!(store.get_record("other", b"key").unwrap(), None);
    assert!(store.remove_record("cache", b"key").unwrap());
    assert_eq!(store.get_record("cache", b"key").unwrap(), None);
    assert!(matches!(
        store.put_record("../x", b"k", b"v"),
        Err(StoreError::BadKind(_))
    ));
    assert_eq!(tmp_files(&store), 0);
}

#[test]
fn exclusive_lock_excludes() {
    let (_d, store) = store();
    let guard = store.lock("gc", LockMode::Exclusive).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = store.clone();
    let t = std::thread::spawn(move || {
        let _g = s2.lock("gc", LockMode::Shared).unwrap();
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(200))
            .is_err()
    );
    drop(guard);
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    t.join().unwrap();
}

/// Serves blobs from memory, optionally with the wrong bytes.
#[derive(Debug)]
struct MemSource {
    blobs: std::collections::HashMap<Digest, Vec<u8>>,
}

impl kiln_store::BlobSource for MemSource {
    fn has(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest)
    }

    fn open(&self, digest: &Digest) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(self.blobs[digest].clone())))
    }
}

#[test]
fn lazy_blobs_count_as_readable_and_are_fetched_verified_through_sources() {
    let (_d, store) = store();
    let good = b"layer bytes".to_vec();
    let d = Digest::of(&good);
    let other = Digest::of(b"another layer");

    // a locator alone: readable in principle, not here, and a clear error
    // without a source that can fetch it
    store
        .put_remote_blob(&d, b"{\"where\":\"registry\"}")
        .unwrap();
    assert!(store.is_remote_blob(&d) && !store.has_blob(&d));
    assert!(store.can_read_blob(&d) && !store.can_read_blob(&other));
    assert_eq!(store.list_remote_blobs().unwrap(), vec![d]);
    assert_eq!(
        store.remote_blob(&d).unwrap().unwrap(),
        b"{\"where\":\"registry\"}"
    );
    assert!(matches!(
        store.open_blob(&d),
        Err(StoreError::RemoteNotFetched { .. })
    ));
    assert!(matches!(
        store.blob_size(&d),
        Err(StoreError::RemoteNotFetched { .. })
    ));

    // a source with the wrong bytes: nothing lands
    let bad = MemSource {
        blobs: [(d, b"tampered!!!".to_vec())].into(),
    };
    let s = store.clone().with_blob_source(std::sync::Arc::new(bad));
    assert!(matches!(
        s.ensure_blob(&d),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(!store.has_blob(&d));

    // sources are asked in order; the first that has the blob serves it,
    // and `blob_size` fetches as `open_blob` does
    let empty = MemSource {
        blobs: Default::default(),
    };
    let right = MemSource {
        blobs: [(d, good.clone())].into(),
    };
    let s = store
        .clone()
        .with_blob_source(std::sync::Arc::new(empty))
        .with_blob_source(std::sync::Arc::new(right));
    assert_eq!(s.blob_size(&d).unwrap(), good.len() as u64);
    assert!(store.has_blob(&d));
    assert_eq!(store.read_blob(&d).unwrap(), good);
    // a source-less copy of the handle reads local blobs only
    assert!(!s.without_blob_sources().can_read_blob(&other));

    assert!(store.remove_remote_blob(&d).unwrap());
    assert!(!store.remove_remote_blob(&d).unwrap());
    assert!(store.list_remote_blobs().unwrap().is_empty());
}

/// The store holds root's extracted layers (set-ID files, device nodes):
/// no other user may enter it. A new root is 0700 whatever the umask, its
/// parents are made as usual; an older store open to others is tightened.
#[test]
fn the_store_root_is_private() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("a/b/kiln");
    let store = Store::open(&root).unwrap();
    assert_eq!(mode(&root), 0o700, "a fresh store");
    assert_ne!(
        mode(&d.path().join("a/b")) & 0o077,
        0,
        "parents keep the umask"
    );
    // what is inside stays usable for its owner
    store.put_blob(b"x").unwrap();

    let old = d.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    Store::open(&old).unwrap();
    assert_eq!(mode(&old), 0o700, "an existing 0755 store is tightened");
    // a symlinked root: the directory behind it is what counts
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&old, &link).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o750)).unwrap();
    Store::open(&link).unwrap();
    assert_eq!(mode(&old), 0o700, "through a symlink");

    // someone else's open directory is theirs to fix: an error that says how
    if rustix::process::geteuid().is_root() {
        let theirs = d.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = Store::open(&theirs).unwrap_err();
        assert!(matches!(e, StoreError::NotPrivate { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("mode 755") && msg.contains("uid 65534") && msg.contains("chmod 700"),
            "{msg}"
        );
        assert_eq!(mode(&theirs), 0o755, "left as it was");
        assert_eq!(std::fs::metadata(&theirs).unwrap().uid(), 65534);
    }
}
