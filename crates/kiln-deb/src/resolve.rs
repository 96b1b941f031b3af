//! Resolution like `apt-get install --no-install-recommends`: the
//! requested packages and, depth first in field order, what their
//! `Pre-Depends` and `Depends` need. A group of alternatives is satisfied
//! by anything already chosen, installed or excluded; otherwise its first
//! alternative whose candidate (the highest version for the architecture)
//! meets the version constraint wins, a virtual package through the
//! packages that provide it. `Essential` and `Priority: required` packages
//! come in only when something depends on them. `Recommends`, `Suggests`,
//! `Conflicts` and `Breaks` are not looked at (no maintainer scripts run and
//! only one version of each package exists in an index).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::index::{Index, PkgId};
use crate::relation::{Group, Relation, RelationError, compare_versions, parse_field};

/// Why a package set cannot be resolved.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ResolveError {
    #[error("unknown package `{name}`{}", did_you_mean(suggestions))]
    Unknown {
        name: String,
        suggestions: Vec<String>,
    },
    #[error(
        "`{name}` is a virtual package provided by {}; name the one to install",
        providers.join(", ")
    )]
    Virtual {
        name: String,
        providers: Vec<String>,
    },
    #[error(
        "cannot satisfy `{relation}`, needed by {}: {why}",
        chain.join(" <- ")
    )]
    Unsatisfiable {
        /// The dependency chain, the package that needs it first and the
        /// requested one last.
        chain: Vec<String>,
        relation: String,
        why: String,
    },
    #[error("package `{package}` has an unreadable `{field}`")]
    Relation {
        package: String,
        field: &'static str,
        #[source]
        source: RelationError,
    },
}

fn did_you_mean(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(
            "; did you mean {}?",
            s.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// What to resolve.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub packages: Vec<String>,
    /// Packages the image has otherwise: taken as present, never installed,
    /// satisfying any dependency on them.
    pub exclude: Vec<String>,
}

/// The chosen packages, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub packages: Vec<PkgId>,
}

/// Resolves requests against one index for one architecture.
pub struct Resolver<'a> {
    index: &'a Index,
    arch: &'a str,
    installed: Option<&'a Index>,
    /// The candidate of each name slot: its highest version for `arch`.
    candidates: Vec<Option<PkgId>>,
}

struct State<'a> {
    chosen: BTreeMap<&'a str, PkgId>,
    /// Names provided by chosen packages, with the provided version.
    provided: HashMap<String, Vec<Option<String>>>,
    exclude: HashSet<String>,
}

