//! The image model: a manifest, its config and its layers, all in the store.

use std::collections::BTreeMap;

use kiln_store::{Digest, DigestError, Store, StoreError};
use oci_spec::image::{
    Arch, Config, Descriptor, History, ImageConfiguration, ImageManifest, MediaType, Os, RootFs,
};

use crate::compression::LayerInfo;
use crate::json::canonical_json;
use crate::reference;

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Errors of loading, resolving and committing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no local image named `{name}`; see `kiln images` for what is there")]
    UnknownName { name: String },
    #[error("manifest {digest} is not in the local store")]
    MissingManifest { digest: Digest },
    #[error("store error while reading image {digest}")]
    Store {
        digest: Digest,
        #[source]
        source: StoreError,
    },
    #[error("store error while writing image")]
    Write(#[source] StoreError),
    #[error("manifest {digest} is not a valid image manifest: {reason}")]
    BadManifest { digest: Digest, reason: String },
    #[error("config {digest} of image {manifest} is not a valid image config: {reason}")]
    BadConfig {
        manifest: Digest,
        digest: Digest,
        reason: String,
    },
    #[error("image {manifest} names an invalid digest: {source}")]
    BadDigest {
        manifest: Digest,
        #[source]
        source: DigestError,
    },
    #[error("image {manifest} has {layers} layers but its config lists {diff_ids} diff ids")]
    LayerCount {
        manifest: Digest,
        layers: usize,
        diff_ids: usize,
    },
    #[error("invalid SOURCE_DATE_EPOCH `{0}`: expected a non-negative number of seconds")]
    BadEpoch(String),
    #[error("the multi-platform image {index} has no image for {platform} (it has {platforms})")]
    NoPlatform {
        index: Digest,
        platform: kiln_types::Platform,
        platforms: String,
    },
    #[error("cannot store tag `{name}`")]
    Tag {
        name: String,
        #[source]
        source: StoreError,
    },
}

type Result<T, E = ImageError> = std::result::Result<T, E>;

/// One layer of an image as the manifest and config describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

impl From<LayerInfo> for Layer {
    fn from(l: LayerInfo) -> Self {
        Self {
            digest: l.digest,
            size: l.size,
            media_type: l.media_type,
            diff_id: l.diff_id,
        }
    }
}

/// An image whose manifest, config and layers are in the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// digest of the manifest blob: the image's identity
    pub digest: Digest,
    /// size of the manifest blob
    pub manifest_size: u64,
    /// media type of the manifest (OCI or Docker schema 2)
    pub media_type: String,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    pub layers: Vec<Layer>,
}

impl Image {
    /// Loads the image whose manifest has `digest`.
    pub fn load(store: &Store, digest: &Digest) -> Result<Self> {
        let serr = |source| ImageError::Store {
            digest: *digest,
            source,
        };
        if !store.has_blob(digest) {
            return Err(ImageError::MissingManifest { digest: *digest });
        }
        let bytes = store.read_blob(digest).map_err(serr)?;
        Self::from_manifest_bytes(store, digest, &bytes)
    }

