// Unit tests of the DOM side of the renderer (renderer/renderer.js) on a tiny fake DOM: the clock follows the
// video (pause, playbackRate, seek), the element pool never exceeds its cap, text goes in as textContent only,
// background tabs do not cause a burst, and settings (off, blocked words, area) take effect. The browser-level
// behaviour is for the Chromium end-to-end tests; this checks the wiring in milliseconds.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DanmakuRenderer } from '../renderer/renderer.js';

class FakeElement extends EventTarget {
  constructor(tag) {
    super();
    this.tagName = tag.toUpperCase();
    this.style = {};
    this.dataset = {};
    this.children = [];
    this.className = '';
    this.textContent = '';
    this.clientWidth = 0;
    this.clientHeight = 0;
    this.parent = null;
  }
  set innerHTML(_v) {
    throw new Error('innerHTML must never be used');
  }
  get innerHTML() {
    throw new Error('innerHTML must never be used');
  }
  appendChild(c) {
    c.parent = this;
    this.children.push(c);
    return c;
  }
  remove() {
    if (this.parent) this.parent.children = this.parent.children.filter((c) => c !== this);
    this.parent = null;
  }
}

class FakeDocument extends EventTarget {
  constructor() {
    super();
    this.hidden = false;
    this.created = 0;
  }
  createElement(tag) {
    this.created++;
    return new FakeElement(tag);
  }
}

function setup(opts = {}) {
  const doc = new FakeDocument();
  const win = new EventTarget();
  const container = new FakeElement('div');
  let now = 0;
  let frames = [];
  const r = new DanmakuRenderer({
    container,
    document: doc,
    window: win,
    now: () => now,
    requestAnimationFrame: (cb) => {
      frames.push(cb);
      return frames.length;
    },
    cancelAnimationFrame: () => {
      frames = [];
    },
    fontPx: 20,
    ...opts,
  });
  r.stage.clientWidth = opts.width ?? 1000;
  r.stage.clientHeight = opts.height ?? 500;
  r.resize();
  /** Runs frames every `step` ms for `ms` ms of wall time. */
  const run = (ms, step = 16) => {
    const end = now + ms;
    while (now < end) {
      now = Math.min(end, now + step);
      const fs = frames;
      frames = [];
      for (const f of fs) f(now);
    }
  };
  const jump = (ms) => {
    now += ms;
  };
  return { r, doc, win, container, run, jump, frames: () => frames };
}

const comment = (id, extra = {}) => ({ id, user: 'u', text: `comment ${id}`, color: '#ffffff', mode: 'scroll', ts: 0, ...extra });

// A live MediaStream video (srcObject set): the clock is integrated from wall time while it plays.
function fakeVideo(extra = {}) {
  const v = new EventTarget();
  Object.assign(v, { paused: false, ended: false, seeking: false, readyState: 4, playbackRate: 1, currentTime: 0, srcObject: {}, ...extra });
  return v;
}

test('comments become pooled elements with text set as textContent, own ones bordered', () => {
  const { r, run } = setup();
  r.add(comment(1, { text: '<img src=x onerror=alert(1)>' }));
  r.add(comment(2, { mode: 'top', color: '#FF0000' }), { own: true });
  run(200); // a scroll comment enters at the right edge: give it time to show
  const els = r.stage.children.filter((e) => e.style.display !== 'none');
  assert.equal(els.length, 2);
  const byId = Object.fromEntries(els.map((e) => [e.dataset.id, e]));
  assert.equal(byId['1'].textContent, '<img src=x onerror=alert(1)>');
  assert.equal(byId['2'].className, 'dm-item dm-own');
  assert.equal(byId['2'].style.color, '#ff0000');
  assert.ok(byId['2'].style.border.includes('solid'));
  const vis = r.visible();
  assert.deepEqual(vis.map((v) => [v.id, v.mode, v.lane, v.own]).sort(), [[1, 'scroll', 0, false], [2, 'top', 0, true]]);
});

