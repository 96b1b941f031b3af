//! ID mappings between a user namespace (container IDs) and its parent (host
//! IDs), in the format of /proc/PID/uid_map: `container host count` lines.

use std::fmt;

/// One contiguous range: container IDs `container..container+size` are host
/// IDs `host..host+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// The uid and gid mappings of a user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdMapping {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdRangeError {
    #[error("line {line} of the id map: expected `CONTAINER HOST COUNT`, found `{text}`")]
    Syntax { line: usize, text: String },
}

impl IdRange {
    fn to_host(self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.container)?;
        (off < self.size).then(|| self.host + off)
    }
    fn to_container(self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.host)?;
        (off < self.size).then(|| self.container + off)
    }

    /// Parses the /proc/PID/uid_map format (whitespace separated triples, one
    /// per line).
    pub fn parse_map(text: &str) -> Result<Vec<IdRange>, IdRangeError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            let nums: Vec<Option<u32>> = t.split_whitespace().map(|s| s.parse().ok()).collect();
            match nums.as_slice() {
                [Some(c), Some(h), Some(n)] => out.push(IdRange {
                    container: *c,
                    host: *h,
                    size: *n,
                }),
                _ => {
                    return Err(IdRangeError::Syntax {
                        line: i + 1,
                        text: t.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.container, self.host, self.size)
    }
}

impl IdMapping {
    /// The identity mapping of every ID (what real root uses).
    pub fn identity() -> Self {
        let r = IdRange {
            container: 0,
            host: 0,
            size: u32::MAX,
        };
        IdMapping {
            uids: vec![r],
            gids: vec![r],
        }
    }

    pub fn is_identity(&self) -> bool {
        *self == Self::identity()
    }

    pub fn uid_to_host(&self, id: u32) -> Option<u32> {
        self.uids.iter().find_map(|r| r.to_host(id))
    }
    pub fn gid_to_host(&self, id: u32) -> Option<u32> {
        self.gids.iter().find_map(|r| r.to_host(id))
    }
    pub fn uid_to_container(&self, id: u32) -> Option<u32> {
        self.uids.iter().find_map(|r| r.to_container(id))
    }
    pub fn gid_to_container(&self, id: u32) -> Option<u32> {
        self.gids.iter().find_map(|r| r.to_container(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_translate() {
        let m = IdRange::parse_map("         0       1001          1\n  1 100000 65536\n").unwrap();
        let map = IdMapping {
            uids: m.clone(),
            gids: m,
        };
        assert_eq!(map.uid_to_host(0), Some(1001));
        assert_eq!(map.uid_to_host(1), Some(100000));
        assert_eq!(map.uid_to_host(1000), Some(100999));
        assert_eq!(map.uid_to_host(65532), Some(165531));
        assert_eq!(map.uid_to_host(65536), Some(165535));
        assert_eq!(map.uid_to_host(65537), None);
        assert_eq!(map.uid_to_container(1001), Some(0));
        assert_eq!(map.uid_to_container(165531), Some(65532));
        assert_eq!(map.uid_to_container(0), None);
        assert_eq!(map.gid_to_container(99999), None);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = IdRange::parse_map("0 0 1\n0 x 1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2 of the id map: expected `CONTAINER HOST COUNT`, found `0 x 1`"
        );
        assert!(IdRange::parse_map("1 2\n").is_err());
    }

    #[test]
    fn identity_maps_everything() {
        let m = IdMapping::identity();
        assert!(m.is_identity());
        assert_eq!(m.uid_to_host(4_000_000_000), Some(4_000_000_000));
        assert_eq!(m.gid_to_container(12), Some(12));
    }
}
