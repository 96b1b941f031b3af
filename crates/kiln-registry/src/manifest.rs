//! The manifest media types kiln speaks and the little it needs out of
//! them: child manifests of an index, the config and layers of an image.

use kiln_store::Digest;
use kiln_types::Algorithm;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header of manifest requests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests are small; anything bigger is refused rather than buffered.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// A blob reference: digest, size and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A child manifest of an index with its platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub blob: Blob,
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
}

impl Child {
    pub fn platform_string(&self) -> String {
        let mut s = format!(
            "{}/{}",
            self.os.as_deref().unwrap_or("?"),
            self.architecture.as_deref().unwrap_or("?")
        );
        if let Some(v) = &self.variant {
            s.push('/');
            s.push_str(v);
        }
        s
    }
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Index { children: Vec<Child> },
    Image { config: Blob, layers: Vec<Blob> },
}

/// Kinds of manifest by media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Image,
}

/// Classifies a media type; `Err` carries a hint for unsupported ones.
pub fn kind_of(media_type: &str) -> Result<Kind, String> {
    match media_type {
        OCI_INDEX | DOCKER_LIST => Ok(Kind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Kind::Image),
        m if DOCKER_SCHEMA1.contains(&m) => Err(
            " (docker schema 1 is deprecated and unsupported; re-push the image with a current tool)"
                .to_string(),
        ),
        _ => Err(String::new()),
    }
}

/// The media type a manifest declares, else the one its shape implies.
pub fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default, rename = "mediaType")]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    if let Some(m) = p.media_type.filter(|m| !m.is_empty()) {
        return Some(m);
    }
    if p.manifests.is_some() {
        Some(OCI_INDEX.to_string())
    } else if p.config.is_some() {
        Some(OCI_MANIFEST.to_string())
    } else {
        None
    }
}

fn blob(d: &Descriptor) -> Result<Blob, String> {
    let digest = Digest::try_from(d.digest()).map_err(|e| e.to_string())?;
    // The store names blobs by their sha256.
    if digest.algorithm() != Algorithm::Sha256 {
        return Err(format!(
            "blob {digest} is not named by its sha256: kiln keeps sha256 blobs only"
        ));
    }
    Ok(Blob {
        digest,
        size: d.size(),
        media_type: d.media_type().to_string(),
    })
}

/// Parses a manifest of a known kind.
pub fn parse(kind: Kind, bytes: &[u8]) -> Result<Manifest, String> {
    match kind {
        Kind::Index => {
            let idx = ImageIndex::from_reader(bytes).map_err(|e| format!("invalid index: {e}"))?;
            let children = idx
                .manifests()
                .iter()
                .map(|d| {
                    Ok(Child {
                        blob: blob(d)?,
                        os: d.platform().as_ref().map(|p| p.os().to_string()),
                        architecture: d.platform().as_ref().map(|p| p.architecture().to_string()),
                        variant: d.platform().as_ref().and_then(|p| p.variant().clone()),
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(Manifest::Index { children })
        }
        Kind::Image => {
            let m = ImageManifest::from_reader(bytes)
                .map_err(|e| format!("invalid image manifest: {e}"))?;
            Ok(Manifest::Image {
                config: blob(m.config())?,
                layers: m.layers().iter().map(blob).collect::<Result<_, String>>()?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_media_types() {
        assert_eq!(kind_of(OCI_INDEX), Ok(Kind::Index));
        assert_eq!(kind_of(DOCKER_LIST), Ok(Kind::Index));
        assert_eq!(kind_of(OCI_MANIFEST), Ok(Kind::Image));
        assert_eq!(kind_of(DOCKER_MANIFEST), Ok(Kind::Image));
        assert!(
            kind_of("application/vnd.docker.distribution.manifest.v1+prettyjws")
                .unwrap_err()
                .contains("schema 1")
        );
        assert_eq!(kind_of("text/html"), Err(String::new()));
        assert_eq!(
            media_type_of(br#"{"manifests": []}"#).as_deref(),
            Some(OCI_INDEX)
        );
        assert_eq!(
            media_type_of(br#"{"config": {}}"#).as_deref(),
            Some(OCI_MANIFEST)
        );
        assert_eq!(
            media_type_of(format!(r#"{{"mediaType": "{DOCKER_LIST}"}}"#).as_bytes()).as_deref(),
            Some(DOCKER_LIST)
        );
        assert_eq!(media_type_of(b"not json"), None);
        assert_eq!(media_type_of(b"{}"), None);
    }

    #[test]
    fn unsupported_digests_are_errors() {
        let m = br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
              "digest": "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"},
            "layers": []}"#;
        let err = parse(Kind::Image, m).unwrap_err();
        assert!(err.contains("sha256"), "{err}");
        assert!(
            parse(Kind::Index, b"{")
                .unwrap_err()
                .starts_with("invalid index")
        );
    }
}
