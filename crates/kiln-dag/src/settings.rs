//! Build-wide settings of `run` steps that `docker buildx build` takes as
//! flags (`--add-host`, `--ulimit`, `--shm-size`) and BuildKit keeps in
//! every exec op (`Meta.extraHosts`, `Meta.ulimit`, a tmpfs at `/dev/shm`),
//! so they are part of each step's digest and cache key. Parsed here, once,
//! for the CLI's flags and the gateway frontend's options alike.

use serde::{Deserialize, Serialize};

/// One `/etc/hosts` entry a step gets beside the sandbox's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIp {
    pub host: String,
    /// An IPv4 or IPv6 address, as the user wrote it (validated).
    pub ip: String,
}

/// A resource limit of a step's processes (setrlimit(2)); `-1` is
/// unlimited (`RLIM_INFINITY`), as in BuildKit's `pb.Ulimit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// docker's name: `nofile`, `nproc`, `core`, ... ([`ULIMIT_NAMES`])
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// The limits docker and BuildKit know by name (go-units' `ulimitNameMapping`),
/// each the `RLIMIT_*` resource of setrlimit(2) without the prefix.
pub const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// What every `run` step of a build gets from the command line (or the
/// gateway frontend's options). Empty by default: then nothing of it is
/// in any digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSettings {
    pub extra_hosts: Vec<HostIp>,
    pub ulimits: Vec<Ulimit>,
    /// Size of the step's `/dev/shm` in bytes; `None` keeps the sandbox's.
    pub shm_size: Option<u64>,
}

impl RunSettings {
    pub fn is_empty(&self) -> bool {
        self.extra_hosts.is_empty() && self.ulimits.is_empty() && self.shm_size.is_none()
    }
}

/// A flag value that is not what buildx takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("invalid host entry `{value}`: {reason}")]
    Host { value: String, reason: &'static str },
    #[error("invalid ulimit `{value}`: {reason}")]
    Ulimit { value: String, reason: String },
    #[error(
        "invalid size `{value}`: expected a number of bytes with an optional unit (b, k, m, g, t), e.g. `64m`"
    )]
    Size { value: String },
}

/// `--add-host HOST=IP` or `HOST:IP` (buildx takes both; `=` is looked
/// for first, so an IPv6 address needs it or brackets: `HOST=::1`,
/// `HOST:[::1]`).
pub fn parse_add_host(value: &str) -> Result<HostIp, SettingError> {
    let bad = |reason| SettingError::Host {
        value: value.to_string(),
        reason,
    };
    let (host, ip) = value
        .split_once('=')
        .or_else(|| value.split_once(':'))
        .ok_or_else(|| bad("expected `HOST=IP` or `HOST:IP`"))?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '#') {
        return Err(bad("the host name is empty or has a space or `#`"));
    }
    if ip == "host-gateway" {
        return Err(bad(
            "`host-gateway` is not supported: a `run` step shares the host's network unless it says otherwise, so the host is `127.0.0.1`",
        ));
    }
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad("not an IPv4 or IPv6 address"));
    }
    Ok(HostIp {
        host: host.to_string(),
        ip: ip.to_string(),
    })
}

/// `--ulimit NAME=SOFT[:HARD]` (docker's syntax; HARD defaults to SOFT,
/// `-1` is unlimited).
pub fn parse_ulimit(value: &str) -> Result<Ulimit, SettingError> {
    let bad = |reason: String| SettingError::Ulimit {
        value: value.to_string(),
        reason,
    };
    let (name, limits) = value
        .split_once('=')
        .ok_or_else(|| bad("expected `NAME=SOFT[:HARD]`, e.g. `nofile=1024:2048`".into()))?;
    if !ULIMIT_NAMES.contains(&name) {
        return Err(bad(format!(
            "unknown limit `{name}`; the limits are {}",
            ULIMIT_NAMES.join(", ")
        )));
    }
    let num = |s: &str| {
        s.parse::<i64>()
            .ok()
            .filter(|n| *n >= -1)
            .ok_or_else(|| bad(format!("`{s}` is not a number (or -1 for unlimited)")))
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => {
            let n = num(limits)?;
            (n, n)
        }
    };
    // -1 is RLIM_INFINITY, above every number
    let above = |n: i64| if n == -1 { u64::MAX } else { n as u64 };
    if above(soft) > above(hard) {
        return Err(bad(format!(
            "the soft limit {soft} is above the hard limit {hard}"
        )));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// `--shm-size` (and a tmpfs mount's `size=`) as docker reads it (go-units' `RAMInBytes`): a number with
/// an optional binary unit `b`, `k`, `m`, `g`, `t`, `p`, any case, an
/// optional `b`/`ib` after it (`64m`, `1GB`, `512KiB`).
pub fn parse_size(value: &str) -> Result<u64, SettingError> {
    let bad = || SettingError::Size {
        value: value.to_string(),
    };
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(&unit);
    let mul: u64 = match unit {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(bad()),
    };
    let bytes = num * mul as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_host_takes_both_separators_and_ipv6() {
        assert_eq!(
            parse_add_host("db:10.0.0.5").unwrap(),
            HostIp {
                host: "db".into(),
                ip: "10.0.0.5".into()
            }
        );
        assert_eq!(parse_add_host("db=10.0.0.5").unwrap().ip, "10.0.0.5");
        assert_eq!(parse_add_host("v6=::1").unwrap().ip, "::1");
        assert_eq!(parse_add_host("v6:[::1]").unwrap().ip, "::1");
        assert!(parse_add_host("db").is_err());
        assert!(parse_add_host("db:notanip").is_err());
        assert!(parse_add_host(":1.2.3.4").is_err());
        assert!(parse_add_host("db:host-gateway").is_err());
    }

    #[test]
    fn ulimit_reads_docker_syntax() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048").unwrap(),
            Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }
        );
        let one = parse_ulimit("core=0").unwrap();
        assert_eq!((one.soft, one.hard), (0, 0));
        assert_eq!(parse_ulimit("stack=8192:-1").unwrap().hard, -1);
        assert!(parse_ulimit("nofile=2048:1024").is_err());
        assert!(parse_ulimit("files=1").is_err());
        assert!(parse_ulimit("nofile=x").is_err());
        assert!(parse_ulimit("nofile").is_err());
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("").is_err());
        assert_eq!(parse_size("0").unwrap(), 0);
        assert!(parse_size("12x").is_err());
        assert!(parse_size("-1m").is_err());
    }
}
