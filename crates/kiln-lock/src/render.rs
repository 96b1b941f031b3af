//! Writing a lock file: sorted entries, one `.deb` or platform a line, so a
//! change reads as a small diff in review.

use std::fmt::Write as _;

use crate::model::{LockedPackages, Lockfile};

const HEADER: &str = "\
# Kilnfile.lock: what the build's sources resolved to, written by `kiln lock`.
# `kiln build` follows it; `kiln build --locked` fails when it is out of date;
# `kiln lock --update [NAME]` refreshes it. Review changes like code.
";

/// A TOML basic string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", parts.join(", "))
}

impl Lockfile {
    /// The file's text: the same lock always gives the same bytes.
    pub fn render(&self) -> String {
        let mut out = String::from(HEADER);
        let _ = writeln!(out, "version = {}", crate::VERSION);
        let mut images: Vec<_> = self.images.iter().collect();
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        for i in images {
            let _ = writeln!(out, "\n[[image]]");
            let _ = writeln!(out, "reference = {}", q(&i.reference));
            let _ = writeln!(out, "digest = {}", q(&i.digest.to_string()));
            let mut platforms: Vec<_> = i.platforms.iter().collect();
            platforms.sort_by_key(|p| p.platform.to_string());
            if platforms.is_empty() {
                let _ = writeln!(out, "platforms = []");
                continue;
            }
            let _ = writeln!(out, "platforms = [");
            for p in platforms {
                let _ = writeln!(
                    out,
                    "  {{ platform = {}, manifest = {} }},",
                    q(&p.platform.to_string()),
                    q(&p.manifest.to_string())
                );
            }
            let _ = writeln!(out, "]");
        }
        let mut sets: Vec<&LockedPackages> = self.packages.iter().collect();
        sets.sort_by(|a, b| {
            let k = |p: &LockedPackages| {
                (
                    p.set.suite.clone(),
                    p.set.architecture.clone(),
                    p.set.request.clone(),
                    p.set.mirror.clone(),
                )
            };
            k(a).cmp(&k(b))
        });
        for p in sets {
            let s = &p.set;
            let _ = writeln!(out, "\n[[packages]]");
            let _ = writeln!(out, "mirror = {}", q(&s.mirror));
            let _ = writeln!(out, "suite = {}", q(&s.suite));
            let _ = writeln!(out, "components = {}", list(&s.components));
            let _ = writeln!(out, "architecture = {}", q(&s.architecture));
            if let Some(t) = &s.snapshot {
                let _ = writeln!(out, "snapshot = {}", q(t));
            }
            if !s.keyrings.is_empty() {
                let _ = writeln!(out, "keyrings = {}", list(&s.keyrings));
            }
            let _ = writeln!(out, "request = {}", list(&s.request));
            if !s.exclude.is_empty() {
                let _ = writeln!(out, "exclude = {}", list(&s.exclude));
            }
            let _ = writeln!(out, "release = {}", q(&p.release.to_string()));
            let mut debs: Vec<_> = p.debs.iter().collect();
            debs.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
            let _ = writeln!(out, "debs = [");
            for d in debs {
                let _ = writeln!(
                    out,
                    "  {{ name = {}, version = {}, architecture = {}, filename = {}, size = {}, sha256 = {} }},",
                    q(&d.name),
                    q(&d.version),
                    q(&d.architecture),
                    q(&d.filename),
                    d.size,
                    q(&d.sha256.to_string())
                );
            }
            let _ = writeln!(out, "]");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use kiln_types::Digest;

    use crate::model::*;

    fn sample() -> Lockfile {
        let d = |n: u8| Digest::of(&[n]);
        Lockfile {
            images: vec![
                LockedImage {
                    reference: "docker.io/library/golang:1.22".into(),
                    digest: d(1),
                    platforms: vec![
                        LockedPlatform {
                            platform: "linux/arm64".parse().unwrap(),
                            manifest: d(3),
                        },
                        LockedPlatform {
                            platform: "linux/amd64".parse().unwrap(),
                            manifest: d(2),
                        },
                    ],
                },
                LockedImage {
                    reference: "127.0.0.1:5000/base:\"odd\"".into(),
                    digest: d(4),
                    platforms: vec![],
                },
            ],
            packages: vec![LockedPackages {
                set: PackageSet {
                    mirror: "http://deb.debian.org/debian".into(),
                    suite: "bookworm".into(),
                    components: vec!["main".into()],
                    architecture: "amd64".into(),
                    snapshot: None,
                    keyrings: vec![],
                    request: vec!["python3".into()],
                    exclude: vec!["tzdata".into()],
                },
                release: d(5),
                debs: vec![
                    LockedDeb {
                        name: "python3".into(),
                        version: "3.11.2-1+b1".into(),
                        architecture: "amd64".into(),
                        filename: "pool/main/p/python3-defaults/python3_3.11.2-1+b1_amd64.deb"
                            .into(),
                        size: 26_236,
                        sha256: d(6),
                    },
                    LockedDeb {
                        name: "libc6".into(),
                        version: "2.36-9+deb12u10".into(),
                        architecture: "amd64".into(),
                        filename: "pool/main/g/glibc/libc6_2.36-9+deb12u10_amd64.deb".into(),
                        size: 2_757_936,
                        sha256: d(7),
                    },
                ],
            }],
        }
    }

    #[test]
    fn renders_sorted_and_reads_back() {
        let lock = sample();
        let text = lock.render();
        insta::assert_snapshot!(text);
        let back = Lockfile::parse(&text).unwrap();
        // the same entries, in the file's (sorted) order
        assert_eq!(back.render(), text);
        assert_eq!(back.images.len(), 2);
        assert_eq!(back.packages[0].debs.len(), 2);
        assert_eq!(
            back.image("docker.io/library/golang:1.22")
                .unwrap()
                .manifest(&"linux/arm64".parse().unwrap()),
            Some(&Digest::of(&[3]))
        );
        assert_eq!(
            back.packages(&lock.packages[0].set),
            Some(&back.packages[0])
        );
    }
}