impl<'a> Resolver<'a> {
    pub fn new(index: &'a Index, arch: &'a str) -> Resolver<'a> {
        let candidates = (0..index.slot_count() as u32)
            .map(|slot| {
                let mut best: Option<PkgId> = None;
                for &id in index.slot_ids(slot) {
                    let a = index.arch(id);
                    if a != arch && a != "all" {
                        continue;
                    }
                    best = match best {
                        Some(old)
                            if compare_versions(index.version(id), index.version(old)).is_le() =>
                        {
                            Some(old)
                        }
                        _ => Some(id),
                    };
                }
                best
            })
            .collect();
        Resolver {
            index,
            arch,
            installed: None,
            candidates,
        }
    }

    /// Packages already there (a dpkg `status` file): dependencies they
    /// satisfy are not installed again, as apt on a system.
    pub fn with_installed(mut self, status: &'a Index) -> Resolver<'a> {
        self.installed = Some(status);
        self
    }

    /// The candidate of `name`, if the index has one for the architecture.
    pub fn candidate(&self, name: &str) -> Option<PkgId> {
        self.candidates[self.index.slot(name)? as usize]
    }

    /// The candidates that provide `name`, by package name, with the
    /// version they provide.
    fn providers(&self, name: &str) -> Vec<(PkgId, Option<&'a str>)> {
        let mut list: Vec<(PkgId, Option<&'a str>)> = self
            .index
            .providers(name)
            .into_iter()
            .filter(|(id, _)| self.candidate(self.index.name(*id)) == Some(*id))
            .collect();
        list.sort_by(|a, b| self.index.name(a.0).cmp(self.index.name(b.0)));
        list
    }

    pub fn resolve(&self, req: &Request) -> Result<Resolution, ResolveError> {
        let mut st = State {
            chosen: BTreeMap::new(),
            provided: HashMap::new(),
            exclude: req.exclude.iter().cloned().collect(),
        };
        for name in &req.packages {
            let (name, arch) = match name.split_once(':') {
                Some((n, a)) => (n, Some(a.to_string())),
                None => (name.as_str(), None),
            };
            if st.exclude.contains(name) {
                continue;
            }
            let id = match self.candidate(name) {
                Some(id) => id,
                None => self.pick_virtual(name)?,
            };
            let rel = Relation {
                name: name.to_string(),
                arch,
                constraint: None,
            };
            if self.installed_at(name, self.index.version(id)) {
                // apt: "already the newest version"
                continue;
            }
            if !self.arch_ok(&rel, id) {
                return Err(ResolveError::Unknown {
                    name: format!("{name}:{}", rel.arch.unwrap_or_default()),
                    suggestions: Vec::new(),
                });
            }
            self.mark(id, &mut st, &mut Vec::new())?;
        }
        Ok(Resolution {
            packages: st.chosen.values().copied().collect(),
        })
    }

    /// A requested name the index has only as a virtual package: apt takes
    /// its one provider, and asks to choose among several.
    fn pick_virtual(&self, name: &str) -> Result<PkgId, ResolveError> {
        match self.providers(name).as_slice() {
            [(id, _)] => Ok(*id),
            list if !list.is_empty() => Err(ResolveError::Virtual {
                name: name.to_string(),
                providers: list
                    .iter()
                    .map(|(id, _)| format!("`{}`", self.index.name(*id)))
                    .collect(),
            }),
            _ => Err(ResolveError::Unknown {
                name: name.to_string(),
                suggestions: self.suggest(name),
            }),
        }
    }

    /// Up to three names close to `name`.
    fn suggest(&self, name: &str) -> Vec<String> {
        let mut scored: Vec<(f64, &str)> = self
            .index
            .names()
            .filter(|n| self.candidate(n).is_some())
            .map(|n| (strsim::jaro_winkler(name, n), n))
            .filter(|(s, _)| *s > 0.8)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        scored
            .into_iter()
            .take(3)
            .map(|(_, n)| n.to_string())
            .collect()
    }

    /// Whether the installed packages have `name` at `version`.
    fn installed_at(&self, name: &str, version: &str) -> bool {
        self.installed.is_some_and(|inst| {
            inst.named(name).iter().any(|&i| {
                is_installed(inst, i) && compare_versions(inst.version(i), version).is_eq()
            })
        })
    }

    /// Whether the architecture qualifier of `rel` admits `id`.
    fn arch_ok(&self, rel: &Relation, id: PkgId) -> bool {
        self.arch_ok_in(self.index, rel, id)
    }

    fn arch_ok_in(&self, index: &Index, rel: &Relation, id: PkgId) -> bool {
        let a = index.arch(id);
        match rel.arch.as_deref() {
            None | Some("native") => true,
            // `:any` asks for a package that may serve other architectures
            Some("any") => index.multi_arch(id) == "allowed",
            Some(q) => q == a || a == "all" || q == self.arch,
        }
    }

    fn satisfied(&self, rel: &Relation, st: &State<'a>) -> bool {
        if st.exclude.contains(&rel.name) {
            return true;
        }
        if let Some(&id) = st.chosen.get(rel.name.as_str())
            && rel.accepts(self.index.version(id))
            && self.arch_ok(rel, id)
        {
            return true;
        }
        if let Some(vs) = st.provided.get(&rel.name)
            && vs.iter().any(|v| provide_meets(rel, v.as_deref()))
        {
            return true;
        }
        if let Some(inst) = self.installed {
            for &id in inst.named(&rel.name) {
                if is_installed(inst, id)
                    && rel.accepts(inst.version(id))
                    && self.arch_ok_in(inst, rel, id)
                {
                    return true;
                }
            }
            // installed providers; few enough to scan when asked
            for id in inst.ids() {
                let p = inst.provides(id);
                if p.is_empty() || !p.contains(rel.name.as_str()) || !is_installed(inst, id) {
                    continue;
                }
                for g in parse_field(p).unwrap_or_default() {
                    for r in g {
                        if r.name == rel.name
                            && provide_meets(rel, r.constraint.as_ref().map(|(_, v)| v.as_str()))
                        {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    /// The package that satisfies the first satisfiable alternative.
    fn choose(&self, group: &Group) -> Option<PkgId> {
        for rel in group {
            if let Some(id) = self.candidate(&rel.name)
                && rel.accepts(self.index.version(id))
                && self.arch_ok(rel, id)
            {
                return Some(id);
            }
            if rel.arch.as_deref() == Some("any") {
                // a virtual package never satisfies an `:any` relation
                continue;
            }
            let list = self.providers(&rel.name);
            let mut ok: Vec<PkgId> = list
                .iter()
                .filter(|(_, v)| provide_meets(rel, *v))
                .map(|(id, _)| *id)
                .collect();
            // apt's order of providers: essential first, then by priority
            ok.sort_by_key(|id| {
                (
                    !self.index.essential(*id),
                    priority_rank(self.index.priority(*id)),
                    self.index.name(*id).to_string(),
                )
            });
            if let Some(id) = ok.first() {
                return Some(*id);
            }
        }
        None
    }

    fn mark(
        &self,
        id: PkgId,
        st: &mut State<'a>,
        chain: &mut Vec<String>,
    ) -> Result<(), ResolveError> {
        let name = self.index.name(id);
        if st.chosen.contains_key(name) {
            return Ok(());
        }
        st.chosen.insert(name, id);
        for g in parse_field(self.index.provides(id)).unwrap_or_default() {
            for r in g {
                st.provided
                    .entry(r.name)
                    .or_default()
                    .push(r.constraint.map(|(_, v)| v));
            }
        }
        chain.push(format!("{name} ({})", self.index.version(id)));
        for (field, text) in [
            ("Pre-Depends", self.index.pre_depends(id)),
            ("Depends", self.index.depends(id)),
        ] {
            let groups = parse_field(text).map_err(|source| ResolveError::Relation {
                package: name.to_string(),
                field,
                source,
            })?;
            for group in groups {
                if group.iter().any(|r| self.satisfied(r, st)) {
                    continue;
                }
                let Some(next) = self.choose(&group) else {
                    let mut c = chain.clone();
                    c.reverse();
                    return Err(ResolveError::Unsatisfiable {
                        chain: c,
                        relation: group
                            .iter()
                            .map(Relation::to_string)
                            .collect::<Vec<_>>()
                            .join(" | "),
                        why: self.why_not(&group),
                    });
                };
                self.mark(next, st, chain)?;
            }
        }
        chain.pop();
        Ok(())
    }

    /// Why no alternative of `group` can be installed.
    fn why_not(&self, group: &Group) -> String {
        let reasons: Vec<String> = group
            .iter()
            .map(|rel| match self.candidate(&rel.name) {
                Some(id) if !rel.accepts(self.index.version(id)) => {
                    format!("`{}` is at version {}", rel.name, self.index.version(id))
                }
                Some(_) => format!("`{}` does not match the architecture", rel.name),
                None if !self.providers(&rel.name).is_empty() => {
                    format!("no provider of `{}` matches", rel.name)
                }
                None => format!("`{}` is not in the index", rel.name),
            })
            .collect();
        reasons.join("; ")
    }
}

fn is_installed(status: &Index, id: PkgId) -> bool {
    let s = status.status(id);
    // a Packages file has no Status: everything in it counts as there
    s.is_empty() || s.ends_with(" installed")
}

/// A provided name meets a relation: unversioned relations take any
/// provider, versioned ones only a provider with a matching version.
fn provide_meets(rel: &Relation, version: Option<&str>) -> bool {
    match (&rel.constraint, version) {
        (None, _) => true,
        (Some(_), Some(v)) => rel.accepts(v),
        (Some(_), None) => false,
    }
}

fn priority_rank(p: &str) -> u8 {
    match p {
        "required" => 0,
        "important" => 1,
        "standard" => 2,
        "optional" => 3,
        "extra" => 4,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::provides;

    const IDX: &str = "\
Package: app
Version: 1
Architecture: amd64
Depends: libc6 (>= 2.30), mail-transport-agent | nullmailer, py:any, gone | libc6

Package: libc6
Version: 2.36-9
Architecture: amd64
Multi-Arch: same
Priority: optional

Package: exim
Version: 4
Architecture: amd64
Provides: mail-transport-agent
Priority: standard

Package: postfix
Version: 3
Architecture: amd64
Provides: mail-transport-agent
Priority: optional

Package: py
Version: 3.11
Architecture: amd64
Multi-Arch: allowed

Package: bash
Version: 5.2
Architecture: amd64
Essential: yes
Priority: required

Package: old
Version: 1
Architecture: amd64
Depends: libc6 (>= 3)

Package: libc6
Version: 2.31-1
Architecture: amd64
";

    fn names(idx: &Index, r: &Resolution) -> Vec<String> {
        r.packages
            .iter()
            .map(|id| format!("{}={}", idx.name(*id), idx.version(*id)))
            .collect()
    }

    #[test]
    fn closure_alternatives_virtual_any() {
        let idx = Index::parse("t", IDX).unwrap();
        let r = Resolver::new(&idx, "amd64");
        let got = r
            .resolve(&Request {
                packages: vec!["app".into()],
                exclude: vec![],
            })
            .unwrap();
        // the highest libc6, exim before postfix (priority), no bash
        assert_eq!(
            names(&idx, &got),
            ["app=1", "exim=4", "libc6=2.36-9", "py=3.11"]
        );
        let got = r
            .resolve(&Request {
                packages: vec!["app".into()],
                exclude: vec!["libc6".into(), "mail-transport-agent".into()],
            })
            .unwrap();
        assert_eq!(names(&idx, &got), ["app=1", "py=3.11"]);
    }

    #[test]
    fn provides_fields() {
        let got: Vec<_> = provides("python3-foo (= 1.2-3), libx, c-abi (= 2)").collect();
        assert_eq!(
            got,
            [
                ("python3-foo", Some("1.2-3")),
                ("libx", None),
                ("c-abi", Some("2"))
            ]
        );
        assert_eq!(provides("").count(), 0);
    }

    #[test]
    fn errors_name_what_failed() {
        let idx = Index::parse("t", IDX).unwrap();
        let r = Resolver::new(&idx, "amd64");
        let e = r
            .resolve(&Request {
                packages: vec!["old".into()],
                exclude: vec![],
            })
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot satisfy `libc6 (>= 3)`, needed by old (1): `libc6` is at version 2.36-9"
        );
        let e = r
            .resolve(&Request {
                packages: vec!["apq".into()],
                exclude: vec![],
            })
            .unwrap_err();
        assert!(e.to_string().contains("did you mean `app`"), "{e}");
        let e = r
            .resolve(&Request {
                packages: vec!["mail-transport-agent".into()],
                exclude: vec![],
            })
            .unwrap_err();
        assert!(matches!(e, ResolveError::Virtual { .. }), "{e}");
    }
}