test('a merged comment shows its count after the text, still as textContent', () => {
  const { r, run } = setup();
  r.add(comment(1, { text: '<b>666</b>', count: 12, mode: 'top' }));
  r.add(comment(2, { text: 'one', count: 1, mode: 'top' }));
  r.add(comment(3, { text: 'odd', count: '5<i>', mode: 'top' }));
  run(200);
  const byId = Object.fromEntries(r.stage.children.filter((e) => e.style.display !== 'none').map((e) => [e.dataset.id, e]));
  assert.equal(byId['1'].textContent, '<b>666</b> ×12');
  assert.equal(byId['2'].textContent, 'one');
  assert.equal(byId['3'].textContent, 'odd', 'a count that is not an integer is ignored');
  // The lane width accounts for the label, not just the text.
  assert.ok(parseFloat(byId['1'].style.width) > parseFloat(byId['3'].style.width) + 20, byId['1'].style.width);
});

test('a bad color is shown white; a missing mode scrolls', () => {
  const { r, run } = setup();
  r.add({ id: 1, text: 'x', color: 'red;background:url(x)' });
  run(16);
  const el = r.stage.children[0];
  assert.equal(el.style.color, '#ffffff');
  assert.equal(el.dataset.mode, 'scroll');
});

test('the element pool never exceeds maxElements, whatever the rate', () => {
  const { r, run } = setup({ maxElements: 25, height: 2000 });
  let id = 0;
  for (let i = 0; i < 300; i++) {
    for (let k = 0; k < 20; k++) r.add(comment(++id, { text: 'x'.repeat(1 + (id % 7)), mode: ['scroll', 'top', 'bottom'][id % 3] }));
    run(16);
    const s = r.stats();
    assert.ok(s.elements <= 25 && s.live + s.pooled === s.elements, JSON.stringify(s));
  }
  const s = r.stats();
  assert.ok(s.shown > 25, 'elements are reused');
  assert.equal(r.stage.children.length, s.elements);
});

test('a live (MediaStream) video drives motion: pause stops it, playbackRate scales it, seek clears the screen', () => {
  const video = fakeVideo();
  const { r, run } = setup({ video });
  r.add(comment(1));
  run(16);
  run(1000);
  const x1 = r.visible()[0].rect.x;
  video.paused = true;
  video.dispatchEvent(new Event('pause'));
  run(2000);
  assert.equal(r.visible()[0].rect.x, x1, 'paused: no motion');
  video.paused = false;
  video.dispatchEvent(new Event('play'));
  run(16); // first frame after resuming restarts the clock
  const x2 = r.visible()[0].rect.x;
  run(1000);
  const moved1 = x2 - r.visible()[0].rect.x;
  video.playbackRate = 2;
  const x3 = r.visible()[0].rect.x;
  run(1000);
  const moved2 = x3 - r.visible()[0].rect.x;
  assert.ok(Math.abs(moved2 - 2 * moved1) < 1, `rate 2 moves twice as far: ${moved1} vs ${moved2}`);
  video.dispatchEvent(new Event('seeking'));
  assert.equal(r.visible().length, 0);
  assert.equal(r.stats().cleared, 1);
});

test('a file video drives motion through currentTime; a jump without a seeking event clears the screen', () => {
  const video = fakeVideo({ srcObject: null });
  const { r, run } = setup({ video });
  // Advances the video's position like a player would at `rate`, one 16 ms frame at a time.
  const play = (ms, rate = 1) => {
    for (let t = 0; t < ms; t += 16) {
      video.currentTime += (0.016 * rate);
      run(16);
    }
  };
  r.add(comment(1));
  play(160);
  const x0 = r.visible()[0].rect.x;
  play(800);
  const moved1 = x0 - r.visible()[0].rect.x;
  assert.ok(moved1 > 0);
  // Stalled (position frozen, not paused): no motion.
  const x1 = r.visible()[0].rect.x;
  run(500);
  assert.equal(r.visible()[0].rect.x, x1);
  play(800, 2);
  const moved2 = x1 - r.visible()[0].rect.x;
  assert.ok(Math.abs(moved2 - 2 * moved1) < 2, `${moved1} vs ${moved2}`);
  video.currentTime += 30;
  run(16);
  assert.equal(r.visible().length, 0);
  assert.equal(r.stats().cleared, 1);
});

