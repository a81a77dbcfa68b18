//! Processes: `danmaku serve` (every role over the in-process bus, on one port) here, the cluster roles in
//! [`cluster`], and the HTTP plumbing they share.
//!
//! The accept loop is our own (HTTP/1.1 only, through hyper) rather than `axum::serve`, so that an upgraded
//! connection is a plain `TcpStream` the gateway can own, the request head has a deadline, and shutdown can stop
//! accepting and then close every viewer with 1001. Like `axum::serve` with connect info, it gives every request
//! its peer's address (`ConnectInfo<SocketAddr>`), which the rate limits count by.

pub mod cluster;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::config::ServeArgs;
use crate::fdlimit;
use crate::gateway::Gateway;
use crate::logic::http::reject;
use crate::logic::{self, Logic};
use crate::protocol::{ErrorCode, Rejection};

/// Open files kept for everything but viewers: the listener, HTTP API clients, the runtime's own.
const FD_RESERVE: u64 = 256;

/// Runs `serve` until SIGINT or SIGTERM.
pub async fn serve(mut args: ServeArgs) -> std::io::Result<()> {
    let auth = auth(&args.auth)?;
    size_for_viewers(&mut args.gateway)?;
    let listener = bind(args.listen, false)?;
    let addr = listener.local_addr()?;
    let prometheus = metrics::install();
    let bus = Arc::new(Bus::local(args.logic.history, args.logic.max_rooms));
    let logic = Arc::new(
        Logic::new(bus.clone(), args.logic.clone(), auth.clone()).map_err(std::io::Error::other)?,
    );
    reload_on_hangup(logic.clone());
    logic.follow_control();
    let tasks = TaskTracker::new();
    let gateway = Arc::new(Gateway::new(
        args.gateway.clone(),
        args.logic.max_message_bytes,
        bus,
        logic.clone(),
        auth,
        tasks.clone(),
    )?);
    gateway.follow_control();
    let app = gateway
        .routes()
        .merge(logic::admin::routes(logic.clone()))
        .merge(logic::http::routes(logic))
        .merge(crate::web::routes())
        .merge(common_routes(prometheus));
    // The one line scripts and tests wait for.
    println!("listening on {addr}");
    tracing::info!(%addr, "serving (in-process bus)");
    let stop = stop_on_signals();
    let grace = Duration::from_secs(args.shutdown_timeout_secs);
    run(listener, app, Some(&gateway), &tasks, &stop, grace).await;
    Ok(())
}

/// The identity policy the flags ask for; a flag that cannot be honoured stops the process before it listens.
fn auth(args: &crate::config::AuthArgs) -> std::io::Result<Arc<Auth>> {
    Auth::from_args(args)
        .map(Arc::new)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Raises the open-files limit and, unless set, admits as many viewers as it allows.
fn size_for_viewers(args: &mut crate::config::GatewayArgs) -> std::io::Result<()> {
    let files = fdlimit::raise()?;
    if args.max_viewers == 0 {
        args.max_viewers = files.soft.saturating_sub(FD_RESERVE) as usize;
    }
    tracing::info!(
        open_files = files.soft,
        max_viewers = args.max_viewers,
        "open-files limit raised from {}",
        files.before
    );
    Ok(())
}

/// A listening socket; with `reuse_port`, other processes may listen on the same address and the kernel spreads
/// connections over them.
fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Rereads the logic's reloadable settings (the blocked words) on every SIGHUP, saying what came of it.
fn reload_on_hangup(logic: Arc<Logic>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP: blocked words will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match logic.reload_blocked_words() {
                Ok(n) => tracing::info!(entries = n, "SIGHUP: blocked words reloaded"),
                Err(e) => tracing::warn!("SIGHUP: {e}; the previous list stays in force"),
            }
        }
    });
}

/// A token cancelled by the first SIGINT or SIGTERM.
fn stop_on_signals() -> CancellationToken {
    let stop = CancellationToken::new();
    tokio::spawn(signals(stop.clone()));
    stop
}

/// Serves `app` until `stop`, then closes every viewer with 1001 and gives connections `grace` to finish.
async fn run(
    listener: TcpListener,
    app: Router,
    gateway: Option<&Gateway>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    grace: Duration,
) {
    let handshake_timeout = gateway.map_or(Duration::from_secs(10), Gateway::handshake_timeout);
    accept_loop(listener, app, handshake_timeout, tasks, stop).await;
    if let Some(gateway) = gateway {
        tracing::info!("shutting down: closing viewers");
        gateway.close_all();
    } else {
        tracing::info!("shutting down");
    }
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!("some connections did not finish within {grace:?}");
    }
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
    // A descriptor held in reserve: when none is left, it is given up to accept and at once close the waiting
    // connection, so clients get a prompt refusal instead of hanging in the backlog.
    let mut spare = std::fs::File::open("/dev/null").ok();
    let mut refused = 0u64;
    let mut last_warning: Option<tokio::time::Instant> = None;
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
                if fdlimit::is_exhaustion(&e) {
                    drop(spare.take());
                    if let Ok((stream, _)) = listener.accept().await {
                        drop(stream);
                    }
                    spare = std::fs::File::open("/dev/null").ok();
                    refused += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // One line a few seconds at most, however hard the storm.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    tracing::warn!(refused, "accept failed: {e}");
                    last_warning = Some(tokio::time::Instant::now());
                }
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
    let app = tower::ServiceExt::map_request(app, move |mut req: axum::http::Request<_>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
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
