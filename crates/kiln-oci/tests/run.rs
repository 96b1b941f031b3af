//! Images that actually run: a static binary copied onto the static base,
//! started by podman (runc) from an OCI archive and by runc from a umoci
//! bundle, printing what it should.

mod common;

use std::process::Command;

use common::{Podman, is_root, run, stdout, store};
use kiln_oci::import::rootfs_dir_layer;
use kiln_oci::{Compression, OutputSpec, export, static_base};

fn app_on_static_base(dir: &std::path::Path, store: &kiln_oci::Store) -> kiln_oci::Image {
    let app = dir.join("app");
    std::fs::create_dir_all(app.join("usr/local/bin")).unwrap();
    std::fs::copy("/bin/busybox", app.join("usr/local/bin/busybox")).unwrap();
    let mut img = static_base::new_image(store, 0, Compression::Gzip).unwrap();
    let layer = rootfs_dir_layer(store, &app, Compression::Gzip, 0).unwrap();
    img.push_layer(layer, "copy busybox /usr/local/bin/busybox");
    img.config
        .set_entrypoint(Some(vec!["/usr/local/bin/busybox".into()]));
    img.config.set_cmd(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo hi from $(id -u) in $(pwd)".into(),
    ]));
    img.commit(store).unwrap()
}

#[test]
fn podman_runs_static_binary_on_static_base() {
    assert!(
        is_root(),
        "podman with runc needs root here (CI runs as root)"
    );
    let (dir, store) = store();
    let img = app_on_static_base(dir.path(), &store);
    let archive = dir.path().join("app.tar");
    let spec: OutputSpec = format!("type=oci,dest={},name=kiln-test/app:1", archive.display())
        .parse()
        .unwrap();
    export(&store, &img, &spec).unwrap();
    let podman = Podman::new();
    let out = stdout(
        podman
            .cmd()
            .args(["run", "--rm", "--network", "none"])
            .arg(format!("oci-archive:{}", archive.display())),
    );
    assert_eq!(out, "hi from 65532 in /home/nonroot\n");
    // The CA bundle and time zones are where programs look for them.
    let out = stdout(podman.cmd().args(["run", "--rm", "--network", "none"]).arg(format!("oci-archive:{}", archive.display())).args([
        "sh",
        "-c",
        "grep -c BEGIN $SSL_CERT_FILE >/dev/null && TZ=/usr/share/zoneinfo/Asia/Tokyo date -d @0 +%H && ls -ld /tmp",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "09", "{out}");
    assert!(lines[1].starts_with("drwxrwxrwt"), "{out}");
}

#[test]
fn runc_runs_umoci_bundle_of_static_base_app() {
    assert!(is_root(), "runc as root (CI runs as root)");
    let (dir, store) = store();
    let img = app_on_static_base(dir.path(), &store);
    let layout = dir.path().join("layout");
    export(
        &store,
        &img,
        &format!("type=oci-layout,dest={},name=app:v1", layout.display())
            .parse()
            .unwrap(),
    )
    .unwrap();
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:v1", layout.display())])
        .arg(&bundle));
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["terminal"] = false.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let id = format!("kiln-oci-test-{}", std::process::id());
    let out = stdout(Command::new("runc").args(["run", &id]).current_dir(&bundle));
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .output();
    assert_eq!(out, "hi from 65532 in /home/nonroot\n");
}
