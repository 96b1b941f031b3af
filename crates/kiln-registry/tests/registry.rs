//! The client against Debian's real `docker-registry`, skopeo, and a fault
//! injecting proxy in front of the registry.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Proxy, Registry, Reply, image, index, settings};
use kiln_registry::{
    AuthConfig, BlobStore, Client, MemoryStore, Platform, PushOptions, Reference, RegistryError,
    Settings, parse_mirror_list,
};

fn amd64() -> Platform {
    Platform::new("linux", "amd64", None)
}

fn client(s: Settings) -> Client {
    Client::new(s).unwrap()
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap().normalized()
}

#[tokio::test(flavor = "multi_thread")]
async fn push_pull_round_trip_tags_and_head_skip() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 1, &[3000, 5000]);
    let c = client(settings());
    let dest = r(&format!("{}/test/app:v1", reg.addr));
    let opts = PushOptions {
        extra_tags: vec!["v2".into()],
        ..Default::default()
    };
    let rep = c.push(&src, &img.manifest, &dest, &opts).await.unwrap();
    assert_eq!((rep.uploaded, rep.existing, rep.mounted), (3, 0, 0));
    assert_eq!(
        rep.bytes_uploaded,
        8000 + src.get(&img.config).unwrap().len() as u64
    );
    assert_eq!(rep.tags, ["v1", "v2"]);
    assert_eq!(c.list_tags(&dest).await.unwrap(), ["v1", "v2"]);

    // Second push: every blob is there already (HEAD), nothing uploaded.
    let rep = c
        .push(&src, &img.manifest, &dest, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!((rep.uploaded, rep.existing), (0, 3));

    let dst = MemoryStore::new();
    let p = c.pull(&dest, &amd64(), &dst).await.unwrap();
    assert_eq!(p.manifest_digest, img.manifest);
    assert_eq!(p.config_digest, img.config);
    assert_eq!(p.layers, img.layers);
    assert_eq!((p.fetched, p.skipped), (3, 0));
    assert_eq!(p.index_digest, None);
    for d in src.digests() {
        assert_eq!(dst.get(&d), src.get(&d), "{d}");
    }
    // Pull again into the same store: every blob skipped.
    let p = c.pull(&dest, &amd64(), &dst).await.unwrap();
    assert_eq!((p.fetched, p.skipped, p.bytes_fetched), (0, 3, 0));

    // By digest, and by tag plus digest.
    let by_digest = r(&format!("{}/test/app@{}", reg.addr, img.manifest));
    let p = c
        .pull(&by_digest, &amd64(), &MemoryStore::new())
        .await
        .unwrap();
    assert_eq!(p.manifest_digest, img.manifest);
    let both = r(&format!("{}/test/app:v2@{}", reg.addr, img.manifest));
    assert_eq!(
        c.pull(&both, &amd64(), &MemoryStore::new())
            .await
            .unwrap()
            .manifest_digest,
        img.manifest
    );

    // Missing tag: a clear not-found naming registry and repository.
    let err = c
        .pull(
            &dest.with_tag("nope").unwrap(),
            &amd64(),
            &MemoryStore::new(),
        )
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&reg.addr) && msg.contains("test/app") && msg.contains("`nope`"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_push() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 2, &[20_000, 100]);
    let c = client(Settings {
        monolithic_limit: 1024,
        chunk_size: 4096,
        ..settings()
    });
    let dest = r(&format!("{}/chunked/app:1", reg.addr));
    let rep = c
        .push(&src, &img.manifest, &dest, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(rep.uploaded, 3);
    assert_eq!(
        rep.chunked, 1,
        "only the 20 kB layer is above the limit: {rep:?}"
    );
    let ep = c.settings().origin(dest.registry(), dest.repository());
    assert!(c.blob_exists(&ep, &img.layers[0]).await.unwrap());
    let dst = MemoryStore::new();
    c.pull(&dest, &amd64(), &dst).await.unwrap();
    assert_eq!(dst.get(&img.layers[0]), src.get(&img.layers[0]));
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_repository_mount() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 3, &[4000]);
    let c = client(settings());
    let a = r(&format!("{}/team/a:1", reg.addr));
    c.push(&src, &img.manifest, &a, &PushOptions::default())
        .await
        .unwrap();

    // Through a proxy, to see what the registry answered.
    let proxy = Proxy::start(&reg.addr, |_| Reply::Forward).await;
    let b = r(&format!("{}/team/b:1", proxy.addr));
    let opts = PushOptions {
        mount_from: vec!["team/a".into()],
        ..Default::default()
    };
    let rep = c.push(&src, &img.manifest, &b, &opts).await.unwrap();
    assert_eq!(
        (rep.mounted, rep.uploaded, rep.existing),
        (2, 0, 0),
        "{rep:?}"
    );
    let reqs = proxy.requests();
    let mounts: Vec<_> = reqs
        .iter()
        .filter(|q| {
            q.method == "POST" && q.path.contains("mount=") && q.path.contains("from=team%2Fa")
        })
        .collect();
    assert_eq!(mounts.len(), 2, "{reqs:?}");
    assert!(
        !reqs
            .iter()
            .any(|q| q.method == "PUT" && q.path.contains("/blobs/uploads/"))
    );
    let p = c.pull(&b, &amd64(), &MemoryStore::new()).await.unwrap();
    assert_eq!(p.manifest_digest, img.manifest);
}

