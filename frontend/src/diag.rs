//! Diagnostics: values the frontend returns (it never prints). Each one has a
//! severity, a stable code, a message, the span it is about and a `help:` line.
//! The CLI renders them through miette, which shows `file:line:col`, the
//! source line and a caret under the span.

use std::fmt;
use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    NamedSource, SourceCode, SourceSpan, SpanContents, ThemeCharacters, ThemeStyles,
};

use crate::span::{LineIndex, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

/// One finding about a Kilnfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable machine-readable kind, e.g. `kiln::unknown-function`.
    pub code: &'static str,
    pub message: String,
    /// Where it is; `None` for findings about the invocation (e.g. `--target`).
    pub span: Option<Span>,
    /// Short text printed under the caret.
    pub label: String,
    /// What to do about it.
    pub help: String,
    /// Secondary spans (e.g. the first definition of a duplicate binding).
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span: Some(span),
            label: String::new(),
            help: String::new(),
            related: Vec::new(),
        }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    /// A finding with no place in the file (about flags or options).
    pub fn global(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            span: None,
            ..Diagnostic::error(code, Span::default(), message)
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = help.into();
        self
    }

    pub fn related(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.related.push((span, label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        (!self.help.is_empty()).then(|| Box::new(&self.help) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span?;
        let primary = LabeledSpan::new_primary_with_span(
            (!self.label.is_empty()).then(|| self.label.clone()),
            span,
        );
        let related = self
            .related
            .iter()
            .map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), *s));
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

/// A diagnostic together with the file it is about, ready for miette.
#[derive(Debug)]
pub struct Located {
    pub diagnostic: Diagnostic,
    pub source: Snippet,
}

/// Lines longer than this are shown as a window around the diagnostic.
const LONG_LINE: usize = 512;
/// Bytes of a long line kept on each side of the span, and of the span.
const WINDOW: usize = 60;

/// What miette renders: the whole file, or for a diagnostic on a very long
/// line an excerpt of that line. miette pads carets with `{:width$}`, which
/// panics past column 65,535, and a whole 1 MB line is no help anyway. The
/// excerpt reports the real line and column, so the `file:line:col` header
/// stays true.
#[derive(Debug)]
pub struct Snippet {
    source: NamedSource<Arc<str>>,
    name: String,
    /// The excerpt's first line in the file (0-based).
    line: usize,
    /// The file column of the excerpt's first character, minus the length
    /// of its leading `...`.
    column: isize,
}

impl SourceCode for Snippet {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let c = self.source.read_span(span, before, after)?;
        if self.line == 0 && self.column == 0 {
            return Ok(c);
        }
        let column = (c.column() as isize + self.column).max(0) as usize;
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            c.data(),
            *c.span(),
            c.line() + self.line,
            column,
            c.line_count(),
        )))
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The line around byte `at`, without its newline.
fn line_at(src: &str, at: usize) -> (usize, usize) {
    let start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = src[at..].find('\n').map_or(src.len(), |i| at + i);
    (start, end)
}

impl Located {
    fn new(file_name: &str, src: &Arc<str>, d: &Diagnostic) -> Located {
        let whole = |diagnostic: Diagnostic| Located {
            diagnostic,
            source: Snippet {
                source: NamedSource::new(file_name, src.clone()),
                name: file_name.to_string(),
                line: 0,
                column: 0,
            },
        };
        let Some(span) = d.span else {
            return whole(d.clone());
        };
        let text: &str = src;
        let at = floor_boundary(text, span.start as usize);
        let (start, end) = line_at(text, at);
        // The span's line and the context lines miette shows around it.
        let before = line_at(text, start.saturating_sub(1)).0;
        let after = line_at(text, (end + 1).min(text.len())).1;
        let span_end = ceil_boundary(text, span.end as usize);
        let long = text[before..after.max(span_end)]
            .split('\n')
            .any(|l| l.len() > LONG_LINE);
        if !long {
            return whole(d.clone());
        }
        let w_start = floor_boundary(text, at.saturating_sub(WINDOW).max(start));
        let s_end = ceil_boundary(text, span_end.min(end).min(at + WINDOW)).max(at);
        let w_end = ceil_boundary(text, (s_end + WINDOW).min(end));
        let prefix = if w_start > start { "..." } else { "" };
        let suffix = if w_end < end { "..." } else { "" };
        let excerpt: Arc<str> = Arc::from(format!("{prefix}{}{suffix}", &text[w_start..w_end]));
        let map = |o: usize| o - w_start + prefix.len();
        let inside = |s: Span| (s.start as usize) >= w_start && (s.end as usize) <= w_end;
        let mut diagnostic = d.clone();
        diagnostic.span = Some(Span::new(map(at), map(s_end)));
        // Other labels are kept only where they fall in the excerpt.
        diagnostic.related = d
            .related
            .iter()
            .filter(|(s, _)| inside(*s))
            .map(|(s, l)| {
                (
                    Span::new(map(s.start as usize), map(s.end as usize)),
                    l.clone(),
                )
            })
            .collect();
        let line = text[..start].matches('\n').count();
        let col = text[start..w_start].chars().count() as isize;
        Located {
            diagnostic,
            source: Snippet {
                source: NamedSource::new(file_name, excerpt),
                name: file_name.to_string(),
                line,
                column: col - prefix.len() as isize,
            },
        }
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.diagnostic.fmt(f)
    }
}

