//! A corpus of hostile layer tars, generated here, applied to a target that
//! sits next to an `outside` directory. Whatever each tar says, nothing
//! outside the target may change, as root and as an unprivileged user.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use kiln_layer::{ApplyError, ApplyOptions, OverlayXattr, WhiteoutMode, apply_tar};

/// One raw tar entry; names are written as given, `..` and `/` included.
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    /// entry bytes made elsewhere (sparse files)
    Raw(&'a [u8]),
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
            E::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

const GIB: u64 = 1 << 30;

/// A numeric header field as GNU tar writes it: octal with a NUL when it
/// fits, else base-256 (high bit set, big-endian).
fn num_field(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    if v < 1u64 << (3 * digits) {
        let s = format!("{v:0digits$o}\0");
        field.copy_from_slice(s.as_bytes());
    } else {
        field.fill(0);
        field[0] = 0x80;
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.to_be_bytes());
    }
}

fn pad_block(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A file's data segments: (offset, bytes).
type Segs = Vec<(u64, Vec<u8>)>;

/// The map of `segs` as GNU tar writes it: a last, empty segment at the
/// file's size (the tar crate requires the map to reach it).
fn map_of(size: u64, segs: &Segs) -> Vec<(u64, u64)> {
    let mut map: Vec<(u64, u64)> = segs.iter().map(|(o, d)| (*o, d.len() as u64)).collect();
    map.push((size, 0));
    map
}

/// An old-format GNU sparse entry (type `S`, `tar --sparse --format=gnu`):
/// `segs` at their offsets in a file of `size` bytes; the map's fifth
/// segment on goes to extension blocks, 21 to a block.
fn gnu_sparse(name: &str, size: u64, segs: &Segs) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(segs.iter().map(|(_, d)| d.len() as u64).sum());
    let map = map_of(size, segs);
    let mut ext_blocks = Vec::new();
    {
        let g = h.as_gnu_mut().unwrap();
        num_field(&mut g.realsize, size);
        for (slot, (o, l)) in g.sparse.iter_mut().zip(&map) {
            num_field(&mut slot.offset, *o);
            num_field(&mut slot.numbytes, *l);
        }
        g.isextended[0] = u8::from(map.len() > 4);
        let rest: Vec<_> = map.iter().skip(4).collect();
        let chunks: Vec<_> = rest.chunks(21).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut b = [0u8; 512];
            for (j, (o, l)) in chunk.iter().enumerate() {
                num_field(&mut b[j * 24..j * 24 + 12], *o);
                num_field(&mut b[j * 24 + 12..j * 24 + 24], *l);
            }
            b[504] = u8::from(i + 1 < chunks.len());
            ext_blocks.extend_from_slice(&b);
        }
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&ext_blocks);
    for (_, d) in segs {
        out.extend_from_slice(d);
    }
    pad_block(&mut out);
    out
}

/// One PAX record, `LEN KEY=VALUE\n`, LEN counting itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &str) {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    out.extend_from_slice(format!("{len}{body}").as_bytes());
}

