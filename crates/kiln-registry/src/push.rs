//! Push: blobs first (skipped when the registry has them, mounted from
//! another repository of the same registry when possible, else uploaded
//! whole or in `PATCH` chunks), then manifests, then tags.

use std::io::Read;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use kiln_store::Digest;
use kiln_types::Reference;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};

use crate::client::{Client, Context, RegistryError, Scope, body_detail, expect_ok, failure};
use crate::manifest::{self, Blob, Kind, Manifest};
use crate::settings::Endpoint;
use crate::store::BlobStore;

/// How a push behaves beyond the defaults of [`crate::Settings`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Repositories of the destination registry that may already hold the
    /// blobs (e.g. the source of `kiln push SRC DEST`): tried as
    /// cross-repository mounts before uploading.
    pub mount_from: Vec<String>,
    /// More tags to point at the pushed manifest.
    pub extra_tags: Vec<String>,
}

/// How one blob reached the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry had it (HEAD answered 200).
    Existing,
    /// Mounted from another repository (201 to the mount request, no upload).
    Mounted,
    /// Uploaded in one request.
    Monolithic,
    /// Uploaded in this many `PATCH` chunks.
    Chunked(usize),
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    pub manifest_digest: Option<Digest>,
    pub existing: usize,
    pub mounted: usize,
    pub uploaded: usize,
    pub chunked: usize,
    pub bytes_uploaded: u64,
    pub manifests: usize,
    pub tags: Vec<String>,
}

impl PushReport {
    fn count(&mut self, how: BlobPush, size: u64) {
        match how {
            BlobPush::Existing => self.existing += 1,
            BlobPush::Mounted => self.mounted += 1,
            BlobPush::Monolithic => {
                self.uploaded += 1;
                self.bytes_uploaded += size;
            }
            BlobPush::Chunked(_) => {
                self.uploaded += 1;
                self.chunked += 1;
                self.bytes_uploaded += size;
            }
        }
    }
}

impl Client {
    /// Pushes the manifest (image or index) `digest` from `store` with
    /// everything it references to `dest`, then tags it with `dest`'s tag
    /// and `opts.extra_tags`.
    pub async fn push(
        &self,
        store: &dyn BlobStore,
        digest: &Digest,
        dest: &Reference,
        opts: &PushOptions,
    ) -> Result<PushReport, RegistryError> {
        let ep = self.settings.origin(dest.registry(), dest.repository());
        let mut report = PushReport::default();
        let (bytes, media_type) = self.local_manifest(&ep, store, digest)?;
        let ctx = self.ctx(&ep, format!("manifest {digest}"));
        let kind =
            manifest::kind_of(&media_type).map_err(|hint| RegistryError::UnsupportedMediaType {
                ctx: ctx.clone(),
                media_type: media_type.clone(),
                hint,
            })?;
        let parsed =
            manifest::parse(kind, &bytes).map_err(|detail| RegistryError::BadManifest {
                ctx: ctx.clone(),
                detail,
            })?;
        match parsed {
            Manifest::Image { config, layers } => {
                self.push_image_blobs(&ep, store, &config, &layers, opts, &mut report)
                    .await?;
            }
            Manifest::Index { children } => {
                for child in children {
                    let (cbytes, ctype) = self.local_manifest(&ep, store, &child.blob.digest)?;
                    let cctx = self.ctx(&ep, format!("manifest {}", child.blob.digest));
                    let ckind = manifest::kind_of(&ctype).map_err(|hint| {
                        RegistryError::UnsupportedMediaType {
                            ctx: cctx.clone(),
                            media_type: ctype.clone(),
                            hint,
                        }
                    })?;
                    if ckind != Kind::Image {
                        return Err(RegistryError::BadManifest {
                            ctx: cctx,
                            detail: "nested indexes are not supported".to_string(),
                        });
                    }
                    let Manifest::Image { config, layers } = manifest::parse(ckind, &cbytes)
                        .map_err(|detail| RegistryError::BadManifest {
                            ctx: cctx.clone(),
                            detail,
                        })?
                    else {
                        unreachable!("parse follows kind")
                    };
                    self.push_image_blobs(&ep, store, &config, &layers, opts, &mut report)
                        .await?;
                    self.put_manifest(&ep, &child.blob.digest.to_string(), &cbytes, &ctype)
                        .await?;
                    report.manifests += 1;
                }
            }
        }
        let mut targets: Vec<String> = Vec::new();
        if let Some(t) = dest.tag() {
            targets.push(t.to_string());
        }
        for t in &opts.extra_tags {
            dest.with_tag(t).map_err(|e| RegistryError::BadManifest {
                ctx: ctx.clone(),
                detail: e.to_string(),
            })?;
            if !targets.contains(t) {
                targets.push(t.clone());
            }
        }
        if targets.is_empty() {
            targets.push(digest.to_string());
        } else {
            report.tags = targets.clone();
        }
        for t in &targets {
            self.put_manifest(&ep, t, &bytes, &media_type).await?;
        }
        report.manifests += 1;
        report.manifest_digest = Some(*digest);
        Ok(report)
    }

