//! kiln's closure against apt's own: `apt-get install
//! --no-install-recommends -s` over the dpkg status of the debootstrapped
//! bookworm chroot (`.ci/builder-image.sh`), with apt pointed at the very
//! `InRelease` and `Packages` kiln verified (a local `file:` repository
//! made from the store), so both sides read one index. apt runs with
//! `Dir=` on a private copy of the chroot's apt state: the shared rootfs is
//! only read. Same packages and versions, minus what the chroot has.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_deb::{Index, Repository, Request, Resolver, Source};

const ROOTFS: &str = "/var/cache/kiln-ci/bookworm-minbase/rootfs";

struct Apt {
    dir: tempfile::TempDir,
    arch: String,
}

impl Apt {
    /// A local repository of the verified files and an apt state with the
    /// chroot's dpkg status, updated from it.
    fn new(repo: &Repository, source: &Source, store: &kiln_store::Store) -> Apt {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let dists = d.join("repo/dists").join(&source.suite);
        let bin = dists.join(format!("main/binary-{}", source.arch));
        std::fs::create_dir_all(&bin).unwrap();
        let copy = |digest: &kiln_store::Digest, to: &Path| {
            std::fs::write(to, store.read_blob(digest).unwrap()).unwrap();
        };
        copy(&repo.release.digest, &dists.join("InRelease"));
        for name in ["Packages", "Packages.xz"] {
            let e = &repo.release.sha256[&format!("main/binary-{}/{name}", source.arch)];
            copy(&e.sha256, &bin.join(name));
        }
        let root = d.join("root");
        for sub in [
            "etc/apt",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::copy(
            Path::new(ROOTFS).join("var/lib/dpkg/status"),
            root.join("var/lib/dpkg/status"),
        )
        .expect("the debootstrapped chroot of .ci/builder-image.sh");
        std::fs::write(
            root.join("etc/apt/sources.list"),
            format!(
                "deb [signed-by={}] file:{} {} main\n",
                source.keyrings[0].display(),
                d.join("repo").display(),
                source.suite
            ),
        )
        .unwrap();
        let apt = Apt {
            dir,
            arch: source.arch.clone(),
        };
        let out = apt.run(&["update"]);
        assert!(
            out.status.success(),
            "apt-get update: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("E:") && !err.contains("W:"),
            "apt-get update: {err}"
        );
        apt
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let root: PathBuf = self.dir.path().join("root");
        let mut cmd = Command::new("apt-get");
        for o in [
            format!("Dir={}", root.display()),
            format!(
                "Dir::State::status={}",
                root.join("var/lib/dpkg/status").display()
            ),
            "Dir::Etc::SourceParts=/nonexistent".into(),
            "Dir::Etc::Parts=/nonexistent".into(),
            "Dir::Etc::PreferencesParts=/nonexistent".into(),
            "Debug::NoLocking=1".into(),
            "APT::Sandbox::User=root".into(),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures::={}", self.arch),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
        ] {
            cmd.arg("-o").arg(o);
        }
        cmd.args(args).env("LC_ALL", "C").output().unwrap()
    }

    /// What `apt-get install --no-install-recommends -s` would install:
    /// name to version.
    fn simulate(&self, packages: &[&str]) -> BTreeMap<String, String> {
        let mut args = vec!["install", "-s", "--no-install-recommends"];
        args.extend(packages);
        let out = self.run(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "apt-get {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `Inst name [old] (version Origin [arch])`
        text.lines()
            .filter_map(|l| l.strip_prefix("Inst "))
            .map(|l| {
                let name = l.split_whitespace().next().unwrap().to_string();
                let v = l
                    .split_once('(')
                    .unwrap()
                    .1
                    .split_whitespace()
                    .next()
                    .unwrap();
                (name, v.to_string())
            })
            .collect()
    }
}

#[test]
fn closures_match_apt() {
    let store = common::store();
    let source = common::bookworm();
    let repo = common::open(&source, &store);
    let apt = Apt::new(&repo, &source, &store);
    let status_text =
        std::fs::read_to_string(Path::new(ROOTFS).join("var/lib/dpkg/status")).unwrap();
    let status = Index::parse("status", &status_text).unwrap();
    let resolver = Resolver::new(&repo.index, &source.arch).with_installed(&status);
    for set in [
        &["python3"][..],
        &["libc6", "libssl3"],
        &["openjdk-17-jre-headless"],
        &["nodejs"],
    ] {
        let want = apt.simulate(set);
        assert!(
            !want.is_empty() || set == ["libc6", "libssl3"],
            "{set:?}: apt installs nothing"
        );
        let got = resolver
            .resolve(&Request {
                packages: set.iter().map(|s| s.to_string()).collect(),
                exclude: vec![],
            })
            .unwrap_or_else(|e| panic!("{set:?}: {e}"));
        let got: BTreeMap<String, String> = got
            .packages
            .iter()
            .map(|id| {
                (
                    repo.index.name(*id).to_string(),
                    repo.index.version(*id).to_string(),
                )
            })
            .collect();
        let only_apt: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .collect();
        let only_kiln: Vec<_> = got
            .iter()
            .filter(|(k, v)| want.get(*k) != Some(v))
            .collect();
        assert!(
            only_apt.is_empty() && only_kiln.is_empty(),
            "{set:?}: apt only {only_apt:?}, kiln only {only_kiln:?}"
        );
    }
}
