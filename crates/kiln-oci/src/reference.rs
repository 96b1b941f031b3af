//! Local image names. The registry client owns full reference parsing; here
//! we only need to find a tag the way a user types it: `app` means
//! `app:latest`, `golang:1.22` means `docker.io/library/golang:1.22`.

/// The names to try, most specific first.
pub fn candidates(name: &str) -> Vec<String> {
    let mut out = vec![name.to_owned()];
    let with_tag = if has_tag_or_digest(name) {
        name.to_owned()
    } else {
        format!("{name}:latest")
    };
    push_unique(&mut out, with_tag.clone());
    let first = with_tag.split('/').next().unwrap_or_default();
    let has_domain = with_tag.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_domain {
        let full = if with_tag.contains('/') {
            format!("docker.io/{with_tag}")
        } else {
            format!("docker.io/library/{with_tag}")
        };
        push_unique(&mut out, full);
        push_unique(&mut out, format!("localhost/{with_tag}"));
    }
    out
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// Whether the last path component carries `:tag` or `@digest`.
pub fn has_tag_or_digest(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.contains(':') || name.contains('@')
}

/// Splits `repo:tag` into its parts (`latest` when no tag); a digest
/// reference keeps the whole name as repo and `latest` as tag.
pub fn split_tag(name: &str) -> (String, String) {
    if name.contains('@') {
        return (
            name.split('@').next().unwrap_or(name).to_owned(),
            "latest".to_owned(),
        );
    }
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(i) => (
            name[..slash + i].to_owned(),
            name[slash + i + 1..].to_owned(),
        ),
        None => (name.to_owned(), "latest".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(
            candidates("golang:1.22"),
            [
                "golang:1.22",
                "docker.io/library/golang:1.22",
                "localhost/golang:1.22"
            ]
        );
        assert_eq!(
            candidates("app"),
            [
                "app",
                "app:latest",
                "docker.io/library/app:latest",
                "localhost/app:latest"
            ]
        );
        assert_eq!(candidates("127.0.0.1:5000/x/y:1"), ["127.0.0.1:5000/x/y:1"]);
        assert_eq!(
            split_tag("127.0.0.1:5000/x/y"),
            ("127.0.0.1:5000/x/y".into(), "latest".into())
        );
        assert_eq!(split_tag("a/b:c"), ("a/b".into(), "c".into()));
    }
}
