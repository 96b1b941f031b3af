//! Symbolic file modes as chmod(1) writes them (`u+x,g-w`, `a=rX`,
//! `go=u-w`), with the meaning BSD's setmode(3) gives them, which is what
//! BuildKit's copy applies for `--chmod` (Go's `dchapes/mode`, with a
//! umask of 0, but `X` honoured with every operator, as the conformance
//! suite shows BuildKit doing): clauses of who (`ugoa`), an operator (`+-=`) and
//! permissions (`rwxXst`, or `ugo` to copy another class's bits), applied
//! in order to each copied file's own mode.

const SET_ID: u32 = 0o6000;
const STICKY: u32 = 0o1000;
/// Every bit a clause may change but the sticky bit (`a`).
const STANDARD: u32 = 0o6777;

/// A parsed symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolicMode {
    cmds: Vec<Cmd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Clear(u32),
    Set(u32),
    /// `+X`, `=X`: set when the file is a directory or executable by
    /// anyone.
    SetIfExec(u32),
    /// `-X`: cleared on the same condition.
    ClearIfExec(u32),
    /// `u`, `g`, `o` as permissions: another class's bits (shift) copied
    /// into the target classes.
    Copy {
        from_shift: u32,
        targets: [bool; 3],
        clear: bool,
        set: bool,
    },
}

/// Why a symbolic mode does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid symbolic mode `{text}`: {reason}")]
pub struct ModeError {
    pub text: String,
    pub reason: &'static str,
}

impl SymbolicMode {
    /// Parses `text` (not an octal mode: that is a plain number).
    pub fn parse(text: &str) -> Result<SymbolicMode, ModeError> {
        let err = |reason| ModeError {
            text: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(err("it is empty"));
        }
        if text.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(err("an octal mode is a number, not a symbolic mode"));
        }
        let mut cmds = Vec::new();
        for clause in text.split(',') {
            let mut chars = clause.chars().peekable();
            let mut who_all = 0u32;
            while let Some(&c) = chars.peek() {
                who_all |= match c {
                    'a' => STANDARD,
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o007,
                    _ => break,
                };
                chars.next();
            }
            let mut ops = 0;
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return Err(err("expected `+`, `-` or `=` after who (`ugoa`)"));
                }
                ops += 1;
                let mut who = who_all & !STICKY;
                let (mut perm, mut perm_x) = (0u32, 0u32);
                let mut eq_done = false;
                while let Some(&p) = chars.peek() {
                    match p {
                        'r' => perm |= 0o444,
                        'w' => perm |= 0o222,
                        'x' => perm |= 0o111,
                        // BuildKit applies `X` with every operator (as GNU
                        // chmod does), not with `+` only as setmode(3)
                        'X' => perm_x = 0o111,
                        // set-ID and sticky bits mean nothing for `o` alone
                        's' if who == 0 || who & !0o007 != 0 => perm |= SET_ID,
                        't' if who == 0 || who & !0o007 != 0 => {
                            who |= STICKY;
                            perm |= STICKY;
                        }
                        's' | 't' => {}
                        'u' | 'g' | 'o' => {
                            if perm != 0 {
                                push_op(&mut cmds, op, who, perm);
                                perm = 0;
                            }
                            eq_done |= op == '=';
                            if perm_x != 0 {
                                push_x(&mut cmds, op, who, perm_x);
                                perm_x = 0;
                            }
                            let targets = if who == 0 {
                                [true; 3]
                            } else {
                                [who & 0o400 != 0, who & 0o040 != 0, who & 0o004 != 0]
                            };
                            cmds.push(Cmd::Copy {
                                from_shift: match p {
                                    'u' => 6,
                                    'g' => 3,
                                    _ => 0,
                                },
                                targets,
                                clear: op != '+',
                                set: op != '-',
                            });
                        }
                        _ => break,
                    }
                    chars.next();
                }
                if perm != 0 || (op == '=' && !eq_done) {
                    push_op(&mut cmds, op, who, perm);
                }
                if perm_x != 0 {
                    push_x(&mut cmds, op, who, perm_x);
                }
            }
            if ops == 0 {
                return Err(err("a clause needs `+`, `-` or `=`"));
            }
        }
        Ok(SymbolicMode { cmds })
    }

    /// The mode `mode` (permission bits) becomes; `is_dir` for `X`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let orig = mode & 0o7777;
        let mut m = orig;
        for c in &self.cmds {
            match *c {
                Cmd::Clear(b) => m &= !b,
                Cmd::Set(b) => m |= b,
                Cmd::SetIfExec(b) => {
                    if is_dir || orig & 0o111 != 0 {
                        m |= b;
                    }
                }
                Cmd::ClearIfExec(b) => {
                    if is_dir || orig & 0o111 != 0 {
                        m &= !b;
                    }
                }
                Cmd::Copy {
                    from_shift,
                    targets,
                    clear,
                    set,
                } => {
                    let value = (m >> from_shift) & 0o7;
                    for (t, shift) in targets.iter().zip([6u32, 3, 0]) {
                        if !t {
                            continue;
                        }
                        if clear {
                            let c = if set { 0o7 } else { value };
                            m &= !(c << shift);
                        }
                        if set {
                            m |= value << shift;
                        }
                    }
                }
            }
        }
        m
    }
}

