// 4. Reconnect and recover.
//
// a) The page reaches the server through a TCP proxy of the test (the page itself is loaded through it, so its
//    WebSocket, same-origin, goes through the proxy too). Cutting the proxy
//    resets the connection; comments posted meanwhile must arrive exactly once, in order, after the proxy comes
//    back (recovery with `since`).
// b) The server process is killed and restarted on the same port: the page reconnects on its own (the new
//    process has an empty history: the client notices the reset) and shows a comment posted after the restart.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  WAIT_MS, log, newPage, postComment, roomName, startProxy, startServer, waitConnection, withServerAndBrowser,
} from './lib.mjs';

const env = withServerAndBrowser();

/** Registers, in the page, collectors of the client's `comment`, `gap` and `state` events. */
function collect(page) {
  return page.evaluate(() => {
    const c = { ids: [], texts: [], gaps: [], states: [] };
    window.__c = c;
    window.danmaku.client.on('comment', (m) => {
      c.ids.push(m.id);
      c.texts.push(m.text);
    });
    window.danmaku.client.on('gap', (g) => c.gaps.push(g));
    window.danmaku.client.on('state', (s) => c.states.push(s.state));
  });
}

const collected = (page) => page.evaluate(() => window.__c);

function waitId(page, id) {
  return page.waitForFunction((n) => window.__c.ids.includes(n), id, { timeout: WAIT_MS });
}

test('a cut connection recovers exactly the comments missed meanwhile', async () => {
  const proxy = await startProxy(env.server.port);
  const base = `http://127.0.0.1:${proxy.port}`;
  log(`proxy 127.0.0.1:${proxy.port} -> ${env.server.addr}`);
  const page = await newPage(env.browser);
  const room = roomName('cut');
  try {
    await page.goto(`${base}/?room=${room}&user=e2e`);
    await waitConnection(page, 'open');
    await collect(page);

    const before = [];
    for (let i = 1; i <= 3; i++) before.push(await postComment(env.server.url, room, { text: `before ${i}` }));
    await waitId(page, before.at(-1));
    log(`received ${before.join(', ')} live`);

    await proxy.cut();
    await waitConnection(page, 'reconnecting');
    log('proxy cut: page is reconnecting');

    const missed = [];
    for (let i = 1; i <= 5; i++) missed.push(await postComment(env.server.url, room, { text: `missed ${i}`, mode: i % 2 ? 'scroll' : 'top' }));
    log(`posted ${missed.join(', ')} while cut`);
    const during = await collected(page);
    assert.deepEqual(during.ids, before, 'nothing arrives while cut');

    await proxy.restore();
    log('proxy restored');
    await waitConnection(page, 'open');
    await waitId(page, missed.at(-1));
    log('reconnected and recovered the missed comments');

    const afterIds = [];
    for (let i = 1; i <= 2; i++) afterIds.push(await postComment(env.server.url, room, { text: `after ${i}` }));
    await waitId(page, afterIds.at(-1));

    const c = await collected(page);
    const all = [...before, ...missed, ...afterIds];
    assert.deepEqual(c.ids, all, 'every comment exactly once, in order');
    assert.deepEqual(all, Array.from({ length: all.length }, (_, i) => all[0] + i), 'ids are contiguous');
    assert.deepEqual(c.texts.slice(3, 8), ['missed 1', 'missed 2', 'missed 3', 'missed 4', 'missed 5']);
    assert.deepEqual(c.gaps, [], 'no gap: the server vouched for the recovery');
    assert.ok(c.states.includes('reconnecting') && c.states.at(-1) === 'open');
    // The page shows them: one log entry per comment, and the renderer was offered each once (shown or, at
    // worst, still waiting: nothing is dropped at this rate).
    const page2 = await page.evaluate((ids) => {
      const st = window.danmaku.renderer.stats();
      return {
        logged: ids.map((id) => document.querySelectorAll(`#log li[data-id="${id}"]`).length),
        offered: st.shown + st.queued + Object.values(st.dropped).reduce((a, b) => a + b, 0),
        dropped: st.dropped,
      };
    }, all);
    assert.deepEqual(page2.logged, all.map(() => 1), 'each comment logged once');
    assert.equal(page2.offered, all.length, 'each comment offered to the renderer once');
    assert.equal(page2.dropped.queueFull + page2.dropped.tooLate, 0);
    // A recovered comment appears over the video.
    await page.waitForFunction((ids) => window.danmaku.renderer.stats().shown === ids.length, all, { timeout: WAIT_MS });
    assert.deepEqual(page.pageErrors, []);
  } finally {
    await page.context().close();
    await proxy.close();
  }
});

test('the server is killed and restarted on the same port: the page reconnects', async () => {
  const page = await newPage(env.browser);
  const room = roomName('restart');
  await page.goto(`${env.server.url}/?room=${room}&user=e2e`);
  await waitConnection(page, 'open');
  await collect(page);
  const first = await postComment(env.server.url, room, { text: 'before the restart' });
  await waitId(page, first);

  const { port } = env.server;
  await env.server.kill();
  log(`server killed (SIGKILL) on port ${port}`);
  await waitConnection(page, 'reconnecting');
  log('page is reconnecting');

  env.server = await startServer({ port });
  log(`server restarted on ${env.server.addr}`);
  assert.equal(env.server.port, port);
  await waitConnection(page, 'open');
  log('page reconnected');

  const text = `after the restart ${Date.now()}`;
  const id = await postComment(env.server.url, room, { text });
  await waitId(page, id);
  await page.waitForFunction((t) => window.danmaku.renderer.visible().some((v) => v.text === t), text, { timeout: WAIT_MS });
  log(`comment #${id} posted after the restart is shown`);

  const c = await collected(page);
  // The new process numbers the room from 1 again: the client sees last_id below its position and resets.
  assert.deepEqual(c.gaps.map((g) => g.reason), ['reset']);
  assert.deepEqual(c.texts, ['before the restart', text]);
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});
