//! Store maintenance: disk usage by kind, pruning and consistency checks.
//!
//! What references what (the worker's view of the store):
//!
//! ```text
//! tags.json                       -> manifest (or index) blobs -> config and
//!                                    layer blobs (statements for attestation
//!                                    manifests)
//! records/build-cache, context-layer  (a Ref)  -> config blob, layer blobs,
//!                                    directory layers snapshots/d<id> and their
//!                                    records/layer-commit entry -> blob
//! records/static-base             -> a manifest blob -> config and layers
//! records/attestations (by image)  -> the image's attestation index -> its
//!                                    attestation manifest and statements
//! records/content-digest, context-stat   reference nothing
//! snapshots/b<diff_id>            extracted blob layers (a cache of blobs)
//! snapshots/m<chain>              merged chains (a cache of a Ref)
//! cache-mounts/<hex>              `run` cache mounts
//! tmp/, worker-tmp/               leftovers of killed processes
//! ```
//!
//! Every kiln process that reads or writes the store holds the `gc` lock
//! shared for its whole life ([`hold_shared`]); prune and check take it
//! exclusively, so they never remove what a running build holds, and they
//! find only leftovers of dead processes in the temp areas. Removal goes
//! records first, then what they referenced, so a killed prune leaves at
//! worst unreferenced data, never a record pointing at something missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kiln_oci::{Digest, Store};
use kiln_store::{LockMode, StoreLock};
use sha2::{Digest as _, Sha256};

use crate::commit::COMMIT_KIND;
use crate::snapshot::{self, LayerRef, Ref};

/// The lock every store user holds shared and maintenance exclusively.
pub const GC_LOCK: &str = "gc";

/// Record kinds whose entries are build cache, prunable one by one.
const PRIMARY_KINDS: &[&str] = &[
    "build-cache",
    "context-layer",
    "deb-layer",
    "static-base",
    "content-digest",
    "context-stat",
    "elf-check",
    // an image's SBOM document and the statements a no-op rebuild reuses
    // (kiln-cli's attest.rs): derived from the image, made again when gone
    "sbom",
    "attestation-reuse",
];
// `commit::COMMIT_KIND` records are kept exactly as long as a primary
// record needs them.

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("cannot lock the store at `{path}`: {reason}")]
    Lock { path: PathBuf, reason: String },
    #[error("cannot list `{path}`: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove `{path}`: {reason}")]
    Remove { path: PathBuf, reason: String },
    #[error("cannot read the tag index of the store at `{path}`: {reason}")]
    Tags { path: PathBuf, reason: String },
    #[error("cannot list the lazy blobs of the store at `{path}`: {reason}")]
    Remote { path: PathBuf, reason: String },
}

/// Takes the `gc` lock shared, for a process that uses the store.
pub fn hold_shared(store: &Store) -> Result<StoreLock, GcError> {
    store
        .lock(GC_LOCK, LockMode::Shared)
        .map_err(|e| GcError::Lock {
            path: store.root().to_path_buf(),
            reason: e.to_string(),
        })
}

/// Takes the `gc` lock exclusively; `on_wait` runs once before blocking
/// when other kiln processes use the store.
pub fn hold_exclusive(store: &Store, on_wait: impl FnOnce()) -> Result<StoreLock, GcError> {
    let lerr = |e: kiln_store::StoreError| GcError::Lock {
        path: store.root().to_path_buf(),
        reason: e.to_string(),
    };
    if let Some(l) = store.try_lock(GC_LOCK, LockMode::Exclusive).map_err(lerr)? {
        return Ok(l);
    }
    on_wait();
    store.lock(GC_LOCK, LockMode::Exclusive).map_err(lerr)
}

// ----- inventory -------------------------------------------------------------

/// Count and bytes (disk blocks) of one kind of thing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Amount {
    pub count: u64,
    pub bytes: u64,
}