#[tokio::test(flavor = "multi_thread")]
async fn index_platform_selection() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let x86 = image(&src, "amd64", 4, &[1000]);
    let arm = image(&src, "arm64", 5, &[1200]);
    let idx = index(&src, &[(&x86, "amd64", None), (&arm, "arm64", Some("v8"))]);
    let c = client(settings());
    let dest = r(&format!("{}/multi/app:1", reg.addr));
    let rep = c
        .push(&src, &idx, &dest, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(rep.manifests, 3);

    for (platform, want) in [
        ("linux/amd64", &x86),
        ("linux/arm64", &arm),
        ("linux/arm64/v8", &arm),
    ] {
        let dst = MemoryStore::new();
        let p = c
            .pull(&dest, &platform.parse().unwrap(), &dst)
            .await
            .unwrap();
        assert_eq!(p.manifest_digest, want.manifest, "{platform}");
        assert_eq!(p.index_digest.as_ref(), Some(&idx));
        assert_eq!(p.layers, want.layers);
        assert!(dst.has_blob(&idx) && dst.has_blob(&want.manifest));
        let other = if std::ptr::eq(want, &x86) { &arm } else { &x86 };
        assert!(
            !dst.has_blob(&other.layers[0]),
            "only the chosen platform's layers"
        );
    }
    let err = c
        .pull(&dest, &"linux/s390x".parse().unwrap(), &MemoryStore::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64, linux/arm64/v8"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_with_htpasswd_and_docker_config() {
    let reg = Registry::start_with_auth(Some(("alice", "s3cret")));
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 6, &[700]);
    let dest = r(&format!("{}/private/app:1", reg.addr));

    let err = client(settings())
        .push(&src, &img.manifest, &dest, &PushOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    let write = |user: &str, pw: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        std::fs::write(
            &cfg,
            format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr),
        )
        .unwrap();
    };
    write("alice", "wrong");
    let mut auth = AuthConfig::default();
    auth.load_file(&cfg).unwrap();
    let err = client(Settings { auth, ..settings() })
        .push(&src, &img.manifest, &dest, &PushOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Rejected { .. }), "{err}");
    assert!(
        err.to_string().contains("rejected the credentials"),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong"), "no password in: {err}");

    write("alice", "s3cret");
    let mut auth = AuthConfig::default();
    auth.load_file(&cfg).unwrap();
    let c = client(Settings { auth, ..settings() });
    c.push(&src, &img.manifest, &dest, &PushOptions::default())
        .await
        .unwrap();
    let p = c.pull(&dest, &amd64(), &MemoryStore::new()).await.unwrap();
    assert_eq!(p.manifest_digest, img.manifest);
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_bearer_token_flow() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 7, &[900]);
    let c = client(settings());
    let plain = r(&format!("{}/tok/app:1", reg.addr));
    c.push(&src, &img.manifest, &plain, &PushOptions::default())
        .await
        .unwrap();

    // A front that demands a bearer token from its own token endpoint, the
    // way Docker Hub does, and forwards to the registry once it has one.
    let me = Arc::new(std::sync::Mutex::new(String::new()));
    let me2 = me.clone();
    let proxy = Proxy::start(&reg.addr, move |q| {
        if q.path.starts_with("/token") {
            let ok = q.path.contains("service=kiln-test")
                && q.path.contains("scope=repository%3Atok%2Fapp%3Apull");
            return Reply::Respond {
                status: if ok { 200 } else { 400 },
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: br#"{"token": "t0ken", "expires_in": 300}"#.to_vec(),
            };
        }
        if q.header("authorization") == Some("Bearer t0ken") {
            return Reply::Forward;
        }
        let realm = format!("http://{}/token", me2.lock().unwrap());
        Reply::Respond {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".into(),
                format!(
                    r#"Bearer realm="{realm}",service="kiln-test",scope="repository:tok/app:pull""#
                ),
            )],
            body: br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_vec(),
        }
    })
    .await;
    *me.lock().unwrap() = proxy.addr.clone();
    let via = r(&format!("{}/tok/app:1", proxy.addr));
    let c = client(settings());
    let p = c.pull(&via, &amd64(), &MemoryStore::new()).await.unwrap();
    assert_eq!(p.manifest_digest, img.manifest);
    let reqs = proxy.requests();
    let tokens = reqs.iter().filter(|q| q.path.starts_with("/token")).count();
    let challenged = reqs
        .iter()
        .filter(|q| q.header("authorization").is_none() && !q.path.starts_with("/token"))
        .count();
    assert_eq!(tokens, 1, "one token serves the whole pull: {reqs:?}");
    assert_eq!(challenged, 1, "only the first request goes without a token");
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_serves_docker_hub_names() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 8, &[1500]);
    let c = client(settings());
    c.push(
        &src,
        &img.manifest,
        &r(&format!("{}/library/busybox:1.36", reg.addr)),
        &PushOptions::default(),
    )
    .await
    .unwrap();

    let mirrored = client(Settings {
        mirrors: parse_mirror_list(&format!("docker.io={}", reg.addr), "test").unwrap(),
        ..settings()
    });
    let want = r("busybox:1.36");
    assert_eq!(want.to_string(), "docker.io/library/busybox:1.36");
    let dst = MemoryStore::new();
    let p = mirrored.pull(&want, &amd64(), &dst).await.unwrap();
    assert_eq!(p.served_by, reg.addr);
    assert_eq!(p.reference.to_string(), "docker.io/library/busybox:1.36");
    assert_eq!(p.manifest_digest, img.manifest);
    assert!(dst.has_blob(&img.layers[0]));
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_mismatch_stores_nothing() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 9, &[2048, 512]);
    let c = client(settings());
    let plain = r(&format!("{}/bad/app:1", reg.addr));
    c.push(&src, &img.manifest, &plain, &PushOptions::default())
        .await
        .unwrap();

    let target = format!("/blobs/{}", img.layers[0]);
    let proxy = Proxy::start(&reg.addr, move |q| {
        if q.path.ends_with(&target) && q.method == "GET" {
            Reply::ReplaceBody(common::bytes(999, 2048))
        } else {
            Reply::Forward
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::Store::open(dir.path()).unwrap();
    let err = c
        .pull(&r(&format!("{}/bad/app:1", proxy.addr)), &amd64(), &store)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&img.layers[0].to_string())
            && msg.contains("bad/app")
            && msg.contains("nothing was stored"),
        "{msg}"
    );
    assert!(!store.has_blob(&img.layers[0]));
    assert!(
        !store.has_blob(&img.manifest),
        "no manifest without its blobs"
    );
    assert!(
        std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no temp file left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_on_503_and_dropped_connections() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 10, &[64 * 1024]);
    let c = client(settings());
    c.push(
        &src,
        &img.manifest,
        &r(&format!("{}/flaky/app:1", reg.addr)),
        &PushOptions::default(),
    )
    .await
    .unwrap();

    // Two 503s, then the real answer.
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, target) = (hits.clone(), format!("/blobs/{}", img.layers[0]));
    let proxy = Proxy::start(&reg.addr, move |q| {
        if q.path.ends_with(&target) && h.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::Respond {
                status: 503,
                headers: vec![],
                body: b"busy".to_vec(),
            }
        } else {
            Reply::Forward
        }
    })
    .await;
    let p = c
        .pull(
            &r(&format!("{}/flaky/app:1", proxy.addr)),
            &amd64(),
            &MemoryStore::new(),
        )
        .await
        .unwrap();
    assert_eq!(p.manifest_digest, img.manifest);
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // A connection closed mid-body, then a good one.
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, target) = (hits.clone(), format!("/blobs/{}", img.layers[0]));
    let proxy = Proxy::start(&reg.addr, move |q| {
        if q.path.ends_with(&target) && h.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Truncate(1000)
        } else {
            Reply::Forward
        }
    })
    .await;
    let dst = MemoryStore::new();
    c.pull(&r(&format!("{}/flaky/app:1", proxy.addr)), &amd64(), &dst)
        .await
        .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(dst.get(&img.layers[0]), src.get(&img.layers[0]));

    // Always failing: a bounded number of tries and a clear error.
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, target) = (hits.clone(), format!("/blobs/{}", img.layers[0]));
    let proxy = Proxy::start(&reg.addr, move |q| {
        if q.path.ends_with(&target) {
            h.fetch_add(1, Ordering::SeqCst);
            Reply::Respond {
                status: 503,
                headers: vec![],
                body: b"down for maintenance".to_vec(),
            }
        } else {
            Reply::Forward
        }
    })
    .await;
    let dst = MemoryStore::new();
    let err = c
        .pull(&r(&format!("{}/flaky/app:1", proxy.addr)), &amd64(), &dst)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, RegistryError::Unavailable { attempts: 4, .. }),
        "{msg}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    for part in [
        proxy.addr.as_str(),
        "flaky/app",
        &img.layers[0].to_string(),
        "503",
        "down for maintenance",
    ] {
        assert!(msg.contains(part), "`{part}` missing in: {msg}");
    }
    assert!(!dst.has_blob(&img.layers[0]) && !dst.has_blob(&img.manifest));

    // Nothing listening: connection errors are retried, then reported.
    let dead = format!("127.0.0.1:{}", common::free_port());
    let err = c
        .pull(
            &r(&format!("{dead}/gone/app:1")),
            &amd64(),
            &MemoryStore::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Connection { attempts: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&dead), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_interop() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 11, &[3000]);
    let c = client(settings());
    c.push(
        &src,
        &img.manifest,
        &r(&format!("{}/interop/kiln:1", reg.addr)),
        &PushOptions::default(),
    )
    .await
    .unwrap();

    // skopeo reads what kiln pushed.
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/interop/kiln:1", reg.addr),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Digest"], img.manifest.to_string());
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Layers"][0], img.layers[0].to_string());
    // ... and copies it out, blobs intact.
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/interop/kiln:1", reg.addr),
            &format!("oci:{}:x", out_dir.path().display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // skopeo may recompress layers for the OCI layout; the config travels
    // byte for byte.
    let listing: Vec<_> = std::fs::read_dir(out_dir.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let copied = std::fs::read(out_dir.path().join("blobs/sha256").join(img.config.hex()))
        .unwrap_or_else(|e| panic!("{e}: {listing:?}, config {}", img.config));
    assert_eq!(Some(copied), src.get(&img.config));

    // kiln pulls what skopeo pushed from an OCI layout.
    let other = MemoryStore::new();
    let img2 = image(&other, "amd64", 12, &[2500]);
    let dir = tempfile::tempdir().unwrap();
    common::write_oci_layout(dir.path(), &other, &img2.manifest, "v1");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", dir.path().display()),
            &format!("docker://{}/interop/skopeo:v1", reg.addr),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dst = MemoryStore::new();
    let p = c
        .pull(
            &r(&format!("{}/interop/skopeo:v1", reg.addr)),
            &amd64(),
            &dst,
        )
        .await
        .unwrap();
    // skopeo compresses the layer on the way in, so compare with what
    // skopeo says the registry holds.
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/interop/skopeo:v1", reg.addr),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Digest"], p.manifest_digest.to_string());
    assert_eq!(v["Layers"][0], p.layers[0].to_string());
    assert_eq!(p.layers.len(), 1);
    assert!(dst.has_blob(&p.layers[0]) && dst.has_blob(&p.config_digest));
    let config: serde_json::Value =
        serde_json::from_slice(&dst.get(&p.config_digest).unwrap()).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], img2.layers[0].to_string());
}

