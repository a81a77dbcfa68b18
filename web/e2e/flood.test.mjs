// 3. Flood: 2000 comments/s for 6 s over HTTP into one room. The page must stay within its element cap, never
// overlap two comments of one lane, drop (and count) what it cannot show, and still receive every comment.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';

import {
  ARTIFACTS, WAIT_MS, createPoster, ensureDir, log, newPage, openRoom, roomName, withServerAndBrowser,
} from './lib.mjs';

const RATE = 2000; // comments per second
const SECONDS = 6;
const TOTAL = RATE * SECONDS;
const IN_FLIGHT = 256; // HTTP requests in flight at most (8 keep-alive connections, pipelined)

const env = withServerAndBrowser();

/**
 * Posts `total` comments at `rate` per second (paced on the wall clock, up to IN_FLIGHT requests in flight).
 * Resolves with the ids and the achieved duration.
 */
async function flood(base, room, total, rate) {
  const poster = createPoster(base, { connections: 8, pipeline: 32 });
  const ids = [];
  const t0 = performance.now();
  let next = 0;
  let inFlight = 0;
  const texts = ['666', '哈哈哈哈', 'awsl', '前方高能', 'this is a rather long comment to vary the widths', '233333', 'wow', '草'];
  const modes = ['scroll', 'scroll', 'scroll', 'scroll', 'scroll', 'scroll', 'top', 'bottom'];
  const colors = ['#ffffff', '#ffffff', '#ff0000', '#00ff00', '#66ccff'];
  let ticker = null;
  try {
    await new Promise((resolve, reject) => {
      const pump = () => {
        const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate) + 1);
        while (next < due && inFlight < IN_FLIGHT) {
          const i = next++;
          inFlight++;
          poster.post(room, {
            user: `u${i % 50}`,
            text: `${texts[i % texts.length]} ${i}`,
            mode: modes[i % modes.length],
            color: colors[i % colors.length],
          }).then((id) => {
            ids.push(id);
            inFlight--;
            if (ids.length === total) resolve();
            else pump();
          }, reject);
        }
      };
      // Pacing on the wall clock: every tick sends what is due (responses also pump, for the in-flight limit).
      ticker = setInterval(pump, 2);
      pump();
    });
  } finally {
    clearInterval(ticker);
    poster.close();
  }
  return { ids, seconds: (performance.now() - t0) / 1000 };
}

