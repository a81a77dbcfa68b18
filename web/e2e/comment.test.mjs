// 1. A comment POSTed over HTTP appears over the video of the demo page.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';

import {
  ARTIFACTS, WAIT_MS, ensureDir, log, newPage, openRoom, postComment, roomName, withServerAndBrowser,
} from './lib.mjs';

const env = withServerAndBrowser();

test('a comment POSTed over HTTP is shown over the video', async () => {
  const page = await newPage(env.browser);
  const room = roomName('comment');
  await openRoom(page, env.server.url, room);
  log(`page open on room ${room}: html[data-connection=open]`);

  // The generated live video plays (the renderer's clock only runs while it does).
  await page.waitForFunction(() => window.danmaku.video === null || !window.danmaku.video.paused, null, { timeout: WAIT_MS });

  const text = `hello e2e ${Date.now()} 你好`;
  const id = await postComment(env.server.url, room, { user: 'alice', text, color: '#ffcc00' });
  log(`POSTed comment #${id}: ${JSON.stringify(text)}`);

  // Visible, and fully entered the stage (a scroll comment enters from the right edge).
  const handle = await page.waitForFunction(([t]) => {
    const { renderer } = window.danmaku;
    const W = renderer.stats().width;
    const v = renderer.visible().find((c) => c.text === t);
    return v && v.rect.x >= 0 && v.rect.x + v.rect.w <= W ? v : null;
  }, [text], { timeout: WAIT_MS });
  const v = await handle.jsonValue();
  log(`visible(): id ${v.id}, mode ${v.mode}, lane ${v.lane}, rect ${JSON.stringify(v.rect)}`);
  assert.equal(v.id, id);
  assert.equal(v.mode, 'scroll');
  assert.equal(v.own, false);

  // The DOM element matches the model, and lies inside the overlay over the video.
  const dom = await page.evaluate((cid) => {
    const overlay = document.getElementById('overlay').getBoundingClientRect();
    const video = document.getElementById('video').getBoundingClientRect();
    const el = document.querySelector(`#overlay > .dm-stage > .dm-item[data-id="${cid}"]`);
    const r = el.getBoundingClientRect();
    const { renderer } = window.danmaku;
    const now = renderer.visible().find((c) => c.id === cid);
    return {
      overlay: { x: overlay.x, y: overlay.y, w: overlay.width, h: overlay.height },
      video: { x: video.x, y: video.y, w: video.width, h: video.height },
      el: { x: r.x, y: r.y, w: r.width, h: r.height },
      model: now.rect,
      text: el.textContent,
      color: getComputedStyle(el).color,
      display: getComputedStyle(el).display,
      stats: renderer.stats(),
      logged: document.querySelector(`#log li[data-id="${cid}"] .text`)?.textContent,
    };
  }, id);
  log(`element ${JSON.stringify(dom.el)} in overlay ${JSON.stringify(dom.overlay)}`);
  assert.equal(dom.text, text);
  assert.equal(dom.color, 'rgb(255, 204, 0)');
  assert.notEqual(dom.display, 'none');
  assert.equal(dom.logged, text, 'the comment log lists it too');
  // The overlay covers the video.
  assert.deepEqual(dom.overlay, dom.video);
  // Element position = the model's rect (same frame), up to the renderer's 0.1 px rounding.
  assert.ok(Math.abs(dom.el.x - dom.overlay.x - dom.model.x) <= 0.5, 'element x matches visible()');
  assert.ok(Math.abs(dom.el.y - dom.overlay.y - dom.model.y) <= 0.5, 'element y matches visible()');
  assert.ok(Math.abs(dom.el.w - dom.model.w) <= 0.5 && Math.abs(dom.el.h - dom.model.h) <= 0.5, 'element size matches visible()');
  // Inside the overlay.
  const eps = 0.5;
  assert.ok(dom.el.x >= dom.overlay.x - eps && dom.el.x + dom.el.w <= dom.overlay.x + dom.overlay.w + eps, 'inside horizontally');
  assert.ok(dom.el.y >= dom.overlay.y - eps && dom.el.y + dom.el.h <= dom.overlay.y + dom.overlay.h + eps, 'inside vertically');
  assert.equal(dom.stats.shown, 1);

  const file = path.join(ensureDir(ARTIFACTS), 'comment.png');
  await page.screenshot({ path: file });
  log(`screenshot: ${file}`);
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});
