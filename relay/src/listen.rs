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
    tls: Option<Arc<Tls>>,
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
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
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
        // Handlers see the client's address (failed-authentication throttling).
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let http = {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            b
        };
        metrics::gauge!("relay_http_connections").increment(1.0);
        match &tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(target: "relay::http", error = %e, "connection ended");
                    }
                    metrics::gauge!("relay_http_connections").decrement(1.0);
                    drop(slot);
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                let watcher = graceful.watcher();
                let timeout = limits.header_timeout;
                tokio::spawn(async move {
                    // The handshake gets the header timeout too: a silent client is cut off.
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let conn =
                                watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                            if let Err(e) = conn.await {
                                tracing::debug!(target: "relay::http", error = %e, "connection ended");
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(target: "relay::http", error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(target: "relay::http", "TLS handshake timed out"),
                    }
                    metrics::gauge!("relay_http_connections").decrement(1.0);
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!(target: "relay::http", "connections still open 30 s after shutdown; closing");
        }
    }
}

/// HTTPS for the listener: the certificate chain and key from PEM files, read again when either
/// file changes (checked at most once a second), so a renewed certificate is served without a
/// restart.
pub struct Tls {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    current: std::sync::Mutex<(
        Option<std::time::SystemTime>,
        tokio_rustls::TlsAcceptor,
        Instant,
    )>,
}

fn modified(paths: [&std::path::Path; 2]) -> Option<std::time::SystemTime> {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
}

fn acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS key {}", key.display()))?;
    let mut config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not make a server identity")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl Tls {
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Tls> {
        let acceptor = acceptor(cert, key)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: std::sync::Mutex::new((modified([cert, key]), acceptor, Instant::now())),
        })
    }

    /// The acceptor for a new connection, reloaded first if the files changed. A reload that
    /// fails keeps the previous certificate (and says why).
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.2.elapsed() >= Duration::from_secs(1) {
            current.2 = Instant::now();
            let now = modified([&self.cert, &self.key]);
            if now != current.0 {
                match acceptor(&self.cert, &self.key) {
                    Ok(a) => {
                        tracing::info!(target: "relay::http", cert = %self.cert.display(), "TLS certificate reloaded");
                        *current = (now, a, Instant::now());
                    }
                    Err(e) => {
                        tracing::error!(target: "relay::http", error = %e, "the new TLS certificate cannot be used; keeping the previous one")
                    }
                }
            }
        }
        current.1.clone()
    }
}
