//! The Kilnfile frontend: lexer, parser, checker and lowering to `kiln-dag`.
//! It never panics, never prints and never touches the filesystem or network.

pub mod ast;
pub mod diag;
pub mod lexer;
pub mod parser;
pub mod span;
