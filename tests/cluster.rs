//! Cluster mode against a real nats-server with JetStream and real `danmaku gateway` / `danmaku logic`
//! processes: delivery across nodes, ids and history shared by every logic node, cluster-wide online counts, and
//! the faults the cluster must survive (NATS restarting, a gateway or a logic node killed, NATS unreachable at
//! start).

mod common;

use common::nats::{Nats, Proxy, free_port};
use common::*;
use serde_json::{Value, json};

const ROOM: &str = "hall";

fn gateway(nats: &Nats) -> ServerBuilder {
    Server::builder_for("gateway").args([
        "--nats",
        &nats.url(),
        "--presence-interval-ms",
        "100",
        "--online-interval-ms",
        "50",
    ])
}

fn logic(nats: &Nats) -> ServerBuilder {
    Server::builder_for("logic").args(["--nats", &nats.url()])
}

/// Reads comments until one with id `last` arrived; returns every id seen (batches and online noise aside).
async fn ids_until(ws: &mut Ws, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        let v = next_json(ws, true).await;
        assert_eq!(v["type"], "batch", "only batches expected: {v}");
        seen.extend(ids(&batch_msgs(&v)));
    }
    seen
}

/// Reads `online` messages until one says `n`.
async fn until_online(ws: &mut Ws, n: u64) {
    within(format!("online == {n}"), async {
        loop {
            let v = next_json(ws, false).await;
            if v["type"] == "online" && v["count"] == n {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn comments_reach_every_gateway_numbered_once_across_logic_nodes() {
    let nats = Nats::start().await;
    let (l1, l2) = (logic(&nats).start().await, logic(&nats).start().await);
    let (g1, g2) = (gateway(&nats).start().await, gateway(&nats).start().await);
    let mut viewers = Vec::new();
    for g in [&g1, &g2, &g1, &g2] {
        viewers.push(g.connect(ROOM).await.0);
    }
    let (mut other_room, _) = g1.connect("elsewhere").await;
    // A connection of its own for the WebSocket sends: waiting for an ack reads past the batches meanwhile.
    let (mut sender, _) = g2.connect(ROOM).await;
    // Posts alternate between the logic nodes, and some come through a gateway's WebSocket `send`.
    let mut acked = Vec::new();
    for i in 0..30 {
        let id = match i % 3 {
            0 => l1.post_comment(ROOM, &format!("c{i}")).await,
            1 => l2.post_comment(ROOM, &format!("c{i}")).await,
            _ => ws_send_ok(&mut sender, &format!("c{i}"), &format!("n{i}")).await,
        };
        acked.push(id);
    }
    assert_eq!(
        acked,
        (1..=30).collect::<Vec<u64>>(),
        "ids are the room's, in order, from either node"
    );
    for (i, ws) in viewers.iter_mut().enumerate() {
        let seen = ids_until(ws, 30).await;
        assert_eq!(
            seen, acked,
            "viewer {i} gets every comment once, in id order"
        );
    }
    // The other room saw none of them, and numbers its own from 1.
    let other_id = l2.post_comment("elsewhere", "x").await;
    assert_eq!(other_id, 1);
    assert_eq!(ids_until(&mut other_room, 1).await, vec![1]);
    // History is JetStream's, the same from any logic node; a late viewer recovers from any gateway.
    let h1 = ids(&l1.history(ROOM, "since=25").await);
    let h2 = ids(&l2.history(ROOM, "since=25").await);
    assert_eq!(
        (h1.clone(), h2),
        (vec![26, 27, 28, 29, 30], vec![26, 27, 28, 29, 30])
    );
    let (mut late, hello) = g2.connect_query(&format!("room={ROOM}&since=20")).await;
    assert_eq!(hello["recovered"], true, "{hello}");
    assert_eq!(
        ids_until(&mut late, 30).await,
        (21..=30).collect::<Vec<u64>>()
    );
    assert_eq!(l1.room_info(ROOM).await["last_id"], 30);
}

#[tokio::test]
async fn runtime_threads_default_to_every_core_on_logic_nodes_and_half_on_gateways() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let nats = Nats::start().await;
    let (l, g) = (logic(&nats).start().await, gateway(&nats).start().await);
    assert_eq!(
        l.runtime_threads(cores).await,
        cores,
        "a logic node writes no frames"
    );
    assert_eq!(
        g.runtime_threads((cores / 2).max(1)).await,
        (cores / 2).max(1),
        "a gateway's fan-out threads take one per core"
    );
}

#[tokio::test]
async fn online_counts_span_gateways_and_drop_a_dead_one() {
    let nats = Nats::start().await;
    let l = logic(&nats).start().await;
    let (g1, mut g2) = (gateway(&nats).start().await, gateway(&nats).start().await);
    let (mut watcher, _) = g1.connect(ROOM).await;
    let _a = g1.connect(ROOM).await;
    let _b = g2.connect(ROOM).await;
    let _c = g2.connect(ROOM).await;
    let _d = g2.connect(ROOM).await;
    until_online(&mut watcher, 5).await;
    l.wait_online(ROOM, 5).await;
    // SIGKILL: the dead gateway says nothing; its reports expire.
    g2.signal("KILL").await;
    g2.wait_exit().await;
    until_online(&mut watcher, 2).await;
    l.wait_online(ROOM, 2).await;
}

#[tokio::test]
async fn a_nats_restart_loses_nothing_and_repeats_nothing() {
    let mut nats = Nats::start().await;
    let l = logic(&nats).start().await;
    let g = gateway(&nats).start().await;
    let (mut ws, _) = g.connect(ROOM).await;
    for i in 0..10 {
        l.post_comment(ROOM, &format!("before {i}")).await;
    }
    nats.kill().await;
    // While NATS is down, nothing can be stored: the API says so instead of pretending.
    let (status, body) = l
        .post_json(ROOM, &json!({"user": "u", "text": "lost?"}))
        .await;
    assert_eq!(status, 503, "{body}");
    nats.restart().await;
    // The viewer stayed connected; once the gateway is back on NATS, what comes next reaches it.
    let mut last = 10;
    within("a post accepted after the restart", async {
        loop {
            let (status, body) = l
                .post_json(ROOM, &json!({"user": "u", "text": "after"}))
                .await;
            if status == 200 {
                last = body["id"].as_u64().expect("id");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(last > 10, "ids go on from the stored log");
    for i in 0..5 {
        last = l.post_comment(ROOM, &format!("after {i}")).await;
    }
    let seen = ids_until(&mut ws, last).await;
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<u64>>(),
        "every stored comment once, in order"
    );
}

#[tokio::test]
async fn a_gateway_that_lost_nats_keeps_its_viewers_and_recovers_the_gap_from_jetstream() {
    let nats = Nats::start().await;
    let l = logic(&nats).start().await;
    // The gateway reaches NATS through a proxy the test can cut; the logic node does not.
    let proxy = Proxy::start(nats.port).await;
    let g = Server::builder_for("gateway")
        .args(["--nats", &proxy.url()])
        .start()
        .await;
    let (mut ws, _) = g.connect(ROOM).await;
    for i in 0..3 {
        l.post_comment(ROOM, &format!("seen live {i}")).await;
    }
    assert_eq!(ids_until(&mut ws, 3).await, vec![1, 2, 3]);
    proxy.cut();
    // Stored and republished while the gateway is away: the live path loses these.
    for i in 0..7 {
        l.post_comment(ROOM, &format!("missed {i}")).await;
    }
    proxy.restore();
    // Nothing is posted after the gateway is back: only its catch-up from JetStream can bring them.
    assert_eq!(ids_until(&mut ws, 10).await, (4..=10).collect::<Vec<u64>>());
    assert_eq!(g.metric("danmaku_nats_caught_up_total").await, Some(7.0));
    let id = l.post_comment(ROOM, "live again").await;
    assert_eq!(ids_until(&mut ws, id).await, vec![11]);
}

#[tokio::test]
async fn viewers_of_a_killed_gateway_recover_on_another() {
    let nats = Nats::start().await;
    let l = logic(&nats).start().await;
    let (mut g1, g2) = (gateway(&nats).start().await, gateway(&nats).start().await);
    let (mut ws, _) = g1.connect(ROOM).await;
    for i in 0..5 {
        l.post_comment(ROOM, &format!("{i}")).await;
    }
    assert_eq!(ids_until(&mut ws, 5).await, vec![1, 2, 3, 4, 5]);
    g1.signal("KILL").await;
    g1.wait_exit().await;
    for i in 5..12 {
        l.post_comment(ROOM, &format!("{i}")).await;
    }
    let (mut again, hello) = g2.connect_query(&format!("room={ROOM}&since=5")).await;
    assert_eq!(hello["recovered"], true, "{hello}");
    assert_eq!(
        ids_until(&mut again, 12).await,
        (6..=12).collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn sends_go_on_through_the_other_logic_node_and_acked_ones_are_kept() {
    let nats = Nats::start().await;
    let mut l1 = logic(&nats).start().await;
    let l2 = logic(&nats).start().await;
    let g = gateway(&nats).start().await;
    let (mut sender, _) = g.connect(ROOM).await;
    let (mut viewer, _) = g.connect(ROOM).await;
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(ws_send_ok(&mut sender, &format!("a{i}"), &format!("a{i}")).await);
    }
    l1.signal("KILL").await;
    l1.wait_exit().await;
    // A send that reached the dead node gets an error; none is acked without being stored.
    for i in 0..10 {
        send_json(
            &mut sender,
            &json!({"type": "send", "text": format!("b{i}"), "nonce": format!("b{i}")}),
        )
        .await;
        let reply: Value = await_reply(&mut sender).await;
        match reply["type"].as_str() {
            Some("ack") => acked.push(reply["id"].as_u64().expect("id")),
            Some("error") => assert_eq!(reply["code"], "unavailable", "{reply}"),
            _ => panic!("unexpected reply {reply}"),
        }
    }
    assert!(
        acked.len() > 10,
        "sends after the kill are served by the other node"
    );
    let last = *acked.last().expect("acked");
    let seen = ids_until(&mut viewer, last).await;
    for id in &acked {
        assert!(seen.contains(id), "acked comment {id} reached the viewer");
    }
    assert_eq!(
        ids(&l2.history(ROOM, "since=0").await),
        seen,
        "history holds what viewers got"
    );
}

#[tokio::test]
async fn nodes_wait_for_nats_and_say_so() {
    let port = free_port();
    let mut nats = common::nats::Nats::unstarted(port);
    let mut g = Server::builder_for("gateway")
        .args(["--nats", &nats.url()])
        .spawn();
    let mut l = Server::builder_for("logic")
        .args(["--nats", &nats.url()])
        .spawn();
    g.wait_stderr("cannot reach NATS").await;
    l.wait_stderr("cannot reach NATS").await;
    assert!(
        g.try_exit().is_none() && l.try_exit().is_none(),
        "still running, retrying"
    );
    nats.restart().await;
    let (g, l) = (g.listening().await, l.listening().await);
    let (mut ws, _) = g.connect(ROOM).await;
    let id = l.post_comment(ROOM, "at last").await;
    assert_eq!(ids_until(&mut ws, id).await, vec![id]);
}

#[tokio::test]
async fn gateways_share_a_port_and_a_drained_one_sends_its_viewers_away() {
    let nats = Nats::start().await;
    let l = logic(&nats).start().await;
    let mut g1 = gateway(&nats).start().await;
    let port = g1.addr.port();
    // These connect before a second gateway listens: all of them are on g1.
    let mut viewers = Vec::new();
    for _ in 0..4 {
        viewers.push(g1.connect(ROOM).await.0);
    }
    let g2 = gateway(&nats)
        .without_listen_flag()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .start()
        .await;
    assert_eq!(
        g2.addr.port(),
        port,
        "SO_REUSEPORT lets both listen on one port"
    );
    let id = l.post_comment(ROOM, "both").await;
    for ws in &mut viewers {
        assert_eq!(ids_until(ws, id).await, vec![id]);
    }
    // Drained (SIGTERM), g1 closes its viewers with 1001 and exits 0; they come back through the port, to g2,
    // and recover what they missed.
    g1.signal("TERM").await;
    for ws in &mut viewers {
        let frame = read_close_frame(ws)
            .await
            .expect("a close frame with a code");
        assert_eq!(u16::from(frame.code), 1001);
    }
    assert!(g1.wait_exit().await.success());
    let missed = l.post_comment(ROOM, "while moving").await;
    let (mut back, hello) = g2.connect_query(&format!("room={ROOM}&since={id}")).await;
    assert_eq!(hello["recovered"], true, "{hello}");
    assert_eq!(ids_until(&mut back, missed).await, vec![missed]);
}

#[tokio::test]
async fn nodes_stop_promptly_when_nats_went_first() {
    let mut nats = Nats::start().await;
    let mut l = logic(&nats).start().await;
    let mut g = gateway(&nats).start().await;
    let (_ws, _) = g.connect(ROOM).await;
    l.post_comment(ROOM, "one").await;
    nats.kill().await;
    l.signal("TERM").await;
    g.signal("TERM").await;
    assert!(l.wait_exit().await.success(), "logic exits 0");
    assert!(g.wait_exit().await.success(), "gateway exits 0");
}
