//! Docker's path patterns, as `.dockerignore`, `COPY --exclude` and
//! BuildKit's include/exclude read them (moby/patternmatcher and its ignore
//! file reader):
//!
//! - every pattern is cleaned as Go's `filepath.Clean` does (`./a`, `a/`,
//!   `a//b` and `x/../a` are `a`) and a leading `/` is dropped;
//! - `*` is any run of characters but `/`, `?` one character but `/`,
//!   `[...]` a class as in Go's `filepath.Match` (`^` negates, `a-z`
//!   ranges, `\` escapes), `\x` the character `x`; braces are literal;
//! - `**` is any run of directories, none included (`**/x`, `a/**/x`), and
//!   at the end of a pattern anything at all (`a/**` is everything below
//!   `a`); a pattern that starts with `**` and has no other wildcard
//!   matches every path that ends with the rest (`**.log` is `x.log` and
//!   `d/x.log`);
//! - a pattern that matches a directory matches everything below it;
//! - `!` makes an exception, and the last pattern that matches decides.
//!
//! Where moby's translation to Go regexps departs from `filepath.Match` (a
//! `^` outside a class, `\d`, wildcards inside a class) kiln takes
//! `filepath.Match`'s reading.
//!
//! A list compiles into one [`RegexSet`], once; a walk carries each
//! directory's [`Verdict`] down, so every path is matched once, against its
//! own name only.

use std::fmt::Write as _;

use regex::RegexSet;

#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("invalid pattern `{pattern}` in {origin}")]
    Invalid {
        pattern: String,
        origin: String,
        #[source]
        reason: Invalid,
    },
    #[error("cannot compile the patterns of {origin}")]
    Compile {
        origin: String,
        #[source]
        source: regex::Error,
    },
}

/// What is wrong with one pattern (Go's `filepath.ErrBadPattern` cases).
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("`!` needs a pattern after it")]
    EmptyException,
    #[error("`[` without its `]`")]
    UnclosedClass,
    #[error("`{0}` where a character class needs a character (escape it as `\\{0}`)")]
    ClassChar(char),
    #[error("the range `{0}-{1}` is reversed")]
    ReversedRange(char, char),
    #[error("`\\` at the end: it escapes nothing")]
    TrailingEscape,
}

#[derive(Debug, Clone)]
struct Rule {
    exception: bool,
    /// the text before the first wildcard, to tell which directories may
    /// hold a match
    literal: String,
}

/// An ordered pattern list, compiled.
#[derive(Debug, Clone)]
pub struct Patterns {
    set: RegexSet,
    rules: Vec<Rule>,
}

impl Default for Patterns {
    fn default() -> Self {
        Patterns {
            set: RegexSet::empty(),
            rules: Vec::new(),
        }
    }
}

/// Where a path stands against a list: the last pattern that matched it or
/// a directory above it, which decides (later patterns win, and what
/// matches a directory matches what is below it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict(Option<(usize, bool)>);

impl Verdict {
    /// Matched by a pattern that is not an exception.
    pub fn matched(self) -> bool {
        matches!(self.0, Some((_, true)))
    }
}

impl Patterns {
    /// One pattern per item, as a Kilnfile's `include`/`exclude` give them
    /// (no comments).
    pub fn parse<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
        origin: &str,
    ) -> Result<Self, PatternError> {
        let mut regexes = Vec::new();
        let mut rules = Vec::new();
        for line in patterns {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let invalid = |reason| PatternError::Invalid {
                pattern: line.to_string(),
                origin: origin.to_string(),
                reason,
            };
            let (exception, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if body.is_empty() {
                return Err(invalid(Invalid::EmptyException));
            }
            let mut p = clean(body);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
            regexes.push(translate(&p).map_err(invalid)?);
            let literal = p.find(['*', '?', '[', '\\']).map_or(&p[..], |i| &p[..i]);
            rules.push(Rule {
                exception,
                literal: literal.to_string(),
            });
        }
        let set = RegexSet::new(&regexes).map_err(|source| PatternError::Compile {
            origin: origin.to_string(),
            source,
        })?;
        Ok(Patterns { set, rules })
    }

    /// The text of an ignore file: a UTF-8 byte order mark is skipped, and
    /// a line that starts with `#` (in its first column) is a comment.
    pub fn ignore_file(text: &str, origin: &str) -> Result<Self, PatternError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Self::parse(text.lines().filter(|l| !l.starts_with('#')), origin)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The verdict for `rel` (relative, `/`-separated, no trailing `/`)
    /// given its directory's.
    pub fn verdict(&self, rel: &str, dir: Verdict) -> Verdict {
        if self.rules.is_empty() {
            return dir;
        }
        let own = self.set.matches(rel).iter().next_back();
        match (own, dir.0) {
            (Some(i), Some((j, _))) if j > i => dir,
            (Some(i), _) => Verdict(Some((i, !self.rules[i].exception))),
            (None, _) => dir,
        }
    }

    /// Whether `rel` is matched, its directories considered.
    pub fn matches(&self, rel: &str) -> bool {
        let mut v = Verdict::default();
        for (i, _) in rel.match_indices('/') {
            v = self.verdict(&rel[..i], v);
        }
        self.verdict(rel, v).matched()
    }

    /// Whether a pattern that is not an exception may match below
    /// directory `dir` (one that does not match `dir` itself).
    pub fn may_match_below(&self, dir: &str) -> bool {
        self.below(dir, false)
    }

    /// Whether an exception may match below directory `dir`: an excluded
    /// directory is read only then.
    pub fn may_except_below(&self, dir: &str) -> bool {
        self.below(dir, true)
    }

    fn below(&self, dir: &str, exception: bool) -> bool {
        let dir = format!("{dir}/");
        self.rules.iter().any(|r| {
            r.exception == exception && (r.literal.starts_with(&dir) || dir.starts_with(&r.literal))
        })
    }
}

