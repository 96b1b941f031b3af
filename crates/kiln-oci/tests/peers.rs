//! Outputs checked by the ecosystem's own tools: skopeo, umoci, podman.

mod common;

use std::process::Command;

use common::{Podman, is_root, run, stdout, store};
use kiln_oci::static_base::static_base;
use kiln_oci::{Compression, OutputSpec, export};

fn spec(s: &str) -> OutputSpec {
    s.parse().unwrap()
}

#[test]
fn skopeo_inspects_and_copies_every_archive_type() {
    let (dir, store) = store();
    let d = dir.path();
    let img = static_base(&store, 0, Compression::Gzip).unwrap();
    let oci = d.join("static.tar");
    let docker = d.join("static-docker.tar");
    let layout = d.join("layout");
    export(
        &store,
        &img,
        &spec(&format!(
            "type=oci,dest={},name=kiln/static:1",
            oci.display()
        )),
    )
    .unwrap();
    export(
        &store,
        &img,
        &spec(&format!(
            "type=docker,dest={},name=kiln/static:1",
            docker.display()
        )),
    )
    .unwrap();
    export(
        &store,
        &img,
        &spec(&format!(
            "type=oci-layout,dest={},name=kiln/static:1",
            layout.display()
        )),
    )
    .unwrap();

    for src in [
        format!("oci-archive:{}", oci.display()),
        format!("oci:{}:1", layout.display()),
        format!("docker-archive:{}", docker.display()),
    ] {
        let v: serde_json::Value =
            serde_json::from_str(&stdout(Command::new("skopeo").args(["inspect", &src]))).unwrap();
        let host = kiln_types::Platform::host();
        assert_eq!(v["Architecture"], host.architecture, "{src}");
        assert_eq!(v["Os"], "linux");
        assert_eq!(v["Created"], "1970-01-01T00:00:00Z");
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
        if !src.starts_with("docker-archive") {
            // The OCI outputs carry kiln's manifest byte for byte.
            assert_eq!(v["Digest"], img.digest.to_string(), "{src}");
        }
        // skopeo copy reads every blob and checks every digest.
        let copy = d.join(format!("copy-{}", src.split(':').next().unwrap()));
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &src,
            &format!("oci:{}:x", copy.display()),
        ]));
        let raw = stdout(Command::new("skopeo").args([
            "inspect",
            "--config",
            &format!("oci:{}:x", copy.display()),
        ]));
        let cfg: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(cfg["config"]["User"], "65532", "{src}");
        assert_eq!(cfg["config"]["WorkingDir"], "/home/nonroot");
    }
}

#[test]
fn umoci_unpacks_static_base_with_modes_and_owners() {
    let (dir, store) = store();
    let d = dir.path();
    let img = static_base(&store, 0, Compression::Gzip).unwrap();
    let layout = d.join("layout");
    export(
        &store,
        &img,
        &spec(&format!("type=oci-layout,dest={}", layout.display())),
    )
    .unwrap();
    let bundle = d.join("bundle");
    let mut cmd = Command::new("umoci");
    cmd.args(["unpack", "--image", &format!("{}:latest", layout.display())]);
    if !is_root() {
        cmd.arg("--rootless");
    }
    run(cmd.arg(&bundle));
    let listing = common::tree_listing(&bundle.join("rootfs"));
    let find = |p: &str| {
        listing
            .iter()
            .find(|l| l.split(' ').next() == Some(p))
            .unwrap_or_else(|| panic!("{p} not unpacked"))
            .clone()
    };
    let owner = |u: &str| {
        if is_root() {
            u.to_owned()
        } else {
            String::new()
        }
    };
    assert!(
        find("tmp").starts_with(&format!("tmp 1777 {}", owner("0:0"))),
        "{}",
        find("tmp")
    );
    assert!(find("root").starts_with("root 700 "), "{}", find("root"));
    assert!(
        find("home/nonroot").starts_with(&format!("home/nonroot 700 {}", owner("65532:65532"))),
        "{}",
        find("home/nonroot")
    );
    assert!(
        find("etc/passwd").starts_with("etc/passwd 644 "),
        "{}",
        find("etc/passwd")
    );
    assert!(find("etc/ssl/certs/ca-certificates.crt").contains(" file size="));
    assert!(find("var/run").ends_with("symlink->/run"));
    // Hard-linked zone aliases stay links.
    assert!(
        find("usr/share/zoneinfo/UTC").contains("nlink="),
        "{}",
        find("usr/share/zoneinfo/UTC")
    );
    assert!(!find("usr/share/zoneinfo/UTC").contains("nlink=1"));
    // The runtime config umoci generates follows the image config.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["cwd"], "/home/nonroot");
    if is_root() {
        assert_eq!(cfg["process"]["user"]["uid"], 65532);
    }
}

