// Paints danmaku over a video (or any element) with pooled DOM nodes. Every decision (lanes, waiting, dropping)
// is delegated to layout.js so it stays testable; this file only owns the clocks, the DOM and the browser events
// (pause, seek, resize, background tabs) that feed those decisions.
//
// Why DOM and not canvas: text stays real text (selectable by tests and screen readers, textContent only), and with
// a hard cap on nodes and one transform write per moving comment per frame the cost stays bounded at any rate.

import { Layout, LAYOUT_DEFAULTS, MODES, scrollX } from './layout.js';

export { Layout, MODES };

const COLOR_RE = /^#[0-9a-fA-F]{6}$/;
const FONT_FAMILY = '"PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", "Helvetica Neue", Arial, sans-serif';
// Extra width over the measured glyphs: the outline shadow and rounding differences between canvas and DOM text.
const TEXT_PAD_PX = 4;
// An own comment carries a border and padding (box-sizing: border-box), which its lane must account for.
const OWN_PAD_PX = 2 * (2 + 4);

export const RENDERER_DEFAULTS = Object.freeze({
  fontPx: 25,
  fontFamily: FONT_FAMILY,
  fontWeight: 'bold',
  lineHeight: 1.25,
  maxElements: 300,
  queueSize: LAYOUT_DEFAULTS.queueSize,
  maxWaitMs: LAYOUT_DEFAULTS.maxWaitMs,
  scrollDurationMs: LAYOUT_DEFAULTS.scrollDurationMs,
  fixedDurationMs: LAYOUT_DEFAULTS.fixedDurationMs,
  gapPx: LAYOUT_DEFAULTS.gapPx,
  // A frame later than this after the previous one means the page was away (background tab, frozen thread).
  gapResetMs: 1000,
  // A video position jump this much larger than the elapsed time is a seek even without a `seeking` event.
  seekJumpMs: 1500,
  opacity: 1,
  fontScale: 1,
  speed: 1,
  area: 1,
  enabled: true,
  reducedMotion: false,
  blocked: [],
});

function isDark(hex) {
  const n = parseInt(hex.slice(1), 16);
  const r = (n >> 16) & 255, g = (n >> 8) & 255, b = n & 255;
  return 0.299 * r + 0.587 * g + 0.114 * b < 60;
}

/**
 * Overlay renderer.
 *
 * ```js
 * const r = new DanmakuRenderer({ container, video });
 * r.add({ id: 1, text: '666', mode: 'scroll', color: '#ffffff' });
 * ```
 */
export class DanmakuRenderer {
  /**
   * @param {object} options see renderer.d.ts
   */
  constructor(options = {}) {
    const o = { ...RENDERER_DEFAULTS, ...options };
    if (!o.container) throw new TypeError('DanmakuRenderer: container is required');
    this.opts = o;
    this.container = o.container;
    this.video = o.video ?? null;
    this.isOwn = typeof o.isOwn === 'function' ? o.isOwn : () => false;
    this.doc = o.document ?? this.container.ownerDocument ?? globalThis.document;
    this.win = o.window ?? this.doc?.defaultView ?? globalThis.window ?? globalThis;
    this._now = o.now ?? (() => globalThis.performance.now());
    this._raf = o.requestAnimationFrame ?? ((cb) => this.win.requestAnimationFrame(cb));
    this._caf = o.cancelAnimationFrame ?? ((id) => this.win.cancelAnimationFrame(id));

    this.layout = new Layout({
      queueSize: o.queueSize,
      maxWaitMs: o.maxWaitMs,
      scrollDurationMs: o.scrollDurationMs,
      fixedDurationMs: o.fixedDurationMs,
      gapPx: o.gapPx,
      maxLive: o.maxElements,
    }, (item) => this._measure(item));

    // The media clock (ms) that moves comments; see _mediaDelta for where it comes from.
    this.mediaTime = 0;
    this._clockPaused = false;
    this._clockRate = 1;
    this._lastWall = null;
    this._lastCT = null;
    this._wasRunning = false;
    this._rafId = null;
    this._started = false;
    this._destroyed = false;
    this._geometryDirty = true;
    this._els = new Map(); // record -> element
    this._pool = [];
    this._elementCount = 0;
    this._blocked = [];
    this._enabled = true;

    this.stage = this.doc.createElement('div');
    this.stage.className = 'dm-stage';
    Object.assign(this.stage.style, {
      position: 'absolute', left: '0', top: '0', right: '0', bottom: '0',
      overflow: 'hidden', pointerEvents: 'none', userSelect: 'none',
      fontFamily: o.fontFamily, fontWeight: o.fontWeight, contain: 'strict',
    });
    this.container.appendChild(this.stage);

    this._listeners = [];
    this._listen(this.doc, 'visibilitychange', () => this._onVisibility());
    this._listen(this.doc, 'fullscreenchange', () => this.resize());
    this._listen(this.win, 'resize', () => this.resize());
    if (this.video) {
      this._listen(this.video, 'seeking', () => this.seek());
      for (const ev of ['play', 'playing', 'pause', 'seeked', 'ratechange', 'loadeddata']) this._listen(this.video, ev, () => this._wake());
    }
    if (typeof this.win.ResizeObserver === 'function') {
      this._ro = new this.win.ResizeObserver(() => this.resize());
      this._ro.observe(this.stage);
    }
    if (this.doc.hidden) this.layout.setHidden(true);

    this.setOptions({
      opacity: o.opacity, fontScale: o.fontScale, speed: o.speed, area: o.area,
      enabled: o.enabled, reducedMotion: o.reducedMotion, blocked: o.blocked,
    });
    if (o.autoStart !== false) this.start();
  }

