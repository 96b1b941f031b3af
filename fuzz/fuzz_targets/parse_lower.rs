//! Fuzz the whole frontend: any bytes go through parse, check and lowering
//! (with and without a target and build args) and must never panic. A
//! successful compile must also print in every format.
#![no_main]

use kiln_frontend::{Options, compile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let (file, _) = kiln_frontend::parse(&src);
    let _ = file.dump();
    let diags = kiln_frontend::check("Kilnfile", &src, &Options::default());
    let _ = diags.render_plain();
    let mut opts = Options::default();
    opts.build_args.insert("GO_VERSION".into(), "1.23".into());
    for target in [None, file.items.first().map(|i| i.name.name.clone())] {
        opts.target = target;
        if let Ok(c) = compile("Kilnfile", &src, &opts) {
            let _ = c.definition.to_text();
            let _ = c.definition.to_dot();
            let _ = c.definition.to_json();
            assert!(c.targets.contains(&c.target));
        }
    }
});
