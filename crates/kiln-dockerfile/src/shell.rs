//! Word processing as BuildKit's Dockerfile frontend does it for the
//! instructions that expand variables (`FROM`, `COPY`, `ADD`, `ENV`, `ARG`,
//! `LABEL`, `EXPOSE`, `USER`, `VOLUME`, `WORKDIR`, `STOPSIGNAL` and the flags
//! of `COPY`/`ADD`/`RUN`): quotes removed, the escape character honoured,
//! `$NAME`, `${NAME}` and the `${NAME:-word}` family expanded. `RUN`, `CMD`
//! and `ENTRYPOINT` are not processed here; their shell does it.

use std::collections::HashMap;

/// What a word refers to: variables in scope at the instruction.
pub type Vars = HashMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("unterminated quote {0:?}")]
    Quote(char),
    #[error("unterminated `${{`")]
    Brace,
    #[error("bad substitution `{0}`")]
    Substitution(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
}

/// Expands one word: quotes removed, variables substituted.
pub fn expand(word: &str, vars: &Vars, escape: char) -> Result<String, ExpandError> {
    let mut lx = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        vars,
        escape,
    };
    lx.word(None)
}

/// Expands variables in a heredoc body: quotes stay as they are, an
/// escaped `$` is a literal `$`, other escapes stay (the shell or program
/// reading the file sees them).
pub fn expand_raw(text: &str, vars: &Vars, escape: char) -> String {
    let mut lx = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        vars,
        escape,
    };
    let mut out = String::new();
    while let Some(c) = lx.next() {
        match c {
            '$' => match lx.dollar() {
                Ok(s) => out.push_str(&s),
                // a malformed `${` stays as written
                Err(_) => out.push('$'),
            },
            c if c == escape && lx.peek() == Some('$') => {
                lx.pos += 1;
                out.push('$');
            }
            c => out.push(c),
        }
    }
    out
}

/// Splits on unquoted, unescaped whitespace, keeping quotes and escapes in
/// each word for [`expand`] (BuildKit's `KEY=VALUE` list parsing).
pub fn split_words(s: &str, escape: char) -> Result<Vec<String>, ExpandError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == escape && q == '"' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                in_word = true;
                cur.push(c);
                if c == escape {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == '"' || c == '\'' {
                    quote = Some(c);
                }
            }
        }
    }
    if let Some(q) = quote {
        return Err(ExpandError::Quote(q));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    vars: &'a Vars,
    escape: char,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Up to the end, or to `stop` (outside quotes) for a `${..}` word.
    fn word(&mut self, stop: Option<char>) -> Result<String, ExpandError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                break;
            }
            self.pos += 1;
            match c {
                '\'' => out.push_str(&self.single_quoted()?),
                '"' => out.push_str(&self.double_quoted()?),
                '$' => out.push_str(&self.dollar()?),
                c if c == self.escape => match self.next() {
                    Some(n) => out.push(n),
                    // a trailing escape stays, as BuildKit keeps it
                    None => out.push(c),
                },
                c => out.push(c),
            }
        }
        Ok(out)
    }

    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(ExpandError::Quote('\'')),
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(ExpandError::Quote('"')),
                Some('"') => return Ok(out),
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) if c == self.escape => match self.next() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => out.push(n),
                    Some(n) => {
                        out.push(c);
                        out.push(n);
                    }
                    None => return Err(ExpandError::Quote('"')),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }

    fn lookup(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// After a `$`.
    fn dollar(&mut self) -> Result<String, ExpandError> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced()
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let name = self.name();
                Ok(self.lookup(&name).unwrap_or_default().to_string())
            }
            // a lone `$` is literal
            _ => Ok("$".to_string()),
        }
    }

    /// After `${`.
    fn braced(&mut self) -> Result<String, ExpandError> {
        let name = self.name();
        if name.is_empty() {
            return Err(ExpandError::Substitution(self.rest_of_brace()));
        }
        let value = self.lookup(&name).map(str::to_string);
        let Some(c) = self.next() else {
            return Err(ExpandError::Brace);
        };
        if c == '}' {
            return Ok(value.unwrap_or_default());
        }
        let colon = c == ':';
        let op = if colon { self.next() } else { Some(c) };
        let Some(op) = op else {
            return Err(ExpandError::Brace);
        };
        // `:` tests for empty as well as unset
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        match op {
            '-' | '+' | '?' => {
                let word = self.word(Some('}'))?;
                if self.next() != Some('}') {
                    return Err(ExpandError::Brace);
                }
                Ok(match op {
                    '-' if set => value.unwrap_or_default(),
                    '-' => word,
                    '+' if set => word,
                    '+' => String::new(),
                    _ if set => value.unwrap_or_default(),
                    _ => {
                        return Err(ExpandError::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            },
                        });
                    }
                })
            }
            '#' | '%' if !colon => {
                let longest = self.peek() == Some(op);
                if longest {
                    self.pos += 1;
                }
                let pattern = self.word(Some('}'))?;
                if self.next() != Some('}') {
                    return Err(ExpandError::Brace);
                }
                let v = value.unwrap_or_default();
                Ok(trim_pattern(&v, &pattern, op == '#', longest))
            }
            '/' if !colon => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern = self.word(Some('/'))?;
                let replacement = if self.peek() == Some('/') {
                    self.pos += 1;
                    self.word(Some('}'))?
                } else {
                    String::new()
                };
                if self.next() != Some('}') {
                    return Err(ExpandError::Brace);
                }
                let v = value.unwrap_or_default();
                Ok(if pattern.is_empty() {
                    v
                } else if all {
                    v.replace(&pattern, &replacement)
                } else {
                    v.replacen(&pattern, &replacement, 1)
                })
            }
            _ => Err(ExpandError::Substitution(format!(
                "${{{name}{}{op}{}",
                if colon { ":" } else { "" },
                self.rest_of_brace()
            ))),
        }
    }

    fn rest_of_brace(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.next() {
            if c == '}' {
                s.push(c);
                break;
            }
            s.push(c);
        }
        s
    }
}

