//! Fuzz the Dockerfile frontend: any bytes go through check and lowering
//! (with and without a target, build args and a platform) and must never
//! panic; a successful compile must also print in every format.
#![no_main]

use kiln_dockerfile::{BaseConfig, BaseImages, Platform, check, compile, looks_like_dockerfile};
use kiln_frontend::Options;
use libfuzzer_sys::fuzz_target;

/// Every base image has a PATH, as a registry's would.
struct Bases;

impl BaseImages for Bases {
    fn config(&self, _: &str, _: &Platform) -> Result<Option<BaseConfig>, String> {
        Ok(Some(BaseConfig {
            env: vec!["PATH=/usr/bin:/bin".into()],
            workdir: Some("/work".into()),
            user: None,
            onbuild: Vec::new(),
        }))
    }
}

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let _ = looks_like_dockerfile(&src);
    let diags = check("Dockerfile", &src, &Options::default(), &Bases);
    let _ = kiln_dockerfile::convert("Dockerfile", &src, &Options::default(), &Bases);
    let _ = diags.render_plain();
    let mut opts = Options::default();
    opts.build_args.insert("VERSION".into(), "1.0".into());
    opts.platform = Some(Platform::parse("linux/arm64").unwrap());
    for target in [None, Some("build".to_string())] {
        opts.target = target;
        if let Ok(c) = compile("Dockerfile", &src, &opts, &Bases) {
            let _ = c.definition.to_text();
            let _ = c.definition.to_json();
            assert!(c.targets.contains(&c.target));
        }
    }
});
