//! The push side: holds viewers' WebSockets, grouped by room, and delivers each room's comments as one shared
//! frame per window.

pub mod connection;
pub mod fanout;
pub mod hot;
pub mod moderation;
pub mod origin;
pub mod registry;
pub mod room;
pub mod upgrade;
pub mod viewer;

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
use crate::logic::Ingest;
use crate::protocol::ws_codec::close;
use fanout::FanoutPool;
use registry::Registry;
use room::BatchSettings;

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
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let pool = Arc::new(FanoutPool::new(threads)?);
        Ok(Gateway {
            registry: Registry::new(bus.clone(), settings, pool, tasks.clone()),
            origins: origin::OriginPolicy::new(&args.allowed_origins),
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
}

/// A viewer's place in the gateway, given back when its connection ends.
struct Admission(Arc<Gateway>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}