#[test]
fn podman_loads_docker_archive() {
    let (dir, store) = store();
    let img = static_base(&store, 0, Compression::Gzip).unwrap();
    let docker = dir.path().join("static-docker.tar");
    export(
        &store,
        &img,
        &spec(&format!(
            "type=docker,dest={},name=kiln-test/static:7",
            docker.display()
        )),
    )
    .unwrap();
    let podman = Podman::new();
    let out = stdout(podman.cmd().args(["load", "-i"]).arg(&docker));
    assert!(out.contains("kiln-test/static:7"), "{out}");
    let inspect = stdout(
        podman
            .cmd()
            .args(["image", "inspect", "kiln-test/static:7"]),
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Config"]["User"], "65532");
    assert_eq!(
        v[0]["RootFS"]["Layers"][0],
        img.layers[0].diff_id.to_string()
    );
}

#[test]
fn oci_archive_and_layout_import_back_to_the_same_image() {
    let (dir, store) = store();
    let d = dir.path();
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let img = static_base(&store, 0, c).unwrap();
        let oci = d.join(format!("static-{c}.tar"));
        export(
            &store,
            &img,
            &spec(&format!("type=oci,dest={}", oci.display())),
        )
        .unwrap();
        let layout = d.join(format!("layout-{c}"));
        export(
            &store,
            &img,
            &spec(&format!(
                "type=oci-layout,dest={},name=a:1",
                layout.display()
            )),
        )
        .unwrap();
        let (_d2, fresh) = common::store();
        let back = kiln_oci::import_oci_archive(&fresh, &oci, None).unwrap();
        assert_eq!(back.digest, img.digest);
        for l in &back.layers {
            fresh.verify_blob(&l.digest).unwrap();
        }
        let (_d3, fresh) = common::store();
        let back = kiln_oci::import_oci_layout(&fresh, &layout, Some("1")).unwrap();
        assert_eq!(back.digest, img.digest);
        let err = kiln_oci::import_oci_layout(&fresh, &layout, Some("nope")).unwrap_err();
        assert!(
            err.to_string().contains("has no image named `nope`"),
            "{err}"
        );
    }
    // Two exports of the same image are byte-identical files.
    let img = static_base(&store, 0, Compression::Gzip).unwrap();
    let a = d.join("a.tar");
    let b = d.join("b.tar");
    export(
        &store,
        &img,
        &spec(&format!("type=oci,dest={}", a.display())),
    )
    .unwrap();
    export(
        &store,
        &img,
        &spec(&format!("type=oci,dest={}", b.display())),
    )
    .unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn import_refuses_a_damaged_archive_blob() {
    let (dir, store) = store();
    let img = static_base(&store, 0, Compression::None).unwrap();
    let layout = dir.path().join("layout");
    export(
        &store,
        &img,
        &spec(&format!("type=oci-layout,dest={}", layout.display())),
    )
    .unwrap();
    let blob = layout.join("blobs/sha256").join(img.layers[0].digest.hex());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let (_d2, fresh) = common::store();
    let err = kiln_oci::import_oci_layout(&fresh, &layout, None).unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("is missing or damaged"), "{chain}");
    assert!(chain.contains("content digest mismatch"), "{chain}");
    assert!(!fresh.has_blob(&img.layers[0].digest));
}

#[test]
fn oci_layout_collects_several_images_by_tag() {
    let (dir, store) = store();
    let layout = dir.path().join("layout");
    let gz = static_base(&store, 0, Compression::Gzip).unwrap();
    let zst = static_base(&store, 0, Compression::Zstd).unwrap();
    let later = static_base(&store, 86_400, Compression::Gzip).unwrap();
    let to = |name: &str| {
        spec(&format!(
            "type=oci-layout,dest={},name={name}",
            layout.display()
        ))
    };
    export(&store, &gz, &to("base:gzip")).unwrap();
    export(&store, &zst, &to("base:zstd")).unwrap();
    export(&store, &later, &to("base:gzip")).unwrap(); // replaces the first
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    for (tag, img) in [("gzip", &later), ("zstd", &zst)] {
        let v: serde_json::Value = serde_json::from_str(&stdout(
            Command::new("skopeo").args(["inspect", &format!("oci:{}:{tag}", layout.display())]),
        ))
        .unwrap();
        assert_eq!(v["Digest"], img.digest.to_string(), "{tag}");
    }
    let back = kiln_oci::import_oci_layout(&store, &layout, Some("base:zstd")).unwrap();
    assert_eq!(
        back.digest, zst.digest,
        "found by io.containerd.image.name too"
    );
    let err = kiln_oci::import_oci_layout(&store, &layout, None).unwrap_err();
    assert!(err.to_string().contains("holds 2 images"), "{err}");
}
