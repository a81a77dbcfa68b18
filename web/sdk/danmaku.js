// Browser SDK for the danmaku viewer WebSocket (docs/protocol.md, protocol v1). It exists so that a page gets
// the protocol's delivery guarantee (every comment once, in id order, across reconnects) without re-deriving
// it: the SDK keeps the last id seen, reconnects with `since=` after any unplanned close, drops anything at or
// below that id, and says so (`gap`) when the server cannot vouch for what was missed.
//
// The bookkeeping (backoff, the since/dedup cursor, validation) is in plain functions and a small class that
// need no socket, so they are unit-tested directly; the client itself accepts an injected WebSocket
// constructor and timers for tests.

export const PROTOCOL_VERSION = 1;
export const MODES = Object.freeze(['scroll', 'top', 'bottom']);
export const STATES = Object.freeze(['connecting', 'open', 'reconnecting', 'closed']);

const ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const COLOR_RE = /^#[0-9a-fA-F]{6}$/;
// Rust's char::is_control: the C0 and C1 control characters, which the server refuses.
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
const MAX_USER_CHARS = 32;
const MAX_NONCE_CHARS = 64;

export const CLIENT_DEFAULTS = Object.freeze({
  backoffBaseMs: 500,
  backoffMaxMs: 30000,
  // Fraction of each delay that is random: delay is in [cap * (1 - jitter), cap]. Spreads a server's viewers
  // over time when it goes away, so they do not all come back in the same millisecond.
  backoffJitter: 0.5,
  // A connection that stayed up this long resets the backoff; a server that accepts and drops at once does not.
  stableAfterMs: 5000,
  // Nothing received for this long: send a ping. The server pings every 25 s and closes at 60 s of silence
  // (browsers answer its pings on their own), so this is about noticing a dead path, not keeping it alive.
  pingIntervalMs: 15000,
  // After a ping, anything received proves the path; nothing within this deadline means it is dead.
  pongTimeoutMs: 10000,
  // From socket creation to `hello`.
  connectTimeoutMs: 10000,
  sendTimeoutMs: 10000,
  // Mirrors the server's --max-chars and --max-message-bytes, so obvious refusals need no round trip.
  // Set to 0 to leave the check to the server.
  maxChars: 100,
  maxMessageBytes: 4096,
  maxRetries: Infinity,
  autoConnect: true,
});

/** An error with a protocol `code` (docs/protocol.md#errors) or a client-side one: `timeout`, `disconnected`,
 * `not_connected`, `closed`. A `rate_limited` refusal carries `retryAfterMs`: how long to wait before sending
 * again. */
export class DanmakuError extends Error {
  constructor(code, message, nonce, retryAfterMs) {
    super(message || code);
    this.name = 'DanmakuError';
    this.code = code;
    if (nonce !== undefined) this.nonce = nonce;
    if (retryAfterMs !== undefined) this.retryAfterMs = retryAfterMs;
  }
}

/**
 * Delay before reconnect attempt `attempt` (0 for the first retry): exponential from `baseMs`, capped at
 * `maxMs`, with the top `jitter` fraction random.
 * @returns {number} ms, in [cap * (1 - jitter), cap] where cap = min(maxMs, baseMs * 2^attempt)
 */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 30000, jitter = 0.5 } = {}, random = Math.random) {
  const j = Math.min(1, Math.max(0, jitter));
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, attempt), 40));
  return cap * (1 - j) + random() * cap * j;
}

/** Throws a DanmakuError unless `room` follows the protocol's rule. */
export function validateRoom(room) {
  if (typeof room !== 'string' || !ROOM_RE.test(room)) {
    throw new DanmakuError('invalid_room', 'room must be 1-64 characters of A-Z a-z 0-9 _ . : -');
  }
  return room;
}

/** Trims and checks a user name; returns it, or throws. */
export function validateUser(user) {
  const u = typeof user === 'string' ? user.trim() : '';
  if (!u || [...u].length > MAX_USER_CHARS || CONTROL_RE.test(u)) {
    throw new DanmakuError('invalid_user', 'user must be 1-32 characters without control characters');
  }
  return u;
}

/**
 * Client-side copy of the server's checks for a `send` (same codes, same order), so a typo costs no round trip.
 * @returns {{text:string, color?:string, mode?:string}} the normalized message fields
 */