/// Go's `filepath.Clean` (lexical): no empty or `.` components, `..`
/// applied to what precedes it (and dropped at the root), `.` for nothing.
pub fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// The anchored regex of a cleaned pattern.
fn translate(p: &str) -> Result<String, Invalid> {
    // moby tests a pattern that starts with `**` and has no other wildcard
    // as a suffix of the path (`**/x` is `x` or ends with `/x`; `**x` ends
    // with `x`), not as a regex
    if let Some(rest) = p.strip_prefix("**")
        && !rest.contains(['*', '?', '[', ']', '\\'])
    {
        let mut re = format!("^(?s:.*){}$", regex::escape(rest));
        if let Some(name) = rest.strip_prefix('/') {
            let _ = write!(re, "|^{}$", regex::escape(name));
        }
        return Ok(re);
    }
    let chars: Vec<char> = p.chars().collect();
    let mut re = String::from("^");
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                re.push_str(if i == chars.len() {
                    "(?s:.*)"
                } else {
                    "(?s:.*/)?"
                });
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' => {
                i += 1;
                let c = *chars.get(i).ok_or(Invalid::TrailingEscape)?;
                re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
            }
            '[' => {
                i = class(&chars, i + 1, &mut re)?;
                continue;
            }
            c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
        i += 1;
    }
    re.push('$');
    Ok(re)
}

