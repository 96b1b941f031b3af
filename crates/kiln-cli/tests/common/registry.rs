//! Debian's `docker-registry`, started by a test on 127.0.0.1.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's `docker-registry` on 127.0.0.1 and a free port, storage and
/// its access log in a temp dir; killed and waited for on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `user:password` of the htpasswd user, if any
    creds: Option<String>,
    /// The token server of a registry with `auth: token`
    pub token: Option<super::token::TokenServer>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A registry without authentication.
    pub fn start() -> Self {
        Self::spawn(None, false)
    }

    /// A registry that wants basic auth: one htpasswd user.
    pub fn with_htpasswd(user: &str, password: &str) -> Self {
        Self::spawn(Some((user, password)), false)
    }

    /// A registry with `auth: token`: bearer tokens from a token server
    /// (`tests/common/token.rs`) that knows one user.
    pub fn with_token_auth(user: &str, password: &str) -> Self {
        Self::spawn(Some((user, password)), true)
    }

    fn spawn(htpasswd: Option<(&str, &str)>, token: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {addr}}}\n",
            dir.path().join("data").display()
        );
        let mut token_server = None;
        if let (true, Some((u, p))) = (token, htpasswd) {
            let t = super::token::TokenServer::start(dir.path(), u, p);
            cfg.push_str(&format!(
                "auth: {{token: {{realm: \"{}\", service: {}, issuer: {}, rootcertbundle: {}}}}}\n",
                t.realm,
                super::token::SERVICE,
                super::token::ISSUER,
                t.cert.display()
            ));
            token_server = Some(t);
        } else if let Some((u, p)) = htpasswd {
            let file = dir.path().join("htpasswd");
            // cost 4: the lowest bcrypt allows, the registry checks every request
            std::fs::write(&file, format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap())).unwrap();
            cfg.push_str(&format!(
                "auth: {{htpasswd: {{realm: kiln, path: {}}}}}\n",
                file.display()
            ));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed (.ci/setup)");
        let mut reg = Registry {
            addr,
            creds: htpasswd.map(|(u, p)| format!("{u}:{p}")),
            token: token_server,
            child: Some(child),
            dir,
        };
        // Poll /v2/ until it answers (the registry has no readiness signal);
        // 401 is the answer of one that wants credentials.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(&reg.addr) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut b = [0u8; 12];
                if s.read_exact(&mut b).is_ok() && matches!(&b[9..12], b"200" | b"401") {
                    return reg;
                }
            }
            if let Some(Ok(Some(st))) = reg.child.as_mut().map(Child::try_wait) {
                panic!("docker-registry exited before serving {}: {st}", reg.addr);
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {} within 30 s",
                reg.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The raw manifest bytes of `REGISTRY/name` (skopeo, with the
    /// htpasswd user's credentials if there is one).
    pub fn raw(&self, name: &str) -> Vec<u8> {
        let mut c = Command::new("skopeo");
        c.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(creds) = &self.creds {
            c.args(["--creds", creds]);
        }
        let o = c
            .arg(format!("docker://{}/{name}", self.addr))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    }

    /// Puts the image index `index` as `REGISTRY/name:tag` (skopeo cannot
    /// write a bare index), as the htpasswd user if there is one.
    pub fn put_index(&self, name: &str, tag: &str, index: &serde_json::Value) {
        use base64::Engine as _;
        let bytes = serde_json::to_vec(index).unwrap();
        let auth = match &self.creds {
            Some(c) => format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(c)
            ),
            None => String::new(),
        };
        let mut sock = TcpStream::connect(&self.addr).unwrap();
        write!(
            sock,
            "PUT /v2/{name}/manifests/{tag} HTTP/1.0\r\n{auth}Content-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        )
        .unwrap();
        sock.write_all(&bytes).unwrap();
        let mut answer = String::new();
        sock.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.0 201") || answer.starts_with("HTTP/1.1 201"),
            "{answer}"
        );
    }
}

impl Registry {
    /// How many times the registry served `GET` of the blob `digest`
    /// (its access log).
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.gets(&format!("/blobs/{digest} "))
    }

    /// GETs of `digest` from the repository `repo`.
    pub fn blob_gets_from(&self, repo: &str, digest: &str) -> usize {
        self.gets(&format!("/v2/{repo}/blobs/{digest} "))
    }

    fn gets(&self, needle: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap();
        log.lines()
            .filter(|l| l.contains("\"GET ") && l.contains(needle))
            .count()
    }

    /// The file the registry serves the blob `digest` from.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry now (a registry that went away).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