/// A real image from kiln-oci (the static base, gzip tar layers) goes from
/// one kiln store through the registry into another, and kiln-oci loads it.
#[tokio::test(flavor = "multi_thread")]
async fn kiln_oci_static_base_between_stores() {
    let reg = Registry::start();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (sa, sb) = (
        kiln_store::Store::open(a.path()).unwrap(),
        kiln_store::Store::open(b.path()).unwrap(),
    );
    let base = kiln_oci::static_base(&sa, 0, kiln_oci::Compression::Gzip).unwrap();
    let c = client(settings());
    let dest = r(&format!("{}/kiln/static:nonroot", reg.addr));
    let rep = c
        .push(&sa, &base.digest, &dest, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(rep.uploaded, base.layers.len() + 1);

    let platform = Platform::new("linux", &base.config.architecture().to_string(), None);
    let p = c.pull(&dest, &platform, &sb).await.unwrap();
    assert_eq!(p.manifest_digest, base.digest);
    let loaded = kiln_oci::Image::load(&sb, &p.manifest_digest).unwrap();
    assert_eq!(loaded.config_digest, base.config_digest);
    assert_eq!(loaded.layers, base.layers);
    for l in &loaded.layers {
        sb.verify_blob(&l.digest).unwrap();
    }

    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/kiln/static:nonroot", reg.addr),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Digest"], base.digest.to_string());
}

