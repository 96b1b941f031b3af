//! kiln's BuildKit gateway frontend: what runs when a Kilnfile starts with
//! `// syntax=REGISTRY/kiln-frontend:TAG`.
//!
//! BuildKit starts the frontend image's entrypoint with the `LLBBridge` gRPC
//! service on stdin/stdout and the build's options in
//! `BUILDKIT_FRONTEND_OPT_<n>=KEY=VALUE` variables. [`run`] then:
//!
//! 1. pings the gateway for its capabilities and workers;
//! 2. solves the `dockerfile` local (only the Kilnfile, `filename` option)
//!    and reads the Kilnfile through `ReadFile`;
//! 3. answers a subrequest (`requestid`: targets, outline, lint; see
//!    [`subrequest`]) instead of building, or compiles the Kilnfile with
//!    `kiln-frontend` (`target`, `build-arg:NAME`, `platform` options); a
//!    malformed Kilnfile is returned to BuildKit as an error carrying each
//!    error's `file:line:col` and help and an `errdefs.Source` detail, so
//!    buildctl and buildx show the line; warnings go through `Warn`;
//!    named contexts replace images ([`inputs`]);
//! 4. resolves the image configs of `image(..)` bases that run steps or the
//!    result inherit from (`ResolveImageConfig`);
//! 5. emits the LLB (`kiln-llb`; `no-cache` marks ops), solves it with the
//!    `cache-imports` and returns the result with its
//!    `containerimage.config`.
//!
//! Logs go to stderr only: stdout is the gRPC connection.

mod bridge;
pub mod inputs;
pub mod pb;
pub mod subrequest;

use std::collections::{BTreeMap, HashMap, HashSet};

use kiln_dag::{Definition, Digest, Op, Platform, SourceOp, State};
use kiln_llb::{BaseConfig, Options as LlbOptions, SourceFile};
use prost::Message as _;

pub use bridge::{Bridge, ConnectError};

/// The `Result` metadata key BuildKit's image exporter reads the image
/// config from.
pub const IMAGE_CONFIG_KEY: &str = "containerimage.config";
/// BuildKit's `exptypes.ExporterPlatformsKey`: the platforms of a
/// multi-platform result, `{"Platforms":[{"ID":..,"Platform":{..}}]}`.
pub const PLATFORMS_KEY: &str = "refs.platforms";
/// The local BuildKit serves the Kilnfile's directory under.
pub const DEFAULT_DOCKERFILE_LOCAL: &str = "dockerfile";
pub const DEFAULT_FILENAME: &str = "Kilnfile";

/// What BuildKit passed in the environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Frontend options: `filename`, `target`, `build-arg:NAME`, `platform`.
    pub opts: BTreeMap<String, String>,
    /// `BUILDKIT_SESSION_ID`: the client session serving the locals.
    pub session_id: Option<String>,
}

impl Env {
    /// Reads `BUILDKIT_FRONTEND_OPT_<n>=KEY=VALUE` and `BUILDKIT_SESSION_ID`.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Env {
        let mut env = Env::default();
        for (k, v) in vars {
            if k.starts_with("BUILDKIT_FRONTEND_OPT_") {
                let (key, value) = v.split_once('=').unwrap_or((v.as_str(), ""));
                env.opts.insert(key.to_string(), value.to_string());
            } else if k == "BUILDKIT_SESSION_ID" && !v.is_empty() {
                env.session_id = Some(v);
            }
        }
        env
    }

    pub fn from_process() -> Env {
        Env::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    pub fn filename(&self) -> &str {
        self.opts
            .get("filename")
            .map(String::as_str)
            .filter(|f| !f.is_empty())
            .unwrap_or(DEFAULT_FILENAME)
    }
}

/// How a run ended, once the result or the error was returned to BuildKit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The build's result was returned.
    Built,
    /// The Kilnfile was rejected; the diagnostics were returned as the
    /// build's error.
    Rejected { summary: String },
}

