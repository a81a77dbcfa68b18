// 2. Comment text is data: markup in a comment is shown as literal text, and no script of it runs.
//
// The server's page carries a Content-Security-Policy without inline scripts, which would block the payloads'
// handlers even if the client put them into the DOM as HTML. To test the client's own rendering (not only the
// CSP), the page runs with CSP bypassed, and a positive control proves that, in this very page, such markup
// inserted as HTML *does* run.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { WAIT_MS, log, newPage, openRoom, postComment, roomName, withServerAndBrowser } from './lib.mjs';

const env = withServerAndBrowser();

const PAYLOADS = [
  { text: '<img src=x onerror="window.__pwned=1">', mode: 'scroll' },
  { text: '<script>window.__pwned=2</script>', mode: 'top' },
  { text: '</div><svg onload="window.__pwned=3"><b>bold</b>&amp;', mode: 'bottom' },
];

/** What the page shows for comment `id`: the overlay element and the log entry. */
function inspect(page, id) {
  return page.evaluate((cid) => {
    const el = document.querySelector(`#overlay .dm-item[data-id="${cid}"]`);
    const li = document.querySelector(`#log li[data-id="${cid}"] .text`);
    return {
      visible: window.danmaku.renderer.visible().find((c) => c.id === cid) ?? null,
      el: el && { text: el.textContent, children: el.childElementCount },
      log: li && { text: li.textContent, children: li.childElementCount },
    };
  }, id);
}

test('markup in comments is shown as literal text and never runs', async () => {
  const page = await newPage(env.browser, { bypassCSP: true });
  const room = roomName('xss');
  await openRoom(page, env.server.url, room);
  await page.waitForFunction(() => !window.danmaku.video?.paused, null, { timeout: WAIT_MS });

  // Over HTTP (another viewer's comments).
  const ids = [];
  for (const p of PAYLOADS) {
    const id = await postComment(env.server.url, room, { user: '<i>mallory</i>', ...p });
    ids.push(id);
    log(`POSTed #${id} (${p.mode}): ${p.text}`);
  }
  await page.waitForFunction((n) => window.danmaku.renderer.visible().length >= n, ids.length, { timeout: WAIT_MS });
  for (const [i, id] of ids.entries()) {
    const got = await inspect(page, id);
    assert.ok(got.visible, `#${id} visible`);
    assert.equal(got.visible.text, PAYLOADS[i].text, 'visible() text is the literal string');
    assert.equal(got.el.text, PAYLOADS[i].text, 'overlay element textContent is the literal string');
    assert.equal(got.el.children, 0, 'overlay element has no element children');
    assert.equal(got.log.text, PAYLOADS[i].text, 'log entry textContent is the literal string');
    assert.equal(got.log.children, 0, 'log entry has no element children');
  }
  // The user name is data too.
  const user = await page.evaluate((cid) => document.querySelector(`#log li[data-id="${cid}"] .user`).textContent, ids[0]);
  assert.equal(user, '<i>mallory</i>:');

  // Over the page's own send box (the viewer's own comment, sent on the WebSocket).
  const own = '<img src=x onerror="window.__pwned=4">';
  await page.fill('#send-text', own);
  await page.click('#send-button');
  const ownHandle = await page.waitForFunction((t) => window.danmaku.renderer.visible().find((c) => c.text === t && c.own), own, { timeout: WAIT_MS });
  const ownId = (await ownHandle.jsonValue()).id;
  const got = await inspect(page, ownId);
  log(`sent own comment #${ownId} through #send-form`);
  assert.equal(got.el.text, own);
  assert.equal(got.el.children, 0);
  assert.equal(got.log.text, own);
  assert.equal(got.log.children, 0);

  // Nothing created an element from the payloads anywhere in the document.
  const counts = await page.evaluate(() => ({
    img: document.querySelectorAll('img').length,
    svg: document.querySelectorAll('svg').length,
    script: [...document.querySelectorAll('script')].filter((s) => !s.src).length,
    b: document.querySelectorAll('b').length,
  }));
  assert.deepEqual(counts, { img: 0, svg: 0, script: 0, b: 0 });

  // Positive control: in this page, an <img onerror> inserted as HTML does run (CSP is bypassed), so the check
  // of window.__pwned below is not vacuous. (No <img> from a payload exists at all: asserted above.)
  await page.evaluate(() => {
    const d = document.createElement('div');
    d.hidden = true;
    d.innerHTML = '<img src="/no-such-image" onerror="window.__control=1">';
    document.body.append(d);
  });
  await page.waitForFunction(() => window.__control === 1, null, { timeout: WAIT_MS });
  log('positive control: an <img onerror> inserted as HTML ran in this page');
  assert.equal(await page.evaluate(() => typeof window.__pwned), 'undefined', 'window.__pwned stays undefined');
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});
