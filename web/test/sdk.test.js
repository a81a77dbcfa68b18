// Unit tests of the SDK (sdk/danmaku.js): backoff bounds, the since/dedup cursor, and the client's recovery,
// heartbeat and send logic against a fake WebSocket and a fake clock, so every path runs in milliseconds and
// deterministically.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DanmakuClient, DanmakuError, Cursor, backoffDelay, buildUrl, validateComment, validateRoom, wsUrlFromLocation,
} from '../sdk/danmaku.js';

class FakeClock {
  constructor() {
    this.t = 0;
    this.seq = 0;
    this.timers = new Map();
  }
  setTimeout = (fn, ms) => {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  };
  clearTimeout = (id) => {
    this.timers.delete(id);
  };
  now = () => this.t;
  /** Runs every timer due within `ms`, in time order. */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, tm] of this.timers) if (tm.at <= end && (!next || tm.at < next[1].at)) next = [id, tm];
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
}

class FakeWS {
  static all = [];
  static get last() {
    return FakeWS.all[FakeWS.all.length - 1];
  }
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = null;
    this.onmessage = this.onclose = this.onerror = this.onopen = null;
    FakeWS.all.push(this);
  }
  get params() {
    return new URL(this.url).searchParams;
  }
  send(data) {
    if (this.closed) throw new Error('closed');
    this.sent.push(JSON.parse(data));
  }
  close(code, reason) {
    this.closed = { code, reason };
  }
  // server side
  deliver(obj) {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }
  hello(last_id, recovered = true, online = 3) {
    this.deliver({ type: 'hello', room: 'r1', online, last_id, recovered });
  }
  batch(...ids) {
    this.deliver({ type: 'batch', room: 'r1', msgs: ids.map((id) => comment(id)) });
  }
  serverClose(code, reason = '') {
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }
}

function comment(id, extra = {}) {
  return { id, user: 'alice', text: `c${id}`, color: '#ffffff', mode: 'scroll', ts: 1 + id, ...extra };
}

function setup(opts = {}) {
  FakeWS.all = [];
  const clock = new FakeClock();
  const client = new DanmakuClient({
    url: 'ws://example.test:8080', room: 'r1', user: 'bob',
    WebSocket: FakeWS, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now,
    random: () => 0.5,
    ...opts,
  });
  const events = { comment: [], state: [], gap: [], online: [], error: [], reconnect: [] };
  for (const k of Object.keys(events)) client.on(k, (v) => events[k].push(v));
  return { client, clock, events };
}

test('backoff: exponential, capped, jitter within bounds', () => {
  const opts = { baseMs: 500, maxMs: 30000, jitter: 0.5 };
  for (let attempt = 0; attempt < 30; attempt++) {
    const cap = Math.min(30000, 500 * 2 ** attempt);
    const lo = backoffDelay(attempt, opts, () => 0);
    const hi = backoffDelay(attempt, opts, () => 0.999999);
    assert.ok(Math.abs(lo - cap / 2) < 1e-6, `attempt ${attempt}: low ${lo}`);
    assert.ok(hi <= cap && hi > cap * 0.99, `attempt ${attempt}: high ${hi}`);
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(attempt, opts);
      assert.ok(d >= cap / 2 && d <= cap, `attempt ${attempt}: ${d}`);
    }
  }
  assert.equal(backoffDelay(1000, opts, () => 0.5), 30000 * 0.75);
  assert.equal(backoffDelay(3, { baseMs: 100, maxMs: 10000, jitter: 0 }, () => 0.9), 800);
  // Full jitter spreads over [0, cap].
  assert.equal(backoffDelay(2, { baseMs: 100, maxMs: 10000, jitter: 1 }, () => 0), 0);
});

test('cursor: drops ids at or below the position, advances in order', () => {
  const cur = new Cursor();
  assert.equal(cur.since(), null);
  assert.equal(cur.onHello({ last_id: 10, recovered: true }), null);
  assert.equal(cur.since(), 10);
  assert.deepEqual(cur.accept([comment(9), comment(10), comment(11), comment(12)]).map((c) => c.id), [11, 12]);
  assert.deepEqual(cur.accept([comment(12), comment(13)]).map((c) => c.id), [13]);
  assert.equal(cur.duplicates, 3);
  assert.equal(cur.since(), 13);
});

