use super::*;

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Every reference the frontend, the registry client and the local-name
/// lookup used to read differently, and the grammar's edges: the canonical
/// form (what the build graph digests) and the familiar one, or where the
/// error is and what was expected there.
#[test]
fn reference_table() {
    let long_tag = format!("debian:{}", "t".repeat(129));
    let max_tag = format!("debian:{}", "t".repeat(128));
    let long_name = format!("example.com/{}", "a".repeat(300));
    let sha512 = format!("debian@sha512:{}", "ab".repeat(64));
    let inputs: Vec<String> = [
        // once disagreeing
        "[::1]:5000/x:y",
        "[::1]/x",
        "localhost:0/x:y",
        "localhost:65535/x",
        "localhost:65536/x",
        "registry-1.docker.io/library/debian:bookworm",
        "index.docker.io/library/debian:bookworm",
        "docker.io/library/debian:bookworm",
        "docker.io/debian:bookworm",
        "debian:bookworm",
        "debian",
        // names
        "library/debian",
        "user/repo",
        "ghcr.io/owner/app:v1.2.3",
        "localhost/app",
        "localhost:5000/team/app:dev",
        "127.0.0.1:5000/app",
        "quay.io/a/b/c/d:tag_1-x.y",
        "my-registry.example.com:443/a__b/c-d/e.f",
        "Debian:bookworm",
        "docker.io/library/Debian:bookworm",
        "a//b",
        "a/b_-c",
        "-leading",
        "trailing-",
        "a b",
        "bad_host.com/app",
        "-bad.com/app",
        "[::1/app",
        "[::g]:5000/app",
        "[::1]x/app",
        "host:99999/app",
        "host:/app",
        "host:+1/app",
        ":tag",
        "",
        // tags and digests
        "debian:",
        "debian:-x",
        "debian:.x",
        "debian:a/b",
        &max_tag,
        &long_tag,
        &format!("debian@sha256:{HEX}"),
        &format!("debian:12@sha256:{HEX}"),
        &format!("localhost:5000/x@sha256:{HEX}"),
        &sha512,
        "debian@sha256:abc",
        "debian@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
        "debian@md5:0123456789abcdef0123456789abcdef",
        "debian@",
        &long_name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut out = String::new();
    for i in &inputs {
        let shown = if i.len() > 80 {
            format!("{}... ({} bytes)", &i[..60], i.len())
        } else {
            i.clone()
        };
        match Reference::parse(i) {
            Ok(r) => {
                let n = r.normalized();
                out.push_str(&format!(
                    "  {shown:?}\n  => {n}\n     familiar {}\n",
                    n.familiar()
                ));
            }
            Err(e) => {
                let caret = if i.len() > 80 {
                    format!("at {}..{}", e.span.start, e.span.end)
                } else {
                    format!(
                        "{}{}",
                        " ".repeat(e.span.start + 1),
                        "^".repeat((e.span.end - e.span.start).max(1))
                    )
                };
                out.push_str(&format!(
                    "  {shown:?}\n  {caret}\n  error: {}; expected {}\n",
                    crate::error_chain(&e.kind),
                    e.kind.expected()
                ));
            }
        }
    }
    insta::assert_snapshot!(out);
}

#[test]
fn spellings_of_one_image_are_one_reference() {
    let canon = "docker.io/library/debian:bookworm";
    for s in [
        "debian:bookworm",
        "library/debian:bookworm",
        "docker.io/debian:bookworm",
        "docker.io/library/debian:bookworm",
        "index.docker.io/library/debian:bookworm",
        "registry-1.docker.io/library/debian:bookworm",
        "registry-1.docker.io/debian:bookworm",
    ] {
        let r = Reference::parse(s).unwrap().normalized();
        assert_eq!(r.to_string(), canon, "{s}");
        assert_eq!(r.familiar(), "debian:bookworm", "{s}");
    }
}

#[test]
fn display_round_trips() {
    for s in [
        "docker.io/library/golang:1.22",
        &format!("127.0.0.1:5000/a/b@sha256:{HEX}"),
        &format!("docker.io/library/debian:12@sha256:{HEX}"),
        "[::1]:5000/x:y",
        "docker.io/user/app",
    ] {
        let r = Reference::parse(s).unwrap();
        assert_eq!(r.to_string(), s);
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
    }
}

#[test]
fn errors_point_at_the_part() {
    for (input, part, kind) in [
        ("localhost:0/x:y", "0", "Port"),
        ("localhost:65536/x", "65536", "Port"),
        ("[::g]:5000/x", "::g", "Ipv6"),
        ("docker.io/library/Debian:bookworm", "Debian", "Uppercase"),
        ("debian:-x", "-x", "Tag"),
        ("a/b_-c", "b_-c", "Component"),
        ("debian@sha256:abc", "sha256:abc", "Digest"),
        ("bad_host.com/app", "bad_host.com", "Host"),
    ] {
        let e = Reference::parse(input).unwrap_err();
        assert_eq!(&input[e.span.clone()], part, "{input}");
        assert!(format!("{:?}", e.kind).starts_with(kind), "{input}: {e:?}");
        assert!(e.to_string().contains(&e.kind.expected()), "{input}: {e}");
    }
}

#[test]
fn accessors_and_edits() {
    let r = Reference::parse("localhost:5000/team/app").unwrap();
    assert_eq!(r.registry(), "localhost:5000");
    assert_eq!(r.repository(), "team/app");
    assert_eq!(r.tag(), None);
    assert_eq!(r.manifest_reference(), "latest");
    assert_eq!(r.normalized().tag(), Some("latest"));
    let d: Digest = format!("sha256:{HEX}").parse().unwrap();
    let pinned = r.with_tag("v1").unwrap().with_digest(d);
    assert_eq!(pinned.manifest_reference(), d.to_string());
    assert_eq!(
        pinned.to_string(),
        format!("localhost:5000/team/app:v1@sha256:{HEX}")
    );
    // A digest-only reference gets no tag when normalized.
    let by_digest = Reference::parse(&format!("debian@sha256:{HEX}")).unwrap();
    assert_eq!(by_digest.normalized().tag(), None);
    let e = r.with_tag("-x").unwrap_err();
    assert_eq!(&e.input[e.span.clone()], "-x");
}

#[test]
fn parts_keep_the_spelling() {
    for (input, registry, name, tag, digest) in [
        ("app", None, "app", None, None),
        ("golang:1.22", None, "golang", Some("1.22"), None),
        (
            "127.0.0.1:5000/x/y",
            Some("127.0.0.1:5000"),
            "127.0.0.1:5000/x/y",
            None,
            None,
        ),
        (
            "[::1]:5000/x:y",
            Some("[::1]:5000"),
            "[::1]:5000/x",
            Some("y"),
            None,
        ),
        ("a/b:c@sha256:1", None, "a/b", Some("c"), Some("sha256:1")),
        ("App:Latest", None, "App", Some("Latest"), None),
    ] {
        let p = Parts::split(input);
        assert_eq!(
            (p.registry(), p.name(), p.tag(), p.digest()),
            (registry, name, tag, digest),
            "{input}"
        );
    }
}

#[test]
fn components() {
    for (c, ok) in [
        ("a", true),
        ("a.b_c__d---e", true),
        ("a..b", false),
        ("a___b", false),
        ("a_-b", false),
        ("_a", false),
        ("", false),
    ] {
        assert_eq!(valid_component(c), ok, "{c:?}");
    }
}
