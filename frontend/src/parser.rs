//! Recursive-descent parser. It never panics and never stops at the first
//! error: a broken item is reported, the parser skips to the next `;` or
//! `let` and goes on, so one pass reports several syntax errors.

use crate::ast::{Expr, ExprKind, File, Ident, Item, MethodCall, Syntax};
use crate::diag::Diagnostic;
use crate::lexer::{Token, TokenKind, lex};
use crate::span::Span;

/// Arrays and call arguments may nest this deep; deeper input is rejected
/// instead of risking the stack.
const MAX_DEPTH: usize = 64;

const CODE: &str = "kiln::syntax";

/// Parse a Kilnfile into a tree and the syntax diagnostics found on the way.
pub fn parse(src: &str) -> (File, Vec<Diagnostic>) {
    let (tokens, mut diags) = lex(src);
    // An unterminated string or comment swallows the rest of the file; the
    // parser's "found the end of the file" would only repeat that.
    let quiet_eof = diags.iter().any(|d| d.message.starts_with("unterminated"));
    let mut p = Parser {
        tokens,
        pos: 0,
        diags: Vec::new(),
        depth: 0,
        quiet_eof,
    };
    let items = p.file();
    diags.append(&mut p.diags);
    let file = File {
        syntax: syntax_line(src),
        items,
    };
    (file, diags)
}

/// `// syntax=REF` on the first line (BuildKit's directive form).
fn syntax_line(src: &str) -> Option<Syntax> {
    let first = src.lines().next()?;
    let rest = first.strip_prefix("//")?;
    let trimmed = rest.trim_start();
    let value = trimmed
        .strip_prefix("syntax")?
        .trim_start()
        .strip_prefix('=')?;
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let start = first.len() - first[first.find(value).unwrap_or(0)..].len();
    Some(Syntax {
        value: value.to_string(),
        span: Span::new(start, start + value.len()),
    })
}

/// An error was reported; unwind to the item level and resynchronise.
struct Abort;

