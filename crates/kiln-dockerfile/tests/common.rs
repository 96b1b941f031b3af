//! What the corpus tests share: options from a `# test:` first line and a
//! stand-in for the store's base image configs.

#![allow(dead_code)]

use kiln_dockerfile::{BaseConfig, BaseImages, Platform};
use kiln_frontend::Options;

/// `# test: --target T --build-arg K=V --platform P --add-host H=IP
/// --ulimit N=S:H --shm-size SIZE` on the first line; the build platform
/// is `linux/amd64` on every host, so the snapshots of `$BUILDPLATFORM`
/// stages are the same everywhere.
pub fn options(src: &str) -> Options {
    let mut opts = Options {
        build_platform: Some(Platform::parse("linux/amd64").expect("platform")),
        ..Options::default()
    };
    let Some(flags) = src.lines().next().and_then(|l| l.strip_prefix("# test:")) else {
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
            "--platform" => opts.platform = Some(Platform::parse(v).expect("platform")),
            "--add-host" => opts
                .run
                .extra_hosts
                .push(kiln_dag::settings::parse_add_host(v).expect("host")),
            "--ulimit" => opts
                .run
                .ulimits
                .push(kiln_dag::settings::parse_ulimit(v).expect("ulimit")),
            "--shm-size" => {
                opts.run.shm_size = Some(kiln_dag::settings::parse_size(v).expect("size"));
            }
            other => panic!("unknown test flag {other}"),
        }
    }
    opts
}

/// Every image has Debian's config: a PATH and HOME, no workdir.
pub struct DebianLike;

impl BaseImages for DebianLike {
    fn config(&self, reference: &str, _: &Platform) -> Result<Option<BaseConfig>, String> {
        if reference.contains("nosuch") {
            return Err("manifest unknown".into());
        }
        Ok(Some(BaseConfig {
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                "HOME_FROM_BASE=/root".into(),
            ],
            workdir: None,
            user: None,
            onbuild: if reference.contains("with-onbuild") {
                vec!["RUN make".into()]
            } else {
                Vec::new()
            },
        }))
    }
}
