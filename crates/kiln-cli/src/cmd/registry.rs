//! Registry options shared by every command that talks to registries
//! (`pull`, `push`, and `build` for its bases): global flags on `kiln`,
//! recorded once by `main` and turned into [`kiln_registry::Settings`].

use std::sync::OnceLock;

use kiln_registry::{AuthConfig, Mirror, Settings, mirrors_from_env};
use miette::{IntoDiagnostic, WrapErr};

/// Global registry flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryOpts {
    /// Pull images of REGISTRY from MIRROR instead (repeatable), e.g.
    /// `docker.io=127.0.0.1:5000`; images keep their original names
    /// locally. Also `KILN_REGISTRY_MIRROR=R=M[,R=M...]`
    #[arg(
        long = "registry-mirror",
        value_name = "REGISTRY=MIRROR",
        global = true
    )]
    pub registry_mirror: Vec<Mirror>,

    /// Talk plain http to HOST[:PORT] (repeatable); localhost, 127.0.0.0/8
    /// and ::1 always use http
    #[arg(long = "insecure-registry", value_name = "HOST", global = true)]
    pub insecure_registry: Vec<String>,
}

static OPTS: OnceLock<RegistryOpts> = OnceLock::new();

/// Records the global flags (called once by `main`).
pub fn init(opts: RegistryOpts) {
    let _ = OPTS.set(opts);
}

/// Client settings from the flags, `KILN_REGISTRY_MIRROR` and the auth
/// files (`REGISTRY_AUTH_FILE`, `~/.docker/config.json`). Flags come first.
pub fn settings() -> miette::Result<Settings> {
    let opts = OPTS.get().cloned().unwrap_or_default();
    let mut mirrors = opts.registry_mirror;
    mirrors.extend(mirrors_from_env().into_diagnostic()?);
    let auth = AuthConfig::load_default()
        .into_diagnostic()
        .wrap_err("cannot load registry credentials")?;
    Ok(Settings {
        mirrors,
        insecure_registries: opts.insecure_registry,
        auth,
        ..Settings::default()
    })
}

/// A small runtime for one command's network work.
pub fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("cannot start the async runtime")
}
