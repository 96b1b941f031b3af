//! Test harness: Debian's real `docker-registry` on 127.0.0.1 and a free
//! port, a small HTTP proxy in front of it that can inject faults, and
//! helpers that build small images in memory.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_registry::{MemoryStore, RetryPolicy, Settings};
use kiln_store::Digest;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `docker-registry serve`, killed on drop.
pub struct Registry {
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with_auth(None)
    }

    /// With `Some((user, password))` the registry demands basic auth from
    /// an htpasswd file with a bcrypt line generated here.
    pub fn start_with_auth(auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {addr}}}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash(password, 4).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: kiln-test, path: {}}}}}\n",
                htpasswd.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed (.ci/setup)");
        let reg = Self { addr, dir, child };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 16];
                if s.read(&mut buf).is_ok_and(|n| n >= 12)
                    && (&buf[9..12] == b"200" || &buf[9..12] == b"401")
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not come up on {}: {log}", self.addr);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Settings for tests: fast retries.
pub fn settings() -> Settings {
    Settings {
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        ..Settings::default()
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small image put into `store`: returns the manifest digest.
pub struct TestImage {
    pub manifest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub config: Digest,
    pub layers: Vec<Digest>,
}

pub fn image(store: &MemoryStore, arch: &str, seed: u64, layer_sizes: &[usize]) -> TestImage {
    image_with(store, arch, seed, layer_sizes, false)
}

/// Docker schema 2 media types (`docker: true`) or OCI ones.
pub fn image_with(
    store: &MemoryStore,
    arch: &str,
    seed: u64,
    layer_sizes: &[usize],
    docker: bool,
) -> TestImage {
    let (manifest_type, config_type, layer_type) = if docker {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
        )
    };
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let data = bytes(seed * 100 + i as u64, *size);
        let d = store.put(data);
        descs.push(json!({
            "mediaType": layer_type,
            "digest": d.to_string(),
            "size": size,
        }));
        layers.push(d);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
    }))
    .unwrap();
    let config_size = config.len();
    let config_digest = store.put(config);
    let manifest_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {
            "mediaType": config_type,
            "digest": config_digest.to_string(),
            "size": config_size,
        },
        "layers": descs,
    }))
    .unwrap();
    let manifest = store.put(manifest_bytes.clone());
    TestImage {
        manifest,
        manifest_bytes,
        config: config_digest,
        layers,
    }
}

/// An OCI index over `images` with their platforms.
pub fn index(store: &MemoryStore, images: &[(&TestImage, &str, Option<&str>)]) -> Digest {
    index_with(store, images, false)
}

/// A Docker manifest list (`docker: true`) or an OCI index.
pub fn index_with(
    store: &MemoryStore,
    images: &[(&TestImage, &str, Option<&str>)],
    docker: bool,
) -> Digest {
    let (list_type, child_type) = if docker {
        (
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
    } else {
        (
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
        )
    };
    let manifests: Vec<_> = images
        .iter()
        .map(|(img, arch, variant)| {
            let mut p = json!({"os": "linux", "architecture": arch});
            if let Some(v) = variant {
                p["variant"] = json!(v);
            }
            json!({
                "mediaType": child_type,
                "digest": img.manifest.to_string(),
                "size": img.manifest_bytes.len(),
                "platform": p,
            })
        })
        .collect();
    store.put(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": list_type,
            "manifests": manifests,
        }))
        .unwrap(),
    )
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the proxy does with a request.
pub enum Reply {
    /// Pass it to the registry and its answer back.
    Forward,
    /// Answer directly.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Forward, then replace the response body (same length) with this.
    ReplaceBody(Vec<u8>),
    /// Forward, then send only the first `n` body bytes and close.
    Truncate(usize),
    /// Forward only the first `n` bytes of the request body (with
    /// `Content-Range` fitted to them), then answer `status` whatever the
    /// registry said: a chunk the registry half received.
    ForwardPartial { n: usize, status: u16 },
}

