//! The cluster roles: `danmaku gateway` and `danmaku logic`, each a process on the NATS bus.
//!
//! Either one starts by reaching NATS and setting up its side of JetStream, retrying and saying why until it can
//! (so a cluster may be started in any order); only then does it listen, and print `listening on ADDR`. Both
//! bind with SO_REUSEPORT, so several of them can share one address on a machine whose per-process file limit
//! caps the viewers one process can hold.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::{
    auth, bind, common_routes, metrics, reload_on_hangup, run, size_for_viewers, stop_on_signals,
};
use crate::bus::Bus;
use crate::bus::nats::{self, NatsBus, Role};
use crate::config::{GatewayNodeArgs, LogicNodeArgs, NatsArgs};
use crate::gateway::Gateway;
use crate::logic::remote::{self, RemoteIngest};
use crate::logic::{self, Logic};

/// How long a stopping node waits for NATS to take its last messages.
const NATS_GOODBYE: Duration = Duration::from_secs(2);

/// Connects to NATS and starts the bus; `None` when stopped first.
async fn join(
    nats: &NatsArgs,
    name: &str,
    role: Role,
    history: usize,
    max_rooms: usize,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<NatsBus> {
    tracing::info!(url = %nats.nats, "connecting to NATS");
    let (client, connected) = nats::connect(&nats.nats, name, stop).await?;
    let options = nats::Options {
        role,
        history,
        max_rooms,
        presence_interval: nats.presence_interval(),
    };
    NatsBus::start(client, connected, options, stop).await
}

/// Runs a gateway until SIGINT or SIGTERM: its viewers are then closed with 1001, so they reconnect elsewhere.
pub async fn gateway(mut args: GatewayNodeArgs) -> std::io::Result<()> {
    let auth = auth(&args.auth)?;
    size_for_viewers(&mut args.gateway)?;
    let stop = stop_on_signals();
    let Some(bus) = join(
        &args.nats,
        "danmaku-gateway",
        Role::Gateway,
        args.history,
        0,
        &stop,
    )
    .await
    else {
        return Ok(());
    };
    let ingest = Arc::new(RemoteIngest::new(
        bus.client().clone(),
        Duration::from_secs(args.ingest_timeout_secs.max(1)),
    ));
    let listener = bind(args.listen, true)?;
    let addr = listener.local_addr()?;
    let prometheus = metrics::install();
    let tasks = TaskTracker::new();
    let gateway = Arc::new(Gateway::new(
        args.gateway.clone(),
        args.max_message_bytes,
        Arc::new(Bus::Nats(Box::new(bus))),
        ingest,
        auth,
        tasks.clone(),
    )?);
    gateway.follow_control();
    let app = gateway
        .routes()
        .merge(crate::web::routes())
        .merge(common_routes(prometheus));
    println!("listening on {addr}");
    tracing::info!(%addr, nats = %args.nats.nats, "gateway serving");
    let grace = Duration::from_secs(args.shutdown_timeout_secs);
    run(listener, app, Some(&gateway), &tasks, &stop, grace).await;
    Ok(())
}

/// Runs a logic node until SIGINT or SIGTERM: it stops taking comments, answers the ones under way, and exits.
pub async fn logic(args: LogicNodeArgs) -> std::io::Result<()> {
    let auth = auth(&args.auth)?;
    let stop = stop_on_signals();
    let Some(bus) = join(
        &args.nats,
        "danmaku-logic",
        Role::Logic,
        args.logic.history,
        args.logic.max_rooms,
        &stop,
    )
    .await
    else {
        return Ok(());
    };
    let client = bus.client().clone();
    // Before the logic: it takes its metric handles from the recorder when it is made.
    let prometheus = metrics::install();
    let logic = Arc::new(
        Logic::new(Arc::new(Bus::Nats(Box::new(bus))), args.logic.clone(), auth)
            .map_err(std::io::Error::other)?,
    );
    reload_on_hangup(logic.clone());
    logic.follow_control();
    let tasks = TaskTracker::new();
    let answering = tokio::spawn(remote::answer(
        logic.clone(),
        client.clone(),
        tasks.clone(),
        stop.clone(),
    ));
    let listener = bind(args.listen, true)?;
    let addr = listener.local_addr()?;
    let app = logic::http::routes(logic.clone())
        .merge(logic::admin::routes(logic))
        .merge(common_routes(prometheus));
    println!("listening on {addr}");
    tracing::info!(%addr, nats = %args.nats.nats, "logic node serving");
    let grace = Duration::from_secs(args.shutdown_timeout_secs);
    run(listener, app, None, &tasks, &stop, grace).await;
    // Replies published by the last requests leave before the process does; if NATS is gone already (the whole
    // cluster stopping at once), there is nobody to tell, and the wait is bounded.
    let _ = tokio::time::timeout(NATS_GOODBYE, answering).await;
    let _ = tokio::time::timeout(NATS_GOODBYE, client.flush()).await;
    Ok(())
}
