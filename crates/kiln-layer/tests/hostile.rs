//! A corpus of hostile layer tars, generated here, applied to a target that
//! sits next to an `outside` directory. Whatever each tar says, nothing
//! outside the target may change, as root and as an unprivileged user.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_layer::{ApplyOptions, OverlayXattr, WhiteoutMode, apply_tar};

/// One raw tar entry; names are written as given, `..` and `/` included.
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
}

fn header(name: &[u8], kind: u8, size: u64, link: &[u8], out: &mut Vec<u8>) {
    if name.len() > 100 || link.len() > 100 {
        // GNU long name / long link records, as tar(1) writes them
        for (data, k) in [(name, b'L'), (link, b'K')] {
            if data.len() > 100 {
                let mut d = data.to_vec();
                d.push(0);
                header(b"././@LongLink", k, d.len() as u64, b"", out);
                out.extend_from_slice(&d);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
        }
    }
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = name.len().min(100);
        old.name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        old.linkname[..l].copy_from_slice(&link[..l]);
    }
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
}

fn build(entries: &[E<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        match e {
            E::File(n, data) => {
                header(n.as_bytes(), b'0', data.len() as u64, b"", &mut out);
                out.extend_from_slice(data);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
            E::Dir(n) => header(n.as_bytes(), b'5', 0, b"", &mut out),
            E::Symlink(n, t) => header(n.as_bytes(), b'2', 0, t.as_bytes(), &mut out),
            E::Hardlink(n, t) => header(n.as_bytes(), b'1', 0, t.as_bytes(), &mut out),
            E::Char(n, ma, mi) => {
                let mut h = tar::Header::new_gnu();
                h.as_old_mut().name[..n.len()].copy_from_slice(n.as_bytes());
                h.set_mode(0o666);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                h.set_cksum();
                out.extend_from_slice(h.as_bytes());
            }
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Every path under `dir` with its type, size, mode and content.
fn state(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            out.insert(
                p.display().to_string(),
                format!("{:o} {} {} {}", m.mode(), m.len(), m.nlink(), content),
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn hostile_tars_never_write_outside_the_target() {
    let t = common::tempdir();
    let base = t.path();
    let outside = base.join("outside");
    common::write(&outside.join("sentinel"), b"precious");
    common::write(&outside.join("sub/keep"), b"keep");
    let o = outside.display().to_string();
    let abs_evil = format!("{o}/evil");
    let abs_sentinel = format!("{o}/sentinel");
    let long_comp = "x".repeat(300);
    let long_path = format!("{}/f", "d/".repeat(3000));
    let updots = format!("{}outside/evil", "../".repeat(40));

    // (name, entries)
    let corpus: Vec<(&str, Vec<E<'_>>)> = vec![
        ("dotdot", vec![E::File("../outside/evil", b"x")]),
        ("many dotdots", vec![E::File(&updots, b"x")]),
        ("absolute path", vec![E::File(&abs_evil, b"x")]),
        ("absolute overwrite", vec![E::File(&abs_sentinel, b"pwned")]),
        (
            "relative symlink then write through it",
            vec![E::Symlink("l", "../outside"), E::File("l/evil", b"x")],
        ),
        (
            "absolute symlink then write through it",
            vec![E::Symlink("l", &o), E::File("l/evil", b"x")],
        ),
        (
            "symlink to a file then overwrite the link",
            vec![E::Symlink("s", &abs_sentinel), E::File("s", b"pwned")],
        ),
        (
            "symlink chain",
            vec![
                E::Symlink("a", "b"),
                E::Symlink("b", "../../.."),
                E::File("a/outside/evil", b"x"),
            ],
        ),
        (
            "directory swapped for a symlink between entries",
            vec![
                E::Dir("d/"),
                E::File("d/ok", b"ok"),
                E::Symlink("d", &o),
                E::File("d/evil", b"x"),
            ],
        ),
        (
            "hard link to an outside file",
            vec![E::Hardlink("h", "../outside/sentinel")],
        ),
        (
            "hard link to an absolute outside file",
            vec![E::Hardlink("h", &abs_sentinel)],
        ),
        (
            "hard link through a symlink",
            vec![
                E::Symlink("l", &o),
                E::Hardlink("h", "l/sentinel"),
                E::File("h", b"pwned"),
            ],
        ),
        (
            "hard link to a symlink that leads out, then written",
            vec![
                E::Symlink("s", &abs_sentinel),
                E::Hardlink("h", "s"),
                E::File("h", b"pwned"),
            ],
        ),
        (
            "whiteout through a symlink",
            vec![E::Symlink("w", &o), E::File("w/.wh.sentinel", b"")],
        ),
        (
            "opaque marker through a symlink",
            vec![E::Symlink("w", &o), E::File("w/.wh..wh..opq", b"")],
        ),
        ("whiteout of dotdot", vec![E::File(".wh...", b"")]),
        (
            "whiteout escaping",
            vec![E::File("../outside/.wh.sentinel", b"")],
        ),
        ("device node", vec![E::Char("null", 1, 3)]),
        ("very long component", vec![E::File(&long_comp, b"x")]),
        ("very long path", vec![E::File(&long_path, b"x")]),
        (
            "duplicates of every kind",
            vec![
                E::File("dup", b"1"),
                E::File("dup", b"2"),
                E::Dir("dup/"),
                E::File("dup/x", b"x"),
                E::Symlink("dup", &o),
                E::File("dup", b"3"),
                E::Hardlink("dup", "dup"),
            ],
        ),
    ];

    let before = state(&outside);
    for (what, entries) in &corpus {
        let tar = build(entries);
        for mode in [
            WhiteoutMode::Delete,
            WhiteoutMode::Overlay(OverlayXattr::User),
        ] {
            let target = base.join("target");
            fs::create_dir(&target).unwrap();
            let opts = ApplyOptions {
                whiteouts: mode,
                ..Default::default()
            };
            let result = apply_tar(&tar[..], &target, &opts);
            eprintln!(
                "{what} ({mode:?}): {:?}",
                result.as_ref().map(|s| &s.skipped)
            );
            assert_eq!(state(&outside), before, "{what}: outside changed");
            assert!(!Path::new(&abs_evil).exists(), "{what}");
            // what did land stays inside: every path resolves under target
            for p in state(&target).keys() {
                assert!(p.starts_with(&target.display().to_string()), "{what}: {p}");
            }
            if *what == "duplicates of every kind" {
                result.as_ref().expect("duplicates apply cleanly");
                assert_eq!(
                    fs::read(target.join("dup")).unwrap(),
                    b"3",
                    "the last one wins"
                );
            }
            if *what == "device node" && !common::is_root() {
                let s = result
                    .as_ref()
                    .expect("device nodes are skipped, not fatal");
                assert_eq!(s.skipped.len(), 1, "{s:?}");
            }
            if *what == "symlink to a file then overwrite the link" {
                let m = fs::symlink_metadata(target.join("s")).unwrap();
                assert!(m.is_file(), "the link was replaced, not written through");
            }
            fs::remove_dir_all(&target).unwrap();
        }
    }
    common::rerun_as("kilntest", "hostile_tars_never_write_outside_the_target");
}
