//! `/metrics` over HTTP/1.1 (hyper), on a thread and a small tokio runtime of its own, so that a
//! scrape never waits on the actors and the actors never wait on a scraper.
//!
//! Only `GET /metrics` (and `HEAD`) is answered; anything else is 404 or 405. A scraper is a
//! stranger on the network: connections are limited in number, and each must send its request
//! within [`READ_TIMEOUT`].

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};

use super::Metrics;

/// Scrapes served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a connection may take to send its request headers.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("metrics: cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The runtime or its thread could not start.
    #[error("metrics: cannot start the server: {0}")]
    Start(std::io::Error),
}

/// The running endpoint. Dropping it stops it.
pub struct MetricsServer {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `metrics` at `http://{address}/metrics` (port 0 picks a free port).
    pub fn start(address: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsServer, MetricsError> {
        let listener = TcpListener::bind(address).map_err(|source| MetricsError::Bind { address, source })?;
        let bound = listener.local_addr().map_err(MetricsError::Start)?;
        listener.set_nonblocking(true).map_err(MetricsError::Start)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(MetricsError::Start)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("ergon-metrics".into())
            .spawn(move || runtime.block_on(serve(listener, metrics, stopped)))
            .map_err(MetricsError::Start)?;
        tracing::info!(address = %bound, "serving metrics at /metrics");
        Ok(MetricsServer { address: bound, stop: Some(stop), thread: Some(thread) })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: TcpListener, metrics: Arc<Metrics>, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "metrics: cannot serve");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = &mut stopped => return,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics: accept failed");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&request, &metrics)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "metrics: connection ended");
            }
            drop(slot);
        });
    }
}

fn answer(request: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "ergon serves /metrics only\n".into());
    }
    match *request.method() {
        Method::GET => reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode()),
        Method::HEAD => reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", String::new()),
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET /metrics\n".into()),
    }
}
