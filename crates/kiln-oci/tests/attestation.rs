//! Attestations in BuildKit's layout: the index, the attestation manifest's
//! annotations and platform, the statements read back, and skopeo still
//! copying the image out of an archive that holds them.

mod common;

use std::process::Command;

use common::{stdout, store};
use kiln_oci::attestation::{self, Layout, Statement};
use kiln_oci::static_base::static_base;
use kiln_oci::{Compression, Digest};

fn statements() -> Vec<Statement> {
    vec![
        Statement {
            predicate_type: "https://spdx.dev/Document".into(),
            bytes: br#"{"_type":"https://in-toto.io/Statement/v1","predicate":{}}"#.to_vec(),
        },
        Statement {
            predicate_type: "https://slsa.dev/provenance/v1".into(),
            bytes: br#"{"_type":"https://in-toto.io/Statement/v1","predicate":{"p":1}}"#.to_vec(),
        },
    ]
}

#[test]
fn the_index_holds_the_image_and_its_attestation_manifest() {
    let (_dir, store) = store();
    let img = static_base(&store, 0, Compression::Gzip).unwrap();
    let att = attestation::attach(&store, &img, &statements(), Layout::Index).unwrap();
    let again = attestation::attach(&store, &img, &statements(), Layout::Index).unwrap();
    assert_eq!(att, again, "identical statements give identical digests");
    let index: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&att.index).unwrap()).unwrap();
    let m = index["manifests"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["digest"], img.digest.to_string());
    assert_eq!(m[0]["platform"]["os"], "linux");
    assert_eq!(m[1]["platform"]["architecture"], "unknown");
    assert_eq!(m[1]["platform"]["os"], "unknown");
    assert_eq!(
        m[1]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        m[1]["annotations"]["vnd.docker.reference.digest"],
        img.digest.to_string()
    );
    let am: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&att.attestation).unwrap()).unwrap();
    assert_eq!(am["layers"][0]["mediaType"], "application/vnd.in-toto+json");
    assert_eq!(
        am["layers"][0]["annotations"]["in-toto.io/predicate-type"],
        "https://spdx.dev/Document"
    );
    assert_eq!(
        attestation::statements_of(&store, &img.digest).unwrap(),
        statements()
    );
    let other = Digest::of(b"no such image");
    assert!(
        attestation::statements_of(&store, &other)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn referrers_name_the_image_as_subject() {
    let (_dir, store) = store();
    let img = static_base(&store, 0, Compression::Gzip).unwrap();
    let att = attestation::attach(&store, &img, &statements(), Layout::Referrers).unwrap();
    let am: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&att.attestation).unwrap()).unwrap();
    assert_eq!(am["subject"]["digest"], img.digest.to_string());
    assert_eq!(am["artifactType"], attestation::ARTIFACT_TYPE);
    assert_eq!(
        am["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        attestation::statements_of(&store, &img.digest).unwrap(),
        statements()
    );
}

#[test]
fn skopeo_copies_the_image_out_of_an_attested_archive() {
    let (dir, store) = store();
    let img = static_base(&store, 0, Compression::Gzip).unwrap();
    let att = attestation::attach(&store, &img, &statements(), Layout::Index).unwrap();
    let archive = dir.path().join("a.tar");
    let f = std::fs::File::create(&archive).unwrap();
    attestation::write_oci_archive(&store, &img, &att, Some("kiln/static:1"), f).unwrap();
    let raw = stdout(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}", archive.display()),
    ]));
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        v["manifests"][1]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    let layout = dir.path().join("copy");
    stdout(Command::new("skopeo").args([
        "copy",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}:x", layout.display()),
    ]));
    let v: serde_json::Value = serde_json::from_str(&stdout(
        Command::new("skopeo").args(["inspect", &format!("oci:{}:x", layout.display())]),
    ))
    .unwrap();
    assert_eq!(v["Digest"], img.digest.to_string());
}