  _listen(target, type, fn) {
    if (!target?.addEventListener) return;
    target.addEventListener(type, fn);
    this._listeners.push(() => target.removeEventListener(type, fn));
  }

  /**
   * Applies display settings. A font scale change re-lays the lanes (and clears the screen: old lanes would
   * overlap new ones); speed applies to comments that enter from now on.
   */
  setOptions(patch = {}) {
    const o = this.opts;
    if (patch.opacity !== undefined) {
      o.opacity = Math.min(1, Math.max(0, Number(patch.opacity)));
      this.stage.style.opacity = String(o.opacity);
    }
    if (patch.fontScale !== undefined && patch.fontScale > 0) {
      o.fontScale = Number(patch.fontScale);
      this._geometryDirty = true;
    }
    if (patch.area !== undefined) {
      o.area = Number(patch.area);
      this._geometryDirty = true;
    }
    if (patch.speed !== undefined && patch.speed > 0) {
      o.speed = Number(patch.speed);
      this.layout.configure({ speed: o.speed });
    }
    if (patch.reducedMotion !== undefined) {
      o.reducedMotion = !!patch.reducedMotion;
      this.layout.configure({ staticScroll: o.reducedMotion });
    }
    if (patch.blocked !== undefined) {
      o.blocked = Array.isArray(patch.blocked) ? patch.blocked : [];
      this._blocked = o.blocked.map((w) => String(w).trim().toLowerCase()).filter(Boolean);
    }
    if (patch.enabled !== undefined) this._setEnabled(!!patch.enabled);
    for (const k of ['queueSize', 'maxWaitMs', 'scrollDurationMs', 'fixedDurationMs', 'gapPx']) {
      if (patch[k] !== undefined) {
        o[k] = patch[k];
        this.layout.configure({ [k]: patch[k] });
      }
    }
    if (this._geometryDirty) this._wake();
  }

  _setEnabled(on) {
    if (on === this._enabled) return;
    this._enabled = on;
    this.stage.style.display = on ? '' : 'none';
    if (!on) {
      this._release(this.layout.clear());
      this.layout.dropQueued('disabled');
      const n = this.layout.ownQueue.length;
      this.layout.ownQueue.length = 0;
      if (n) this.layout.countDrop('disabled', n);
    } else {
      this._geometryDirty = true;
      this._wake();
    }
  }

  get enabled() {
    return this._enabled;
  }

  /**
   * Offers one comment (a protocol COMMENT object). It is shown when a lane frees up in time, or dropped and
   * counted. `own` (or the `isOwn` option) marks the viewer's own comment: bordered, and never dropped by policy.
   * A `count` above 1 (identical comments the server merged) is shown after the text, as `text ×count`.
   * @returns {boolean} false when refused at once (off, blocked, hidden tab)
   */
  add(comment, opts = {}) {
    if (!comment || typeof comment.text !== 'string') return false;
    const own = opts.own ?? !!this.isOwn(comment);
    if (!this._enabled) {
      this.layout.countDrop('disabled');
      return false;
    }
    if (!own && this._isBlocked(comment.text)) {
      this.layout.countDrop('blocked');
      return false;
    }
    const count = Number.isSafeInteger(comment.count) && comment.count > 1 ? comment.count : 1;
    const item = {
      id: comment.id,
      text: comment.text,
      // What is shown: a comment the server merged with identical ones says how many it stands for.
      label: count > 1 ? `${comment.text} ×${count}` : comment.text,
      count,
      user: comment.user,
      mode: MODES.includes(comment.mode) ? comment.mode : 'scroll',
      color: COLOR_RE.test(comment.color ?? '') ? comment.color.toLowerCase() : '#ffffff',
      own,
    };
    const res = this.layout.enqueue(item, this._now(), own);
    if (res === 'queued') this._wake();
    return res === 'queued';
  }

