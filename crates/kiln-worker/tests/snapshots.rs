//! The snapshot model on a real temp store: blob layers are extracted once
//! per diff_id and shared, directory layers are committed only on demand
//! (and once), stale scratch directories of dead processes go away, and a
//! record whose directory is gone is a miss.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_layer::WriteOptions;
use kiln_oci::Store;
use kiln_worker::snapshot::{self, Snapshots, TarSpec};
use kiln_worker::union::Union;
use kiln_worker::{Ref, commit, fileop};

fn blob_layer(store: &Store, dir: &Path) -> snapshot::LayerRef {
    snapshot::layer_from_dir(store, dir, &WriteOptions::default()).unwrap()
}

fn tree(root: &Path, files: &[(&str, &str)]) {
    for (p, data) in files {
        let p = root.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
}

fn blobs(store: &Store) -> usize {
    store.list_blobs().unwrap().len()
}

#[test]
fn a_blob_layer_is_extracted_once_and_shared_by_chains() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("home")).unwrap();
    let snaps = Snapshots::new(store.clone(), None);
    tree(
        &tmp.path().join("base"),
        &[("etc/os", "base"), ("usr/bin/x", "x")],
    );
    tree(&tmp.path().join("a"), &[("a", "a")]);
    tree(&tmp.path().join("b"), &[("b", "b")]);
    let base = blob_layer(&store, &tmp.path().join("base"));
    let r1 = Ref {
        layers: vec![base.clone(), blob_layer(&store, &tmp.path().join("a"))],
        config: None,
    };
    let r2 = Ref {
        layers: vec![base.clone(), blob_layer(&store, &tmp.path().join("b"))],
        config: None,
    };
    let l1 = snaps.lowers(&r1).unwrap();
    let ino = fs::metadata(l1[0].join("etc/os")).unwrap().ino();
    let l2 = snaps.lowers(&r2).unwrap();
    assert_eq!(l1[0], l2[0], "the shared layer has one directory");
    assert_eq!(fs::metadata(l2[0].join("etc/os")).unwrap().ino(), ino);
    assert_ne!(l1[1], l2[1]);
    let dirs = fs::read_dir(snapshot::snapshots_root(&store))
        .unwrap()
        .count();
    assert_eq!(dirs, 3, "base, a and b: nothing merged per chain");
    // Each chain reads as its own union.
    let u1 = snaps.union(&r1).unwrap();
    assert_eq!(u1.read_to_string(Path::new("etc/os")).unwrap(), "base");
    assert!(u1.lookup(Path::new("b")).unwrap().is_none());
    assert!(
        snaps
            .union(&r2)
            .unwrap()
            .lookup(Path::new("b"))
            .unwrap()
            .is_some()
    );
}

#[test]
fn directory_layers_are_committed_on_demand_once_and_like_before() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("home")).unwrap();
    let snaps = Snapshots::new(store.clone(), None);
    let content = [("out/hello", "hello"), ("etc/conf", "x=1")];
    tree(&tmp.path().join("same"), &content);
    let up = snapshot::temp_dir(&store, "exec").unwrap();
    tree(&up, &content);
    let before = blobs(&store);
    let spec = TarSpec {
        overlay_whiteouts: true,
        xattrs: true,
        epoch: 0,
    };
    let l = snaps.add_dir_layer(&up, b"key", spec).unwrap();
    assert!(!up.exists(), "the upper was moved, not copied");
    assert!(!l.has_blob());
    assert_eq!(
        blobs(&store),
        before,
        "making a directory layer writes no blob"
    );
    let r = Ref {
        layers: vec![l.clone()],
        config: None,
    };
    assert!(r.complete(&store));

    let c = commit::commit_layer(&snaps, &l).unwrap();
    assert_eq!(blobs(&store), before + 1);
    // The same bytes as writing the tar right away with the same options.
    let direct = snapshot::layer_from_dir(
        &store,
        &tmp.path().join("same"),
        &WriteOptions {
            overlay_whiteouts: true,
            id_map: None,
            source_date_epoch: Some(0),
            xattrs: true,
        },
    )
    .unwrap();
    assert_eq!(c.digest, direct.digest);
    assert_eq!(c.diff_id, direct.diff_id);
    // A second commit (another build) reuses the recorded one.
    assert_eq!(commit::commit_layer(&snaps, &l).unwrap(), c);
    assert_eq!(blobs(&store), before + 1);

    // With its directory gone, the committed layer still counts and is
    // extracted back from its blob; uncommitted, it is a miss.
    let dir = snapshot::snapshots_root(&store).join(l.snapshot_name());
    fs::remove_dir_all(&dir).unwrap();
    assert!(r.complete(&store));
    let back = snaps.layer_dir(&l).unwrap();
    assert_eq!(fs::read(back.join("out/hello")).unwrap(), b"hello");

    let up2 = snapshot::temp_dir(&store, "exec").unwrap();
    tree(&up2, &[("x", "x")]);
    let l2 = snaps.add_dir_layer(&up2, b"key", spec).unwrap();
    assert_ne!(l2.dir, l.dir, "every directory layer gets a fresh id");
    let r2 = Ref {
        layers: vec![l2.clone()],
        config: None,
    };
    assert!(r2.complete(&store));
    fs::remove_dir_all(snapshot::snapshots_root(&store).join(l2.snapshot_name())).unwrap();
    assert!(
        !r2.complete(&store),
        "a gone directory makes the record a miss"
    );
    let e = snaps.layer_dir(&l2).unwrap_err();
    assert!(e.to_string().contains("is gone"), "{e}");
}

