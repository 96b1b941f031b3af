//! File ops on real layer chains in a temp store: each op adds one layer,
//! removals are whiteouts, and symlinks in the base never lead a write out
//! of the snapshot.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use kiln_dag::{CopyAction, FileAction, FileOp};
use kiln_layer::WriteOptions;
use kiln_oci::Store;
use kiln_worker::{Ref, fileop, snapshot};

fn layer_ref(store: &Store, dir: &std::path::Path) -> Ref {
    let l = snapshot::layer_from_dir(store, dir, &WriteOptions::default()).unwrap();
    Ref {
        layers: vec![l],
        config: None,
    }
}

#[test]
fn file_ops_add_one_layer_each_and_stay_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("home")).unwrap();
    let base_dir = tmp.path().join("base");
    fs::create_dir_all(base_dir.join("usr/bin")).unwrap();
    fs::create_dir_all(base_dir.join("etc")).unwrap();
    fs::write(base_dir.join("etc/old"), "old").unwrap();
    symlink("usr/bin", base_dir.join("bin")).unwrap();
    // A symlink that points far outside the root.
    symlink("/../../../../tmp", base_dir.join("evil")).unwrap();
    let base = layer_ref(&store, &base_dir);

    let src_dir = tmp.path().join("src");
    fs::create_dir_all(&src_dir).unwrap();
    fs::write(src_dir.join("tool"), "#!tool").unwrap();
    fs::set_permissions(src_dir.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    let src = layer_ref(&store, &src_dir);

    let op = FileOp {
        actions: vec![
            FileAction::Copy(CopyAction::new(1, "tool", "/bin/")),
            FileAction::Mkfile {
                path: "/evil/escaped".into(),
                mode: 0o644,
                data: b"inside".to_vec(),
                chown: None,
            },
            FileAction::Mkdir {
                path: "/var/lib/app".into(),
                mode: 0o700,
                parents: true,
                chown: None,
            },
            FileAction::Symlink {
                target: "/usr/bin/tool".into(),
                link: "/usr/local/tool".into(),
            },
            FileAction::Rm {
                path: "/etc/old".into(),
                allow_not_found: false,
            },
        ],
    };
    let snaps = snapshot::Snapshots::new(store.clone(), None);
    let out = fileop::run(&snaps, &op, &[base.clone(), src], 0).unwrap();
    assert_eq!(out.layers.len(), 2);
    assert_eq!(out.layers[0], base.layers[0]);

    let m = snapshot::merged(&store, &out).unwrap();
    // `/bin` is `usr/bin` in the base: the copy lands there.
    assert_eq!(fs::read(m.join("usr/bin/tool")).unwrap(), b"#!tool");
    assert_eq!(
        fs::metadata(m.join("usr/bin/tool"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert!(
        fs::symlink_metadata(m.join("bin"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // The escaping symlink resolves inside the root.
    assert_eq!(fs::read(m.join("tmp/escaped")).unwrap(), b"inside");
    assert!(!std::path::Path::new("/tmp/escaped").exists());
    assert_eq!(
        fs::metadata(m.join("var/lib/app"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_eq!(
        fs::read_link(m.join("usr/local/tool")).unwrap(),
        std::path::Path::new("/usr/bin/tool")
    );
    assert!(!m.join("etc/old").exists(), "rm left the file");
    assert!(m.join("etc").is_dir());

    // Removing what is not there is an error unless allowed.
    let rm = |allow| FileOp {
        actions: vec![FileAction::Rm {
            path: "/nope".into(),
            allow_not_found: allow,
        }],
    };
    let e = fileop::run(&snaps, &rm(false), std::slice::from_ref(&base), 0).unwrap_err();
    assert!(e.to_string().contains("/nope"), "{e}");
    fileop::run(&snaps, &rm(true), &[base], 0).unwrap();

    // The same op on the same inputs gives the same layer.
    let again = fileop::run(
        &snaps,
        &op,
        &[layer_ref(&store, &base_dir), layer_ref(&store, &src_dir)],
        0,
    )
    .unwrap();
    assert_eq!(again, out);
}

/// A tar with `..` names, an absolute name and a symlink it then writes
/// through, `ADD`ed with unpack: everything lands inside the root, and the
/// same file copied without unpack stays one file.
#[test]
fn unpack_extracts_archives_inside_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("home")).unwrap();
    let base_dir = tmp.path().join("base");
    fs::create_dir_all(base_dir.join("etc")).unwrap();
    let base = layer_ref(&store, &base_dir);

    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let out_link = outside.display().to_string();
    let archive = |through_link: bool| {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            // set_path refuses `..`: write the raw name as a hostile tar would
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        add("ok.txt", tar::EntryType::Regular, None, b"ok");
        add("../../../../up.txt", tar::EntryType::Regular, None, b"up");
        add("/abs.txt", tar::EntryType::Regular, None, b"abs");
        if through_link {
            add("lnk", tar::EntryType::Symlink, Some(&out_link), b"");
            add("lnk/pwned", tar::EntryType::Regular, None, b"pwned");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
        gz.finish().unwrap()
    };
    let src_of = |through_link| {
        let dir = tmp.path().join(format!("src-{through_link}"));
        fs::create_dir_all(&dir).unwrap();
        // the name says nothing: content decides
        fs::write(dir.join("bundle"), archive(through_link)).unwrap();
        layer_ref(&store, &dir)
    };
    let src = src_of(true);

    let copy = |unpack| FileOp {
        actions: vec![FileAction::Copy(CopyAction {
            unpack,
            ..CopyAction::new(1, "bundle", "/x")
        })],
    };
    let snaps = snapshot::Snapshots::new(store.clone(), None);
    let r = fileop::run(&snaps, &copy(true), &[base.clone(), src.clone()], 0);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "wrote outside");
    assert!(!tmp.path().join("up.txt").exists());
    // Writing through the archive's own symlink is refused.
    let e = r.unwrap_err().to_string();
    assert!(e.contains("bundle"), "{e}");
    // `..` and absolute names stay below the destination.
    let out = fileop::run(&snaps, &copy(true), &[base.clone(), src_of(false)], 0).unwrap();
    let m = snapshot::merged(&store, &out).unwrap();
    assert_eq!(fs::read(m.join("x/ok.txt")).unwrap(), b"ok");
    assert!(!tmp.path().join("up.txt").exists());
    assert!(!std::path::Path::new("/abs.txt").exists());
    let out = fileop::run(&snaps, &copy(false), &[base, src], 0).unwrap();
    let m = snapshot::merged(&store, &out).unwrap();
    assert!(m.join("x").is_file(), "a copy without unpack is one file");
}
