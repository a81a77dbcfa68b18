// Type declarations for layout.js (the renderer's DOM-free lane and queue logic).

export type Mode = 'scroll' | 'top' | 'bottom';
export const MODES: readonly Mode[];
export type DropReason = 'queueFull' | 'tooLate' | 'hidden' | 'blocked' | 'disabled';
export const DROP_REASONS: readonly DropReason[];

export interface LayoutOptions {
  width: number;
  height: number;
  laneHeight: number;
  /** 0..1, fraction of the height holding lanes */
  area: number;
  /** media ms for a scroll comment to cross the stage (divided by `speed`) */
  scrollDurationMs: number;
  /** media ms a top/bottom comment holds its lane */
  fixedDurationMs: number;
  speed: number;
  gapPx: number;
  queueSize: number;
  ownQueueSize: number;
  /** wall ms a comment may wait for a lane */
  maxWaitMs: number;
  maxLive: number;
  /** reduced motion: scroll comments take top, then bottom lanes */
  staticScroll: boolean;
}
export const LAYOUT_DEFAULTS: Readonly<LayoutOptions>;

export interface LayoutItem {
  id?: number;
  text: string;
  mode?: Mode | string;
  [k: string]: unknown;
}

/** A comment on screen. Scroll: left edge x0 - v * (t - t0); leaves at `end` (media ms). */
export interface Placed<T extends LayoutItem = LayoutItem> {
  item: T;
  own: boolean;
  /** the mode it is displayed in (a scroll comment is shown as top/bottom under reduced motion) */
  mode: Mode;
  lane: number;
  t0: number;
  w: number;
  h: number;
  x0: number;
  v: number;
  end: number;
}

export interface Rect { x: number; y: number; w: number; h: number }

export interface VisibleComment {
  id: number | undefined;
  text: string;
  mode: Mode;
  lane: number;
  own: boolean;
  rect: Rect;
}

export interface LayoutStats {
  live: number;
  queued: number;
  queuedOwn: number;
  shown: number;
  /** taken off screen early: seek, clear, lanes removed by a resize or font change */
  cleared: number;
  dropped: Record<DropReason, number>;
  lanes: { count: number; height: number; busy: Record<Mode, number> };
}

export function scrollX(rec: { x0: number; v: number; t0: number }, t: number): number;
/** The exact catch-up test (see layout.js). */
export function scrollLaneAccepts(
  last: { x0: number; w: number; v: number; t0: number; end: number } | null,
  w: number, v: number, t: number, width: number, gap: number,
): boolean;
export function scrollSpeed(width: number, w: number, durationMs: number): number;

export class Layout<T extends LayoutItem = LayoutItem> {
  constructor(options?: Partial<LayoutOptions>, measure?: (item: T) => number);
  readonly opts: LayoutOptions;
  readonly live: Set<Placed<T>>;
  readonly laneCount: number;
  hidden: boolean;
  configure(patch?: Partial<LayoutOptions>): Placed<T>[];
  countDrop(reason: DropReason | string, n?: number): void;
  enqueue(item: T, wall: number, own?: boolean): 'queued' | 'hidden';
  setHidden(hidden: boolean): void;
  onGap(): number;
  dropQueued(reason: DropReason | string): number;
  clear(): Placed<T>[];
  /** takes items with these ids off screen and out of the queues; returns the removed on-screen records */
  remove(ids: number[]): Placed<T>[];
  step(t: number, wall: number, running?: boolean): { placed: Placed<T>[]; removed: Placed<T>[] };
  rect(rec: Placed<T>, t: number): Rect;
  visible(t: number): VisibleComment[];
  stats(t: number): LayoutStats;
}
