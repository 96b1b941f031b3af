//! Data-driven parser tests: every `tests/parse/*.kiln` is parsed and its
//! tree (with spans) plus syntax diagnostics is pinned by a snapshot.

#[test]
fn parse_corpus() {
    insta::glob!("parse/*.kiln", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let (file, diags) = kiln_frontend::parse(&src);
        let mut out = file.dump();
        for d in &diags {
            let span = d
                .span
                .map(|s| format!("{}..{}", s.start, s.end))
                .unwrap_or_default();
            out.push_str(&format!("error @{span}: {}\n", d.message));
        }
        insta::assert_snapshot!(out);
    });
}
