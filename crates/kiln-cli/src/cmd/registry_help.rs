//! What to do about a registry failure: each kind of
//! [`kiln_registry::RegistryError`] (and each distribution error code the
//! registry named) gets a `help:` line. Decided on the error's variants and
//! codes, never on its text.

use std::fmt;

use kiln_registry::{ErrorCode, RegistryError};

/// A registry error as a miette diagnostic with its help line.
pub struct Explained {
    error: RegistryError,
    help: Option<String>,
}

impl fmt::Debug for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Explained {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl miette::Diagnostic for Explained {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

/// `error` with the help its kind calls for.
pub fn explain(error: RegistryError) -> miette::Report {
    let help = help(&error);
    miette::Report::new(Explained { error, help })
}

/// The help for a registry error. For a pull tried at mirrors first, the
/// registry's own answer (the last) decides, unless only a mirror's says
/// something useful.
pub fn help(error: &RegistryError) -> Option<String> {
    error.causes().iter().rev().find_map(|e| help_for(e))
}

/// The help for the first registry error in a chain of sources (a build
/// step's, where the worker keeps the registry's error as its source).
pub fn help_in_chain<'a>(
    mut chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> Option<String> {
    chain.find_map(|e| {
        e.downcast_ref::<RegistryError>()
            .or_else(|| e.downcast_ref::<Box<RegistryError>>().map(|b| &**b))
            .and_then(help)
    })
}

fn help_for(e: &RegistryError) -> Option<String> {
    Some(match e {
        RegistryError::UnresolvableHost { host, .. } => format!(
            "the name `{host}` does not resolve: check the spelling; if this machine reaches \
             registries only through a mirror, name it with `--registry-mirror REGISTRY=MIRROR` \
             or a `[[registry.mirror]]` in `registries.conf` (docs/registry.md)"
        ),
        RegistryError::Unauthorized { host, .. } => format!(
            "log in with `kiln login {host}` (or `docker login`/`podman login`): kiln reads \
             `$REGISTRY_AUTH_FILE`, containers' `auth.json` and `~/.docker/config.json`, with \
             their credential helpers"
        ),
        RegistryError::Rejected { host, .. } => format!(
            "the stored credentials for `{host}` are wrong or expired: run `kiln login {host}` \
             again"
        ),
        RegistryError::Denied { .. } => {
            "these credentials may not access this repository: check its name, or log in as a \
             user that may"
                .to_string()
        }
        RegistryError::Credentials { .. } => {
            "fix or install the credential helper, or remove it from `credsStore`/`credHelpers` \
             in the auth file"
                .to_string()
        }
        RegistryError::Connection { .. } => {
            "check that the registry is up and reachable from here; a registry on plain http \
             needs `--insecure-registry HOST`"
                .to_string()
        }
        // 429 Too Many Requests
        RegistryError::Unavailable { status, .. } if status.as_u16() == 429 => rate_limit_help(),
        RegistryError::Api { error, .. } => match &error.code {
            ErrorCode::ManifestUnknown => {
                "the repository has no manifest by this tag or digest: check the tag or digest \
                 (a digest must be the image's or its index's, as `kiln pull` prints it)"
                    .to_string()
            }
            ErrorCode::NameUnknown => {
                "check the repository name: Docker Hub's official images are `library/NAME` \
                 (written `NAME`); private repositories may look absent without `kiln login`"
                    .to_string()
            }
            ErrorCode::BlobUnknown | ErrorCode::ManifestBlobUnknown => {
                "the registry lacks a blob the image needs: push the image again from a store \
                 that has it whole"
                    .to_string()
            }
            ErrorCode::Unauthorized => {
                "log in with `kiln login REGISTRY` (or `docker login`/`podman login`)".to_string()
            }
            ErrorCode::Denied => "these credentials may not access this repository: check its \
                                  name, or log in as a user that may"
                .to_string(),
            ErrorCode::TooManyRequests => rate_limit_help(),
            ErrorCode::Unsupported => {
                "the registry does not support this operation (an OCI index, an artifact or a \
                 cross-repository mount); try another registry or output format"
                    .to_string()
            }
            ErrorCode::NameInvalid => {
                "the registry does not accept this repository name: use lowercase \
                 `[a-z0-9._-]` path parts it allows"
                    .to_string()
            }
            ErrorCode::DigestInvalid | ErrorCode::SizeInvalid => {
                "the content did not arrive as sent: run `kiln cache check`, then push again"
                    .to_string()
            }
            ErrorCode::ManifestInvalid => {
                "the registry refuses this manifest's media type or content: some registries \
                 take only docker media types or no OCI index"
                    .to_string()
            }
            ErrorCode::BlobUploadInvalid | ErrorCode::BlobUploadUnknown => {
                "the upload was interrupted on the registry's side: push again".to_string()
            }
            ErrorCode::Other(_) => return None,
        },
        _ => return None,
    })
}

fn rate_limit_help() -> String {
    "the registry's rate limit: wait and retry, log in (Docker Hub gives logged-in users a \
     higher limit), or pull through a mirror with `--registry-mirror`"
        .to_string()
}
