//! `-o/--output` specs and the writers for each output type.
//!
//! Every file or directory output is written next to its destination under
//! a temp name and renamed into place, so a failed export leaves no partial
//! result behind. The exception is `type=local` into a directory that
//! exists (BuildKit writes into it, and so do we): there a marker file,
//! [`INCOMPLETE_MARKER`], says the tree is partial until the export is done.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use kiln_store::{Digest, Store, StoreError};
use oci_spec::image::{ImageIndex, MediaType};
use sha2::{Digest as _, Sha256};

use crate::flatten::{FlattenError, open_layer, write_flat_tar};
use crate::image::{Image, MEDIA_INDEX};
use crate::json::canonical_json;
use crate::reference::split_tag;

/// `org.opencontainers.image.ref.name`: the tag, as umoci and skopeo read it.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The full image name, as containerd and BuildKit write it.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// The output types of `-o type=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// OCI image layout in a tar archive
    Oci,
    /// OCI image layout directory
    OciLayout,
    /// docker-archive (`docker load`, `podman load`)
    Docker,
    /// the final filesystem as files in a directory
    Local,
    /// the final filesystem as one tar
    Tar,
    /// push to a registry (executed by kiln-registry)
    Registry,
}

impl OutputKind {
    const ALL: &'static [(&'static str, OutputKind)] = &[
        ("oci", OutputKind::Oci),
        ("oci-layout", OutputKind::OciLayout),
        ("docker", OutputKind::Docker),
        ("local", OutputKind::Local),
        ("tar", OutputKind::Tar),
        ("registry", OutputKind::Registry),
        ("image", OutputKind::Registry),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `-o` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub kind: OutputKind,
    /// file or directory; `-` means stdout for the archive types
    pub dest: Option<PathBuf>,
    /// image name(s) to record (`name=a,name=b` or `name=a;b`... first wins for archives)
    pub names: Vec<String>,
    /// `push=true` for `type=image`
    pub push: bool,
    /// other `key=value` options that a later stage may read (`compression`, ...)
    pub options: BTreeMap<String, String>,
}

/// What is wrong with a `-o` spec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("empty output spec: use e.g. `type=oci,dest=image.tar`")]
    Empty,
    #[error("output spec `{spec}`: {source}")]
    Fields {
        spec: String,
        #[source]
        source: kiln_types::spec::SpecFieldsError,
    },
    #[error(
        "output spec `{spec}`: missing `type=`; one of oci, oci-layout, docker, local, tar, registry"
    )]
    MissingType { spec: String },
    #[error(
        "output spec `{spec}`: unknown type `{kind}`; use one of oci, oci-layout, docker, local, tar, registry"
    )]
    UnknownType { spec: String, kind: String },
    #[error("output spec `{spec}`: `type={kind}` needs `dest=PATH`")]
    MissingDest { spec: String, kind: OutputKind },
    #[error("output spec `{spec}`: `type=registry` needs `name=REGISTRY/REPO:TAG`")]
    MissingName { spec: String },
    #[error("output spec `{spec}`: `{key}` is given twice")]
    Duplicate { spec: String, key: String },
    #[error("output spec `{spec}`: unknown key `{key}` for type={kind}; known keys: {known}")]
    UnknownKey {
        spec: String,
        key: String,
        kind: OutputKind,
        known: String,
    },
    #[error("output spec `{spec}`: `dest=-` (stdout) works only for oci, docker and tar")]
    StdoutDir { spec: String },
}

impl FromStr for OutputSpec {
    type Err = SpecError;

