//! `--secret` flags as `docker buildx build` takes them (CSV fields, see
//! `kiln_types::spec`), read into the worker's [`Secrets`].

use std::fs;
use std::path::PathBuf;

use kiln_worker::secrets::Secrets;

/// Where a `--secret` flag takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// A bad `--secret` flag.
#[derive(Debug, thiserror::Error)]
pub enum SecretFlagError {
    #[error(
        "invalid `--secret {flag}`: {reason}; write `--secret id=ID,src=PATH` or `--secret id=ID,env=VAR`"
    )]
    Syntax { flag: String, reason: String },
    #[error("`--secret id={id}` is given twice: pass each secret id once")]
    Duplicate { id: String },
    #[error("cannot read secret `{id}` from `{path}`: {source}")]
    Read {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret `{id}` comes from the environment variable `{var}`, which is not set: set it or pass `src=PATH`"
    )]
    NoEnv { id: String, var: String },
}

impl SecretSource {
    /// Parses one `--secret` value the way `docker buildx build` does:
    /// `id=ID,src=PATH` (also `source=`), `id=ID,env=VAR`, with an optional
    /// `type=file|env`. Without `src` or `env` it reads the variable named
    /// like the id.
    pub fn parse(flag: &str) -> Result<(String, SecretSource), SecretFlagError> {
        let bad = |reason: &str| SecretFlagError::Syntax {
            flag: flag.to_string(),
            reason: reason.to_string(),
        };
        let (mut id, mut src, mut env, mut typ) = (None, None, None, None);
        let fields = kiln_types::spec::key_values(flag).map_err(|e| bad(&e.to_string()))?;
        for (k, v) in fields {
            let slot = match k.trim() {
                "id" => &mut id,
                "src" | "source" => &mut src,
                "env" => &mut env,
                "type" => &mut typ,
                other => {
                    return Err(bad(&format!(
                        "unknown key `{other}` (known: id, src, source, env, type)"
                    )));
                }
            };
            if slot.replace(v.to_string()).is_some() {
                return Err(bad(&format!("`{k}` is given twice")));
            }
        }
        let id = id.ok_or_else(|| bad("`id` is missing"))?;
        if id.is_empty() {
            return Err(bad("`id` is empty"));
        }
        let source = match (typ.as_deref(), src, env) {
            (_, Some(_), Some(_)) => return Err(bad("give either `src` or `env`, not both")),
            (Some("env"), Some(_), None) => return Err(bad("`type=env` takes `env=VAR`")),
            (Some("file"), None, Some(_)) => return Err(bad("`type=file` takes `src=PATH`")),
            (None | Some("file"), Some(p), None) => {
                if p.is_empty() {
                    return Err(bad("`src` is empty"));
                }
                SecretSource::File(PathBuf::from(p))
            }
            (None | Some("env"), None, Some(v)) => {
                if v.is_empty() {
                    return Err(bad("`env` is empty"));
                }
                SecretSource::Env(v)
            }
            // `--secret id=API_TOKEN` alone: the variable of that name
            // (as docker's documentation describes).
            (None | Some("env"), None, None) => SecretSource::Env(id.clone()),
            (Some(t), _, _) if t != "file" && t != "env" => {
                return Err(bad(&format!("unknown type `{t}` (known: file, env)")));
            }
            _ => return Err(bad("`type=file` takes `src=PATH`")),
        };
        Ok((id, source))
    }
}

/// Reads every `--secret` flag's value now, so a missing file or variable
/// fails before anything runs.
pub fn read(flags: &[String]) -> Result<Secrets, SecretFlagError> {
    let mut s = Secrets::default();
    for flag in flags {
        let (id, source) = SecretSource::parse(flag)?;
        let bytes = match &source {
            SecretSource::File(path) => fs::read(path).map_err(|e| SecretFlagError::Read {
                id: id.clone(),
                path: path.clone(),
                source: e,
            })?,
            SecretSource::Env(var) => std::env::var_os(var)
                .ok_or_else(|| SecretFlagError::NoEnv {
                    id: id.clone(),
                    var: var.clone(),
                })?
                .into_encoded_bytes(),
        };
        if s.get(&id).is_some() {
            return Err(SecretFlagError::Duplicate { id });
        }
        s.insert(id, bytes);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(String, SecretSource), String> {
        SecretSource::parse(s).map_err(|e| e.to_string())
    }

    #[test]
    fn secret_flags_parse_like_buildx() {
        assert_eq!(
            parse("id=tok,src=/a/b").unwrap(),
            ("tok".into(), SecretSource::File("/a/b".into()))
        );
        assert_eq!(
            parse("id=tok,source=rel,type=file").unwrap(),
            ("tok".into(), SecretSource::File("rel".into()))
        );
        assert_eq!(
            parse("id=tok,env=TOKEN").unwrap(),
            ("tok".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            parse("type=env,id=TOKEN").unwrap(),
            ("TOKEN".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            parse("id=TOKEN").unwrap(),
            ("TOKEN".into(), SecretSource::Env("TOKEN".into()))
        );
        for (bad, says) in [
            ("tok", "is not KEY=VALUE"),
            ("src=/a", "`id` is missing"),
            ("id=,src=/a", "`id` is empty"),
            ("id=t,type=file", "`type=file` takes `src=PATH`"),
            ("id=t,src=/a,env=B", "not both"),
            ("id=t,src=/a,src=/b", "given twice"),
            ("id=t,file=/a", "unknown key `file`"),
            ("id=t,type=ssh,src=/a", "unknown type `ssh`"),
            ("id=t,type=env,src=/a", "`type=env` takes"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains(&format!("`--secret {bad}`")), "{e}");
        }
    }

    #[test]
    fn secret_values_are_read_and_never_debug_printed() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("s");
        fs::write(&f, "hunter2").unwrap();
        let s = read(&[format!("id=a,src={}", f.display())]).unwrap();
        assert_eq!(s.get("a"), Some(&b"hunter2"[..]));
        assert!(!format!("{s:?}").contains("hunter2"));
        let e = read(&[format!("id=a,src={}", d.path().join("no").display())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read secret `a`") && e.contains("/no`"),
            "{e}"
        );
        let e = read(&["id=a,env=KILN_TEST_SURELY_UNSET".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("KILN_TEST_SURELY_UNSET"), "{e}");
        let e = read(&[
            format!("id=a,src={}", f.display()),
            format!("id=a,src={}", f.display()),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("given twice"), "{e}");
    }
}