test('cursor: recovered=false keeps the kept comments (history) or restarts from last_id (reset)', () => {
  const cur = new Cursor(100);
  assert.deepEqual(cur.onHello({ last_id: 2000, recovered: false }), { since: 100, lastId: 2000, reason: 'history' });
  // The kept part of the gap (ids above 100) still arrives and is accepted.
  assert.deepEqual(cur.accept([comment(1001)]).map((c) => c.id), [1001]);

  const cur2 = new Cursor(500);
  assert.deepEqual(cur2.onHello({ last_id: 3, recovered: false }), { since: 500, lastId: 3, reason: 'reset' });
  assert.equal(cur2.since(), 3);
  assert.deepEqual(cur2.accept([comment(4), comment(5)]).map((c) => c.id), [4, 5]);
});

test('cursor: upto moves the position past comments a batch left out (shed or merged)', () => {
  const cur = new Cursor();
  cur.onHello({ last_id: 10, recovered: true });
  assert.deepEqual(cur.accept([comment(11), comment(13)], 15).map((c) => c.id), [11, 13]);
  assert.equal(cur.since(), 15, 'a reconnection does not ask for 14 and 15 again');
  assert.deepEqual(cur.accept([comment(16)]).map((c) => c.id), [16]);
  // An upto behind the position, or unreadable, changes nothing.
  cur.accept([], 12);
  cur.accept([], 'x');
  cur.accept([], null);
  assert.equal(cur.since(), 16);
  // Nothing delivered but upto given: the position still moves.
  cur.accept([], 20);
  assert.equal(cur.since(), 20);
  assert.deepEqual(cur.accept([comment(17), comment(21)]).map((c) => c.id), [21]);
});

test('urls: base, endpoint, http(s), since and user', () => {
  assert.equal(buildUrl('ws://h:1', { room: 'r1' }), 'ws://h:1/ws?room=r1');
  assert.equal(buildUrl('https://h/', { room: 'a.b', user: 'å b', since: 7 }), 'wss://h/ws?room=a.b&user=%C3%A5+b&since=7');
  assert.equal(buildUrl('ws://h/custom/ws?x=1', { room: 'r', since: 0 }), 'ws://h/custom/ws?room=r&since=0');
  assert.equal(buildUrl('ws://h', { room: 'r', token: 'a.b-c_d' }), 'ws://h/ws?room=r&token=a.b-c_d');
  assert.equal(buildUrl('ws://h', { room: 'r', token: 'x y+z/=&since=9' }), 'ws://h/ws?room=r&token=x+y%2Bz%2F%3D%26since%3D9');
  assert.equal(buildUrl('ws://h', { room: 'r', token: '' }), 'ws://h/ws?room=r');
  assert.equal(wsUrlFromLocation({ protocol: 'https:', host: 'x.test:8443' }), 'wss://x.test:8443/ws');
  assert.equal(wsUrlFromLocation({ protocol: 'http:', host: '127.0.0.1:8080' }), 'ws://127.0.0.1:8080/ws');
  assert.throws(() => validateRoom('bad room'), (e) => e.code === 'invalid_room');
});

test('client-side validation mirrors the server codes', () => {
  const code = (f) => {
    try {
      f();
    } catch (e) {
      return e.code;
    }
    return 'ok';
  };
  assert.equal(code(() => validateComment({ text: '  ' })), 'empty_text');
  assert.equal(code(() => validateComment({ text: 'a\nb' })), 'invalid_text');
  assert.equal(code(() => validateComment({ text: 'x'.repeat(101) })), 'text_too_long');
  assert.equal(code(() => validateComment({ text: '字'.repeat(100) })), 'ok');
  assert.equal(code(() => validateComment({ text: 'a', color: 'red' })), 'invalid_color');
  assert.equal(code(() => validateComment({ text: 'a', mode: 'left' })), 'invalid_mode');
  assert.deepEqual(validateComment({ text: ' hi ', color: '#FF0000', mode: 'top' }), { text: 'hi', color: '#ff0000', mode: 'top' });
});

