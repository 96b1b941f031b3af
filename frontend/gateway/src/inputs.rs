//! The other inputs BuildKit passes a frontend besides the Kilnfile:
//! named contexts (`context:NAME=...`, what `buildx build --build-context`
//! sends), `no-cache`, `cache-imports`, and the run steps' `add-hosts`,
//! `ulimit` and `shm-size` (`--add-host`, `--ulimit`, `--shm-size`).
//!
//! A named context replaces an `image(..)` whose reference is NAME (as
//! written, or normalized: `debian:bookworm` also names
//! `docker.io/library/debian:bookworm`) with another image
//! (`docker-image://REF`) or a directory of the client (`local:NAME`, which
//! buildx serves as a local of that name). The replacement happens on
//! kiln's graph, before LLB is emitted, so every step on that image builds
//! on the replacement.

use std::collections::BTreeMap;

use kiln_dag::{Definition, Op, RunSettings, SourceOp, settings};
use kiln_types::Reference;

use crate::{GatewayError, pb};

/// What a named context points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    Image(String),
    Local(String),
}

fn normalized(reference: &str) -> Option<String> {
    Reference::parse(reference)
        .ok()
        .map(|r| r.normalized().to_string())
}

/// The `context:NAME` options, by normalized NAME (or NAME as given when it
/// is no image reference).
pub fn named_contexts(
    opts: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, NamedContext>, GatewayError> {
    let mut out = BTreeMap::new();
    for (k, v) in opts {
        let Some(name) = k.strip_prefix("context:") else {
            continue;
        };
        let ctx = if let Some(r) = v.strip_prefix("docker-image://") {
            NamedContext::Image(r.to_string())
        } else if let Some(l) = v.strip_prefix("local:") {
            NamedContext::Local(l.to_string())
        } else {
            return Err(GatewayError::Option {
                key: k.clone(),
                value: v.clone(),
                reason: "kiln takes `docker-image://REF` or `local:NAME` contexts".into(),
            });
        };
        out.insert(normalized(name).unwrap_or_else(|| name.to_string()), ctx);
    }
    Ok(out)
}

/// `add-hosts` (`HOST=IP,...`), `ulimit` (`NAME=SOFT:HARD,...`) and
/// `shm-size` (bytes), as buildx sends its `--add-host`, `--ulimit` and
/// `--shm-size` to BuildKit's Dockerfile frontend.
pub fn run_settings(opts: &BTreeMap<String, String>) -> Result<RunSettings, GatewayError> {
    let mut out = RunSettings::default();
    let list = |v: &str| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let err = |key| move |source| GatewayError::RunSetting { key, source };
    if let Some(v) = opts.get("add-hosts") {
        for h in list(v) {
            out.extra_hosts
                .push(settings::parse_add_host(&h).map_err(err("add-hosts"))?);
        }
    }
    if let Some(v) = opts.get("ulimit") {
        for u in list(v) {
            out.ulimits
                .push(settings::parse_ulimit(&u).map_err(err("ulimit"))?);
        }
    }
    if let Some(v) = opts.get("shm-size").filter(|v| !v.is_empty()) {
        let n = settings::parse_size(v).map_err(err("shm-size"))?;
        out.shm_size = (n > 0).then_some(n);
    }
    Ok(out)
}

/// `def` with every image named by a context replaced by it. Vertex digests
/// stay as they are (they only key kiln's maps here); what BuildKit digests
/// is the emitted LLB.
pub fn apply_contexts(def: &mut Definition, contexts: &BTreeMap<String, NamedContext>) {
    if contexts.is_empty() {
        return;
    }
    for v in &mut def.vertices {
        let Op::Source(SourceOp::Image {
            reference,
            platform,
        }) = &v.op
        else {
            continue;
        };
        let key = normalized(reference).unwrap_or_else(|| reference.clone());
        let Some(ctx) = contexts.get(&key).or_else(|| contexts.get(reference)) else {
            continue;
        };
        tracing::info!("image `{reference}` comes from the named context `{key}`");
        v.op = match ctx {
            NamedContext::Image(r) => Op::Source(SourceOp::Image {
                reference: normalized(r).unwrap_or_else(|| r.clone()),
                platform: platform.clone(),
            }),
            NamedContext::Local(name) => Op::Source(SourceOp::Context {
                name: name.clone(),
                include: Vec::new(),
                exclude: Vec::new(),
            }),
        };
    }
}

/// `no-cache`: empty for every step, else a comma-separated list of
/// bindings whose steps (progress names `NAME: ...`) run again.
pub fn apply_no_cache(opts: &BTreeMap<String, String>, llb: &mut pb::Definition) {
    let Some(list) = opts.get("no-cache") else {
        return;
    };
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for md in llb.metadata.values_mut() {
        let name = md
            .description
            .get("llb.customname")
            .map(String::as_str)
            .unwrap_or_default();
        if names.is_empty()
            || names
                .iter()
                .any(|n| name.strip_prefix(n).is_some_and(|r| r.starts_with(": ")))
        {
            md.ignore_cache = true;
        }
    }
}

/// `cache-imports`: the JSON list of `{"Type": .., "Attrs": {..}}` that
/// `--cache-from` becomes, passed on with the build's solve.
pub fn cache_imports(
    opts: &BTreeMap<String, String>,
) -> Result<Vec<pb::CacheOptionsEntry>, GatewayError> {
    let Some(v) = opts.get("cache-imports").filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let bad = |reason: String| GatewayError::Option {
        key: "cache-imports".into(),
        value: v.clone(),
        reason,
    };
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(v).map_err(|e| bad(e.to_string()))?;
    entries
        .iter()
        .map(|e| {
            let r#type = e["Type"]
                .as_str()
                .ok_or_else(|| bad("an entry without a `Type`".into()))?
                .to_string();
            let attrs = e["Attrs"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            Ok(pb::CacheOptionsEntry { r#type, attrs })
        })
        .collect()
}