  /** Offers comments in order (e.g. a whole batch). */
  addMany(comments, opts = {}) {
    for (const c of comments) this.add(c, opts);
  }

  _isBlocked(text) {
    if (this._blocked.length === 0) return false;
    const t = text.toLowerCase();
    return this._blocked.some((w) => t.includes(w));
  }

  /** Takes every comment off screen and frees the lanes (what a seek does). Waiting comments stay queued. */
  clear() {
    this._release(this.layout.clear());
  }

  /** Takes comments with these ids off screen and out of the wait queue (an admin deleted them). */
  remove(ids) {
    this._release(this.layout.remove(ids));
  }

  /** The video jumped: nothing on screen belongs to the new position. */
  seek() {
    this.clear();
    this._lastCT = null;
    this._wake();
  }

  /** Re-reads the stage size on the next frame and re-lays the lanes. */
  resize() {
    this._geometryDirty = true;
    this._wake();
  }

  /** Without a video: stops or restarts the clock (with a video, its own pause/play drive the clock). */
  pause() {
    this._clockPaused = true;
  }

  resume() {
    this._clockPaused = false;
    this._wake();
  }

  /** Without a video: clock rate (with a video, its playbackRate). */
  setRate(rate) {
    if (rate > 0) this._clockRate = rate;
  }

  start() {
    if (this._destroyed) return;
    this._started = true;
    this._wake();
  }

  /** Stops the animation loop; comments freeze where they are. */
  stop() {
    this._started = false;
    if (this._rafId !== null) this._caf(this._rafId);
    this._rafId = null;
    this._lastWall = null;
  }

  destroy() {
    this.stop();
    this._destroyed = true;
    for (const off of this._listeners) off();
    this._listeners = [];
    this._ro?.disconnect();
    this.stage.remove?.();
  }

  _wake() {
    if (!this._started || this._destroyed || this._rafId !== null) return;
    this._rafId = this._raf((ts) => this._frame(ts));
  }

  _onVisibility() {
    if (this.doc.hidden) {
      this.layout.setHidden(true);
    } else {
      this.layout.setHidden(false);
      this.layout.onGap();
      this._wake();
    }
  }

  _running() {
    const v = this.video;
    if (!v) return !this._clockPaused;
    return !v.paused && !v.ended && !v.seeking && (v.readyState === undefined || v.readyState >= 2);
  }

  _rate() {
    const v = this.video;
    const r = v ? Number(v.playbackRate) : this._clockRate;
    return Number.isFinite(r) && r > 0 ? r : 1;
  }

  /** Font size in px after the font scale. */
  get fontPx() {
    return this.opts.fontPx * this.opts.fontScale;
  }

  get laneHeight() {
    return Math.ceil(this.fontPx * this.opts.lineHeight);
  }

  _font() {
    return `${this.opts.fontWeight} ${this.fontPx}px ${this.opts.fontFamily}`;
  }

  _measure(item) {
    if (!this._ctx) {
      const c = typeof OffscreenCanvas === 'function' ? new OffscreenCanvas(1, 1) : this.doc.createElement?.('canvas');
      this._ctx = c?.getContext?.('2d') ?? null;
      this._ctxFont = '';
    }
    let w;
    if (this._ctx) {
      const font = this._font();
      if (this._ctxFont !== font) {
        this._ctx.font = font;
        this._ctxFont = font;
      }
      w = this._ctx.measureText(item.label).width;
    } else {
      // No canvas (tests, very old engines): a generous estimate keeps lanes safe.
      w = [...item.label].length * this.fontPx;
    }
    return Math.ceil(w) + TEXT_PAD_PX + (item.own ? OWN_PAD_PX : 0);
  }

  _applyGeometry() {
    this._geometryDirty = false;
    const w = this.stage.clientWidth || 0;
    const h = this.stage.clientHeight || 0;
    this.stage.style.fontSize = `${this.fontPx}px`;
    const removed = this.layout.configure({ width: w, height: h, laneHeight: this.laneHeight, area: this.opts.area });
    this._release(removed);
    // Fixed comments are centred on the width, which may have changed.
    for (const [rec, el] of this._els) {
      if (rec.mode !== 'scroll') this._position(rec, el);
    }
  }