impl Amount {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// `kiln cache du`: what the store holds, by kind.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// blobs of tagged images (manifests, configs, layers)
    pub image_blobs: Amount,
    /// every other blob: layers committed for the cache, static bases, ...
    pub cache_blobs: Amount,
    /// layer directories under `snapshots/`
    pub snapshots: Amount,
    /// records by kind
    pub records: BTreeMap<String, Amount>,
    /// `run` cache mounts
    pub cache_mounts: Amount,
    /// leftovers in `tmp/` and `worker-tmp/`
    pub temp: Amount,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.image_blobs.bytes
            + self.cache_blobs.bytes
            + self.snapshots.bytes
            + self.records.values().map(|a| a.bytes).sum::<u64>()
            + self.cache_mounts.bytes
            + self.temp.bytes
    }
}

#[derive(Debug, Clone)]
struct Item {
    path: PathBuf,
    bytes: u64,
    mtime: SystemTime,
}

/// What a record references.
#[derive(Debug, Default, Clone)]
struct Refs {
    blobs: Vec<Digest>,
    /// snapshot directory names
    snaps: Vec<String>,
    /// names (file names) of layer-commit records
    commits: Vec<String>,
    /// manifests whose children are referenced too
    manifests: Vec<Digest>,
}

#[derive(Debug, Clone)]
struct Record {
    kind: String,
    name: String,
    item: Item,
    /// None: the value does not parse
    refs: Option<Refs>,
}

struct Inventory {
    blobs: BTreeMap<Digest, Item>,
    snaps: BTreeMap<String, Item>,
    records: Vec<Record>,
    /// records of kinds this module does not know: counted, never touched
    other_records: Vec<Record>,
    mounts: BTreeMap<String, Item>,
    temp: Vec<Item>,
    tags: BTreeMap<String, Digest>,
}

