// Why this exists: a benchmark peer for `danmaku bench --protocol plain`. It answers "what would Bun's built-in
// WebSocket pub/sub (uWebSockets underneath) do with the same batching work?": every viewer subscribes to its room's
// topic, and each window one payload per room is published once with server.publish, so uWebSockets writes the same
// bytes to every subscriber. The plain protocol it speaks is described in bench/peers/README.md.
//
// Run: node_modules/.bin/bun bench/peers/bun/server.js [--port 9001] [--batch-ms 100]

function parseArgs(argv) {
  const opts = { port: 9001, batchMs: 100 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    const value = () => (eq >= 0 ? arg.slice(eq + 1) : argv[++i]);
    if (name === "--port") opts.port = toInt(name, value());
    else if (name === "--batch-ms") opts.batchMs = toInt(name, value());
    else if (name === "-h" || name === "--help") {
      process.stderr.write("usage: bun server.js [--port N (9001, 0 = any)] [--batch-ms N (100, 0 = at once)]\n");
      process.exit(0);
    } else {
      process.stderr.write(`unknown argument: ${arg}\n`);
      process.exit(2);
    }
  }
  return opts;
}

function toInt(name, raw) {
  const n = Number(raw);
  if (raw === undefined || raw === "" || !Number.isInteger(n) || n < 0) {
    process.stderr.write(`${name} needs a non-negative integer, got ${raw}\n`);
    process.exit(2);
  }
  return n;
}

const opts = parseArgs(Bun.argv.slice(2));

// room -> array of raw comment texts waiting for the room's window to close.
const pending = new Map();

function flush(room) {
  const comments = pending.get(room);
  pending.delete(room);
  if (!comments || comments.length === 0) return;
  // Encoded once: uWebSockets frames this one payload and writes it to every subscriber of the topic.
  server.publish(room, "[" + comments.join(",") + "]");
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: opts.port,
  fetch(req, srv) {
    const url = new URL(req.url);
    if (url.pathname !== "/ws") return new Response("not found\n", { status: 404 });
    const room = url.searchParams.get("room") || "default";
    if (srv.upgrade(req, { data: { room } })) return undefined;
    return new Response("expected a WebSocket upgrade\n", { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,
    // No idle close and no server pings: the peer does nothing per viewer beyond the fan-out.
    idleTimeout: 0,
    sendPings: false,
    // Keep what a slow viewer has not taken instead of dropping it past Bun's 16 MiB default, like the other peers.
    backpressureLimit: 1024 * 1024 * 1024,
    closeOnBackpressureLimit: false,
    maxPayloadLength: 1024 * 1024,
    open(ws) {
      ws.subscribe(ws.data.room);
    },
    message(ws, message) {
      if (typeof message !== "string") return; // only text frames are comments
      const room = ws.data.room;
      let comments = pending.get(room);
      if (comments === undefined) {
        comments = [];
        pending.set(room, comments);
        if (opts.batchMs === 0) queueMicrotask(() => flush(room));
        else setTimeout(flush, opts.batchMs, room);
      }
      comments.push(message);
    },
  },
});

process.stdout.write(`listening on 127.0.0.1:${server.port}\n`);

function shutdown() {
  server.stop(true);
  process.exit(0);
}
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
