//! Helpers shared by the end-to-end tests of the `kiln` binary.

// every test binary includes this module and uses a part of it
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub mod buildkit;
pub mod oci;
mod registry;
mod rootfs;
pub mod token;

// each test binary uses some of these
#[allow(unused_imports)]
pub use registry::Registry;
#[allow(unused_imports)]
pub use rootfs::{Busybox, GROUP_WITH_NOGROUP, PASSWD_WITH_APT, chown_kilntest};

/// The flags that turn the default attestations off.
pub const NO_ATTESTATIONS: [&str; 2] = ["--provenance=false", "--sbom=false"];

/// `args` with [`NO_ATTESTATIONS`] added to a `build` that does not say
/// them already: for tests about something else that compare plain
/// manifests (provenance carries each build's own times, and an attested
/// tag is an index).
pub fn without_attestations<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    if v.first() == Some(&"build") && !v.contains(&NO_ATTESTATIONS[0]) {
        v.extend(NO_ATTESTATIONS);
    }
    v
}

/// `kiln ARGS` in `dir` with the store `home`, no colours, and neither
/// SOURCE_DATE_EPOCH, KILN_LOG nor BUILDX_NO_DEFAULT_ATTESTATIONS from the
/// caller's environment.
pub fn kiln_command(home: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(args)
        .current_dir(dir)
        .env("KILN_HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS")
        .env_remove("KILN_LOG");
    c
}

/// [`kiln_command`] as the unprivileged `kilntest` (made by `.ci/setup`,
/// with a subordinate ID range) through setpriv; HOME is the store too.
pub fn kilntest_command(home: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=kilntest", "--regid=kilntest", "--init-groups"])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .env("KILN_HOME", home)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS")
        .env_remove("KILN_LOG");
    c
}

/// [`kilntest_command`] that must succeed: (stdout, stderr).
pub fn kilntest_ok(home: &Path, dir: &Path, args: &[&str]) -> (String, String) {
    let o = kilntest_command(home, dir, args)
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "kiln {args:?} as kilntest failed:\n{err}"
    );
    (String::from_utf8(o.stdout).unwrap(), err)
}

/// The trimmed stdout of a kiln run that must have succeeded.
pub fn expect_ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// `kiln ARGS` in `dir` with the store `dir/home`.
pub fn kiln_in(dir: &Path, args: &[&str]) -> Output {
    kiln_command(&dir.join("home"), dir, args)
        .output()
        .expect("run kiln")
}

/// [`kiln_in`] that must succeed: (stdout, stderr).
pub fn ok_in(dir: &Path, args: &[&str]) -> (String, String) {
    let o = kiln_in(dir, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "kiln {args:?} failed:\n{err}");
    (String::from_utf8(o.stdout).unwrap(), err)
}

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

/// `podman run --rm --network none` of the OCI archive `archive` with the
/// storage of [`podman`] in `dir`; what the container printed.
pub fn podman_run(dir: &Path, archive: &Path) -> String {
    let o = podman(dir)
        .args(["run", "--rm", "--network", "none"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .expect("run podman");
    assert!(
        o.status.success(),
        "podman run {} failed:\n{}",
        archive.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The rootfs of the Debian bookworm builder made by
/// `.ci/builder-image.sh` (debootstrap, cached under /var/cache/kiln-ci).
pub fn debian_builder_rootfs() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/builder-image.sh");
    let o = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        o.status.success(),
        "`{}` failed (it needs root and, on a cold cache, deb.debian.org):\n{}",
        script.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// The Debian builder as `REGISTRY/library/debian:bookworm`: the cached
/// debootstrap rootfs, `kiln import`ed into a scratch store and `kiln push`ed.
pub fn serve_debian_builder(reg: &Registry, scratch: &Path) {
    let rootfs = debian_builder_rootfs();
    assert!(
        Path::new(&rootfs).join("usr/bin/apt-get").exists(),
        "{rootfs}"
    );
    let home = scratch.join("import-home");
    let kiln = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_HOME", &home)
            .env_remove("KILN_REGISTRY_MIRROR")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "kiln {args:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    kiln(&["import", &rootfs, "-t", "debian-builder:bookworm"]);
    let dest = format!("{}/library/debian:bookworm", reg.addr);
    kiln(&["push", "-q", "debian-builder:bookworm", &dest]);
    // The import store is not needed any more: the builds pull.
    let _ = std::fs::remove_dir_all(&home);
}

/// Finished steps of the plain progress: (name, status) for the lines
/// `=> NAME CACHED` and `=> NAME done 1.23s`.
pub fn steps(stderr: &str) -> Vec<(String, String)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("=> "))
        .filter_map(|l| {
            if let Some(name) = l.strip_suffix(" CACHED") {
                return Some((name.to_string(), "CACHED".to_string()));
            }
            let (name, t) = l.rsplit_once(" done ")?;
            t.strip_suffix('s')?.parse::<f64>().ok()?;
            Some((name.to_string(), "done".to_string()))
        })
        .collect()
}

/// The image manifest under `top`: `top` itself, or for an index (a
/// multi-platform build's, or an image's with its attestation manifest,
/// which a build makes by default) its first image entry, whose platform is
/// not `unknown/unknown`; `read` gives a JSON blob by digest.
#[allow(dead_code)]
pub fn image_manifest(
    top: serde_json::Value,
    read: &dyn Fn(&str) -> serde_json::Value,
) -> serde_json::Value {
    let Some(entries) = top["manifests"].as_array() else {
        return top;
    };
    let e = entries
        .iter()
        .find(|m| m["platform"]["os"] != "unknown")
        .unwrap_or_else(|| panic!("no image entry in {top}"));
    image_manifest(read(e["digest"].as_str().unwrap()), read)
}

/// The (digest, size) of each layer an image manifest lists.
pub fn manifest_layers(manifest: &serde_json::Value) -> Vec<(String, u64)> {
    manifest["layers"]
        .as_array()
        .expect("a manifest with layers")
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}
