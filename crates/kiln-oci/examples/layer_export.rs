//! Exports a directory as a layer into a store, as `kiln import DIR` does,
//! and prints the layer and the time taken: for profiling the pipeline
//! without building the CLI.
//!
//! `cargo run --release -p kiln-oci --example layer_export -- DIR [gzip|zstd|none] [STORE]`

// A profiling example: what it measured is its output.
#![allow(clippy::print_stderr)]

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .ok_or("usage: layer_export DIR [COMPRESSION] [STORE]")?,
    );
    let compression: kiln_oci::Compression =
        args.get(2).map(String::as_str).unwrap_or("zstd").parse()?;
    let tmp = tempfile::tempdir()?;
    let root = args
        .get(3)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("store"));
    let store = kiln_oci::Store::open(root)?;
    let t = Instant::now();
    let info = kiln_oci::import::rootfs_dir_layer(&store, &dir, compression, 0)?;
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "{compression}: {} ({} bytes, diff_id {}) in {s:.3} s",
        info.digest, info.size, info.diff_id
    );
    Ok(())
}
