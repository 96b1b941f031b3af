//! `kiln login` and `kiln logout`: registry credentials kept where docker
//! and podman keep them (docs/registry.md).

use std::io::Read as _;
use std::process::ExitCode;

use kiln_registry::credentials::{self, DOCKER_HUB_SERVER};
use kiln_registry::{AuthConfig, Client, Credential, Saved, Settings};
use miette::{IntoDiagnostic, WrapErr};

/// Log in to a registry
///
/// Checks the credentials against the registry (as `docker login` does)
/// and stores them: in `$REGISTRY_AUTH_FILE` when it is set (as `podman
/// login`), else in docker's `config.json` (`$DOCKER_CONFIG` or
/// `~/.docker`): in the credential helper its `credHelpers`/`credsStore`
/// name, else base64 in `auths`, the file private (0600). When the token
/// server hands out a refresh token it is stored as `identitytoken`
/// instead of the password.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The registry, e.g. `ghcr.io` or `127.0.0.1:5000`; Docker Hub when
    /// not given
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,

    /// The user name
    #[arg(short, long)]
    pub username: String,

    /// The password or token (insecure: it is visible to other users and
    /// kept in shell history; prefer `--password-stdin`)
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,

    /// Read the password or token from stdin
    #[arg(long)]
    pub password_stdin: bool,

    /// Talk plain http to SERVER; localhost, 127.0.0.0/8 and ::1 always
    /// use http
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
}

/// Log out of a registry
///
/// Removes the credentials for SERVER from the file `kiln login` writes
/// (and from its credential helper).
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The registry; Docker Hub when not given
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

/// `https://index.docker.io/v1/`, `docker.io` -> `docker.io`;
/// `http://h:5000/` -> `h:5000`.
fn registry_of(server: Option<&str>) -> miette::Result<String> {
    let key = credentials::normalize_key(server.unwrap_or(DOCKER_HUB_SERVER));
    if key.is_empty() || key.contains('/') {
        miette::bail!(
            "`{}` is not a registry: give its host, e.g. `ghcr.io` or `127.0.0.1:5000`",
            server.unwrap_or_default()
        );
    }
    Ok(key)
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let registry = registry_of(args.server.as_deref())?;
    let password = match (args.password, args.password_stdin) {
        (Some(p), _) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .into_diagnostic()
                .wrap_err("cannot read the password from stdin")?;
            // as docker: the trailing newline of `echo` is not part of it
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => miette::bail!(
            help =
                format!("e.g. `echo \"$TOKEN\" | kiln login {registry} -u USER --password-stdin`"),
            "no password given: pass it on stdin with `--password-stdin` (or with `-p`)"
        ),
    };
    if password.is_empty() {
        miette::bail!("the password is empty");
    }
    let cred = Credential::basic(args.username, password);
    let client = Client::new(Settings {
        insecure_registries: args.insecure_registry,
        ..Settings::default()
    })
    .into_diagnostic()?;
    let stored = super::registry::runtime()?
        .block_on(client.login(&registry, &cred))
        .map_err(super::registry_help::explain)?;
    let file = credentials::login_file().into_diagnostic()?;
    let saved = credentials::save(&file, &registry, &stored)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot store the credentials for `{registry}`"))?;
    if let Saved::Helper(h) = &saved {
        eprintln!("credentials stored by `docker-credential-{h}`");
    }
    // A file read before the one written would hide these credentials.
    if let Ok(all) = AuthConfig::load_default()
        && let Some(first) = all.source_of(&registry)
        && first != file
    {
        eprintln!(
            "warning: `{}` has credentials for `{registry}` that kiln reads before `{}`; remove them \
             there (`podman logout {registry}`) or they stay in effect",
            first.display(),
            file.display()
        );
    }
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

pub fn run_logout(args: LogoutArgs) -> miette::Result<ExitCode> {
    let registry = registry_of(args.server.as_deref())?;
    let file = credentials::login_file().into_diagnostic()?;
    let removed = credentials::remove(&file, &registry)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot remove the credentials for `{registry}`"))?;
    if removed {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(ExitCode::SUCCESS)
}
