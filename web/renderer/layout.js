// The renderer's decisions (which lane, wait or drop, when a comment leaves) live here, apart from the DOM, so
// that the rules that keep comments from overlapping and from bursting can be unit-tested in Node with nothing
// but numbers. The renderer feeds it widths and clocks and paints what it says.
//
// Two clocks, on purpose:
// - media time `t` (ms) moves comments: it stops when the video pauses and runs faster with playbackRate, so
//   every trajectory is a function of it;
// - wall time `wall` (ms) ages the wait queue: a live comment is stale after a few real seconds whatever the
//   video does, so a paused or hidden player does not save up a backlog to spill later.

export const MODES = Object.freeze(['scroll', 'top', 'bottom']);

/** Reasons a comment is counted as dropped (never shown). */
export const DROP_REASONS = Object.freeze(['queueFull', 'tooLate', 'hidden', 'blocked', 'disabled']);

export const LAYOUT_DEFAULTS = Object.freeze({
  width: 0,
  height: 0,
  laneHeight: 32,
  // Fraction of the height that holds lanes (the "display area" setting).
  area: 1,
  // Bilibili's model: every scroll comment crosses the stage in the same media time, so its speed is
  // (width + textWidth) / duration and a wider text moves faster. `speed` divides the duration.
  scrollDurationMs: 8000,
  fixedDurationMs: 4000,
  speed: 1,
  // Horizontal air between two comments of a lane, kept for the whole time both are on screen.
  gapPx: 24,
  queueSize: 100,
  // A viewer's own comments are never dropped by policy; this only stops a runaway producer from growing memory.
  ownQueueSize: 50,
  maxWaitMs: 4000,
  maxLive: 300,
  // Reduced motion: scroll comments are shown as static top (then bottom) comments instead of moving.
  staticScroll: false,
});

/**
 * Left edge of a scroll comment at media time t.
 * @param {{x0:number, v:number, t0:number}} rec
 * @param {number} t
 */
export function scrollX(rec, t) {
  return rec.x0 - rec.v * (t - rec.t0);
}

/**
 * The exact catch-up test. May a scroll comment of width `w` and speed `v` (px per media ms) enter a lane at the
 * right edge `width` at time `t`, when `last` is the comment that entered the lane before it?
 *
 * Both move linearly, so the distance between the new head and the old tail is linear in time: it is enough to
 * check it at the two ends of the interval during which both are on screen, now and the moment the old tail
 * leaves at x = 0. Now: the old comment must have fully entered, plus the gap. Then: the new head must still be
 * at least the gap away from the left edge, i.e. it has not caught up. Comments ahead of `last` need no check:
 * `last` passed this same test against them, so the new one is behind `last`, which is behind them.
 *
 * @param {{x0:number, w:number, v:number, t0:number, end:number} | null} last
 * @param {number} w width of the new comment
 * @param {number} v speed of the new comment
 * @param {number} t now (media ms)
 * @param {number} width stage width
 * @param {number} gap px
 */
export function scrollLaneAccepts(last, w, v, t, width, gap) {
  if (!last || last.end <= t) return true;
  const tail = scrollX(last, t) + last.w;
  if (tail > width - gap) return false;
  const headWhenOldLeaves = width - v * (last.end - t);
  return headWhenOldLeaves >= gap;
}

/** Speed (px per media ms) of a scroll comment of width w on a stage of width `width`. */
export function scrollSpeed(width, w, durationMs) {
  return (width + w) / durationMs;
}

function emptyCounters() {
  const dropped = {};
  for (const r of DROP_REASONS) dropped[r] = 0;
  return { shown: 0, cleared: 0, dropped };
}

/**
 * Lanes, wait queue and drop policy for one stage.
 *
 * Items are plain objects `{id, text, mode, ...}`; `measure(item)` returns the text's rendered width in px
 * (called lazily, at most once per geometry, only for comments that get a chance to be placed).
 */
export class Layout {
  /**
   * @param {Partial<typeof LAYOUT_DEFAULTS>} [options]
   * @param {(item:any) => number} [measure]
   */
  constructor(options = {}, measure = (item) => item.width ?? 0) {
    this.opts = { ...LAYOUT_DEFAULTS };
    this.measure = measure;
    this.live = new Set();
    this.queue = [];
    this.ownQueue = [];
    this.counters = emptyCounters();
    this.hidden = false;
    // Bumped when the lane height changes, so widths measured with the old font are measured again.
    this.gen = 0;
    this.laneCount = 0;
    this.lanes = { scroll: [], top: [], bottom: [] };
    this.configure(options);
  }