    /// Parses `type=oci,dest=out.tar,name=app:1`. Like `docker build -o`, a
    /// spec without `=` is a directory for `type=local`, and `-` alone is a
    /// tar on stdout.
    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let spec_s = spec.trim();
        if spec_s.is_empty() {
            return Err(SpecError::Empty);
        }
        if !spec_s.contains('=') && !spec_s.contains(',') {
            let kind = if spec_s == "-" {
                OutputKind::Tar
            } else {
                OutputKind::Local
            };
            return Ok(OutputSpec {
                kind,
                dest: Some(PathBuf::from(spec_s)),
                names: vec![],
                push: false,
                options: BTreeMap::new(),
            });
        }
        let spec = spec_s.to_owned();
        let mut kv: Vec<(String, String)> = Vec::new();
        let fields = kiln_types::spec::key_values(spec_s).map_err(|source| SpecError::Fields {
            spec: spec.clone(),
            source,
        })?;
        for (k, v) in fields {
            let k = k.trim().to_owned();
            if k != "name" && kv.iter().any(|(x, _)| *x == k) {
                return Err(SpecError::Duplicate { spec, key: k });
            }
            kv.push((k, v.trim().to_owned()));
        }
        let kind_s = kv
            .iter()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| SpecError::MissingType { spec: spec.clone() })?;
        let kind = OutputKind::ALL
            .iter()
            .find(|(n, _)| *n == kind_s)
            .map(|(_, k)| *k)
            .ok_or_else(|| SpecError::UnknownType {
                spec: spec.clone(),
                kind: kind_s.clone(),
            })?;
        let known: &[&str] = match kind {
            OutputKind::Oci | OutputKind::Docker => &["type", "dest", "name", "compression"],
            OutputKind::OciLayout => &["type", "dest", "name", "compression"],
            OutputKind::Local | OutputKind::Tar => &["type", "dest"],
            OutputKind::Registry => &[
                "type",
                "name",
                "push",
                "compression",
                "registry.insecure",
                "oci-mediatypes",
            ],
        };
        let mut out = OutputSpec {
            kind,
            dest: None,
            names: vec![],
            push: kind_s == "registry",
            options: BTreeMap::new(),
        };
        for (k, v) in kv {
            if !known.contains(&k.as_str()) {
                return Err(SpecError::UnknownKey {
                    spec,
                    key: k,
                    kind,
                    known: known.join(", "),
                });
            }
            match k.as_str() {
                "type" => {}
                "dest" => out.dest = Some(PathBuf::from(v)),
                "name" => out
                    .names
                    .extend(v.split(';').filter(|s| !s.is_empty()).map(str::to_owned)),
                "push" => out.push = v == "true",
                _ => {
                    out.options.insert(k, v);
                }
            }
        }
        match kind {
            OutputKind::Registry if out.names.is_empty() => {
                return Err(SpecError::MissingName { spec });
            }
            OutputKind::Registry => {}
            _ if out.dest.is_none() => return Err(SpecError::MissingDest { spec, kind }),
            OutputKind::OciLayout | OutputKind::Local
                if out.dest.as_deref() == Some(Path::new("-")) =>
            {
                return Err(SpecError::StdoutDir { spec });
            }
            _ => {}
        }
        Ok(out)
    }
}

/// Errors of writing an output.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read blob {digest} for the export")]
    Blob {
        digest: Digest,
        #[source]
        source: StoreError,
    },
    #[error(
        "layer {digest} does not match its diff id {diff_id} (got {actual}); the store is damaged: remove it and pull again"
    )]
    DiffId {
        digest: Digest,
        diff_id: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Layer(#[from] FlattenError),
    #[error("cannot apply layer {digest} to `{dest}`")]
    Apply {
        digest: Digest,
        dest: PathBuf,
        #[source]
        source: kiln_layer::ApplyError,
    },
    #[error(
        "`{path}` exists and is not an OCI layout (no `oci-layout` file); choose an empty or new directory"
    )]
    NotALayout { path: PathBuf },
    #[error("`{path}` has an unreadable `index.json`: {reason}")]
    BadLayoutIndex { path: PathBuf, reason: String },
    #[error("`type=registry` is executed by the registry client, not by the file exporter")]
    Registry,
    #[error("`type={kind}` needs a destination path")]
    NoDest { kind: OutputKind },
}

type Result<T, E = ExportError> = std::result::Result<T, E>;

