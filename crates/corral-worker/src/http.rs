//! HTTP/1 serving with hyper, drained so that keep-alive clients never see a failure.
//!
//! On drain, each connection answers its next request with `Connection: close` (the
//! client opens a new connection, to another worker); a connection that stays idle for
//! the grace period is closed; in-flight requests finish. [`serve`] returns once every
//! connection is done.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Worker;

/// How long a kept-alive connection may stay idle once the worker drains.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);

type BoxError = Box<dyn Error + Send + Sync>;

/// What [`serve`] can serve: a cloneable hyper service (an axum `Router` wrapped in
/// `hyper_util::service::TowerToHyperService`, for example).
pub trait HttpService<B>:
    Service<
        Request<Incoming>,
        Response = Response<B>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A response body [`serve`] can send.
pub trait HttpBody: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

impl<B> HttpBody for B where B: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

/// Serves `service` on every connection the worker accepts, until the worker drains
/// and the last connection is done. Counts requests for the heartbeats.
pub async fn serve<S, B>(worker: &Worker, service: S)
where
    S: HttpService<B>,
    B: HttpBody,
{
    let mut connections = JoinSet::new();
    while let Some(conn) = worker.accept().await {
        let service = Drained {
            inner: service.clone(),
            draining: worker.draining(),
            requests: worker.request_counter(),
        };
        connections.spawn(serve_connection(conn, service, worker.draining()));
        // Reap finished tasks as we go so the set doesn't grow with history.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<S, B>(
    conn: crate::Connection,
    service: Drained<S>,
    mut draining: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(conn), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async {
            let _ = draining.wait_for(|d| *d).await;
            tokio::time::sleep(IDLE_GRACE).await;
        } => {
            // Idle past the grace (a busy connection got `Connection: close` already):
            // close it between requests; one in flight still completes.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Adds `Connection: close` to responses once the worker drains.
#[derive(Clone)]
struct Drained<S> {
    inner: S,
    draining: watch::Receiver<bool>,
    requests: crate::worker::RequestCounter,
}

impl<S, B> Service<Request<Incoming>> for Drained<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let future = self.inner.call(request);
        let draining = self.draining.clone();
        let requests = self.requests.clone();
        Box::pin(async move {
            let mut response = future.await?;
            requests.add();
            if *draining.borrow() {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        })
    }
}