export function validateComment({ text, color, mode } = {}, { maxChars = 100 } = {}) {
  if (typeof text !== 'string') throw new DanmakuError('bad_json', 'text is required');
  const t = text.trim();
  if (!t) throw new DanmakuError('empty_text', 'text is empty');
  if (CONTROL_RE.test(t)) throw new DanmakuError('invalid_text', 'text must not contain control characters');
  if (maxChars > 0 && [...t].length > maxChars) {
    throw new DanmakuError('text_too_long', `text is longer than ${maxChars} characters`);
  }
  const out = { text: t };
  if (color !== undefined && color !== null && color !== '') {
    if (typeof color !== 'string' || !COLOR_RE.test(color)) throw new DanmakuError('invalid_color', 'color must be #rrggbb');
    out.color = color.toLowerCase();
  }
  if (mode !== undefined && mode !== null && mode !== '') {
    if (!MODES.includes(mode)) throw new DanmakuError('invalid_mode', 'mode must be scroll, top or bottom');
    out.mode = mode;
  }
  return out;
}

/**
 * The viewer endpoint for `url`, which may be a base (`ws://host:8080`, `https://host`) or the endpoint itself
 * (`wss://host/ws`). http(s) becomes ws(s); a bare path `/` becomes `/ws`. A `token` goes in the query because a
 * browser cannot set headers on a WebSocket.
 */
export function buildUrl(url, { room, user, since, token } = {}) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '' || u.pathname === '/') u.pathname = '/ws';
  u.search = '';
  u.hash = '';
  u.searchParams.set('room', room);
  if (user !== undefined && user !== null) u.searchParams.set('user', user);
  if (since !== undefined && since !== null) u.searchParams.set('since', String(since));
  if (token !== undefined && token !== null && token !== '') u.searchParams.set('token', String(token));
  return u.toString();
}

/** `ws(s)://<this page's host>/ws`: the page and the WebSocket share an origin. */
export function wsUrlFromLocation(loc = globalThis.location) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/**
 * The since/dedup bookkeeping, socket-free. `lastId` is the id of the last comment delivered to the
 * application (or the starting position from `hello`); it is what the next connection asks for with `since`.
 */
/** Deleted ids a cursor remembers. */
const MAX_DELETED_REMEMBERED = 512;

export class Cursor {
  /** @param {number|null} [since] a position to start from (e.g. restored from a previous page) */
  constructor(since = null) {
    this.lastId = since ?? null;
    this.duplicates = 0;
    // Ids an admin deleted, remembered (the newest few hundred) in case the comment itself is still on its way.
    this.deleted = new Set();
  }

  /** Takes a `delete`: those ids are never delivered from now on. */
  forget(ids) {
    if (!Array.isArray(ids)) return;
    for (const id of ids) {
      const n = Number(id);
      if (Number.isFinite(n)) this.deleted.add(n);
    }
    for (const old of this.deleted) {
      if (this.deleted.size <= MAX_DELETED_REMEMBERED) break;
      this.deleted.delete(old);
    }
  }

  /** The `since` to put in the next connection's URL, or null for "live only". */
  since() {
    return this.lastId;
  }

  /**
   * Takes a `hello`. Returns a gap description when comments may have been missed, else null.
   * - no position yet: start at hello.last_id (only newer comments follow);
   * - recovered: keep the position, the recovered batches continue from it;
   * - not recovered, last_id below our position: the room's numbering restarted (server lost its history):
   *   continue from hello.last_id, or every new comment would look like a duplicate;
   * - not recovered otherwise: history no longer reaches our position; the kept comments follow, the ones
   *   between our position and the oldest kept are lost.
   * @returns {null | {since:number|null, lastId:number, reason:'history'|'reset'}}
   */
  onHello(hello) {
    const lastId = Number(hello.last_id);
    const prev = this.lastId;
    if (prev === null) {
      this.lastId = Number.isFinite(lastId) ? lastId : 0;
      return hello.recovered === false ? { since: prev, lastId, reason: 'history' } : null;
    }
    if (Number.isFinite(lastId) && lastId < prev) {
      this.lastId = lastId;
      return { since: prev, lastId, reason: 'reset' };
    }
    if (hello.recovered === false) return { since: prev, lastId, reason: 'history' };
    return null;
  }

