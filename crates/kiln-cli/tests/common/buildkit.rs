//! BuildKit v0.32.2 from `../shared/peers/buildkit/`, started by a test as
//! root with the runc worker, its own root and socket in a temp dir, and
//! docker.io mirrored to a loopback registry; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the peers live: `../shared/peers/buildkit/` from the project root.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/buildkit")
}

pub struct Buildkitd {
    pub sock: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Buildkitd {
    /// buildkitd with `docker.io` pulled from `mirror` (`127.0.0.1:PORT`,
    /// plain HTTP).
    pub fn start(mirror: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let sock = format!("unix://{}", dir.path().join("buildkitd.sock").display());
        let config = format!(
            "root = \"{}\"\n[grpc]\n  address = [\"{sock}\"]\n[worker.oci]\n  enabled = true\n  binary = \"runc\"\n  snapshotter = \"overlayfs\"\n[worker.containerd]\n  enabled = false\n[registry.\"docker.io\"]\n  mirrors = [\"{mirror}\"]\n[registry.\"{mirror}\"]\n  http = true\n",
            root.display()
        );
        let cfg = dir.path().join("buildkitd.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("buildkitd.log")).unwrap();
        let child = Command::new(peers_dir().join("buildkitd"))
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start buildkitd");
        let bk = Buildkitd {
            sock,
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut bk = bk;
        loop {
            let o = bk.run(&["debug", "workers"]);
            if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("linux/amd64") {
                break;
            }
            if let Some(Ok(Some(st))) = bk.child.as_mut().map(|c| c.try_wait()) {
                panic!("buildkitd exited: {st}\n{}", bk.log());
            }
            assert!(
                Instant::now() < deadline,
                "buildkitd did not come up:\n{}",
                bk.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        bk
    }

    /// `buildctl --addr SOCK`.
    pub fn buildctl(&self) -> Command {
        let mut c = Command::new(peers_dir().join("buildctl"));
        c.arg("--addr").arg(&self.sock);
        c
    }

    /// `buildctl --addr SOCK ARGS`, run to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.buildctl().args(args).output().expect("run buildctl")
    }

    /// `buildctl build` with the Dockerfile frontend on `context`, the OCI
    /// archive written to `dest`; `extra` are more buildctl flags.
    pub fn build_dockerfile(&self, context: &Path, dest: &Path, extra: &[String]) -> Output {
        self.buildctl()
            .arg("build")
            .args(["--frontend", "dockerfile.v0", "--progress", "plain"])
            .arg(format!("--local=context={}", context.display()))
            .arg(format!("--local=dockerfile={}", context.display()))
            .args(extra)
            .arg(format!("--output=type=oci,dest={}", dest.display()))
            .output()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("buildkitd.log")).unwrap_or_default()
    }
}

impl Drop for Buildkitd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM lets it unmount its snapshots
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
