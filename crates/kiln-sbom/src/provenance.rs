//! SLSA v1 provenance (slsa.dev/provenance/v1), laid out as BuildKit lays
//! its own out (docs/attestations/slsa-definitions.md in BuildKit), so
//! `buildx imagetools inspect --format '{{json .Provenance}}'` reads it:
//! `buildDefinition` (build type, external parameters: the build file and
//! the request; resolved dependencies) and `runDetails` (builder, metadata).
//!
//! `mode=min` keeps what BuildKit's min keeps: no build arg values (BuildKit
//! drops `build-arg:*` and `label:*` in min mode and marks the parameters
//! incomplete), no build steps. `mode=max` adds the build args, the steps
//! (vertex digests and names) and the builder's platform.
//!
//! Secrets: provenance takes build args only through [`BuildInputs`], and
//! [`predicate`] drops every arg whose name is a secret's id or whose value
//! equals a secret's value, so a secret passed both ways never appears.

use std::collections::BTreeMap;

use serde::Serialize;

/// BuildKit's `mode=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Min,
    Max,
}

pub const BUILD_TYPE: &str = "https://example.invalid/kiln/build/v1";

/// What the CLI knows about one build.
#[derive(Debug, Clone, Default)]
pub struct BuildInputs {
    /// the Kilnfile or Dockerfile, as given, and its sha256 (hex)
    pub file_path: String,
    pub file_sha256: String,
    /// `Kilnfile` or `Dockerfile`
    pub frontend: String,
    pub target: Option<String>,
    pub platform: String,
    /// `--build-arg` names and values (secrets are dropped by [`predicate`])
    pub build_args: BTreeMap<String, String>,
    /// the content digest of the build context
    pub context_digest: Option<String>,
    /// every registry image the build started from: reference and manifest digest
    pub base_images: Vec<(String, kiln_types::Digest)>,
    /// packages installed without `run`: name, version, Debian
    /// architecture, sha256 (hex) of the `.deb`
    pub debs: Vec<(String, String, String, String)>,
    /// the build's steps (mode=max): vertex digest and name (not whether
    /// they were cached: a rebuild describes the same image as the build
    /// that ran them)
    pub steps: Vec<(String, String)>,
    /// the host the build ran on
    pub builder_platform: String,
    /// seconds since the epoch
    pub started: i64,
    pub finished: i64,
}

/// Values that must never appear in provenance: `--secret` ids and values.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub ids: Vec<String>,
    pub values: Vec<Vec<u8>>,
}

impl Secrets {
    fn hides(&self, name: &str, value: &str) -> bool {
        self.ids.iter().any(|i| i == name)
            || self.values.iter().any(|v| {
                !v.is_empty() && value.as_bytes().windows(v.len()).any(|w| w == v.as_slice())
            })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Predicate {
    build_definition: BuildDefinition,
    run_details: RunDetails,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildDefinition {
    build_type: &'static str,
    external_parameters: ExternalParameters,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    internal_parameters: BTreeMap<String, serde_json::Value>,
    resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalParameters {
    config_source: ConfigSource,
    request: Request,
}

#[derive(Serialize)]
struct ConfigSource {
    digest: BTreeMap<String, String>,
    path: String,
}

#[derive(Serialize)]
struct Request {
    frontend: String,
    args: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceDescriptor {
    uri: String,
    digest: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunDetails {
    builder: Builder,
    metadata: Metadata,
}

#[derive(Serialize)]
struct Builder {
    id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    invocation_id: String,
    started_on: String,
    finished_on: String,
    #[serde(rename = "https://mobyproject.org/buildkit@v1#metadata")]
    completeness: BuildkitMetadata,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildkitMetadata {
    completeness: Completeness,
    reproducible: bool,
}

#[derive(Serialize)]
struct Completeness {
    request: bool,
    #[serde(rename = "resolvedDependencies")]
    resolved_dependencies: bool,
}

fn sha256_map(hex: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_string(), hex.to_string())])
}

/// The SLSA v1 predicate of a build, as JSON bytes.
pub fn predicate(
    b: &BuildInputs,
    secrets: &Secrets,
    mode: Mode,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut args = BTreeMap::new();
    if let Some(t) = &b.target {
        args.insert("target".to_string(), t.clone());
    }
    let mut request_complete = true;
    for (k, v) in &b.build_args {
        if secrets.hides(k, v) {
            request_complete = false;
            continue;
        }
        match mode {
            Mode::Max => {
                args.insert(format!("build-arg:{k}"), v.clone());
            }
            Mode::Min => request_complete = false,
        }
    }
    let mut deps: Vec<ResourceDescriptor> = b
        .base_images
        .iter()
        .map(|(r, d)| ResourceDescriptor {
            uri: format!("pkg:docker/{r}?platform={}", b.platform.replace('/', "%2F")),
            digest: BTreeMap::from([(d.algorithm().to_string(), d.hex())]),
            name: None,
        })
        .collect();
    if let Some(c) = &b.context_digest {
        deps.push(ResourceDescriptor {
            uri: "context".into(),
            digest: sha256_map(c.trim_start_matches("sha256:")),
            name: Some("context".into()),
        });
    }
    for (name, version, arch, sha) in &b.debs {
        deps.push(ResourceDescriptor {
            uri: crate::purl::purl(
                "deb",
                Some("debian"),
                name,
                Some(version),
                &[("arch", arch)],
            ),
            digest: sha256_map(sha),
            name: None,
        });
    }
    deps.push(ResourceDescriptor {
        uri: format!("pkg:cargo/kiln@{}", env!("CARGO_PKG_VERSION")),
        digest: BTreeMap::new(),
        name: Some("kiln".into()),
    });
    deps.sort_by(|a, b| a.uri.cmp(&b.uri));
    let mut internal = BTreeMap::new();
    if mode == Mode::Max {
        internal.insert(
            "builderPlatform".to_string(),
            serde_json::Value::String(b.builder_platform.clone()),
        );
        internal.insert(
            "steps".to_string(),
            serde_json::Value::Array(
                b.steps
                    .iter()
                    .map(|(d, n)| serde_json::json!({"vertex": d, "name": n}))
                    .collect(),
            ),
        );
    }
    args.insert("platform".to_string(), b.platform.clone());
    // the invocation is named by what it was asked, so the same build gets
    // the same id
    let invocation = {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        for part in [
            &b.file_sha256,
            &b.platform,
            b.target.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for (k, v) in &args {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..16])
    };
    let p = Predicate {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE,
            external_parameters: ExternalParameters {
                config_source: ConfigSource {
                    digest: sha256_map(&b.file_sha256),
                    path: b.file_path.clone(),
                },
                request: Request {
                    frontend: b.frontend.clone(),
                    args,
                },
            },
            internal_parameters: internal,
            resolved_dependencies: deps,
        },
        run_details: RunDetails {
            builder: Builder {
                id: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
            },
            metadata: Metadata {
                invocation_id: invocation,
                started_on: kiln_oci::rfc3339(b.started),
                finished_on: kiln_oci::rfc3339(b.finished),
                completeness: BuildkitMetadata {
                    completeness: Completeness {
                        request: request_complete,
                        resolved_dependencies: true,
                    },
                    reproducible: true,
                },
            },
        },
    };
    serde_json::to_vec(&p)
}
