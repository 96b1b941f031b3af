//! Helpers shared by the end-to-end tests of the `kiln` binary.

use std::path::Path;
use std::process::Command;

/// Debian's podman as root, confined to `dir`: its own containers.conf
/// (runtime runc, as ../shared/PEERS.md says: crun refuses this machine's
/// hybrid cgroups), storage, run root and libpod tmpdir. The default
/// /run/libpod is shared with every other podman here, which made parallel
/// tests fail now and then.
pub fn podman(dir: &Path) -> Command {
    let conf = dir.join("containers.conf");
    if !conf.exists() {
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
    }
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", &conf)
        .arg("--root")
        .arg(dir.join("podman-root"))
        .arg("--runroot")
        .arg(dir.join("podman-run"))
        .arg("--tmpdir")
        .arg(dir.join("podman-tmp"))
        .args(["--storage-driver", "vfs"]);
    c
}
