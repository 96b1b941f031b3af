//! The in-toto statement every attestation is wrapped in (what BuildKit
//! writes and buildx reads): `_type`, the subject (the image, by manifest
//! digest) and the predicate with its type.

use std::collections::BTreeMap;

use serde::Serialize;

/// The statement type BuildKit v0.32 writes.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";
pub const PREDICATE_CYCLONEDX: &str = "https://cyclonedx.org/bom";
pub const PREDICATE_SLSA1: &str = "https://slsa.dev/provenance/v1";

#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Statement<P: Serialize> {
    #[serde(rename = "_type")]
    pub kind: &'static str,
    #[serde(rename = "predicateType")]
    pub predicate_type: &'static str,
    pub subject: Vec<Subject>,
    pub predicate: P,
}

/// The subject BuildKit names: `pkg:docker/NAME@TAG?platform=OS%2FARCH`
/// (or the digest alone when the image has no name).
pub fn subject(name: Option<&str>, digest: &kiln_types::Digest, platform: &str) -> Subject {
    let plat = platform.replace('/', "%2F");
    let name = match name {
        Some(n) => {
            let (repo, tag) = match n.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t),
                _ => (n, "latest"),
            };
            format!("pkg:docker/{repo}@{tag}?platform={plat}")
        }
        None => format!("pkg:docker/{}?platform={plat}", digest.hex()),
    };
    Subject {
        name,
        digest: BTreeMap::from([(digest.algorithm().to_string(), digest.hex())]),
    }
}

/// Wraps a predicate (already JSON bytes, as the SBOM renderers give it)
/// into a statement, as canonical JSON bytes.
pub fn wrap(
    predicate_type: &'static str,
    subject: Subject,
    predicate: &[u8],
) -> Result<Vec<u8>, serde_json::Error> {
    let predicate: serde_json::Value = serde_json::from_slice(predicate)?;
    let st = Statement {
        kind: STATEMENT_TYPE,
        predicate_type,
        subject: vec![subject],
        predicate,
    };
    serde_json::to_vec(&st)
}