/// 429 with `Retry-After`, then a manifest cut off mid-body, then success.
#[tokio::test(flavor = "multi_thread")]
async fn manifest_retries_on_429_and_cut_body() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 13, &[100]);
    let c = client(settings());
    c.push(
        &src,
        &img.manifest,
        &r(&format!("{}/busy/app:1", reg.addr)),
        &PushOptions::default(),
    )
    .await
    .unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let proxy = Proxy::start(&reg.addr, move |q| {
        if q.path.contains("/manifests/") {
            match h.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    return Reply::Respond {
                        status: 429,
                        headers: vec![("Retry-After".into(), "0".into())],
                        body: b"slow down".to_vec(),
                    };
                }
                1 => return Reply::Truncate(10),
                _ => {}
            }
        }
        Reply::Forward
    })
    .await;
    let p = c
        .pull(
            &r(&format!("{}/busy/app:1", proxy.addr)),
            &amd64(),
            &MemoryStore::new(),
        )
        .await
        .unwrap();
    assert_eq!(p.manifest_digest, img.manifest);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

/// Bearer flow with credentials: the token endpoint gets them as basic
/// auth, anonymous tokens may only read, and pushing needs the real one.
#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_with_credentials_for_push() {
    let reg = Registry::start();
    let me = Arc::new(std::sync::Mutex::new(String::new()));
    let me2 = me.clone();
    let proxy = Proxy::start(&reg.addr, move |q| {
        if q.path.starts_with("/token") {
            use base64::Engine as _;
            let good = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("carol:pw")
            );
            let token = if q.header("authorization") == Some(good.as_str()) {
                "writer"
            } else {
                "reader"
            };
            return Reply::Respond {
                status: 200,
                headers: vec![],
                body: format!(r#"{{"access_token": "{token}"}}"#).into_bytes(),
            };
        }
        let write = !matches!(q.method.as_str(), "GET" | "HEAD");
        match q.header("authorization") {
            Some("Bearer writer") => return Reply::Forward,
            Some("Bearer reader") if !write => return Reply::Forward,
            _ => {}
        }
        Reply::Respond {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".into(),
                format!(
                    r#"Bearer realm="http://{}/token",service="t""#,
                    me2.lock().unwrap()
                ),
            )],
            body: vec![],
        }
    })
    .await;
    *me.lock().unwrap() = proxy.addr.clone();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 14, &[300]);
    let dest = r(&format!("{}/tok/push:1", proxy.addr));

    let err = client(settings())
        .push(&src, &img.manifest, &dest, &PushOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    let mut auth = AuthConfig::default();
    auth.insert(&proxy.addr, kiln_registry::Credential::basic("carol", "pw"));
    let c = client(Settings { auth, ..settings() });
    let rep = c
        .push(&src, &img.manifest, &dest, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(rep.uploaded, 2);
    let p = client(settings())
        .pull(&dest, &amd64(), &MemoryStore::new())
        .await
        .unwrap();
    assert_eq!(p.manifest_digest, img.manifest);
}

/// Docker v2 schema 2 manifests and a Docker manifest list, as Docker Hub
/// serves most images.
#[tokio::test(flavor = "multi_thread")]
async fn docker_media_types_and_manifest_list() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let x86 = common::image_with(&src, "amd64", 15, &[800], true);
    let arm = common::image_with(&src, "arm", 16, &[900], true);
    let list = common::index_with(
        &src,
        &[(&x86, "amd64", None), (&arm, "arm", Some("v7"))],
        true,
    );
    let c = client(settings());
    let dest = r(&format!("{}/docker/list:1", reg.addr));
    c.push(&src, &list, &dest, &PushOptions::default())
        .await
        .unwrap();

    let ep = c.settings().origin(dest.registry(), dest.repository());
    let top = c.get_manifest(&ep, "1", None).await.unwrap();
    assert_eq!(top.media_type, kiln_registry::manifest::DOCKER_LIST);
    assert_eq!(top.digest, list);

    for (platform, want) in [("linux/amd64", &x86), ("linux/arm/v7", &arm)] {
        let dst = MemoryStore::new();
        let p = c
            .pull(&dest, &platform.parse().unwrap(), &dst)
            .await
            .unwrap();
        assert_eq!(p.manifest_digest, want.manifest, "{platform}");
        assert_eq!(
            p.manifest_media_type,
            kiln_registry::manifest::DOCKER_MANIFEST
        );
        assert_eq!(p.index_digest.as_ref(), Some(&list));
        assert_eq!(dst.get(&want.layers[0]), src.get(&want.layers[0]));
    }
    let err = c
        .pull(&dest, &"linux/arm/v6".parse().unwrap(), &MemoryStore::new())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NoPlatform { .. }), "{err}");

    // A single Docker manifest by tag.
    let single = r(&format!("{}/docker/single:1", reg.addr));
    c.push(&src, &x86.manifest, &single, &PushOptions::default())
        .await
        .unwrap();
    let p = c
        .pull(&single, &amd64(), &MemoryStore::new())
        .await
        .unwrap();
    assert_eq!(
        p.manifest_media_type,
        kiln_registry::manifest::DOCKER_MANIFEST
    );
    assert_eq!(p.manifest_digest, x86.manifest);
}

