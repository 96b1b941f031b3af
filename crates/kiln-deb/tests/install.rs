//! Installation without maintainer scripts: real bookworm packages
//! unpacked, merged /usr kept, dpkg records where distroless keeps them,
//! the same bytes every time; hostile `.deb` files (path escapes, symlinks
//! out, truncation, a bad package name) confined or refused.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_deb::{DebInput, InstallError, Repository, Request, Resolver};
use kiln_layer::{ApplyOptions, WriteOptions};
use kiln_store::{Digest, Store};

/// The python3 closure from the shared store, downloaded if needed.
fn python3_debs(store: &Store) -> (Repository, Vec<kiln_deb::DebRef>) {
    let source = common::bookworm();
    let repo = common::open(&source, store);
    let res = Resolver::new(&repo.index, &source.arch)
        .resolve(&Request {
            packages: vec!["python3".into()],
            exclude: vec![],
        })
        .unwrap();
    let debs: Vec<_> = res
        .packages
        .iter()
        .map(|id| repo.deb(*id).unwrap())
        .collect();
    common::rt()
        .block_on(kiln_deb::download(
            &source,
            &debs,
            &kiln_deb::Fetcher::new().unwrap(),
            store,
        ))
        .unwrap();
    (repo, debs)
}

fn inputs(store: &Store, debs: &[kiln_deb::DebRef]) -> Vec<DebInput> {
    debs.iter()
        .map(|d| DebInput {
            label: format!("{}_{}", d.name, d.version),
            file: File::open(store.blob_path(&d.sha256)).unwrap(),
        })
        .collect()
}

fn layer_digest(dir: &Path) -> Digest {
    let mut out = Vec::new();
    kiln_layer::write_tar(
        dir,
        &mut out,
        &WriteOptions {
            overlay_whiteouts: false,
            id_map: None,
            source_date_epoch: None,
            xattrs: true,
        },
    )
    .unwrap();
    Digest::of(&out)
}

#[test]
fn python3_installs_runs_and_is_deterministic() {
    let store = common::store();
    let (_repo, debs) = python3_debs(&store);
    let a = tempfile::tempdir().unwrap();
    let sum = kiln_deb::install(a.path(), inputs(&store, &debs), &ApplyOptions::default())
        .unwrap_or_else(|e| panic!("{}", kiln_types::error_chain(&e)));
    assert_eq!(sum.packages.len(), debs.len());
    let root = a.path();
    for m in kiln_deb::install::MERGED {
        let link = std::fs::read_link(root.join(m)).unwrap();
        assert_eq!(link, PathBuf::from(format!("usr/{m}")), "{m}");
    }
    // libc6 ships its loader under ./lib64 and ./lib: they land in /usr
    assert!(root.join("usr/lib64/ld-linux-x86-64.so.2").exists() || !cfg!(target_arch = "x86_64"));
    assert!(root.join("usr/bin/python3.11").is_file());
    // slim like Debian's slim images: no manuals or translations, the
    // copyright of every package kept
    assert!(!root.join("usr/share/man").exists());
    assert!(!root.join("usr/share/locale").exists());
    assert!(root.join("usr/share/doc/python3/copyright").is_file());
    assert!(
        !root
            .join("usr/share/doc/python3/changelog.Debian.gz")
            .exists()
    );
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status.d/python3")).unwrap();
    assert!(
        status.starts_with("Package: python3\nStatus: install ok installed\n"),
        "{status}"
    );
    let md5 = std::fs::read_to_string(root.join("var/lib/dpkg/status.d/libc6.md5sums")).unwrap();
    // as the package ships it (bookworm's libc6 still says /lib)
    assert!(
        md5.contains("  lib/x86_64-linux-gnu/libc.so.6") || !cfg!(target_arch = "x86_64"),
        "{md5}"
    );
    // it runs: the tree is a whole python3 (a user namespace of our own
    // makes chroot work as any user)
    let out = Command::new("unshare")
        .args(["--map-root-user", "chroot"])
        .arg(root)
        .args(["/usr/bin/python3", "-c", "import ssl, json; print(1+1)"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the same packages give the same layer, whatever the clock
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = tempfile::tempdir().unwrap();
    kiln_deb::install(b.path(), inputs(&store, &debs), &ApplyOptions::default()).unwrap();
    assert_eq!(layer_digest(a.path()), layer_digest(b.path()));
}

/// A `.deb` file made by hand: `entries` are raw tar headers (name bytes
/// as given, so `..` and absolute names get through) with their data.
struct Entry<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    link: &'a [u8],
    data: &'a [u8],
}

fn raw_header(name: &[u8], kind: tar::EntryType, link: &[u8], size: usize) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_size(size as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

fn make_deb(path: &Path, package: &str, entries: &[Entry]) {
    let tar_of = |entries: &[Entry]| {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            b.append(&raw_header(e.name, e.kind, e.link, e.data.len()), e.data)
                .unwrap();
        }
        b.into_inner().unwrap()
    };
    let control = format!("Package: {package}\nVersion: 1\nArchitecture: all\nDescription: test\n");
    let control_tar = tar_of(&[Entry {
        name: b"./control",
        kind: tar::EntryType::Regular,
        link: b"",
        data: control.as_bytes(),
    }]);
    let data_tar = tar_of(entries);
    let mut ar = ar::Builder::new(File::create(path).unwrap());
    for (name, data) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar", &control_tar[..]),
        ("data.tar", &data_tar[..]),
    ] {
        ar.append(
            &ar::Header::new(name.as_bytes().to_vec(), data.len() as u64),
            data,
        )
        .unwrap();
    }
}