/// A `filepath.Match` class starting after its `[`, appended to `re`;
/// returns the index after its `]`.
fn class(chars: &[char], mut i: usize, re: &mut String) -> Result<usize, Invalid> {
    // every member as `\x{..}`, so nothing in it is regex syntax
    let member = |re: &mut String, c: char| {
        let _ = write!(re, "\\x{{{:x}}}", c as u32);
    };
    re.push('[');
    if chars.get(i) == Some(&'^') {
        re.push('^');
        i += 1;
    }
    let mut empty = true;
    loop {
        if chars.get(i) == Some(&']') && !empty {
            re.push(']');
            return Ok(i + 1);
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        member(re, lo);
        if chars.get(i) == Some(&'-') {
            let (hi, next) = class_char(chars, i + 1)?;
            if hi < lo {
                return Err(Invalid::ReversedRange(lo, hi));
            }
            i = next;
            re.push('-');
            member(re, hi);
        }
        empty = false;
    }
}

/// One character of a class (`\` escapes the next one); `-` and `]` must
/// be escaped there.
fn class_char(chars: &[char], i: usize) -> Result<(char, usize), Invalid> {
    match chars.get(i) {
        None => Err(Invalid::UnclosedClass),
        Some(c @ ('-' | ']')) => Err(Invalid::ClassChar(*c)),
        Some('\\') => chars
            .get(i + 1)
            .map(|c| (*c, i + 2))
            .ok_or(Invalid::UnclosedClass),
        Some(c) => Ok((*c, i + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (patterns, path, matched), the path's directories considered. "old"
    /// marks where the globset matcher before this one answered otherwise.
    #[test]
    fn docker_pattern_rules() {
        #[rustfmt::skip]
        let cases: &[(&[&str], &str, bool)] = &[
            // plain names, `*`, `?`, directories
            (&["*.log"], "a.log", true),
            (&["*.log"], "dir/a.log", false),
            (&["*"], "dir/a.log", true),                  // `dir` matches
            (&["*/*.log"], "dir/a.log", true),
            (&["*/*.log"], "a/b/c.log", false),
            (&["a*b"], "a/b", false),                     // `*` does not cross `/`
            (&["a?b"], "axb", true),
            (&["a?b"], "a/b", false),
            (&["target"], "target/debug/x", true),
            (&["target"], "src/target", false),
            // cleaning: `/`, `./`, trailing `/`, `//`, `..`
            (&["/target/"], "target/x", true),
            (&["./target"], "target", true),
            (&["a//b"], "a/b", true),
            (&["a/../b"], "b", true),                     // old: never matched
            (&["a/./b/.."], "a", true),                   // old: never matched
            (&["../a"], "a", false),
            (&["/../a"], "a", true),                      // old: never matched
            // `**`
            (&["**"], "a/b/c", true),
            (&["**/*.log"], "a.log", true),
            (&["**/*.log"], "dir/sub/a.log", true),
            (&["**/x"], "x", true),
            (&["**/x"], "a/b/x", true),
            (&["**/x"], "a/bx", false),
            (&["x/**"], "x", false),
            (&["x/**"], "x/y/z", true),
            (&["a/**/b"], "a/b", true),
            (&["a/**/b"], "a/x/y/b", true),
            (&["a/**/b"], "a/xb", false),
            (&["**.log"], "d/e/x.log", true),             // old: `**` as `*`
            (&["**x"], "ax", true),                       // moby's suffix rule
            (&["**x"], "d/ax", true),
            (&["a**/*.txt"], "a/d/f.txt", true),          // old: `**` as `*`
            (&["**", "!keep/**"], "keep/x", false),
            // no brace alternation
            (&["{a,b}.txt"], "a.txt", false),             // old: matched
            (&["{a,b}.txt"], "{a,b}.txt", true),          // old: not matched
            (&["*.{log,tmp}"], "x.log", false),           // old: matched
            // classes and escapes (Go's filepath.Match)
            (&["[ab].txt"], "b.txt", true),
            (&["[a-c]x"], "bx", true),
            (&["[^a-c]x"], "dx", true),
            (&["[^a-c]x"], "bx", false),
            (&["[!a]x"], "!x", true),                     // `!` is no negation
            (&["[!a]x"], "bx", false),                    // old: matched (negation)
            (&[r"[\]]x"], "]x", true),                    // old: not matched
            (&[r"\*.txt"], "*.txt", true),
            (&[r"\*.txt"], "a.txt", false),
            (&[r"a\[b\]"], "a[b]", true),
            (&["a^b", "x.c+"], "a^b", true),
            (&["a^b", "x.c+"], "x.c+", true),
            // exceptions: the last match wins, also inside excluded directories
            (&["*.md", "!README.md"], "README.md", false),
            (&["*.md", "!README.md"], "CHANGES.md", true),
            (&["docs", "!docs/keep"], "docs/keep", false),
            (&["docs", "!docs/keep"], "docs/keep/deep/x", false),
            (&["docs", "!docs/keep"], "docs/drop", true),
            (&["!docs/keep", "docs"], "docs/keep", true),
            (&["docs", "!docs/keep", "docs/keep/x"], "docs/keep/x/y", true),
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            // whitespace
            (&["  a.txt  "], "a.txt", true),
            (&["*", "! a.txt"], "a.txt", false),
        ];
        for (pats, path, want) in cases {
            let p = Patterns::parse(pats.iter().copied(), "test").unwrap();
            assert_eq!(p.matches(path), *want, "{pats:?} on {path}");
        }
    }

    #[test]
    fn ignore_file_comments_and_bom() {
        let cases: &[(&str, &str, bool)] = &[
            ("# comment\n", "# comment", false),
            (" # not a comment\n", "# not a comment", true),
            ("\u{feff}a.txt\n", "a.txt", true),
            ("a.txt\r\nb.txt\r\n", "b.txt", true),
            ("\n\n  \n", "x", false),
        ];
        for (text, path, want) in cases {
            let p = Patterns::ignore_file(text, "test").unwrap();
            assert_eq!(p.matches(path), *want, "{text:?} on {path}");
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        let cases: &[(&str, &str)] = &[
            ("!", "`!` needs a pattern"),
            ("[", "without its `]`"),
            ("a[b", "without its `]`"),
            ("[]a]", "`]` where"),
            ("[-a]", "`-` where"),
            ("[a-]", "`]` where"),
            ("[a-b-c]", "`-` where"),
            ("[z-a]", "reversed"),
            ("a\\", "at the end"),
        ];
        for (pat, want) in cases {
            let e = Patterns::parse([*pat], "test").unwrap_err();
            let text = match &e {
                PatternError::Invalid { reason, .. } => reason.to_string(),
                e => panic!("{pat}: {e}"),
            };
            assert!(text.contains(want), "{pat}: {text}");
            assert!(e.to_string().contains(pat), "{e}");
        }
    }

    #[test]
    fn clean_is_go_filepath_clean() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./a/", "a"),
            ("a//b", "a/b"),
            ("a/../b", "b"),
            ("a/..", "."),
            ("../a", "../a"),
            ("../../a/..", "../.."),
            ("/../a", "/a"),
            ("/", "/"),
            ("/a/b/", "/a/b"),
        ];
        for (p, want) in cases {
            assert_eq!(clean(p), want, "{p}");
        }
    }

    #[test]
    fn which_directories_may_hold_a_match() {
        let p = Patterns::parse(["src/sub/*.rs", "!docs/keep", "a*", "**/x"], "test").unwrap();
        let cases = [
            ("src", true, false),
            ("src/sub", true, false),
            ("srcx", true, false), // `**/x`
            ("docs", true, true),
            ("docs/other", true, false),
        ];
        for (dir, below, except) in cases {
            assert_eq!(p.may_match_below(dir), below, "{dir}");
            assert_eq!(p.may_except_below(dir), except, "{dir}");
        }
        let q = Patterns::parse(["src/sub/*.rs", "a*"], "test").unwrap();
        assert!(!q.may_match_below("srcx"));
        assert!(!q.may_match_below("b"));
        assert!(q.may_match_below("ab"));
    }
}
