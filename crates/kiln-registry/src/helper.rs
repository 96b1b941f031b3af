//! Docker's credential helper protocol
//! (<https://github.com/docker/docker-credential-helpers>): the program
//! `docker-credential-NAME` is run with one argument, `get`, `store` or
//! `erase`; `get` and `erase` read the server URL on stdin, `store` reads
//! `{"ServerURL", "Username", "Secret"}`; `get` prints that JSON. A user
//! name of `<token>` means the secret is an identity token. A helper that
//! has nothing says `credentials not found in native keychain` and fails;
//! that message is part of the protocol, so it is the one string compared.

use std::io::Write as _;
use std::process::{Command, ExitStatus, Stdio};

use crate::credentials::Credential;

/// The protocol's answer for "no credentials for this server".
const NOT_FOUND: &str = "credentials not found in native keychain";

/// The user name docker's helpers give with an identity token.
const TOKEN_USER: &str = "<token>";

/// Why a credential helper gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(
        "cannot run credential helper `docker-credential-{helper}` (named in the registry auth file); install it or remove it from `credsStore`/`credHelpers`"
    )]
    Spawn {
        helper: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "credential helper `docker-credential-{helper}` failed to {action} credentials for `{server}` ({status}){}",
        said(.message)
    )]
    Failed {
        helper: String,
        action: &'static str,
        server: String,
        status: ExitStatus,
        /// What the helper printed (its own error message).
        message: String,
    },
    #[error(
        "credential helper `docker-credential-{helper}` answered `get` for `{server}` with something other than its JSON"
    )]
    Output {
        helper: String,
        server: String,
        #[source]
        source: serde_json::Error,
    },
}

fn said(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-{helper} {action}` with `input` on stdin;
/// `Ok(None)` when the helper said it has no credentials.
fn run(
    helper: &str,
    action: &'static str,
    server: &str,
    input: &[u8],
) -> Result<Option<Vec<u8>>, HelperError> {
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| HelperError::Spawn {
            helper: helper.to_string(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status.
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|source| HelperError::Spawn {
            helper: helper.to_string(),
            source,
        })?;
    if out.status.success() {
        return Ok(Some(out.stdout));
    }
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if stdout == NOT_FOUND {
        return Ok(None);
    }
    let message = if stdout.is_empty() {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    } else {
        stdout
    };
    Err(HelperError::Failed {
        helper: helper.to_string(),
        action,
        server: server.to_string(),
        status: out.status,
        message: message.chars().take(300).collect(),
    })
}

/// `get`: the helper's credentials for `server`, if it has some.
pub fn get(helper: &str, server: &str) -> Result<Option<Credential>, HelperError> {
    let Some(out) = run(helper, "get", server, server.as_bytes())? else {
        return Ok(None);
    };
    let w: Wire = serde_json::from_slice(&out).map_err(|source| HelperError::Output {
        helper: helper.to_string(),
        server: server.to_string(),
        source,
    })?;
    if w.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if w.username == TOKEN_USER {
        Credential {
            username: String::new(),
            password: String::new(),
            identity_token: Some(w.secret),
        }
    } else {
        Credential::basic(w.username, w.secret)
    }))
}

/// `store`: hands `cred` for `server` to the helper.
pub fn store(helper: &str, server: &str, cred: &Credential) -> Result<(), HelperError> {
    let w = match &cred.identity_token {
        Some(t) => Wire {
            server_url: server.to_string(),
            username: TOKEN_USER.to_string(),
            secret: t.clone(),
        },
        None => Wire {
            server_url: server.to_string(),
            username: cred.username.clone(),
            secret: cred.password.clone(),
        },
    };
    let input = serde_json::to_vec(&w).expect("plain strings serialize");
    run(helper, "store", server, &input)?;
    Ok(())
}

/// `erase`: whether the helper had credentials for `server`.
pub fn erase(helper: &str, server: &str) -> Result<bool, HelperError> {
    Ok(run(helper, "erase", server, server.as_bytes())?.is_some())
}
