//! The final image: the base image's config with the definition's on top,
//! and the chain's layers committed to blobs.

use kiln_dag::Definition;
use kiln_oci::oci_spec::image::{Config, ImageConfiguration};
use kiln_oci::{Image, NewImage, Store};

use crate::commit::commit;
use crate::exec::set_env;
use crate::snapshot::{self, Ref};

/// Failures while assembling the final image.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("cannot read the base image config: {0}")]
    Config(String),
    #[error("cannot write the image: {0}")]
    Commit(String),
    #[error("cannot commit the image's layers: {0}")]
    Layers(#[source] snapshot::SnapshotError),
}

/// The final image: the base image's config (from the chain's source) with
/// the definition's config on top, and the chain's layers.
pub fn assemble(
    store: &Store,
    def: &Definition,
    r: &Ref,
    epoch: i64,
) -> Result<Image, AssembleError> {
    let mut img = NewImage::scratch(epoch);
    let mut config = Config::default();
    if let Some(c) = &r.config {
        let d = kiln_oci::Digest::parse(c).map_err(|e| AssembleError::Config(crate::chain(&e)))?;
        let bytes = store
            .read_blob(&d)
            .map_err(|e| AssembleError::Config(crate::chain(&e)))?;
        let base: ImageConfiguration =
            serde_json::from_slice(&bytes).map_err(|e| AssembleError::Config(crate::chain(&e)))?;
        // Docker's fields beyond OCI's (a base image's healthcheck) carry
        // over: oci-spec's config type has no place for them.
        if let Ok(raw) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && let Some(c) = raw.get("config").and_then(|c| c.as_object())
        {
            // (not `OnBuild`: a base's triggers are for the image built on
            // it, Docker clears them there)
            for k in ["Healthcheck", "Shell"] {
                if let Some(v) = c.get(k).filter(|v| !v.is_null()) {
                    img.docker_config.insert(k.to_string(), v.clone());
                }
            }
        }
        img.architecture = base.architecture().to_string();
        img.variant = base.variant().clone();
        config = base.config().clone().unwrap_or_default();
    }
    let over = &def.config;
    let mut env = config.env().clone().unwrap_or_default();
    for (k, v) in &over.env {
        set_env(&mut env, k, v);
    }
    config.set_env((!env.is_empty()).then_some(env));
    if let Some(w) = &over.workdir {
        config.set_working_dir(Some(w.clone()));
    }
    if let Some(u) = &over.user {
        config.set_user(Some(u.clone()));
    }
    if let Some(e) = &over.entrypoint {
        config.set_entrypoint(Some(e.clone()));
    }
    if let Some(c) = &over.cmd {
        config.set_cmd((!c.is_empty()).then(|| c.clone()));
    }
    if !over.labels.is_empty() {
        let mut labels = config.labels().clone().unwrap_or_default();
        labels.extend(over.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        config.set_labels(Some(labels));
    }
    if !over.exposed_ports.is_empty() {
        let mut ports = config.exposed_ports().clone().unwrap_or_default();
        for p in &over.exposed_ports {
            if !ports.contains(p) {
                ports.push(p.clone());
            }
        }
        config.set_exposed_ports(Some(ports));
    }
    if !over.volumes.is_empty() {
        let mut volumes = config.volumes().clone().unwrap_or_default();
        for v in &over.volumes {
            if !volumes.contains(v) {
                volumes.push(v.clone());
            }
        }
        config.set_volumes(Some(volumes));
    }
    if let Some(s) = &over.stop_signal {
        config.set_stop_signal(Some(s.clone()));
    }
    if let Some(h) = &over.healthcheck {
        img.docker_config
            .insert("Healthcheck".into(), h.docker_json());
    }
    if !over.onbuild.is_empty() {
        img.docker_config
            .insert("OnBuild".into(), serde_json::json!(over.onbuild));
    }
    img.config = config;
    // Only now do directory layers become blobs, and only this image's: a
    // builder stage's layers are never committed.
    let r = commit(store, r)?;
    for l in &r.layers {
        let layer = l.to_layer().map_err(AssembleError::Layers)?;
        img.push_layer(layer, "kiln build");
    }
    img.commit(store)
        .map_err(|e| AssembleError::Commit(crate::chain(&e)))
}