/// Uploads survive a failing registry: a 503 to the first `PATCH` chunk,
/// to the first `PUT` and to the first manifest `PUT` are all retried.
#[tokio::test(flavor = "multi_thread")]
async fn push_retries_uploads() {
    let reg = Registry::start();
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let f = failed.clone();
    let proxy = Proxy::start(&reg.addr, move |q| {
        let kind = match q.method.as_str() {
            "PATCH" => "patch",
            "PUT" if q.path.contains("/blobs/uploads/") => "put-blob",
            "PUT" if q.path.contains("/manifests/") => "put-manifest",
            _ => return Reply::Forward,
        };
        let mut f = f.lock().unwrap();
        if f.iter().any(|k| k == kind) {
            Reply::Forward
        } else {
            f.push(kind.to_string());
            Reply::Respond {
                status: 503,
                headers: vec![],
                body: b"try later".to_vec(),
            }
        }
    })
    .await;
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 17, &[10_000, 50]);
    let c = client(Settings {
        monolithic_limit: 1024,
        chunk_size: 4096,
        ..settings()
    });
    let dest = r(&format!("{}/retry/push:1", proxy.addr));
    let rep = c
        .push(&src, &img.manifest, &dest, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!((rep.uploaded, rep.chunked), (3, 1));
    let mut kinds = failed.lock().unwrap().clone();
    kinds.sort();
    assert_eq!(kinds, ["patch", "put-blob", "put-manifest"]);
    let dst = MemoryStore::new();
    let p = c.pull(&dest, &amd64(), &dst).await.unwrap();
    assert_eq!(dst.get(&img.layers[0]), src.get(&img.layers[0]));
    assert_eq!(p.manifest_digest, img.manifest);
}

