//! `-o` spec parsing, data-driven: each line of input with what it parses to
//! or the error a user sees.

use kiln_oci::OutputSpec;

#[test]
fn output_specs() {
    let cases = [
        "type=oci,dest=out.tar",
        "type=oci,dest=out.tar,name=example.com/app:1",
        "type=oci-layout,dest=layout,name=a:1;b:2",
        "type=docker,dest=-,name=app",
        "type=local,dest=rootfs",
        "type=tar,dest=fs.tar",
        "type=registry,name=127.0.0.1:5000/app:1",
        "type=image,name=r.example/app:1,push=true",
        "type=image,name=r.example/app:1",
        "out-dir",
        "-",
        "",
        "type=oci",
        "dest=x",
        "type=zip,dest=x",
        "type=oci,dest=a,dest=b",
        "type=local,dest=x,name=y",
        "type=registry",
        "type=oci,dest",
        "type=local,dest=-",
    ];
    let mut out = String::new();
    for c in cases {
        let line = match c.parse::<OutputSpec>() {
            Ok(s) => format!(
                "kind={} dest={:?} names={:?} push={} options={:?}",
                s.kind,
                s.dest.map(|d| d.display().to_string()),
                s.names,
                s.push,
                s.options
            ),
            Err(e) => format!("error: {e}"),
        };
        out.push_str(&format!("{c:?}\n  => {line}\n"));
    }
    insta::assert_snapshot!(out);
}