/// Why the frontend could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the gateway's {method} call failed: {status}")]
    Call {
        method: &'static str,
        status: tonic::Status,
    },
    #[error("the gateway does not support `{cap}` (BuildKit v0.11 or later is needed)")]
    Capability { cap: &'static str },
    #[error("the gateway's {method} answer has no result reference")]
    NoRef { method: &'static str },
    #[error("`{file}` is not UTF-8 text")]
    NotUtf8 { file: String },
    #[error("invalid option `{key}={value}`: {reason}")]
    Option {
        key: String,
        value: String,
        reason: String,
    },
    #[error("invalid option `{key}`")]
    RunSetting {
        key: &'static str,
        #[source]
        source: kiln_dag::settings::SettingError,
    },
    #[error("the image config of `{reference}` is not valid JSON: {reason}")]
    ImageConfig { reference: String, reason: String },
    #[error(
        "unsupported subrequest `{request}` (kiln answers frontend.outline, frontend.targets, frontend.lint)"
    )]
    Subrequest { request: String },
    #[error(transparent)]
    Emit(#[from] kiln_llb::EmitError),
    #[error("{summary}")]
    Kilnfile { summary: String, status: pb::Status },
}

fn call(method: &'static str) -> impl FnOnce(tonic::Status) -> GatewayError {
    move |status| GatewayError::Call { method, status }
}

/// gRPC codes (google.rpc.Code).
const INVALID_ARGUMENT: i32 = 3;
const UNKNOWN: i32 = 2;

impl GatewayError {
    /// The error as BuildKit gets it in `Return`. An error BuildKit itself
    /// sent (a failed solve) goes back with its own details, so its
    /// vertex and source information survive.
    pub fn to_status(&self) -> pb::Status {
        match self {
            GatewayError::Kilnfile { status, .. } => status.clone(),
            GatewayError::Call { status, .. } => {
                if let Ok(s) = pb::Status::decode(status.details())
                    && s.code != 0
                {
                    return s;
                }
                pb::Status {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                    details: Vec::new(),
                }
            }
            other => pb::Status {
                code: UNKNOWN,
                message: other.to_string(),
                details: Vec::new(),
            },
        }
    }
}

/// The gateway's capabilities, from `Ping`.
struct Caps(HashSet<String>);

impl Caps {
    fn has(&self, cap: &str) -> bool {
        self.0.contains(cap)
    }
}

/// Runs the frontend over `bridge`: builds the Kilnfile BuildKit names and
/// returns the result (or the Kilnfile's errors) through `Return`.
pub async fn run(mut bridge: Bridge, env: &Env) -> Result<Outcome, GatewayError> {
    let pong = bridge.ping().await.map_err(call("Ping"))?;
    let caps = Caps(
        pong.frontend_api_caps
            .iter()
            .filter(|c| c.enabled)
            .map(|c| c.id.clone())
            .collect(),
    );
    let built = build(&mut bridge, env, &pong, &caps).await;
    let req = match &built {
        Ok(result) => pb::ReturnRequest {
            result: Some(result.clone()),
            error: None,
        },
        Err(e) => pb::ReturnRequest {
            result: None,
            error: Some(e.to_status()),
        },
    };
    bridge.ret(req).await.map_err(call("Return"))?;
    match built {
        Ok(_) => Ok(Outcome::Built),
        Err(GatewayError::Kilnfile { summary, .. }) => Ok(Outcome::Rejected { summary }),
        Err(e) => Err(e),
    }
}

/// The target platforms: the `platform` option's comma list (each once, in
/// order; several make a multi-platform result), else the worker's.
fn platforms_of(env: &Env, pong: &pb::PongResponse) -> Result<Vec<Platform>, GatewayError> {
    if let Some(list) = env.opts.get("platform").filter(|p| !p.is_empty()) {
        let mut out: Vec<Platform> = Vec::new();
        for one in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let p: Platform =
                one.parse()
                    .map_err(|e: kiln_dag::PlatformParseError| GatewayError::Option {
                        key: "platform".into(),
                        value: list.clone(),
                        reason: e.to_string(),
                    })?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    if let Some(w) = pong.workers.iter().find_map(|w| w.platforms.first()) {
        return Ok(vec![Platform {
            os: w.os.clone(),
            architecture: w.architecture.clone(),
            variant: (!w.variant.is_empty()).then(|| w.variant.clone()),
        }]);
    }
    Ok(vec![Platform::host()])
}

fn pb_platform(p: &Platform) -> pb::Platform {
    pb::Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: p.variant.clone().unwrap_or_default(),
        ..Default::default()
    }
}

