//! The `/etc/hosts` of a step with extra hosts (docker's `--add-host`,
//! BuildKit's `Meta.extraHosts`): written into the sandbox's state
//! directory and bound read-only on `/etc/hosts` by the init, as the
//! isolated network's files are. BuildKit writes such a file too
//! (`executor/oci/hosts.go`): the usual localhost lines, then one
//! `IP\tHOST` line per entry.

use std::io;
use std::path::{Path, PathBuf};

use crate::spec::Network;

const LOCALHOST: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Writes `hosts` under `state` and returns its path. What the step would
/// otherwise see comes first: on the host network the host's own
/// `/etc/hosts`, on the isolated network the file `slirp::write_etc` made
/// there, else the localhost lines.
pub(crate) fn write(
    state: &Path,
    network: Network,
    extra: &[(String, String)],
) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut text = match network {
        Network::Host => std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| LOCALHOST.into()),
        Network::Isolated => {
            std::fs::read_to_string(state.join("hosts")).unwrap_or_else(|_| LOCALHOST.into())
        }
        Network::None => LOCALHOST.into(),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for (host, ip) in extra {
        text.push_str(&format!("{ip}\t{host}\n"));
    }
    let p = state.join("hosts");
    std::fs::write(&p, text)?;
    // readable by the step's user whatever our umask
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
    Ok(p)
}
