//! User resolution through the root filesystem's own /etc/passwd and
//! /etc/group (passwd(5), group(5)), the way `docker run --user` resolves.

/// A user as the step runs: IDs inside the container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// supplementary groups from /etc/group
    pub groups: Vec<u32>,
    /// home directory from /etc/passwd (`/` when unknown)
    pub home: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error(
        "user `{user}` is not in the image's /etc/passwd; use a numeric uid or add the user in an earlier step"
    )]
    UnknownUser { user: String },
    #[error(
        "group `{group}` is not in the image's /etc/group; use a numeric gid or add the group in an earlier step"
    )]
    UnknownGroup { group: String },
    #[error("empty user name in `{spec}`: expected NAME, UID, NAME:GROUP or UID:GID")]
    Empty { spec: String },
    #[error(
        "user `{spec}` resolves to id 4294967295, which setuid(2) and setgid(2) take as \"leave unchanged\" (the step would stay root); use another id"
    )]
    Unchangeable { spec: String },
}

struct PwEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PwEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PwEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

struct GrEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GrEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(GrEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolves `spec` (`NAME`, `UID`, `NAME:GROUP`, `UID:GID`, mixed) against
/// the contents of the image's /etc/passwd and /etc/group (empty when the
/// image has none). A numeric uid need not exist; its gid is then 0.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, UserError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(UserError::Empty {
            spec: spec.to_string(),
        });
    }
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == user)
                .ok_or_else(|| UserError::UnknownUser {
                    user: user.to_string(),
                })?,
        ),
    };
    let uid = match (&entry, user.parse::<u32>()) {
        (_, Ok(uid)) => uid,
        (Some(e), _) => e.uid,
        (None, Err(_)) => unreachable!("a name without entry returned above"),
    };
    let name = entry.as_ref().map(|e| e.name);
    let home = entry
        .as_ref()
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
        .to_string();
    let gid = match grp {
        Some(g) if !g.is_empty() => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::UnknownGroup {
                    group: g.to_string(),
                })?,
        },
        _ => entry.as_ref().map(|e| e.gid).unwrap_or(0),
    };
    // supplementary groups only when the group was not forced, as docker does
    let mut groups: Vec<u32> = match (grp, name) {
        (None, Some(n)) => group_entries(group)
            .filter(|e| e.members.contains(&n))
            .map(|e| e.gid)
            .collect(),
        _ => Vec::new(),
    };
    groups.sort_unstable();
    groups.dedup();
    // (uid_t)-1 is "no change" to setresuid(2): whatever the Kilnfile, the
    // image config or its /etc/passwd said, the step would run as root
    if uid == u32::MAX || gid == u32::MAX || groups.contains(&u32::MAX) {
        return Err(UserError::Unchangeable {
            spec: spec.to_string(),
        });
    }
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_one_is_never_an_id() {
        let passwd = "ghost:x:4294967295:0::/:/bin/sh\nok:x:5:4294967295::/:/bin/sh\n";
        for spec in ["4294967295", "0:4294967295", "ghost", "ok", "5:4294967295"] {
            assert!(
                matches!(
                    resolve(spec, passwd, ""),
                    Err(UserError::Unchangeable { .. })
                ),
                "{spec}"
            );
        }
        assert_eq!(resolve("5:6", passwd, "").unwrap().uid, 5);
    }

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
dev:x:1000:1000::/home/dev:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:dev,other
docker:x:999:dev
nonroot:x:65532:
dev:x:1000:
";

    fn u(uid: u32, gid: u32, groups: &[u32], home: &str) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            groups: groups.to_vec(),
            home: home.into(),
        }
    }

    #[test]
    fn resolutions() {
        let cases: Vec<(&str, Result<ResolvedUser, UserError>)> = vec![
            ("root", Ok(u(0, 0, &[], "/root"))),
            ("nonroot", Ok(u(65532, 65532, &[], "/home/nonroot"))),
            ("dev", Ok(u(1000, 1000, &[10, 999], "/home/dev"))),
            ("1000", Ok(u(1000, 1000, &[10, 999], "/home/dev"))),
            ("4242", Ok(u(4242, 0, &[], "/"))),
            ("4242:7", Ok(u(4242, 7, &[], "/"))),
            ("dev:docker", Ok(u(1000, 999, &[], "/home/dev"))),
            ("65532:65532", Ok(u(65532, 65532, &[], "/home/nonroot"))),
            (
                "ghost",
                Err(UserError::UnknownUser {
                    user: "ghost".into(),
                }),
            ),
            (
                "dev:ghosts",
                Err(UserError::UnknownGroup {
                    group: "ghosts".into(),
                }),
            ),
            (":0", Err(UserError::Empty { spec: ":0".into() })),
        ];
        for (spec, want) in cases {
            assert_eq!(resolve(spec, PASSWD, GROUP), want, "{spec}");
        }
    }

    #[test]
    fn no_passwd_file_numeric_only() {
        assert_eq!(resolve("0", "", ""), Ok(u(0, 0, &[], "/")));
        assert!(resolve("root", "", "").is_err());
    }
}
