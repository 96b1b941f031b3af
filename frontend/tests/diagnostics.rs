//! Data-driven diagnostics tests: every `tests/diagnostics/*.kiln` is checked
//! and the rendered report (file:line:col, source line, caret, help) is
//! pinned by a snapshot. A first line `// test: FLAGS` sets `--target T` and
//! `--build-arg K=V` options. Every diagnostic kind must appear in the corpus.

use std::collections::BTreeSet;

use kiln_frontend::{Options, check};

fn options(src: &str) -> Options {
    let mut opts = Options::default();
    let Some(flags) = src.lines().next().and_then(|l| l.strip_prefix("// test:")) else {
        return opts;
    };
    let mut words = flags.split_whitespace();
    while let Some(w) = words.next() {
        let v = words.next().expect("flag value");
        match w {
            "--target" => opts.target = Some(v.to_string()),
            "--build-arg" => {
                let (k, val) = v.split_once('=').expect("K=V");
                opts.build_args.insert(k.into(), val.into());
            }
            other => panic!("unknown test flag {other}"),
        }
    }
    opts
}

#[test]
fn diagnostics_corpus() {
    let mut seen = BTreeSet::new();
    insta::glob!("diagnostics/*.kiln", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let diags = check("Kilnfile", &src, &options(&src));
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
        let report = format!("{}\n{}", diags.summary(), diags.render_plain());
        insta::assert_snapshot!(report);
    });
    let expected = [
        "kiln::arity",
        "kiln::bad-format",
        "kiln::bad-mode",
        "kiln::bad-option",
        "kiln::bad-reference",
        "kiln::bad-value",
        "kiln::context-escape",
        "kiln::context-path",
        "kiln::duplicate-binding",
        "kiln::missing-build-arg",
        "kiln::no-target",
        "kiln::nul-byte",
        "kiln::relative-path",
        "kiln::run-without-shell",
        "kiln::self-copy",
        "kiln::self-reference",
        "kiln::syntax",
        "kiln::type",
        "kiln::undefined-binding",
        "kiln::unknown-function",
        "kiln::unknown-method",
        "kiln::unknown-target",
        "kiln::unused-binding",
        "kiln::unused-build-arg",
        "kiln::use-before-definition",
    ];
    let missing: Vec<_> = expected.iter().filter(|c| !seen.contains(**c)).collect();
    assert!(missing.is_empty(), "no corpus file shows {missing:?}");
}

#[test]
fn source_too_large_is_a_diagnostic() {
    let src = " ".repeat(kiln_frontend::MAX_SOURCE_LEN + 1);
    let diags = check("Kilnfile", &src, &Options::default());
    assert_eq!(diags.items[0].code, "kiln::too-large");
}

#[test]
fn warnings_alone_do_not_fail() {
    let src = "let x = 1;\nlet app = static_base();\n";
    let diags = check("Kilnfile", src, &Options::default());
    assert!(!diags.has_errors());
    assert_eq!(diags.warnings().count(), 1);
    assert!(kiln_frontend::compile("Kilnfile", src, &Options::default()).is_ok());
}

#[test]
fn errors_past_column_65535_render_a_window_of_the_line() {
    // miette pads carets with `{:width$}`, which panics past u16::MAX: the
    // renderer gets an excerpt of the line, with the real line and column.
    let chain = ".env(\"A\", \"b\")".repeat(5000);
    let src = format!("let app = static_base(){chain}.nosuch();\nlet b = app.env(\"e\", 1);\n");
    let diags = check("Kilnfile", &src, &Options::default());
    assert_eq!(
        diags.summary(),
        "Kilnfile:1:70025: error[kiln::unknown-method]: no method `nosuch` on an image\n\
         Kilnfile:2:22: error[kiln::type]: expected a string, found an integer\n"
    );
    let out = diags.render_plain();
    assert!(out.contains("[Kilnfile:1:70025]"), "{out}");
    assert!(out.contains("[Kilnfile:2:22]"), "{out}");
    assert!(out.contains(" 1 | ...b\").env(\"A\", \"b\")"), "{out}");
    assert!(out.contains(".env(\"A\", \"b\").nosuch();\n"), "{out}");
    // Only the excerpt is printed, not the 70 KB line.
    assert!(out.len() < 2000, "{} bytes", out.len());
}