test('recovery: reconnect after 1001 with since=<last id>, no loss and no repeat', () => {
  const { client, clock, events } = setup();
  const ws1 = FakeWS.last;
  assert.equal(ws1.params.get('room'), 'r1');
  assert.equal(ws1.params.get('user'), 'bob');
  assert.equal(ws1.params.has('since'), false, 'first connection is live only');
  assert.equal(client.state, 'connecting');
  ws1.hello(10);
  assert.equal(client.state, 'open');
  assert.deepEqual(events.online, [3]);
  ws1.batch(11, 12);
  ws1.batch(12, 13); // a repeat must not reach the app
  ws1.serverClose(1001, 'going away');
  assert.equal(client.state, 'reconnecting');
  assert.equal(events.reconnect.length, 1);
  const d = events.reconnect[0].delayMs;
  assert.ok(d >= 250 && d <= 500, `first delay ${d}`);
  assert.equal(FakeWS.all.length, 1);
  clock.advance(d);
  const ws2 = FakeWS.last;
  assert.equal(FakeWS.all.length, 2);
  assert.equal(ws2.params.get('since'), '13');
  ws2.hello(15, true);
  ws2.batch(12, 13, 14, 15); // overlap from a relay: dropped below the position
  ws2.batch(16);
  assert.deepEqual(events.comment.map((c) => c.id), [11, 12, 13, 14, 15, 16]);
  assert.deepEqual(events.state.map((s) => s.state), ['open', 'reconnecting', 'open']);
  assert.equal(events.gap.length, 0);
  assert.equal(client.lastId, 16);
  client.close();
});

test('token: sent URL-encoded as ?token= on every connection; a function is asked again for each', () => {
  const plain = setup({ token: 'eyJ.a+b/c=' });
  assert.equal(FakeWS.last.params.get('token'), 'eyJ.a+b/c=', 'decodes back to the token itself');
  assert.match(FakeWS.last.url, /[?&]token=eyJ\.a%2Bb%2Fc%3D(&|$)/);
  FakeWS.last.hello(0);
  FakeWS.last.serverClose(1001);
  plain.clock.advance(plain.events.reconnect.at(-1).delayMs);
  assert.equal(FakeWS.all.length, 2);
  assert.equal(FakeWS.last.params.get('token'), 'eyJ.a+b/c=', 'the reconnect carries it too');
  plain.client.close();

  let n = 0;
  const fresh = setup({ token: () => `t${++n}` });
  assert.equal(FakeWS.last.params.get('token'), 't1');
  FakeWS.last.hello(0);
  FakeWS.last.serverClose(1006);
  fresh.clock.advance(fresh.events.reconnect.at(-1).delayMs);
  assert.equal(FakeWS.last.params.get('token'), 't2', 'a fresh token for the new connection');
  fresh.client.close();

  setup().client.close();
  assert.equal(FakeWS.last.params.has('token'), false, 'no token: none sent');
  assert.throws(() => setup({ token: 42 }), TypeError);
});

test('recovery: 4008, 4000, 1002 and 1006 all reconnect; backoff grows while connections fail', () => {
  const { client, clock, events } = setup();
  FakeWS.last.hello(0);
  FakeWS.last.batch(1);
  for (const code of [4008, 4000, 1002, 1006]) {
    FakeWS.last.serverClose(code);
    assert.equal(client.state, 'reconnecting', `after ${code}`);
    clock.advance(events.reconnect.at(-1).delayMs);
    assert.equal(FakeWS.last.params.get('since'), '1');
  }
  const delays = events.reconnect.map((r) => r.delayMs);
  assert.deepEqual(delays, [375, 750, 1500, 3000]); // random 0.5 -> 0.75 * cap, cap doubling
  // A connection that lasts resets the backoff.
  FakeWS.last.hello(1);
  clock.advance(6000);
  FakeWS.last.serverClose(1001);
  assert.equal(events.reconnect.at(-1).delayMs, 375);
  client.close();
});