async fn solve(
    bridge: &mut Bridge,
    caps: &Caps,
    definition: kiln_llb::pb::Definition,
    cache_imports: Vec<pb::CacheOptionsEntry>,
) -> Result<pb::Ref, GatewayError> {
    let resp = bridge
        .solve(pb::SolveRequest {
            definition: Some(definition.clone()),
            allow_result_return: true,
            allow_result_array_ref: caps.has("proto.refarray"),
            cache_imports,
            ..Default::default()
        })
        .await
        .map_err(call("Solve"))?;
    let id = match resp.result.and_then(|r| r.result) {
        Some(pb::build_result::Result::Ref(r)) => r.id,
        Some(pb::build_result::Result::RefDeprecated(id)) => id,
        _ => resp.r#ref,
    };
    if id.is_empty() {
        return Err(GatewayError::NoRef { method: "Solve" });
    }
    Ok(pb::Ref {
        id,
        def: Some(definition),
    })
}

async fn build(
    bridge: &mut Bridge,
    env: &Env,
    pong: &pb::PongResponse,
    caps: &Caps,
) -> Result<pb::BuildResult, GatewayError> {
    if !caps.has("return") {
        return Err(GatewayError::Capability { cap: "return" });
    }
    let platforms = platforms_of(env, pong)?;
    let platform = platforms[0].clone();
    let filename = env.filename().to_string();
    let local = env
        .opts
        .get("dockerfilekey")
        .cloned()
        .unwrap_or_else(|| DEFAULT_DOCKERFILE_LOCAL.into());

    // 1. The Kilnfile, through a solve of its local and ReadFile.
    let load =
        State::context(&*local, vec![filename.clone()], Vec::new()).with_meta(kiln_dag::Meta {
            name: Some(format!("[internal] load build definition from {filename}")),
            location: None,
        });
    let mut lopts = LlbOptions::new(platform.clone());
    lopts.session_id = env.session_id.clone();
    let load_llb = kiln_llb::emit(&load.definition(), &lopts)?;
    let load_vertex = load_llb.root.clone().unwrap_or_default();
    let load_def = load_llb.definition.clone();
    let kilnfile_ref = solve(bridge, caps, load_llb.definition, Vec::new()).await?;
    let data = bridge
        .read_file(pb::ReadFileRequest {
            r#ref: kilnfile_ref.id,
            file_path: filename.clone(),
            ..Default::default()
        })
        .await
        .map_err(call("ReadFile"))?
        .data;
    let text = String::from_utf8(data).map_err(|_| GatewayError::NotUtf8 {
        file: filename.clone(),
    })?;

    // 2. Compile.
    let build_args = env
        .opts
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("build-arg:")?.to_string(), v.clone())))
        .collect();
    let opts = kiln_frontend::Options {
        target: env.opts.get("target").filter(|t| !t.is_empty()).cloned(),
        build_args,
        platform: Some(platform.clone()),
        build_platform: None,
        run: inputs::run_settings(&env.opts)?,
    };
    if let Some(request) = env.opts.get("requestid").filter(|r| !r.is_empty()) {
        let input = subrequest::Input {
            filename: &filename,
            text: &text,
            opts: &opts,
        };
        let metadata =
            subrequest::answer(request, &input).ok_or_else(|| GatewayError::Subrequest {
                request: request.clone(),
            })?;
        return Ok(pb::BuildResult {
            metadata,
            ..Default::default()
        });
    }
    let source_info = pb::SourceInfo {
        filename: filename.clone(),
        data: text.as_bytes().to_vec(),
        definition: Some(load_def),
        language: LANGUAGE.into(),
    };
    // One graph per target platform, each solved by BuildKit (which runs a
    // vertex the graphs share once).
    let mut built = Vec::with_capacity(platforms.len());
    for (i, platform) in platforms.iter().enumerate() {
        let opts = kiln_frontend::Options {
            platform: Some(platform.clone()),
            ..opts.clone()
        };
        let compiled = kiln_frontend::compile(&filename, &text, &opts)
            .map_err(|d| kilnfile_error(&d, &filename, &text))?;
        if i == 0 {
            warn_all(
                bridge,
                caps,
                &compiled.warnings,
                &load_vertex,
                &source_info,
                &text,
            )
            .await;
        }
        let mut def = compiled.definition;
        inputs::apply_contexts(&mut def, &inputs::named_contexts(&env.opts)?);
        let cache_imports = inputs::cache_imports(&env.opts)?;

        // 3. The configs run steps and the result inherit from images.
        let base_configs = resolve_configs(bridge, env, &def, platform).await?;

        // 4. Emit, solve.
        let mut lopts = LlbOptions::new(platform.clone());
        lopts.session_id = env.session_id.clone();
        lopts.base_configs = base_configs;
        lopts.source = Some(SourceFile {
            name: filename.clone(),
            text: text.clone(),
        });
        let mut llb = kiln_llb::emit(&def, &lopts)?;
        inputs::apply_no_cache(&env.opts, &mut llb.definition);
        let result_ref = solve(bridge, caps, llb.definition, cache_imports).await?;
        let config =
            kiln_llb::image_config(&def, lopts.base_configs.get(&def.config_from), platform);
        let config = serde_json::to_vec(&config).expect("json values serialize");
        tracing::info!(
            "built target `{}` of {filename} for {platform}",
            compiled.target
        );
        built.push((platform.to_string(), result_ref, config));
    }

    // 5. Return: one ref, or BuildKit's multi-platform result (a ref and a
    // config per platform ID, and the platform list the exporter makes
    // its index from).
    if let [(_, result_ref, config)] = &mut built[..] {
        let metadata = [(IMAGE_CONFIG_KEY.to_string(), std::mem::take(config))].into();
        let result_ref = std::mem::take(result_ref);
        let result = if caps.has("proto.refarray") {
            pb::build_result::Result::Ref(result_ref)
        } else {
            pb::build_result::Result::RefDeprecated(result_ref.id)
        };
        return Ok(pb::BuildResult {
            result: Some(result),
            metadata,
            ..Default::default()
        });
    }
    let mut metadata = BTreeMap::new();
    let list: Vec<serde_json::Value> = platforms
        .iter()
        .map(|p| {
            let mut oci = serde_json::json!({"architecture": p.architecture, "os": p.os});
            if let Some(v) = &p.variant {
                oci["variant"] = serde_json::json!(v);
            }
            serde_json::json!({"ID": p.to_string(), "Platform": oci})
        })
        .collect();
    metadata.insert(
        PLATFORMS_KEY.to_string(),
        serde_json::to_vec(&serde_json::json!({ "Platforms": list }))
            .expect("json values serialize"),
    );
    for (id, _, config) in &mut built {
        metadata.insert(format!("{IMAGE_CONFIG_KEY}/{id}"), std::mem::take(config));
    }
    let result = if caps.has("proto.refarray") {
        pb::build_result::Result::Refs(pb::RefMap {
            refs: built.into_iter().map(|(id, r, _)| (id, r)).collect(),
        })
    } else {
        pb::build_result::Result::RefsDeprecated(pb::RefMapDeprecated {
            refs: built.into_iter().map(|(id, r, _)| (id, r.id)).collect(),
        })
    };
    Ok(pb::BuildResult {
        result: Some(result),
        metadata,
        ..Default::default()
    })
}

