//! SPDX 2.3 JSON through `spdx-rs`' model. Identifiers are derived from
//! the content (ecosystem, name, version, location), not counters, so a
//! package keeps its `SPDXID` when others come and go; the document
//! namespace is derived from the whole document's content, which SPDX asks
//! to be unique per document.

use spdx_rs::models::{
    Algorithm, Checksum, CreationInfo, DocumentCreationInformation, ExternalPackageReference,
    ExternalPackageReferenceCategory, FileInformation, FileType, PackageInformation,
    PrimaryPackagePurpose, Relationship, RelationshipType, SPDX,
};

use crate::model::{Ecosystem, Element, Relation, Sbom};
use crate::{SbomError, TOOL};

const IMAGE_ID: &str = "SPDXRef-Image";

/// `[A-Za-z0-9.-]` only, as SPDX identifiers allow.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn short_hash(parts: &[&str]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..6])
}

fn ecosystem_name(e: Ecosystem) -> &'static str {
    match e {
        Ecosystem::StaticBase => "static-base",
        Ecosystem::Deb => "deb",
        Ecosystem::Golang => "golang",
        Ecosystem::Cargo => "cargo",
        Ecosystem::Pypi => "pypi",
        Ecosystem::Npm => "npm",
        Ecosystem::Stage => "stage",
        Ecosystem::Image => "image",
    }
}

pub(crate) fn package_ids(sbom: &Sbom) -> Vec<String> {
    sbom.packages
        .iter()
        .map(|p| {
            let eco = ecosystem_name(p.ecosystem);
            format!(
                "SPDXRef-Package-{eco}-{}-{}",
                id_part(&p.name),
                short_hash(&[
                    eco,
                    &p.name,
                    p.version.as_deref().unwrap_or(""),
                    p.location.as_deref().unwrap_or("")
                ])
            )
        })
        .collect()
}

pub(crate) fn file_ids(sbom: &Sbom) -> Vec<String> {
    sbom.files
        .iter()
        .map(|f| format!("SPDXRef-File-{}", short_hash(&[&f.path])))
        .collect()
}

/// SPDX's supplier form: `Organization: NAME (EMAIL)` from `NAME <EMAIL>`.
fn supplier(s: &str) -> String {
    let s = s.trim();
    match s.split_once('<') {
        Some((name, mail)) => format!(
            "Organization: {} ({})",
            name.trim(),
            mail.trim_end_matches('>').trim()
        ),
        None => format!("Organization: {s}"),
    }
}