fn list(dir: &Path) -> Result<Vec<fs::DirEntry>, GcError> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(rd.flatten().collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(GcError::List {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Disk blocks of a tree, hard links once. Rootless, a step's directories
/// may be unreadable to us: what cannot be read is not counted.
fn tree_bytes(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let Ok(m) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut n = 0;
    if m.nlink() <= 1 || seen.insert((m.dev(), m.ino())) {
        n += m.blocks() * 512;
    }
    if m.is_dir()
        && let Ok(rd) = fs::read_dir(path)
    {
        for e in rd.flatten() {
            n += tree_bytes(&e.path(), seen);
        }
    }
    n
}

fn item(path: PathBuf, seen: &mut HashSet<(u64, u64)>) -> Item {
    // ctime, not mtime: extracted and committed trees carry the tar's (or
    // SOURCE_DATE_EPOCH's) mtimes, but the rename that published an entry
    // set its ctime, which nothing can set back.
    let mtime = fs::symlink_metadata(&path)
        .map(|m| {
            SystemTime::UNIX_EPOCH
                + Duration::new(
                    m.ctime().max(0) as u64,
                    m.ctime_nsec().clamp(0, 999_999_999) as u32,
                )
        })
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Item {
        bytes: tree_bytes(&path, seen),
        mtime,
        path,
    }
}

fn name_of(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn ref_refs(r: &Ref) -> Refs {
    let mut out = Refs::default();
    if let Some(c) = r.config.as_deref().and_then(|c| Digest::parse(c).ok()) {
        out.blobs.push(c);
    }
    for l in &r.layers {
        layer_refs(l, &mut out);
    }
    out
}

fn layer_refs(l: &LayerRef, out: &mut Refs) {
    if let Some(d) = &l.dir {
        out.snaps.push(d.id.clone());
        out.commits.push(name_of(&d.id));
    }
    if l.has_blob() {
        if let Ok(d) = Digest::parse(&l.digest) {
            out.blobs.push(d);
        }
        if !l.diff_id.is_empty() {
            let mut b = l.clone();
            b.dir = None;
            out.snaps.push(b.snapshot_name());
        }
    }
}

fn parse_record(kind: &str, bytes: &[u8]) -> Option<Refs> {
    match kind {
        "build-cache" | "context-layer" | "deb-layer" => serde_json::from_slice::<Ref>(bytes)
            .ok()
            .map(|r| ref_refs(&r)),
        COMMIT_KIND => {
            let l: LayerRef = serde_json::from_slice(bytes).ok()?;
            let mut out = Refs::default();
            if !l.has_blob() {
                return None;
            }
            layer_refs(&l, &mut out);
            Some(out)
        }
        "static-base" => {
            let d = Digest::parse(std::str::from_utf8(bytes).ok()?.trim()).ok()?;
            Some(Refs {
                manifests: vec![d],
                ..Refs::default()
            })
        }
        "content-digest" => {
            let s = std::str::from_utf8(bytes).ok()?;
            s.trim().parse::<kiln_dag::Digest>().ok()?;
            Some(Refs::default())
        }
        "context-stat" | "elf-check" => {
            serde_json::from_slice::<serde_json::Value>(bytes).ok()?;
            Some(Refs::default())
        }
        _ => Some(Refs::default()),
    }
}

fn inventory(store: &Store) -> Result<Inventory, GcError> {
    let root = store.root();
    let mut seen = HashSet::new();
    let mut inv = Inventory {
        blobs: BTreeMap::new(),
        snaps: BTreeMap::new(),
        records: Vec::new(),
        other_records: Vec::new(),
        mounts: BTreeMap::new(),
        temp: Vec::new(),
        tags: store.tags().map_err(|e| GcError::Tags {
            path: root.to_path_buf(),
            reason: e.to_string(),
        })?,
    };
    for e in list(&root.join("blobs").join("sha256"))? {
        let name = e.file_name().to_string_lossy().into_owned();
        match Digest::from_hex(&name) {
            Ok(d) => {
                inv.blobs.insert(d, item(e.path(), &mut seen));
            }
            // not a blob name: nothing can reference it
            Err(_) => inv.temp.push(item(e.path(), &mut seen)),
        }
    }
    for e in list(&snapshot::snapshots_root(store))? {
        let name = e.file_name().to_string_lossy().into_owned();
        inv.snaps.insert(name, item(e.path(), &mut seen));
    }
    for k in list(&root.join("records"))? {
        let kind = k.file_name().to_string_lossy().into_owned();
        for e in list(&k.path())? {
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = fs::read(e.path()).unwrap_or_default();
            let rec = Record {
                refs: parse_record(&kind, &bytes),
                kind: kind.clone(),
                name,
                item: item(e.path(), &mut seen),
            };
            if PRIMARY_KINDS.contains(&kind.as_str()) || kind == COMMIT_KIND {
                inv.records.push(rec);
            } else {
                inv.other_records.push(rec);
            }
        }
    }
    for e in list(&crate::cache_mount::cache_mounts_root(store))? {
        let name = e.file_name().to_string_lossy().into_owned();
        inv.mounts.insert(name, item(e.path(), &mut seen));
    }
    for dir in [store.tmp_dir(), root.join("worker-tmp")] {
        for e in list(&dir)? {
            inv.temp.push(item(e.path(), &mut seen));
        }
    }
    Ok(inv)
}

/// The blobs a manifest (or index) names, itself included, as far as they
/// are present.
fn manifest_closure(store: &Store, top: &Digest, out: &mut HashSet<Digest>) {
    let mut todo = vec![*top];
    while let Some(d) = todo.pop() {
        if !out.insert(d) {
            continue;
        }
        let Ok(bytes) = store.read_blob(&d) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let digest = |x: &serde_json::Value| {
            x.get("digest")
                .and_then(|d| d.as_str())
                .and_then(|s| Digest::parse(s).ok())
        };
        if let Some(c) = v.get("config").and_then(digest) {
            out.insert(c);
        }
        for l in v
            .get("layers")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(d) = digest(l) {
                out.insert(d);
            }
        }
        for m in v
            .get("manifests")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(d) = digest(m) {
                todo.push(d);
            }
        }
    }
}

/// The record kind (kiln-oci's attestation.rs) naming, by image manifest
/// digest, the index that holds the image and its attestation manifest.
const ATTESTATIONS_KIND: &str = "attestations";

/// [`manifest_closure`] of the images tagged in the store, with each
/// image's attestations: a tag names an image manifest or an index (of
/// several platforms, or of one image and its attestation manifest), which
/// lists the attestation manifests itself; an image manifest's attestation
/// index (a tag made by an older kiln, or `kiln sbom sha256:...`) is found
/// through its `attestations` record, so a later push, save or `kiln sbom`
/// still finds the statements.
fn tagged_closure(store: &Store, tags: &BTreeMap<String, Digest>, out: &mut HashSet<Digest>) {
    for d in tags.values() {
        manifest_closure(store, d, out);
    }
    let images: Vec<Digest> = out.iter().copied().collect();
    for d in images {
        let Ok(Some(rec)) = store.get_record(ATTESTATIONS_KIND, d.to_string().as_bytes()) else {
            continue;
        };
        if let Ok(index) = Digest::parse(String::from_utf8_lossy(&rec).trim()) {
            manifest_closure(store, &index, out);
        }
    }
}

/// `kiln cache du`.
pub fn disk_usage(store: &Store) -> Result<Usage, GcError> {
    let inv = inventory(store)?;
    let mut tagged = HashSet::new();
    tagged_closure(store, &inv.tags, &mut tagged);
    let mut u = Usage::default();
    for (d, it) in &inv.blobs {
        if tagged.contains(d) {
            u.image_blobs.add(it.bytes);
        } else {
            u.cache_blobs.add(it.bytes);
        }
    }
    for it in inv.snaps.values() {
        u.snapshots.add(it.bytes);
    }
    for r in inv.records.iter().chain(&inv.other_records) {
        u.records
            .entry(r.kind.clone())
            .or_default()
            .add(r.item.bytes);
    }
    for it in inv.mounts.values() {
        u.cache_mounts.add(it.bytes);
    }
    for it in &inv.temp {
        u.temp.add(it.bytes);
    }
    Ok(u)
}

// ----- prune -----------------------------------------------------------------

/// What `kiln cache prune` removes.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// also the blobs of tagged images (and so their names)
    pub all: bool,
    /// stop once the store is this small, oldest first
    pub keep_storage: Option<u64>,
    /// only what was not used for this long (records: last written or
    /// looked up by a build; other data: last written)
    pub until: Option<Duration>,
}

/// What one prune (or check) removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Removed {
    pub records: Amount,
    pub blobs: Amount,
    pub snapshots: Amount,
    pub cache_mounts: Amount,
    pub temp: Amount,
    pub tags: Vec<String>,
    /// one line per dropped thing (check) or problem met while removing
    pub notes: Vec<String>,
}

