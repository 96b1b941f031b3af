//! The text of shell-form commands as BuildKit hands it to the shell: line
//! continuations joined, comment lines inside a continued instruction
//! dropped (the parser keeps both in the raw text).

/// Joins `escape` + newline continuations of a shell-form command and drops
/// the comment and empty lines BuildKit drops between them.
pub fn join_continuations(raw: &str, escape: char) -> String {
    let mut out = String::new();
    let mut lines = raw.split('\n').peekable();
    let mut first = true;
    while let Some(line) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !first {
            let t = line.trim_start();
            // Inside a continued instruction a comment or empty line is
            // skipped, and the continuation goes on past it.
            if t.starts_with('#') || t.is_empty() {
                continue;
            }
        }
        first = false;
        let trimmed = line.trim_end_matches([' ', '\t']);
        match trimmed.strip_suffix(escape) {
            Some(body) if lines.peek().is_some() => out.push_str(body),
            _ => {
                out.push_str(line);
                if lines.peek().is_some() {
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// A heredoc marker in a command line: `<<EOF`, `<<-EOF`, `<<"EOF"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub name: String,
    /// `<<-`: leading tabs are removed from the content.
    pub chomp: bool,
}

/// The heredoc markers of `line`, in order.
pub fn heredoc_markers(line: &str) -> Vec<Marker> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'<' && b[i + 1] == b'<' {
            let mut j = i + 2;
            let chomp = b.get(j) == Some(&b'-');
            if chomp {
                j += 1;
            }
            let quote = match b.get(j) {
                Some(&q) if q == b'"' || q == b'\'' => {
                    j += 1;
                    Some(q)
                }
                _ => None,
            };
            let start = j;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'-') {
                j += 1;
            }
            if j > start {
                out.push(Marker {
                    name: line[start..j].to_string(),
                    chomp,
                });
                if quote.is_some() && b.get(j) == quote.as_ref() {
                    j += 1;
                }
            }
            i = j.max(i + 2);
        } else {
            i += 1;
        }
    }
    out
}

/// `<<-` content: leading tabs removed from every line.
pub fn chomp(data: &str) -> String {
    data.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations() {
        let raw = "set -e; \\\n    echo one \\\n  # comment inside\n    && echo two";
        assert_eq!(
            join_continuations(raw, '\\'),
            "set -e;     echo one     && echo two"
        );
        assert_eq!(join_continuations("a `\n b", '`'), "a  b");
        assert_eq!(join_continuations("echo a\\b", '\\'), "echo a\\b");
    }

    #[test]
    fn markers() {
        assert_eq!(
            heredoc_markers("<<-\"EOT\" bash <<B"),
            [
                Marker {
                    name: "EOT".into(),
                    chomp: true
                },
                Marker {
                    name: "B".into(),
                    chomp: false
                }
            ]
        );
        assert!(heredoc_markers("echo a << b").is_empty());
        assert_eq!(chomp("\t\ta\n\tb\n"), "a\nb\n");
    }
}
