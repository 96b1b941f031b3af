//! CycloneDX 1.6 JSON. Serde structs of our own: the Rust `cyclonedx-bom`
//! crate writes up to spec 1.5, and the few objects an image BOM needs
//! (metadata, components, dependencies) are small. `bom-ref`s are the SPDX
//! identifiers, so the two documents of one image can be matched up.

use serde::Serialize;

use crate::model::{Ecosystem, Element, Relation, Sbom};
use crate::spdx::{file_ids, package_ids};
use crate::{SbomError, TOOL_NAME, TOOL_VERSION};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    bom_format: &'static str,
    spec_version: &'static str,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
struct Metadata {
    timestamp: String,
    tools: Tools,
    component: Component,
}

#[derive(Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Serialize, Default)]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    bom_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supplier: Option<Supplier>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<LicenseChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Supplier {
    name: String,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

#[derive(Serialize)]
struct LicenseChoice {
    license: License,
}

#[derive(Serialize)]
struct License {
    name: String,
}

#[derive(Serialize)]
struct Property {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<String>,
}

/// Renders `sbom` as CycloneDX 1.6 JSON (pretty, fixed key order).
pub fn to_cyclonedx_json(sbom: &Sbom) -> Result<Vec<u8>, SbomError> {
    let pkg_ids = package_ids(sbom);
    let file_ids = file_ids(sbom);
    let image_ref = "image".to_string();
    let mut image = Component {
        kind: "container",
        bom_ref: Some(image_ref.clone()),
        name: sbom.subject.name.clone(),
        version: sbom.subject.digest.map(|d| d.to_string()),
        ..Default::default()
    };
    if let Some(d) = sbom.subject.digest {
        image.hashes.push(Hash {
            alg: "SHA-256",
            content: d.hex().to_string(),
        });
        image.purl = Some(crate::scan_purl_of_subject(&sbom.subject));
    }
    if let Some(p) = &sbom.subject.platform {
        image.properties.push(Property {
            name: "kiln:platform",
            value: p.clone(),
        });
    }
    let mut components = Vec::new();
    for (p, id) in sbom.packages.iter().zip(&pkg_ids) {
        let mut c = Component {
            kind: match p.ecosystem {
                Ecosystem::Stage | Ecosystem::Image => "container",
                Ecosystem::StaticBase => "data",
                _ => "library",
            },
            bom_ref: Some(id.clone()),
            supplier: p.supplier.clone().map(|name| Supplier { name }),
            name: p.name.clone(),
            version: p.version.clone(),
            description: p.comment.clone(),
            purl: p.purl.clone(),
            licenses: p
                .license
                .iter()
                .map(|l| LicenseChoice {
                    license: License { name: l.clone() },
                })
                .collect(),
            ..Default::default()
        };
        if let Some(s) = &p.sha256 {
            c.hashes.push(Hash {
                alg: "SHA-256",
                content: s.clone(),
            });
        }
        if let Some(l) = &p.location {
            c.properties.push(Property {
                name: "kiln:location",
                value: l.clone(),
            });
        }
        components.push(c);
    }
    for (f, id) in sbom.files.iter().zip(&file_ids) {
        components.push(Component {
            kind: "file",
            bom_ref: Some(id.clone()),
            name: f.path.clone(),
            hashes: vec![
                Hash {
                    alg: "SHA-1",
                    content: f.sha1.clone(),
                },
                Hash {
                    alg: "SHA-256",
                    content: f.sha256.clone(),
                },
            ],
            ..Default::default()
        });
    }
    let el = |e: &Element| match e {
        Element::Image => image_ref.clone(),
        Element::Package(i) => pkg_ids[*i].clone(),
        Element::File(i) => file_ids[*i].clone(),
    };
    // CycloneDX has one dependency graph: the image depends on what it
    // contains, a binary on the module it was built from, a module on its
    // dependencies
    let mut graph: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    graph.insert(image_ref.clone(), Vec::new());
    for c in &components {
        if let Some(r) = &c.bom_ref {
            graph.entry(r.clone()).or_default();
        }
    }
    for (a, r, b) in &sbom.relations {
        match r {
            Relation::Contains | Relation::DependsOn | Relation::GeneratedFrom => {
                graph.entry(el(a)).or_default().push(el(b));
            }
        }
    }
    let dependencies = graph
        .into_iter()
        .map(|(reference, mut depends_on)| {
            depends_on.sort();
            depends_on.dedup();
            Dependency {
                reference,
                depends_on,
            }
        })
        .collect();
    let bom = Bom {
        bom_format: "CycloneDX",
        spec_version: "1.6",
        version: 1,
        metadata: Metadata {
            timestamp: kiln_oci::rfc3339(sbom.created),
            tools: Tools {
                components: vec![Component {
                    kind: "application",
                    name: TOOL_NAME.into(),
                    version: Some(TOOL_VERSION.into()),
                    ..Default::default()
                }],
            },
            component: image,
        },
        components,
        dependencies,
    };
    let mut out = serde_json::to_vec_pretty(&bom).map_err(SbomError::Json)?;
    out.push(b'\n');
    Ok(out)
}
