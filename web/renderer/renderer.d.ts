// Type declarations for renderer.js (the DOM overlay).

import type { Layout, LayoutStats, Mode, VisibleComment } from './layout.js';
export { Layout, MODES, scrollX } from './layout.js';
export type { Mode, VisibleComment, LayoutStats, Rect, DropReason } from './layout.js';

export interface RendererComment {
  id?: number;
  text: string;
  user?: string;
  mode?: Mode | string;
  /** `#rrggbb`; anything else is shown white */
  color?: string;
  /** identical comments the server merged into this one; above 1 it is shown as `text ×count` */
  count?: number;
}

export interface DisplayOptions {
  /** 0..1 */
  opacity?: number;
  /** multiplies fontPx; changing it re-lays the lanes (clears the screen) */
  fontScale?: number;
  /** divides scrollDurationMs, for comments entering from now on */
  speed?: number;
  /** 0..1 of the height holding lanes (0.25, 0.5, 0.75, 1 in the settings) */
  area?: number;
  /** false hides the overlay and drops everything (counted `disabled`) */
  enabled?: boolean;
  /** true: scroll comments are shown static in top/bottom lanes */
  reducedMotion?: boolean;
  /** case-insensitive substrings; matching comments are dropped (counted `blocked`), own ones excepted */
  blocked?: string[];
  queueSize?: number;
  maxWaitMs?: number;
  scrollDurationMs?: number;
  fixedDurationMs?: number;
  gapPx?: number;
}

export interface RendererOptions extends DisplayOptions {
  /** the element the overlay covers; it must be positioned (relative/absolute) */
  container: HTMLElement;
  /** drives the clock: pause stops motion, seeking clears, playbackRate scales speed */
  video?: HTMLVideoElement | null;
  /** marks the viewer's own comments (e.g. `c => client.isOwn(c)`) */
  isOwn?: (comment: RendererComment) => boolean;
  /** base font size in px (25) */
  fontPx?: number;
  fontFamily?: string;
  fontWeight?: string;
  lineHeight?: number;
  /** hard cap on comment elements, live + pooled (300) */
  maxElements?: number;
  /** a frame this late (ms) counts as the page having been away: queued comments are dropped */
  gapResetMs?: number;
  seekJumpMs?: number;
  /** default true */
  autoStart?: boolean;
  /** injection for tests */
  now?: () => number;
  requestAnimationFrame?: (cb: (ts: number) => void) => unknown;
  cancelAnimationFrame?: (id: unknown) => void;
  document?: Document;
  window?: Window;
}

export interface RendererStats extends LayoutStats {
  /** elements showing a comment */
  live: number;
  /** elements waiting for reuse */
  pooled: number;
  /** elements created (live + pooled), never above maxElements */
  elements: number;
  maxElements: number;
  enabled: boolean;
  running: boolean;
  hidden: boolean;
  mediaTime: number;
  width: number;
  height: number;
}

export const RENDERER_DEFAULTS: Readonly<Required<Omit<RendererOptions,
  'container' | 'video' | 'isOwn' | 'autoStart' | 'now' | 'requestAnimationFrame' | 'cancelAnimationFrame' | 'document' | 'window'>>>;

export class DanmakuRenderer {
  constructor(options: RendererOptions);
  readonly container: HTMLElement;
  /** the overlay element the renderer created inside `container` (class `dm-stage`) */
  readonly stage: HTMLDivElement;
  readonly video: HTMLVideoElement | null;
  readonly layout: Layout;
  readonly enabled: boolean;
  readonly fontPx: number;
  readonly laneHeight: number;
  /** media ms elapsed on the renderer's clock */
  readonly mediaTime: number;
  /** false when refused at once (off, blocked word, hidden tab) */
  add(comment: RendererComment, options?: { own?: boolean }): boolean;
  addMany(comments: RendererComment[], options?: { own?: boolean }): void;
  setOptions(options: DisplayOptions): void;
  clear(): void;
  /** takes comments with these ids off screen and out of the wait queue (an admin deleted them) */
  remove(ids: number[]): void;
  seek(): void;
  resize(): void;
  /** clock mode only (no video) */
  pause(): void;
  resume(): void;
  setRate(rate: number): void;
  start(): void;
  stop(): void;
  destroy(): void;
  stats(): RendererStats;
  visible(): VisibleComment[];
}
