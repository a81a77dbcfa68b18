// 6. A page of another origin cannot open the viewer WebSocket.
//
// Browsers let any page open a WebSocket to any server, and only say which page asked (`Origin`): the server must
// refuse foreign pages itself (docs/security.md, "Cross-site pages"). Here a tiny site of the test, on another
// port, serves a page that opens the viewer WebSocket of the server with the browser's own `WebSocket`. The server
// answers 403 before the upgrade: the page's socket fails (error, close 1006, never open) and Chromium reports the
// 403, while the server's own demo page in the same browser connects and receives a comment. Started with
// `--allowed-origins <that site>`, a server lets the same page in.

import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';

import { WAIT_MS, log, newPage, openRoom, postComment, roomName, startServer, withServerAndBrowser } from './lib.mjs';

const env = withServerAndBrowser();

// The foreign page: opens the WebSocket named by its `?ws=` and records, in order, what the socket does.
const FOREIGN_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>another site</title>
<script>
  window.__ws = { events: [], messages: [], code: null };
  const ws = new WebSocket(new URLSearchParams(location.search).get('ws'));
  ws.onopen = () => window.__ws.events.push('open');
  ws.onerror = () => window.__ws.events.push('error');
  ws.onmessage = (e) => window.__ws.messages.push(JSON.parse(e.data));
  ws.onclose = (e) => {
    window.__ws.events.push('close');
    window.__ws.code = e.code;
  };
</script>`;

/** A site on another port of 127.0.0.1 (so another origin) serving FOREIGN_PAGE at every path. */
function startForeignSite() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(FOREIGN_PAGE);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({
      origin: `http://127.0.0.1:${server.address().port}`,
      close: () => new Promise((r) => server.close(() => r())),
    }));
  });
}

/** Opens the foreign page aimed at `server`'s viewer WebSocket for `room`; resolves with its console lines. */
async function openForeign(page, site, server, room) {
  const lines = [];
  page.on('console', (m) => lines.push(m.text()));
  const ws = `ws://${server.addr}/ws?room=${room}`;
  await page.goto(`${site.origin}/?ws=${encodeURIComponent(ws)}`);
  return lines;
}

const socketLog = (page) => page.evaluate(() => window.__ws);

test('a page of another origin is refused with 403; the server\'s own page connects', async () => {
  const site = await startForeignSite();
  const foreign = await newPage(env.browser);
  const own = await newPage(env.browser);
  const room = roomName('origin');
  try {
    const lines = await openForeign(foreign, site, env.server, room);
    await foreign.waitForFunction(() => window.__ws.events.includes('close'), null, { timeout: WAIT_MS });
    const seen = await socketLog(foreign);
    log(`${site.origin}: ${seen.events.join(', ')} (code ${seen.code}); console: ${lines.join(' | ')}`);
    assert.deepEqual(seen.events, ['error', 'close'], 'the foreign socket never opens');
    assert.equal(seen.code, 1006, 'an upgrade refused over HTTP');
    assert.deepEqual(seen.messages, [], 'nothing of the room reached the foreign page');
    assert.ok(lines.some((l) => l.includes('403')), `Chromium reports the server's 403: ${lines.join('\n')}`);

    await openRoom(own, env.server.url, room);
    await own.evaluate(() => {
      window.__ids = [];
      window.danmaku.client.on('comment', (c) => window.__ids.push(c.id));
    });
    const id = await postComment(env.server.url, room, { text: 'for the own page' });
    await own.waitForFunction((n) => window.__ids.includes(n), id, { timeout: WAIT_MS });
    log(`the demo page of ${env.server.url} received comment ${id}`);
    assert.deepEqual(foreign.pageErrors, []);
    assert.deepEqual(own.pageErrors, []);
  } finally {
    await foreign.context().close();
    await own.context().close();
    await site.close();
  }
});

test('--allowed-origins lets that page in', async () => {
  const site = await startForeignSite();
  const server = await startServer({ args: ['--allowed-origins', site.origin] });
  const foreign = await newPage(env.browser);
  const room = roomName('allowed');
  try {
    await openForeign(foreign, site, server, room);
    await foreign.waitForFunction(() => window.__ws.messages.length > 0, null, { timeout: WAIT_MS });
    const seen = await socketLog(foreign);
    log(`${site.origin} with --allowed-origins: ${seen.events.join(', ')}, first frame ${JSON.stringify(seen.messages[0])}`);
    assert.deepEqual(seen.events, ['open']);
    assert.equal(seen.messages[0].type, 'hello');
    assert.equal(seen.messages[0].room, room);
    assert.deepEqual(foreign.pageErrors, []);
  } finally {
    await foreign.context().close();
    await server.stop();
    await site.close();
  }
});