/// A PAX-format GNU sparse entry as `tar --sparse --format=posix
/// --sparse-version=V` writes it: 1.0 keeps the map at the start of the
/// data, 0.1 in `GNU.sparse.map`, 0.0 in repeated `offset`/`numbytes`.
fn pax_sparse(version: &str, name: &str, size: u64, segs: &Segs) -> Vec<u8> {
    let mut rec = Vec::new();
    let mut data = Vec::new();
    match version {
        "1.0" => {
            pax_record(&mut rec, "GNU.sparse.major", "1");
            pax_record(&mut rec, "GNU.sparse.minor", "0");
            pax_record(&mut rec, "GNU.sparse.name", name);
            pax_record(&mut rec, "GNU.sparse.realsize", &size.to_string());
            let map = map_of(size, segs);
            data.extend_from_slice(format!("{}\n", map.len()).as_bytes());
            for (o, l) in map {
                data.extend_from_slice(format!("{o}\n{l}\n").as_bytes());
            }
            pad_block(&mut data);
        }
        "0.1" => {
            let map = map_of(size, segs);
            pax_record(&mut rec, "GNU.sparse.size", &size.to_string());
            pax_record(&mut rec, "GNU.sparse.numblocks", &map.len().to_string());
            pax_record(&mut rec, "GNU.sparse.name", name);
            let map: Vec<String> = map
                .iter()
                .flat_map(|(o, l)| [o.to_string(), l.to_string()])
                .collect();
            pax_record(&mut rec, "GNU.sparse.map", &map.join(","));
        }
        "0.0" => {
            let map = map_of(size, segs);
            pax_record(&mut rec, "GNU.sparse.size", &size.to_string());
            pax_record(&mut rec, "GNU.sparse.numblocks", &map.len().to_string());
            for (o, l) in map {
                pax_record(&mut rec, "GNU.sparse.offset", &o.to_string());
                pax_record(&mut rec, "GNU.sparse.numbytes", &l.to_string());
            }
        }
        v => panic!("no sparse version {v}"),
    }
    for (_, d) in segs {
        data.extend_from_slice(d);
    }
    let mut out = Vec::new();
    let mut ph = tar::Header::new_ustar();
    ph.set_path("PaxHeaders/sparse").unwrap();
    ph.set_entry_type(tar::EntryType::XHeader);
    ph.set_mode(0o644);
    ph.set_size(rec.len() as u64);
    ph.set_cksum();
    out.extend_from_slice(ph.as_bytes());
    out.extend_from_slice(&rec);
    pad_block(&mut out);
    // 0.0 has no name record: the header has the real name
    let header_name = if version == "0.0" {
        name.to_string()
    } else {
        format!("GNUSparseFile.0/{}", name.rsplit('/').next().unwrap())
    };
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..header_name.len()].copy_from_slice(header_name.as_bytes());
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    pad_block(&mut out);
    out
}

/// Every sparse format, for a file of `size` bytes with `segs`.
fn sparse_formats(name: &str, size: u64, segs: &Segs) -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![("gnu", gnu_sparse(name, size, segs))];
    for version in ["1.0", "0.1", "0.0"] {
        let label = match version {
            "1.0" => "pax 1.0",
            "0.1" => "pax 0.1",
            _ => "pax 0.0",
        };
        v.push((label, pax_sparse(version, name, size, segs)));
    }
    v
}

/// Two 4 KiB segments in 50 GiB: at 1 GiB, and the file's last block.
fn fifty_gib_segments() -> Segs {
    vec![
        (GIB, [b"head".repeat(1024)].concat()),
        (50 * GIB - 4096, [b"tail".repeat(1024)].concat()),
    ]
}