impl Removed {
    pub fn bytes(&self) -> u64 {
        self.records.bytes
            + self.blobs.bytes
            + self.snapshots.bytes
            + self.cache_mounts.bytes
            + self.temp.bytes
    }
}

/// What survives: the closure of the kept roots.
struct Kept {
    blobs: HashSet<Digest>,
    snaps: HashSet<String>,
    records: HashSet<(String, String)>,
}

fn closure(store: &Store, inv: &Inventory, tags: bool, kept_primary: &[&Record]) -> Kept {
    let mut k = Kept {
        blobs: HashSet::new(),
        snaps: HashSet::new(),
        records: HashSet::new(),
    };
    if tags {
        tagged_closure(store, &inv.tags, &mut k.blobs);
    }
    let commits: HashMap<&str, &Record> = inv
        .records
        .iter()
        .filter(|r| r.kind == COMMIT_KIND)
        .map(|r| (r.name.as_str(), r))
        .collect();
    let add = |k: &mut Kept, refs: &Refs| {
        k.blobs.extend(refs.blobs.iter().cloned());
        k.snaps.extend(refs.snaps.iter().cloned());
        for m in &refs.manifests {
            manifest_closure(store, m, &mut k.blobs);
        }
    };
    for r in kept_primary {
        k.records.insert((r.kind.clone(), r.name.clone()));
        let Some(refs) = &r.refs else { continue };
        add(&mut k, refs);
        for c in &refs.commits {
            if let Some(cr) = commits.get(c.as_str()) {
                k.records.insert((cr.kind.clone(), cr.name.clone()));
                if let Some(cref) = &cr.refs {
                    add(&mut k, cref);
                }
            }
        }
        // the merged view of a kept chain stays too
        if let ("build-cache" | "context-layer" | "deb-layer", Ok(rf)) = (
            r.kind.as_str(),
            serde_json::from_slice::<Ref>(&fs::read(&r.item.path).unwrap_or_default()),
        ) {
            k.snaps.insert(format!("m{}", &rf.chain_id()[..24]));
        }
    }
    k
}