/// Writes `image` as `spec` says. For `dest=-` use the `write_*` functions
/// with stdout instead.
pub fn export(store: &Store, image: &Image, spec: &OutputSpec) -> Result<()> {
    let name = spec.names.first().map(String::as_str);
    let dest = spec
        .dest
        .as_deref()
        .ok_or(ExportError::NoDest { kind: spec.kind })?;
    match spec.kind {
        OutputKind::Oci => {
            write_file_atomic(dest, |w| write_oci_archive(store, image, name, w).map(drop))
        }
        OutputKind::Docker => write_file_atomic(dest, |w| {
            write_docker_archive(store, image, name, w).map(drop)
        }),
        OutputKind::Tar => write_file_atomic(dest, |w| {
            write_flat_tar(store, image, w)
                .map(drop)
                .map_err(ExportError::from)
        }),
        OutputKind::OciLayout => write_oci_layout(store, &[(image, name)], dest),
        OutputKind::Local => write_local(store, image, dest),
        OutputKind::Registry => Err(ExportError::Registry),
    }
}

/// Creates `dest` through a temp file in the same directory and a rename.
pub fn write_file_atomic(
    dest: &Path,
    f: impl FnOnce(&mut io::BufWriter<&mut File>) -> Result<()>,
) -> Result<()> {
    let werr = |source| ExportError::Write {
        path: dest.to_owned(),
        source,
    };
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(werr)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempfile_in(&dir)
        .map_err(werr)?;
    {
        let mut w = io::BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
        f(&mut w)?;
        w.flush().map_err(werr)?;
    }
    tmp.as_file().sync_all().map_err(werr)?;
    // tempfile creates 0600; an export is an ordinary file.
    let mode = 0o666 & !current_umask();
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )
    .map_err(werr)?;
    tmp.persist(dest).map_err(|e| werr(e.error))?;
    Ok(())
}

fn current_umask() -> u32 {
    // umask(2) can only be read by setting it; set it back at once.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    rustix::process::umask(old);
    old.as_raw_mode()
}

/// Deterministic tar headers for archive members (not image content).
fn member_header(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    b.append_data(&mut member_header(bytes.len() as u64, false), path, bytes)
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    b.append_data(&mut member_header(0, true), path, io::empty())
}

fn append_blob<W: Write>(
    b: &mut tar::Builder<W>,
    store: &Store,
    path: &str,
    d: &Digest,
) -> Result<()> {
    let berr = |source| ExportError::Blob { digest: *d, source };
    let size = store.blob_size(d).map_err(berr)?;
    let f = store.open_blob(d).map_err(berr)?;
    b.append_data(&mut member_header(size, false), path, f)
        .map_err(|source| ExportError::Write {
            path: path.into(),
            source,
        })
}

/// The blobs an image consists of: manifest, config, layers (deduplicated).
fn image_blobs(image: &Image) -> Vec<Digest> {
    let mut v = vec![image.digest, image.config_digest];
    for l in &image.layers {
        if !v.contains(&l.digest) {
            v.push(l.digest);
        }
    }
    v
}

/// index.json of a layout holding `images` with their names.
fn layout_index(
    images: &[(&Image, Option<&str>)],
    mut existing: Vec<oci_spec::image::Descriptor>,
) -> Vec<u8> {
    for (image, name) in images {
        let mut desc = image.descriptor();
        let mut ann = std::collections::HashMap::new();
        let tag = name
            .map(|n| split_tag(n).1)
            .unwrap_or_else(|| "latest".to_owned());
        // One image per ref name, as skopeo does: the new one replaces the old.
        existing.retain(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                != Some(&tag)
        });
        ann.insert(ANNOTATION_REF_NAME.to_owned(), tag);
        if let Some(n) = name {
            ann.insert(ANNOTATION_IMAGE_NAME.to_owned(), (*n).to_owned());
        }
        desc.set_annotations(Some(ann));
        existing.push(desc);
    }
    let mut index = ImageIndex::default();
    index.set_schema_version(2);
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(existing);
    let mut bytes = canonical_json(&index);
    bytes.push(b'\n');
    bytes
}

const OCI_LAYOUT: &[u8] = b"{\"imageLayoutVersion\":\"1.0.0\"}";

