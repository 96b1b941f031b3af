//! A stand-in for BuildKit's side of the gateway: the `LLBBridge` calls the
//! frontend makes, served over HTTP/2 on the frontend process's stdin and
//! stdout, the way BuildKit connects a frontend container's stdio. gRPC
//! framing is done by hand here (not with tonic), so the frontend's wire
//! format is checked independently of the library it uses.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kiln_frontend_gateway::pb;
use prost::Message;

/// One call the frontend made, with when it arrived.
#[derive(Debug, Clone)]
pub enum Call {
    Ping,
    Solve(pb::SolveRequest),
    ReadFile(pb::ReadFileRequest),
    Resolve(pb::ResolveImageConfigRequest),
    Return(pb::ReturnRequest),
    Other(String),
}

/// What the fake BuildKit serves.
#[derive(Debug, Clone)]
pub struct Fake {
    /// Files of the `dockerfile` local.
    pub files: HashMap<String, Vec<u8>>,
    /// The config `ResolveImageConfig` answers with.
    pub image_config: serde_json::Value,
    pub caps: Vec<&'static str>,
}

impl Fake {
    pub fn new(files: &[(&str, &str)]) -> Fake {
        Fake {
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            image_config: serde_json::json!({
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
                    "Cmd": ["bash"]
                },
                "rootfs": {"type": "layers", "diff_ids": ["sha256:1111111111111111111111111111111111111111111111111111111111111111"]},
                "history": [{"created_by": "debootstrap"}]
            }),
            caps: vec![
                "solve.base",
                "readfile",
                "resolveimage",
                "return",
                "proto.refarray",
            ],
        }
    }
}

pub const KILNFILE_REF: &str = "ref-kilnfile";
pub const BUILD_REF: &str = "ref-build";

/// The frontend's calls in order, each with its arrival time.
pub type Log = Arc<Mutex<Vec<(Instant, Call)>>>;

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(msg.len() + 5);
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