test('recovered=false emits gap and continues from hello.last_id', () => {
  const { client, clock, events } = setup();
  FakeWS.last.hello(5);
  FakeWS.last.batch(6, 7);
  FakeWS.last.serverClose(1001);
  clock.advance(1000);
  // The server restarted: ids start again below our position.
  FakeWS.last.hello(2, false);
  assert.deepEqual(events.gap, [{ since: 7, lastId: 2, reason: 'reset' }]);
  FakeWS.last.batch(3, 4);
  assert.deepEqual(events.comment.map((c) => c.id), [6, 7, 3, 4]);
  // History too short: a gap, and the kept comments still come.
  FakeWS.last.serverClose(4008);
  clock.advance(1000);
  assert.equal(FakeWS.last.params.get('since'), '4');
  FakeWS.last.hello(2000, false);
  assert.deepEqual(events.gap[1], { since: 4, lastId: 2000, reason: 'history' });
  FakeWS.last.batch(1001, 1002);
  assert.deepEqual(events.comment.slice(-2).map((c) => c.id), [1001, 1002]);
  client.close();
});

test('close() does not reconnect, and a close during backoff cancels it', () => {
  const { client, clock, events } = setup();
  const ws = FakeWS.last;
  ws.hello(0);
  client.close();
  assert.equal(client.state, 'closed');
  assert.deepEqual(ws.closed, { code: 1000, reason: '' });
  ws.serverClose(1000); // the echo of our close: ignored
  clock.advance(60000);
  assert.equal(FakeWS.all.length, 1);

  const s2 = setup();
  FakeWS.last.hello(0);
  FakeWS.last.serverClose(1001);
  s2.client.close();
  s2.clock.advance(60000);
  assert.equal(FakeWS.all.length, 1);
  assert.equal(s2.client.state, 'closed');
  assert.equal(events.reconnect.length, 0);
});

test('send: ack resolves with the id, error rejects with the code, nonce matching', async () => {
  const { client } = setup();
  const ws = FakeWS.last;
  ws.hello(0);
  const p1 = client.send({ text: ' hello ', color: '#FF0000', mode: 'top' });
  const p2 = client.send({ text: 'second' });
  const [m1, m2] = ws.sent;
  assert.deepEqual({ ...m1, nonce: undefined }, { type: 'send', text: 'hello', color: '#ff0000', mode: 'top', nonce: undefined });
  assert.notEqual(m1.nonce, m2.nonce);
  assert.ok(m1.nonce.length <= 64);
  // Answers may come in any order; the nonce decides.
  ws.deliver({ type: 'error', nonce: m2.nonce, code: 'unavailable', message: 'no place left' });
  ws.deliver({ type: 'ack', nonce: m1.nonce, id: 42 });
  assert.equal(await p1, 42);
  await assert.rejects(p2, (e) => e instanceof DanmakuError && e.code === 'unavailable' && e.message === 'no place left');
  assert.equal(client.isOwn(comment(42)), true);
  assert.equal(client.isOwn(comment(43)), false);
  // A refusal the server could not read a nonce from answers the oldest pending send.
  const p3 = client.send({ text: 'third' });
  ws.deliver({ type: 'error', code: 'message_too_large', message: 'too large' });
  await assert.rejects(p3, (e) => e.code === 'message_too_large');
  client.close();
});

test('send: a rate_limited refusal carries the retry hint, other refusals none', async () => {
  const { client, events } = setup();
  const ws = FakeWS.last;
  ws.hello(0);
  const slow = client.send({ text: 'too fast' });
  ws.deliver({ type: 'error', nonce: ws.sent[0].nonce, code: 'rate_limited', message: 'slow down', retry_after_ms: 1500 });
  await assert.rejects(slow, (e) => e instanceof DanmakuError && e.code === 'rate_limited' && e.retryAfterMs === 1500);
  assert.equal(events.error.at(-1).retryAfterMs, 1500);
  const bad = client.send({ text: 'x' });
  ws.deliver({ type: 'error', nonce: ws.sent[1].nonce, code: 'blocked_text', message: 'no' });
  await assert.rejects(bad, (e) => e.code === 'blocked_text' && !('retryAfterMs' in e));
  assert.equal('retryAfterMs' in events.error.at(-1), false);
  client.close();
});

