// Why this exists: a benchmark peer for `danmaku bench --protocol plain`. It answers "what does the usual Node
// stack do with the same batching work?": Node's http server plus the `ws` package (noServer mode, permessage-deflate
// off), clients tracked per room in a Set, and each window one Buffer per room built once and handed to
// client.send() for every client of the room (the broadcast pattern of the ws README). The plain protocol it speaks
// is described in bench/peers/README.md.
//
// Run: node bench/peers/node-ws/server.js [--port 9001] [--batch-ms 100]
"use strict";

const http = require("node:http");
const { WebSocketServer, WebSocket } = require("ws");

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
      process.stderr.write("usage: node server.js [--port N (9001, 0 = any)] [--batch-ms N (100, 0 = at once)]\n");
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

const opts = parseArgs(process.argv.slice(2));

const OPEN_BRACKET = Buffer.from("[");
const COMMA = Buffer.from(",");
const CLOSE_BRACKET = Buffer.from("]");

// room -> Set of its clients.
const rooms = new Map();
// room -> array of raw comment Buffers waiting for the room's window to close.
const pending = new Map();

function flush(room) {
  const comments = pending.get(room);
  pending.delete(room);
  const clients = rooms.get(room);
  if (!comments || comments.length === 0 || !clients) return;
  const parts = [OPEN_BRACKET];
  for (let i = 0; i < comments.length; i++) {
    if (i > 0) parts.push(COMMA);
    parts.push(comments[i]);
  }
  parts.push(CLOSE_BRACKET);
  // Built once; ws frames it per client without copying the payload (header + this Buffer).
  const payload = Buffer.concat(parts);
  for (const client of clients) {
    if (client.readyState === WebSocket.OPEN) client.send(payload, { binary: false });
  }
}

const wss = new WebSocketServer({
  noServer: true,
  clientTracking: false, // tracked per room below
  perMessageDeflate: false,
  maxPayload: 1024 * 1024,
});

wss.on("connection", (ws, room) => {
  let clients = rooms.get(room);
  if (clients === undefined) {
    clients = new Set();
    rooms.set(room, clients);
  }
  clients.add(ws);
  ws.on("message", (data, isBinary) => {
    if (isBinary) return; // only text frames are comments
    let comments = pending.get(room);
    if (comments === undefined) {
      comments = [];
      pending.set(room, comments);
      if (opts.batchMs === 0) queueMicrotask(() => flush(room));
      else setTimeout(flush, opts.batchMs, room);
    }
    comments.push(data);
  });
  ws.on("error", () => {}); // a broken viewer just goes away (close follows)
  ws.on("close", () => {
    clients.delete(ws);
    if (clients.size === 0 && rooms.get(room) === clients) rooms.delete(room);
  });
});

const server = http.createServer((req, res) => {
  res.writeHead(404, { "content-type": "text/plain" });
  res.end("not found\n");
});

server.on("upgrade", (req, socket, head) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname !== "/ws") {
    socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    return;
  }
  const room = url.searchParams.get("room") || "default";
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, room));
});

server.listen({ host: "127.0.0.1", port: opts.port, backlog: 1024 }, () => {
  process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
});

function shutdown() {
  process.exit(0); // the kernel closes every socket
}
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
