//! Local image names: a tag from `kiln images` found the way a user types
//! it (`app` is `app:latest`, `golang:1.22` is
//! `docker.io/library/golang:1.22`), on kiln-types' reference grammar.
//! Local names need not be valid references (`kiln tag` takes any name),
//! so a name that does not parse is looked up as typed (and with `:latest`).

use kiln_types::reference::{DEFAULT_TAG, Parts, Reference};

/// The names to try, most specific first.
pub fn candidates(name: &str) -> Vec<String> {
    let mut out = vec![name.to_owned()];
    let with_tag = if has_tag_or_digest(name) {
        name.to_owned()
    } else {
        format!("{name}:{DEFAULT_TAG}")
    };
    push_unique(&mut out, with_tag.clone());
    if let Ok(r) = Reference::parse(name) {
        push_unique(&mut out, r.normalized().to_string());
        // podman's name for an image built here without a registry
        if Parts::split(name).registry().is_none() {
            push_unique(&mut out, format!("localhost/{with_tag}"));
        }
    }
    out
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// Whether the name carries a `:tag` or an `@digest`.
pub fn has_tag_or_digest(name: &str) -> bool {
    let parts = Parts::split(name);
    parts.tag().is_some() || parts.digest().is_some()
}

/// Splits a name into repository and tag (`latest` when it has none); a
/// digest is left out.
pub fn split_tag(name: &str) -> (String, String) {
    let parts = Parts::split(name);
    let tag = parts.tag().unwrap_or(DEFAULT_TAG);
    (parts.name().to_owned(), tag.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        let cases: &[(&str, &[&str])] = &[
            (
                "golang:1.22",
                &[
                    "golang:1.22",
                    "docker.io/library/golang:1.22",
                    "localhost/golang:1.22",
                ],
            ),
            (
                "app",
                &[
                    "app",
                    "app:latest",
                    "docker.io/library/app:latest",
                    "localhost/app:latest",
                ],
            ),
            ("127.0.0.1:5000/x/y:1", &["127.0.0.1:5000/x/y:1"]),
            (
                "registry-1.docker.io/library/golang",
                &[
                    "registry-1.docker.io/library/golang",
                    "registry-1.docker.io/library/golang:latest",
                    "docker.io/library/golang:latest",
                ],
            ),
            ("[::1]:5000/x", &["[::1]:5000/x", "[::1]:5000/x:latest"]),
            // not a reference: as typed only
            ("My_App", &["My_App", "My_App:latest"]),
        ];
        for (name, want) in cases {
            assert_eq!(candidates(name), *want, "{name}");
        }
    }

    #[test]
    fn tags() {
        for (name, has, repo, tag) in [
            ("127.0.0.1:5000/x/y", false, "127.0.0.1:5000/x/y", "latest"),
            ("a/b:c", true, "a/b", "c"),
            ("[::1]:5000/x:y", true, "[::1]:5000/x", "y"),
            ("app@sha256:00", true, "app", "latest"),
            ("app:1@sha256:00", true, "app", "1"),
        ] {
            assert_eq!(has_tag_or_digest(name), has, "{name}");
            assert_eq!(split_tag(name), (repo.into(), tag.into()), "{name}");
        }
    }
}
