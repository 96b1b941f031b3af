//! What the tests against Debian's real mirror share: one store under the
//! target directory, so the 9 MB `Packages.xz` and the `.deb`s are fetched
//! once per checkout, not once per test.

#![allow(dead_code)]

use std::path::PathBuf;

use kiln_deb::{Fetcher, Repository, Source};
use kiln_store::Store;

pub fn store_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-deb-store")
}

pub fn store() -> Store {
    Store::open(store_dir()).expect("test store")
}

pub fn bookworm() -> Source {
    Source::debian("bookworm")
}

pub fn open(source: &Source, store: &Store) -> Repository {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(Repository::open(source, &Fetcher::new().unwrap(), store))
        .unwrap_or_else(|e| panic!("{}", kiln_types::error_chain(&e)))
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