test('send: local validation, not connected, timeout, disconnect', async () => {
  const { client, clock } = setup({ sendTimeoutMs: 5000 });
  await assert.rejects(client.send({ text: 'x' }), (e) => e.code === 'not_connected');
  FakeWS.last.hello(0);
  await assert.rejects(client.send({ text: '' }), (e) => e.code === 'empty_text');
  await assert.rejects(client.send({ text: 'x', color: '#12345' }), (e) => e.code === 'invalid_color');
  const pt = client.send({ text: 'slow' });
  // The batch may overtake the ack: the comment is recognised as own meanwhile.
  assert.equal(client.isOwn({ id: 9, user: 'bob', text: 'slow' }), true);
  assert.equal(client.isOwn({ id: 9, user: 'eve', text: 'slow' }), false);
  clock.advance(5000);
  await assert.rejects(pt, (e) => e.code === 'timeout');
  const pd = client.send({ text: 'lost' });
  FakeWS.last.serverClose(1006);
  await assert.rejects(pd, (e) => e.code === 'disconnected');
  client.close();
});

/** Sends `text` and answers it with an ack of `id`, batches optionally delivered before the ack. */
async function sendAcked(client, ws, text, id, before = () => {}) {
  const p = client.send({ text, color: '#00ff00', mode: 'top' });
  const { nonce } = ws.sent.at(-1);
  before();
  ws.deliver({ type: 'ack', nonce, id });
  assert.equal(await p, id);
}

test('own comments: delivered once at the ack; the batch copy that follows is not delivered again', async () => {
  const { client, clock, events } = setup();
  const ws = FakeWS.last;
  ws.hello(10);
  clock.advance(7);
  await sendAcked(client, ws, 'mine', 12);
  assert.deepEqual(events.comment, [
    { id: 12, user: 'bob', text: 'mine', color: '#00ff00', mode: 'top', ts: 7, own: true },
  ]);
  assert.equal(client.isOwn(events.comment[0]), true);
  // The batch carrying it comes later, with a comment before it: that one is delivered, ours is not repeated.
  ws.deliver({ type: 'batch', room: 'r1', msgs: [comment(11), comment(12, { user: 'bob', text: 'mine' }), comment(13)] });
  assert.deepEqual(events.comment.map((c) => c.id), [12, 11, 13]);
  assert.equal(client.lastId, 13, 'the position still follows the batches');
  assert.equal(client.cursor.duplicates, 0);
  client.close();
});

test('own comments: a batch that overtakes the ack delivers it, and the ack does not repeat it', async () => {
  const { client, events } = setup();
  const ws = FakeWS.last;
  ws.hello(10);
  await sendAcked(client, ws, 'quick', 11, () => {
    ws.deliver({ type: 'batch', room: 'r1', msgs: [comment(11, { user: 'bob', text: 'quick' })] });
  });
  assert.deepEqual(events.comment.map((c) => c.id), [11]);
  assert.equal(client.isOwn(events.comment[0]), true);
  client.close();
});

test('own comments: shed or merged by a hot room, the sender still sees its comment once', async () => {
  const { client, events } = setup();
  const ws = FakeWS.last;
  const shed = [];
  client.on('shed', (e) => shed.push(e));
  ws.hello(10);
  // The batch that would have carried 12 went out before the ack, without it (shed), up to 14.
  await sendAcked(client, ws, 'lost in the crowd', 12, () => {
    ws.deliver({ type: 'batch', room: 'r1', msgs: [comment(11), comment(13, { count: 3 })], shed: 1, upto: 14 });
  });
  assert.deepEqual(events.comment.map((c) => [c.id, c.own === true]), [[11, false], [13, false], [12, true]]);
  assert.equal(events.comment[1].count, 3);
  assert.equal(client.lastId, 14);
  assert.deepEqual(shed, [{ count: 1, total: 1 }]);
  assert.equal(client.shed, 1);
  // Acked first, then shed from the batch that covers it: delivered once, at the ack.
  await sendAcked(client, ws, 'again', 16);
  ws.deliver({ type: 'batch', room: 'r1', msgs: [comment(15)], shed: 1, upto: 16 });
  ws.deliver({ type: 'batch', room: 'r1', msgs: [comment(17)] });
  assert.deepEqual(events.comment.map((c) => c.id), [11, 13, 12, 16, 15, 17]);
  assert.deepEqual(shed.map((e) => e.total), [1, 2]);
  client.close();
});

