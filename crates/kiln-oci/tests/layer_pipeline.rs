//! The layer export pipeline: the same bytes as before it was pipelined
//! (pinned digests), the same bytes whether the tar arrives through `Write`
//! or the walker's chunk path, and failures that leave nothing in the store.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::store;
use kiln_oci::{Compression, Store, layer_from_bytes};

/// Deterministic mixed content: runs of text and of noise, so both
/// compressors see compressible and incompressible chunks.
fn sample(n: usize, seed: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut x: u32 = seed;
    while v.len() < n {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        if (v.len() / 10_000) % 3 == 0 {
            v.extend_from_slice(&x.to_le_bytes());
        } else {
            v.extend_from_slice(b"layer bytes that compress well, line after line\n");
        }
    }
    v.truncate(n);
    v
}

/// Digests computed by the sequential writer (before the pipeline), for
/// 3.5 MiB plus 1234 bytes: chunk boundaries, a partial last chunk.
#[test]
fn layer_bytes_are_pinned() {
    let (_d, store) = store();
    let data = sample(3 * (1 << 20) + (1 << 19) + 1234, 7);
    let mut got = Vec::new();
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let info = layer_from_bytes(&store, &data, c).unwrap();
        got.push(format!(
            "{c} {} {} {}",
            info.digest, info.size, info.diff_id
        ));
    }
    let expected = [
        "gzip sha256:84d90a50f471d825c10b41f94edb9939732f7d9126289e0b7f30d47d4ea1eb1f 1255901 \
         sha256:d84cf8f1898965f1baf2dd0215a3bf1ecb85e27d1744f0eedb4c95027091214d",
        "zstd sha256:28c1565302f4f07e336349696292d6aaf99aa5da1048b4f76196e2bc00938988 1239203 \
         sha256:d84cf8f1898965f1baf2dd0215a3bf1ecb85e27d1744f0eedb4c95027091214d",
        "none sha256:d84cf8f1898965f1baf2dd0215a3bf1ecb85e27d1744f0eedb4c95027091214d 3671250 \
         sha256:d84cf8f1898965f1baf2dd0215a3bf1ecb85e27d1744f0eedb4c95027091214d",
    ];
    assert_eq!(got, expected);
}

fn blobs_and_temps(store: &Store) -> (usize, usize) {
    let count = |p: &Path| std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
    (
        count(&store.root().join("blobs").join("sha256")),
        count(&store.tmp_dir()),
    )
}

/// A tree with a few MiB of files in several directories, links, an empty
/// file and a long name.
fn make_tree(root: &Path) {
    for d in 0..4 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            let n = (d * 25 + f) * 37_000 + f;
            std::fs::write(
                dir.join(format!("f{f:02}")),
                sample(n, (d * 100 + f) as u32),
            )
            .unwrap();
        }
    }
    std::fs::write(root.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("d0/f01", root.join("link")).unwrap();
    std::fs::hard_link(root.join("d1/f02"), root.join("hard")).unwrap();
    let long = root.join("l".repeat(120)).join("n".repeat(130));
    std::fs::create_dir_all(long.parent().unwrap()).unwrap();
    std::fs::write(&long, b"long name").unwrap();
    std::fs::set_permissions(root.join("d2/f03"), std::fs::Permissions::from_mode(0o4755)).unwrap();
}

#[test]
fn pipelined_directory_export_matches_the_sequential_writer() {
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path());
    let opts = kiln_layer::WriteOptions {
        source_date_epoch: Some(0),
        xattrs: true,
        ..Default::default()
    };
    let mut tar = Vec::new();
    kiln_layer::write_tar(tree.path(), &mut tar, &opts).unwrap();
    assert!(tar.len() > 40 << 20, "the tree spans many chunks");
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let (_d, store) = store();
        let reference = layer_from_bytes(&store, &tar, c).unwrap();
        let piped = kiln_oci::import::rootfs_dir_layer(&store, tree.path(), c, 0).unwrap();
        assert_eq!(piped, reference, "{c}");
        let stored = std::fs::read(store.blob_path(&piped.digest)).unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut c.decoder(&stored[..]).unwrap(), &mut back).unwrap();
        assert!(back == tar, "{c}: the blob decompresses to the tar");
    }
}

#[test]
fn a_walk_error_mid_tree_names_the_path_and_stores_nothing() {
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path());
    // Sorted after d0..d3 (many MiB already sent down the pipeline): a
    // socket, which a layer cannot hold.
    let sock = tree.path().join("zz-socket");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let (_d, store) = store();
        let err = kiln_oci::import::rootfs_dir_layer(&store, tree.path(), c, 0).unwrap_err();
        let chain = format!("{:?}", anyhow_chain(&err));
        assert!(chain.contains("zz-socket"), "{c}: {chain}");
        assert_eq!(blobs_and_temps(&store), (0, 0), "{c}: nothing left behind");
    }
}

fn anyhow_chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut v = vec![e.to_string()];
    let mut s = e.source();
    while let Some(x) = s {
        v.push(x.to_string());
        s = x.source();
    }
    v
}