    fn local_manifest(
        &self,
        ep: &Endpoint,
        store: &dyn BlobStore,
        digest: &Digest,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let ctx = self.ctx(ep, format!("manifest {digest}"));
        let bytes = store
            .read_blob(digest)
            .map_err(|source| RegistryError::Store {
                ctx: ctx.clone(),
                source,
            })?;
        let media_type =
            manifest::media_type_of(&bytes).ok_or_else(|| RegistryError::BadManifest {
                ctx,
                detail: "the local blob is not a manifest (no media type, config or manifests)"
                    .to_string(),
            })?;
        Ok((bytes, media_type))
    }

    async fn push_image_blobs(
        &self,
        ep: &Endpoint,
        store: &dyn BlobStore,
        config: &Blob,
        layers: &[Blob],
        opts: &PushOptions,
        report: &mut PushReport,
    ) -> Result<(), RegistryError> {
        let mut blobs: Vec<&Blob> = Vec::new();
        for b in layers.iter().chain(std::iter::once(config)) {
            if !blobs.iter().any(|x| x.digest == b.digest) {
                blobs.push(b);
            }
        }
        let done: Vec<(BlobPush, u64)> = stream::iter(blobs)
            .map(|b| async move {
                let how = self
                    .push_blob(ep, store, &b.digest, &opts.mount_from)
                    .await?;
                tracing::debug!(digest = %b.digest, ?how, "pushed blob");
                Ok::<_, RegistryError>((how, b.size))
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .try_collect()
            .await?;
        for (how, size) in done {
            report.count(how, size);
        }
        Ok(())
    }

    /// Whether the repository has the blob (`HEAD`).
    pub async fn blob_exists(&self, ep: &Endpoint, digest: &Digest) -> Result<bool, RegistryError> {
        let ctx = self.ctx(ep, format!("blob {digest}"));
        let url = format!("{}/v2/{}/blobs/{}", ep.base_url(), ep.repository, digest);
        let resp = self
            .send(ep, &Scope::push(&ep.repository), &ctx, &|c| c.head(&url))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(RegistryError::Status {
                ctx,
                status,
                detail: String::new(),
            }),
        }
    }

    /// Pushes one blob from the store: skip, mount, or upload.
    pub async fn push_blob(
        &self,
        ep: &Endpoint,
        store: &dyn BlobStore,
        digest: &Digest,
        mount_from: &[String],
    ) -> Result<BlobPush, RegistryError> {
        if self.blob_exists(ep, digest).await? {
            return Ok(BlobPush::Existing);
        }
        let ctx = self.ctx(ep, format!("blob {digest}"));
        // A session the registry holds partial data for (a chunk it half
        // received before the connection dropped) answers the retried chunk
        // with 416, or 404 `BLOB_UPLOAD_INVALID` (distribution); such an
        // upload starts over in a fresh session.
        let policy = self.settings.retry;
        let mut attempt = 0;
        let mut mount = mount_from.iter().find(|f| **f != ep.repository);
        loop {
            attempt += 1;
            match self.upload_once(ep, &ctx, store, digest, mount).await {
                Err(RegistryError::UploadSession { .. }) if attempt < policy.max_attempts => {
                    tracing::warn!(%ctx, attempt, "upload session out of step, starting over");
                    mount = None;
                    tokio::time::sleep(policy.delay(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn upload_once(
        &self,
        ep: &Endpoint,
        ctx: &Context,
        store: &dyn BlobStore,
        digest: &Digest,
        mount: Option<&String>,
    ) -> Result<BlobPush, RegistryError> {
        // One mount attempt: a refused mount (202) already opened an upload
        // session, which the upload then uses.
        let location = match self
            .start_upload(ep, ctx, mount.map(|f| (digest, f)))
            .await?
        {
            Started::Mounted => return Ok(BlobPush::Mounted),
            Started::Upload(l) => l,
        };
        let store_err = |source| RegistryError::Store {
            ctx: ctx.clone(),
            source,
        };
        let (size, mut reader) = store.open_blob(digest).map_err(store_err)?;
        if size <= self.settings.monolithic_limit {
            let mut body = Vec::with_capacity(size as usize);
            reader
                .read_to_end(&mut body)
                .map_err(|e| store_err(Box::new(e)))?;
            self.finish_upload(ep, ctx, &location, digest, body).await?;
            Ok(BlobPush::Monolithic)
        } else {
            let chunks = self
                .upload_chunks(ep, ctx, location, digest, size, &mut *reader)
                .await?;
            Ok(BlobPush::Chunked(chunks))
        }
    }

    async fn start_upload(
        &self,
        ep: &Endpoint,
        ctx: &Context,
        mount: Option<(&Digest, &String)>,
    ) -> Result<Started, RegistryError> {
        let mut url = reqwest::Url::parse(&format!(
            "{}/v2/{}/blobs/uploads/",
            ep.base_url(),
            ep.repository
        ))
        .map_err(|e| RegistryError::Protocol {
            ctx: ctx.clone(),
            detail: e.to_string(),
        })?;
        let mut scope = Scope::push(&ep.repository);
        if let Some((d, from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", &d.to_string())
                .append_pair("from", from);
            scope = scope.and_pull(from);
        }
        let resp = self
            .send(ep, &scope, ctx, &|c| {
                c.post(url.clone()).header(CONTENT_LENGTH, "0")
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED if mount.is_some() => Ok(Started::Mounted),
            StatusCode::CREATED => Err(RegistryError::Protocol {
                ctx: ctx.clone(),
                detail: "201 Created to an upload request without a mount".to_string(),
            }),
            StatusCode::ACCEPTED => Ok(Started::Upload(self.location(ep, ctx, &resp)?)),
            _ => Err(failure(resp, ctx).await),
        }
    }

    fn location(
        &self,
        ep: &Endpoint,
        ctx: &Context,
        resp: &reqwest::Response,
    ) -> Result<reqwest::Url, RegistryError> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                ctx: ctx.clone(),
                detail: format!("{} without a `Location` header", resp.status()),
            })?;
        let base = reqwest::Url::parse(&ep.base_url()).expect("endpoint base url is valid");
        base.join(loc).map_err(|e| RegistryError::Protocol {
            ctx: ctx.clone(),
            detail: format!("bad upload location `{loc}`: {e}"),
        })
    }

    /// `PUT LOCATION?digest=` with the (rest of the) blob as body.
    async fn finish_upload(
        &self,
        ep: &Endpoint,
        ctx: &Context,
        location: &reqwest::Url,
        digest: &Digest,
        body: Vec<u8>,
    ) -> Result<(), RegistryError> {
        let mut url = location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let body = bytes_of(body);
        let resp = self
            .send(ep, &Scope::push(&ep.repository), ctx, &|c| {
                c.put(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, body.len())
                    .body(body.clone())
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(()),
            status @ (StatusCode::NOT_FOUND | StatusCode::RANGE_NOT_SATISFIABLE) => {
                Err(RegistryError::UploadSession {
                    ctx: ctx.clone(),
                    status,
                    detail: body_detail(resp).await,
                })
            }
            StatusCode::BAD_REQUEST => Err(RegistryError::Status {
                ctx: ctx.clone(),
                status: StatusCode::BAD_REQUEST,
                detail: format!(
                    "{} (the registry rejected the upload; is the local blob intact?)",
                    body_detail(resp).await
                ),
            }),
            _ => Err(failure(resp, ctx).await),
        }
    }

    async fn upload_chunks(
        &self,
        ep: &Endpoint,
        ctx: &Context,
        mut location: reqwest::Url,
        digest: &Digest,
        size: u64,
        reader: &mut (dyn Read + Send),
    ) -> Result<usize, RegistryError> {
        let chunk = self.settings.chunk_size.max(1);
        let mut offset = 0u64;
        let mut chunks = 0;
        let mut buf = vec![0u8; chunk];
        while offset < size {
            let mut filled = 0;
            while filled < chunk {
                let n = reader
                    .read(&mut buf[filled..])
                    .map_err(|e| RegistryError::Store {
                        ctx: ctx.clone(),
                        source: Box::new(e),
                    })?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Err(RegistryError::Store {
                    ctx: ctx.clone(),
                    source: format!("the local blob ended after {offset} of {size} bytes").into(),
                });
            }
            let body = bytes_of(buf[..filled].to_vec());
            let range = format!("{}-{}", offset, offset + filled as u64 - 1);
            let url = location.clone();
            let resp = self
                .send(ep, &Scope::push(&ep.repository), ctx, &|c| {
                    c.patch(url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_RANGE, &range)
                        .header(CONTENT_LENGTH, body.len())
                        .body(body.clone())
                })
                .await?;
            if matches!(
                resp.status(),
                StatusCode::NOT_FOUND | StatusCode::RANGE_NOT_SATISFIABLE
            ) {
                let status = resp.status();
                return Err(RegistryError::UploadSession {
                    ctx: ctx.clone(),
                    status,
                    detail: format!(" at chunk {range}{}", body_detail(resp).await),
                });
            }
            if resp.status() != StatusCode::ACCEPTED {
                let status = resp.status();
                return Err(RegistryError::Status {
                    ctx: ctx.clone(),
                    status,
                    detail: format!(" to chunk {range}{}", body_detail(resp).await),
                });
            }
            location = self.location(ep, ctx, &resp)?;
            offset += filled as u64;
            chunks += 1;
        }
        self.finish_upload(ep, ctx, &location, digest, Vec::new())
            .await?;
        Ok(chunks)
    }

    /// Uploads a manifest under a tag or its digest.
    pub async fn put_manifest(
        &self,
        ep: &Endpoint,
        tag_or_digest: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let ctx = self.ctx(ep, format!("manifest `{tag_or_digest}`"));
        let url = format!(
            "{}/v2/{}/manifests/{}",
            ep.base_url(),
            ep.repository,
            tag_or_digest
        );
        let body = bytes_of(bytes.to_vec());
        let resp = self
            .send(ep, &Scope::push(&ep.repository), &ctx, &|c| {
                c.put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        let status = resp.status();
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(failure(resp, &ctx).await);
        }
        let ours = Digest::of(bytes);
        if let Some(theirs) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok())
            && !theirs.is_digest_of(bytes)
        {
            return Err(RegistryError::DigestMismatch {
                ctx,
                expected: ours,
                actual: theirs,
                size: bytes.len() as u64,
            });
        }
        Ok(ours)
    }

    /// The repository's tags (`GET /v2/NAME/tags/list`).
    pub async fn list_tags(&self, reference: &Reference) -> Result<Vec<String>, RegistryError> {
        let ep = self
            .settings
            .origin(reference.registry(), reference.repository());
        let ctx = self.ctx(&ep, "tag list");
        let url = format!("{}/v2/{}/tags/list", ep.base_url(), ep.repository);
        let resp = self
            .send(&ep, &Scope::pull(&ep.repository), &ctx, &|c| c.get(&url))
            .await?;
        let resp = expect_ok(resp, &ctx).await?;
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let t: Tags = resp.json().await.map_err(|e| RegistryError::Protocol {
            ctx: ctx.clone(),
            detail: format!("bad tag list: {e}"),
        })?;
        let mut tags = t.tags.unwrap_or_default();
        tags.sort();
        Ok(tags)
    }
}

enum Started {
    Mounted,
    Upload(reqwest::Url),
}

/// `Bytes` is cheap to clone for each retry of a request.
fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}
