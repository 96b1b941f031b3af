//! One line of a step's output as a terminal would show it: `\r` returns
//! to the start of the line and what follows overwrites it (apt's and
//! dpkg's percentages, cargo's bar), `ESC [ K` erases to its end, a tab
//! goes to the next stop of 8, backspace steps back; other escape
//! sequences and control characters are dropped, so a step can neither
//! move the cursor of kiln's view nor leave colours on. For logs
//! ([`TermLine::replacing`]) a `\r` followed by text starts the line anew:
//! only the last state of a rewritten line is kept, whatever was longer
//! before it.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Escape {
    #[default]
    No,
    /// After ESC.
    Start,
    /// In a CSI sequence (`ESC [`), which ends at a byte in `@..=~`.
    Csi,
}

/// The line being written and the cursor in it.
#[derive(Debug, Default)]
pub struct TermLine {
    cells: Vec<char>,
    col: usize,
    escape: Escape,
    /// the parameter bytes of the CSI sequence being read
    csi: String,
    /// text after `\r` replaces the line instead of overwriting it
    replace: bool,
    /// a `\r` came and nothing was written since
    returned: bool,
}

impl TermLine {
    /// A line whose `\r`-rewrites keep only their last state.
    pub fn replacing() -> Self {
        TermLine {
            replace: true,
            ..TermLine::default()
        }
    }

    /// Feeds output bytes (decoded lossily: a multi-byte character split
    /// between two chunks shows as U+FFFD); returns the lines they ended.
    pub fn feed(&mut self, data: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for c in String::from_utf8_lossy(data).chars() {
            if let Some(line) = self.put(c) {
                done.push(line);
            }
        }
        done
    }

    /// The unfinished line, as shown now (empty when there is none).
    pub fn current(&self) -> String {
        self.cells.iter().collect::<String>().trim_end().to_string()
    }

    /// Ends the unfinished line (the step ended without a newline).
    pub fn flush(&mut self) -> Option<String> {
        let line = self.current();
        self.cells.clear();
        self.col = 0;
        self.returned = false;
        (!line.is_empty()).then_some(line)
    }

    fn put(&mut self, c: char) -> Option<String> {
        match (self.escape, c) {
            (Escape::Start, '[') => {
                self.escape = Escape::Csi;
                self.csi.clear();
                return None;
            }
            (Escape::Start, _) => {
                self.escape = Escape::No;
                return None;
            }
            (Escape::Csi, c) => {
                if ('@'..='~').contains(&c) {
                    self.escape = Escape::No;
                    if c == 'K' {
                        self.erase_in_line();
                    }
                } else {
                    self.csi.push(c);
                }
                return None;
            }
            (Escape::No, '\x1b') => {
                self.escape = Escape::Start;
                return None;
            }
            (Escape::No, _) => {}
        }
        match c {
            '\n' => {
                let line = self.current();
                self.cells.clear();
                self.col = 0;
                self.returned = false;
                return Some(line);
            }
            '\r' => {
                self.col = 0;
                self.returned = true;
            }
            '\x08' => self.col = self.col.saturating_sub(1),
            '\t' => {
                let stop = (self.col / 8 + 1) * 8;
                while self.col < stop {
                    self.write(' ');
                }
            }
            c if c.is_control() => {}
            c => self.write(c),
        }
        None
    }

    fn write(&mut self, c: char) {
        if std::mem::take(&mut self.returned) && self.replace {
            self.cells.clear();
        }
        if self.col < self.cells.len() {
            self.cells[self.col] = c;
        } else {
            self.cells.resize(self.col, ' ');
            self.cells.push(c);
        }
        self.col += 1;
    }

    /// `ESC [ K` (0: to the end, 1: to the cursor, 2: the whole line).
    fn erase_in_line(&mut self) {
        match self.csi.as_str() {
            "" | "0" => self.cells.truncate(self.col),
            "1" => {
                for cell in self.cells.iter_mut().take(self.col + 1) {
                    *cell = ' ';
                }
            }
            "2" => self.cells.clear(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&str]) -> (Vec<String>, String) {
        lines_in(TermLine::default(), chunks)
    }

    fn lines_in(mut t: TermLine, chunks: &[&str]) -> (Vec<String>, String) {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(t.feed(c.as_bytes()));
        }
        (out, t.current())
    }

    #[test]
    fn as_a_terminal_shows_it() {
        let cases: &[(&[&str], &[&str], &str)] = &[
            // a line split across writes is one line
            (&["+ ", "echo", " line 1\n"], &["+ echo line 1"], ""),
            // dpkg ends its lines with \r\n: no empty line, the text stays
            (&["Unpacking x ...\r\n"], &["Unpacking x ..."], ""),
            // percentages rewritten in place: the last state
            (
                &[
                    "(Reading database ... 5%\r",
                    "(Reading database ... 100%\r",
                    "(Reading database ... 6021 files.)\n",
                ],
                &["(Reading database ... 6021 files.)"],
                "",
            ),
            // a shorter rewrite leaves the tail of the longer one, as on a terminal
            (&["50%\r9%\n"], &["9%%"], ""),
            // a bar cleared with ESC[K, then the real line
            (
                &["Building [==>  ] 1/3\r", "\x1b[K", "   Compiling itoa\n"],
                &["   Compiling itoa"],
                "",
            ),
            // colours dropped, tabs to stops of 8
            (&["\x1b[1;32mok\x1b[0m\tdone\n"], &["ok      done"], ""),
            // backspace
            (&["ab\x08c\n"], &["ac"], ""),
            // unfinished
            (&["no newline"], &[], "no newline"),
        ];
        for (chunks, want, partial) in cases {
            let (got, cur) = lines(chunks);
            assert_eq!(got, *want, "{chunks:?}");
            assert_eq!(cur, *partial, "{chunks:?}");
        }
    }

    #[test]
    fn logs_keep_the_last_state_of_a_rewritten_line() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["50%\r9%\n"], &["9%"]),
            (&["Unpacking x ...\r\n"], &["Unpacking x ..."]),
            (
                &[
                    "    Building [====>   ] 0/3: itoa     \r",
                    "   Compiling ryu v1.0.23\n",
                ],
                &["   Compiling ryu v1.0.23"],
            ),
        ];
        for (chunks, want) in cases {
            let (got, _) = lines_in(TermLine::replacing(), chunks);
            assert_eq!(got, *want, "{chunks:?}");
        }
    }
}
