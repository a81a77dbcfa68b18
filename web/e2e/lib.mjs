// Shared helpers of the end-to-end tests and the renderer benchmark: the real server binary, headless Chromium
// (playwright-core driving the system's /usr/bin/chromium, never a downloaded browser), HTTP posts, a tiny TCP
// proxy that can be cut and restored, and waits on the demo page's test hooks.
//
// Nothing here sleeps to let something happen: every wait is on an event (a stdout line, a process exit, a
// page.waitForFunction on the page's hooks); timeouts only guard against hangs.

import { after, before } from 'node:test';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const E2E_DIR = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(E2E_DIR, '../..');
export const ARTIFACTS = path.join(REPO, 'target', 'e2e');

/** Hang guard for one wait on the page (not a timing threshold: a healthy run takes a small fraction of it). */
export const WAIT_MS = 30_000;

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// Without these, Chromium tries to reach Google's services and hangs on a closed network.
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export function log(...args) {
  // Test output: what happens, step by step (node --test shows it with the test's result).
  console.log('   ', ...args);
}

/**
 * The server binary: $DANMAKU_BIN, else target/release/danmaku, else target/debug/danmaku. When both builds
 * exist and the debug one is newer, the release one is stale (e.g. built before the web client was embedded):
 * the newer one is used.
 */
export function serverBinary() {
  if (process.env.DANMAKU_BIN) return process.env.DANMAKU_BIN;
  const release = path.join(REPO, 'target', 'release', 'danmaku');
  const debug = path.join(REPO, 'target', 'debug', 'danmaku');
  const hasR = existsSync(release);
  const hasD = existsSync(debug);
  if (hasR && hasD) return statSync(debug).mtimeMs > statSync(release).mtimeMs ? debug : release;
  if (hasR) return release;
  if (hasD) return debug;
  throw new Error(`no server binary: build it (cargo build --release) or set DANMAKU_BIN (looked for ${release}, ${debug})`);
}

/**
 * The rate limits a public server keeps, lifted: every page and client of these tests comes from 127.0.0.1, and
 * the flood test sends 2000 comments/s. A test that passes one of these flags itself keeps its own value.
 */
const NO_LIMITS = {
  '--comment-rate-per-user': '0',
  '--comment-rate-per-ip': '0',
  '--max-connections-per-ip': '0',
  '--new-connections-per-ip': '0',
};

/**
 * Starts `danmaku serve --listen 127.0.0.1:PORT` (port 0: any free port), rate limits lifted (see NO_LIMITS), and
 * resolves once it printed `listening on ADDR`. Returns {addr, port, url, proc, stop(), kill(), stderr()}.
 */
export function startServer({ port = 0, args = [], bin = serverBinary() } = {}) {
  const lifted = Object.entries(NO_LIMITS)
    .filter(([flag]) => !args.some((a) => a === flag || a.startsWith(`${flag}=`)))
    .flat();
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, ...lifted, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DANMAKU_LOG: process.env.DANMAKU_LOG || 'warn' },
    });
    let err = '';
    proc.stderr.on('data', (d) => {
      err += d;
      if (err.length > 64 * 1024) err = err.slice(-32 * 1024);
    });
    const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
    const guard = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`server did not print "listening on" within 20 s; stderr:\n${err}`));
    }, 20_000);
    proc.once('error', (e) => {
      clearTimeout(guard);
      reject(e);
    });
    exited.then(({ code, signal }) => {
      clearTimeout(guard);
      reject(new Error(`server exited before listening (code ${code}, signal ${signal}); stderr:\n${err}`));
    });
    const rl = readline.createInterface({ input: proc.stdout });
    rl.once('line', (line) => {
      clearTimeout(guard);
      const m = /^listening on (\S+)$/.exec(line.trim());
      if (!m) {
        proc.kill('SIGKILL');
        reject(new Error(`unexpected first stdout line: ${JSON.stringify(line)}`));
        return;
      }
      const addr = m[1];
      const srv = {
        addr,
        port: Number(addr.slice(addr.lastIndexOf(':') + 1)),
        url: `http://${addr}`,
        proc,
        exited,
        stderr: () => err,
        /** SIGTERM (graceful: viewers get 1001), SIGKILL after a guard. */
        async stop() {
          if (proc.exitCode !== null || proc.signalCode !== null) return;
          proc.kill('SIGTERM');
          const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
          await exited;
          clearTimeout(t);
        },
        /** SIGKILL: the process dies at once, its sockets are reset by the kernel. */
        async kill() {
          if (proc.exitCode !== null || proc.signalCode !== null) return;
          proc.kill('SIGKILL');
          await exited;
        },
      };
      resolve(srv);
    });
  });
}