/// Checks a file extracted from `segs`: apparent size, disk use, content.
fn assert_sparse_file(path: &Path, size: u64, segs: &Segs, what: &str) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{what}: {}: {e}", path.display()));
    assert_eq!(m.len(), size, "{what}: apparent size");
    let data: u64 = segs.iter().map(|(_, d)| d.len() as u64).sum();
    // st_blocks counts 512-byte units; allow filesystem block rounding
    assert!(
        m.blocks() * 512 <= data + 64 * 4096,
        "{what}: {} bytes on disk for {data} bytes of data",
        m.blocks() * 512
    );
    let f = fs::File::open(path).unwrap();
    for (o, d) in segs {
        let mut got = vec![0u8; d.len()];
        f.read_exact_at(&mut got, *o).unwrap();
        assert!(got == *d, "{what}: segment at {o}");
    }
    // the holes read as zeros: before, between and after the segments
    let mut probes = vec![0u64];
    probes.extend(segs.iter().map(|(o, d)| o + d.len() as u64));
    for p in probes {
        if p + 4096 <= size && !segs.iter().any(|(o, d)| p >= *o && p < o + d.len() as u64) {
            let mut got = vec![1u8; 4096.min((size - p) as usize)];
            f.read_exact_at(&mut got, p).unwrap();
            assert!(got.iter().all(|b| *b == 0), "{what}: hole at {p}");
        }
    }
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
    let seg: Segs = vec![(512, b"x".repeat(512))];
    let sparse_dotdot = pax_sparse("1.0", "../outside/evil", 4096, &seg);
    let sparse_abs = pax_sparse("0.1", &abs_evil, 4096, &seg);
    let gnu_abs = gnu_sparse(&abs_evil, 4096, &seg);
    // segments past the end, overlapping, a map that never ends
    let past_end = pax_sparse("0.1", "f", 100, &seg);
    let overlap = pax_sparse(
        "0.0",
        "f",
        4096,
        &vec![(512, b"x".repeat(512)), (600, b"y".repeat(512))],
    );
    let gnu_overlap = gnu_sparse(
        "f",
        4096,
        &vec![(512, b"x".repeat(512)), (600, b"y".repeat(512))],
    );
    let mut endless = pax_sparse("1.0", "f", 4096, &seg);
    // the map's count line, `1\n`, becomes 4 KiB of digits
    let map_at = endless.len() - 1024;
    endless[map_at..].fill(b'7');
    let big_count = {
        let mut t = pax_sparse("1.0", "f", 4096, &seg);
        let at = t.len() - 1024;
        t[at..at + 12].copy_from_slice(b"99999999999\n");
        t
    };

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
        ("sparse name with dotdot", vec![E::Raw(&sparse_dotdot)]),
        ("sparse name absolute", vec![E::Raw(&sparse_abs)]),
        ("gnu sparse name absolute", vec![E::Raw(&gnu_abs)]),
        ("sparse segment past the end", vec![E::Raw(&past_end)]),
        ("sparse segments overlap", vec![E::Raw(&overlap)]),
        ("gnu sparse segments overlap", vec![E::Raw(&gnu_overlap)]),
        ("sparse map never ends", vec![E::Raw(&endless)]),
        ("sparse map claims a huge count", vec![E::Raw(&big_count)]),
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
            // what each hostile entry did, for a failing run's log
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "{what} ({mode:?}): {:?}",
                    result.as_ref().map(|s| &s.skipped)
                );
            }
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
            if *what == "device node" {
                // as root too: never a usable device on the host
                let s = result
                    .as_ref()
                    .expect("device nodes are skipped, not fatal");
                assert_eq!(s.skipped.len(), 1, "{s:?}");
                assert!(
                    fs::symlink_metadata(target.join("null")).is_err(),
                    "no device node made"
                );
            }
            if what.starts_with("sparse name") || what.starts_with("gnu sparse name") {
                result.as_ref().expect("a sparse file lands inside");
                // `../outside/evil` and `/.../outside/evil`, clamped to the target
                let landed = if what.ends_with("dotdot") {
                    target.join("outside/evil")
                } else {
                    target.join(&abs_evil[1..])
                };
                assert_eq!(fs::metadata(&landed).unwrap().len(), 4096, "{what}");
            }
            if what.starts_with("sparse segment") || what.starts_with("sparse map") {
                let e = result.as_ref().expect_err("a bad sparse map is an error");
                assert!(matches!(e, ApplyError::SparseMap { .. }), "{what}: {e}");
                assert!(state(&target).is_empty(), "{what}: nothing is created");
            }
            if *what == "gnu sparse segments overlap" {
                result.as_ref().expect_err("the tar crate refuses it");
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

/// A 50 GiB file of two 4 KiB segments, in every sparse format, extracts
/// in a few KiB of disk with its apparent size and content.
#[test]
fn sparse_files_keep_their_holes() {
    let t = common::tempdir();
    let segs = fifty_gib_segments();
    for (what, entry) in sparse_formats("big", 50 * GIB, &segs) {
        let tar = build(&[E::Dir("d/"), E::Raw(&entry)]);
        assert!(
            tar.len() < 16 << 10,
            "{what}: the tar is tiny ({} bytes)",
            tar.len()
        );
        let target = t.path().join("target");
        fs::create_dir(&target).unwrap();
        let sum = apply_tar(&tar[..], &target, &ApplyOptions::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(sum.bytes, 8192, "{what}: data bytes written");
        assert_sparse_file(&target.join("big"), 50 * GIB, &segs, what);
        assert!(!target.join("GNUSparseFile.0").exists(), "{what}");
        fs::remove_dir_all(&target).unwrap();
    }

    // many segments: the old GNU format continues its map in extension
    // blocks (4 in the header, 21 per block), the PAX ones in the records
    let many: Segs = (0..30u64)
        .map(|i| (i * 3 * 4096 + 4096, vec![b'a' + i as u8; 4096]))
        .collect();
    for (what, entry) in sparse_formats("many", GIB, &many) {
        let tar = build(&[E::Raw(&entry)]);
        let target = t.path().join("target");
        fs::create_dir(&target).unwrap();
        apply_tar(&tar[..], &target, &ApplyOptions::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_sparse_file(&target.join("many"), GIB, &many, what);
        fs::remove_dir_all(&target).unwrap();
    }
    common::rerun_as("kilntest", "sparse_files_keep_their_holes");
}

/// What GNU tar itself writes for a sparse file (each format) extracts
/// the same way: a 50 GiB file made with truncate(1) takes no disk.
#[test]
fn sparse_files_from_gnu_tar_keep_their_holes() {
    let t = common::tempdir();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let segs = fifty_gib_segments();
    let f = fs::File::create(src.join("big")).unwrap();
    f.set_len(50 * GIB).unwrap();
    for (o, d) in &segs {
        f.write_all_at(d, *o).unwrap();
    }
    drop(f);
    for (what, args) in [
        ("gnu", &["--format=gnu"][..]),
        ("pax 1.0", &["--format=posix"][..]),
        ("pax 0.1", &["--format=posix", "--sparse-version=0.1"][..]),
        ("pax 0.0", &["--format=posix", "--sparse-version=0.0"][..]),
    ] {
        let tar_path = t.path().join("layer.tar");
        let st = Command::new("tar")
            .arg("--sparse")
            .args(args)
            .arg("-cf")
            .arg(&tar_path)
            .arg("-C")
            .arg(&src)
            .arg("big")
            .status()
            .unwrap();
        assert!(st.success(), "{what}: tar failed");
        let tar = fs::read(&tar_path).unwrap();
        assert!(tar.len() < 64 << 10, "{what}: {} bytes", tar.len());
        let target = t.path().join("target");
        fs::create_dir(&target).unwrap();
        apply_tar(&tar[..], &target, &ApplyOptions::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_sparse_file(&target.join("big"), 50 * GIB, &segs, what);
        fs::remove_dir_all(&target).unwrap();
    }
}

/// Apparent sizes add up against `max_size`: an entry past it is an error
/// that names it, the limit and the variable that raises it, before
/// anything of it is created; the default (64 GiB) holds 50 GiB but not
/// 100 GiB.
#[test]
fn apparent_size_over_the_limit_is_an_error() {
    let t = common::tempdir();
    let segs = fifty_gib_segments();
    let limited = ApplyOptions {
        max_size: 10 * GIB,
        ..ApplyOptions::default()
    };
    let fails = |tar: &[u8], opts: &ApplyOptions, what: &str| {
        let target = t.path().join("target");
        fs::create_dir(&target).unwrap();
        let e = apply_tar(tar, &target, opts).expect_err(what);
        // names only: reading a 6 GiB sparse file would cost seconds
        let mut left: Vec<String> = fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        fs::remove_dir_all(&target).unwrap();
        (e, left)
    };
    for (what, entry) in sparse_formats("big", 50 * GIB, &segs) {
        let tar = build(&[E::File("before", b"x"), E::Raw(&entry)]);
        let (e, left) = fails(&tar, &limited, what);
        assert!(matches!(e, ApplyError::TooLarge { .. }), "{what}: {e}");
        let msg = e.to_string();
        for part in [
            "`big`",
            "53687091201 bytes (50.0 GiB)",
            "limit of 10737418240 bytes (10.0 GiB)",
            "KILN_MAX_LAYER_SIZE",
        ] {
            assert!(msg.contains(part), "{what}: {msg} lacks {part}");
        }
        // what came before is there (the caller discards the target), the
        // entry over the limit is not
        assert_eq!(left, ["before"], "{what}");
    }
    // the sum counts, not the largest file
    let six: Segs = vec![(6 * GIB - 512, b"z".repeat(512))];
    let a = gnu_sparse("a", 6 * GIB, &six);
    let b = pax_sparse("1.0", "b", 6 * GIB, &six);
    let (e, _) = fails(&build(&[E::Raw(&a), E::Raw(&b)]), &limited, "sum");
    assert!(e.to_string().starts_with("`b` brings"), "{e}");
    // plain files count too (a decompression bomb of zeros)
    let small = ApplyOptions {
        max_size: 100,
        ..ApplyOptions::default()
    };
    let (e, _) = fails(&build(&[E::File("zeros", &[0; 101])]), &small, "plain");
    assert!(
        matches!(
            e,
            ApplyError::TooLarge {
                total: 101,
                limit: 100,
                ..
            }
        ),
        "{e}"
    );
    // the default
    let huge = pax_sparse("1.0", "huge", 100 * GIB, &segs);
    let (e, _) = fails(
        &build(&[E::Raw(&huge)]),
        &ApplyOptions::default(),
        "default",
    );
    assert!(
        e.to_string().contains("68719476736 bytes (64.0 GiB)"),
        "{e}"
    );
}