/// Writes an OCI archive (a tar of an OCI layout) of one image.
pub fn write_oci_archive<W: Write>(
    store: &Store,
    image: &Image,
    name: Option<&str>,
    out: W,
) -> Result<W> {
    let werr = |source| ExportError::Write {
        path: "oci archive".into(),
        source,
    };
    let mut b = tar::Builder::new(out);
    append_bytes(&mut b, "oci-layout", OCI_LAYOUT).map_err(werr)?;
    append_bytes(
        &mut b,
        "index.json",
        &layout_index(&[(image, name)], vec![]),
    )
    .map_err(werr)?;
    append_dir(&mut b, "blobs/").map_err(werr)?;
    append_dir(&mut b, "blobs/sha256/").map_err(werr)?;
    for d in image_blobs(image) {
        append_blob(&mut b, store, &format!("blobs/sha256/{}", d.hex()), &d)?;
    }
    b.into_inner().map_err(werr)
}

/// Writes (or adds to) an OCI layout directory.
pub fn write_oci_layout(
    store: &Store,
    images: &[(&Image, Option<&str>)],
    dir: &Path,
) -> Result<()> {
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Write { path, source }
    };
    let mut existing = Vec::new();
    if dir.exists() {
        let non_empty = fs::read_dir(dir).map_err(werr(dir))?.next().is_some();
        if non_empty {
            if !dir.join("oci-layout").is_file() {
                return Err(ExportError::NotALayout {
                    path: dir.to_owned(),
                });
            }
            if let Ok(bytes) = fs::read(dir.join("index.json")) {
                let idx: ImageIndex =
                    serde_json::from_slice(&bytes).map_err(|e| ExportError::BadLayoutIndex {
                        path: dir.to_owned(),
                        reason: e.to_string(),
                    })?;
                existing = idx.manifests().clone();
            }
        }
    }
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(werr(&blobs))?;
    for (image, _) in images {
        for d in image_blobs(image) {
            let dest = blobs.join(d.hex());
            if dest.is_file() {
                continue;
            }
            write_file_atomic(&dest, |w| {
                let mut f = store
                    .open_blob(&d)
                    .map_err(|source| ExportError::Blob { digest: d, source })?;
                io::copy(&mut f, w).map_err(werr(&dest))?;
                Ok(())
            })?;
        }
    }
    write_file_atomic(&dir.join("oci-layout"), |w| {
        w.write_all(OCI_LAYOUT).map_err(werr(dir))
    })?;
    let index = layout_index(images, existing);
    write_file_atomic(&dir.join("index.json"), |w| {
        w.write_all(&index).map_err(werr(dir))
    })
}

/// Counts and hashes an uncompressed layer stream.
fn measure_layer(store: &Store, layer: &crate::image::Layer) -> Result<u64> {
    let mut r = open_layer(store, layer)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(|source| FlattenError::Read {
            digest: layer.digest,
            source,
        })?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        n += k as u64;
    }
    let actual = Digest::from_hasher(hasher);
    if actual != layer.diff_id {
        return Err(ExportError::DiffId {
            digest: layer.digest,
            diff_id: layer.diff_id,
            actual,
        });
    }
    Ok(n)
}

/// Writes a docker-archive: `manifest.json`, `repositories`, the config as
/// `<hex>.json` and each layer uncompressed as `<diff id hex>/layer.tar`.
pub fn write_docker_archive<W: Write>(
    store: &Store,
    image: &Image,
    name: Option<&str>,
    out: W,
) -> Result<W> {
    let werr = |source| ExportError::Write {
        path: "docker archive".into(),
        source,
    };
    let mut b = tar::Builder::new(out);
    let config_name = format!("{}.json", image.config_digest.hex());
    let config = store
        .read_blob(&image.config_digest)
        .map_err(|source| ExportError::Blob {
            digest: image.config_digest,
            source,
        })?;
    let mut layer_paths = Vec::new();
    let mut written = std::collections::HashSet::new();
    for layer in &image.layers {
        let dir = layer.diff_id.hex().to_owned();
        let path = format!("{dir}/layer.tar");
        layer_paths.push(path.clone());
        if !written.insert(dir.clone()) {
            continue;
        }
        // Two passes: the tar header needs the size before the data, and the
        // first pass verifies the diff id on the way.
        let size = measure_layer(store, layer)?;
        append_dir(&mut b, &format!("{dir}/")).map_err(werr)?;
        append_bytes(&mut b, &format!("{dir}/VERSION"), b"1.0").map_err(werr)?;
        let r = open_layer(store, layer)?;
        b.append_data(&mut member_header(size, false), &path, r)
            .map_err(werr)?;
    }
    append_bytes(&mut b, &config_name, &config).map_err(werr)?;
    let repo_tags: Vec<String> = name
        .map(|n| {
            let (repo, tag) = split_tag(n);
            format!("{repo}:{tag}")
        })
        .into_iter()
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": repo_tags,
        "Layers": layer_paths,
    }]);
    append_bytes(&mut b, "manifest.json", &canonical_json(&manifest)).map_err(werr)?;
    if let (Some(n), Some(last)) = (name, image.layers.last()) {
        let (repo, tag) = split_tag(n);
        let repos = serde_json::json!({ repo: { tag: last.diff_id.hex() } });
        append_bytes(&mut b, "repositories", &canonical_json(&repos)).map_err(werr)?;
    }
    b.into_inner().map_err(werr)
}