/** Headless Chromium from the system package. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM_PATH)) throw new Error(`no Chromium at ${CHROMIUM_PATH} (apt-get install chromium, or set CHROMIUM_PATH)`);
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
}

/**
 * A new page (in its own context unless one is given) that records uncaught page errors, so a test can assert
 * that none happened.
 */
export async function newPage(browser, contextOptions = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...contextOptions });
  const page = await context.newPage();
  page.pageErrors = [];
  page.on('pageerror', (e) => page.pageErrors.push(String(e?.stack ?? e)));
  if (process.env.E2E_CONSOLE) page.on('console', (m) => log(`[page ${m.type()}] ${m.text()}`));
  return page;
}

/** A unique, valid room name. */
export function roomName(prefix) {
  return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Opens the demo page for `room` and waits for the test hooks and an open connection. */
export async function openRoom(page, base, room, extra = '') {
  await page.goto(`${base}/?room=${encodeURIComponent(room)}&user=e2e${extra}`);
  await waitConnection(page, 'open');
}

export async function waitConnection(page, state, timeout = WAIT_MS) {
  await page.waitForFunction(
    (s) => !!window.danmaku && document.documentElement.dataset.connection === s,
    state,
    { timeout },
  );
}

// Keep-alive agent for posting many comments: a few sockets, reused.
const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });

/** POST /api/rooms/ROOM/danmaku; resolves with the comment's id. */
export function postComment(base, room, comment) {
  const body = JSON.stringify({ user: 'u', ...comment });
  const u = new URL(`${base}/api/rooms/${encodeURIComponent(room)}/danmaku`);
  return new Promise((resolve, reject) => {
    const req = http.request(u, {
      method: 'POST',
      agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { data += d; });
      res.on('end', () => {
        if (res.statusCode !== 200) {
          reject(new Error(`POST ${u.pathname}: HTTP ${res.statusCode} ${data}`));
          return;
        }
        try {
          resolve(JSON.parse(data).id);
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * A lean HTTP/1.1 client for posting many comments fast: `connections` keep-alive sockets, each with up to
 * `pipeline` requests written ahead (answers come back in order on a connection). Several times cheaper per
 * request than node:http, which matters when the test, the server and Chromium share two cores.
 * `post(room, comment)` resolves with the comment's id.
 */
export function createPoster(base, { connections = 8, pipeline = 16 } = {}) {
  const { hostname, port } = new URL(base);
  const conns = [];
  const waiting = []; // requests not yet written: {bytes, resolve, reject}
  let closed = false;

  function open() {
    const c = { sock: net.connect(Number(port), hostname), pending: [], buf: Buffer.alloc(0), ready: false };
    c.sock.setNoDelay(true);
    c.sock.on('connect', () => {
      c.ready = true;
      fill();
    });
    c.sock.on('data', (d) => {
      c.buf = c.buf.length ? Buffer.concat([c.buf, d]) : d;
      for (;;) {
        const end = c.buf.indexOf('\r\n\r\n');
        if (end < 0) break;
        const head = c.buf.subarray(0, end).toString('latin1');
        const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        const len = m ? Number(m[1]) : 0;
        if (c.buf.length < end + 4 + len) break;
        const body = c.buf.subarray(end + 4, end + 4 + len).toString('utf8');
        c.buf = c.buf.subarray(end + 4 + len);
        const status = Number(head.slice(9, 12));
        const req = c.pending.shift();
        if (!req) continue;
        if (status !== 200) req.reject(new Error(`POST: HTTP ${status} ${body}`));
        else {
          try {
            req.resolve(JSON.parse(body).id);
          } catch (e) {
            req.reject(e);
          }
        }
      }
      fill();
    });
    let failed = false;
    const fail = (e) => {
      if (failed) return;
      failed = true;
      const i = conns.indexOf(c);
      if (i >= 0) conns.splice(i, 1);
      for (const r of c.pending.splice(0)) r.reject(e ?? new Error('connection closed'));
      if (!closed) {
        conns.push(open());
      }
    };
    c.sock.on('error', fail);
    c.sock.on('close', () => fail(new Error('connection closed')));
    return c;
  }

  function fill() {
    for (const c of conns) {
      if (!c.ready) continue;
      const chunks = [];
      while (waiting.length && c.pending.length < pipeline) {
        const r = waiting.shift();
        c.pending.push(r);
        chunks.push(r.bytes);
      }
      if (chunks.length) c.sock.write(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
    }
  }

  for (let i = 0; i < connections; i++) conns.push(open());

  return {
    post(room, comment) {
      const body = Buffer.from(JSON.stringify({ user: 'u', ...comment }));
      const head = `POST /api/rooms/${encodeURIComponent(room)}/danmaku HTTP/1.1\r\nhost: ${hostname}:${port}\r\n`
        + `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`;
      return new Promise((resolve, reject) => {
        waiting.push({ bytes: Buffer.concat([Buffer.from(head, 'latin1'), body]), resolve, reject });
        fill();
      });
    },
    close() {
      closed = true;
      for (const c of conns) c.sock.destroy();
    },
  };
}

/**
 * A TCP proxy on 127.0.0.1 (a free port, kept across cut/restore) to `targetPort`. `cut()` resets every
 * connection and stops listening (new connections are refused, like a dead path); `restore()` listens again on
 * the same port.
 */
export async function startProxy(targetPort) {
  const conns = new Set();
  let server = null;
  let port = 0;
  const listen = () => new Promise((resolve, reject) => {
    server = net.createServer((client) => {
      const upstream = net.connect(targetPort, '127.0.0.1');
      const pair = { client, upstream };
      conns.add(pair);
      const end = () => {
        conns.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('error', end);
      upstream.on('error', end);
      client.on('close', end);
      upstream.on('close', end);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      port = server.address().port;
      resolve();
    });
  });
  await listen();
  const proxy = {
    get port() {
      return port;
    },
    get connections() {
      return conns.size;
    },
    async cut() {
      const s = server;
      server = null;
      const closed = new Promise((r) => s.close(() => r()));
      for (const { client, upstream } of [...conns]) {
        client.resetAndDestroy();
        upstream.destroy();
      }
      conns.clear();
      await closed;
    },
    async restore() {
      await listen();
    },
    async close() {
      if (server) await proxy.cut();
    },
  };
  return proxy;
}

export function ensureDir(dir) {
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * Starts a server and a browser before the calling file's tests and stops both after them. A test that restarts
 * the server puts the new one in `env.server`, which is then the one stopped.
 */
export function withServerAndBrowser() {
  const env = { server: undefined, browser: undefined };
  before(async () => {
    env.server = await startServer();
    log(`server ${env.server.addr} (${env.server.proc.spawnfile})`);
    env.browser = await launchBrowser();
    log(`Chromium ${env.browser.version()}`);
  });
  after(async () => {
    await env.browser?.close();
    await env.server?.stop();
  });
  return env;
}
