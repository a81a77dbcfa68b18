//! `danmaku serve`: one process running every role over the in-process bus, on one port.
//!
//! The accept loop is our own (HTTP/1.1 only, through hyper) rather than `axum::serve`, so that an upgraded
//! connection is a plain `TcpStream` the gateway can own, the request head has a deadline, and shutdown can stop
//! accepting and then close every viewer with 1001.

pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::config::ServeArgs;
use crate::gateway::Gateway;
use crate::logic::http::reject;
use crate::logic::{self, Logic};
use crate::protocol::{ErrorCode, Rejection};

/// Runs `serve` until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let prometheus = metrics::install();
    let bus = Arc::new(Bus::local(args.logic.history, args.logic.max_rooms));
    let logic = Arc::new(Logic::new(bus.clone(), args.logic.clone()));
    let tasks = TaskTracker::new();
    let gateway = Arc::new(Gateway::new(
        args.gateway.clone(),
        args.logic.max_message_bytes,
        bus,
        logic.clone(),
        tasks.clone(),
    )?);
    let app = gateway
        .routes()
        .merge(logic::http::routes(logic))
        .merge(common_routes(prometheus));
    // The one line scripts and tests wait for.
    println!("listening on {addr}");
    tracing::info!(%addr, "serving (in-process bus)");

    let stop = CancellationToken::new();
    tokio::spawn(signals(stop.clone()));
    accept_loop(listener, app, gateway.handshake_timeout(), &tasks, &stop).await;

    tracing::info!("shutting down: closing viewers");
    gateway.close_all();
    tasks.close();
    let grace = Duration::from_secs(args.shutdown_timeout_secs);
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!("some connections did not finish within {grace:?}");
    }
    Ok(())
}

/// `/healthz`, `/metrics` and the JSON 404/405 answers.
pub fn common_routes(prometheus: metrics_exporter_prometheus::PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let body = prometheus.render();
                async move { body }
            }),
        )
        .fallback(|| async { reject(&Rejection::new(ErrorCode::NotFound, "no such route")) })
        .method_not_allowed_fallback(|| async {
            reject(&Rejection::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            ))
        })
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    handshake_timeout: Duration,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tasks.spawn(serve_http(
                    stream,
                    peer,
                    app.clone(),
                    handshake_timeout,
                    stop.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors or a transient error: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_http(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    timeout: Duration,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "http connection ended: {e}");
    }
}

async fn signals(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    stop.cancel();
}

impl IntoResponse for Rejection {
    fn into_response(self) -> axum::response::Response {
        reject(&self)
    }
}