  /**
   * Changes options or geometry. Returns the records taken off screen because their lane no longer exists
   * (area or height shrank) or because lanes changed height (font scale): keeping them would overlap the new grid.
   * @returns {any[]} removed records
   */
  configure(patch = {}) {
    const o = this.opts;
    const before = { laneHeight: o.laneHeight, width: o.width };
    for (const [k, v] of Object.entries(patch)) {
      if (v !== undefined && k in LAYOUT_DEFAULTS) o[k] = v;
    }
    o.area = Math.min(1, Math.max(0, Number(o.area) || 0));
    o.queueSize = Math.max(1, Math.floor(o.queueSize));
    o.maxLive = Math.max(1, Math.floor(o.maxLive));
    let removed = [];
    if (o.laneHeight !== before.laneHeight) {
      this.gen++;
      removed = this.clear();
    }
    const count = o.laneHeight > 0 ? Math.max(0, Math.floor((o.height * o.area) / o.laneHeight)) : 0;
    if (count !== this.laneCount) {
      if (count < this.laneCount) {
        for (const rec of [...this.live]) {
          if (rec.lane >= count) {
            this._remove(rec);
            this.counters.cleared++;
            removed.push(rec);
          }
        }
      }
      for (const m of MODES) {
        const lanes = this.lanes[m];
        lanes.length = count;
        for (let i = 0; i < count; i++) if (lanes[i] === undefined) lanes[i] = null;
      }
      this.laneCount = count;
    }
    return removed;
  }

  /** Counts a comment the caller refused before queueing it (blocked word, danmaku off). */
  countDrop(reason, n = 1) {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + n;
  }

  /**
   * Offers a comment. Own comments go to a priority queue exempt from the drop policy; others are dropped at
   * once while the page is hidden (nobody can see them, and they would be stale on return), and otherwise wait in
   * a bounded FIFO whose oldest entry is dropped when it overflows (live comments: the newest are the relevant ones).
   * @returns {'queued' | 'hidden'} 'hidden' when dropped
   */
  enqueue(item, wall, own = false) {
    const entry = { item, own, enq: wall, w: -1, gen: -1 };
    if (own) {
      this.ownQueue.push(entry);
      if (this.ownQueue.length > this.opts.ownQueueSize) {
        this.ownQueue.shift();
        this.countDrop('queueFull');
      }
      return 'queued';
    }
    if (this.hidden) {
      this.countDrop('hidden');
      return 'hidden';
    }
    this.queue.push(entry);
    while (this.queue.length > this.opts.queueSize) {
      this.queue.shift();
      this.countDrop('queueFull');
    }
    return 'queued';
  }

  /** While hidden, new non-own comments are dropped (counted `hidden`). */
  setHidden(hidden) {
    this.hidden = !!hidden;
  }

  /**
   * The page was away (background tab, a long frame gap): what waited meanwhile is stale. Dropping it is what
   * prevents a burst on return; own comments stay.
   */
  onGap() {
    const n = this.queue.length;
    this.queue.length = 0;
    if (n) this.countDrop('hidden', n);
    return n;
  }

  /** Drops every non-own queued comment for `reason`. */
  dropQueued(reason) {
    const n = this.queue.length;
    this.queue.length = 0;
    if (n) this.countDrop(reason, n);
    return n;
  }

  /** Takes everything off screen (seek, font change, clear) and frees every lane. Queues are kept. */
  clear() {
    const removed = [...this.live];
    this.live.clear();
    this.counters.cleared += removed.length;
    for (const m of MODES) this.lanes[m].fill(null);
    return removed;
  }

  /**
   * Takes comments with these ids off screen and out of the queues (an admin deleted them).
   * @returns the removed on-screen records, whose elements the caller frees
   */
  remove(ids) {
    const gone = new Set(ids);
    const keep = (e) => !gone.has(e.item.id);
    this.queue = this.queue.filter(keep);
    this.ownQueue = this.ownQueue.filter(keep);
    const removed = [...this.live].filter((rec) => gone.has(rec.item.id));
    for (const rec of removed) this._remove(rec);
    return removed;
  }

  _remove(rec) {
    this.live.delete(rec);
    const lanes = this.lanes[rec.mode];
    if (lanes[rec.lane] === rec) lanes[rec.lane] = null;
  }

  _width(entry) {
    if (entry.gen !== this.gen) {
      const w = Number(this.measure(entry.item));
      entry.w = Number.isFinite(w) && w > 0 ? w : 0;
      entry.gen = this.gen;
    }
    return entry.w;
  }

  _durationScroll() {
    return this.opts.scrollDurationMs / (this.opts.speed > 0 ? this.opts.speed : 1);
  }

  _displayModes(item) {
    const mode = MODES.includes(item.mode) ? item.mode : 'scroll';
    if (mode === 'scroll' && this.opts.staticScroll) return ['top', 'bottom'];
    return [mode];
  }

  /**
   * Top lanes count from the top of the area and bottom lanes from its bottom, so when both fill up they meet in
   * the middle: a fixed comment may take a lane only if no live comment of the other fixed mode covers its band.
   */
  _clearOfOpposite(mode, i, t) {
    const o = this.opts;
    const L = o.laneHeight;
    const H = o.height * o.area;
    const band = (m, lane) => (m === 'bottom' ? H - (lane + 1) * L : lane * L);
    const y = band(mode, i);
    const other = mode === 'top' ? 'bottom' : 'top';
    const lanes = this.lanes[other];
    for (let j = 0; j < lanes.length; j++) {
      const r = lanes[j];
      if (!r || r.end <= t) continue;
      const oy = band(other, j);
      if (oy < y + L && y < oy + L) return false;
    }
    return true;
  }