/// A chunk the registry half received before the connection broke: the
/// retried chunk gets 416, and the blob starts over in a fresh session.
#[tokio::test(flavor = "multi_thread")]
async fn push_restarts_an_upload_session_out_of_step() {
    let reg = Registry::start();
    let patches = Arc::new(AtomicUsize::new(0));
    let p2 = patches.clone();
    let proxy = Proxy::start(&reg.addr, move |q| {
        if q.method == "PATCH" && p2.fetch_add(1, Ordering::SeqCst) == 1 {
            Reply::ForwardPartial {
                n: 1000,
                status: 502,
            }
        } else {
            Reply::Forward
        }
    })
    .await;
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 18, &[12_000]);
    let c = client(Settings {
        monolithic_limit: 1024,
        chunk_size: 4096,
        ..settings()
    });
    let dest = r(&format!("{}/restart/push:1", proxy.addr));
    let rep = c
        .push(&src, &img.manifest, &dest, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(rep.chunked, 1);
    let reqs = proxy.requests();
    let posts = reqs
        .iter()
        .filter(|q| q.method == "POST" && q.path.ends_with("/blobs/uploads/"))
        .count();
    assert_eq!(
        posts, 3,
        "config, layer, and the layer again in a new session"
    );
    let dst = MemoryStore::new();
    c.pull(&dest, &amd64(), &dst).await.unwrap();
    assert_eq!(dst.get(&img.layers[0]), src.get(&img.layers[0]));
}