/// The image sources whose config matters: the bases of run steps and of
/// the result.
fn config_sources(def: &Definition) -> Vec<(Digest, String)> {
    let mut wanted: Vec<Digest> = vec![def.config_from];
    for v in &def.vertices {
        if let Op::Exec(x) = &v.op
            && let Some(d) = x.config_from.and_then(|i| v.inputs.get(i))
        {
            wanted.push(*d);
        }
    }
    let mut seen = HashSet::new();
    wanted
        .into_iter()
        .filter(|d| seen.insert(*d))
        .filter_map(|d| match def.vertex(&d).map(|v| &v.op) {
            Some(Op::Source(SourceOp::Image { reference, .. })) => Some((d, reference.clone())),
            _ => None,
        })
        .collect()
}

async fn resolve_configs(
    bridge: &Bridge,
    env: &Env,
    def: &Definition,
    platform: &Platform,
) -> Result<HashMap<Digest, BaseConfig>, GatewayError> {
    let calls = config_sources(def).into_iter().map(|(digest, reference)| {
        let mut b = bridge.clone();
        let req = pb::ResolveImageConfigRequest {
            r#ref: reference.clone(),
            platform: Some(pb_platform(platform)),
            resolve_mode: "default".into(),
            log_name: format!("[internal] load metadata for {reference}"),
            session_id: env.session_id.clone().unwrap_or_default(),
            ..Default::default()
        };
        async move {
            let resp = b
                .resolve_image_config(req)
                .await
                .map_err(call("ResolveImageConfig"))?;
            let cfg =
                BaseConfig::from_json(&resp.config).map_err(|e| GatewayError::ImageConfig {
                    reference: reference.clone(),
                    reason: e.to_string(),
                })?;
            Ok::<_, GatewayError>((digest, cfg))
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .collect()
}

/// The `language` BuildKit's clients show for the Kilnfile.
const LANGUAGE: &str = "Kilnfile";

/// Where `span` is, as BuildKit's 1-based line and 0-based character.
fn pb_range(
    idx: &kiln_frontend::span::LineIndex,
    text: &str,
    span: kiln_frontend::span::Span,
) -> pb::Range {
    let pos = |offset: u32| {
        let lc = idx.line_col(text, offset as usize);
        pb::Position {
            line: lc.line as i32,
            character: lc.col.saturating_sub(1) as i32,
        }
    };
    pb::Range {
        start: Some(pos(span.start)),
        end: Some(pos(span.end)),
    }
}

/// The one-line summary of `diag`, and its help on a second line: BuildKit
/// shows the error message, so the help kiln prints must be in it.
fn message_of(d: &kiln_frontend::Diagnostics, diag: &kiln_frontend::Diagnostic) -> String {
    let mut msg = d.summary_of(diag).trim_end().to_string();
    if !diag.help.is_empty() {
        msg.push_str("\n  help: ");
        msg.push_str(&diag.help);
    }
    msg
}

/// Sends the compile's warnings through the gateway's `Warn`, located in the
/// Kilnfile like BuildKit's own lint warnings, so buildctl and buildx show
/// them. A gateway without the capability gets them in the frontend's log.
async fn warn_all(
    bridge: &mut Bridge,
    caps: &Caps,
    warnings: &kiln_frontend::Diagnostics,
    vertex: &str,
    info: &pb::SourceInfo,
    text: &str,
) {
    let idx = kiln_frontend::span::LineIndex::new(text);
    for w in warnings.warnings() {
        if !caps.has("gateway.warnings") || vertex.is_empty() {
            tracing::warn!("{}", message_of(warnings, w));
            continue;
        }
        let req = pb::WarnRequest {
            digest: vertex.to_string(),
            level: 1,
            short: format!("{} [{}]", w.message, w.code).into_bytes(),
            detail: (!w.help.is_empty())
                .then(|| w.help.clone().into_bytes())
                .into_iter()
                .collect(),
            url: String::new(),
            info: Some(info.clone()),
            ranges: w
                .span
                .map(|s| pb_range(&idx, text, s))
                .into_iter()
                .collect(),
        };
        if let Err(e) = bridge.warn(req).await {
            tracing::warn!(
                "{} (the gateway's Warn failed: {e})",
                message_of(warnings, w)
            );
        }
    }
}

/// Diagnostics as BuildKit's error: each error's summary and help as the
/// message, and an `errdefs.Source` detail per error so BuildKit's clients
/// print the Kilnfile lines. An error without a place (an unknown target)
/// gets a detail with no ranges: it prints nothing, and it keeps BuildKit
/// from pinning the error on the `// syntax=` line, which it does to a
/// forwarded frontend's error that has no source at all.
fn kilnfile_error(d: &kiln_frontend::Diagnostics, filename: &str, text: &str) -> GatewayError {
    let summary = d.summary().trim_end().to_string();
    let message = d
        .errors()
        .map(|diag| message_of(d, diag))
        .collect::<Vec<_>>()
        .join("\n");
    let idx = kiln_frontend::span::LineIndex::new(text);
    let info = pb::SourceInfo {
        filename: filename.to_string(),
        data: text.as_bytes().to_vec(),
        definition: None,
        language: LANGUAGE.into(),
    };
    let details = d
        .errors()
        .map(|diag| {
            let source = pb::ErrorSource {
                info: Some(info.clone()),
                ranges: diag
                    .span
                    .map(|s| pb_range(&idx, text, s))
                    .into_iter()
                    .collect(),
            };
            pb::Any {
                type_url: pb::ERROR_SOURCE_TYPE.into(),
                value: source.encode_to_vec(),
            }
        })
        .collect();
    GatewayError::Kilnfile {
        status: pb::Status {
            code: INVALID_ARGUMENT,
            message,
            details,
        },
        summary,
    }
}
