//! Limits set in the Kilnfile reach the graph, and input that would be
//! mis-executed never does (issue #13, items 4 and 5).

use kiln_dag::Op;
use kiln_frontend::{Options, compile};

fn exec_of(src: &str) -> kiln_dag::ExecOp {
    let c = compile("Kilnfile", src, &Options::default())
        .unwrap_or_else(|d| panic!("{}", d.render_plain()));
    match c.state.op() {
        Op::Exec(x) => x.clone(),
        other => panic!("root is not an exec: {other:?}"),
    }
}

#[test]
fn pids_reaches_the_exec_op_and_its_digest() {
    let with = |opts: &str| {
        format!("let b = image(\"docker.io/library/debian:bookworm\").run(\"make\"{opts});\n")
    };
    let plain = exec_of(&with(""));
    let limited = exec_of(&with(", [pids(64), network(\"none\")]"));
    assert_eq!(plain.pids_limit, None);
    assert_eq!(limited.pids_limit, Some(64));
    let digest = |src: &str| {
        compile("Kilnfile", src, &Options::default())
            .unwrap()
            .state
            .digest()
    };
    assert_ne!(digest(&with(", [pids(64)]")), digest(&with("")));
    assert_ne!(digest(&with(", [pids(64)]")), digest(&with(", [pids(65)]")));
}

#[test]
fn pids_out_of_range_and_misplaced_are_located_errors() {
    for (opt, code, col) in [
        ("pids(0)", "kiln::bad-value", 70),
        ("pids(4194305)", "kiln::bad-value", 70),
        ("pids(\"10\")", "kiln::type", 70),
    ] {
        let src = format!(
            "let b = image(\"docker.io/library/debian:bookworm\").run(\"make\", [{opt}]);\n"
        );
        let d = compile("Kilnfile", &src, &Options::default()).unwrap_err();
        let e = d.errors().next().unwrap();
        assert_eq!(e.code, code, "{opt}: {}", d.summary());
        assert_eq!(
            d.position(e.span.unwrap()),
            format!("Kilnfile:1:{col}"),
            "{opt}"
        );
    }
    let src = "let b = image(\"docker.io/library/debian:bookworm\").mkdir(\"/d\", [pids(5)]);\n";
    let d = compile("Kilnfile", src, &Options::default()).unwrap_err();
    assert_eq!(d.errors().next().unwrap().code, "kiln::bad-option");
}

#[test]
fn nul_bytes_and_root_ids_do_not_compile() {
    // `compile` is what `kiln build` uses: each must stop the build, at the
    // argument, rather than run something else.
    for (step, col) in [
        (".run(\"\\0echo hi\")", 10),
        (".run([\"/bin/echo\", \"a\\0\"])", 24),
        (".env(\"A\\0B\", \"1\")", 10),
        (".env(\"A\", \"1\\0\")", 15),
        (".user(\"4294967295\")", 11),
        (".user(\"0:4294967295\")", 11),
        (".user(\"4294967296\")", 11),
    ] {
        let src = format!(
            "let b = image(\"docker.io/library/debian:bookworm\")\n    {step}\n    .run(\"true\");\n"
        );
        let d = compile("Kilnfile", &src, &Options::default()).unwrap_err();
        let e = d
            .errors()
            .next()
            .unwrap_or_else(|| panic!("{step}: no error"));
        assert_eq!(
            d.position(e.span.unwrap()),
            format!("Kilnfile:2:{col}"),
            "{step}: {}",
            d.summary()
        );
    }
    // The largest valid ids still compile.
    let ok = exec_of(
        "let b = image(\"docker.io/library/debian:bookworm\").user(\"4294967294:0\").run(\"id\");\n",
    );
    assert_eq!(ok.user.as_deref(), Some("4294967294:0"));
}