fn input(path: &Path) -> DebInput {
    DebInput {
        label: path.file_name().unwrap().to_string_lossy().into_owned(),
        file: File::open(path).unwrap(),
    }
}

#[test]
fn hostile_debs_stay_inside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let out_link = outside.to_str().unwrap().as_bytes().to_vec();
    let deb = dir.path().join("evil_1_all.deb");
    make_deb(
        &deb,
        "evil",
        &[
            Entry {
                name: b"../../escape",
                kind: tar::EntryType::Regular,
                link: b"",
                data: b"x",
            },
            Entry {
                name: b"/etc/abs",
                kind: tar::EntryType::Regular,
                link: b"",
                data: b"x",
            },
            // the merged-/usr symlink replaced by a directory? no: renamed
            Entry {
                name: b"./bin/",
                kind: tar::EntryType::Directory,
                link: b"",
                data: b"",
            },
            Entry {
                name: b"./bin/tool",
                kind: tar::EntryType::Regular,
                link: b"",
                data: b"#!/bin/sh\n",
            },
            // dpkg's records cannot be planted over by a package
            Entry {
                name: b"./var/lib/dpkg/status.d",
                kind: tar::EntryType::Symlink,
                link: &out_link,
                data: b"",
            },
        ],
    );
    kiln_deb::install(&target, vec![input(&deb)], &ApplyOptions::default())
        .unwrap_or_else(|e| panic!("{}", kiln_types::error_chain(&e)));
    // a symlink out, then a file through it: the link resolves inside the
    // target, where it leads nowhere, and the package is named
    let link = dir.path().join("link_1_all.deb");
    make_deb(
        &link,
        "link",
        &[
            Entry {
                name: b"./usr/lib/out",
                kind: tar::EntryType::Symlink,
                link: &out_link,
                data: b"",
            },
            Entry {
                name: b"./usr/lib/out/pwned",
                kind: tar::EntryType::Regular,
                link: b"",
                data: b"x",
            },
        ],
    );
    let target2 = dir.path().join("target2");
    std::fs::create_dir(&target2).unwrap();
    let e = kiln_deb::install(&target2, vec![input(&link)], &ApplyOptions::default()).unwrap_err();
    let chain = kiln_types::error_chain(&e);
    assert!(
        chain.starts_with("cannot unpack `link_1_all.deb`"),
        "{chain}"
    );
    assert!(chain.contains("usr/lib/out/pwned"), "{chain}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "something escaped"
    );
    assert!(!dir.path().join("escape").exists());
    assert!(target.join("escape").is_file());
    assert!(target.join("etc/abs").is_file());
    assert!(
        std::fs::symlink_metadata(target.join("bin"))
            .unwrap()
            .is_symlink()
    );
    assert!(target.join("usr/bin/tool").is_file());
    // status.d came last, as a directory of ours
    assert!(target.join("var/lib/dpkg/status.d/evil").is_file());
}

#[test]
fn broken_debs_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // a package name that is a path
    let bad_name = dir.path().join("bad.deb");
    make_deb(&bad_name, "../x", &[]);
    let e = kiln_deb::install(
        &dir.path().join("t1"),
        vec![input(&bad_name)],
        &ApplyOptions::default(),
    );
    std::fs::create_dir(dir.path().join("t1")).unwrap();
    let e = match e {
        Err(e) => e,
        Ok(_) => kiln_deb::install(
            &dir.path().join("t1"),
            vec![input(&bad_name)],
            &ApplyOptions::default(),
        )
        .unwrap_err(),
    };
    assert!(
        e.to_string()
            .contains("`Package: ../x` is not a package name"),
        "{e}"
    );

    // a real package cut in half
    let store = common::store();
    let (_, debs) = python3_debs(&store);
    let big = debs.iter().max_by_key(|d| d.size).unwrap();
    let bytes = std::fs::read(store.blob_path(&big.sha256)).unwrap();
    let cut = dir.path().join(format!("{}_cut.deb", big.name));
    File::create(&cut)
        .unwrap()
        .write_all(&bytes[..bytes.len() / 2])
        .unwrap();
    let target = dir.path().join("t2");
    std::fs::create_dir(&target).unwrap();
    let e = kiln_deb::install(&target, vec![input(&cut)], &ApplyOptions::default()).unwrap_err();
    let chain = kiln_types::error_chain(&e);
    assert!(matches!(e, InstallError::Deb(_)), "{chain}");
    assert!(chain.contains(&format!("{}_cut.deb", big.name)), "{chain}");

    // not a .deb at all
    let junk = dir.path().join("junk.deb");
    std::fs::write(&junk, b"hello").unwrap();
    let target = dir.path().join("t3");
    std::fs::create_dir(&target).unwrap();
    let e = kiln_deb::install(&target, vec![input(&junk)], &ApplyOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("`junk.deb` is not a Debian package"),
        "{e}"
    );
}
