//! Package URLs (github.com/package-url/purl-spec): `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`,
//! each part percent-encoded except the characters the spec leaves bare.

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A purl; `namespace` may hold `/`-separated segments (Go module paths),
/// qualifiers are sorted by key as the spec's canonical form asks.
pub fn purl(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    version: Option<&str>,
    qualifiers: &[(&str, &str)],
) -> String {
    let mut s = format!("pkg:{kind}/");
    if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
        for seg in ns.split('/').filter(|x| !x.is_empty()) {
            s.push_str(&encode(seg));
            s.push('/');
        }
    }
    s.push_str(&encode(name));
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        s.push('@');
        s.push_str(&encode(v));
    }
    let mut q: Vec<&(&str, &str)> = qualifiers.iter().filter(|(_, v)| !v.is_empty()).collect();
    q.sort();
    for (i, (k, v)) in q.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push('=');
        s.push_str(&encode(v));
    }
    s
}

/// A Go module path as a purl: the last segment is the name.
pub fn golang(path: &str, version: Option<&str>) -> String {
    let (ns, name) = path
        .rsplit_once('/')
        .map_or((None, path), |(n, m)| (Some(n), m));
    purl("golang", ns, name, version, &[])
}

/// An npm name, `@scope/name` or `name`.
pub fn npm(name: &str, version: &str) -> String {
    let (ns, n) = name
        .split_once('/')
        .map_or((None, name), |(s, n)| (Some(s), n));
    purl("npm", ns, n, Some(version), &[])
}

/// PyPI names are compared normalized: lower case, runs of `-_.` as `-` (PEP 503).
pub fn pypi(name: &str, version: &str) -> String {
    let mut n = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !n.ends_with('-') {
                n.push('-');
            }
        } else {
            n.push(c.to_ascii_lowercase());
        }
    }
    purl("pypi", None, &n, Some(version), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_versions_and_qualifiers() {
        assert_eq!(
            purl(
                "deb",
                Some("debian"),
                "libc6",
                Some("2.36-9+deb12u4"),
                &[("arch", "amd64"), ("distro", "debian-12")]
            ),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            golang("golang.org/x/text", Some("v0.14.0")),
            "pkg:golang/golang.org/x/text@v0.14.0"
        );
        assert_eq!(npm("@babel/core", "7.0.0"), "pkg:npm/%40babel/core@7.0.0");
        assert_eq!(pypi("Foo_Bar.baz", "1.0"), "pkg:pypi/foo-bar-baz@1.0");
    }
}