type Handler = dyn Fn(&Req) -> Reply + Send + Sync;

/// A small HTTP/1.1 proxy in front of a registry, one request per
/// connection, that lets a test fail or alter chosen requests.
pub struct Proxy {
    pub addr: String,
    pub log: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(
        upstream: &str,
        handler: impl Fn(&Req) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let (up, me, log2) = (upstream.to_string(), addr.clone(), log.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (h, http, up, me, log) = (
                    handler.clone(),
                    http.clone(),
                    up.clone(),
                    me.clone(),
                    log2.clone(),
                );
                tokio::spawn(async move {
                    let _ = serve(sock, &*h, &http, &up, &me, &log).await;
                });
            }
        });
        Self { addr, log, task }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    handler: &Handler,
    http: &reqwest::Client,
    upstream: &str,
    me: &str,
    log: &Mutex<Vec<Req>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = vec![0u8; 65536];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let req = Req {
        method,
        path,
        headers,
        body,
    };
    log.lock().unwrap().push(req.clone());
    let reply = handler(&req);
    let (status, headers, body, cut) = match reply {
        Reply::Respond {
            status,
            headers,
            body,
        } => (status, headers, body, None),
        other => {
            let mut rb = http.request(
                req.method.parse().unwrap(),
                format!("http://{upstream}{}", req.path),
            );
            let partial = match &other {
                Reply::ForwardPartial { n, .. } => Some((*n).min(req.body.len())),
                _ => None,
            };
            for (k, v) in &req.headers {
                let k_low = k.to_ascii_lowercase();
                if ["host", "connection", "content-length"].contains(&k_low.as_str()) {
                    continue;
                }
                if let (Some(n), "content-range") = (partial, k_low.as_str()) {
                    let start: usize = v.split('-').next().unwrap().parse().unwrap();
                    rb = rb.header(k, format!("{}-{}", start, start + n - 1));
                    continue;
                }
                rb = rb.header(k, v);
            }
            let body = match partial {
                Some(n) => req.body[..n].to_vec(),
                None => req.body.clone(),
            };
            let resp = rb.body(body).send().await.expect("upstream answers");
            if let Reply::ForwardPartial { status, .. } = other {
                let _ = resp.bytes().await;
                let out = format!(
                    "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                );
                sock.write_all(out.as_bytes()).await?;
                sock.shutdown().await?;
                return Ok(());
            }
            let status = resp.status().as_u16();
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .filter(|(k, _)| !["connection", "transfer-encoding"].contains(&k.as_str()))
                .map(|(k, v)| {
                    let v = v.to_str().unwrap_or_default().replace(upstream, me);
                    (k.to_string(), v)
                })
                .collect();
            let mut body = resp.bytes().await.unwrap().to_vec();
            let mut cut = None;
            match other {
                Reply::ReplaceBody(b) => body = b,
                Reply::Truncate(n) => cut = Some(n),
                _ => {}
            }
            (status, headers, body, cut)
        }
    };
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    let is_head = req.method == "HEAD";
    for (k, v) in &headers {
        if k.eq_ignore_ascii_case("content-length") && !is_head {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !is_head {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    sock.write_all(out.as_bytes()).await?;
    if !is_head {
        let n = cut.unwrap_or(body.len()).min(body.len());
        sock.write_all(&body[..n]).await?;
    }
    sock.flush().await?;
    sock.shutdown().await?;
    Ok(())
}

/// Writes an OCI image layout at `dir` from blobs of `store`.
pub fn write_oci_layout(dir: &Path, store: &MemoryStore, manifest: &Digest, tag: &str) -> PathBuf {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for d in store.digests() {
        std::fs::write(blobs.join(d.hex()), store.get(&d).unwrap()).unwrap();
    }
    let m = store.get(manifest).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest.to_string(),
                "size": m.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    dir.to_path_buf()
}
