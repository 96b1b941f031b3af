//! Shared helpers: the examples, compiled the way `kiln graph` does.

use std::path::{Path, PathBuf};

use kiln_dag::{Definition, Platform};

pub fn amd64() -> Platform {
    "linux/amd64".parse().expect("valid platform")
}

/// `(example name, Kilnfile text)` for every `examples/*/Kilnfile`.
pub fn examples() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Kilnfile").is_file())
        .map(|p: PathBuf| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(p.join("Kilnfile")).expect("readable Kilnfile");
            (name, text)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "expected the examples, found {out:?}");
    out
}

pub fn compile(name: &str, text: &str) -> Definition {
    match kiln_frontend::compile(name, text, &kiln_frontend::Options::default()) {
        Ok(c) => c.definition,
        Err(d) => panic!("example {name} does not compile: {d:?}"),
    }
}