/// Renders `sbom` as SPDX 2.3 JSON (pretty, fixed key order).
pub fn to_spdx_json(sbom: &Sbom) -> Result<Vec<u8>, SbomError> {
    let pkg_ids = package_ids(sbom);
    let file_ids = file_ids(sbom);
    let created =
        chrono::DateTime::from_timestamp(sbom.created, 0).ok_or(SbomError::Epoch(sbom.created))?;
    let mut image = PackageInformation {
        package_name: sbom.subject.name.clone(),
        package_spdx_identifier: IMAGE_ID.into(),
        package_version: sbom.subject.digest.map(|d| d.to_string()),
        package_download_location: "NOASSERTION".into(),
        // the image CONTAINS its executables, which SPDX allows only for a
        // package whose files were analyzed
        files_analyzed: Some(!sbom.files.is_empty()),
        primary_package_purpose: Some(PrimaryPackagePurpose::Container),
        package_comment: sbom
            .subject
            .platform
            .as_ref()
            .map(|p| format!("platform {p}")),
        ..Default::default()
    };
    if let Some(d) = sbom.subject.digest {
        image.package_checksum = vec![Checksum::new(Algorithm::SHA256, &d.hex())];
        image.external_reference.push(ExternalPackageReference::new(
            ExternalPackageReferenceCategory::PackageManager,
            "purl".into(),
            crate::scan_purl_of_subject(&sbom.subject),
            None,
        ));
    }
    let mut packages = vec![image];
    for (p, id) in sbom.packages.iter().zip(&pkg_ids) {
        let mut info = PackageInformation {
            package_name: p.name.clone(),
            package_spdx_identifier: id.clone(),
            package_version: p.version.clone(),
            package_download_location: "NOASSERTION".into(),
            files_analyzed: Some(false),
            package_supplier: p.supplier.as_deref().map(supplier),
            comments_on_license: p.license.as_ref().map(|l| format!("declared: {l}")),
            source_information: p.location.as_ref().map(|l| format!("found in `{l}`")),
            package_comment: p.comment.clone(),
            primary_package_purpose: Some(match p.ecosystem {
                Ecosystem::Stage | Ecosystem::Image => PrimaryPackagePurpose::Container,
                Ecosystem::StaticBase => PrimaryPackagePurpose::Other,
                _ => PrimaryPackagePurpose::Library,
            }),
            ..Default::default()
        };
        if let Some(s) = &p.sha256 {
            info.package_checksum = vec![Checksum::new(Algorithm::SHA256, s)];
        }
        if let Some(purl) = &p.purl {
            info.external_reference.push(ExternalPackageReference::new(
                ExternalPackageReferenceCategory::PackageManager,
                "purl".into(),
                purl.clone(),
                None,
            ));
        }
        packages.push(info);
    }
    let files = sbom
        .files
        .iter()
        .zip(&file_ids)
        .map(|(f, id)| FileInformation {
            // SPDX file names are relative to the package root: `./usr/bin/x`
            file_name: format!(".{}", f.path),
            file_spdx_identifier: id.clone(),
            file_type: vec![FileType::Binary, FileType::Application],
            file_checksum: vec![
                Checksum::new(Algorithm::SHA1, &f.sha1),
                Checksum::new(Algorithm::SHA256, &f.sha256),
            ],
            ..Default::default()
        })
        .collect();
    let el = |e: &Element| match e {
        Element::Image => IMAGE_ID.to_string(),
        Element::Package(i) => pkg_ids[*i].clone(),
        Element::File(i) => file_ids[*i].clone(),
    };
    let mut relationships = vec![Relationship::new(
        "SPDXRef-DOCUMENT",
        IMAGE_ID,
        RelationshipType::Describes,
        None,
    )];
    for (a, r, b) in &sbom.relations {
        let t = match r {
            Relation::Contains => RelationshipType::Contains,
            Relation::DependsOn => RelationshipType::DependsOn,
            Relation::GeneratedFrom => RelationshipType::GeneratedFrom,
        };
        relationships.push(Relationship::new(&el(a), &el(b), t, None));
    }
    let mut doc = SPDX {
        document_creation_information: DocumentCreationInformation {
            spdx_version: "SPDX-2.3".into(),
            data_license: "CC0-1.0".into(),
            spdx_identifier: "SPDXRef-DOCUMENT".into(),
            document_name: sbom.subject.name.clone(),
            spdx_document_namespace: String::new(),
            external_document_references: Vec::new(),
            creation_info: CreationInfo {
                license_list_version: None,
                creators: vec![format!("Tool: {TOOL}")],
                created,
                creator_comment: None,
            },
            document_comment: None,
            document_describes: Vec::new(),
        },
        package_information: packages,
        other_licensing_information_detected: Vec::new(),
        file_information: files,
        snippet_information: Vec::new(),
        relationships,
        annotations: Vec::new(),
        spdx_ref_counter: 0,
    };
    // the namespace names this document's content, so it is unique per
    // document and the same for the same image
    let body = serde_json::to_vec(&doc).map_err(SbomError::Json)?;
    let ns = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    doc.document_creation_information.spdx_document_namespace = format!(
        "https://example.invalid/kiln/spdx/{}-{ns}",
        id_part(&sbom.subject.name)
    );
    let mut out = serde_json::to_vec_pretty(&doc).map_err(SbomError::Json)?;
    out.push(b'\n');
    Ok(out)
}
