//! Registry options shared by every command that talks to registries
//! (`pull`, `push`, `save`, `base`, and `build` for its bases): flags of
//! those commands (and, hidden, of `kiln` itself before the command),
//! recorded once by `main` and turned into [`kiln_registry::Settings`].

use std::sync::OnceLock;

use kiln_registry::{
    AuthConfig, Mirror, RegistriesConf, Settings, merge_mirrors, mirrors_from_env,
};
use miette::{IntoDiagnostic, WrapErr};

/// Registry flags of the commands that talk to registries (`build`,
/// `pull`, `push`, `save`, `base`); other commands do not list them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryOpts {
    /// Pull images of REGISTRY from MIRROR instead (repeatable), e.g.
    /// `docker.io=127.0.0.1:5000`; images keep their original names
    /// locally. Also `KILN_REGISTRY_MIRROR=R=M[,R=M...]`
    #[arg(long = "registry-mirror", value_name = "REGISTRY=MIRROR")]
    pub registry_mirror: Vec<Mirror>,

    /// Talk plain http to HOST[:PORT] (repeatable); localhost, 127.0.0.0/8
    /// and ::1 always use http
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
}

/// The same flags before the command (`kiln --registry-mirror R=M pull
/// ..`), as earlier versions took them: still accepted, not listed.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LeadingRegistryOpts {
    #[arg(long = "registry-mirror", value_name = "REGISTRY=MIRROR", hide = true)]
    pub registry_mirror: Vec<Mirror>,
    #[arg(long = "insecure-registry", value_name = "HOST", hide = true)]
    pub insecure_registry: Vec<String>,
}

impl RegistryOpts {
    /// These flags and those given before the command.
    pub fn with_leading(mut self, leading: LeadingRegistryOpts) -> Self {
        self.registry_mirror.extend(leading.registry_mirror);
        self.insecure_registry.extend(leading.insecure_registry);
        self
    }
}

static OPTS: OnceLock<RegistryOpts> = OnceLock::new();

/// Records the flags (called once by `main`).
pub fn init(opts: RegistryOpts) {
    let _ = OPTS.set(opts);
}

/// Client settings from the flags, `KILN_REGISTRY_MIRROR`, containers'
/// `registries.conf` and the auth files (docs/registry.md). Mirrors of the
/// flags and the environment replace the file's for the same registry.
pub fn settings() -> miette::Result<Settings> {
    let opts = OPTS.get().cloned().unwrap_or_default();
    let mut mirrors = opts.registry_mirror;
    mirrors.extend(mirrors_from_env().into_diagnostic()?);
    let conf = RegistriesConf::load_default().into_diagnostic()?;
    let mirrors = merge_mirrors(mirrors, conf.mirrors);
    let mut insecure_registries = opts.insecure_registry;
    insecure_registries.extend(conf.insecure);
    let auth = AuthConfig::load_default()
        .into_diagnostic()
        .wrap_err("cannot load registry credentials")?;
    Ok(Settings {
        mirrors,
        insecure_registries,
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
