//! Errors kept as text.

/// Joins an error and its sources into one line (a source already in its
/// parent's text is not repeated): for errors kept as text, so that a full
/// disk still reads "...: No space left on device".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot write `{path}`")]
        Write {
            path: String,
            #[source]
            source: std::io::Error,
        },
        #[error("cannot read: {source}")]
        Read {
            #[source]
            source: std::io::Error,
        },
    }

    #[test]
    fn sources_are_joined_once() {
        let io = || std::io::Error::other("No space left on device");
        for (e, want) in [
            (
                Outer::Write {
                    path: "/x".into(),
                    source: io(),
                },
                "cannot write `/x`: No space left on device",
            ),
            (
                Outer::Read { source: io() },
                "cannot read: No space left on device",
            ),
        ] {
            assert_eq!(error_chain(&e), want);
        }
    }
}
