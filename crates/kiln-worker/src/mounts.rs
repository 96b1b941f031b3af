//! Mounts of `run` steps: turns the DAG's mounts of one exec into the
//! runtime's mounts plus extra environment, and holds what they need (cache
//! locks, secret files, throwaway copies) until the step is over.
//!
//! - cache: a persistent directory `KILN_HOME/cache-mounts/<sha256 of id>/data`
//!   (private extra instances `data-N`), owned by the invoking user, which
//!   is root inside a rootless step's user namespace. `shared` steps hold a
//!   shared flock on it, `locked` steps an exclusive one (others wait),
//!   `private` steps take the first instance nobody holds and create one
//!   when all are busy. Never part of a layer or a cache key. With
//!   `--cache-to ...,cache-mounts=true` instance 0 is exported as a
//!   deterministic tar ([`crate::cache_mount::export_mount`]); an imported cache's copy is
//!   extracted into an empty instance when a step that runs mounts it
//!   (`import_mount`, under the instance's exclusive lock, through a temp
//!   directory renamed into place, so a step never sees a partial cache).
//! - secret: the bytes given with `--secret` are written to a private file
//!   (0700 directory on a tmpfs when there is one, so they never touch the
//!   store's disk), bind-mounted read-only and deleted after the step.
//!   `SecretEnv` only adds to the step's process environment.
//! - tmpfs: passed through.
//! - bind: the selected path of an input's merged snapshot, resolved inside
//!   that snapshot; `.rw()` gets a throwaway copy.

use std::collections::HashMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use kiln_dag::{CacheSharing, MountKind};
use kiln_oci::Store;

use crate::bind::{copy_tree, resolve_in_root};
use crate::cache_io::CacheImport;
use crate::cache_mount::{acquire_cache, cache_base, cache_mounts_root};
use crate::secrets::{Secrets, private_dir, write_secret};
use crate::snapshot::{self, Ref, SnapshotError};