/// docker's identity token: a token server that hands out a refresh token
/// for `offline_token=true` (what `Client::login` asks for), then takes
/// only the OAuth2 `refresh_token` grant (a form `POST`) for access
/// tokens. The identity token goes through the auth file; the password is
/// never sent again.
#[tokio::test(flavor = "multi_thread")]
async fn login_keeps_an_identity_token_and_pulls_with_it() {
    let reg = Registry::start();
    let me = Arc::new(std::sync::Mutex::new(String::new()));
    let me2 = me.clone();
    let proxy = Proxy::start(&reg.addr, move |q| {
        use base64::Engine as _;
        let json = |status: u16, body: &str| Reply::Respond {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        };
        if q.path.starts_with("/token") {
            let good = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("dave:pa55")
            );
            if q.method == "GET" {
                if q.header("authorization") != Some(good.as_str()) {
                    return json(401, r#"{"details":"bad user"}"#);
                }
                if q.path.contains("offline_token=true") {
                    return json(200, r#"{"token": "writer", "refresh_token": "R3fresh"}"#);
                }
                return json(200, r#"{"token": "writer"}"#);
            }
            let form = String::from_utf8_lossy(&q.body).to_string();
            if q.method == "POST"
                && form.contains("grant_type=refresh_token")
                && form.contains("refresh_token=R3fresh")
                && q.header("authorization").is_none()
            {
                return json(200, r#"{"access_token": "writer"}"#);
            }
            return json(400, r#"{"error":"invalid_grant"}"#);
        }
        if q.header("authorization") == Some("Bearer writer") {
            return Reply::Forward;
        }
        Reply::Respond {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".into(),
                format!(
                    r#"Bearer realm="http://{}/token",service="t""#,
                    me2.lock().unwrap()
                ),
            )],
            body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                .to_vec(),
        }
    })
    .await;
    *me.lock().unwrap() = proxy.addr.clone();

    let c = client(settings());
    let err = c
        .login(
            &proxy.addr,
            &kiln_registry::Credential::basic("dave", "wrong"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Rejected { .. }), "{err}");
    assert!(!err.to_string().contains("wrong"), "{err}");
    let stored = c
        .login(
            &proxy.addr,
            &kiln_registry::Credential::basic("dave", "pa55"),
        )
        .await
        .unwrap();
    assert_eq!(stored.identity_token.as_deref(), Some("R3fresh"));
    assert_eq!(stored.password, "", "the password is not kept");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    kiln_registry::credentials::save(&file, &proxy.addr, &stored).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"identitytoken\": \"R3fresh\""), "{text}");
    assert!(!text.contains("pa55"), "{text}");
    let mut auth = AuthConfig::default();
    auth.load_file(&file).unwrap();
    let c = client(Settings { auth, ..settings() });
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 21, &[400]);
    let dest = r(&format!("{}/idt/app:1", proxy.addr));
    c.push(&src, &img.manifest, &dest, &PushOptions::default())
        .await
        .unwrap();
    let p = c.pull(&dest, &amd64(), &MemoryStore::new()).await.unwrap();
    assert_eq!(p.manifest_digest, img.manifest);
    let reqs = proxy.requests();
    let posts = reqs
        .iter()
        .filter(|q| q.method == "POST" && q.path.starts_with("/token"));
    assert!(posts.count() >= 1, "{reqs:?}");
    let basic_after_login = reqs
        .iter()
        .skip_while(|q| !(q.method == "POST" && q.path.starts_with("/token")))
        .filter(|q| {
            q.header("authorization")
                .is_some_and(|h| h.starts_with("Basic"))
        })
        .count();
    assert_eq!(basic_after_login, 0, "the password is not sent after login");
}