impl std::error::Error for Located {}

impl miette::Diagnostic for Located {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        miette::Diagnostic::code(&self.diagnostic)
    }
    fn severity(&self) -> Option<miette::Severity> {
        miette::Diagnostic::severity(&self.diagnostic)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        miette::Diagnostic::help(&self.diagnostic)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        miette::Diagnostic::labels(&self.diagnostic)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
}

/// All diagnostics of one Kilnfile, with its name and text so they can be
/// rendered as `file:line:col` plus the source line.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file_name: String,
    pub source: Arc<str>,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file_name: &str, source: Arc<str>, mut items: Vec<Diagnostic>) -> Diagnostics {
        // Report in source order (global ones first); stable for equal spans.
        items.sort_by_key(|d| d.span.map(|s| (s.start, s.end)));
        Diagnostics {
            file_name: file_name.to_string(),
            source,
            items,
        }
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| !d.is_error())
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Each diagnostic bundled with the named source, for `miette::Report`.
    pub fn located(&self) -> impl Iterator<Item = Located> + '_ {
        self.items
            .iter()
            .map(|d| Located::new(&self.file_name, &self.source, d))
    }

    /// `file:line:col` of a span.
    pub fn position(&self, span: Span) -> String {
        let lc = LineIndex::new(&self.source).line_col(&self.source, span.start as usize);
        format!("{}:{}:{}", self.file_name, lc.line, lc.col)
    }

    /// One line per diagnostic: `file:line:col: error[code]: message`.
    pub fn summary(&self) -> String {
        let idx = LineIndex::new(&self.source);
        let mut out = String::new();
        for d in &self.items {
            self.summary_line(&idx, d, &mut out);
        }
        out
    }

    /// The `summary` line of one diagnostic.
    pub fn summary_of(&self, d: &Diagnostic) -> String {
        let mut out = String::new();
        self.summary_line(&LineIndex::new(&self.source), d, &mut out);
        out
    }

    fn summary_line(&self, idx: &LineIndex, d: &Diagnostic, out: &mut String) {
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match d.span {
            Some(s) => {
                let lc = idx.line_col(&self.source, s.start as usize);
                out.push_str(&format!("{}:{}:{}: ", self.file_name, lc.line, lc.col));
            }
            None => out.push_str(&format!("{}: ", self.file_name)),
        }
        out.push_str(&format!("{sev}[{}]: {}\n", d.code, d.message));
    }

    /// Render every diagnostic with the given handler (no colour, fixed width
    /// when used for snapshots).
    pub fn render_with(&self, handler: &GraphicalReportHandler) -> String {
        let mut out = String::new();
        for located in self.located() {
            if handler.render_report(&mut out, &located).is_err() {
                out.push_str(&located.diagnostic.message);
            }
            out.push('\n');
        }
        out
    }

    /// Plain ASCII rendering (carets under spans), 100 columns, no colour.
    pub fn render_plain(&self) -> String {
        let theme = GraphicalTheme {
            characters: ThemeCharacters::ascii(),
            styles: ThemeStyles::none(),
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        self.render_with(&handler)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

impl std::error::Error for Diagnostics {}