/// Why a step's mounts could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(
        "the step needs secret `{id}` (at `{target}`) but it was not given: pass `--secret id={id},src=PATH` or `--secret id={id},env=VAR` to `kiln build`"
    )]
    MissingSecret { id: String, target: String },
    #[error(
        "the step needs the SSH agent `{id}` (at `{target}`) but it was not given: pass `--ssh {id}` (the agent of `$SSH_AUTH_SOCK`) or `--ssh {id}=SOCKET` to `kiln build`"
    )]
    MissingAgent { id: String, target: String },
    #[error("SSH agent `{id}`: cannot listen on `{path}` for the step")]
    AgentRelay {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret `{id}` cannot be the environment variable `{var}`: {reason}")]
    SecretEnv {
        id: String,
        var: String,
        reason: &'static str,
    },
    #[error("cannot write secret `{id}` to a private file under `{path}`: {source}")]
    SecretFile {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache mount `{id}`: cannot prepare `{path}`: {source}")]
    CacheDir {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bind mount at `{target}`: input {input} of the step does not exist")]
    BindInput { target: String, input: usize },
    #[error("bind mount at `{target}`: `{selector}` is not in its source: {reason}")]
    BindSource {
        target: String,
        selector: String,
        reason: String,
    },
    #[error("bind mount at `{target}`: cannot copy `{path}` for a writable bind: {source}")]
    BindCopy {
        target: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the step was cancelled while waiting for cache mount `{id}`")]
    Cancelled { id: String },
    #[error("cache mount `{id}`: cannot export `{path}`: {reason}")]
    CacheExport {
        id: String,
        path: PathBuf,
        reason: String,
    },
    #[error("cache mount `{id}`: cannot import blob {digest} from the cache: {reason}")]
    CacheImport {
        id: String,
        digest: String,
        reason: String,
    },
}

/// The runtime mounts and extra environment of one step. Dropping it
/// releases cache locks and deletes secret files and throwaway copies.
#[derive(Default)]
pub struct Prepared {
    pub mounts: Vec<kiln_runtime::Mount>,
    /// `(NAME, VALUE)` from `SecretEnv` mounts: the step's process only.
    pub env: Vec<(String, String)>,
    _locks: Vec<OwnedFd>,
    /// forwarded SSH agents, stopped before `cleanup` removes their sockets
    relays: Vec<crate::ssh::Relay>,
    cleanup: Vec<PathBuf>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&String> = self.env.iter().map(|(k, _)| k).collect();
        f.debug_struct("Prepared")
            .field("mounts", &self.mounts)
            .field("env", &names)
            .finish()
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        self.relays.clear();
        for p in self.cleanup.drain(..) {
            if let Err(e) = fs::remove_dir_all(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a step's mount scratch directory");
            }
        }
    }
}

/// Prepares the mounts of one step. `inputs` are the step's inputs (bind
/// sources refer to them by index); an empty cache mount that `import`
/// (`--cache-from`) holds is filled from it first; waiting for a cache lock
/// gives up when `cancel` is set, and is announced once through `on_wait`
/// (a line for the step's output). `agents` are the `--ssh` agents.
// each argument is a different input of the step; a struct would only
// rename them
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    store: &Store,
    mounts: &[kiln_dag::Mount],
    inputs: &[Ref],
    secrets: &Secrets,
    agents: &crate::ssh::SshAgents,
    import: Option<&CacheImport>,
    cancel: &AtomicBool,
    on_wait: &mut dyn FnMut(&str),
) -> Result<Prepared, MountError> {
    let mut out = Prepared::default();
    // Locks are taken in one global order (by directory), so two steps that
    // lock the same two caches cannot deadlock each other.
    let mut caches: Vec<(usize, &str, CacheSharing)> = mounts
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match &m.kind {
            MountKind::Cache { id, sharing } => Some((i, id.as_str(), *sharing)),
            _ => None,
        })
        .collect();
    caches.sort_by_key(|(_, id, _)| cache_base(store, id));
    let mut cache_sources: HashMap<usize, PathBuf> = HashMap::new();
    for (i, id, sharing) in caches {
        let (dir, lock) = acquire_cache(store, id, sharing, import, cancel, on_wait)?;
        out._locks.push(lock);
        cache_sources.insert(i, dir);
    }
    let mut secret_dir: Option<PathBuf> = None;
    for (i, m) in mounts.iter().enumerate() {
        let kind = match &m.kind {
            MountKind::Cache { .. } => {
                let source = cache_sources
                    .remove(&i)
                    .ok_or_else(|| MountError::CacheDir {
                        id: m.target.clone(),
                        path: cache_mounts_root(store),
                        source: std::io::Error::other("cache lock not taken"),
                    })?;
                kiln_runtime::MountKind::Cache { source }
            }
            MountKind::Tmpfs { size } => kiln_runtime::MountKind::Tmpfs { size: *size },
            MountKind::Secret {
                id,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(value) = secrets.get(id) else {
                    if *required {
                        return Err(MountError::MissingSecret {
                            id: id.clone(),
                            target: m.target.clone(),
                        });
                    }
                    continue;
                };
                let dir = scratch_dir(&mut out, &mut secret_dir).map_err(|(path, source)| {
                    MountError::SecretFile {
                        id: id.clone(),
                        path,
                        source,
                    }
                })?;
                let file = dir.join(i.to_string());
                write_secret(&file, value, *mode, *uid, *gid).map_err(|source| {
                    MountError::SecretFile {
                        id: id.clone(),
                        path: dir.clone(),
                        source,
                    }
                })?;
                kiln_runtime::MountKind::Secret { source: file }
            }
            MountKind::Ssh {
                id,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(sockets) = agents.sockets(id) else {
                    if *required {
                        return Err(MountError::MissingAgent {
                            id: id.clone(),
                            target: m.target.clone(),
                        });
                    }
                    continue;
                };
                let dir = scratch_dir(&mut out, &mut secret_dir).map_err(|(path, source)| {
                    MountError::AgentRelay {
                        id: id.clone(),
                        path,
                        source,
                    }
                })?;
                let sock = dir.join(format!("ssh-{i}"));
                let relay = crate::ssh::Relay::start(&sock, sockets, *mode, *uid, *gid).map_err(
                    |source| MountError::AgentRelay {
                        id: id.clone(),
                        path: sock.clone(),
                        source,
                    },
                )?;
                out.relays.push(relay);
                kiln_runtime::MountKind::Socket { source: sock }
            }
            MountKind::SecretEnv { id, required } => {
                let Some(value) = secrets.get(id) else {
                    if *required {
                        return Err(MountError::MissingSecret {
                            id: id.clone(),
                            target: format!("${}", m.target),
                        });
                    }
                    continue;
                };
                let serr = |reason| MountError::SecretEnv {
                    id: id.clone(),
                    var: m.target.clone(),
                    reason,
                };
                let value = String::from_utf8(value.to_vec())
                    .map_err(|_| serr("its value is not UTF-8"))?;
                if value.contains('\0') {
                    return Err(serr("its value contains a NUL byte"));
                }
                out.env.push((m.target.clone(), value));
                continue;
            }
            MountKind::Bind {
                input,
                selector,
                readonly,
            } => {
                let r = inputs.get(*input).ok_or_else(|| MountError::BindInput {
                    target: m.target.clone(),
                    input: *input,
                })?;
                let root = snapshot::merged(store, r)?;
                let source =
                    resolve_in_root(&root, selector).map_err(|reason| MountError::BindSource {
                        target: m.target.clone(),
                        selector: selector.clone(),
                        reason,
                    })?;
                if *readonly {
                    kiln_runtime::MountKind::Bind {
                        source,
                        readonly: true,
                    }
                } else {
                    // The snapshot is shared by later steps: writes go to a
                    // copy that is dropped with the step.
                    let scratch = snapshot::temp_dir(store, "bind")?;
                    out.cleanup.push(scratch.clone());
                    let copy = scratch.join("src");
                    copy_tree(&source, &copy).map_err(|e| MountError::BindCopy {
                        target: m.target.clone(),
                        path: source.clone(),
                        source: e,
                    })?;
                    kiln_runtime::MountKind::Bind {
                        source: copy,
                        readonly: false,
                    }
                }
            }
        };
        out.mounts.push(kiln_runtime::Mount {
            target: m.target.clone(),
            kind,
        });
    }
    Ok(out)
}