fn kept_bytes(inv: &Inventory, k: &Kept, mounts: &HashSet<&str>) -> u64 {
    let blobs: u64 = inv
        .blobs
        .iter()
        .filter(|(d, _)| k.blobs.contains(*d))
        .map(|(_, i)| i.bytes)
        .sum();
    let snaps: u64 = inv
        .snaps
        .iter()
        .filter(|(n, _)| k.snaps.contains(*n))
        .map(|(_, i)| i.bytes)
        .sum();
    let recs: u64 = inv
        .records
        .iter()
        .filter(|r| k.records.contains(&(r.kind.clone(), r.name.clone())))
        .map(|r| r.item.bytes)
        .sum();
    let m: u64 = inv
        .mounts
        .iter()
        .filter(|(n, _)| mounts.contains(n.as_str()))
        .map(|(_, i)| i.bytes)
        .sum();
    blobs + snaps + recs + m + inv.other_records.iter().map(|r| r.item.bytes).sum::<u64>()
}

/// Removes build cache. The caller holds [`hold_exclusive`]. `helper` (the
/// kiln binary) removes rootless steps' files from inside their user
/// namespace.
pub fn prune(
    store: &Store,
    opts: &PruneOptions,
    helper: Option<&Path>,
) -> Result<Removed, GcError> {
    let inv = inventory(store)?;
    let now = SystemTime::now();
    let old = |it: &Item| match opts.until {
        None => true,
        Some(age) => now.duration_since(it.mtime).is_ok_and(|a| a >= age),
    };
    // The units prune may drop one by one, oldest first: primary records
    // and cache mounts.
    enum Unit<'a> {
        Record(&'a Record),
        Mount(&'a str),
    }
    let mut units: Vec<(SystemTime, Unit)> = inv
        .records
        .iter()
        .filter(|r| r.kind != COMMIT_KIND)
        .map(|r| (r.item.mtime, Unit::Record(r)))
        .chain(
            inv.mounts
                .iter()
                .map(|(n, it)| (it.mtime, Unit::Mount(n.as_str()))),
        )
        .collect();
    units.sort_by_key(|(t, _)| *t);
    let droppable: Vec<bool> = units
        .iter()
        .map(|(_, u)| match u {
            Unit::Record(r) => old(&r.item),
            Unit::Mount(n) => old(&inv.mounts[*n]),
        })
        .collect();
    // Drop the first `n` droppable units (by age) and keep the rest.
    let plan = |n: usize| {
        let mut dropped = 0;
        let mut recs = Vec::new();
        let mut mounts = HashSet::new();
        for ((_, u), d) in units.iter().zip(&droppable) {
            let drop_it = *d && dropped < n;
            if drop_it {
                dropped += 1;
                continue;
            }
            match u {
                Unit::Record(r) => recs.push(*r),
                Unit::Mount(m) => {
                    mounts.insert(*m);
                }
            }
        }
        (closure(store, &inv, !opts.all, &recs), mounts)
    };
    let n_droppable = droppable.iter().filter(|d| **d).count();
    let (kept, kept_mounts) = match opts.keep_storage {
        None => plan(n_droppable),
        Some(limit) => {
            let mut chosen = plan(n_droppable);
            for n in 0..=n_droppable {
                let p = plan(n);
                if kept_bytes(&inv, &p.0, &p.1) <= limit {
                    chosen = p;
                    break;
                }
            }
            chosen
        }
    };
    let mut out = Removed::default();
    let note = |out: &mut Removed, e: GcError| out.notes.push(crate::chain(&e));
    if opts.all {
        let names: Vec<String> = inv.tags.keys().cloned().collect();
        for n in names {
            match store.remove_tag(&n) {
                Ok(_) => out.tags.push(n),
                Err(e) => out.notes.push(format!("cannot remove the name `{n}`: {e}")),
            }
        }
    }
    // records first: nothing may point at what goes next
    for r in &inv.records {
        if kept.records.contains(&(r.kind.clone(), r.name.clone())) || !old(&r.item) {
            continue;
        }
        match remove_file(&r.item.path) {
            Ok(()) => out.records.add(r.item.bytes),
            Err(e) => note(&mut out, e),
        }
    }
    for (d, it) in &inv.blobs {
        if kept.blobs.contains(d) || !old(it) {
            continue;
        }
        match remove_file(&it.path) {
            Ok(()) => out.blobs.add(it.bytes),
            Err(e) => note(&mut out, e),
        }
    }
    for (n, it) in &inv.snaps {
        if kept.snaps.contains(n) || !old(it) {
            continue;
        }
        match remove_tree(&it.path, helper) {
            Ok(()) => out.snapshots.add(it.bytes),
            Err(e) => note(&mut out, e),
        }
    }
    for (n, it) in &inv.mounts {
        if kept_mounts.contains(n.as_str()) || !old(it) {
            continue;
        }
        // a cache mount in use (its lock held) stays
        if mount_busy(&it.path) {
            continue;
        }
        match remove_tree(&it.path, helper) {
            Ok(()) => out.cache_mounts.add(it.bytes),
            Err(e) => note(&mut out, e),
        }
    }
    for it in &inv.temp {
        if !old(it) {
            continue;
        }
        match remove_tree(&it.path, helper) {
            Ok(()) => out.temp.add(it.bytes),
            Err(e) => note(&mut out, e),
        }
    }
    // lazy blobs nothing kept names any more: only their locators go
    for d in store.list_remote_blobs().unwrap_or_default() {
        if !kept.blobs.contains(&d)
            && let Err(e) = store.remove_remote_blob(&d)
        {
            out.notes.push(format!("lazy blob {d}: {e}"));
        }
    }
    Ok(out)
}

fn mount_busy(base: &Path) -> bool {
    use rustix::fs::{FlockOperation, flock};
    list(base).unwrap_or_default().iter().any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        (n == "lock" || n.starts_with("lock-"))
            && fs::OpenOptions::new()
                .write(true)
                .open(e.path())
                .is_ok_and(|f| flock(&f, FlockOperation::NonBlockingLockExclusive).is_err())
    })
}

