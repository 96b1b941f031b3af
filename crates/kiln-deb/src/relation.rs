//! Package relationships (`Depends`, `Pre-Depends`, `Provides`): the
//! grammar of Debian Policy 7.1, with Debian version comparison from the
//! `debversion` crate.

use std::cmp::Ordering;
use std::fmt;

use debversion::Version;

/// A relation field that does not parse.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("unreadable relation `{text}`: {reason}")]
pub struct RelationError {
    pub text: String,
    pub reason: &'static str,
}

/// `<<`, `<=`, `=`, `>=`, `>>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<<" => Op::Lt,
            // `<` and `>` are the obsolete spellings of `<=` and `>=`
            "<=" | "<" => Op::Le,
            "=" => Op::Eq,
            ">=" | ">" => Op::Ge,
            ">>" => Op::Gt,
            _ => return None,
        })
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Eq => o == Ordering::Equal,
            Op::Ge => o != Ordering::Less,
            Op::Gt => o == Ordering::Greater,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        })
    }
}

/// Compares two Debian version strings (dpkg's order). An unparsable
/// version (never in a real archive) compares as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (a.parse::<Version>(), b.parse::<Version>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

/// One alternative: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    /// `any`, `native` or an architecture name after `:`.
    pub arch: Option<String>,
    pub constraint: Option<(Op, String)>,
}

impl Relation {
    /// Whether `version` meets the constraint (no constraint: any).
    pub fn accepts(&self, version: &str) -> bool {
        match &self.constraint {
            None => true,
            Some((op, want)) => op.holds(compare_versions(version, want)),
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(a) = &self.arch {
            write!(f, ":{a}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

/// `a | b`: the first that can be satisfied wins.
pub type Group = Vec<Relation>;

/// Parses a whole field (`a (>= 1), b | c:any`). Architecture
/// restrictions (`[amd64]`) and build profiles (`<!nocheck>`), which
/// binary indexes do not carry, are dropped.
pub fn parse_field(text: &str) -> Result<Vec<Group>, RelationError> {
    let mut out = Vec::new();
    for group in text.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            alts.push(parse_one(alt.trim())?);
        }
        out.push(alts);
    }
    Ok(out)
}

fn parse_one(text: &str) -> Result<Relation, RelationError> {
    let err = |reason| RelationError {
        text: text.to_string(),
        reason,
    };
    let cut = |s: &str, open: char, close: char| -> Result<String, RelationError> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find(open) {
            out.push_str(&rest[..i]);
            let j = rest[i..]
                .find(close)
                .ok_or_else(|| err("unclosed bracket"))?;
            rest = &rest[i + j + 1..];
        }
        out.push_str(rest);
        Ok(out)
    };
    // the version constraint first: `<<` must not read as a build profile
    let (outside, constraint) = match text.find('(') {
        Some(i) => {
            let close = text[i..].find(')').ok_or_else(|| err("unclosed `(`"))?;
            let inner = text[i + 1..i + close].trim();
            let split = inner
                .find(|c: char| !matches!(c, '<' | '>' | '='))
                .ok_or_else(|| err("no version after the operator"))?;
            let op = Op::parse(inner[..split].trim()).ok_or_else(|| err("unknown operator"))?;
            let version = inner[split..].trim();
            if version.is_empty() {
                return Err(err("no version after the operator"));
            }
            let outside = format!("{} {}", &text[..i], &text[i + close + 1..]);
            (outside, Some((op, version.to_string())))
        }
        None => (text.to_string(), None),
    };
    let head = cut(&cut(&outside, '[', ']')?, '<', '>')?.trim().to_string();
    let (name, arch) = match head.split_once(':') {
        Some((n, a)) => (n.to_string(), Some(a.to_string())),
        None => (head, None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(err("not a package name"));
    }
    Ok(Relation {
        name,
        arch,
        constraint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let g = parse_field(
            "libc6 (>= 2.34), python3.11 (>= 3.11.2-1~) | foo:any, bar [amd64] <!nocheck>, baz (<< 2:1)",
        )
        .unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(g[0][0].to_string(), "libc6 (>= 2.34)");
        assert_eq!(g[1].len(), 2);
        assert_eq!(g[1][1].arch.as_deref(), Some("any"));
        assert_eq!(g[2][0].name, "bar");
        assert_eq!(g[3][0].constraint, Some((Op::Lt, "2:1".to_string())));
        assert!(parse_field("a (>= )").is_err());
        assert!(parse_field("a (~ 1)").is_err());
        assert!(parse_field("a (>= 1").is_err());
        assert!(parse_field("").unwrap().is_empty());
    }

    #[test]
    fn debian_order() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.0", "1.0-0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1:0.1", "2.0", Greater),
            ("3.11.2-1~", "3.11.2-1", Less),
            ("3.11.2-1+b1", "3.11.2-1", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
        ] {
            assert_eq!(compare_versions(a, b), o, "{a} vs {b}");
        }
        let r = &parse_field("x (>= 3.11.2-1~)").unwrap()[0][0];
        assert!(r.accepts("3.11.2-1"));
        assert!(!r.accepts("3.11.1"));
    }
}