    pub(crate) fn from_manifest_bytes(
        store: &Store,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<Self> {
        let bad = |reason: String| ImageError::BadManifest {
            digest: *digest,
            reason,
        };
        let manifest: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let media_type = match manifest.media_type() {
            Some(m) => m.to_string(),
            None => {
                // The field is optional in OCI; a Docker manifest always has it.
                MEDIA_MANIFEST.to_owned()
            }
        };
        if media_type == MEDIA_INDEX || media_type == MEDIA_DOCKER_LIST {
            return Err(bad("it is an index, not an image manifest".into()));
        }
        let pdigest = |d: &oci_spec::image::Digest| {
            Digest::try_from(d).map_err(|source| ImageError::BadDigest {
                manifest: *digest,
                source,
            })
        };
        let config_digest = pdigest(manifest.config().digest())?;
        let config_bytes = store
            .read_blob(&config_digest)
            .map_err(|source| ImageError::Store {
                digest: config_digest,
                source,
            })?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| ImageError::BadConfig {
                manifest: *digest,
                digest: config_digest,
                reason: e.to_string(),
            })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::LayerCount {
                manifest: *digest,
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers().iter().zip(diff_ids) {
            layers.push(Layer {
                digest: pdigest(desc.digest())?,
                size: desc.size(),
                media_type: desc.media_type().to_string(),
                diff_id: Digest::parse(diff_id).map_err(|source| ImageError::BadDigest {
                    manifest: *digest,
                    source,
                })?,
            });
        }
        Ok(Self {
            digest: *digest,
            manifest_size: bytes.len() as u64,
            media_type,
            manifest,
            config_digest,
            config,
            layers,
        })
    }

    /// Resolves a local name (a tag from `kiln images`, with the usual
    /// short-name forms) or a full `sha256:` manifest digest.
    pub fn resolve(store: &Store, name: &str) -> Result<Self> {
        if let Ok(d) = Digest::parse(name) {
            return Self::load_for_host(store, &d);
        }
        // `repo@sha256:...` pins the manifest; the repo part does not matter
        // for a content-addressed lookup.
        if let Some(d) = name
            .rsplit_once('@')
            .and_then(|(_, d)| Digest::parse(d).ok())
        {
            return Self::load(store, &d);
        }
        let tags = store.tags().map_err(ImageError::Write)?;
        for candidate in reference::candidates(name) {
            if let Some(d) = tags.get(&candidate) {
                return Self::load_for_host(store, d);
            }
        }
        Err(ImageError::UnknownName {
            name: name.to_owned(),
        })
    }

    /// Loads the image `digest` names; for a multi-platform index (what a
    /// `kiln build --platform a,b -t NAME` tags), this machine's image in it;
    /// for the index of one image and its attestations (what a build with
    /// attestations tags), that image, whatever its platform.
    pub fn load_for_host(store: &Store, digest: &Digest) -> Result<Self> {
        let host = kiln_types::Platform::host();
        match crate::index::Index::load(store, digest) {
            Ok(Some(index)) => match index.single().or_else(|| index.select(&host)) {
                Some(d) => Self::load(store, &d),
                None => Err(ImageError::NoPlatform {
                    index: *digest,
                    platform: host,
                    platforms: (index.platforms().iter())
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            },
            _ => Self::load(store, digest),
        }
    }

    /// Total bytes of manifest, config and layer blobs (what a push moves).
    pub fn size(&self) -> u64 {
        self.manifest_size
            + self.manifest.config().size()
            + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// A descriptor of this image's manifest, for indexes.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            MediaType::from(self.media_type.as_str()),
            self.manifest_size,
            oci_spec::image::Digest::from(self.digest),
        )
    }

    /// Stores `name` -> this image in the local tag index.
    pub fn tag(&self, store: &Store, name: &str) -> Result<()> {
        store
            .set_tag(name, &self.digest)
            .map(|_| ())
            .map_err(|source| ImageError::Tag {
                name: name.to_owned(),
                source,
            })
    }
}

/// `SOURCE_DATE_EPOCH` from the environment, 0 when unset or empty.
pub fn source_date_epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or(ImageError::BadEpoch(s)),
        _ => Ok(0),
    }
}

/// RFC 3339 UTC form of `epoch` seconds (`1970-01-01T00:00:00Z`).
pub fn rfc3339(epoch: i64) -> String {
    jiff::Timestamp::from_second(epoch)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Everything needed to write a new image; [`NewImage::commit`] stores it.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// GOARCH, e.g. `amd64`
    pub architecture: String,
    pub variant: Option<String>,
    /// runtime config (user, env, entrypoint, ...)
    pub config: Config,
    pub layers: Vec<Layer>,
    /// one entry per layer and per config-only step, in order
    pub history: Vec<History>,
    /// config `created`, seconds since the epoch (SOURCE_DATE_EPOCH)
    pub created: i64,
    pub manifest_annotations: BTreeMap<String, String>,
    /// Fields of the runtime config beyond OCI's, as Docker writes them
    /// (`Healthcheck`, `OnBuild`, `Shell`): merged into `config` as given.
    pub docker_config: BTreeMap<String, serde_json::Value>,
}

