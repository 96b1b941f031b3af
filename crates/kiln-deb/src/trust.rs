//! OpenPGP trust: keyrings and the clearsigned `InRelease` they verify
//! (rPGP, the `pgp` crate).

use std::path::{Path, PathBuf};

use pgp::composed::{CleartextSignedMessage, PublicOrSecret, SignedPublicKey};
use pgp::types::KeyDetails;

/// A keyring that cannot be used, or a signature that does not verify.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "cannot read the keyring `{path}`; install `debian-archive-keyring` or name another keyring"
    )]
    ReadKeyring {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the keyring `{path}` is not OpenPGP keys")]
    ParseKeyring {
        path: PathBuf,
        #[source]
        source: pgp::errors::Error,
    },
    #[error("the keyrings {paths} hold no public keys")]
    NoKeys { paths: String },
    #[error("`{url}` is not a clearsigned OpenPGP message")]
    NotSigned {
        url: String,
        #[source]
        source: pgp::errors::Error,
    },
    #[error(
        "`{url}`: bad signature: none of its {signatures} signature(s) (issuers {issuers}) verifies with a key of {keyrings}"
    )]
    BadSignature {
        url: String,
        signatures: usize,
        issuers: String,
        keyrings: String,
    },
}

/// Public keys (primary keys and subkeys) trusted to sign repositories.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
    paths: Vec<PathBuf>,
}

impl Keyring {
    /// Reads binary (`.gpg`) or ASCII-armored (`.asc`) keyrings.
    pub fn load(paths: &[PathBuf]) -> Result<Keyring, TrustError> {
        let mut keys = Vec::new();
        for path in paths {
            keys.extend(read_keyring(path)?);
        }
        if keys.is_empty() {
            return Err(TrustError::NoKeys {
                paths: show_paths(paths),
            });
        }
        Ok(Keyring {
            keys,
            paths: paths.to_vec(),
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a clearsigned message (`InRelease`, fetched from `url`)
    /// and returns the text that was signed: only that text may be used.
    pub fn verify_clearsigned(&self, url: &str, message: &str) -> Result<String, TrustError> {
        let (msg, _) = CleartextSignedMessage::from_string(message).map_err(|source| {
            TrustError::NotSigned {
                url: url.to_string(),
                source,
            }
        })?;
        for key in &self.keys {
            if msg.verify(key).is_ok() {
                return Ok(signed_text(&msg));
            }
            for sub in &key.public_subkeys {
                if msg.verify(sub).is_ok() {
                    return Ok(signed_text(&msg));
                }
            }
        }
        let issuers: Vec<String> = msg
            .signatures()
            .iter()
            .flat_map(|s| {
                let fps = s.issuer_fingerprint().into_iter().map(|f| f.to_string());
                let ids = s.issuer_key_id().into_iter().map(|k| k.to_string());
                fps.chain(ids).collect::<Vec<_>>()
            })
            .collect();
        Err(TrustError::BadSignature {
            url: url.to_string(),
            signatures: msg.signatures().len(),
            issuers: if issuers.is_empty() {
                "unknown".to_string()
            } else {
                issuers.join(", ")
            },
            keyrings: show_paths(&self.paths),
        })
    }

    /// The fingerprints of the primary keys, for logs.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.primary_key.fingerprint().to_string())
            .collect()
    }
}

/// The signed text with the message's line breaks (`\n`), as apt reads it.
fn signed_text(msg: &CleartextSignedMessage) -> String {
    msg.signed_text().replace("\r\n", "\n")
}

fn show_paths(paths: &[PathBuf]) -> String {
    let v: Vec<String> = paths.iter().map(|p| format!("`{}`", p.display())).collect();
    v.join(", ")
}

fn read_keyring(path: &Path) -> Result<Vec<SignedPublicKey>, TrustError> {
    let bytes = std::fs::read(path).map_err(|source| TrustError::ReadKeyring {
        path: path.to_path_buf(),
        source,
    })?;
    let perr = |source| TrustError::ParseKeyring {
        path: path.to_path_buf(),
        source,
    };
    // binary (`.gpg`) and ASCII-armored (`.asc`) keyrings alike
    let (iter, _) = PublicOrSecret::from_reader_many(&bytes[..]).map_err(perr)?;
    let mut keys = Vec::new();
    for k in iter {
        match k.map_err(perr)? {
            PublicOrSecret::Public(k) => keys.push(k),
            PublicOrSecret::Secret(k) => keys.push(k.to_public_key()),
        }
    }
    Ok(keys)
}