/// A digest the repository does not have: the registry's MANIFEST_UNKNOWN
/// as a typed error and a sentence naming the reference, no raw JSON.
#[tokio::test(flavor = "multi_thread")]
async fn registry_error_codes_are_typed() {
    let reg = Registry::start();
    let src = MemoryStore::new();
    let img = image(&src, "amd64", 22, &[100]);
    let c = client(settings());
    c.push(
        &src,
        &img.manifest,
        &r(&format!("{}/codes/app:1", reg.addr)),
        &PushOptions::default(),
    )
    .await
    .unwrap();
    let wrong = format!("{}/codes/app@sha256:{}", reg.addr, "0".repeat(64));
    let err = c
        .pull(&r(&wrong), &amd64(), &MemoryStore::new())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        err.causes()
            .iter()
            .any(|e| e.code() == Some(&kiln_registry::ErrorCode::ManifestUnknown)),
        "{err:?}"
    );
    assert!(err.causes().iter().all(|e| e.is_not_found()), "{err:?}");
    assert!(
        text.contains(&format!("`{}/codes/app`", reg.addr))
            && text.contains("is not in this repository (MANIFEST_UNKNOWN"),
        "{text}"
    );
    assert!(!text.contains("{\"errors\""), "{text}");
    // A repository that does not exist at all.
    let err = c
        .pull(
            &r(&format!("{}/codes/nothing:1", reg.addr)),
            &amd64(),
            &MemoryStore::new(),
        )
        .await
        .unwrap_err();
    assert!(err.causes().iter().any(|e| e.code().is_some()), "{err:?}");
}

/// A registry name that does not resolve fails on the first try (`.invalid`
/// never resolves, RFC 6761), not after the retry policy's five.
#[tokio::test(flavor = "multi_thread")]
async fn an_unresolvable_host_fails_at_once() {
    let c = client(Settings {
        retry: kiln_registry::RetryPolicy {
            max_attempts: 5,
            base_delay: std::time::Duration::from_secs(3),
            max_delay: std::time::Duration::from_secs(3),
        },
        ..settings()
    });
    let start = std::time::Instant::now();
    let err = c
        .pull(
            &r("registry.kiln-test.invalid/app:1"),
            &amd64(),
            &MemoryStore::new(),
        )
        .await
        .unwrap_err();
    assert!(
        err.causes()
            .iter()
            .any(|e| matches!(e, RegistryError::UnresolvableHost { host, .. } if host == "registry.kiln-test.invalid")),
        "{err:?}"
    );
    // With 3 s between tries, one retry alone would take longer.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}