/// The bits of `perm` that `who` names; all of them without a who (the
/// umask is 0).
fn scope(who: u32, perm: u32) -> u32 {
    if who == 0 { perm } else { who & perm }
}

/// `X` of `op`: set (`+`, `=`, after its clear) or clear (`-`) the
/// execute bits of a directory or an executable.
fn push_x(cmds: &mut Vec<Cmd>, op: char, who: u32, perm_x: u32) {
    let bits = scope(who, perm_x);
    cmds.push(match op {
        '-' => Cmd::ClearIfExec(bits),
        _ => Cmd::SetIfExec(bits),
    });
}

/// `+` sets, `-` clears, `=` clears what `who` names and sets.
fn push_op(cmds: &mut Vec<Cmd>, op: char, who: u32, perm: u32) {
    match op {
        '-' => cmds.push(Cmd::Clear(scope(who, perm))),
        '+' => cmds.push(Cmd::Set(scope(who, perm))),
        _ => {
            cmds.push(Cmd::Clear(if who == 0 { STANDARD } else { who }));
            cmds.push(Cmd::Set(scope(who, perm)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(s: &str, mode: u32, dir: bool) -> u32 {
        SymbolicMode::parse(s).unwrap().apply(mode, dir)
    }

    #[test]
    fn chmod_examples() {
        // the examples of chmod(1) and BuildKit's tests
        assert_eq!(ap("u+x", 0o644, false), 0o744);
        assert_eq!(ap("g-w", 0o664, false), 0o644);
        assert_eq!(ap("go-w", 0o666, false), 0o644);
        assert_eq!(ap("u+x,g-w", 0o664, false), 0o744);
        assert_eq!(ap("a=rX", 0o640, false), 0o444);
        // `X` with `=` too, as BuildKit applies it
        assert_eq!(ap("a=rX", 0o740, false), 0o555);
        assert_eq!(ap("a=rX", 0o700, true), 0o555);
        assert_eq!(ap("a=rX", 0o664, false), 0o444);
        assert_eq!(ap("a-X", 0o755, false), 0o644);
        assert_eq!(ap("a-X", 0o644, false), 0o644);
        assert_eq!(ap("a=r,a+X", 0o700, true), 0o555);
        assert_eq!(ap("+X", 0o644, false), 0o644);
        assert_eq!(ap("+X", 0o744, false), 0o755);
        assert_eq!(ap("+X", 0o600, true), 0o711);
        assert_eq!(ap("=rw,+X", 0o755, false), 0o777);
        assert_eq!(ap("=rw,+X", 0o644, false), 0o666);
        assert_eq!(ap("u=rwx,go=rx", 0o000, false), 0o755);
        assert_eq!(ap("u=rwx,go=u-w", 0o000, false), 0o755);
        assert_eq!(ap("go=", 0o777, false), 0o700);
        assert_eq!(ap("go=u-w", 0o700, false), 0o755);
        assert_eq!(ap("o=u", 0o640, false), 0o646);
        assert_eq!(ap("g+u", 0o604, false), 0o664);
        assert_eq!(ap("u-g", 0o764, false), 0o164);
        assert_eq!(ap("u+s", 0o755, false), 0o4755);
        assert_eq!(ap("g+s", 0o755, true), 0o2755);
        assert_eq!(ap("o+s", 0o755, false), 0o755);
        assert_eq!(ap("+t", 0o755, true), 0o1755);
        assert_eq!(ap("a+t", 0o755, true), 0o1755);
        assert_eq!(ap("o+t", 0o755, true), 0o755);
        assert_eq!(ap("a-x", 0o4755, false), 0o4644);
        assert_eq!(ap("a=", 0o4755, false), 0);
        assert_eq!(ap("u=rw-x+X", 0o755, false), 0o755);
        assert_eq!(ap("+", 0o640, false), 0o640);
    }

    #[test]
    fn rejects_what_setmode_rejects() {
        for bad in ["", "u", "u+x,", "x", "u+x,z", "755", "u*x", ",u+x"] {
            assert!(SymbolicMode::parse(bad).is_err(), "{bad}");
        }
    }
}
