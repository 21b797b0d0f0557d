//! The HTTP listener: connections accepted up to a limit, each served by hyper's HTTP/1 with a
//! timer, so a client that sends half a header, or nothing, or stays idle between requests, is
//! cut off after `header_timeout`; graceful shutdown waits for requests in flight.
//!
//! `axum::serve` has no timer and no limit: a few hundred silent connections would use up the
//! process's file descriptors and stop the relay for everyone.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's headers, and the longest idle time between requests.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits (up to
/// 30 s) for the connections' requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut refused_logged: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted.
                tracing::warn!(target: "relay::http", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("relay_http_connections_refused_total").increment(1);
            if refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                refused_logged = Some(Instant::now());
                tracing::warn!(target: "relay::http", max_connections = limits.max_connections, "connection limit reached: new connections are closed at once");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        metrics::gauge!("relay_http_connections").increment(1.0);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target: "relay::http", error = %e, "connection ended");
            }
            metrics::gauge!("relay_http_connections").decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!(target: "relay::http", "connections still open 30 s after shutdown; closing");
        }
    }
}
