// Unit tests of the lane and queue policy (renderer/layout.js): comments never overlap in a lane whatever their
// widths and speeds, the wait queue is bounded, drops are counted, own comments are kept, and nothing bursts
// after a gap. Pure numbers: no DOM.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Layout, scrollLaneAccepts, scrollSpeed, scrollX } from '../renderer/layout.js';

// Deterministic pseudo-random numbers, so a failure reproduces.
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const W = 1000;
const LH = 30;

function mk(opts = {}) {
  return new Layout({ width: W, height: 300, laneHeight: LH, gapPx: 20, ...opts }, (it) => it.w);
}

let nextId = 1;
const c = (w, mode = 'scroll', extra = {}) => ({ id: nextId++, text: `c${w}`, mode, w, ...extra });

/** Asserts no two visible comments of one (mode, lane) overlap, with at least `gap` px between them. */
function assertNoOverlap(layout, t, gap = 0) {
  const vis = layout.visible(t);
  const byLane = new Map();
  for (const v of vis) {
    const k = `${v.mode}:${v.lane}`;
    if (!byLane.has(k)) byLane.set(k, []);
    byLane.get(k).push(v);
  }
  for (const [k, list] of byLane) {
    list.sort((a, b) => a.rect.x - b.rect.x);
    for (let i = 1; i < list.length; i++) {
      const a = list[i - 1].rect;
      const b = list[i].rect;
      assert.ok(b.x - (a.x + a.w) >= gap - 1e-6,
        `overlap in ${k} at t=${t}: [${a.x}, ${a.x + a.w}] vs [${b.x}, ${b.x + b.w}]`);
    }
    if (!k.startsWith('scroll')) assert.equal(list.length, 1, `two fixed comments in ${k}`);
  }
  return vis.length;
}

test('catch-up test: the previous comment must have fully entered, plus the gap', () => {
  const D = 8000;
  const a = { x0: W, w: 200, v: scrollSpeed(W, 200, D), t0: 0, end: D };
  // At t=0 nothing of it has entered.
  assert.equal(scrollLaneAccepts(a, 200, a.v, 0, W, 20), false);
  // Tail at W - gap exactly when v * t = w + gap.
  const tEntered = (200 + 20) / a.v;
  assert.equal(scrollLaneAccepts(a, 200, a.v, tEntered - 1, W, 20), false);
  assert.equal(scrollLaneAccepts(a, 200, a.v, tEntered + 1e-9, W, 20), true);
});

test('catch-up test: a faster (wider) comment is refused if it would catch up before the old one leaves', () => {
  const D = 8000;
  const a = { x0: W, w: 50, v: scrollSpeed(W, 50, D), t0: 0, end: D };
  const wide = 600;
  const vWide = scrollSpeed(W, wide, D);
  const tEntered = (50 + 20) / a.v;
  // Fully entered, but the wide one is much faster: it would reach the narrow one's tail.
  assert.equal(scrollLaneAccepts(a, wide, vWide, tEntered + 1, W, 20), false);
  // Check the claim by simulation: at the time the old tail leaves, the new head would be past the gap.
  const t = tEntered + 1;
  assert.ok(W - vWide * (a.end - t) < 20);
  // Later it is accepted, and then the distance never drops below the gap.
  let t2 = t;
  while (!scrollLaneAccepts(a, wide, vWide, t2, W, 20)) t2 += 10;
  assert.ok(t2 < a.end);
  const b = { x0: W, w: wide, v: vWide, t0: t2, end: t2 + D };
  for (let s = t2; s <= a.end; s += 5) {
    assert.ok(scrollX(b, s) - (scrollX(a, s) + a.w) >= 20 - 1e-6, `caught up at ${s}`);
  }
  // A slower (narrower) one behind a wide one only needs the entry condition.
  const wa = { x0: W, w: 600, v: vWide, t0: 0, end: D };
  const tWideEntered = (600 + 20) / vWide;
  assert.equal(scrollLaneAccepts(wa, 50, a.v, tWideEntered + 1e-6, W, 20), true);
});

