//! Subordinate ID ranges (/etc/subuid, /etc/subgid, see subuid(5)) and the
//! choice of a user namespace mapping.

use kiln_layer::{IdMapping, IdRange};

/// A subordinate range of a user: host IDs `start..start+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// The first range in a subuid(5)/subgid(5) file that belongs to the user
/// named `name` or numbered `id`. Malformed lines are ignored, as shadow's
/// own tools do.
pub fn find_range(text: &str, name: &str, id: u32) -> Option<SubRange> {
    let id = id.to_string();
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        let (who, start, count) = (parts.next()?, parts.next()?, parts.next()?);
        if who != name && who != id {
            return None;
        }
        let r = SubRange {
            start: start.trim().parse().ok()?,
            count: count.trim().parse().ok()?,
        };
        (r.count > 0).then_some(r)
    })
}

/// Where real root's sandboxes live when root has no /etc/subuid entry:
/// 65536 IDs at 2^31, above every range `useradd` hands out (podman's
/// `--userns=auto` takes its ranges the same way, from a fixed pool).
pub const ROOT_FALLBACK_START: u32 = 1 << 31;
/// The size of that range: the 16-bit IDs images use (65534 is `nobody`).
pub const ROOT_FALLBACK_COUNT: u32 = 65536;

/// How the sandbox's user namespace is mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapPlan {
    /// Real root: the sandbox's IDs `0..count` are the unprivileged host
    /// range `start..start+count` (root's own /etc/subuid entry, else
    /// [`ROOT_FALLBACK_START`]), written straight to /proc/PID/{uid,gid}_map.
    /// The store keeps its files as container IDs (as real root writes
    /// them): the sandbox sees its layers and writes its upper through
    /// idmapped mounts (mount_setattr(2) `MOUNT_ATTR_IDMAP`) made with this
    /// namespace, so on-disk ownership and layer digests do not change.
    Root {
        uids: SubRange,
        gids: SubRange,
        /// the range is root's /etc/subuid and /etc/subgid entry
        from_subid: bool,
    },
    /// Container root is the calling user, container IDs 1.. are the
    /// subordinate ranges, written by the set-ID helpers newuidmap and
    /// newgidmap.
    Subordinate {
        uid: u32,
        gid: u32,
        uids: SubRange,
        gids: SubRange,
    },
    /// Only container root (the calling user) exists; chown to other IDs
    /// fails inside the sandbox.
    Single { uid: u32, gid: u32 },
}

impl MapPlan {
    /// The mapping as container-to-host ranges.
    pub fn mapping(&self) -> IdMapping {
        let one = |c, h| IdRange {
            container: c,
            host: h,
            size: 1,
        };
        match *self {
            MapPlan::Root { uids, gids, .. } => IdMapping {
                uids: vec![IdRange {
                    container: 0,
                    host: uids.start,
                    size: uids.count,
                }],
                gids: vec![IdRange {
                    container: 0,
                    host: gids.start,
                    size: gids.count,
                }],
            },
            MapPlan::Single { uid, gid } => IdMapping {
                uids: vec![one(0, uid)],
                gids: vec![one(0, gid)],
            },
            MapPlan::Subordinate {
                uid,
                gid,
                uids,
                gids,
            } => IdMapping {
                uids: vec![
                    one(0, uid),
                    IdRange {
                        container: 1,
                        host: uids.start,
                        size: uids.count,
                    },
                ],
                gids: vec![
                    one(0, gid),
                    IdRange {
                        container: 1,
                        host: gids.start,
                        size: gids.count,
                    },
                ],
            },
        }
    }

    /// How files in the store and in an upper directory are owned: the
    /// container IDs themselves for real root (idmapped mounts translate),
    /// else the namespace's host IDs.
    pub fn disk_mapping(&self) -> IdMapping {
        match self {
            MapPlan::Root { .. } => IdMapping::identity(),
            _ => self.mapping(),
        }
    }

    /// Real root, whose store holds container IDs as they are: layers are
    /// applied, written and chowned in-process, no namespace needed.
    pub fn is_root(&self) -> bool {
        matches!(self, MapPlan::Root { .. })
    }

    /// One line for `kiln info` and logs.
    pub fn describe(&self) -> String {
        match self {
            MapPlan::Root {
                uids,
                gids,
                from_subid,
            } => format!(
                "root mapped to an unprivileged range ({}): container uid 0-{} = {}-{}, gid 0-{} = {}-{}",
                if *from_subid {
                    "root's entry in `/etc/subuid` and `/etc/subgid`"
                } else {
                    "fixed range, root has no `/etc/subuid` entry"
                },
                uids.count - 1,
                uids.start,
                uids.start as u64 + uids.count as u64 - 1,
                gids.count - 1,
                gids.start,
                gids.start as u64 + gids.count as u64 - 1
            ),
            MapPlan::Subordinate {
                uid,
                gid,
                uids,
                gids,
            } => format!(
                "subordinate: container uid 0 = {uid}, 1-{} = {}-{}; gid 0 = {gid}, 1-{} = {}-{}",
                uids.count,
                uids.start,
                uids.start as u64 + uids.count as u64 - 1,
                gids.count,
                gids.start,
                gids.start as u64 + gids.count as u64 - 1
            ),
            MapPlan::Single { uid, gid } => format!("single id: container 0 is {uid}:{gid}"),
        }
    }
}

/// The warning for the single-ID fallback: what to configure, concretely.
pub fn single_id_warning(user: &str) -> String {
    format!(
        "no subordinate ID range for user `{user}` in `/etc/subuid` and `/etc/subgid`: \
         build steps run with a single ID and cannot chown to other users; \
         add one with `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}` \
         (or lines `{user}:100000:65536` in both files) and make sure `newuidmap` and \
         `newgidmap` (package uidmap) are installed"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBUID: &str = "\
# comment lines and junk are skipped
alice:100000:65536
bob:bad:10
1003:300000:65536
carol:400000:0
bob:200000:65536
";

    #[test]
    fn ranges_by_name_or_id() {
        let cases = [
            ("alice", 1001, Some((100000, 65536))),
            ("bob", 1002, Some((200000, 65536))),
            ("dave", 1003, Some((300000, 65536))),
            ("carol", 1004, None),
            ("nobody", 65534, None),
        ];
        for (name, id, want) in cases {
            let got = find_range(SUBUID, name, id).map(|r| (r.start, r.count));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn plans_map_as_expected() {
        let p = MapPlan::Subordinate {
            uid: 1001,
            gid: 1001,
            uids: SubRange {
                start: 100000,
                count: 65536,
            },
            gids: SubRange {
                start: 100000,
                count: 65536,
            },
        };
        let m = p.mapping();
        assert_eq!(m.uid_to_host(0), Some(1001));
        assert_eq!(m.uid_to_host(65532), Some(165531));
        assert_eq!(m.gid_to_container(100999), Some(1000));
        let s = MapPlan::Single {
            uid: 1002,
            gid: 100,
        }
        .mapping();
        assert_eq!(s.uid_to_host(0), Some(1002));
        assert_eq!(s.uid_to_host(1), None);
        assert!(single_id_warning("kilnnosub").contains("kilnnosub:100000:65536"));
    }
}
