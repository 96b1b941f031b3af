//! Every example's LLB, marshalled, decoded back with the same definitions
//! and printed: the snapshots show what BuildKit receives.

mod common;

use kiln_llb::{Options, SourceFile, decode, emit, encode, op_digest, to_text};

#[test]
fn examples_emit_their_snapshot() {
    for (name, text) in common::examples() {
        let def = common::compile("Kilnfile", &text);
        let mut opts = Options::new(common::amd64());
        opts.source = Some(SourceFile {
            name: "Kilnfile".into(),
            text: text.clone(),
        });
        let llb = emit(&def, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytes = encode(&llb.definition);
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back, llb.definition, "{name}: round trip");
        let listing = to_text(&back).expect("well-formed");
        insta::assert_snapshot!(name.clone(), listing);
    }
}

/// A package set has no LLB form yet: emission says so, naming where.
#[test]
fn package_set_examples_are_refused_with_the_reason() {
    let sets = common::package_set_examples();
    assert!(
        !sets.is_empty(),
        "examples/cc-app and examples/python-app use package sets"
    );
    for (name, text) in sets {
        let def = common::compile("Kilnfile", &text);
        let mut opts = Options::new(common::amd64());
        opts.source = Some(SourceFile {
            name: "Kilnfile".into(),
            text: text.clone(),
        });
        match emit(&def, &opts) {
            Err(e @ kiln_llb::EmitError::PackageSet { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("`bookworm` (at Kilnfile:"), "{name}: {msg}");
                assert!(msg.contains("kiln build"), "{name}: {msg}");
            }
            other => panic!("{name}: expected the package-set error, got {other:?}"),
        }
    }
}

#[test]
fn digests_are_sha256_of_the_marshalled_ops_and_key_the_metadata() {
    for (name, text) in common::examples() {
        let def = common::compile("Kilnfile", &text);
        let llb = emit(&def, &Options::new(common::amd64())).unwrap();
        let d = &llb.definition;
        let (terminal, ops) = d.def.split_last().expect("ops");
        for op in ops {
            let digest = op_digest(op);
            let md = d
                .metadata
                .get(&digest)
                .unwrap_or_else(|| panic!("{name}: no metadata for {digest}"));
            assert!(md.description.contains_key("llb.customname"), "{name}");
        }
        // The terminal names the root, and every vertex of kiln's graph maps
        // to an op of the definition (or to scratch).
        let root = llb.root.clone().expect("examples build something");
        let term = kiln_llb::Graph::from_definition(d).unwrap();
        assert_eq!(term.root.as_deref(), Some(root.as_str()));
        assert!(d.metadata.contains_key(&op_digest(terminal)));
        for v in &def.vertices {
            if let Some(Some(dg)) = llb.vertices.get(&v.digest) {
                assert!(term.op(dg).is_some(), "{name}: {dg} missing");
            }
        }
        // Emitting twice gives the same bytes: digests are stable.
        let again = emit(&def, &Options::new(common::amd64())).unwrap();
        assert_eq!(encode(&again.definition), encode(d), "{name}");
    }
}
