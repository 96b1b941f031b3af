//! The seeds' lints (`kiln_frontend::lint`) on Kilnfiles: one file per
//! lint in `tests/lint/`, each rendered finding pinned by a snapshot, and
//! a clean file that has none. The Dockerfile side is in
//! `crates/kiln-dockerfile/tests/lint.rs`.

use kiln_frontend::{Diagnostics, Options, compile, lint};

#[test]
fn lints() {
    insta::glob!("lint/*.kiln", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let compiled = compile("Kilnfile", &src, &Options::default())
            .unwrap_or_else(|d| panic!("{}", d.render_plain()));
        let found = lint::lint("Kilnfile", &src, &compiled.definition, false);
        let name = path.file_name().unwrap().to_string_lossy();
        let expected = src
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// "))
            .and_then(|l| l.split(": ").next())
            .filter(|c| c.starts_with("lint::"));
        match expected {
            Some(code) => assert!(
                found.iter().any(|d| d.code == code),
                "{name}: expected {code}, found {:?}",
                found.iter().map(|d| d.code).collect::<Vec<_>>()
            ),
            None => assert!(found.is_empty(), "{name}: {found:?}"),
        }
        let rendered = Diagnostics::new("Kilnfile", src.as_str().into(), found).render_plain();
        insta::assert_snapshot!(rendered);
    });
}
