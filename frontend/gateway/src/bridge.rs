//! The client side of BuildKit's `LLBBridge` gRPC service, over any byte
//! stream (BuildKit gives the frontend process the connection on
//! stdin/stdout): HTTP/2 from hyper, gRPC framing and status from tonic.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::pb;

/// One HTTP/2 connection as the service tonic's client calls through.
#[derive(Clone)]
struct H2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// A connection to BuildKit's gateway.
#[derive(Clone)]
pub struct Bridge {
    grpc: tonic::client::Grpc<H2>,
}

/// The HTTP/2 handshake with BuildKit failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot start HTTP/2 with BuildKit on the frontend's stdio: {0}")]
pub struct ConnectError(#[source] hyper::Error);

macro_rules! method {
    ($name:literal) => {
        PathAndQuery::from_static(concat!("/moby.buildkit.v1.frontend.LLBBridge/", $name))
    };
}

impl Bridge {
    /// Speaks HTTP/2 (prior knowledge, no TLS, as BuildKit's own Go client)
    /// over `io`. The connection is driven by a spawned task.
    pub async fn connect<IO>(io: IO) -> Result<Bridge, ConnectError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnectError)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("gateway connection closed: {e}");
            }
        });
        let origin = http::Uri::from_static("http://localhost");
        // BuildKit allows 16 MiB messages; the static base alone is about
        // 0.6 MiB of file data.
        let grpc = tonic::client::Grpc::with_origin(H2(send), origin)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        Ok(Bridge { grpc })
    }

    async fn unary<Req, Resp>(
        &mut self,
        path: PathAndQuery,
        req: Req,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("gateway connection: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        self.grpc
            .unary(tonic::Request::new(req), path, codec)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn ping(&mut self) -> Result<pb::PongResponse, tonic::Status> {
        self.unary(method!("Ping"), pb::PingRequest {}).await
    }

    pub async fn solve(
        &mut self,
        req: pb::SolveRequest,
    ) -> Result<pb::SolveResponse, tonic::Status> {
        self.unary(method!("Solve"), req).await
    }

    pub async fn read_file(
        &mut self,
        req: pb::ReadFileRequest,
    ) -> Result<pb::ReadFileResponse, tonic::Status> {
        self.unary(method!("ReadFile"), req).await
    }

    pub async fn resolve_image_config(
        &mut self,
        req: pb::ResolveImageConfigRequest,
    ) -> Result<pb::ResolveImageConfigResponse, tonic::Status> {
        self.unary(method!("ResolveImageConfig"), req).await
    }

    pub async fn warn(&mut self, req: pb::WarnRequest) -> Result<pb::WarnResponse, tonic::Status> {
        self.unary(method!("Warn"), req).await
    }

    pub async fn ret(
        &mut self,
        req: pb::ReturnRequest,
    ) -> Result<pb::ReturnResponse, tonic::Status> {
        self.unary(method!("Return"), req).await
    }
}