type PResult<T> = Result<T, Abort>;

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    diags: Vec<Diagnostic>,
    depth: usize,
    quiet_eof: bool,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `pos` never passes it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek_kind(&self) -> &TokenKind {
        &self.peek().kind
    }

    fn nth_kind(&self, n: usize) -> &TokenKind {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)].kind
    }

    /// Consume the current token and return its span (never past Eof).
    fn bump(&mut self) -> Span {
        let span = self.peek().span;
        if self.peek().kind != TokenKind::Eof {
            self.pos += 1;
        }
        span
    }

    /// Consume an identifier, moving its text out of the token list (the
    /// parser never looks back at consumed tokens).
    fn take_ident(&mut self) -> Option<Ident> {
        let i = self.pos.min(self.tokens.len() - 1);
        let tok = &mut self.tokens[i];
        let TokenKind::Ident(name) = &mut tok.kind else {
            return None;
        };
        let ident = Ident {
            name: std::mem::take(name),
            span: tok.span,
        };
        self.pos += 1;
        Some(ident)
    }

    fn prev_span(&self) -> Span {
        if self.pos == 0 {
            return Span::default();
        }
        self.tokens[self.pos - 1].span
    }

    fn at(&self, kind: &TokenKind) -> bool {
        self.peek_kind() == kind
    }

    fn eat(&mut self, kind: &TokenKind) -> bool {
        if self.at(kind) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn error(&mut self, span: Span, message: String, label: &str, help: &str) -> Abort {
        if self.quiet_eof && self.at(&TokenKind::Eof) {
            return Abort;
        }
        self.diags.push(
            Diagnostic::error(CODE, span, message)
                .label(label.to_string())
                .help(help.to_string()),
        );
        Abort
    }

    /// "expected X, found Y" at the current token. Lexer-reported tokens
    /// (unknown characters) are not reported twice.
    fn expected(&mut self, what: &str, help: &str) -> Abort {
        let tok = self.peek().clone();
        if matches!(tok.kind, TokenKind::Unknown(_)) {
            return Abort;
        }
        self.error(
            tok.span,
            format!("expected {what}, found {}", tok.kind.describe()),
            &format!("expected {what}"),
            help,
        )
    }

    fn expect(&mut self, kind: TokenKind, help: &str) -> PResult<Span> {
        if self.at(&kind) {
            Ok(self.bump())
        } else {
            Err(self.expected(&kind.describe(), help))
        }
    }

    fn file(&mut self) -> Vec<Item> {
        let mut items = Vec::new();
        while !self.at(&TokenKind::Eof) {
            let before = self.pos;
            match self.item() {
                Ok(item) => items.push(item),
                Err(Abort) => self.synchronize(before),
            }
        }
        items
    }

    /// Skip to just after the next `;` or to the next `let`, always making
    /// progress so the loop terminates.
    fn synchronize(&mut self, item_start: usize) {
        if self.pos == item_start {
            self.bump();
        }
        loop {
            match self.peek_kind() {
                TokenKind::Eof | TokenKind::Let => return,
                TokenKind::Semi => {
                    self.bump();
                    return;
                }
                _ => {
                    self.bump();
                }
            }
        }
    }

    fn item(&mut self) -> PResult<Item> {
        let start = self.peek().span;
        if !self.at(&TokenKind::Let) {
            let help = match self.peek_kind() {
                TokenKind::Ident(w) if w == "fn" || w == "use" || w == "const" || w == "static" => {
                    "a Kilnfile only has `let NAME = EXPR;` items"
                }
                TokenKind::Ident(_) => {
                    "a Kilnfile is a list of `let NAME = EXPR;` bindings; bind this expression with `let`"
                }
                _ => "a Kilnfile is a list of `let NAME = EXPR;` bindings",
            };
            return Err(self.expected("`let`", help));
        }
        self.bump();
        if let TokenKind::Ident(w) = self.peek_kind()
            && w == "mut"
            && matches!(self.nth_kind(1), TokenKind::Ident(_))
        {
            let span = self.peek().span;
            return Err(self.error(
                span,
                "`let mut` is not supported".into(),
                "remove `mut`",
                "bindings are immutable: each step returns a new image, so write `let NAME = ...;`",
            ));
        }
        let name = match self.take_ident() {
            Some(ident) => ident,
            None => {
                return Err(self.expected(
                    "a binding name",
                    "write `let NAME = EXPR;` where NAME is letters, digits and `_`",
                ));
            }
        };
        self.expect(TokenKind::Eq, "write `let NAME = EXPR;`")?;
        let value = self.expr()?;
        if !self.eat(&TokenKind::Semi) {
            // Report the missing `;` after the expression, then carry on if
            // the next item obviously starts (no tokens need skipping).
            let after = self.prev_span();
            let found = self.peek().clone();
            let at_boundary = matches!(found.kind, TokenKind::Let | TokenKind::Eof);
            let already_reported = matches!(found.kind, TokenKind::Unknown(_))
                || (self.quiet_eof && found.kind == TokenKind::Eof);
            if !already_reported {
                let help = match found.kind {
                    TokenKind::Str(_) | TokenKind::Int { .. } | TokenKind::Ident(_) => {
                        "end the binding with `;`, or if this continues the expression, separate arguments with `,` and methods with `.`"
                    }
                    _ => "end every binding with `;`",
                };
                self.diags.push(
                    Diagnostic::error(
                        CODE,
                        Span::new(after.end as usize, after.end as usize),
                        format!("expected `;`, found {}", found.kind.describe()),
                    )
                    .label("`;` missing here")
                    .help(help),
                );
            }
            if !at_boundary {
                return Err(Abort);
            }
        }
        Ok(Item {
            span: start.to(self.prev_span()),
            name,
            value,
        })
    }

    fn expr(&mut self) -> PResult<Expr> {
        self.depth += 1;
        let result = self.expr_inner();
        self.depth -= 1;
        result
    }

    fn expr_inner(&mut self) -> PResult<Expr> {
        if self.depth > MAX_DEPTH {
            let span = self.peek().span;
            return Err(self.error(
                span,
                "expression nested too deeply".into(),
                "too deep",
                &format!("arrays and calls may nest at most {MAX_DEPTH} levels; bind inner parts with `let`"),
            ));
        }
        let head = self.primary()?;
        if !self.at(&TokenKind::Dot) {
            return Ok(head);
        }
        let mut calls = Vec::new();
        while self.eat(&TokenKind::Dot) {
            let method = match self.take_ident() {
                Some(ident) => ident,
                None => {
                    return Err(self.expected(
                        "a method name",
                        "steps are method calls like `.run(\"...\")` or `.copy(SRC, DEST)`",
                    ));
                }
            };
            if !self.at(&TokenKind::LParen) {
                return Err(self.expected(
                    "`(`",
                    &format!(
                        "call the method: `.{}(...)`; there are no fields",
                        method.name
                    ),
                ));
            }
            let args = self.args(TokenKind::LParen, TokenKind::RParen)?;
            calls.push(MethodCall {
                span: method.span.to(self.prev_span()),
                method,
                args,
            });
        }
        let span = head.span.to(self.prev_span());
        Ok(Expr {
            kind: ExprKind::Chain {
                head: Box::new(head),
                calls,
            },
            span,
        })
    }

    /// `open expr, expr, ... close` (trailing comma allowed).
    fn args(&mut self, open: TokenKind, close: TokenKind) -> PResult<Vec<Expr>> {
        let open_span = self.expect(open, "")?;
        let mut args = Vec::new();
        loop {
            if self.eat(&close) {
                return Ok(args);
            }
            if self.at(&TokenKind::Eof) || self.at(&TokenKind::Semi) || self.at(&TokenKind::Let) {
                let found = self.peek().clone();
                let d = Diagnostic::error(
                    CODE,
                    found.span,
                    format!(
                        "expected {}, found {}",
                        close.describe(),
                        found.kind.describe()
                    ),
                )
                .label(format!("expected {}", close.describe()))
                .help(format!("close the list with {}", close.describe()))
                .related(open_span, "opened here");
                if !(self.quiet_eof && found.kind == TokenKind::Eof) {
                    self.diags.push(d);
                }
                return Err(Abort);
            }
            args.push(self.expr()?);
            if self.eat(&TokenKind::Comma) {
                continue;
            }
            if !self.at(&close) {
                let what = format!("`,` or {}", close.describe());
                return Err(self.expected(&what, "separate items with `,`"));
            }
        }
    }

    fn primary(&mut self) -> PResult<Expr> {
        let start = self.peek().span;
        let at = self.pos.min(self.tokens.len() - 1);
        let kind = match &mut self.tokens[at].kind {
            TokenKind::Str(s) => {
                let s = std::mem::take(s);
                self.bump();
                ExprKind::Str(s)
            }
            &mut TokenKind::Int { value, radix } => {
                self.bump();
                match value {
                    Some(value) => ExprKind::Int { value, radix },
                    None => ExprKind::Error,
                }
            }
            TokenKind::True => {
                self.bump();
                ExprKind::Bool(true)
            }
            TokenKind::False => {
                self.bump();
                ExprKind::Bool(false)
            }
            TokenKind::LBracket => {
                let items = self.args(TokenKind::LBracket, TokenKind::RBracket)?;
                ExprKind::Array(items)
            }
            TokenKind::Ident(_) => {
                let Some(ident) = self.take_ident() else {
                    return Err(Abort);
                };
                match self.peek_kind() {
                    TokenKind::LParen => {
                        let args = self.args(TokenKind::LParen, TokenKind::RParen)?;
                        ExprKind::Call { func: ident, args }
                    }
                    TokenKind::Bang => {
                        self.bump();
                        if !self.at(&TokenKind::LParen) {
                            return Err(
                                self.expected("`(`", "macros are called like `format!(\"{}\", x)`")
                            );
                        }
                        let args = self.args(TokenKind::LParen, TokenKind::RParen)?;
                        ExprKind::Macro { name: ident, args }
                    }
                    _ => ExprKind::Var(ident),
                }
            }
            TokenKind::Let => {
                return Err(self.expected(
                    "an expression",
                    "the previous binding is incomplete; finish it and end it with `;`",
                ));
            }
            _ => {
                return Err(self.expected(
                    "an expression",
                    "expressions are strings, integers, `true`/`false`, arrays `[..]`, names and calls",
                ));
            }
        };
        Ok(Expr {
            kind,
            span: start.to(self.prev_span()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_from_several_errors() {
        let (file, diags) =
            parse("let a = image(\"x\" \"y\");\nlet b = ;\nlet c = scratch()\nlet d = 1;");
        assert_eq!(diags.len(), 3, "{diags:#?}");
        let names: Vec<_> = file.items.iter().map(|i| i.name.name.as_str()).collect();
        assert_eq!(names, ["c", "d"]);
    }

    #[test]
    fn syntax_line() {
        let (file, _) = parse("// syntax=ghcr.io/x/kiln-frontend:1\nlet a = 1;");
        assert_eq!(file.syntax.unwrap().value, "ghcr.io/x/kiln-frontend:1");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!("let a = {}1{};", "[".repeat(10_000), "]".repeat(10_000));
        let (_, diags) = parse(&src);
        assert!(!diags.is_empty());
    }
}
