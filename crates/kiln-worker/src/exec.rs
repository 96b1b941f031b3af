//! `run` steps: a sandbox over the chain's layer directories (overlay
//! lowers), the step's mounts, and its upper directory kept as a new layer.

use std::sync::atomic::AtomicBool;

use kiln_dag::{Digest, ExecOp, Network};
use kiln_oci::oci_spec::image::ImageConfiguration;
use kiln_solver::{StepContext, Stream};

use crate::snapshot::{self, Ref};
use crate::{Error, Inner, mounts};

impl Inner {
    fn base_config(&self, r: &Ref) -> Result<Option<ImageConfiguration>, Error> {
        let Some(c) = &r.config else { return Ok(None) };
        let d = kiln_oci::Digest::parse(c).map_err(|e| Error::Internal(crate::chain(&e)))?;
        let bytes = self
            .store
            .read_blob(&d)
            .map_err(|e| Error::Store(crate::chain(&e)))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Store(format!("image config {c}: {e}")))
    }

    pub(crate) fn exec(
        &self,
        op: &ExecOp,
        key: &Digest,
        inputs: &[Ref],
        cx: &StepContext,
        cancel: &AtomicBool,
    ) -> Result<Ref, Error> {
        let command = match op.args.as_slice() {
            [sh, c, cmd] if sh == "/bin/sh" && c == "-c" => cmd.clone(),
            args => args.join(" "),
        };
        let root = inputs
            .first()
            .ok_or_else(|| Error::Internal("exec without a root input".into()))?;
        let cfg_ref = op.config_from.and_then(|i| inputs.get(i)).unwrap_or(root);
        let cfg = self
            .base_config(cfg_ref)?
            .and_then(|c| c.config().clone())
            .unwrap_or_default();
        let mut env: Vec<String> = cfg.env().clone().unwrap_or_default();
        for (k, v) in &op.env {
            set_env(&mut env, k, v);
        }
        // The chain's layer directories are the overlay lowers as they are:
        // nothing is merged or copied for a step.
        let lowers = self.snaps.lowers(root)?;
        // Before the upper exists: a missing secret leaves nothing behind.
        let mut on_wait = |m: &str| cx.log(Stream::Stderr, m.as_bytes());
        let mounted = mounts::prepare(
            &self.store,
            &op.mounts,
            inputs,
            &self.opts.secrets,
            &self.opts.ssh,
            self.import.get().map(|i| i.as_ref()),
            cancel,
            &mut on_wait,
        )
        .map_err(|error| Error::Mount {
            command: command.clone(),
            error: Box::new(error),
        })?;
        let upper = snapshot::temp_dir(&self.store, "exec")?;
        let mut spec = kiln_runtime::SandboxSpec::new(&upper, op.args.clone());
        spec.lowers = lowers;
        spec.env = env;
        spec.mounts = mounted.mounts.clone();
        for (k, v) in &mounted.env {
            set_env(&mut spec.env, k, v);
        }
        spec.cwd = op
            .cwd
            .clone()
            .or_else(|| cfg.working_dir().clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        spec.user = op
            .user
            .clone()
            .or_else(|| cfg.user().clone().filter(|u| !u.is_empty()));
        spec.network = match op.network {
            Network::Host => kiln_runtime::Network::Host,
            Network::None => kiln_runtime::Network::None,
            Network::Isolated => kiln_runtime::Network::Isolated,
        };
        spec.timeout = self.opts.step_timeout;
        spec.pids_limit = op.pids_limit;
        spec.extra_hosts = (op.extra_hosts.iter())
            .map(|h| (h.host.clone(), h.ip.clone()))
            .collect();
        spec.rlimits = (op.ulimits.iter())
            .map(|u| kiln_runtime::Rlimit {
                name: u.name.clone(),
                soft: u.soft,
                hard: u.hard,
            })
            .collect();
        let runtime = kiln_runtime::Runtime::new(&self.opts.helper);
        let mut tail: Vec<u8> = Vec::new();
        let r = runtime.run(
            &spec,
            &mut |s: kiln_runtime::Stream, data: &[u8]| {
                cx.log(
                    match s {
                        kiln_runtime::Stream::Stdout => Stream::Stdout,
                        kiln_runtime::Stream::Stderr => Stream::Stderr,
                    },
                    data,
                );
                tail.extend_from_slice(data);
                if tail.len() > 256 * 1024 {
                    tail.drain(..tail.len() - 128 * 1024);
                }
            },
            Some(cancel),
        );
        let cleanup = || snapshot::remove_tree(&upper, Some(&self.opts.helper));
        let outcome = match r {
            Ok(o) => o,
            Err(e) => {
                cleanup();
                return Err(Error::Sandbox {
                    command,
                    reason: e.to_string(),
                });
            }
        };
        if outcome.cancelled {
            cleanup();
            return Err(Error::Cancelled);
        }
        if !outcome.success() {
            cleanup();
            let status = if outcome.timed_out {
                "a timeout".to_string()
            } else {
                match outcome.status {
                    kiln_runtime::ExitStatus::Code(c) => format!("exit code {c}"),
                    kiln_runtime::ExitStatus::Signal(s) => format!("signal {s}"),
                }
            };
            return Err(Error::ExecFailed {
                command,
                status,
                tail: last_lines(&tail, 30),
            });
        }
        // The upper becomes a directory layer as it is: no tar, no
        // compression, no digest until an image that contains it is
        // assembled (commit::commit_layer), with these options.
        let tar = snapshot::TarSpec {
            overlay_whiteouts: true,
            xattrs: true,
            epoch: self.opts.epoch.max(0) as u64,
        };
        let layer = self.snaps.add_dir_layer(&upper, key.as_bytes(), tar);
        if layer.is_err() {
            cleanup();
        }
        let mut out = root.clone();
        out.layers.push(layer?);
        Ok(out)
    }
}

pub(crate) fn set_env(env: &mut Vec<String>, k: &str, v: &str) {
    let kv = format!("{k}={v}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(n, _)| n) == Some(k))
    {
        Some(e) => *e = kv,
        None => env.push(kv),
    }
}

/// The last `n` lines of `out`, each prefixed for readability.
fn last_lines(out: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(out);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
