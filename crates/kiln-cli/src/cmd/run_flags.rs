//! buildx's flags that change what a `run` step sees: `--ssh`,
//! `--add-host`, `--shm-size`, `--ulimit`. The last three go into every
//! exec op (and so its cache key), as BuildKit's Dockerfile frontend puts
//! them there; `--ssh` gives the agents the steps' `ssh()` mounts
//! (`RUN --mount=type=ssh`) forward, checked against the graph before
//! anything runs.

use kiln_dag::{Definition, MountKind, Op, RunSettings, settings};
use kiln_worker::ssh::SshAgents;

use super::build::BuildFailure;

/// The flags (flattened into `kiln build`'s buildx flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunFlags {
    /// Forward an SSH agent to `run` steps that mount it (`ssh()` in a
    /// Kilnfile, `RUN --mount=type=ssh` in a Dockerfile): `default` or
    /// `ID` is the agent of `$SSH_AUTH_SOCK`, `ID=SOCKET[,SOCKET]` the one
    /// listening there (the first that accepts). The socket is relayed into
    /// the step, never stored; only the id is in the step's cache key.
    /// Repeatable
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET]")]
    pub ssh: Vec<String>,

    /// Add a line to every `run` step's `/etc/hosts` (`HOST:IP` or
    /// `HOST=IP`; repeatable). Part of each step's cache key
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,

    /// Size of every `run` step's `/dev/shm` (`64m`, `1g`; kiln's default
    /// is 64 MiB). Part of each step's cache key
    #[arg(long = "shm-size", value_name = "BYTES")]
    pub shm_size: Option<String>,

    /// A resource limit of every `run` step's processes,
    /// `NAME=SOFT[:HARD]` (`nofile=1024:2048`; -1 is unlimited; the hard
    /// limit cannot exceed kiln's own). Repeatable. Part of each step's
    /// cache key
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
}

impl RunFlags {
    /// `--add-host`, `--ulimit`, `--shm-size`, checked before the build.
    pub fn settings(&self) -> miette::Result<RunSettings> {
        let bad = |flag: &str, e: settings::SettingError, help: &str| {
            miette::miette!(help = help.to_string(), "`{flag}`: {e}")
        };
        let mut s = RunSettings::default();
        for h in &self.add_hosts {
            s.extra_hosts.push(settings::parse_add_host(h).map_err(|e| {
                bad(
                    "--add-host",
                    e,
                    "write `--add-host HOST:IP`, e.g. `db:10.0.0.5`",
                )
            })?);
        }
        for u in &self.ulimits {
            s.ulimits.push(settings::parse_ulimit(u).map_err(|e| {
                bad(
                    "--ulimit",
                    e,
                    "write `--ulimit NAME=SOFT[:HARD]`, e.g. `nofile=1024:2048`",
                )
            })?);
        }
        if let Some(v) = &self.shm_size {
            let n = settings::parse_size(v)
                .map_err(|e| bad("--shm-size", e, "write e.g. `--shm-size 256m`"))?;
            // docker's 0: the default size
            s.shm_size = (n > 0).then_some(n);
        }
        Ok(s)
    }

    /// The `--ssh` agents; every socket named must exist.
    pub fn agents(&self) -> miette::Result<SshAgents> {
        SshAgents::from_flags(&self.ssh).map_err(|e| {
            miette::miette!(
                help = "`--ssh default` forwards the agent of `$SSH_AUTH_SOCK`; `--ssh ID=SOCKET` another one",
                "{e}"
            )
        })
    }
}

/// The first step of `defs` whose required ssh mount has no `--ssh`, as
/// an error at its build-file line.
pub fn missing_agent(
    defs: &[Definition],
    agents: &SshAgents,
    file: &str,
    text: &str,
) -> Option<BuildFailure> {
    for d in defs {
        for v in &d.vertices {
            let Op::Exec(x) = &v.op else { continue };
            for m in &x.mounts {
                let MountKind::Ssh { id, required, .. } = &m.kind else {
                    continue;
                };
                if !*required || agents.contains(id) {
                    continue;
                }
                let flag = if id == "default" {
                    "--ssh default".to_string()
                } else {
                    format!("--ssh {id}")
                };
                return Some(
                    BuildFailure::new(
                        file,
                        text,
                        format!("the step needs the SSH agent `{id}`, which was not given"),
                    )
                    .label(v.meta.location.as_ref(), "mounts the agent")
                    .help(format!(
                        "pass `{flag}` (the agent of `$SSH_AUTH_SOCK`; `ssh-add -l` lists its keys) or `{flag}=SOCKET`"
                    )),
                );
            }
        }
    }
    None
}
