//! The seeds' lints (`kiln_frontend::lint`, shared with the Kilnfile) on
//! Dockerfiles: one file per lint in `tests/lint/`, each rendered finding
//! pinned by a snapshot, and a clean file that has none.

mod common;

use kiln_dockerfile::compile;
use kiln_frontend::{Diagnostics, Options, lint};

#[test]
fn lints() {
    insta::glob!("lint/*.Dockerfile", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let compiled = compile("Dockerfile", &src, &Options::default(), &common::DebianLike)
            .unwrap_or_else(|d| panic!("{}", d.render_plain()));
        let found = lint::lint("Dockerfile", &src, &compiled.definition, true);
        let name = path.file_name().unwrap().to_string_lossy();
        let expected = src
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# "))
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
        let rendered = Diagnostics::new("Dockerfile", src.as_str().into(), found).render_plain();
        insta::assert_snapshot!(rendered);
    });
}