test('catch-up test: a lane whose last comment has left is free', () => {
  const a = { x0: W, w: 100, v: 0.1375, t0: 0, end: 8000 };
  assert.equal(scrollLaneAccepts(a, 900, 1, 8000, W, 20), true);
  assert.equal(scrollLaneAccepts(null, 900, 1, 0, W, 20), true);
});

test('scroll lanes never overlap under a heavy random load with mixed widths (and a width change)', () => {
  const rand = rng(42);
  const L = mk({ queueSize: 50, maxWaitMs: 3000 });
  let t = 0;
  let maxVisible = 0;
  for (let frame = 0; frame < 3000; frame++) {
    // ~10 comments per frame: far more than fits, so lanes are contended all the time.
    for (let k = 0; k < 10; k++) {
      const w = 20 + Math.floor(rand() * 700);
      L.enqueue(c(w), t, false);
    }
    if (frame === 1500) L.configure({ width: 700 }); // a resize mid-flight
    if (frame === 2200) L.configure({ width: 1200 });
    L.step(t, t, true);
    maxVisible = Math.max(maxVisible, assertNoOverlap(L, t, 20));
    t += 16;
  }
  const s = L.stats(t);
  assert.ok(s.shown > 200, `shown ${s.shown}`);
  assert.ok(s.dropped.queueFull + s.dropped.tooLate > 0, 'overload must drop');
  // Every offered comment is accounted for: shown, waiting, or dropped.
  assert.equal(s.shown + s.queued + s.dropped.queueFull + s.dropped.tooLate, 30000);
  assert.ok(maxVisible > 10);
});

test('a sweep of exact times shows no overlap between placements (fine time grid)', () => {
  const L = mk({ queueSize: 1000, maxWaitMs: 1e9, height: 30 }); // one lane
  const widths = [30, 500, 40, 800, 100, 100, 650, 20];
  for (const w of widths) L.enqueue(c(w), 0, false);
  for (let t = 0; t < 40000; t += 1) {
    L.step(t, 0, true);
    if (t % 3 === 0) assertNoOverlap(L, t, 20);
  }
  assert.equal(L.stats(40000).shown, widths.length);
});

test('top and bottom comments hold their lane for their duration', () => {
  const L = mk({ fixedDurationMs: 4000, height: 90 }); // 3 lanes
  for (let i = 0; i < 5; i++) L.enqueue(c(100, 'top'), 0, false);
  L.step(0, 0, true);
  assert.equal(L.stats(0).live, 3);
  assert.equal(L.stats(0).queued, 2);
  assertNoOverlap(L, 0);
  L.step(3999, 3000, true);
  assert.equal(L.stats(3999).live, 3);
  const { placed, removed } = L.step(4000, 3500, true);
  assert.equal(removed.length, 3);
  assert.equal(placed.length, 2);
  // Top lanes fill from the top, bottom ones from the bottom of the area.
  L.enqueue(c(100, 'bottom'), 3500, false);
  L.step(4001, 3500, true);
  const vis = L.visible(4001);
  const top0 = vis.find((v) => v.mode === 'top' && v.lane === 0);
  const bot0 = vis.find((v) => v.mode === 'bottom' && v.lane === 0);
  assert.equal(top0.rect.y, 0);
  assert.equal(bot0.rect.y, 90 - LH);
  assert.equal(top0.rect.x, (W - 100) / 2);
});

test('display area: lanes only in that fraction of the height', () => {
  const L = mk({ height: 600, area: 0.25 }); // 150 px -> 5 lanes
  assert.equal(L.laneCount, 5);
  for (let i = 0; i < 30; i++) {
    L.enqueue(c(50, 'top'), 0, false);
    L.enqueue(c(50, 'bottom'), 0, false);
    L.enqueue(c(50, 'scroll'), 0, false);
  }
  L.step(0, 0, true);
  for (const v of L.visible(0)) {
    assert.ok(v.rect.y >= 0 && v.rect.y + v.rect.h <= 150 + 1e-9, `${v.mode} lane ${v.lane} at y=${v.rect.y}`);
  }
  // Shrinking the area takes comments of removed lanes off screen (counted as cleared), never overlapping.
  const removed = L.configure({ area: 0.1 }); // 60 px -> 2 lanes
  assert.ok(removed.length > 0);
  assert.ok(L.visible(0).every((v) => v.lane < 2));
  assert.equal(L.stats(0).cleared, removed.length);
});