test('clock mode (no video): pause() and resume()', () => {
  const { r, run } = setup();
  r.add(comment(1));
  run(500);
  r.pause();
  const x = r.visible()[0].rect.x;
  run(500);
  assert.equal(r.visible()[0].rect.x, x);
  r.resume();
  run(500);
  assert.ok(r.visible()[0].rect.x < x);
});

test('background tab: comments arriving while hidden are dropped, and nothing bursts on return', () => {
  const { r, doc, run, jump } = setup();
  run(16);
  doc.hidden = true;
  doc.dispatchEvent(new Event('visibilitychange'));
  for (let i = 1; i <= 50; i++) r.add(comment(i));
  r.add(comment(51, { text: 'mine' }), { own: true });
  jump(60000); // no frames while hidden
  doc.hidden = false;
  doc.dispatchEvent(new Event('visibilitychange'));
  run(500);
  const vis = r.visible();
  assert.deepEqual(vis.map((v) => v.id), [51], 'only the own comment shows');
  assert.equal(r.stats().dropped.hidden, 50);
});

test('a long frame gap drops what waited (no burst), counted hidden', () => {
  const { r, run, jump } = setup({ height: 25 }); // one lane
  r.add(comment(1, { text: 'x'.repeat(40) }));
  run(16);
  for (let i = 2; i <= 30; i++) r.add(comment(i));
  jump(5000); // e.g. a frozen tab: the next frame comes 5 s late
  run(16);
  const s = r.stats();
  assert.equal(s.queued, 0);
  assert.equal(s.dropped.hidden, 29);
});

test('settings: off drops and hides, blocked words are dropped (own kept), area limits lanes, font re-lays', () => {
  const { r, run } = setup();
  r.setOptions({ blocked: ['SPOILER'] });
  r.add(comment(1, { text: 'big spoiler here' }));
  r.add(comment(2, { text: 'my spoiler' }), { own: true });
  run(200);
  assert.deepEqual(r.visible().map((v) => v.id), [2]);
  assert.equal(r.stats().dropped.blocked, 1);
  r.setOptions({ area: 0.25 });
  run(16);
  assert.equal(r.stats().lanes.count, Math.floor(125 / r.laneHeight));
  const before = r.laneHeight;
  r.setOptions({ fontScale: 2 });
  run(16);
  assert.ok(r.laneHeight > before);
  assert.equal(r.visible().length, 0, 'font change clears the old lanes');
  r.setOptions({ enabled: false });
  assert.equal(r.stage.style.display, 'none');
  assert.equal(r.add(comment(3)), false);
  assert.equal(r.stats().dropped.disabled, 1);
  r.setOptions({ enabled: true, opacity: 0.5 });
  assert.equal(r.stage.style.opacity, '0.5');
});

test('reduced motion shows scroll comments static', () => {
  const { r, run } = setup({ reducedMotion: true });
  r.add(comment(1));
  run(16);
  const x = r.visible()[0].rect.x;
  run(1000);
  assert.equal(r.visible()[0].mode, 'top');
  assert.equal(r.visible()[0].rect.x, x);
});

test('the loop idles when nothing is on screen or waiting, and wakes on add', () => {
  const { r, run, frames } = setup();
  r.add(comment(1, { mode: 'top' }));
  run(16);
  assert.equal(frames().length, 1);
  run(5000); // the top comment (4 s) has left
  assert.equal(r.visible().length, 0);
  assert.equal(frames().length, 0, 'no frames requested while idle');
  r.add(comment(2, { mode: 'top' }));
  assert.equal(frames().length, 1);
  run(16);
  assert.equal(r.visible().length, 1);
  assert.equal(r.stats().dropped.hidden, 0, 'waking from idle is not a gap');
});

test('destroy removes the stage and stops the loop', () => {
  const { r, container, frames } = setup();
  r.add(comment(1));
  r.destroy();
  assert.equal(container.children.length, 0);
  assert.equal(frames().length, 0);
});
