//! Shared by the tests: fixture layers as tars, the validators' venv.

use std::path::{Path, PathBuf};

/// The fixture image's layers, each directory under `fixtures/image/` a tar.
pub fn fixture_layers() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/image");
    ["layer1", "layer2"]
        .iter()
        .map(|l| {
            let mut b = tar::Builder::new(Vec::new());
            b.follow_symlinks(false);
            b.append_dir_all(".", dir.join(l)).expect("fixture layer");
            b.into_inner().expect("tar")
        })
        .collect()
}

pub fn fixture_tree() -> kiln_sbom::Tree {
    let mut t = kiln_sbom::Tree::default();
    for l in fixture_layers() {
        t.add_layer(&l[..]).expect("layer reads");
    }
    t
}

/// The Python venv `.ci/setup` fills with `spdx-tools` and
/// `cyclonedx-python-lib` (`KILN_SBOM_VENV` overrides).
pub fn venv() -> PathBuf {
    let p = std::env::var_os("KILN_SBOM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kiln-ci/sbom-venv"));
    assert!(
        p.join("bin/pyspdxtools").exists(),
        "no SBOM validators in `{}`: run `.ci/setup` as root",
        p.display()
    );
    p
}
