//! Image reference syntax (`[registry/]path[:tag][@sha256:hex]`) and its
//! normalization to the fully qualified form, so `debian:bookworm` and
//! `docker.io/library/debian:bookworm` are the same source (and digest).

/// Why a reference is invalid, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefError {
    pub message: String,
    pub help: String,
}

fn err(message: impl Into<String>, help: impl Into<String>) -> RefError {
    RefError {
        message: message.into(),
        help: help.into(),
    }
}

/// Validate and normalize `input`; returns the canonical reference.
pub fn normalize(input: &str) -> Result<String, RefError> {
    const EXAMPLE: &str =
        "write e.g. \"docker.io/library/debian:bookworm\" or \"debian@sha256:<64 hex digits>\"";
    if input.is_empty() {
        return Err(err("empty image reference", EXAMPLE));
    }
    if input.len() > 1024 || input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            "image reference contains whitespace or is too long",
            EXAMPLE,
        ));
    }
    let (rest, digest) = match input.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (input, None),
    };
    if let Some(d) = digest {
        let Some(hex) = d.strip_prefix("sha256:") else {
            return Err(err(
                format!("unsupported digest `{d}`"),
                "pin with a sha256 digest: `@sha256:` followed by 64 lowercase hex digits",
            ));
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err(
                format!("malformed digest `{d}`"),
                "a sha256 digest has exactly 64 lowercase hex digits",
            ));
        }
    }
    // A tag is after the last `:` that follows the last `/`.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let valid = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid {
            return Err(err(
                format!("invalid tag `{t}`"),
                "tags are up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
            ));
        }
    }
    if name.is_empty() {
        return Err(err("image reference has no repository name", EXAMPLE));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // The first component is a registry when it looks like a host.
    let domain = if parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
    {
        Some(parts.remove(0))
    } else {
        None
    };
    if let Some(d) = domain {
        let (host, port) = match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        let host_ok = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        let port_ok = port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            return Err(err(
                format!("invalid registry `{d}`"),
                "a registry is a host name with an optional `:port`",
            ));
        }
    }
    for p in &parts {
        if p.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err(
                format!("repository name `{name}` must be lowercase"),
                format!("write `{}`", name.to_ascii_lowercase()),
            ));
        }
        if !valid_component(p) {
            return Err(err(
                format!("invalid repository name component `{p}`"),
                "components are lowercase letters and digits, separated by `.`, `_`, `__` or dashes",
            ));
        }
    }
    let domain = match domain {
        Some("index.docker.io") | None => "docker.io",
        Some(d) => d,
    };
    let mut path = parts.join("/");
    if domain == "docker.io" && parts.len() == 1 {
        path = format!("library/{path}");
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

fn valid_component(p: &str) -> bool {
    let b = p.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // separator: `.`, `_`, `__` or one or more `-`
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !b.get(i).copied().is_some_and(is_alnum) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalizes() {
        let d = "a".repeat(64);
        for (input, want) in [
            ("debian", "docker.io/library/debian:latest".to_string()),
            (
                "debian:bookworm",
                "docker.io/library/debian:bookworm".into(),
            ),
            (
                "docker.io/library/debian:bookworm",
                "docker.io/library/debian:bookworm".into(),
            ),
            ("ghcr.io/o/r:1.2", "ghcr.io/o/r:1.2".into()),
            ("localhost:5000/x", "localhost:5000/x:latest".into()),
            (
                &format!("debian@sha256:{d}"),
                format!("docker.io/library/debian@sha256:{d}"),
            ),
            (
                &format!("debian:12@sha256:{d}"),
                format!("docker.io/library/debian:12@sha256:{d}"),
            ),
        ] {
            assert_eq!(normalize(input).as_deref(), Ok(want.as_str()), "{input}");
        }
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "Debian",
            "debian:",
            "debian@sha256:abc",
            "a b",
            "x/-y",
            "debian:-x",
            "reg:99999999/x",
            "debian@md5:00",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }
}