test('own comments: one delivered at its ack is not repeated by the recovery after a reconnect', async () => {
  const { client, clock, events } = setup();
  let ws = FakeWS.last;
  ws.hello(10);
  await sendAcked(client, ws, 'before the drop', 12);
  ws.serverClose(1006);
  clock.advance(60000);
  ws = FakeWS.last;
  assert.equal(ws.params.get('since'), '10');
  ws.hello(12);
  ws.deliver({ type: 'batch', room: 'r1', msgs: [comment(11), comment(12, { user: 'bob', text: 'before the drop' })] });
  assert.deepEqual(events.comment.map((c) => c.id), [12, 11]);
  client.close();
});

test('heartbeat: ping when idle; no answer within the deadline means dead -> reconnect', () => {
  const { client, clock, events } = setup({ pingIntervalMs: 15000, pongTimeoutMs: 10000 });
  const ws = FakeWS.last;
  ws.hello(0);
  clock.advance(14999);
  assert.equal(ws.sent.length, 0);
  clock.advance(1);
  assert.deepEqual(ws.sent, [{ type: 'ping' }]);
  ws.deliver({ type: 'pong' });
  clock.advance(10000);
  assert.equal(client.state, 'open', 'a pong keeps it alive');
  clock.advance(5000); // idle again: second ping
  assert.equal(ws.sent.length, 2);
  clock.advance(10000); // no pong
  assert.equal(client.state, 'reconnecting');
  assert.ok(ws.closed, 'the dead socket is closed without waiting for its close event');
  assert.equal(events.reconnect.at(-1).reason, 'heartbeat timeout');
  clock.advance(events.reconnect.at(-1).delayMs);
  assert.equal(FakeWS.all.length, 2);
  // Events of the abandoned socket are ignored.
  ws.serverClose(1006);
  ws.batch(1);
  assert.equal(events.comment.length, 0);
  client.close();
});

test('connect timeout: no hello in time -> drop and retry', () => {
  const { client, clock } = setup({ connectTimeoutMs: 3000 });
  clock.advance(3000);
  assert.equal(client.state, 'reconnecting');
  assert.ok(FakeWS.all[0].closed);
  clock.advance(1000);
  assert.equal(FakeWS.all.length, 2);
  client.close();
});

test('maxRetries gives up with an error and the closed state', () => {
  const { client, clock, events } = setup({ maxRetries: 2 });
  FakeWS.last.serverClose(1006);
  clock.advance(1000);
  FakeWS.last.serverClose(1006);
  clock.advance(2000);
  FakeWS.last.serverClose(1006);
  assert.equal(client.state, 'closed');
  assert.equal(events.error.at(-1).code, 'gave_up');
});

test('online frames update the count; unknown frames are ignored', () => {
  const { client, events } = setup();
  FakeWS.last.hello(0, true, 12);
  FakeWS.last.deliver({ type: 'online', count: 40 });
  FakeWS.last.deliver({ type: 'future_thing', x: 1 });
  assert.deepEqual(events.online, [12, 40]);
  assert.equal(client.online, 40);
  assert.equal(events.error.length, 0);
  client.close();
});

test('delete frames are passed on, and a deleted comment still on its way is never delivered', () => {
  const { client, events } = setup();
  const deletes = [];
  const notices = [];
  client.on('delete', (d) => deletes.push(d));
  client.on('notice', (n) => notices.push(n));
  FakeWS.last.hello(10, true);
  FakeWS.last.batch(11);
  FakeWS.last.deliver({ type: 'delete', room: 'r1', ids: [11, 12] });
  FakeWS.last.batch(12, 13);
  assert.deepEqual(deletes, [{ room: 'r1', ids: [11, 12] }]);
  assert.deepEqual(events.comment.map((c) => c.id), [11, 13]);
  // The position still moves past the deleted one: a reconnection does not ask for it again.
  assert.equal(client.lastId, 13);
  FakeWS.last.deliver({ type: 'notice', room: 'r1', text: '<b>be nice</b>' });
  FakeWS.last.deliver({ type: 'delete', room: 'r1', ids: 'nope' });
  assert.deepEqual(notices, [{ room: 'r1', text: '<b>be nice</b>' }]);
  assert.equal(deletes.length, 1);
  client.close();
});
