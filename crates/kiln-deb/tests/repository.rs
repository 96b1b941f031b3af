//! The repository client against Debian's mirror: `InRelease` verified
//! with the archive keyring, `Packages` against `Release`, `.deb`s against
//! the index; every mismatch is an error that names what failed, and
//! nothing unverified reaches the store.

mod common;

use std::path::PathBuf;

use kiln_deb::{FetchError, Fetcher, RepoError, Repository, TrustError};
use kiln_store::Digest;

#[test]
fn opens_bookworm_verified_and_cached() {
    let store = common::store();
    let source = common::bookworm();
    let repo = common::open(&source, &store);
    assert!(
        repo.release.codename == "bookworm",
        "{:?}",
        repo.release.codename
    );
    assert!(repo.index.len() > 50_000, "{} packages", repo.index.len());
    let python = repo.index.named("python3");
    assert_eq!(python.len(), 1);
    // the signed InRelease and the uncompressed index are in the store
    assert!(store.has_blob(&repo.release.digest));
    let entry = &repo.release.sha256[&format!("main/binary-{}/Packages", source.arch)];
    assert!(store.has_blob(&entry.sha256));
    store.verify_blob(&entry.sha256).unwrap();
}

#[test]
fn a_foreign_keyring_rejects_the_signature() {
    let store = common::store();
    let mut source = common::bookworm();
    // keys Debian retired: none of them signs bookworm
    source.keyrings = vec![PathBuf::from(
        "/usr/share/keyrings/debian-archive-removed-keys.gpg",
    )];
    let e = common::rt()
        .block_on(Repository::open(&source, &Fetcher::new().unwrap(), &store))
        .unwrap_err();
    match &e {
        RepoError::Trust(TrustError::BadSignature { url, keyrings, .. }) => {
            assert!(url.ends_with("/dists/bookworm/InRelease"), "{url}");
            assert!(keyrings.contains("removed-keys"), "{keyrings}");
        }
        other => panic!("expected a bad signature, got {other:?}"),
    }
    let missing = vec![PathBuf::from("/nonexistent/keyring.gpg")];
    source.keyrings = missing;
    let e = common::rt()
        .block_on(Repository::open(&source, &Fetcher::new().unwrap(), &store))
        .unwrap_err();
    assert!(
        matches!(e, RepoError::Trust(TrustError::ReadKeyring { .. })),
        "{e:?}"
    );
}

#[test]
fn debs_are_verified_before_they_are_stored() {
    let shared = common::store();
    let source = common::bookworm();
    let repo = common::open(&source, &shared);
    // the downloads go to a store of their own: one that has the package
    // already would not download it again
    let tmp = tempfile::tempdir().unwrap();
    let store = kiln_store::Store::open(tmp.path().join("store")).unwrap();
    let id = repo.index.named("base-files")[0];
    let deb = repo.deb(id).unwrap();
    let fetcher = Fetcher::new().unwrap();
    let url = format!("{}/{}", source.mirror, deb.filename);
    let rt = common::rt();
    // a tampered hash: the bytes are not what the index says
    let wrong = Digest::of(b"not base-files");
    let e = rt
        .block_on(fetcher.get_into_store(&url, &store, &wrong, deb.size))
        .unwrap_err();
    match &e {
        FetchError::Sha256 {
            url: u,
            expected,
            got,
        } => {
            assert_eq!(u, &url);
            assert_eq!(expected, &wrong);
            assert_eq!(got, &deb.sha256);
        }
        other => panic!("expected a SHA256 mismatch, got {other:?}"),
    }
    assert!(!store.has_blob(&wrong));
    // a wrong size: one byte less than the download
    let e = rt
        .block_on(fetcher.get_into_store(&url, &store, &deb.sha256, deb.size - 1))
        .unwrap_err();
    assert!(
        matches!(&e, FetchError::Size { expected, .. } if *expected == deb.size - 1),
        "{e:?}"
    );
    // the real thing lands
    rt.block_on(kiln_deb::download(
        &source,
        std::slice::from_ref(&deb),
        &fetcher,
        &store,
    ))
    .unwrap();
    store.verify_blob(&deb.sha256).unwrap();
    // a missing file is a 404 that names the URL
    let e = rt
        .block_on(fetcher.get_into_store(&format!("{url}.missing"), &store, &wrong, 1))
        .unwrap_err();
    assert!(e.to_string().contains(".deb.missing"), "{e}");
}

#[test]
fn a_dead_mirror_is_retried_then_named() {
    use std::time::{Duration, Instant};
    // a loopback port nothing listens on: every connection is refused
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let source = common::bookworm()
        .with_mirror(&format!("http://127.0.0.1:{port}/debian"))
        .unwrap();
    let mut fetcher = Fetcher::new().unwrap();
    fetcher.retry = kiln_deb::RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(100),
    };
    let t = Instant::now();
    let e = common::rt()
        .block_on(Repository::open(&source, &fetcher, &common::store()))
        .unwrap_err();
    match &e {
        RepoError::Fetch(FetchError::Connection { url, attempts, .. }) => {
            assert_eq!(*attempts, 3);
            assert!(url.ends_with("/debian/dists/bookworm/InRelease"), "{url}");
        }
        other => panic!("expected a connection failure, got {other:?}"),
    }
    // it waited between tries (50 + 100 ms), and not for long
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A loopback HTTP server that answers every GET with `body`, cutting the
/// first `cut` answers off halfway (a mirror dying mid-download): the
/// number of requests it has answered.
fn cutting_server(
    body: Vec<u8>,
    cut: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/pool/x.deb", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            // the request head
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let send = if n < cut { body.len() / 2 } else { body.len() };
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body[..send]);
        }
    });
    (url, count)
}

#[test]
fn a_mirror_dying_mid_download_is_retried_then_named() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&body);
    let mut fetcher = Fetcher::new().unwrap();
    fetcher.retry = kiln_deb::RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
    };
    let rt = common::rt();
    let tmp = tempfile::tempdir().unwrap();
    let store = kiln_store::Store::open(tmp.path().join("store")).unwrap();
    let leftovers = |store: &kiln_store::Store| {
        std::fs::read_dir(store.tmp_dir())
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // cut short every time: three tries, then an error naming the URL
    let (url, count) = cutting_server(body.clone(), usize::MAX);
    let e = rt
        .block_on(fetcher.get_into_store(&url, &store, &digest, body.len() as u64))
        .unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert!(
        matches!(
            &e,
            FetchError::Connection { attempts: 3, .. } | FetchError::Size { .. }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains(&url), "{e}");
    // nothing partial is visible or left behind
    assert!(!store.has_blob(&digest));
    assert_eq!(leftovers(&store), 0);
    // cut short once: the retry gets it whole, verified
    let (url, count) = cutting_server(body.clone(), 1);
    rt.block_on(fetcher.get_into_store(&url, &store, &digest, body.len() as u64))
        .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
    store.verify_blob(&digest).unwrap();
    assert_eq!(leftovers(&store), 0);
}