  /** Tries to place one entry at media time t; returns the record or null. */
  _place(entry, t) {
    const o = this.opts;
    const w = this._width(entry);
    for (const mode of this._displayModes(entry.item)) {
      const lanes = this.lanes[mode];
      if (mode === 'scroll') {
        const D = this._durationScroll();
        const v = scrollSpeed(o.width, w, D);
        for (let i = 0; i < lanes.length; i++) {
          if (!scrollLaneAccepts(lanes[i], w, v, t, o.width, o.gapPx)) continue;
          const rec = { item: entry.item, own: entry.own, mode, lane: i, t0: t, w, h: o.laneHeight, x0: o.width, v, end: t + D };
          lanes[i] = rec;
          return rec;
        }
      } else {
        for (let i = 0; i < lanes.length; i++) {
          const cur = lanes[i];
          if (cur && cur.end > t) continue;
          if (!this._clearOfOpposite(mode, i, t)) continue;
          const rec = { item: entry.item, own: entry.own, mode, lane: i, t0: t, w, h: o.laneHeight, x0: 0, v: 0, end: t + o.fixedDurationMs };
          lanes[i] = rec;
          return rec;
        }
      }
    }
    return null;
  }

  /**
   * One frame. Retires comments whose time is over, ages the queue, and (when `running`, i.e. the media clock
   * moves) places what fits: own comments first; a waiting own comment of a mode holds back the others of that
   * mode, so it gets the next free lane and cannot be starved.
   * @param {number} t media time (ms)
   * @param {number} wall wall time (ms)
   * @param {boolean} [running]
   * @returns {{placed:any[], removed:any[]}}
   */
  step(t, wall, running = true) {
    const removed = [];
    for (const rec of this.live) {
      if (rec.end <= t) {
        this._remove(rec);
        removed.push(rec);
      }
    }
    const placed = [];
    const o = this.opts;
    const heldModes = new Set();
    if (running && this.laneCount > 0 && o.width > 0) {
      const own = this.ownQueue;
      let k = 0;
      for (let i = 0; i < own.length; i++) {
        const entry = own[i];
        const rec = this.live.size < o.maxLive && !this._displayModes(entry.item).some((m) => heldModes.has(m))
          ? this._place(entry, t)
          : null;
        if (rec) {
          this._shown(rec, placed);
        } else {
          for (const m of this._displayModes(entry.item)) heldModes.add(m);
          own[k++] = entry;
        }
      }
      own.length = k;
    }
    const q = this.queue;
    let k = 0;
    for (let i = 0; i < q.length; i++) {
      const entry = q[i];
      if (wall - entry.enq > o.maxWaitMs) {
        this.countDrop('tooLate');
        continue;
      }
      let rec = null;
      if (running && this.laneCount > 0 && o.width > 0 && this.live.size < o.maxLive) {
        const modes = this._displayModes(entry.item);
        if (!modes.every((m) => heldModes.has(m))) rec = this._place(entry, t);
      }
      if (rec) this._shown(rec, placed);
      else q[k++] = entry;
    }
    q.length = k;
    return { placed, removed };
  }

  _shown(rec, placed) {
    this.live.add(rec);
    this.counters.shown++;
    placed.push(rec);
  }

  /** Rectangle of a record at media time t, relative to the stage. */
  rect(rec, t) {
    const o = this.opts;
    const y = rec.mode === 'bottom' ? o.height * o.area - (rec.lane + 1) * o.laneHeight : rec.lane * o.laneHeight;
    const x = rec.mode === 'scroll' ? scrollX(rec, t) : Math.max(0, (o.width - rec.w) / 2);
    return { x, y, w: rec.w, h: rec.h };
  }

  /** What is on screen at media time t (records intersecting the stage). */
  visible(t) {
    const out = [];
    const W = this.opts.width;
    for (const rec of this.live) {
      const r = this.rect(rec, t);
      if (r.x >= W || r.x + r.w <= 0) continue;
      out.push({ id: rec.item.id, text: rec.item.text, mode: rec.mode, lane: rec.lane, own: rec.own, rect: r });
    }
    return out;
  }

  stats(t) {
    const busy = {};
    for (const m of MODES) busy[m] = this.lanes[m].filter((r) => r && r.end > t).length;
    return {
      live: this.live.size,
      queued: this.queue.length,
      queuedOwn: this.ownQueue.length,
      shown: this.counters.shown,
      cleared: this.counters.cleared,
      dropped: { ...this.counters.dropped },
      lanes: { count: this.laneCount, height: this.opts.laneHeight, busy },
    };
  }
}
