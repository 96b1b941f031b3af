//! The Debian package source (`SourceOp::DebianPackages`): the repository
//! opened and verified, the set resolved like apt, the `.deb`s downloaded
//! into the store and unpacked into one layer (kiln-deb). The key is what
//! the layer is a function of: the resolved packages' SHA256s, the
//! architecture and `SOURCE_DATE_EPOCH`; a layer already made for that key
//! is reused, so only the repository's `InRelease` is fetched again; with
//! a `Kilnfile.lock` entry for the set, not even that.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

use kiln_dag::{DebianPackages, Digest};
use kiln_deb::{
    DebInput, DebRef, FetchError, Fetcher, InstallError, RepoError, Repository, Request,
    ResolveError, Resolver, Source, SourceError,
};
use kiln_layer::{ApplyOptions, IdMapping, IdRange, Ownership, WriteOptions};
use kiln_lock::{LockedDeb, LockedPackages, Lockfile, PackageSet};
use kiln_store::Store;

use crate::snapshot::{self, LayerRef, Ref, SnapshotError};

/// Record kind of package layers by key.
const RECORD: &str = "deb-layer";

/// A package set that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    #[error("the Debian package source")]
    Source(#[source] SourceError),
    #[error("the Debian repository `{mirror}` ({suite})")]
    Repo {
        mirror: String,
        suite: String,
        #[source]
        source: Box<RepoError>,
    },
    #[error("the Debian packages of `{suite}`")]
    Resolve {
        suite: String,
        #[source]
        source: ResolveError,
    },
    #[error("downloading Debian packages")]
    Download(#[source] FetchError),
    #[error("unpacking Debian packages")]
    Install(#[source] Box<InstallError>),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot start the download runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot use the store: {0}")]
    Store(String),
}

/// The repository the op names, for the build's platform when it names
/// no architecture; keyrings are files of the context.
fn source(
    op: &DebianPackages,
    platform: &kiln_types::Platform,
    context: &Path,
) -> Result<Source, PackagesError> {
    let mut s = Source::debian(&op.suite)
        .with_platform(platform)
        .map_err(PackagesError::Source)?;
    if let Some(m) = &op.mirror {
        s = s.with_mirror(m).map_err(PackagesError::Source)?;
    }
    if let Some(t) = &op.snapshot {
        s = s.with_snapshot(t).map_err(PackagesError::Source)?;
    }
    if let Some(a) = &op.arch {
        s.arch = a.clone();
    }
    if !op.components.is_empty() {
        s.components = op.components.clone();
    }
    if !op.keyrings.is_empty() {
        s.keyrings = op.keyrings.iter().map(|k| context.join(k)).collect();
    }
    s.validate().map_err(PackagesError::Source)?;
    Ok(s)
}

/// The key of a resolved set: its packages by SHA256, the architecture,
/// the epoch the layer's times are clamped to, and the layout version.
pub fn key(debs: &[DebRef], arch: &str, epoch: i64) -> Digest {
    let mut e = kiln_dag::canonical::Encoder::new();
    // v3: owners and modes from the packages' headers, rootless too
    e.tag("kiln-debian-packages/v3");
    e.str(arch);
    e.u64(epoch.max(0) as u64);
    e.u64(debs.len() as u64);
    for d in debs {
        e.str(&d.name);
        e.str(&d.version);
        e.str(&d.sha256.to_string());
    }
    Digest::of(&e.into_bytes())
}

/// What the lock knows `op` by, built for `platform`.
pub fn identity(
    op: &DebianPackages,
    platform: &kiln_types::Platform,
    context: &Path,
) -> Result<PackageSet, PackagesError> {
    Ok(package_set(op, &source(op, platform, context)?))
}

/// The repository and request with kiln-deb's defaults filled in
/// (keyrings as the build file names them).
fn package_set(op: &DebianPackages, source: &Source) -> PackageSet {
    PackageSet {
        mirror: source.mirror.clone(),
        suite: source.suite.clone(),
        components: source.components.clone(),
        architecture: source.arch.clone(),
        snapshot: source.snapshot.clone(),
        keyrings: op.keyrings.clone(),
        request: op.packages.clone(),
        exclude: op.exclude.clone(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, PackagesError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PackagesError::Runtime)
}

/// Opens the repository (its `InRelease` verified) and resolves `op`:
/// the `.deb`s and the SHA256 of the `InRelease` they came from.
fn resolve_remote(
    rt: &tokio::runtime::Runtime,
    fetcher: &Fetcher,
    store: &Store,
    op: &DebianPackages,
    source: &Source,
) -> Result<(Vec<DebRef>, Digest), PackagesError> {
    let repo_err = |e| PackagesError::Repo {
        mirror: source.mirror.clone(),
        suite: source.suite.clone(),
        source: Box::new(e),
    };
    let repo = rt
        .block_on(Repository::open(source, fetcher, store))
        .map_err(repo_err)?;
    let resolved = Resolver::new(&repo.index, &source.arch)
        .resolve(&Request {
            packages: op.packages.clone(),
            exclude: op.exclude.clone(),
        })
        .map_err(|e| PackagesError::Resolve {
            suite: source.suite.clone(),
            source: e,
        })?;
    let debs = resolved
        .packages
        .iter()
        .map(|id| repo.deb(*id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(repo_err)?;
    Ok((debs, repo.release.digest))
}

/// The lock entry of `op`: resolved against the repository as it is now.
/// Nothing is downloaded but the verified indexes.
pub fn lock(
    store: &Store,
    op: &DebianPackages,
    platform: &kiln_types::Platform,
    context: &Path,
) -> Result<LockedPackages, PackagesError> {
    let source = source(op, platform, context)?;
    let rt = runtime()?;
    let fetcher = Fetcher::new().map_err(PackagesError::Download)?;
    let (debs, release) = resolve_remote(&rt, &fetcher, store, op, &source)?;
    Ok(LockedPackages {
        set: package_set(op, &source),
        release,
        debs: debs.iter().map(locked).collect(),
    })
}

/// The packages of `op`'s repository that ship each of `paths`
/// (`kiln_deb::contents_key`s), from its verified `Contents` index (kept
/// in the store by digest): for the ELF check to name what a binary lacks.
pub fn shipped_by(
    store: &Store,
    op: &DebianPackages,
    platform: &kiln_types::Platform,
    context: &Path,
    paths: &BTreeSet<String>,
) -> Result<BTreeMap<String, BTreeSet<String>>, PackagesError> {
    let source = source(op, platform, context)?;
    let rt = runtime()?;
    let fetcher = Fetcher::new().map_err(PackagesError::Download)?;
    rt.block_on(kiln_deb::shipped_by(&source, &fetcher, store, paths))
        .map_err(|e| PackagesError::Repo {
            mirror: source.mirror.clone(),
            suite: source.suite.clone(),
            source: Box::new(e),
        })
}

/// Resolves `op` and makes (or finds) its layer: the key and the result.
/// A set the lock has is not resolved again: its `.deb`s are the lock's,
/// verified against the lock's SHA256 when downloaded, and the
/// repository's index is not read.
pub fn resolve(
    store: &Store,
    op: &DebianPackages,
    platform: &kiln_types::Platform,
    context: &Path,
    epoch: i64,
    lock: Option<&Lockfile>,
) -> Result<(Digest, Ref), PackagesError> {
    let source = source(op, platform, context)?;
    let rt = runtime()?;
    let fetcher = Fetcher::new().map_err(PackagesError::Download)?;
    let locked = lock.and_then(|l| l.packages(&package_set(op, &source)));
    let debs = match locked {
        Some(l) => l
            .debs
            .iter()
            .map(|d| DebRef {
                name: d.name.clone(),
                version: d.version.clone(),
                arch: d.architecture.clone(),
                filename: d.filename.clone(),
                size: d.size,
                sha256: d.sha256,
            })
            .collect(),
        None => resolve_remote(&rt, &fetcher, store, op, &source)?.0,
    };
    let key = key(&debs, &source.arch, epoch);
    let known = store
        .get_record(RECORD, key.as_bytes())
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Ref>(&b).ok())
        .filter(|r| r.complete(store));
    if let Some(r) = known {
        remember_debs(store, &r, &debs);
        return Ok((key, r));
    }
    tracing::info!(packages = debs.len(), suite = %source.suite, "downloading Debian packages");
    rt.block_on(kiln_deb::download(&source, &debs, &fetcher, store))
        .map_err(PackagesError::Download)?;
    let dir = snapshot::temp_dir(store, "debian")?;
    let layer = unpack(store, &debs, &dir, epoch);
    let _ = std::fs::remove_dir_all(&dir);
    let r = Ref {
        layers: vec![layer?],
        config: None,
    };
    let bytes = serde_json::to_vec(&r).map_err(|e| PackagesError::Store(e.to_string()))?;
    store
        .put_record(RECORD, key.as_bytes(), &bytes)
        .map_err(|e| PackagesError::Store(kiln_types::error_chain(&e)))?;
    remember_debs(store, &r, &debs);
    Ok((key, r))
}

/// Record kind: the `.deb`s a package layer was unpacked from, by the
/// layer's digest.
const DEBS_RECORD: &str = "deb-set";

/// Keeps which `.deb`s the layer of `r` was made of (once), for the
/// provenance of images that carry it.
fn remember_debs(store: &Store, r: &Ref, debs: &[DebRef]) {
    let Some(layer) = r.layers.first() else {
        return;
    };
    if let Ok(Some(_)) = store.get_record(DEBS_RECORD, layer.digest.as_bytes()) {
        return;
    }
    let list: Vec<LockedDeb> = debs.iter().map(locked).collect();
    if let Ok(b) = serde_json::to_vec(&list) {
        // losing it only leaves the `.deb`s out of a provenance
        let _ = store.put_record(DEBS_RECORD, layer.digest.as_bytes(), &b);
    }
}

/// The `.deb`s an image layer was unpacked from, when it is a package
/// set's layer this store made.
pub fn debs_of(store: &Store, layer_digest: &str) -> Option<Vec<LockedDeb>> {
    let b = store
        .get_record(DEBS_RECORD, layer_digest.as_bytes())
        .ok()??;
    serde_json::from_slice(&b).ok()
}

fn locked(d: &DebRef) -> LockedDeb {
    LockedDeb {
        name: d.name.clone(),
        version: d.version.clone(),
        architecture: d.arch.clone(),
        filename: d.filename.clone(),
        size: d.size,
        sha256: d.sha256,
    }
}

/// Unpacks `debs` (sorted by name, so the order is the set's, not the
/// resolver's) into `dir` and writes it as one layer blob.
fn unpack(
    store: &Store,
    debs: &[DebRef],
    dir: &Path,
    epoch: i64,
) -> Result<LayerRef, PackagesError> {
    let mut sorted: Vec<&DebRef> = debs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let inputs = sorted
        .iter()
        .map(|d| {
            let path = store.blob_path(&d.sha256);
            File::open(&path)
                .map(|file| DebInput {
                    label: format!("{}_{}_{}.deb", d.name, d.version, d.arch),
                    file,
                })
                .map_err(|e| PackagesError::Store(format!("`{}`: {e}", path.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let root = rustix::process::geteuid().is_root();
    let opts = ApplyOptions {
        ownership: if root {
            Ownership::Keep
        } else {
            Ownership::Ignore
        },
        ..ApplyOptions::default()
    };
    let installed =
        kiln_deb::install(dir, inputs, &opts).map_err(|e| PackagesError::Install(Box::new(e)))?;
    // Rootless, everything is ours on disk (set-ID bits dropped): the
    // layer takes every owner and mode from the packages' tar headers
    // instead, as root's does, so both write the same bytes. What no
    // header names (parents a package leaves implied) is root's.
    let id_map = (!root).then(|| {
        let one = |host: u32| {
            vec![IdRange {
                container: 0,
                host,
                size: 1,
            }]
        };
        IdMapping {
            uids: one(rustix::process::geteuid().as_raw()),
            gids: one(rustix::process::getegid().as_raw()),
        }
    });
    let wopts = WriteOptions {
        overlay_whiteouts: false,
        id_map,
        source_date_epoch: Some(epoch.max(0) as u64),
        xattrs: false,
    };
    Ok(snapshot::layer_from_dir_owned(
        store,
        dir,
        &wopts,
        Some(&installed.owners),
    )?)
}
