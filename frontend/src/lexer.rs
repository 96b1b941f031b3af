//! The lexer: Kilnfile text to tokens. It never fails: bad input becomes a
//! diagnostic plus a best-effort token so the parser can go on.

use crate::diag::Diagnostic;
use crate::span::Span;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    Ident(String),
    /// A string literal, escapes already processed.
    Str(String),
    /// An integer literal; `value` is `None` when it does not fit in a u64
    /// (already reported).
    Int {
        value: Option<u64>,
        radix: u32,
    },
    Let,
    True,
    False,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Semi,
    Dot,
    Eq,
    Bang,
    /// A character the language does not use (already reported).
    Unknown(char),
    Eof,
}

impl TokenKind {
    /// How the token is named in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            TokenKind::Ident(name) => format!("`{name}`"),
            TokenKind::Str(_) => "a string".into(),
            TokenKind::Int { .. } => "an integer".into(),
            TokenKind::Let => "`let`".into(),
            TokenKind::True => "`true`".into(),
            TokenKind::False => "`false`".into(),
            TokenKind::LParen => "`(`".into(),
            TokenKind::RParen => "`)`".into(),
            TokenKind::LBracket => "`[`".into(),
            TokenKind::RBracket => "`]`".into(),
            TokenKind::Comma => "`,`".into(),
            TokenKind::Semi => "`;`".into(),
            TokenKind::Dot => "`.`".into(),
            TokenKind::Eq => "`=`".into(),
            TokenKind::Bang => "`!`".into(),
            TokenKind::Unknown(c) => format!("`{}`", c.escape_debug()),
            TokenKind::Eof => "the end of the file".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

/// Split `src` into tokens (always ending with `Eof`) and lexical diagnostics.
pub fn lex(src: &str) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut lx = Lexer {
        src,
        pos: 0,
        // About one token per 3 to 4 bytes in real Kilnfiles; avoids
        // regrowing (and copying) a large token list.
        tokens: Vec::with_capacity(src.len() / 3 + 1),
        diags: Vec::new(),
    };
    lx.run();
    (lx.tokens, lx.diags)
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    tokens: Vec<Token>,
    diags: Vec<Diagnostic>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn push(&mut self, kind: TokenKind, start: usize) {
        self.tokens.push(Token {
            kind,
            span: Span::new(start, self.pos),
        });
    }

