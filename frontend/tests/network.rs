//! `network(..)` of a run reaches the exec op (issue #13, item 9).

use kiln_dag::{Network, Op};
use kiln_frontend::{Options, compile};

fn network_of(opts: &str) -> Network {
    let src =
        format!("let b = image(\"docker.io/library/debian:bookworm\").run(\"make\"{opts});\n");
    let c = compile("Kilnfile", &src, &Options::default())
        .unwrap_or_else(|d| panic!("{}", d.render_plain()));
    match c.state.op() {
        Op::Exec(x) => x.network,
        other => panic!("root is not an exec: {other:?}"),
    }
}

#[test]
fn each_network_mode_reaches_the_exec_op() {
    assert_eq!(network_of(""), Network::Host);
    assert_eq!(network_of(", [network(\"host\")]"), Network::Host);
    assert_eq!(network_of(", [network(\"none\")]"), Network::None);
    assert_eq!(network_of(", [network(\"isolated\")]"), Network::Isolated);
}

#[test]
fn a_misspelt_mode_names_isolated_among_the_choices() {
    let src = "let b = image(\"docker.io/library/debian:bookworm\").run(\"make\", [network(\"isolate\")]);\n";
    let Err(d) = compile("Kilnfile", src, &Options::default()) else {
        panic!("an unknown mode is an error")
    };
    let d = d.render_plain();
    assert!(d.contains("unknown network mode `isolate`"), "{d}");
    assert!(d.contains("did you mean \"isolated\"?"), "{d}");
}
