//! Prometheus metrics: the recorder every role writes to and `/metrics` renders.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Fan-out durations, in seconds: from 10 µs (a tiny room) to 5 s (a room far beyond one process).
const FANOUT_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

/// Installs the global recorder and describes the metrics, so `/metrics` lists them from the start.
pub fn install() -> PrometheusHandle {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("danmaku_fanout_seconds".into()),
            FANOUT_BUCKETS,
        )
        .and_then(|b| b.install_recorder());
    let handle = match handle {
        Ok(h) => h,
        Err(e) => {
            // Only possible if a recorder is already installed; metrics then go to that one.
            tracing::warn!("metrics recorder not installed: {e}");
            PrometheusBuilder::new().build_recorder().handle()
        }
    };
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    handle
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("danmaku_viewers", "Viewer WebSockets open on this process.");
    describe_gauge!(
        "danmaku_rooms",
        "Rooms with at least one viewer on this process."
    );
    describe_counter!("danmaku_comments_in_total", "Comments accepted.");
    describe_counter!("danmaku_rejected_total", "Comments refused, by error code.");
    describe_counter!(
        "danmaku_rate_limited_total",
        "Requests refused by a rate limit, by kind: comment_user, comment_ip, connections_ip, new_connections_ip."
    );
    describe_counter!(
        "danmaku_flood_closes_total",
        "Viewers closed (1008) for sending far past their rate limit."
    );
    describe_counter!(
        "danmaku_frames_out_total",
        "Frames handed to viewers (one per viewer per frame)."
    );
    describe_counter!(
        "danmaku_bytes_out_total",
        Unit::Bytes,
        "Bytes handed to viewers."
    );
    describe_counter!(
        "danmaku_slow_viewer_closes_total",
        "Viewers closed with 4008 for not keeping up."
    );
    describe_counter!(
        "danmaku_feed_gaps_total",
        "Times a room's feed skipped comments older than history."
    );
    describe_counter!(
        "danmaku_shed_total",
        "Comments a hot room's live frames left out (--room-delivery-cap); history keeps them."
    );
    describe_counter!(
        "danmaku_merged_total",
        "Comments merged into an identical one of the same frame, which carries their count."
    );
    describe_counter!(
        "danmaku_nats_catch_ups_total",
        "Cluster gateway: reads of a room's log from JetStream after a gap in the live feed or a reconnection."
    );
    describe_counter!(
        "danmaku_nats_caught_up_total",
        "Cluster gateway: comments recovered from JetStream that the live feed had not delivered."
    );
    describe_counter!(
        "danmaku_nats_append_conflicts_total",
        "Cluster logic: appends retried because another logic node took the room's next id first."
    );
    describe_histogram!(
        "danmaku_fanout_seconds",
        Unit::Seconds,
        "Time to hand one frame to a room's viewers."
    );
    for gauge in ["danmaku_viewers", "danmaku_rooms"] {
        metrics::gauge!(gauge).set(0.0);
    }
    for counter in [
        "danmaku_comments_in_total",
        "danmaku_frames_out_total",
        "danmaku_bytes_out_total",
        "danmaku_slow_viewer_closes_total",
        "danmaku_feed_gaps_total",
        "danmaku_shed_total",
        "danmaku_merged_total",
        "danmaku_nats_catch_ups_total",
        "danmaku_nats_caught_up_total",
        "danmaku_nats_append_conflicts_total",
    ] {
        metrics::counter!(counter).absolute(0);
    }
}
