//! Image configuration for BuildKit: what run steps inherit from their base
//! image, and the `containerimage.config` of the result.

use kiln_dag::{Definition, Op, Platform, SourceOp};
use serde_json::{Map, Value, json};

/// An image's configuration as OCI JSON (`{"architecture", "os", "config":
/// {"Env", "User", "WorkingDir", ...}, ...}`), as a registry or BuildKit's
/// `ResolveImageConfig` returns it. Unknown fields are kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BaseConfig(pub Value);

impl BaseConfig {
    /// Parses an image config blob.
    pub fn from_json(bytes: &[u8]) -> Result<BaseConfig, serde_json::Error> {
        serde_json::from_slice(bytes).map(BaseConfig)
    }

    /// kiln's static base: user 65532, `/home/nonroot`, `PATH` and
    /// `SSL_CERT_FILE`.
    pub fn static_base() -> BaseConfig {
        let config = serde_json::to_value(kiln_oci::static_base::config()).unwrap_or(Value::Null);
        BaseConfig(json!({ "config": config }))
    }

    fn config_field(&self, key: &str) -> Option<&Value> {
        self.0.get("config").and_then(|c| c.get(key))
    }

    pub fn env(&self) -> Vec<String> {
        self.config_field("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn user(&self) -> Option<String> {
        self.config_field("User")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    pub fn workdir(&self) -> Option<String> {
        self.config_field("WorkingDir")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

/// The image config of `def`'s result, as BuildKit's image exporter takes it
/// in the `containerimage.config` metadata: the base's config (the static
/// base's, `base` for an image, nothing for scratch) with kiln's settings
/// applied as `kiln build` applies them. The exporter fills in `rootfs` and
/// the history of the layers it writes.
pub fn image_config(def: &Definition, base: Option<&BaseConfig>, platform: &Platform) -> Value {
    let from = def.vertex(&def.config_from).map(|v| &v.op);
    let base = match (base, from) {
        (Some(b), _) => b.clone(),
        (None, Some(Op::Source(SourceOp::StaticBase { .. }))) => BaseConfig::static_base(),
        _ => BaseConfig::default(),
    };
    let mut img = match base.0 {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let p = def.platform.as_ref().unwrap_or(platform);
    img.entry("architecture")
        .or_insert_with(|| json!(p.architecture));
    img.entry("os").or_insert_with(|| json!(p.os));
    if let Some(v) = &p.variant {
        img.entry("variant").or_insert_with(|| json!(v));
    }
    img.entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let mut cfg = match img.remove("config") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let over = &def.config;

    let mut env: Vec<String> = cfg
        .get("Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in &over.env {
        let kv = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k.as_str()))
        {
            Some(slot) => *slot = kv,
            None => env.push(kv),
        }
    }
    if !env.is_empty() {
        cfg.insert("Env".into(), json!(env));
    }
    if let Some(w) = &over.workdir {
        cfg.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &over.user {
        cfg.insert("User".into(), json!(u));
    }
    if let Some(e) = &over.entrypoint {
        cfg.insert("Entrypoint".into(), json!(e));
    }
    if let Some(c) = &over.cmd {
        if c.is_empty() {
            cfg.remove("Cmd");
        } else {
            cfg.insert("Cmd".into(), json!(c));
        }
    }
    if !over.labels.is_empty() {
        let labels = cfg
            .entry("Labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if !labels.is_object() {
            *labels = Value::Object(Map::new());
        }
        if let Some(m) = labels.as_object_mut() {
            for (k, v) in &over.labels {
                m.insert(k.clone(), json!(v));
            }
        }
    }
    if !over.exposed_ports.is_empty() {
        let ports = cfg
            .entry("ExposedPorts")
            .or_insert_with(|| Value::Object(Map::new()));
        if !ports.is_object() {
            *ports = Value::Object(Map::new());
        }
        if let Some(m) = ports.as_object_mut() {
            for p in &over.exposed_ports {
                m.insert(p.clone(), json!({}));
            }
        }
    }
    if !over.volumes.is_empty() {
        let volumes = cfg
            .entry("Volumes")
            .or_insert_with(|| Value::Object(Map::new()));
        if !volumes.is_object() {
            *volumes = Value::Object(Map::new());
        }
        if let Some(m) = volumes.as_object_mut() {
            for v in &over.volumes {
                m.insert(v.clone(), json!({}));
            }
        }
    }
    if let Some(s) = &over.stop_signal {
        cfg.insert("StopSignal".into(), json!(s));
    }
    if let Some(h) = &over.healthcheck {
        cfg.insert("Healthcheck".into(), h.docker_json());
    }
    // a base's triggers are for the image built on it, not inherited
    cfg.remove("OnBuild");
    if !over.onbuild.is_empty() {
        cfg.insert("OnBuild".into(), json!(over.onbuild));
    }
    img.insert("config".into(), Value::Object(cfg));
    Value::Object(img)
}