impl NewImage {
    /// An empty image (like `scratch`) for this machine's architecture.
    pub fn scratch(created: i64) -> Self {
        Self {
            architecture: kiln_types::Platform::host().architecture,
            variant: None,
            config: Config::default(),
            layers: Vec::new(),
            history: Vec::new(),
            created,
            manifest_annotations: BTreeMap::new(),
            docker_config: BTreeMap::new(),
        }
    }

    /// Starts from an existing image: its layers, config and history.
    pub fn on_top_of(base: &Image, created: i64) -> Self {
        Self {
            architecture: base.config.architecture().to_string(),
            variant: base.config.variant().clone(),
            config: base.config.config().clone().unwrap_or_default(),
            layers: base.layers.clone(),
            history: base.config.history().clone().unwrap_or_default(),
            created,
            manifest_annotations: BTreeMap::new(),
            docker_config: BTreeMap::new(),
        }
    }

    /// Appends a layer with a history entry saying what made it.
    pub fn push_layer(&mut self, layer: impl Into<Layer>, created_by: &str) {
        self.layers.push(layer.into());
        let mut h = History::default();
        h.set_created(Some(rfc3339(self.created)));
        h.set_created_by(Some(created_by.to_owned()));
        h.set_comment(Some("kiln".to_owned()));
        self.history.push(h);
    }

    /// Writes config and manifest blobs (canonical JSON) and returns the image.
    /// Layer blobs must already be in the store.
    pub fn commit(&self, store: &Store) -> Result<Image> {
        let mut config = ImageConfiguration::default();
        config.set_created(Some(rfc3339(self.created)));
        config.set_architecture(Arch::from(self.architecture.as_str()));
        config.set_os(Os::Linux);
        config.set_variant(self.variant.clone());
        config.set_config(Some(self.config.clone()));
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(self.layers.iter().map(|l| l.diff_id.to_string()).collect());
        config.set_rootfs(rootfs);
        config.set_history(if self.history.is_empty() {
            None
        } else {
            Some(self.history.clone())
        });
        let config_bytes = if self.docker_config.is_empty() {
            canonical_json(&config)
        } else {
            let mut v = serde_json::to_value(&config).expect("an image config serializes");
            if let Some(c) = v.get_mut("config").and_then(|c| c.as_object_mut()) {
                for (k, x) in &self.docker_config {
                    c.insert(k.clone(), x.clone());
                }
            }
            canonical_json(&v)
        };
        let config_digest = store.put_blob(&config_bytes).map_err(ImageError::Write)?;

        let mut builder = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MediaType::ImageConfig,
                config_bytes.len() as u64,
                &config_digest,
            ))
            .layers(
                self.layers
                    .iter()
                    .map(|l| descriptor(MediaType::from(l.media_type.as_str()), l.size, &l.digest))
                    .collect::<Vec<_>>(),
            );
        if !self.manifest_annotations.is_empty() {
            builder = builder.annotations(
                self.manifest_annotations
                    .clone()
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        let manifest = builder
            .build()
            .expect("all required manifest fields are set");
        let bytes = canonical_json(&manifest);
        let digest = store.put_blob(&bytes).map_err(ImageError::Write)?;
        Image::from_manifest_bytes(store, &digest, &bytes)
    }
}

pub(crate) fn descriptor(media_type: MediaType, size: u64, digest: &Digest) -> Descriptor {
    Descriptor::new(media_type, size, oci_spec::image::Digest::from(digest))
}
