//! Data-driven diagnostics tests: every `tests/errors/*.Dockerfile` is
//! checked and the rendered report (file:line:col, source line, caret,
//! help) is pinned by a snapshot. Every diagnostic code appears in the
//! corpus, and every diagnostic says what to do.

mod common;

use std::collections::BTreeSet;

use kiln_dockerfile::{check, compile};

#[test]
fn diagnostics_corpus() {
    let mut seen = BTreeSet::new();
    insta::glob!("errors/*.Dockerfile", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let opts = common::options(&src);
        let diags = check("Dockerfile", &src, &opts, &common::DebianLike);
        assert!(
            !diags.is_empty(),
            "{} produced no diagnostic",
            path.display()
        );
        for d in &diags.items {
            assert!(
                !d.help.is_empty(),
                "{}: `{}` has no help",
                path.display(),
                d.message
            );
            seen.insert(d.code);
        }
        // What check reports, compile reports too (and fails on errors).
        if diags.has_errors() {
            assert!(compile("Dockerfile", &src, &opts, &common::DebianLike).is_err());
        }
        let report = format!("{}\n{}", diags.summary(), diags.render_plain());
        insta::assert_snapshot!(report);
    });
    let src = include_str!("../src/lower.rs").to_string()
        + include_str!("../src/run.rs")
        + include_str!("../src/copy.rs");
    let mut codes: BTreeSet<&str> = BTreeSet::new();
    for part in src.split("\"dockerfile::").skip(1) {
        if let Some(end) = part.find('"') {
            codes.insert(&part[..end]);
        }
    }
    // The parser rejects these inputs before lowering sees them; the
    // lowering's own checks stay as a guard.
    let parser_first = ["before-from", "no-stage", "heredoc"];
    let missing: Vec<_> = codes
        .iter()
        .filter(|c| !parser_first.contains(c))
        .filter(|c| !seen.contains(format!("dockerfile::{c}").as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without an example in tests/errors: {missing:?}"
    );
}

/// Arbitrary text never panics the frontend.
#[test]
fn never_panics() {
    let pieces = [
        "FROM ",
        "RUN ",
        "COPY ",
        "--from=",
        "${",
        "}",
        "\"",
        "'",
        "<<EOF",
        "\nEOF\n",
        "\\\n",
        "ARG ",
        "=",
        " AS ",
        "scratch",
        "debian",
        "\n",
        "--mount=type=cache,target=",
        ":-",
        "`",
        "# escape=`\n",
        "ENV ",
        "[\"",
        "\"]",
        "WORKDIR ",
        "..",
        "/",
        "*",
    ];
    let opts = kiln_frontend::Options::default();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..3000 {
        let mut s = String::new();
        for _ in 0..(seed % 12) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        let _ = check("Dockerfile", &s, &opts, &common::DebianLike);
        let _ = compile("Dockerfile", &s, &opts, &common::DebianLike);
        let _ = kiln_dockerfile::convert("Dockerfile", &s, &opts, &common::DebianLike);
        let bom = format!("\u{feff}{s}");
        let _ = kiln_dockerfile::convert("Dockerfile", &bom, &opts, &common::DebianLike);
    }
}
