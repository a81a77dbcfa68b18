// Renderer benchmark: frame times in headless Chromium while comments are fed locally at a fixed rate, for our
// renderer (web/renderer, on the demo page served by the real server, `/?video=static`) and for weizhenye's
// `danmaku` npm package (DOM and canvas engines, on a page served by this script, same stage size, same load).
//
//   node web/e2e/bench-renderer.mjs [--rates 200,1000,3000] [--duration 20] [--warmup 8] [--baseline 2]
//                                   [--renderers ours,weizhenye-dom,weizhenye-canvas] [--json FILE]
//
// Method (also printed with the results):
// - One fresh browser context (page) per run; viewport 1280x800, deviceScaleFactor 1.
// - Baseline: `baseline` s with no comments; the median requestAnimationFrame interval is the refresh interval R.
// - Load: comments of protocol v1's shape ({id, user, text, color, mode, ts}) from a seeded generator (the same
//   sequence for every renderer: 80% scroll, 10% top, 10% bottom; 70% white; 1-24 characters of mixed CJK and
//   ASCII) are offered every 10 ms in the page (what is due at `rate`, so a stalled page catches up), first for
//   `warmup` s (the screen fills: a scroll comment lives 8 s), then `duration` s measured.
// - Frames: the intervals between successive rAF timestamps during the measured window. p50/p95/p99/max of them;
//   "dropped frames" = intervals > 1.5 R (% of frames); "missed refreshes" = sum over intervals of
//   max(0, round(interval / R) - 1), % of (frames + missed): the refreshes on which nothing new was shown.
// - Comments: ours: `stats().shown` and the sum of `stats().dropped` over the measured window, peak `stats().live`
//   (and `stats().elements`). weizhenye: it has no drop policy: every offered comment goes on screen at its next
//   frame (overlapping others when the lanes are full) unless that frame comes later than the comment's whole
//   screen time (then it is skipped: counted as dropped); shown = what entered its running list; peak live = the
//   running list's peak. The window is `duration` s of wall time, but a page stuck in a long frame ends it late:
//   "window s" is the real length, and the feed is capped at rate x (warmup + duration) comments in all.
// - Overlap: after the window, up to 1000 live comments (those on screen at the end, or, if none are, the last
//   snapshot taken every 2 s of the window) are each tested against all others of the same mode (rectangle
//   intersection): the % that overlap another one.

import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { E2E_DIR, REPO, ensureDir, launchBrowser, serverBinary, startServer } from './lib.mjs';

// ---- options ----