    fn run(&mut self) {
        while let Some(c) = self.peek() {
            let start = self.pos;
            match c {
                c if c.is_whitespace() => {
                    self.bump();
                }
                '/' if self.peek_at(1) == Some('/') => {
                    let end = self.src[start..]
                        .find('\n')
                        .map_or(self.src.len(), |i| start + i);
                    self.pos = end;
                }
                '/' if self.peek_at(1) == Some('*') => self.block_comment(),
                '"' => {
                    self.bump();
                    let s = self.string(start);
                    self.push(TokenKind::Str(s), start);
                }
                'r' if matches!(self.peek_at(1), Some('"' | '#')) => self.raw_string(),
                c if c.is_ascii_alphabetic() || c == '_' => {
                    while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
                        self.bump();
                    }
                    let word = &self.src[start..self.pos];
                    let kind = match word {
                        "let" => TokenKind::Let,
                        "true" => TokenKind::True,
                        "false" => TokenKind::False,
                        _ => TokenKind::Ident(word.to_string()),
                    };
                    self.push(kind, start);
                }
                '0'..='9' => self.number(),
                _ => {
                    self.bump();
                    let kind = match c {
                        '(' => TokenKind::LParen,
                        ')' => TokenKind::RParen,
                        '[' => TokenKind::LBracket,
                        ']' => TokenKind::RBracket,
                        ',' => TokenKind::Comma,
                        ';' => TokenKind::Semi,
                        '.' => TokenKind::Dot,
                        '=' => TokenKind::Eq,
                        '!' => TokenKind::Bang,
                        other => {
                            let span = Span::new(start, self.pos);
                            let help = match other {
                                '\'' => "strings use double quotes: \"text\"".to_string(),
                                '{' | '}' => "blocks are not part of the Kilnfile language; write `let NAME = EXPR;` items".to_string(),
                                '#' => "only `//` and `/* */` comments are allowed".to_string(),
                                _ => "remove it; the Kilnfile language is a small subset of Rust expressions".to_string(),
                            };
                            self.diags.push(
                                Diagnostic::error(
                                    "kiln::syntax",
                                    span,
                                    format!("unexpected character `{}`", other.escape_debug()),
                                )
                                .label("not valid here")
                                .help(help),
                            );
                            TokenKind::Unknown(other)
                        }
                    };
                    self.push(kind, start);
                }
            }
        }
        let end = self.src.len();
        self.tokens.push(Token {
            kind: TokenKind::Eof,
            span: Span::new(end, end),
        });
    }

    fn block_comment(&mut self) {
        let start = self.pos;
        self.pos += 2;
        let mut depth = 1usize;
        while depth > 0 {
            let rest = &self.src[self.pos..];
            if rest.starts_with("/*") {
                depth += 1;
                self.pos += 2;
            } else if rest.starts_with("*/") {
                depth -= 1;
                self.pos += 2;
            } else if self.bump().is_none() {
                self.diags.push(
                    Diagnostic::error(
                        "kiln::syntax",
                        Span::new(start, start + 2),
                        "unterminated block comment",
                    )
                    .label("this comment is never closed")
                    .help("close it with `*/` (block comments nest, so every `/*` needs its own `*/`)"),
                );
                return;
            }
        }
    }

    /// The body of a `"..."` string; the opening quote is consumed.
    fn string(&mut self, start: usize) -> String {
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                self.diags.push(
                    Diagnostic::error(
                        "kiln::syntax",
                        Span::new(start, start + 1),
                        "unterminated string",
                    )
                    .label("this string is never closed")
                    .help("add the closing `\"`"),
                );
                return out;
            };
            match c {
                '"' => return out,
                '\\' => self.escape(&mut out),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, out: &mut String) {
        let esc_start = self.pos - 1;
        let Some(c) = self.bump() else { return };
        let bad = |lx: &mut Self, msg: String, help: &str| {
            lx.diags.push(
                Diagnostic::error("kiln::syntax", Span::new(esc_start, lx.pos), msg)
                    .label("invalid escape")
                    .help(help.to_string()),
            );
        };
        match c {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '\\' => out.push('\\'),
            '0' => out.push('\0'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            '\n' => {
                // Line continuation: skip the newline and leading whitespace.
                while matches!(self.peek(), Some(c) if c.is_whitespace()) {
                    self.bump();
                }
            }
            'x' => {
                let digits: String = (0..2).filter_map(|_| self.hex_digit()).collect();
                match u8::from_str_radix(&digits, 16) {
                    Ok(v) if digits.len() == 2 && v <= 0x7f => out.push(v as char),
                    _ => bad(
                        self,
                        "invalid `\\x` escape".into(),
                        "write `\\x` and two hex digits up to 7f, or `\\u{...}` for other characters",
                    ),
                }
            }
            'u' => {
                let mut ok = false;
                if self.peek() == Some('{') {
                    self.bump();
                    let mut digits = String::new();
                    while let Some(c) = self.peek() {
                        if c == '}' || digits.len() > 8 || !(c.is_ascii_hexdigit() || c == '_') {
                            break;
                        }
                        self.bump();
                        if c != '_' {
                            digits.push(c);
                        }
                    }
                    if self.peek() == Some('}') {
                        self.bump();
                        if let Some(ch) = u32::from_str_radix(&digits, 16)
                            .ok()
                            .and_then(char::from_u32)
                        {
                            out.push(ch);
                            ok = true;
                        }
                    }
                }
                if !ok {
                    bad(
                        self,
                        "invalid unicode escape".into(),
                        "write `\\u{...}` with 1 to 6 hex digits of a valid code point",
                    );
                }
            }
            other => bad(
                self,
                format!("unknown escape `\\{}`", other.escape_debug()),
                "valid escapes are \\n \\r \\t \\\\ \\0 \\' \\\" \\x7F \\u{...}; use a raw string r\"...\" for backslashes",
            ),
        }
    }

    fn hex_digit(&mut self) -> Option<char> {
        let c = self.peek().filter(char::is_ascii_hexdigit)?;
        self.bump();
        Some(c)
    }

    fn raw_string(&mut self) {
        let start = self.pos;
        self.bump(); // r
        let mut hashes = 0usize;
        while self.peek() == Some('#') {
            self.bump();
            hashes += 1;
        }
        if self.peek() != Some('"') {
            self.diags.push(
                Diagnostic::error(
                    "kiln::syntax",
                    Span::new(start, self.pos),
                    "malformed raw string",
                )
                .label("expected `\"` after the `#`s")
                .help("raw strings look like r\"...\" or r#\"...\"#"),
            );
            self.push(TokenKind::Str(String::new()), start);
            return;
        }
        self.bump();
        let body_start = self.pos;
        let closing: String = std::iter::once('"')
            .chain(std::iter::repeat_n('#', hashes))
            .collect();
        match self.src[body_start..].find(&closing) {
            Some(i) => {
                let body = self.src[body_start..body_start + i].to_string();
                self.pos = body_start + i + closing.len();
                self.push(TokenKind::Str(body), start);
            }
            None => {
                self.pos = self.src.len();
                self.diags.push(
                    Diagnostic::error(
                        "kiln::syntax",
                        Span::new(start, body_start),
                        "unterminated raw string",
                    )
                    .label("this string is never closed")
                    .help(format!("close it with `{closing}`")),
                );
                let body = self.src[body_start..].to_string();
                self.push(TokenKind::Str(body), start);
            }
        }
    }

    fn number(&mut self) {
        let start = self.pos;
        let (radix, prefix) = match (self.peek(), self.peek_at(1)) {
            (Some('0'), Some('x')) => (16, 2),
            (Some('0'), Some('o')) => (8, 2),
            (Some('0'), Some('b')) => (2, 2),
            _ => (10, 0),
        };
        self.pos += prefix;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
            self.bump();
        }
        let body: String = self.src[start + prefix..self.pos]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        let span = Span::new(start, self.pos);
        let value = if body.is_empty() {
            self.diags.push(
                Diagnostic::error("kiln::syntax", span, "integer literal has no digits")
                    .label("digits missing")
                    .help("write digits after the prefix, e.g. 0o755 or 0xff"),
            );
            None
        } else if let Some(bad) = body.chars().find(|c| !c.is_digit(radix)) {
            let what = match radix {
                16 => "a hexadecimal",
                8 => "an octal",
                2 => "a binary",
                _ => "a decimal",
            };
            let help = if radix == 10 && bad.is_ascii_alphabetic() {
                "integers have no suffixes; write plain digits".to_string()
            } else {
                format!(
                    "a {what} literal may only use the digits 0 to {}",
                    digit_max(radix)
                )
            };
            self.diags.push(
                Diagnostic::error(
                    "kiln::syntax",
                    span,
                    format!("invalid digit `{bad}` in {what} literal"),
                )
                .label("invalid digit")
                .help(help),
            );
            None
        } else {
            match u64::from_str_radix(&body, radix) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.diags.push(
                        Diagnostic::error("kiln::syntax", span, "integer literal is too large")
                            .label("does not fit in 64 bits")
                            .help("use a value below 2^64"),
                    );
                    None
                }
            }
        };
        self.push(TokenKind::Int { value, radix }, start);
    }
}