test('queue is bounded: overflow drops the oldest, counted queueFull', () => {
  const L = mk({ queueSize: 10, height: 30 });
  for (let i = 0; i < 25; i++) L.enqueue(c(100), 0, false);
  const s = L.stats(0);
  assert.equal(s.queued, 10);
  assert.equal(s.dropped.queueFull, 15);
  // The newest are kept.
  assert.deepEqual(L.queue.map((e) => e.item.id), L.queue.map((e) => e.item.id).sort((a, b) => a - b));
  assert.equal(L.queue[9].item.id, nextId - 1);
});

test('a comment that waited longer than maxWaitMs is dropped (tooLate), never shown late', () => {
  const L = mk({ height: 30, maxWaitMs: 1000, queueSize: 100 });
  L.enqueue(c(900), 0, false); // occupies the only lane for a while
  L.step(0, 0, true);
  for (let i = 0; i < 5; i++) L.enqueue(c(900), 0, false);
  let shownLate = 0;
  for (let t = 16; t <= 2000; t += 16) {
    const { placed } = L.step(t, t, true);
    shownLate += placed.filter((r) => t > 1000).length;
  }
  const s = L.stats(2000);
  assert.equal(s.dropped.tooLate, 5);
  assert.equal(shownLate, 0);
  assert.equal(s.queued, 0);
});

test('own comments jump the queue, are exempt from queueFull/tooLate/hidden, and get the next free lane', () => {
  const L = mk({ height: 30, queueSize: 3, maxWaitMs: 500 });
  L.enqueue(c(900), 0, false);
  L.step(0, 0, true); // lane busy
  for (let i = 0; i < 10; i++) L.enqueue(c(100), 0, false);
  const mine = c(300, 'scroll', { text: 'mine' });
  L.enqueue(mine, 0, true);
  L.setHidden(true);
  L.enqueue(c(100), 0, false); // hidden: dropped
  L.enqueue(c(120, 'scroll', { text: 'mine too' }), 0, true); // own: kept
  L.setHidden(false);
  L.onGap(); // a long gap: others dropped, own kept
  let t = 0;
  let placedOwn = [];
  while (t < 20000 && placedOwn.length < 2) {
    t += 16;
    for (let i = 0; i < 3; i++) L.enqueue(c(40), t, false); // competition keeps coming
    const { placed } = L.step(t, t, true);
    placedOwn.push(...placed.filter((r) => r.own));
    assertNoOverlap(L, t, 20);
  }
  assert.equal(placedOwn.length, 2);
  assert.equal(placedOwn[0].item, mine);
  const s = L.stats(t);
  assert.ok(s.dropped.hidden >= 1);
  assert.ok(s.dropped.queueFull >= 7);
  // The own comment entered within one crossing of the busy comment, not starved by narrower ones.
  assert.ok(t < 8000 + 2000, `own shown at ${t}`);
});

test('no burst after a long gap: everything that waited is dropped, counted hidden', () => {
  const L = mk({ height: 300, queueSize: 100, maxWaitMs: 60000 });
  for (let i = 0; i < 80; i++) L.enqueue(c(100), 0, false);
  // The renderer calls onGap when a frame comes far too late or the tab becomes visible.
  assert.equal(L.onGap(), 80);
  const { placed } = L.step(30000, 30000, true);
  assert.equal(placed.length, 0);
  assert.equal(L.stats(30000).dropped.hidden, 80);
  // While hidden, new comments are dropped at once rather than piling up.
  L.setHidden(true);
  for (let i = 0; i < 10; i++) assert.equal(L.enqueue(c(100), 0, false), 'hidden');
  assert.equal(L.stats(0).dropped.hidden, 90);
  assert.equal(L.stats(0).queued, 0);
});

