//! A layer of a few KiB that describes a 50 GiB sparse file (GNU tar
//! `--sparse` of a file made with truncate(1), which costs no disk): the
//! build's snapshot and `-o type=local` hold it in a few KiB; over
//! `KILN_MAX_LAYER_SIZE` it is an error naming the file and how to raise the
//! limit, and nothing partial stays behind. Root, and rootless (`kilntest`,
//! whose layers are extracted inside the user namespace by the runtime).

mod common;

use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::chown_kilntest;

const GIB: u64 = 1 << 30;

struct Env {
    dir: tempfile::TempDir,
    rootless: bool,
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kiln(&self, args: &[&str], limit: Option<&str>) -> Output {
        let home = self.path("home");
        let mut c = if self.rootless {
            chown_kilntest(self.dir.path());
            common::kilntest_command(&home, self.dir.path(), args)
        } else {
            common::kiln_command(&home, self.dir.path(), args)
        };
        match limit {
            Some(l) => c.env("KILN_MAX_LAYER_SIZE", l),
            None => c.env_remove("KILN_MAX_LAYER_SIZE"),
        };
        c.output().expect("run kiln")
    }

    fn ok(&self, args: &[&str], limit: Option<&str>) {
        let o = self.kiln(args, limit);
        assert!(
            o.status.success(),
            "kiln {args:?} failed (rootless: {}):\n{}",
            self.rootless,
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn fails(&self, args: &[&str], limit: Option<&str>) -> String {
        let o = self.kiln(args, limit);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "kiln {args:?} succeeded:\n{err}");
        err
    }
}

/// Files named `name` under `dir`.
fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if e.file_name() == name {
                out.push(e.path());
            }
        }
    }
    out
}

/// The 50 GiB file: apparent size, a few KiB on disk, the data in place.
fn assert_sparse(p: &Path) {
    let m = std::fs::metadata(p).unwrap();
    assert_eq!(m.len(), 50 * GIB, "{}", p.display());
    assert!(
        m.blocks() * 512 <= 1 << 20,
        "{}: {} bytes on disk",
        p.display(),
        m.blocks() * 512
    );
    let f = std::fs::File::open(p).unwrap();
    let mut buf = [0u8; 4];
    f.read_exact_at(&mut buf, GIB).unwrap();
    assert_eq!(&buf, b"head");
    f.read_exact_at(&mut buf, 50 * GIB - 4).unwrap();
    assert_eq!(&buf, b"tail");
}

fn sparse_layers(rootless: bool) {
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        rootless,
    };
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("small"), "small").unwrap();
    let f = std::fs::File::create(src.join("big")).unwrap();
    f.set_len(50 * GIB).unwrap();
    f.write_all_at(b"head", GIB).unwrap();
    f.write_all_at(b"tail", 50 * GIB - 4).unwrap();
    drop(f);
    let o = Command::new("tar")
        .args(["--sparse", "--format=gnu", "-cf"])
        .arg(env.path("sparse.tar"))
        .arg("-C")
        .arg(&src)
        .args(["big", "small"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(env.path("sparse.tar")).unwrap().len() < 64 << 10);
    std::fs::create_dir(env.path("ctx")).unwrap();
    std::fs::write(
        env.path("ctx/Kilnfile"),
        "let sp = image(\"sp:1\");\nlet app = scratch().copy(sp.path(\"/small\"), \"/small\");\n",
    )
    .unwrap();
    env.ok(&["import", "sparse.tar", "-t", "sp:1"], None);

    // over the limit: the file, the limit and the variable to raise it
    for args in [
        &["build", "ctx"][..],
        &["save", "sp:1", "-o", "type=local,dest=out"][..],
    ] {
        let err = env.fails(args, Some("1G"));
        for part in [
            "`big`",
            "over the limit of 1073741824 bytes",
            "KILN_MAX_LAYER_SIZE",
        ] {
            assert!(err.contains(part), "{args:?}: no {part}:\n{err}");
        }
    }
    // nothing partial that a later build or a user would trust
    assert!(!env.path("out").exists());
    let home = env.path("home");
    assert!(find(&home.join("snapshots"), "big").is_empty());
    assert!(find(&home.join("worker-tmp"), "big").is_empty());
    assert!(
        find(env.dir.path(), "small").len() == 1,
        "only the source's"
    );

    // a value that is not a size is an error of its own, for any command
    let err = env.fails(&["images"], Some("lots"));
    assert!(err.contains("invalid `KILN_MAX_LAYER_SIZE=lots`"), "{err}");

    // within the limit (the default, 64 GiB): holes stay holes
    env.ok(&["build", "ctx"], None);
    let big = find(&home.join("snapshots"), "big");
    assert_eq!(big.len(), 1, "{big:?}");
    assert_sparse(&big[0]);
    env.ok(&["save", "sp:1", "-o", "type=local,dest=out"], None);
    assert_sparse(&env.path("out/big"));
    assert_eq!(
        std::fs::read_to_string(env.path("out/small")).unwrap(),
        "small"
    );
}

#[test]
fn sparse_layers_stay_small_and_count_against_the_limit() {
    sparse_layers(false);
}

#[test]
fn rootless_sparse_layers_stay_small_and_count_against_the_limit() {
    sparse_layers(true);
}