/// `${v#p}`/`${v##p}`/`${v%p}`/`${v%%p}` with `*` and `?` wildcards.
fn trim_pattern(v: &str, pattern: &str, prefix: bool, longest: bool) -> String {
    let cuts: Vec<usize> = v.char_indices().map(|(i, _)| i).chain([v.len()]).collect();
    let matches = |s: &str| glob_match(pattern, s);
    if prefix {
        let mut order: Vec<usize> = cuts.clone();
        if longest {
            order.reverse();
        }
        for i in order {
            if matches(&v[..i]) {
                return v[i..].to_string();
            }
        }
    } else {
        let mut order: Vec<usize> = cuts;
        if !longest {
            order.reverse();
        }
        for i in order {
            if matches(&v[i..]) {
                return v[..i].to_string();
            }
        }
    }
    v.to_string()
}

fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    // dp over (pattern index, text index)
    let mut dp = vec![vec![false; t.len() + 1]; p.len() + 1];
    dp[0][0] = true;
    for i in 1..=p.len() {
        if p[i - 1] == '*' {
            dp[i][0] = dp[i - 1][0];
        }
        for j in 1..=t.len() {
            dp[i][j] = match p[i - 1] {
                '*' => dp[i - 1][j] || dp[i][j - 1],
                '?' => dp[i - 1][j - 1],
                c => c == t[j - 1] && dp[i - 1][j - 1],
            };
        }
    }
    dp[p.len()][t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("A", "a"), ("E", ""), ("P", "/usr/local/bin")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn x(w: &str) -> String {
        expand(w, &vars(), '\\').unwrap()
    }

    #[test]
    fn expands_like_buildkit() {
        let cases = [
            ("$A", "a"),
            ("${A}b", "ab"),
            ("$Ab", ""),
            ("'$A'", "$A"),
            ("\"$A $A\"", "a a"),
            ("\\$A", "$A"),
            ("\"\\$A\"", "$A"),
            ("\"a\\b\"", "a\\b"),
            ("${U:-x}", "x"),
            ("${E:-x}", "x"),
            ("${E-x}", ""),
            ("${A:+y}", "y"),
            ("${U:+y}", ""),
            ("${E+y}", "y"),
            ("${U:-\"q q\"}", "q q"),
            ("${P#*/}", "usr/local/bin"),
            ("${P##*/}", "bin"),
            ("${P%/*}", "/usr/local"),
            ("${P%%/l*}", "/usr"),
            ("${P/local/opt}", "/usr/opt/bin"),
            ("a$", "a$"),
            ("$ x", "$ x"),
        ];
        for (w, want) in cases {
            assert_eq!(x(w), want, "{w}");
        }
    }

    #[test]
    fn errors() {
        let v = vars();
        assert_eq!(expand("'a", &v, '\\'), Err(ExpandError::Quote('\'')));
        assert_eq!(expand("${A", &v, '\\'), Err(ExpandError::Brace));
        assert!(matches!(
            expand("${U:?must be set}", &v, '\\'),
            Err(ExpandError::Required { .. })
        ));
        assert!(matches!(
            expand("${}", &v, '\\'),
            Err(ExpandError::Substitution(_))
        ));
    }

    #[test]
    fn backtick_escape() {
        assert_eq!(expand("`$A", &vars(), '`').unwrap(), "$A");
        assert_eq!(expand("C:\\x", &vars(), '`').unwrap(), "C:\\x");
    }

    #[test]
    fn splits_keeping_quotes() {
        assert_eq!(
            split_words("A=\"x y\" B=c\\ d  C='e f'", '\\').unwrap(),
            ["A=\"x y\"", "B=c\\ d", "C='e f'"]
        );
        assert!(split_words("A=\"x", '\\').is_err());
    }
}