test('paused clock: nothing is placed, queued comments still age out', () => {
  const L = mk({ maxWaitMs: 1000 });
  L.enqueue(c(100), 0, false);
  L.enqueue(c(100, 'top'), 0, true);
  assert.equal(L.step(0, 500, false).placed.length, 0);
  L.step(0, 1500, false);
  const s = L.stats(0);
  assert.equal(s.dropped.tooLate, 1);
  assert.equal(s.queuedOwn, 1, 'own waits for playback');
  assert.equal(L.step(0, 1600, true).placed.length, 1);
});

test('maxLive caps comments on screen whatever the rate', () => {
  const L = mk({ maxLive: 7, height: 3000, queueSize: 1000, maxWaitMs: 1e9 });
  for (let i = 0; i < 500; i++) L.enqueue(c(10, i % 3 === 0 ? 'top' : 'scroll'), 0, false);
  for (let t = 0; t < 20000; t += 16) {
    L.step(t, t, true);
    assert.ok(L.live.size <= 7);
  }
});

test('reduced motion: scroll comments are placed in static lanes (top, then bottom), never covering each other', () => {
  const L = mk({ height: 60, staticScroll: true }); // 2 lanes: the top and bottom lanes share the same 2 bands
  for (let i = 0; i < 5; i++) L.enqueue(c(100, 'scroll'), 0, false);
  const { placed } = L.step(0, 0, true);
  assert.deepEqual(placed.map((r) => r.mode), ['top', 'top']);
  assert.ok(placed.every((r) => r.v === 0));
  assert.equal(L.stats(0).queued, 3, 'the rest wait for a free band');
});

test('a lane height change (font scale) clears the screen; widths are measured again', () => {
  let calls = 0;
  const L = new Layout({ width: W, height: 300, laneHeight: 30 }, (it) => {
    calls++;
    return it.w;
  });
  L.enqueue(c(100), 0, false);
  L.step(0, 0, true);
  const removed = L.configure({ laneHeight: 40 });
  assert.equal(removed.length, 1);
  assert.equal(L.stats(0).live, 0);
  assert.equal(L.laneCount, 7);
  assert.equal(calls, 1);
});

test('top and bottom comments never cover each other where their lanes meet', () => {
  // 3.5 lanes of height: the bottom lanes are offset from the top ones by half a lane.
  const L = mk({ fixedDurationMs: 4000, height: 105 });
  for (let i = 0; i < 4; i++) {
    L.enqueue(c(100, 'top'), 0, false);
    L.enqueue(c(100, 'bottom'), 0, false);
  }
  L.step(0, 0, true);
  const fixed = L.visible(0).filter((v) => v.mode !== 'scroll');
  assert.ok(fixed.length >= 2, 'both modes got lanes');
  for (let a = 0; a < fixed.length; a++) {
    for (let b = a + 1; b < fixed.length; b++) {
      const [p, q] = [fixed[a].rect, fixed[b].rect];
      const apart = p.y + p.h <= q.y || q.y + q.h <= p.y || p.x + p.w <= q.x || q.x + q.w <= p.x;
      assert.ok(apart, `${fixed[a].mode} lane ${fixed[a].lane} covers ${fixed[b].mode} lane ${fixed[b].lane}`);
    }
  }
  assert.equal(L.stats(0).live + L.stats(0).queued, 8, 'what does not fit waits');
});

test('remove takes deleted comments off screen and out of both queues, and frees their lanes', () => {
  const l = mk({ queueSize: 10 });
  const shown = c(100);
  const waiting = c(100, 'top');
  const own = c(100, 'bottom');
  l.enqueue(shown, 0);
  l.step(0, 0);
  l.enqueue(waiting, 0);
  l.enqueue(own, 0, true);
  const removed = l.remove([shown.id, waiting.id, own.id, 999]);
  assert.deepEqual(removed.map((r) => r.item.id), [shown.id]);
  assert.equal(l.visible(0).length, 0);
  assert.equal(l.queue.length + l.ownQueue.length, 0);
  // The lane is free again: the next comment takes lane 0 at once.
  const next = c(100);
  l.enqueue(next, 0);
  const { placed } = l.step(1, 1);
  assert.deepEqual(placed.map((p) => [p.item.id, p.lane]), [[next.id, 0]]);
});