#[test]
fn stale_worker_tmp_entries_of_dead_processes_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("home")).unwrap();
    let wt = store.root().join("worker-tmp");
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let stale = wt.join(format!("exec-{dead}-3"));
    tree(&stale, &[("usr/lib/big", "half an apt install")]);
    let ours = wt.join(format!("exec-{}-7", std::process::id()));
    tree(&ours, &[("f", "in use")]);
    let sandbox = wt.join(".kiln-sandbox-abc");
    fs::create_dir_all(sandbox.join("work/work")).unwrap();
    // overlay leaves its workdir at mode 000
    fs::set_permissions(
        sandbox.join("work/work"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();

    // Another worker holds the scratch area: only pid-named entries of dead
    // processes may go.
    fs::create_dir_all(store.root().join("locks")).unwrap();
    let other = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.root().join("locks/worker-tmp.lock"))
        .unwrap();
    rustix::fs::flock(&other, rustix::fs::FlockOperation::LockShared).unwrap();
    let mine = snapshot::clean_stale_tmp(&store, None);
    assert!(mine.is_some());
    assert!(!stale.exists(), "the dead process's directory stays");
    assert!(ours.exists(), "a live process's directory was removed");
    assert!(
        sandbox.exists(),
        "a sandbox directory of a running worker was removed"
    );
    drop(other);
    drop(mine);
    // Alone on the store: sandbox state directories are stale too.
    let _held = snapshot::clean_stale_tmp(&store, None);
    assert!(!sandbox.exists());
    assert!(ours.exists());
}

#[test]
fn content_digests_through_the_union_match_a_merged_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("home")).unwrap();
    let snaps = Snapshots::new(store.clone(), None);
    tree(
        &tmp.path().join("lo"),
        &[
            ("app/a", "1"),
            ("app/b", "2"),
            ("app/sub/c", "3"),
            ("big/blob", "x"),
        ],
    );
    tree(&tmp.path().join("hi"), &[("app/a", "one"), ("app/d", "4")]);
    let r = Ref {
        layers: vec![
            blob_layer(&store, &tmp.path().join("lo")),
            blob_layer(&store, &tmp.path().join("hi")),
        ],
        config: None,
    };
    let u = snaps.union(&r).unwrap();
    let m = snapshot::merged(&store, &r).unwrap();
    let plain = Union::plain(&m);
    for (src, inc) in [
        ("/app", vec![]),
        ("/app/a", vec![]),
        ("/app", vec!["sub/**".to_string()]),
    ] {
        let sel = kiln_solver::Selector {
            path: src.to_string(),
            include: inc.clone(),
            exclude: vec![],
            owners: false,
            follow: false,
        };
        assert_eq!(
            fileop::content_digest(&u, &sel).unwrap(),
            fileop::content_digest(&plain, &sel).unwrap(),
            "{src} {inc:?}"
        );
    }
    assert_eq!(fs::read(m.join("app/a")).unwrap(), b"one");
}
