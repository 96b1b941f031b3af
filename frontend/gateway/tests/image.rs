//! The frontend image's Kilnfile: the binary on the static base with its
//! entrypoint set (what `just frontend-image` builds with kiln).

use std::path::Path;

#[test]
fn the_frontend_image_kilnfile_compiles_to_the_binary_on_the_static_base() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Kilnfile");
    let text = std::fs::read_to_string(&path).expect("frontend/gateway/Kilnfile");
    let compiled = kiln_frontend::compile("Kilnfile", &text, &Default::default())
        .unwrap_or_else(|d| panic!("{}", d.summary()));
    let def = compiled.definition;
    assert_eq!(
        def.config.entrypoint.as_deref(),
        Some(&["/usr/local/bin/kiln-frontend".to_string()][..])
    );
    let base = def.vertex(&def.config_from).expect("the base vertex");
    assert!(matches!(
        base.op,
        kiln_dag::Op::Source(kiln_dag::SourceOp::StaticBase { .. })
    ));
    let copies: Vec<_> = def
        .vertices
        .iter()
        .flat_map(|v| match &v.op {
            kiln_dag::Op::File(f) => f.actions.clone(),
            _ => Vec::new(),
        })
        .collect();
    assert!(copies.iter().any(|a| matches!(
        a,
        kiln_dag::FileAction::Copy(c)
            if c.chmod == Some(0o755) && c.dest == "/usr/local/bin/kiln-frontend"
    )));
    // It would build on BuildKit too.
    kiln_llb::emit(
        &def,
        &kiln_llb::Options::new("linux/amd64".parse().unwrap()),
    )
    .unwrap();
}