type Body =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn reply(msg: Option<Vec<u8>>, code: u32, message: &str) -> http::Response<Body> {
    let mut frames = Vec::new();
    if let Some(m) = msg {
        frames.push(Ok(Frame::data(grpc_frame(&m))));
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", code.to_string().parse().unwrap());
    if !message.is_empty() {
        trailers.insert("grpc-message", message.parse().unwrap());
    }
    frames.push(Ok(Frame::trailers(trailers)));
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap()
}

async fn handle(
    req: http::Request<Incoming>,
    fake: Arc<Fake>,
    log: Log,
) -> Result<http::Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    assert_eq!(
        req.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/grpc"),
        "{path}"
    );
    let body = req.into_body().collect().await.unwrap().to_bytes();
    assert!(body.len() >= 5, "{path}: a gRPC frame");
    assert_eq!(body[0], 0, "{path}: uncompressed");
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let msg = &body[5..5 + len];
    let now = Instant::now();
    let Some(method) = path.strip_prefix("/moby.buildkit.v1.frontend.LLBBridge/") else {
        log.lock().unwrap().push((now, Call::Other(path)));
        return Ok(reply(None, 12, "unknown service"));
    };
    let res = match method {
        "Ping" => {
            log.lock().unwrap().push((now, Call::Ping));
            let caps = fake
                .caps
                .iter()
                .map(|c| pb::ApiCap {
                    id: c.to_string(),
                    enabled: true,
                    ..Default::default()
                })
                .collect();
            reply(
                Some(
                    pb::PongResponse {
                        frontend_api_caps: caps,
                        llb_caps: Vec::new(),
                        workers: vec![pb::WorkerRecord {
                            id: "w0".into(),
                            labels: Default::default(),
                            platforms: vec![pb::Platform {
                                os: "linux".into(),
                                architecture: "amd64".into(),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                    }
                    .encode_to_vec(),
                ),
                0,
                "",
            )
        }
        "Solve" => {
            let req = pb::SolveRequest::decode(msg).unwrap();
            let def = req.definition.clone().unwrap_or_default();
            let graph = kiln_llb::Graph::from_definition(&def).expect("well-formed LLB");
            let loads_kilnfile = graph.ops.iter().any(|o| {
                matches!(&o.op.op, Some(kiln_llb::pb::op::Op::Source(s)) if s.identifier == "local://dockerfile")
            });
            log.lock().unwrap().push((now, Call::Solve(req)));
            let id = if loads_kilnfile {
                KILNFILE_REF
            } else {
                BUILD_REF
            };
            reply(
                Some(
                    pb::SolveResponse {
                        r#ref: String::new(),
                        result: Some(pb::BuildResult {
                            result: Some(pb::build_result::Result::Ref(pb::Ref {
                                id: id.into(),
                                def: None,
                            })),
                            ..Default::default()
                        }),
                    }
                    .encode_to_vec(),
                ),
                0,
                "",
            )
        }
        "ReadFile" => {
            let req = pb::ReadFileRequest::decode(msg).unwrap();
            let found = (req.r#ref == KILNFILE_REF)
                .then(|| fake.files.get(&req.file_path).cloned())
                .flatten();
            log.lock().unwrap().push((now, Call::ReadFile(req)));
            match found {
                Some(data) => reply(Some(pb::ReadFileResponse { data }.encode_to_vec()), 0, ""),
                None => reply(None, 5, "no such file"),
            }
        }
        "ResolveImageConfig" => {
            let req = pb::ResolveImageConfigRequest::decode(msg).unwrap();
            let r = req.r#ref.clone();
            log.lock().unwrap().push((now, Call::Resolve(req)));
            reply(
                Some(
                    pb::ResolveImageConfigResponse {
                        digest: format!("sha256:{}", "2".repeat(64)),
                        config: serde_json::to_vec(&fake.image_config).unwrap(),
                        r#ref: r,
                    }
                    .encode_to_vec(),
                ),
                0,
                "",
            )
        }
        "Return" => {
            let req = pb::ReturnRequest::decode(msg).unwrap();
            log.lock().unwrap().push((now, Call::Return(req)));
            reply(Some(pb::ReturnResponse {}.encode_to_vec()), 0, "")
        }
        other => {
            log.lock()
                .unwrap()
                .push((now, Call::Other(other.to_string())));
            reply(None, 12, "not implemented by the fake")
        }
    };
    Ok(res)
}

/// What one run of the frontend did.
pub struct Run {
    pub started: Instant,
    pub calls: Vec<(Instant, Call)>,
    pub status: ExitStatus,
    pub stderr: String,
}

/// Starts the frontend binary with `opts` as `BUILDKIT_FRONTEND_OPT_<n>`
/// variables and serves the gateway on its stdio until it exits.
pub async fn run_frontend(fake: &Fake, opts: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln-frontend"));
    cmd.env_clear()
        .env("BUILDKIT_SESSION_ID", "session-1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (i, o) in opts.iter().enumerate() {
        cmd.env(format!("BUILDKIT_FRONTEND_OPT_{i}"), o);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("the frontend starts");
    let io = tokio::io::join(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let log: Log = Arc::default();
    let (fake, l) = (Arc::new(fake.clone()), log.clone());
    let server = tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| handle(req, fake.clone(), l.clone()));
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), svc)
            .await;
    });
    let err = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s).await;
        s
    });
    let status = match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
        Ok(s) => s.expect("wait"),
        Err(_) => {
            let _ = child.start_kill();
            let calls = log.lock().unwrap().clone();
            let stderr = tokio::time::timeout(Duration::from_secs(2), err)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            panic!("the frontend did not exit; calls {calls:?}; stderr: {stderr}");
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let stderr = err.await.unwrap();
    let calls = log.lock().unwrap().clone();
    Run {
        started,
        calls,
        status,
        stderr,
    }
}
