//! Sources: what each `SourceOp` resolves to (scratch, the static base,
//! base images, local OCI layouts and archives, named contexts, Debian
//! package sets, the build context) and its cache key.

use kiln_dag::{Digest, SourceOp};
use kiln_oci::Image;

use crate::snapshot::{self, LayerRef, Ref};
use crate::{Error, ImageLookup, Inner, context, dag_digest, named, packages, select};

/// The cache key of the static base: what its content is a function of
/// (the DAG's `revision` changes with the content, see `SourceOp`), so the
/// key needs no synthesis: a build whose steps on the base are all hits
/// (a fresh runner importing a cache) never compresses it.
pub(crate) fn static_base_key(revision: u32, epoch: i64) -> Digest {
    Digest::of(
        format!(
            "kiln static base/r{revision}/epoch {epoch}/gzip/kiln {}",
            env!("CARGO_PKG_VERSION")
        )
        .as_bytes(),
    )
}

fn image_ref(img: &Image) -> Ref {
    Ref {
        layers: img.layers.iter().map(LayerRef::from_layer).collect(),
        config: Some(img.config_digest.to_string()),
    }
}

impl Inner {
    /// Resolves a source to its key and result.
    pub(crate) fn resolve_source(&self, src: &SourceOp) -> Result<(Digest, Ref), Error> {
        match src {
            SourceOp::Scratch => Ok((Digest::of(b"kiln scratch"), Ref::default())),
            SourceOp::StaticBase { revision } => {
                // Synthesizing the base compresses megabytes of zoneinfo and
                // certificates: do it once per revision and epoch.
                let rkey =
                    Digest::of(format!("static-base/{revision}/{}", self.opts.epoch).as_bytes());
                let known = self
                    .store
                    .get_record("static-base", rkey.as_bytes())
                    .map_err(|e| Error::Store(crate::chain(&e)))?
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| kiln_oci::Digest::parse(&s).ok())
                    .and_then(|d| Image::load(&self.store, &d).ok())
                    .filter(|img| image_ref(img).complete(&self.store));
                let key = static_base_key(*revision, self.opts.epoch);
                if let Some(img) = known {
                    return Ok((key, image_ref(&img)));
                }
                let img = kiln_oci::static_base(
                    &self.store,
                    self.opts.epoch,
                    kiln_oci::Compression::Gzip,
                )
                .map_err(|e| Error::StaticBase(crate::chain(&e)))?;
                self.store
                    .put_record(
                        "static-base",
                        rkey.as_bytes(),
                        img.digest.to_string().as_bytes(),
                    )
                    .map_err(|e| Error::Store(crate::chain(&e)))?;
                Ok((key, image_ref(&img)))
            }
            SourceOp::Image {
                reference,
                platform,
            } => {
                let img = match self.opts.named.get(reference) {
                    None => self.image(reference, platform.as_ref())?,
                    Some(ctx) => self.named_image(reference, ctx, platform.as_ref())?,
                };
                Ok((dag_digest(&img.digest)?, image_ref(&img)))
            }
            SourceOp::OciLayout { path, tag } => {
                let dir = self.opts.context.join(path);
                let img = kiln_oci::import_oci_layout(&self.store, &dir, tag.as_deref()).map_err(
                    |e| Error::Local {
                        path: dir.display().to_string(),
                        reason: e.to_string(),
                    },
                )?;
                Ok((dag_digest(&img.digest)?, image_ref(&img)))
            }
            SourceOp::OciArchive { path } => {
                let file = self.opts.context.join(path);
                let img = kiln_oci::import_oci_archive(&self.store, &file, None).map_err(|e| {
                    Error::Local {
                        path: file.display().to_string(),
                        reason: e.to_string(),
                    }
                })?;
                Ok((dag_digest(&img.digest)?, image_ref(&img)))
            }
            SourceOp::DebianPackages(op) => packages::resolve(
                &self.store,
                op,
                &self.opts.platform,
                &self.opts.context,
                self.opts.epoch,
                self.opts.lock.as_deref(),
            )
            .map_err(|e| Error::Packages(Box::new(e))),
            SourceOp::Context { .. } => {
                let root = &self.opts.context;
                let (key, entries) = self.context_key(src)?;
                // The layer is written once per distinct content.
                let rec = self
                    .store
                    .get_record("context-layer", key.as_bytes())
                    .map_err(|e| Error::Store(crate::chain(&e)))?
                    .and_then(|b| serde_json::from_slice::<Ref>(&b).ok())
                    .filter(|r| r.complete(&self.store));
                if let Some(r) = rec {
                    return Ok((key, r));
                }
                let store = &self.store;
                let werr = |reason: String| snapshot::SnapshotError::Write {
                    path: root.clone(),
                    reason,
                };
                let w = kiln_oci::LayerWriter::new(store, kiln_oci::Compression::Gzip)
                    .map_err(|e| werr(crate::chain(&e)))?;
                let w = context::write_tar(root, &entries, self.opts.epoch.max(0) as u64, w)?;
                let info = w.finish().map_err(|e| werr(crate::chain(&e)))?;
                let r = Ref {
                    layers: vec![LayerRef::from_layer(&info.into())],
                    config: None,
                };
                self.put_record("context-layer", &key, &r)?;
                Ok((key, r))
            }
        }
    }

    /// The key of a context source (the content of the files it selects,
    /// read through the stat cache) and those files; no layer is written.
    pub(crate) fn context_key(
        &self,
        src: &SourceOp,
    ) -> Result<(Digest, Vec<select::Entry>), Error> {
        let SourceOp::Context {
            include, exclude, ..
        } = src
        else {
            return Err(Error::Internal("context_key of another source".into()));
        };
        let root = &self.opts.context;
        let ignore = match self.ignore.get() {
            Some(p) => p,
            None => {
                let p = context::ignore_file(root)?;
                self.ignore.get_or_init(|| p)
            }
        };
        let sel =
            select::Selection::new(ignore.clone(), include, exclude, "the context's patterns")
                .map_err(context::ContextError::from)?;
        let entries = context::select(root, &sel)?;
        // The stat cache is per checkout path; the key is not.
        let skey = Digest::of(root.as_os_str().as_encoded_bytes());
        let before = self
            .store
            .get_record("context-stat", skey.as_bytes())
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut stats: context::StatCache = serde_json::from_slice(&before).unwrap_or_default();
        let key = context::digest_cached(root, &entries, &mut stats)?;
        if let Ok(b) = serde_json::to_vec(&stats)
            && b != before
        {
            // Losing the stat cache only costs re-reading files.
            let _ = self.store.put_record("context-stat", skey.as_bytes(), &b);
        }
        Ok((key, entries))
    }

    fn image(
        &self,
        reference: &str,
        platform: Option<&kiln_dag::Platform>,
    ) -> Result<Image, Error> {
        let lookup = ImageLookup {
            store: &self.store,
            pull: self.opts.pull,
            registry: &self.opts.registry,
            platform: &self.opts.platform,
            lock: self.opts.lock.as_deref(),
        };
        lookup.image(reference, platform)
    }

    /// The image a named context stands for.
    fn named_image(
        &self,
        reference: &str,
        ctx: &named::NamedContext,
        platform: Option<&kiln_dag::Platform>,
    ) -> Result<Image, Error> {
        let local = |path: &std::path::Path, e: kiln_oci::ImportError| Error::Local {
            path: path.display().to_string(),
            reason: format!("the named context `{reference}`: {}", crate::chain(&e)),
        };
        match ctx {
            named::NamedContext::Image(r) => self.image(&named::normalized(r), platform),
            named::NamedContext::OciLayout { path, tag } => {
                kiln_oci::import_oci_layout(&self.store, path, tag.as_deref())
                    .map_err(|e| local(path, e))
            }
            named::NamedContext::Dir(path) => kiln_oci::import_rootfs(
                &self.store,
                path,
                kiln_oci::Compression::Gzip,
                self.opts.epoch,
            )
            .map_err(|e| local(path, e)),
        }
    }
}
