//! How long the python3 closure takes from a cached index (issue 15's
//! budget: under 50 ms). Run with `cargo bench -p kiln-deb --bench
//! resolve`; the first run fetches bookworm's index into the store under
//! the target directory, later ones read it from there.

// A benchmark reports on stdout by design.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use kiln_deb::{Fetcher, Repository, Request, Resolver, Source};
use kiln_store::Store;

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (best, out.unwrap())
}

fn main() {
    let store =
        Store::open(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-deb-store"))
            .expect("store");
    let source = Source::debian("bookworm");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (open, repo) = best(3, || {
        rt.block_on(Repository::open(&source, &Fetcher::new().unwrap(), &store))
            .expect("open bookworm")
    });
    let entry = &repo.release.sha256[&format!("main/binary-{}/Packages", source.arch)];
    let (parse, _) = best(5, || {
        let text = String::from_utf8(store.read_blob(&entry.sha256).unwrap()).unwrap();
        kiln_deb::Index::parse("Packages", &text).unwrap().len()
    });
    let (new, _) = best(10, || {
        Resolver::new(&repo.index, &source.arch).candidate("python3")
    });
    let resolver = Resolver::new(&repo.index, &source.arch);
    let req = Request {
        packages: vec!["python3".into()],
        exclude: vec![],
    };
    let (resolve, res) = best(20, || resolver.resolve(&req).unwrap());
    println!(
        "open (InRelease over the network, cached index parsed, {} packages): {open:?}",
        repo.index.len()
    );
    println!(
        "index from the store (read and parse {} bytes): {parse:?}",
        entry.size
    );
    println!("resolver setup (candidates, providers): {new:?}");
    println!(
        "python3 closure ({} packages): {resolve:?}; setup + closure: {:?}",
        res.packages.len(),
        new + resolve
    );
}