function parseArgs(argv) {
  const o = {
    rates: [200, 1000, 3000],
    duration: 20,
    warmup: 8,
    baseline: 2,
    renderers: ['ours', 'weizhenye-dom', 'weizhenye-canvas'],
    json: path.join(REPO, 'target', 'bench', 'renderer.json'),
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--rates') o.rates = v().split(',').map(Number);
    else if (a === '--duration') o.duration = Number(v());
    else if (a === '--warmup') o.warmup = Number(v());
    else if (a === '--baseline') o.baseline = Number(v());
    else if (a === '--renderers') o.renderers = v().split(',');
    else if (a === '--json') o.json = path.resolve(v());
    else if (a === '-h' || a === '--help') {
      const lines = readFileSync(new URL(import.meta.url), 'utf8').split('\n');
      console.log(lines.slice(0, lines.findIndex((l) => !l.startsWith('//'))).join('\n'));
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

const opts = parseArgs(process.argv);
const VIEWPORT = { width: 1280, height: 800 };
// The renderer's default scroll duration; weizhenye's speed is set so that its comments cross in the same time.
const SCROLL_SECONDS = 8;

// ---- the page for weizhenye's danmaku ----

const DANMAKU_PKG = path.join(E2E_DIR, 'node_modules', 'danmaku');
const DANMAKU_ESM = path.join(DANMAKU_PKG, 'dist', 'esm', 'danmaku.js');
const danmakuVersion = JSON.parse(readFileSync(path.join(DANMAKU_PKG, 'package.json'), 'utf8')).version;

// A stage of the same size as the demo page's overlay, over a <video> fed by a canvas repainted once a second
// (what the demo's `?video=static` does), with the library in live mode (no media: comments run on wall time).
const WZ_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>weizhenye/danmaku bench</title>
<style>
  html, body { margin: 0; background: #0f1115; }
  #player { position: relative; background: #000; overflow: hidden; margin: 0; }
  #player video { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; display: block; }
  #overlay { position: absolute; inset: 0; pointer-events: none; }
</style></head>
<body><div id="player"><video id="video" muted playsinline autoplay></video><div id="overlay"></div></div>
<script type="module">
  import Danmaku from '/danmaku.js';
  const q = new URLSearchParams(location.search);
  const w = Number(q.get('w')), h = Number(q.get('h'));
  Object.assign(document.getElementById('player').style, { width: w + 'px', height: h + 'px' });
  const canvas = document.createElement('canvas');
  canvas.width = 960; canvas.height = 540;
  const ctx = canvas.getContext('2d');
  const t0 = performance.now();
  function draw() {
    const t = (performance.now() - t0) / 1000;
    const g = ctx.createLinearGradient(0, 0, 960, 540);
    g.addColorStop(0, 'hsl(' + (t * 12) % 360 + ', 45%, 18%)');
    g.addColorStop(1, 'hsl(' + (t * 12 + 80) % 360 + ', 50%, 10%)');
    ctx.fillStyle = g; ctx.fillRect(0, 0, 960, 540);
    ctx.fillStyle = '#fff'; ctx.font = 'bold 64px monospace'; ctx.textAlign = 'center';
    ctx.fillText(new Date().toLocaleTimeString(), 480, 270);
    setTimeout(draw, 1000);
  }
  draw();
  const video = document.getElementById('video');
  video.srcObject = canvas.captureStream(1);
  video.play().catch(() => {});
  const engine = q.get('engine') || 'dom';
  const dm = new Danmaku({ container: document.getElementById('overlay'), engine, speed: w / ${SCROLL_SECONDS} });
  window.__wz = { dm, engine };
</script></body></html>`;

function startPageServer() {
  const js = readFileSync(DANMAKU_ESM);
  const srv = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(WZ_HTML);
    } else if (u.pathname === '/danmaku.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(js);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

// ---- the in-page driver (the same code for every renderer) ----

// Runs in the page. `kind`: 'ours' | 'weizhenye'. Resolves with raw measurements.
async function pageRun({ kind, rate, warmupMs, durationMs, baselineMs, seed }) {
  // Seeded generator: mulberry32.
  let s = seed >>> 0;
  const rnd = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const CJK = '弹幕前方高能哈草好耶awsl名场面泪目打卡来了恭喜发财签到';
  const ASCII = 'abcdefghijklmnopqrstuvwxyz0123456789 !?';
  const COLORS = ['#ff0000', '#00ff00', '#66ccff', '#ffff00', '#fb7299', '#000000'];
  let nextId = 1;
  const makeComment = () => {
    const n = 1 + Math.floor(rnd() * 24);
    const cjk = rnd() < 0.6;
    let text = '';
    for (let i = 0; i < n; i++) {
      const pool = cjk && rnd() < 0.8 ? CJK : ASCII;
      text += pool[Math.floor(rnd() * pool.length)];
    }
    text = text.trim() || '6';
    const m = rnd();
    return {
      id: nextId++,
      user: `u${Math.floor(rnd() * 1000)}`,
      text,
      color: rnd() < 0.7 ? '#ffffff' : COLORS[Math.floor(rnd() * COLORS.length)],
      mode: m < 0.8 ? 'scroll' : m < 0.9 ? 'top' : 'bottom',
      ts: Date.now(),
    };
  };

  let offer;
  let liveCount;
  let rects;
  let counters;
  if (kind === 'ours') {
    const r = window.danmaku.renderer;
    offer = (c) => r.add(c);
    liveCount = () => r.stats().live;
    rects = () => r.visible().map((v) => ({ mode: v.mode, x: v.rect.x, y: v.rect.y, w: v.rect.w, h: v.rect.h }));
    counters = () => {
      const st = r.stats();
      return { shown: st.shown, dropped: { ...st.dropped }, queued: st.queued, elements: st.elements, maxElements: st.maxElements, lanes: st.lanes.count };
    };
  } else {
    const { dm, engine } = window.__wz;
    const SHADOW = '1px 0 1px #000, -1px 0 1px #000, 0 1px 1px #000, 0 -1px 1px #000';
    const FONT = '"PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", "Helvetica Neue", Arial, sans-serif';
    const MODE = { scroll: 'rtl', top: 'top', bottom: 'bottom' };
    offer = (c) => dm.emit({
      text: c.text,
      mode: MODE[c.mode],
      style: engine === 'canvas'
        ? { font: `bold 25px/1.25 ${FONT}`, fillStyle: c.color, strokeStyle: '#000', lineWidth: 2, textBaseline: 'bottom' }
        : { fontSize: '25px', fontWeight: 'bold', fontFamily: FONT, lineHeight: '1.25', color: c.color, textShadow: SHADOW },
    });
    // It has no drop policy: a comment goes on screen at the next frame, whatever it overlaps, except one that
    // is older than its whole screen time by then (a frame that came that late): it is skipped. Count both by
    // watching what enters its running list.
    let entered = 0;
    const list = dm._.runningList;
    const push = list.push;
    list.push = function (...items) {
      entered += items.length;
      return push.apply(this, items);
    };
    liveCount = () => dm._.runningList.length;
    rects = () => dm._.runningList.map((c) => ({ mode: c.mode, x: c.x, y: c.y, w: c.width, h: c.height }));
    counters = () => ({ shown: entered, dropped: { skipped: dm._.position - entered }, queued: dm.comments.length - dm._.position });
  }

  const frames = [];
  let recording = false;
  let peakLive = 0;
  let peakElements = 0;
  // Overlap census input: a snapshot of the live boxes every 2 s of the window (the last non-empty one is used;
  // the state at the very end may be empty after a long stall).
  const finiteRects = () => rects().filter((r) => [r.x, r.y, r.w, r.h].every(Number.isFinite));
  let snapshot = [];
  let lastSnap = -Infinity;
  const onFrame = (ts) => {
    if (recording) {
      frames.push(ts);
      if (ts - lastSnap >= 2000) {
        lastSnap = ts;
        const snap = finiteRects();
        if (snap.length) snapshot = snap;
      }
      const n = liveCount();
      if (n > peakLive) peakLive = n;
      if (kind === 'ours') {
        const e = window.danmaku.renderer.stats().elements;
        if (e > peakElements) peakElements = e;
      }
    }
    if (!done) requestAnimationFrame(onFrame);
  };
  let done = false;

  // Baseline: no comments.
  const baseline = [];
  await new Promise((resolve) => {
    const end = performance.now() + baselineMs;
    const f = (ts) => {
      baseline.push(ts);
      if (ts < end) requestAnimationFrame(f);
      else resolve();
    };
    requestAnimationFrame(f);
  });

  // Load: what is due at `rate` since t0, capped at the run's total (a page that stalls for seconds catches up
  // with what it missed, but is not fed past the end of the run).
  let offered = 0;
  const t0 = performance.now();
  const maxOffered = Math.floor((rate * (warmupMs + durationMs)) / 1000);
  const feed = () => {
    const due = Math.min(maxOffered, Math.floor(((performance.now() - t0) / 1000) * rate));
    while (offered < due) {
      offer(makeComment());
      offered++;
    }
  };
  const feeder = setInterval(feed, 10);
  requestAnimationFrame(onFrame);
  await new Promise((r) => setTimeout(r, warmupMs));
  const before = counters();
  const offeredBefore = offered;
  const measureStart = performance.now();
  recording = true;
  peakLive = 0;
  await new Promise((r) => setTimeout(r, durationMs));
  const measureEnd = performance.now();
  recording = false;
  done = true;
  clearInterval(feeder);
  const after = counters();
  const offeredWindow = offered - offeredBefore;

  // Overlap census on what is live now (not timed).
  const end = finiteRects();
  const all = end.length ? end : snapshot;
  const sample = all.length <= 1000 ? all : Array.from({ length: 1000 }, () => all[Math.floor(rnd() * all.length)]);
  let overlapping = 0;
  for (const a of sample) {
    for (const b of all) {
      if (a === b || a.mode !== b.mode) continue;
      if (a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h) {
        overlapping++;
        break;
      }
    }
  }
  return {
    baseline,
    frames,
    measureStart,
    measureEnd,
    offeredWindow,
    before,
    after,
    peakLive,
    peakElements,
    liveAtEnd: end.length,
    overlapPopulation: all.length,
    overlapSample: sample.length,
    overlapping,
  };
}

// ---- statistics ----

function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

function intervals(ts) {
  const out = [];
  for (let i = 1; i < ts.length; i++) out.push(ts[i] - ts[i - 1]);
  return out;
}

function summarize(raw, label, rate) {
  const base = intervals(raw.baseline).sort((a, b) => a - b);
  const R = quantile(base, 0.5);
  // Frames of the window: the intervals whose start lies in it.
  const ts = raw.frames;
  const iv = intervals(ts);
  const sorted = [...iv].sort((a, b) => a - b);
  const late = iv.filter((d) => d > 1.5 * R).length;
  const missed = iv.reduce((acc, d) => acc + Math.max(0, Math.round(d / R) - 1), 0);
  const sumDropped = (d) => Object.values(d ?? {}).reduce((a, b) => a + b, 0);
  const shown = raw.after.shown - raw.before.shown;
  const dropped = sumDropped(raw.after.dropped) - sumDropped(raw.before.dropped);
  const droppedBy = {};
  for (const k of Object.keys(raw.after.dropped ?? {})) droppedBy[k] = raw.after.dropped[k] - (raw.before.dropped?.[k] ?? 0);
  return {
    renderer: label,
    rate,
    refreshMs: R,
    frames: iv.length,
    windowSeconds: (raw.measureEnd - raw.measureStart) / 1000,
    fps: iv.length / ((raw.measureEnd - raw.measureStart) / 1000),
    p50: quantile(sorted, 0.5),
    p95: quantile(sorted, 0.95),
    p99: quantile(sorted, 0.99),
    max: sorted.at(-1) ?? NaN,
    lateFrames: late,
    lateFramesPct: iv.length ? (100 * late) / iv.length : NaN,
    missedRefreshes: missed,
    missedRefreshesPct: iv.length + missed ? (100 * missed) / (iv.length + missed) : NaN,
    offered: raw.offeredWindow,
    shown,
    dropped,
    droppedBy,
    queuedAtEnd: raw.after.queued,
    peakLive: raw.peakLive,
    peakElements: raw.peakElements || null,
    maxElements: raw.after.maxElements ?? null,
    lanes: raw.after.lanes ?? null,
    liveAtEnd: raw.liveAtEnd,
    overlapPct: raw.overlapSample ? (100 * raw.overlapping) / raw.overlapSample : NaN,
    overlapPopulation: raw.overlapPopulation,
  };
}

// ---- main ----

const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');

async function main() {
  const server = await startServer();
  const pageServer = await startPageServer();
  const wzBase = `http://127.0.0.1:${pageServer.address().port}`;
  const browser = await launchBrowser();
  const chromiumVersion = browser.version();
  console.error(`# Chromium ${chromiumVersion}; server ${server.addr} (${serverBinary()}); weizhenye/danmaku ${danmakuVersion}`);

  // The stage size of the demo page at this viewport, for the other page.
  let stage;
  {
    const ctx = await browser.newContext({ viewport: VIEWPORT });
    const page = await ctx.newPage();
    await page.goto(`${server.url}/?video=static&room=bench-size`);
    await page.waitForFunction(() => !!window.danmaku && window.danmaku.renderer.stats().width > 0);
    stage = await page.evaluate(() => {
      const r = document.getElementById('overlay').getBoundingClientRect();
      return { width: Math.round(r.width), height: Math.round(r.height) };
    });
    await ctx.close();
  }
  console.error(`# stage ${stage.width}x${stage.height} px (the demo page's overlay at ${VIEWPORT.width}x${VIEWPORT.height})`);

  const results = [];
  const guardMs = (opts.baseline + opts.warmup + opts.duration) * 1000 + 240_000;
  for (const label of opts.renderers) {
    for (const rate of opts.rates) {
      const ctx = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1 });
      const page = await ctx.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      let kind;
      if (label === 'ours') {
        kind = 'ours';
        await page.goto(`${server.url}/?video=static&room=bench-${rate}`);
        await page.waitForFunction(() => !!window.danmaku && window.danmaku.renderer.stats().width > 0 && !window.danmaku.video?.paused);
      } else {
        kind = 'weizhenye';
        const engine = label.replace(/^weizhenye-/, '');
        await page.goto(`${wzBase}/?engine=${engine}&w=${stage.width}&h=${stage.height}`);
        await page.waitForFunction(() => !!window.__wz);
      }
      console.error(`# ${label} @ ${rate}/s: baseline ${opts.baseline} s, warmup ${opts.warmup} s, measure ${opts.duration} s`);
      let guard;
      const timedOut = new Promise((resolve) => { guard = setTimeout(() => resolve(null), guardMs); });
      const raw = await Promise.race([
        page.evaluate(pageRun, {
          kind, rate, warmupMs: opts.warmup * 1000, durationMs: opts.duration * 1000, baselineMs: opts.baseline * 1000, seed: 42,
        }),
        timedOut,
      ]);
      clearTimeout(guard);
      let row;
      if (raw === null) {
        row = { renderer: label, rate, timedOut: true };
        console.error(`#   timed out after ${guardMs / 1000} s`);
      } else {
        row = summarize(raw, label, rate);
        console.error(`#   ${row.frames} frames, p50 ${fmt(row.p50)} ms, p99 ${fmt(row.p99)} ms, max ${fmt(row.max)} ms, shown ${row.shown}, dropped ${row.dropped}, peak live ${row.peakLive}`);
      }
      if (errors.length) row.pageErrors = errors;
      results.push(row);
      await ctx.close();
    }
  }
  await browser.close();
  await server.stop();
  pageServer.close();

  const meta = {
    date: new Date().toISOString(),
    chromium: chromiumVersion,
    node: process.version,
    machine: `${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}`,
    viewport: VIEWPORT,
    stage,
    baselineSeconds: opts.baseline,
    warmupSeconds: opts.warmup,
    durationSeconds: opts.duration,
    weizhenyeDanmaku: danmakuVersion,
    definitions: {
      refreshMs: 'median rAF interval over the idle baseline (R)',
      lateFramesPct: 'dropped frames: rAF intervals > 1.5 R, % of the window\'s intervals',
      missedRefreshesPct: 'sum of max(0, round(interval / R) - 1), % of (frames + missed)',
      shown: 'comments put on screen during the window',
      dropped: 'comments dropped during the window (ours: sum of stats().dropped; weizhenye has no drop policy: only comments older than their screen time when a frame finally comes are skipped)',
      offered: 'comments fed during the window (what is due at the rate; a stalled page gets what it missed, capped at rate x (warmup + duration) in all)',
      peakLive: 'most comments on screen at once (ours: stats().live; weizhenye: its running list)',
      overlapPct: 'share of live comments (sample of up to 1000 at the end) whose box intersects another of the same mode',
    },
  };
  ensureDir(path.dirname(opts.json));
  writeFileSync(opts.json, `${JSON.stringify({ meta, results }, null, 2)}\n`);

  console.log(`Chromium ${chromiumVersion}, headless, ${meta.machine}; stage ${stage.width}x${stage.height}; `
    + `${opts.duration} s measured after ${opts.warmup} s warmup (a page that stalls stretches its window: see "window s"); `
    + `refresh interval R from a ${opts.baseline} s idle baseline.`);
  console.log('');
  console.log('| renderer | rate/s | window s | frames | p50 ms | p95 ms | p99 ms | max ms | dropped frames % (>1.5 R) | missed refreshes % | comments offered | comments shown | comments dropped | peak live | overlap % |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    if (r.timedOut) {
      console.log(`| ${r.renderer} | ${r.rate} | timed out | | | | | | | | | | | | |`);
      continue;
    }
    console.log(`| ${r.renderer} | ${r.rate} | ${fmt(r.windowSeconds)} | ${r.frames} | ${fmt(r.p50)} | ${fmt(r.p95)} | ${fmt(r.p99)} | ${fmt(r.max)} | ${fmt(r.lateFramesPct)} | ${fmt(r.missedRefreshesPct)} | ${r.offered} | ${r.shown} | ${r.dropped} | ${r.peakLive}${r.peakElements ? ` (${r.peakElements} el.)` : ''} | ${fmt(r.overlapPct, 0)} |`);
  }
  const ours = results.filter((r) => r.renderer === 'ours' && !r.timedOut);
  if (ours.length) {
    console.log('');
    console.log('Our renderer\'s drops by reason during the window: '
      + ours.map((r) => `${r.rate}/s: ${Object.entries(r.droppedBy).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(', ') || 'none'}`).join('; '));
  }
  console.log(`\nJSON: ${opts.json}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
