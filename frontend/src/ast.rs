//! The syntax tree. Every node carries its byte span. Method chains are kept
//! flat (a head plus a list of calls) so a long chain never becomes a deep
//! tree: no recursion depth grows with the length of a build.

use std::fmt::Write;

use crate::span::Span;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// The optional `// syntax=REF` first line.
    pub syntax: Option<Syntax>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    pub value: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// `let NAME = VALUE;`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprKind {
    Str(String),
    /// `radix` is kept so file modes written in decimal can be flagged.
    Int {
        value: u64,
        radix: u32,
    },
    Bool(bool),
    Array(Vec<Expr>),
    /// A reference to a binding.
    Var(Ident),
    /// `func(args)`
    Call {
        func: Ident,
        args: Vec<Expr>,
    },
    /// `name!(args)`, only `format!` is known.
    Macro {
        name: Ident,
        args: Vec<Expr>,
    },
    /// `head.m1(..).m2(..)`
    Chain {
        head: Box<Expr>,
        calls: Vec<MethodCall>,
    },
    /// A part that failed to parse (already reported).
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodCall {
    pub method: Ident,
    pub args: Vec<Expr>,
    /// From the method name to the closing parenthesis.
    pub span: Span,
}

impl File {
    /// An indented, human-readable dump of the tree with spans, used by the
    /// parse snapshot tests.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        if let Some(s) = &self.syntax {
            let _ = writeln!(out, "syntax {:?} @{}", s.value, span(s.span));
        }
        for item in &self.items {
            let _ = writeln!(
                out,
                "let {} @{} (item @{})",
                item.name.name,
                span(item.name.span),
                span(item.span)
            );
            item.value.dump_into(&mut out, 1);
        }
        out
    }
}

fn span(s: Span) -> String {
    format!("{}..{}", s.start, s.end)
}

impl Expr {
    fn dump_into(&self, out: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        let at = span(self.span);
        match &self.kind {
            ExprKind::Str(s) => {
                let _ = writeln!(out, "{pad}str {s:?} @{at}");
            }
            ExprKind::Int { value, radix } => {
                let _ = writeln!(out, "{pad}int {value} (radix {radix}) @{at}");
            }
            ExprKind::Bool(b) => {
                let _ = writeln!(out, "{pad}bool {b} @{at}");
            }
            ExprKind::Var(id) => {
                let _ = writeln!(out, "{pad}var {} @{at}", id.name);
            }
            ExprKind::Error => {
                let _ = writeln!(out, "{pad}<error> @{at}");
            }
            ExprKind::Array(items) => {
                let _ = writeln!(out, "{pad}array @{at}");
                for e in items {
                    e.dump_into(out, depth + 1);
                }
            }
            ExprKind::Call { func, args } => {
                let _ = writeln!(out, "{pad}call {} @{at}", func.name);
                for e in args {
                    e.dump_into(out, depth + 1);
                }
            }
            ExprKind::Macro { name, args } => {
                let _ = writeln!(out, "{pad}macro {}! @{at}", name.name);
                for e in args {
                    e.dump_into(out, depth + 1);
                }
            }
            ExprKind::Chain { head, calls } => {
                let _ = writeln!(out, "{pad}chain @{at}");
                head.dump_into(out, depth + 1);
                for c in calls {
                    let _ = writeln!(out, "{pad}  .{} @{}", c.method.name, span(c.span));
                    for e in &c.args {
                        e.dump_into(out, depth + 2);
                    }
                }
            }
        }
    }
}
