//! `docs/kilnfile.md` stays true: its opening example compiles, and its
//! diagnostics table names exactly the codes the frontend emits (as seen in
//! the diagnostics corpus plus `kiln::too-large`).

use std::collections::BTreeSet;
use std::path::Path;

use kiln_frontend::{Options, check, compile};

fn doc() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/kilnfile.md"))
        .expect("docs/kilnfile.md")
}

#[test]
fn opening_example_compiles() {
    let doc = doc();
    let start = doc.find("```rust\n").unwrap() + "```rust\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let src = &doc[start..end];
    let c = compile("Kilnfile", src, &Options::default())
        .unwrap_or_else(|d| panic!("{}", d.render_plain()));
    assert_eq!(c.target, "app");
    assert!(c.warnings.is_empty(), "{}", c.warnings.render_plain());
}

#[test]
fn diagnostics_table_matches_the_codes() {
    let documented: BTreeSet<String> = doc()
        .lines()
        .filter_map(|l| l.strip_prefix("| `kiln::"))
        .map(|l| format!("kiln::{}", &l[..l.find('`').unwrap()]))
        .collect();
    let mut emitted = BTreeSet::from(["kiln::too-large".to_string()]);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics");
    for e in std::fs::read_dir(dir).unwrap() {
        let src = std::fs::read_to_string(e.unwrap().path()).unwrap();
        let mut opts = Options::default();
        // The two corpus files that need flags.
        if src.contains("--target ap") {
            opts.target = Some("ap".into());
        }
        if src.contains("--build-arg UNUSED") {
            opts.build_args.insert("UNUSED".into(), "1".into());
        }
        for d in check("Kilnfile", &src, &opts).items {
            emitted.insert(d.code.to_string());
        }
    }
    assert_eq!(documented, emitted);
}