  /**
   * Filters a batch: returns the comments with an id above the position, in order, and advances it. Anything
   * at or below (a repeat across a reconnect, a misbehaving relay) is dropped and counted. `upto` (the batch's
   * field, when the server left comments out of it: shed or merged) moves the position past them too, so a
   * reconnection does not ask for them again.
   */
  accept(msgs, upto) {
    const out = [];
    if (Array.isArray(msgs)) {
      for (const c of msgs) {
        const id = Number(c?.id);
        if (!Number.isFinite(id)) continue;
        if (this.lastId !== null && id <= this.lastId) {
          this.duplicates++;
          continue;
        }
        this.lastId = id;
        if (this.deleted.has(id)) continue;
        out.push(c);
      }
    }
    const end = Number(upto);
    if (upto !== undefined && upto !== null && Number.isSafeInteger(end) && this.lastId !== null && end > this.lastId) {
      this.lastId = end;
    }
    return out;
  }
}

/** A minimal event emitter: listeners get the payload itself; a throwing listener does not break the client. */
export class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  /** @returns {() => void} unsubscribe */
  on(type, fn) {
    let set = this._handlers.get(type);
    if (!set) this._handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
  }

  once(type, fn) {
    const off = this.on(type, (v) => {
      off();
      fn(v);
    });
    return off;
  }

  emit(type, value) {
    const set = this._handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (e) {
        if (typeof globalThis.reportError === 'function') globalThis.reportError(e);
        else console.error(e);
      }
    }
  }
}

let nonceSeq = 0;

// Ids remembered to recognise this client's own comments; old ones are forgotten first.
const MAX_OWN_IDS = 256;
// Ids of comments delivered while a send waits for its ack (see _onAck); a hot room delivers many meanwhile.
const MAX_SEEN_WHILE_SENDING = 4096;

function remember(set, id, max) {
  set.add(id);
  if (set.size > max) set.delete(set.values().next().value);
}

/**
 * A viewer connection to one room. Options: `url`, `room`, `user`, `since`, `token` (a string, or a function
 * called at each connection, sent as `?token=` on servers that check tokens), and the timings of CLIENT_DEFAULTS.
 *
 * Events (`client.on(type, fn)`): `comment` (COMMENT, one per comment, id order), `batch` (COMMENT[] after
 * dedup), `online` (number), `state` ({state, prev, attempt, code?, reason?, delayMs?}), `hello` (the frame),
 * `gap` ({since, lastId, reason}), `error` ({code, message, nonce?}), `reconnect` ({attempt, delayMs, code,
 * reason}), `close` ({code, reason, wasClean}) for every socket that ends, `shed` ({count, total}: comments the
 * server left out of delivery in a hot room).
 *
 * The client's own comments are delivered when their `ack` arrives (as a `batch` of one and a `comment`, with
 * `own: true`), possibly ahead of id order, because a hot room may shed them from its batches; the copy that a
 * batch may carry later is not delivered again. So each own comment is delivered exactly once.
 */
export class DanmakuClient extends Emitter {
  constructor(options = {}) {
    super();
    const o = { ...CLIENT_DEFAULTS, ...options };
    this.opts = o;
    this.room = validateRoom(o.room);
    this.user = o.user === undefined || o.user === null ? null : validateUser(o.user);
    this.url = o.url ?? wsUrlFromLocation();
    // A function is asked again at every connection, so that a reconnect can carry a fresh token: the server
    // checks it at the upgrade and refuses sends once it has expired.
    if (o.token !== undefined && o.token !== null && typeof o.token !== 'string' && typeof o.token !== 'function') {
      throw new TypeError('DanmakuClient: token must be a string or a function returning one');
    }
    this._token = o.token ?? null;
    this._WS = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WS !== 'function') throw new TypeError('DanmakuClient: no WebSocket constructor available');
    this._setTimeout = o.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this._clearTimeout = o.clearTimeout ?? ((id) => globalThis.clearTimeout(id));
    this._now = o.now ?? (() => Date.now());
    this._random = o.random ?? Math.random;