fn remove_file(path: &Path) -> Result<(), GcError> {
    tracing::debug!(path = %path.display(), "removing");
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(GcError::Remove {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn remove_tree(path: &Path, helper: Option<&Path>) -> Result<(), GcError> {
    tracing::debug!(path = %path.display(), "removing");
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => return remove_file(path),
        Ok(_) => {}
        Err(_) => return Ok(()),
    }
    snapshot::remove_tree(path, helper);
    if fs::symlink_metadata(path).is_ok() {
        return Err(GcError::Remove {
            path: path.to_path_buf(),
            reason: "some of its files could not be removed".into(),
        });
    }
    Ok(())
}

// ----- check -----------------------------------------------------------------

/// `kiln cache check`: re-hashes every blob and removes those whose bytes do
/// not match their name, then drops every record and image name that
/// references something missing, and removes temp leftovers. The caller
/// holds [`hold_exclusive`]. Afterwards the store is consistent: every
/// record and name refers only to data that is present and intact.
pub fn check(store: &Store, helper: Option<&Path>) -> Result<Removed, GcError> {
    let inv = inventory(store)?;
    let mut out = Removed::default();
    let mut bad_blobs = HashSet::new();
    for (d, it) in &inv.blobs {
        if let Err(e) = store.verify_blob(d) {
            bad_blobs.insert(*d);
            match remove_file(&it.path) {
                Ok(()) => {
                    out.blobs.add(it.bytes);
                    out.notes.push(format!("blob {d}: {e}: removed"));
                }
                Err(re) => out.notes.push(format!("blob {d}: {e}: {re}")),
            }
        }
    }
    // A lazy blob (a base image layer left in its registry) counts as
    // present: it is fetched, verified, when something reads it. Its
    // locator must be readable though.
    let mut lazy = HashSet::new();
    for d in store.list_remote_blobs().map_err(|e| GcError::Remote {
        path: store.root().to_path_buf(),
        reason: e.to_string(),
    })? {
        let ok = store
            .remote_blob(&d)
            .ok()
            .flatten()
            .is_some_and(|b| kiln_registry::Locator::from_bytes(&b).is_ok());
        if ok {
            lazy.insert(d);
            continue;
        }
        match store.remove_remote_blob(&d) {
            Ok(_) => out
                .notes
                .push(format!("lazy blob {d}: unreadable locator: removed")),
            Err(e) => out
                .notes
                .push(format!("lazy blob {d}: unreadable locator: {e}")),
        }
    }
    let has_blob = |d: &Digest| (store.has_blob(d) && !bad_blobs.contains(d)) || lazy.contains(d);
    let manifest_ok = |m: &Digest| -> Result<(), String> {
        let mut all = HashSet::new();
        manifest_closure(store, m, &mut all);
        match all.iter().find(|d| !has_blob(d)) {
            Some(d) => Err(format!("blob {d} is missing")),
            None => Ok(()),
        }
    };
    // Layer-commit records first: a record's directory layer may fall back
    // to its committed blob.
    let mut dropped_commits = HashSet::new();
    let drop_record = |out: &mut Removed, r: &Record, why: String| match remove_file(&r.item.path) {
        Ok(()) => {
            out.records.add(r.item.bytes);
            out.notes
                .push(format!("record {}/{}: {why}: dropped", r.kind, r.name));
        }
        Err(e) => out
            .notes
            .push(format!("record {}/{}: {why}: {e}", r.kind, r.name)),
    };
    for r in inv.records.iter().filter(|r| r.kind == COMMIT_KIND) {
        let why = match &r.refs {
            None => Some("unreadable".to_string()),
            Some(refs) => refs
                .blobs
                .iter()
                .find(|d| !has_blob(d))
                .map(|d| format!("blob {d} is missing")),
        };
        if let Some(why) = why {
            dropped_commits.insert(r.name.clone());
            drop_record(&mut out, r, why);
        }
    }
    let snaps = snapshot::snapshots_root(store);
    for r in inv.records.iter().filter(|r| r.kind != COMMIT_KIND) {
        let why = match &r.refs {
            None => Some("unreadable".to_string()),
            Some(refs) => {
                let mut why = refs.manifests.iter().find_map(|m| manifest_ok(m).err());
                if why.is_none()
                    && matches!(
                        r.kind.as_str(),
                        "build-cache" | "context-layer" | "deb-layer"
                    )
                {
                    why = record_ref_problem(
                        store,
                        &r.item.path,
                        &snaps,
                        &has_blob,
                        &dropped_commits,
                    );
                }
                why
            }
        };
        if let Some(why) = why {
            drop_record(&mut out, r, why);
        }
    }
    for (name, m) in &inv.tags {
        if let Err(why) = manifest_ok(m) {
            match store.remove_tag(name) {
                Ok(_) => {
                    out.tags.push(name.clone());
                    out.notes
                        .push(format!("image `{name}` ({m}): {why}: removed the name"));
                }
                Err(e) => out.notes.push(format!("image `{name}`: {why}: {e}")),
            }
        }
    }
    for it in &inv.temp {
        if remove_tree(&it.path, helper).is_ok() {
            out.temp.add(it.bytes);
        }
    }
    Ok(out)
}

/// Why the Ref stored at `path` cannot be used, if it cannot.
fn record_ref_problem(
    store: &Store,
    path: &Path,
    snaps: &Path,
    has_blob: &dyn Fn(&Digest) -> bool,
    dropped_commits: &HashSet<String>,
) -> Option<String> {
    let r: Ref = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    if let Some(c) = &r.config {
        match Digest::parse(c) {
            Ok(d) if has_blob(&d) => {}
            Ok(d) => return Some(format!("config blob {d} is missing")),
            Err(e) => return Some(format!("bad config digest `{c}`: {e}")),
        }
    }
    for l in &r.layers {
        if let Some(d) = &l.dir {
            let dir_ok = snaps.join(&d.id).is_dir();
            let commit_ok = !dropped_commits.contains(&name_of(&d.id))
                && crate::commit::committed(store, l).is_some();
            if !dir_ok && !commit_ok {
                return Some(format!(
                    "layer directory `{}` is gone and was never committed",
                    snaps.join(&d.id).display()
                ));
            }
        } else {
            match Digest::parse(&l.digest) {
                Ok(d) if has_blob(&d) => {}
                Ok(d) => return Some(format!("layer blob {d} is missing")),
                Err(e) => return Some(format!("bad layer digest `{}`: {e}", l.digest)),
            }
        }
    }
    None
}