test(`flood of ${RATE} comments/s for ${SECONDS} s: cap, no overlap, drops counted, nothing lost`, async () => {
  // A big stage and half-size text: ~38 lanes that hold ~15 short comments each, so the 300-element cap, not the
  // lanes, is what binds (placement must wait for a free element).
  const page = await newPage(env.browser, { viewport: { width: 1920, height: 1080 } });
  const room = roomName('flood');
  await openRoom(page, env.server.url, room);
  await page.waitForFunction(() => !window.danmaku.video?.paused, null, { timeout: WAIT_MS });
  await page.evaluate(() => window.danmaku.settings.set({ fontScale: 0.5 }));
  await page.waitForFunction(() => window.danmaku.renderer.stats().lanes.height === 16, null, { timeout: WAIT_MS });

  // In the page: collect every comment event, and check the invariants on every animation frame.
  await page.evaluate(() => {
    const { client, renderer } = window.danmaku;
    const stage = document.querySelector('#overlay > .dm-stage');
    const s = {
      ids: [], frames: 0, maxElements: 0, maxLive: 0, maxVisible: 0, maxDomItems: 0,
      capViolations: [], overlaps: [], outside: [], running: true,
    };
    window.__flood = s;
    client.on('comment', (c) => s.ids.push(c.id));
    const check = () => {
      if (!s.running) return;
      const st = renderer.stats();
      const vis = renderer.visible();
      const domItems = stage.childElementCount;
      s.frames++;
      s.maxElements = Math.max(s.maxElements, st.elements);
      s.maxLive = Math.max(s.maxLive, st.live);
      s.maxVisible = Math.max(s.maxVisible, vis.length);
      s.maxDomItems = Math.max(s.maxDomItems, domItems);
      if (st.elements > st.maxElements || st.live + st.pooled > st.maxElements || domItems > st.maxElements) {
        if (s.capViolations.length < 10) s.capViolations.push({ frame: s.frames, elements: st.elements, live: st.live, pooled: st.pooled, domItems, max: st.maxElements });
      }
      const lanes = new Map();
      for (const v of vis) {
        const key = `${v.mode}:${v.lane}`;
        if (!lanes.has(key)) lanes.set(key, []);
        lanes.get(key).push(v);
        const areaH = st.height * (renderer.opts.area ?? 1);
        if (v.rect.y < 0 || v.rect.y + v.rect.h > areaH + 1e-6) {
          if (s.outside.length < 10) s.outside.push({ frame: s.frames, v });
        }
      }
      for (const [key, list] of lanes) {
        list.sort((a, b) => a.rect.x - b.rect.x);
        for (let i = 1; i < list.length; i++) {
          const a = list[i - 1].rect;
          const b = list[i].rect;
          // Same lane, same mode => same y and height: rectangles intersect iff the x ranges do.
          if (a.x + a.w > b.x && b.x + b.w > a.x && s.overlaps.length < 10) {
            s.overlaps.push({ frame: s.frames, key, a: list[i - 1], b: list[i] });
          }
        }
      }
      requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  });

  const { ids, seconds } = await flood(env.server.url, room, TOTAL, RATE);
  log(`posted ${ids.length} comments in ${seconds.toFixed(2)} s (${Math.round(ids.length / seconds)}/s offered)`);
  const lastId = Math.max(...ids);
  assert.deepEqual([...ids].sort((a, b) => a - b), Array.from({ length: TOTAL }, (_, i) => i + 1), 'server ids 1..N');

  // Every comment reached the page (then the renderer had it offered).
  await page.waitForFunction((n) => window.danmaku.client.lastId >= n, lastId, { timeout: WAIT_MS * 2 });
  await page.screenshot({ path: path.join(ensureDir(ARTIFACTS), 'flood.png') });
  const r = await page.evaluate(() => {
    const s = window.__flood;
    s.running = false;
    return { ...s, ids: undefined, idCount: s.ids.length, idsOk: s.ids.every((id, i) => id === i + 1), stats: window.danmaku.renderer.stats() };
  });
  const d = r.stats.dropped;
  log(`frames checked: ${r.frames}; peak elements ${r.maxElements}/${r.stats.maxElements}, peak live ${r.maxLive}, peak visible ${r.maxVisible}, peak DOM items ${r.maxDomItems}`);
  log(`renderer: shown ${r.stats.shown}, queued ${r.stats.queued}, dropped ${JSON.stringify(d)}, lanes ${r.stats.lanes.count}`);

  assert.ok(r.frames > 0, 'the invariant checker ran');
  assert.deepEqual(r.capViolations, [], 'elements never exceed maxElements');
  assert.equal(r.maxElements, r.stats.maxElements, 'the cap was reached (and held)');
  assert.deepEqual(r.overlaps, [], 'no two visible comments of one lane and mode overlap');
  assert.deepEqual(r.outside, [], 'every visible comment lies inside the display area');
  assert.equal(r.idCount, TOTAL, 'the page received every comment once');
  assert.ok(r.idsOk, 'in id order, contiguous, no duplicate');
  assert.ok(r.stats.shown > 0, 'some comments were shown');
  assert.ok(d.queueFull + d.tooLate > 0, 'the drop counters rose');
  assert.ok(d.queueFull > 0, 'queueFull drops');
  // Accounting: every offered comment is shown, waiting, or dropped for exactly one reason.
  const droppedTotal = Object.values(d).reduce((a, b) => a + b, 0);
  assert.equal(r.stats.shown + r.stats.queued + r.stats.queuedOwn + droppedTotal, TOTAL, 'shown + waiting + dropped = offered');
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});