/// The step's private directory for secret files and agent sockets (0700,
/// on a tmpfs when there is one), made on first use and removed with `out`.
fn scratch_dir(
    out: &mut Prepared,
    dir: &mut Option<PathBuf>,
) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    if let Some(d) = dir {
        return Ok(d.clone());
    }
    let d = private_dir()?;
    out.cleanup.push(d.clone());
    *dir = Some(d.clone());
    Ok(d)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;
    use std::time::Duration;

    use kiln_oci::Digest;

    use super::*;
    use crate::cache_mount::{cache_dir, export_mount, is_empty_dir};

    static NO_AGENTS: std::sync::LazyLock<crate::ssh::SshAgents> =
        std::sync::LazyLock::new(crate::ssh::SshAgents::default);

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join("home")).unwrap();
        (d, s)
    }

    fn mount(target: &str, kind: MountKind) -> kiln_dag::Mount {
        kiln_dag::Mount {
            target: target.into(),
            kind,
        }
    }

    fn cache(id: &str, sharing: CacheSharing) -> kiln_dag::Mount {
        mount(
            "/c",
            MountKind::Cache {
                id: id.into(),
                sharing,
            },
        )
    }

    fn source(p: &Prepared, i: usize) -> PathBuf {
        match &p.mounts[i].kind {
            kiln_runtime::MountKind::Cache { source }
            | kiln_runtime::MountKind::Secret { source }
            | kiln_runtime::MountKind::Bind { source, .. } => source.clone(),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn cache_sharing_modes() {
        let (_d, st) = store();
        let no = AtomicBool::new(false);
        let none = Secrets::default();
        let prep = |m: kiln_dag::Mount, c: &AtomicBool| {
            prepare(
                &st,
                &[m],
                &[],
                &none,
                &NO_AGENTS,
                None,
                c,
                &mut |_: &str| {},
            )
        };

        // shared: two holders, one directory, under KILN_HOME
        let a = prep(cache("x", CacheSharing::Shared), &no).unwrap();
        let b = prep(cache("x", CacheSharing::Shared), &no).unwrap();
        assert_eq!(source(&a, 0), source(&b, 0));
        assert_eq!(source(&a, 0), cache_dir(&st, "x"));
        assert!(source(&a, 0).starts_with(st.root()) && source(&a, 0).is_dir());

        // private: a busy instance makes a new one; a free one is reused
        let p1 = prep(cache("x", CacheSharing::Private), &no).unwrap();
        let p2 = prep(cache("x", CacheSharing::Private), &no).unwrap();
        assert_ne!(source(&p1, 0), source(&p2, 0));
        let p1_dir = source(&p1, 0);
        drop(p1);
        let p3 = prep(cache("x", CacheSharing::Private), &no).unwrap();
        assert_eq!(source(&p3, 0), p1_dir);
        drop((p2, p3));

        // locked waits for shared holders; a cancel ends the wait
        let cancelled = AtomicBool::new(true);
        let e = prep(cache("x", CacheSharing::Locked), &cancelled).unwrap_err();
        assert!(matches!(e, MountError::Cancelled { .. }), "{e}");
        drop((a, b));
        let l = prep(cache("x", CacheSharing::Locked), &no).unwrap();
        let e = prep(cache("x", CacheSharing::Shared), &cancelled).unwrap_err();
        assert!(matches!(e, MountError::Cancelled { .. }), "{e}");
        // the wait is announced once
        let mut said = Vec::new();
        let e = prepare(
            &st,
            &[cache("x", CacheSharing::Locked)],
            &[],
            &none,
            &NO_AGENTS,
            None,
            &cancelled,
            &mut |m: &str| said.push(m.to_string()),
        )
        .unwrap_err();
        assert!(matches!(e, MountError::Cancelled { .. }), "{e}");
        assert_eq!(
            said,
            ["kiln: waiting for cache mount `x`: another step holds it\n"]
        );
        // another id is independent
        prep(cache("y", CacheSharing::Locked), &cancelled).unwrap();
        // a waiting step gets the lock when the holder is done
        std::thread::scope(|s| {
            let t = s.spawn(|| prep(cache("x", CacheSharing::Locked), &no).map(|_| ()));
            std::thread::sleep(Duration::from_millis(100));
            assert!(!t.is_finished());
            drop(l);
            t.join().unwrap().unwrap();
        });
    }

    /// A cache mount exported from one store fills an empty one of another
    /// (through an OCI layout, as `--cache-from type=local` reads it), keeps
    /// a non-empty one, and a corrupt blob leaves it empty.
    #[test]
    fn cache_mounts_export_deterministically_and_import_into_empty_mounts() {
        let (_d1, st1) = store();
        assert!(export_mount(&st1, "go").unwrap().is_none(), "no mount yet");
        let data = cache_dir(&st1, "go");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::write(data.join("sub/obj"), "object code").unwrap();
        fs::write(cache_base(&st1, "go").join("lock"), "").unwrap();
        let a = export_mount(&st1, "go").unwrap().unwrap();
        assert_eq!(a.id, "go");
        // unchanged: the same blob, from the note, and also when re-tarred
        assert_eq!(export_mount(&st1, "go").unwrap().unwrap(), a);
        fs::remove_file(cache_base(&st1, "go").join("exported.json")).unwrap();
        assert_eq!(export_mount(&st1, "go").unwrap().unwrap(), a);
        // changed: another blob
        fs::write(data.join("sub/obj"), "other code!").unwrap();
        let b = export_mount(&st1, "go").unwrap().unwrap();
        assert_ne!(b.digest, a.digest);

        let layout = tempfile::tempdir().unwrap();
        let blobs = layout.path().join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let d = Digest::parse(&b.digest).unwrap();
        fs::write(blobs.join(d.hex()), st1.read_blob(&d).unwrap()).unwrap();
        let import = CacheImport::of_mounts(layout.path(), vec![b.clone()]);
        let no = AtomicBool::new(false);
        let none = Secrets::default();
        for sharing in [
            CacheSharing::Shared,
            CacheSharing::Locked,
            CacheSharing::Private,
        ] {
            let (_d2, st2) = store();
            let p = prepare(
                &st2,
                &[cache("go", sharing)],
                &[],
                &none,
                &NO_AGENTS,
                Some(&import),
                &no,
                &mut |_: &str| {},
            )
            .unwrap();
            assert_eq!(
                fs::read_to_string(source(&p, 0).join("sub/obj")).unwrap(),
                "other code!",
                "{sharing:?}"
            );
        }

        // a non-empty local mount is kept
        let (_d3, st3) = store();
        fs::create_dir_all(cache_dir(&st3, "go")).unwrap();
        fs::write(cache_dir(&st3, "go").join("mine"), "local").unwrap();
        let p = prepare(
            &st3,
            &[cache("go", CacheSharing::Shared)],
            &[],
            &none,
            &NO_AGENTS,
            Some(&import),
            &no,
            &mut |_: &str| {},
        )
        .unwrap();
        assert!(source(&p, 0).join("mine").is_file());
        assert!(!source(&p, 0).join("sub").exists());

        // a corrupt blob: an empty mount, no temp directory left
        fs::write(blobs.join(d.hex()), b"garbage").unwrap();
        let (_d4, st4) = store();
        let p = prepare(
            &st4,
            &[cache("go", CacheSharing::Shared)],
            &[],
            &none,
            &NO_AGENTS,
            Some(&import),
            &no,
            &mut |_: &str| {},
        )
        .unwrap();
        assert!(is_empty_dir(&source(&p, 0)));
        let names: Vec<String> = fs::read_dir(cache_base(&st4, "go"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with("import-")), "{names:?}");
    }

    #[test]
    fn secrets_are_private_files_or_env_and_removed_after() {
        let (_d, st) = store();
        let no = AtomicBool::new(false);
        let mut s = Secrets::default();
        s.insert("tok", "s3cr3t");
        let mounts = [
            mount(
                "/run/secrets/tok",
                MountKind::Secret {
                    id: "tok".into(),
                    required: true,
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
            ),
            mount(
                "TOKEN",
                MountKind::SecretEnv {
                    id: "tok".into(),
                    required: true,
                },
            ),
            mount(
                "/run/secrets/opt",
                MountKind::Secret {
                    id: "opt".into(),
                    required: false,
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
            ),
        ];
        let p = prepare(
            &st,
            &mounts,
            &[],
            &s,
            &NO_AGENTS,
            None,
            &no,
            &mut |_: &str| {},
        )
        .unwrap();
        assert_eq!(p.mounts.len(), 1, "an optional missing secret is absent");
        let f = source(&p, 0);
        assert_eq!(fs::read(&f).unwrap(), b"s3cr3t");
        assert!(!f.starts_with(st.root()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&f), 0o400);
        assert_eq!(mode(f.parent().unwrap()), 0o700);
        assert_eq!(p.env, vec![("TOKEN".to_string(), "s3cr3t".to_string())]);
        assert!(!format!("{p:?}").contains("s3cr3t"));
        drop(p);
        assert!(!f.exists() && !f.parent().unwrap().exists());

        let e = prepare(
            &st,
            &mounts,
            &[],
            &Secrets::default(),
            &NO_AGENTS,
            None,
            &no,
            &mut |_: &str| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("secret `tok`") && e.contains("--secret id=tok,src=PATH"),
            "{e}"
        );
    }
}