/// The file `type=local` keeps at the top of an existing destination
/// directory while it writes into it: a tree with it is partial (the
/// export failed or was killed).
pub const INCOMPLETE_MARKER: &str = ".kiln-incomplete";

/// Writes the image's final filesystem into `dest`, applying each layer in
/// order. A new `dest` is written as a hidden directory beside it and
/// renamed into place when complete, so it never exists partly. Into a
/// directory that exists (a mount point, say, which a rename could not
/// replace) the layers are applied in place, over what is there, as
/// BuildKit does, with [`INCOMPLETE_MARKER`] in it until the end.
pub fn write_local(store: &Store, image: &Image, dest: &Path) -> Result<()> {
    let werr = |source| ExportError::Write {
        path: dest.to_owned(),
        source,
    };
    if fs::symlink_metadata(dest).is_ok() {
        let marker = dest.join(INCOMPLETE_MARKER);
        fs::write(
            &marker,
            "kiln is writing this directory, or was stopped before it was done: \
             what is here is partial; export again to complete it\n",
        )
        .map_err(werr)?;
        let ours = fs::symlink_metadata(&marker).map_err(werr)?;
        apply_layers(store, image, dest)?;
        // a layer that brought a file of the marker's name keeps it
        if fs::symlink_metadata(&marker).is_ok_and(|m| same_file(&m, &ours)) {
            fs::remove_file(&marker).map_err(werr)?;
        }
        return Ok(());
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(werr)?;
    let tmp = new_sibling_dir(&parent, dest).map_err(werr)?;
    let done = apply_layers(store, image, &tmp).and_then(|()| fs::rename(&tmp, dest).map_err(werr));
    if done.is_err() {
        remove_tree(&tmp);
    }
    done
}

fn apply_layers(store: &Store, image: &Image, dir: &Path) -> Result<()> {
    let opts = kiln_layer::ApplyOptions {
        max_size: kiln_layer::max_size_from_env(),
        ..kiln_layer::ApplyOptions::default()
    };
    for layer in &image.layers {
        let r = open_layer(store, layer)?;
        kiln_layer::apply_tar(r, dir, &opts).map_err(|source| ExportError::Apply {
            digest: layer.digest,
            dest: dir.to_owned(),
            source,
        })?;
    }
    Ok(())
}

fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// A fresh directory `.<name of dest>.kiln-export-<pid>-<n>` in `parent`
/// (same filesystem as `dest`, so it can be renamed there), with the mode
/// a plain mkdir gives (0777 less the umask), as `dest` would have had.
fn new_sibling_dir(parent: &Path, dest: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = parent.join(format!(".{name}.kiln-export-{}-{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o777).create(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            r => return r.map(|()| tmp),
        }
    }
}

/// Removes a partial export, also where a layer made directories read-only
/// (which stops an unprivileged remove_dir_all).
fn remove_tree(dir: &Path) {
    fn open_up(dir: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&e.path());
            }
        }
    }
    if fs::remove_dir_all(dir).is_err() {
        open_up(dir);
        if let Err(e) = fs::remove_dir_all(dir) {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove a partial export");
        }
    }
}

/// Whether `media_type` is an index (OCI or Docker list).
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_INDEX || media_type == crate::image::MEDIA_DOCKER_LIST
}