  _frame() {
    this._rafId = null;
    if (!this._started || this._destroyed) return;
    const wall = this._now();
    const running = this._enabled && this._running();
    if (this._lastWall !== null) {
      const dt = Math.max(0, wall - this._lastWall);
      if (dt > this.opts.gapResetMs) this.layout.onGap();
      this.mediaTime += this._mediaDelta(dt, running);
    }
    this._lastWall = wall;
    this._wasRunning = running;
    if (this.video) this._lastCT = Number(this.video.currentTime);

    if (this._geometryDirty) this._applyGeometry();
    const { placed, removed } = this.layout.step(this.mediaTime, wall, running);
    this._release(removed);
    for (const rec of placed) this._show(rec);
    for (const [rec, el] of this._els) {
      if (rec.mode === 'scroll') this._position(rec, el);
    }

    // Idle when nothing can move and nothing waits: no frames, no CPU. add(), play, resize and visibility wake
    // the loop up again.
    const waiting = this.layout.queue.length > 0 || this.layout.ownQueue.length > 0;
    const idle = !waiting && (this.layout.live.size === 0 || !running);
    if (!idle) this._wake();
    else this._lastWall = null;
  }

  // Media time elapsed since the previous frame. A file-backed video is followed through its currentTime, so
  // comments stop when it stalls and a position jump (a seek, even one whose `seeking` event we missed) clears
  // the screen. A live MediaStream has no meaningful position: its clock is integrated from wall time while it
  // plays, scaled by playbackRate; so is the renderer's own clock when there is no video.
  _mediaDelta(dt, running) {
    const v = this.video;
    if (v && !v.srcObject) {
      const ct = Number(v.currentTime);
      if (this._lastCT === null || !Number.isFinite(ct) || !Number.isFinite(this._lastCT)) return 0;
      const d = (ct - this._lastCT) * 1000;
      if (d < -50 || d > dt * this._rate() + this.opts.seekJumpMs) {
        this.clear();
        return 0;
      }
      return Math.max(0, d);
    }
    return running && this._wasRunning ? dt * this._rate() : 0;
  }

  _acquire() {
    let el = this._pool.pop();
    if (!el) {
      el = this.doc.createElement('div');
      el.className = 'dm-item';
      Object.assign(el.style, {
        position: 'absolute', left: '0', top: '0', whiteSpace: 'pre', boxSizing: 'border-box',
        willChange: 'transform', overflow: 'visible',
      });
      this.stage.appendChild(el);
      this._elementCount++;
    }
    el.style.display = '';
    return el;
  }

  _show(rec) {
    const el = this._acquire();
    const item = rec.item;
    // textContent only: comment text is data, never markup.
    el.textContent = item.label;
    const s = el.style;
    s.color = item.color;
    s.width = `${rec.w}px`;
    s.height = `${rec.h}px`;
    s.lineHeight = `${rec.h}px`;
    const halo = isDark(item.color) ? '#fff' : '#000';
    s.textShadow = `1px 0 1px ${halo}, -1px 0 1px ${halo}, 0 1px 1px ${halo}, 0 -1px 1px ${halo}`;
    s.border = rec.own ? '2px solid #fff' : '';
    s.padding = rec.own ? '0 4px' : '0';
    s.borderRadius = rec.own ? '4px' : '';
    el.className = rec.own ? 'dm-item dm-own' : 'dm-item';
    el.dataset.id = String(item.id ?? '');
    el.dataset.mode = rec.mode;
    el.dataset.lane = String(rec.lane);
    this._els.set(rec, el);
    this._position(rec, el);
  }

  _position(rec, el) {
    const r = this.layout.rect(rec, this.mediaTime);
    const x = Math.round(r.x * 10) / 10;
    if (el._dmX === x && el._dmY === r.y) return;
    el._dmX = x;
    el._dmY = r.y;
    el.style.transform = `translate3d(${x}px, ${r.y}px, 0)`;
  }

  _release(recs) {
    for (const rec of recs) {
      const el = this._els.get(rec);
      if (!el) continue;
      this._els.delete(rec);
      el.style.display = 'none';
      el.textContent = '';
      el._dmX = el._dmY = undefined;
      this._pool.push(el);
    }
  }

  /**
   * Counters and sizes, for tests and the stats panel. `live` elements show a comment, `pooled` wait for reuse;
   * `live + pooled <= maxElements` always.
   */
  stats() {
    const s = this.layout.stats(this.mediaTime);
    return {
      ...s,
      live: this._els.size,
      pooled: this._pool.length,
      elements: this._elementCount,
      maxElements: this.opts.maxElements,
      enabled: this._enabled,
      running: this._running(),
      hidden: this.layout.hidden,
      mediaTime: this.mediaTime,
      width: this.layout.opts.width,
      height: this.layout.opts.height,
    };
  }

  /**
   * Comments on screen now: `{id, text, mode, lane, own, rect:{x,y,w,h}}`, rect in px relative to the stage
   * (the model's position, which is what the DOM transform was set to this frame).
   */
  visible() {
    return this.layout.visible(this.mediaTime);
  }
}

export { scrollX };
