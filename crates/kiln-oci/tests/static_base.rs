//! The static base: file list, modes, owners, config and reproducibility.

use kiln_oci::static_base::{self, Kind};
use kiln_oci::{Compression, Image, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

/// Everything but the time zone files (hundreds, from the tz database crate)
/// is listed with kind, mode and owner; the zones are counted.
#[test]
fn file_list_snapshot() {
    let entries = static_base::entries();
    let mut lines = Vec::new();
    let mut zones = 0;
    let mut zone_links = 0;
    for e in &entries {
        if e.path.starts_with("usr/share/zoneinfo/") {
            match e.kind {
                Kind::File => zones += 1,
                Kind::Hardlink { .. } => zone_links += 1,
                _ => {}
            }
            if !matches!(e.kind, Kind::Dir)
                && !["UTC", "Etc/UTC", "Europe/Berlin", "America/New_York"]
                    .iter()
                    .any(|z| e.path.ends_with(&format!("zoneinfo/{z}")))
            {
                continue;
            }
            if matches!(e.kind, Kind::Dir) {
                continue;
            }
        }
        let kind = match &e.kind {
            Kind::Dir => "dir".to_owned(),
            Kind::File => "file".to_owned(),
            Kind::Symlink { target } => format!("symlink -> {target}"),
            Kind::Hardlink { target } => format!("hardlink -> /{target}"),
        };
        lines.push(format!(
            "/{:<40} {:04o} {:>5}:{:<5} {kind}",
            e.path, e.mode, e.uid, e.gid
        ));
    }
    insta::assert_snapshot!(lines.join("\n"));
    assert!(zones > 300, "{zones} zone files");
    assert!(zone_links > 0);
    // Sorted, parents before children, no duplicates.
    for w in entries.windows(2) {
        assert!(w[0].path < w[1].path, "{} !< {}", w[0].path, w[1].path);
    }
}

#[test]
fn etc_files_have_expected_content() {
    let entries = static_base::entries();
    let get = |p: &str| {
        let e = entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} missing"));
        String::from_utf8(e.data.clone()).unwrap()
    };
    let passwd = get("etc/passwd");
    assert!(passwd.contains("root:x:0:0:root:/root:/sbin/nologin\n"));
    assert!(passwd.contains("nobody:x:65534:65534:"));
    assert!(passwd.contains("nonroot:x:65532:65532:nonroot:/home/nonroot:"));
    let group = get("etc/group");
    for g in ["root:x:0:", "nobody:x:65534:", "nonroot:x:65532:"] {
        assert!(group.contains(g), "{group}");
    }
    assert!(get("etc/services").contains("https\t443/tcp"));
    assert!(get("etc/protocols").contains("tcp\t6\tTCP"));
    assert!(get("etc/nsswitch.conf").contains("hosts:          files dns"));
    assert!(get("etc/os-release").contains("ID=kiln-static"));
    let ca = get("etc/ssl/certs/ca-certificates.crt");
    let n = ca.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(n > 100, "{n} certificates");
    assert_eq!(n, ca.matches("-----END CERTIFICATE-----").count());
    let utc = entries
        .iter()
        .find(|e| e.path == "usr/share/zoneinfo/UTC")
        .unwrap();
    let data = if utc.data.is_empty() {
        let Kind::Hardlink { target } = &utc.kind else {
            panic!("UTC is empty")
        };
        entries
            .iter()
            .find(|e| &e.path == target)
            .unwrap()
            .data
            .clone()
    } else {
        utc.data.clone()
    };
    assert_eq!(&data[..4], b"TZif");
}

#[test]
fn image_config_and_layer() {
    let (_d, store) = store();
    let img = static_base::static_base(&store, 0, Compression::Gzip).unwrap();
    let cfg = img.config.config().clone().unwrap();
    assert_eq!(cfg.user().as_deref(), Some("65532"));
    assert_eq!(cfg.working_dir().as_deref(), Some("/home/nonroot"));
    let env = cfg.env().clone().unwrap();
    assert!(env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin:")));
    assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".to_owned()));
    assert!(cfg.entrypoint().is_none() && cfg.cmd().is_none());
    assert_eq!(
        img.config.created().as_deref(),
        Some("1970-01-01T00:00:00Z")
    );
    assert_eq!(img.layers.len(), 1);
    assert_eq!(
        img.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    // The gzip header is fixed: no mtime, no name, OS byte 255.
    let blob = store.read_blob(&img.layers[0].digest).unwrap();
    assert_eq!(&blob[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    // Reloading from the store gives the same image.
    let again = Image::load(&store, &img.digest).unwrap();
    assert_eq!(again.layers, img.layers);
}

#[test]
fn reproducible_across_stores_and_sensitive_to_epoch() {
    let (_a, s1) = store();
    let (_b, s2) = store();
    let one = static_base::static_base(&s1, 0, Compression::Gzip).unwrap();
    let two = static_base::static_base(&s2, 0, Compression::Gzip).unwrap();
    assert_eq!(one.digest, two.digest);
    assert_eq!(one.layers, two.layers);
    let later = static_base::static_base(&s1, 1_700_000_000, Compression::Gzip).unwrap();
    assert_ne!(later.digest, one.digest);
    assert_ne!(
        later.layers[0].diff_id, one.layers[0].diff_id,
        "mtimes follow the epoch"
    );
    assert_eq!(
        later.config.created().as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
    for c in [Compression::Zstd, Compression::None] {
        let a = static_base::static_base(&s1, 0, c).unwrap();
        let b = static_base::static_base(&s2, 0, c).unwrap();
        assert_eq!(a.digest, b.digest, "{c}");
        assert_ne!(a.digest, one.digest, "{c}");
        assert_eq!(
            a.layers[0].diff_id, one.layers[0].diff_id,
            "same tar for {c}"
        );
    }
    let none = static_base::static_base(&s1, 0, Compression::None).unwrap();
    assert_eq!(none.layers[0].digest, none.layers[0].diff_id);
}

/// Pinned so that the base changes only on purpose. When a change is meant
/// (new CA or tz crate data, new files), update the digest here and say so
/// in the changelog: every image built on the base changes with it.
#[test]
#[cfg(target_arch = "x86_64")]
fn pinned_digest() {
    let (_d, store) = store();
    let img = static_base::static_base(&store, 0, Compression::Gzip).unwrap();
    assert_eq!(
        img.digest.to_string(),
        "sha256:c36eebf14fb21f43e8c2ef6a75150b409d1299e9d47c2194166f3c972a7c9f3a"
    );
}