    this.cursor = new Cursor(o.since ?? null);
    this.online = 0;
    this.state = 'closed';
    this.attempt = 0;
    this.ws = null;
    this._userClosed = true;
    this._pending = new Map(); // nonce -> {resolve, reject, timer, text, color, mode}
    this._ownIds = new Set();
    // Own comments delivered from their ack whose batch copy may still come (ids above the position).
    this._ownShown = new Set();
    // Ids delivered from batches while a send waited for its ack: that comment needs no delivery at its ack.
    this._seenWhileSending = new Set();
    /** Comments the server shed from this room's batches since the client was created. */
    this.shed = 0;
    this._timers = { retry: null, connect: null, idle: null, pong: null };
    this._openedAt = 0;
    if (o.autoConnect) this.connect();
  }

  /** The last comment id delivered (the `since` of the next connection). */
  get lastId() {
    return this.cursor.lastId;
  }

  /** Starts (or restarts after close()) connecting. */
  connect() {
    if (this.ws || this._timers.retry !== null) return;
    this._userClosed = false;
    this.attempt = 0;
    this._setState('connecting');
    this._open();
  }

  /** Closes for good: no reconnect. Pending sends are rejected with `closed`. */
  close(code = 1000, reason = '') {
    this._userClosed = true;
    this._clearTimer('retry');
    this._dropSocket(code, reason);
    this._failPending('closed', 'the client was closed');
    this._setState('closed');
  }

  /** Skips the current backoff wait (e.g. the browser says the network is back). */
  reconnectNow() {
    if (this._userClosed || this._timers.retry === null) return;
    this._clearTimer('retry');
    this._open();
  }

  /**
   * Posts a comment. Resolves with its id when the server acks it; rejects with a DanmakuError carrying the
   * server's code (and for `rate_limited`, `retryAfterMs`), or `timeout` / `disconnected` / `not_connected` /
   * `closed`. After `timeout` or `disconnected` the comment may still have been accepted (and will then arrive as
   * a comment).
   * @returns {Promise<number>}
   */
  send(comment, { timeoutMs = this.opts.sendTimeoutMs } = {}) {
    let fields;
    try {
      fields = validateComment(comment, { maxChars: this.opts.maxChars });
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.state !== 'open' || !this.ws) {
      return Promise.reject(new DanmakuError('not_connected', 'not connected to the room'));
    }
    const nonce = `n${++nonceSeq}-${Math.floor(this._random() * 1e9).toString(36)}`.slice(0, MAX_NONCE_CHARS);
    const frame = JSON.stringify({ type: 'send', ...fields, nonce });
    if (this.opts.maxMessageBytes > 0 && new TextEncoder().encode(frame).length > this.opts.maxMessageBytes) {
      return Promise.reject(new DanmakuError('message_too_large', 'the message is too large'));
    }
    return new Promise((resolve, reject) => {
      const timer = this._setTimeout(() => {
        this._pending.delete(nonce);
        reject(new DanmakuError('timeout', 'no answer from the server', nonce));
      }, timeoutMs);
      this._pending.set(nonce, { resolve, reject, timer, text: fields.text, color: fields.color, mode: fields.mode });
      try {
        this.ws.send(frame);
      } catch (e) {
        this._clearTimeout(timer);
        this._pending.delete(nonce);
        reject(new DanmakuError('disconnected', String(e?.message ?? e), nonce));
      }
    });
  }

  /**
   * Whether a comment is this client's own: its id was acked here, or it matches a send still waiting for its
   * ack (the comment's batch may overtake the ack).
   */
  isOwn(c) {
    if (!c) return false;
    if (c.own === true || this._ownIds.has(c.id)) return true;
    if (this.user === null ? c.user !== 'guest' : c.user !== this.user) return false;
    for (const p of this._pending.values()) if (p.text === c.text) return true;
    return false;
  }

  // ---- connection ----

  _setState(state, extra = {}) {
    if (state === this.state) return;
    const prev = this.state;
    this.state = state;
    this.emit('state', { state, prev, attempt: this.attempt, ...extra });
  }

  _clearTimer(name) {
    if (this._timers[name] !== null) {
      this._clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }

  _open() {
    let ws;
    try {
      const token = typeof this._token === 'function' ? this._token() : this._token;
      const url = buildUrl(this.url, { room: this.room, user: this.user, since: this.cursor.since(), token });
      ws = new this._WS(url);
    } catch (e) {
      this.emit('error', { code: 'connect_failed', message: String(e?.message ?? e) });
      this._scheduleReconnect(1006, 'connect failed');
      return;
    }
    this.ws = ws;
    this._helloSeen = false;
    this._openedAt = this._now();
    ws.onmessage = (ev) => this._onMessage(ws, ev);
    ws.onclose = (ev) => this._onClose(ws, ev?.code ?? 1006, ev?.reason ?? '', !!ev?.wasClean);
    // The browser says nothing useful on error (a refused upgrade is just "error" then close 1006); close follows.
    ws.onerror = () => {};
    this._timers.connect = this._setTimeout(() => {
      this._timers.connect = null;
      if (this.ws === ws && !this._helloSeen) this._lost(ws, 4000, 'connect timeout');
    }, this.opts.connectTimeoutMs);
  }

  _onMessage(ws, ev) {
    if (ws !== this.ws) return;
    this._heard();
    if (typeof ev.data !== 'string') return;
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch {
      this.emit('error', { code: 'bad_frame', message: 'a frame was not JSON' });
      return;
    }
    if (!m || typeof m !== 'object') return;
    switch (m.type) {
      case 'hello':
        this._onHello(m);
        break;
      case 'batch':
        this._onBatch(m);
        break;
      case 'online':
        this._setOnline(m.count);
        break;
      case 'delete':
        if (!Array.isArray(m.ids)) break;
        this.cursor.forget(m.ids);
        this.emit('delete', { room: m.room, ids: m.ids.map(Number).filter(Number.isFinite) });
        break;
      case 'notice':
        if (typeof m.text === 'string') this.emit('notice', { room: m.room, text: m.text });
        break;
      case 'ack':
        this._onAck(m);
        break;
      case 'error':
        this._onError(m);
        break;
      case 'pong':
        break;
      default:
        // Later protocol versions may add messages; ignoring them is the contract.
        break;
    }
  }

  _onHello(m) {
    this._helloSeen = true;
    this._clearTimer('connect');
    const gap = this.cursor.onHello(m);
    this._setOnline(m.online);
    this.emit('hello', m);
    if (gap) this.emit('gap', gap);
    this._setState('open', { attempt: this.attempt });
  }

  _setOnline(n) {
    const count = Number(n);
    if (!Number.isFinite(count)) return;
    this.online = count;
    this.emit('online', count);
  }

  _onBatch(m) {
    const shed = Number(m.shed);
    if (Number.isSafeInteger(shed) && shed > 0) {
      this.shed += shed;
      this.emit('shed', { count: shed, total: this.shed });
    }
    const fresh = [];
    for (const c of this.cursor.accept(m.msgs, m.upto)) {
      // Already delivered from its ack: the position advanced past it above, only the delivery is skipped.
      if (this._ownShown.delete(c.id)) continue;
      if (this._pending.size > 0) remember(this._seenWhileSending, c.id, MAX_SEEN_WHILE_SENDING);
      fresh.push(c);
    }
    // Own comments at or below the position will not come again (their copy was shed or merged).
    const last = this.cursor.lastId;
    if (last !== null) for (const id of this._ownShown) if (id <= last) this._ownShown.delete(id);
    if (fresh.length === 0) return;
    this.emit('batch', fresh);
    for (const c of fresh) this.emit('comment', c);
  }

  _onAck(m) {
    const p = this._pending.get(m.nonce);
    if (!p) return;
    this._pending.delete(m.nonce);
    this._clearTimeout(p.timer);
    remember(this._ownIds, m.id, MAX_OWN_IDS);
    const id = Number(m.id);
    // The batch carrying it may have overtaken the ack; otherwise it may be late, or never come (shed, or merged
    // into someone else's identical comment): the sender sees its comment now, whatever the room's load.
    const delivered = this._seenWhileSending.delete(id);
    if (this._pending.size === 0) this._seenWhileSending.clear();
    if (!delivered && Number.isFinite(id)) {
      const c = {
        id,
        user: this.user ?? 'guest',
        text: p.text,
        color: p.color ?? '#ffffff',
        mode: p.mode ?? 'scroll',
        ts: this._now(),
        own: true,
      };
      const last = this.cursor.lastId;
      if (last === null || id > last) remember(this._ownShown, id, MAX_OWN_IDS);
      this.emit('batch', [c]);
      this.emit('comment', c);
    }
    p.resolve(m.id);
  }

  _onError(m) {
    const retryAfterMs = Number.isFinite(m.retry_after_ms) && m.retry_after_ms > 0 ? m.retry_after_ms : undefined;
    const err = new DanmakuError(String(m.code ?? 'unknown'), String(m.message ?? ''), m.nonce, retryAfterMs);
    let p = m.nonce !== undefined ? this._pending.get(m.nonce) : undefined;
    let nonce = m.nonce;
    // A refusal without a readable nonce (e.g. message_too_large is discarded unread) answers our oldest send:
    // the server answers one connection's messages in order.
    if (!p && m.nonce === undefined && this._pending.size > 0) {
      nonce = this._pending.keys().next().value;
      p = this._pending.get(nonce);
    }
    if (p) {
      this._pending.delete(nonce);
      this._clearTimeout(p.timer);
      p.reject(err);
    }
    const event = { code: err.code, message: err.message, nonce: m.nonce };
    if (retryAfterMs !== undefined) event.retryAfterMs = retryAfterMs;
    this.emit('error', event);
  }

  // Anything from the server proves the path: restart the idle timer, cancel a pong deadline.
  _heard() {
    this._clearTimer('pong');
    this._clearTimer('idle');
    const ws = this.ws;
    this._timers.idle = this._setTimeout(() => {
      this._timers.idle = null;
      if (this.ws !== ws) return;
      try {
        ws.send('{"type":"ping"}');
      } catch {
        // A socket that cannot send is as good as dead; the deadline below handles it.
      }
      this._timers.pong = this._setTimeout(() => {
        this._timers.pong = null;
        if (this.ws === ws) this._lost(ws, 4000, 'heartbeat timeout');
      }, this.opts.pongTimeoutMs);
    }, this.opts.pingIntervalMs);
  }

  _onClose(ws, code, reason, wasClean) {
    if (ws !== this.ws) return;
    this.emit('close', { code, reason, wasClean });
    this._lost(ws, code, reason, false);
  }

  // The socket is gone (closed by the server, or judged dead by us). A dead TCP path may take minutes to
  // report close, so we do not wait for it: detach, close, and move on.
  _lost(ws, code, reason, closeIt = true) {
    if (ws !== this.ws) return;
    this._dropSocket(closeIt ? 4000 : undefined, reason, closeIt);
    this._failPending('disconnected', `connection lost (${code})`);
    if (this._userClosed) {
      this._setState('closed', { code, reason });
      return;
    }
    if (this._now() - this._openedAt >= this.opts.stableAfterMs && this._helloSeenOnLast) this.attempt = 0;
    this._scheduleReconnect(code, reason);
  }

  _dropSocket(code, reason, closeIt = true) {
    this._helloSeenOnLast = this._helloSeen;
    for (const t of ['connect', 'idle', 'pong']) this._clearTimer(t);
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onmessage = ws.onclose = ws.onerror = ws.onopen = null;
    if (closeIt) {
      try {
        ws.close(code, reason);
      } catch {
        // Already closing or closed.
      }
    }
  }

  _failPending(code, message) {
    for (const [nonce, p] of this._pending) {
      this._clearTimeout(p.timer);
      p.reject(new DanmakuError(code, message, nonce));
    }
    this._pending.clear();
    this._seenWhileSending.clear();
  }

  _scheduleReconnect(code, reason) {
    if (this.attempt >= this.opts.maxRetries) {
      this._userClosed = true;
      this.emit('error', { code: 'gave_up', message: `no connection after ${this.attempt} attempts` });
      this._setState('closed', { code, reason });
      return;
    }
    const delayMs = backoffDelay(this.attempt, {
      baseMs: this.opts.backoffBaseMs,
      maxMs: this.opts.backoffMaxMs,
      jitter: this.opts.backoffJitter,
    }, this._random);
    this.attempt++;
    this._setState('reconnecting', { code, reason, delayMs });
    this.emit('reconnect', { attempt: this.attempt, delayMs, code, reason });
    this._timers.retry = this._setTimeout(() => {
      this._timers.retry = null;
      this._open();
    }, delayMs);
  }
}