fn digit_max(radix: u32) -> char {
    match radix {
        16 => 'f',
        8 => '7',
        2 => '1',
        _ => '9',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        let (toks, diags) = lex(src);
        assert!(diags.is_empty(), "{diags:?}");
        toks.into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn strings_and_numbers() {
        assert_eq!(
            kinds(r##""a\n\u{e9}\x41" r#"x"y"# 0o755 0x_ff 1_000"##),
            vec![
                TokenKind::Str("a\né\x41".into()),
                TokenKind::Str("x\"y".into()),
                TokenKind::Int {
                    value: Some(0o755),
                    radix: 8
                },
                TokenKind::Int {
                    value: Some(255),
                    radix: 16
                },
                TokenKind::Int {
                    value: Some(1000),
                    radix: 10
                },
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn nested_comments() {
        assert_eq!(
            kinds("/* a /* b */ c */ let // x\n x"),
            vec![TokenKind::Let, TokenKind::Ident("x".into()), TokenKind::Eof]
        );
    }

    #[test]
    fn errors_do_not_stop() {
        let (toks, diags) = lex("\"a\\q\" 0o9 @ /* x");
        assert_eq!(diags.len(), 4);
        assert_eq!(toks.last().map(|t| &t.kind), Some(&TokenKind::Eof));
    }
}
