//! The push side: holds viewers' WebSockets, grouped by room, and delivers each room's comments as one shared
//! frame per window. It admits them under its limits: `--max-viewers` in all, and per address the connections
//! held and opened per second (both counted in this process: each gateway of a cluster counts its own).

pub mod acked;
pub mod connection;
pub mod fanout;
pub mod hot;
pub mod moderation;
pub mod origin;
pub mod registry;
pub mod replies;
pub mod ring;
pub mod room;
pub mod sockopt;
pub mod upgrade;
pub mod viewer;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::routing::get;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::config::GatewayArgs;
use crate::limits::{KeyedLimiter, Limit, Occupancy, Place, ip_key};
use crate::logic::Ingest;
use crate::protocol::Rejection;
use crate::protocol::ws_codec::close;
use fanout::FanoutPool;
use registry::Registry;
use room::BatchSettings;

/// The wait suggested to an address refused for holding `--max-connections-per-ip` connections: a place frees
/// only when one of them closes, which no clock predicts.
const CONNECTIONS_RETRY: Duration = Duration::from_secs(5);

pub struct Gateway {
    args: GatewayArgs,
    max_message_bytes: usize,
    bus: Arc<Bus>,
    ingest: Arc<dyn Ingest>,
    auth: Arc<Auth>,
    origins: origin::OriginPolicy,
    registry: Registry,
    next_id: AtomicU64,
    tasks: TaskTracker,
    /// Set once shutdown began: a viewer that finishes its handshake after that is closed at once.
    stopping: AtomicBool,
    /// Viewers admitted (handshake accepted, connection not yet ended), against `args.max_viewers`.
    admitted: AtomicUsize,
    /// Connections per address (handshake accepted, connection not yet ended), against `--max-connections-per-ip`.
    per_ip: Arc<Occupancy<IpAddr>>,
    /// Handshakes per address, against `--new-connections-per-ip`.
    new_per_ip: KeyedLimiter<IpAddr>,
}

impl Gateway {
    pub fn new(
        args: GatewayArgs,
        max_message_bytes: usize,
        bus: Arc<Bus>,
        ingest: Arc<dyn Ingest>,
        auth: Arc<Auth>,
        tasks: TaskTracker,
    ) -> std::io::Result<Self> {
        let settings = BatchSettings {
            window: args.batch_window(),
            online_interval: Duration::from_millis(args.online_interval_ms.max(10)),
            delivery_cap: args.room_delivery_cap,
            merge_identical: args.merge_identical,
        };
        let threads = match args.fanout_shards {
            0 => crate::config::cores(),
            n => n,
        };
        let pool = Arc::new(FanoutPool::new(threads)?);
        Ok(Gateway {
            registry: Registry::new(bus.clone(), settings, pool, tasks.clone()),
            origins: origin::OriginPolicy::new(&args.allowed_origins),
            per_ip: Occupancy::new(args.max_connections_per_ip),
            new_per_ip: KeyedLimiter::new(
                args.new_connections_per_ip,
                args.new_connections_burst_per_ip,
            ),
            args,
            max_message_bytes,
            bus,
            ingest,
            auth,
            next_id: AtomicU64::new(1),
            tasks,
            stopping: AtomicBool::new(false),
            admitted: AtomicUsize::new(0),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/ws",
                get(|State(gw): State<Arc<Gateway>>, req: Request| upgrade::handle(gw, req)),
            )
            .with_state(self.clone())
    }

    /// Sends every viewer close 1001 (their connection tasks end once it is written).
    pub fn close_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for viewer in self.registry.all_viewers() {
            viewer.close(close::GOING_AWAY);
        }
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.args.handshake_timeout_secs.max(1))
    }
}

impl Gateway {
    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Takes one of the `--max-viewers` places, or says the gateway is full.
    fn admit(self: &Arc<Self>) -> Option<Admission> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.args.max_viewers {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission(self.clone()))
    }

    /// Takes a place for a new connection from `ip` under the per-address limits (an unknown address has none),
    /// or says why not and when to retry. A refusal for holding too many takes no token from the new-connection
    /// bucket.
    fn admit_address(&self, ip: Option<IpAddr>) -> Result<Place<IpAddr>, Rejection> {
        let Some(ip) = ip.map(ip_key) else {
            return Ok(Place::free());
        };
        let place = self
            .per_ip
            .take(ip)
            .ok_or_else(|| Limit::ConnectionsPerIp.refuse(CONNECTIONS_RETRY))?;
        self.new_per_ip
            .check(&ip)
            .map_err(|wait| Limit::NewConnectionsPerIp.refuse(wait))?;
        Ok(place)
    }
}

/// A viewer's place in the gateway, given back when its connection ends.
struct Admission(Arc<Gateway>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}
