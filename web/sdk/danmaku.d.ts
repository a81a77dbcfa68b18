// Type declarations for danmaku.js, written by hand so the SDK ships as plain JavaScript with no build step.

export const PROTOCOL_VERSION: 1;
export type Mode = 'scroll' | 'top' | 'bottom';
export const MODES: readonly Mode[];
export type ClientState = 'connecting' | 'open' | 'reconnecting' | 'closed';
export const STATES: readonly ClientState[];

/** A comment as the server sends it (docs/protocol.md). */
export interface Comment {
  id: number;
  user: string;
  text: string;
  /** `#rrggbb`, lowercase */
  color: string;
  mode: Mode;
  /** server accept time, ms since the Unix epoch (an own comment delivered at its ack: the client's clock) */
  ts: number;
  /** sent by a moderator (an admin token); such comments are never shed or merged */
  mod?: boolean;
  /** identical comments (text, color, mode) of one batch merged into this one; absent means 1 */
  count?: number;
  /** set by the SDK on this client's own comment, delivered when its ack arrives */
  own?: boolean;
}

export interface Hello {
  type: 'hello';
  room: string;
  online: number;
  last_id: number;
  recovered: boolean;
}

export interface ClientOptions {
  /** `ws(s)://host[:port][/ws]` or `http(s)://host`; default: this page's origin + `/ws`. */
  url?: string;
  room: string;
  /** display name; the server uses `guest` when absent */
  user?: string | null;
  /** start after this id (e.g. restored from a previous page) instead of live only */
  since?: number | null;
  /**
   * a token the server accepts (docs/protocol.md, Identity), sent URL-encoded as `?token=`; a function is called
   * at each connection, so that a reconnect can carry a fresh one
   */
  token?: string | (() => string) | null;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** 0..1, the random fraction of each reconnect delay */
  backoffJitter?: number;
  stableAfterMs?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  connectTimeoutMs?: number;
  sendTimeoutMs?: number;
  /** 0 disables the client-side length check */
  maxChars?: number;
  /** 0 disables the client-side size check */
  maxMessageBytes?: number;
  maxRetries?: number;
  /** default true */
  autoConnect?: boolean;
  /** for tests: a WebSocket-compatible constructor */
  WebSocket?: new (url: string) => WebSocketLike;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: unknown) => void;
  now?: () => number;
  random?: () => number;
}

/** What the client uses of a WebSocket (so tests can inject a fake). */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean: boolean }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onopen: ((ev: unknown) => void) | null;
}

export interface SendInput {
  text: string;
  /** `#rrggbb` */
  color?: string;
  mode?: Mode;
}

export interface Gap {
  /** the position we asked for (null on a first connection) */
  since: number | null;
  /** hello.last_id */
  lastId: number;
  /** `history`: part of the gap left the room's history; `reset`: the room's ids restarted */
  reason: 'history' | 'reset';
}

export interface ClientEvents {
  comment: Comment;
  batch: Comment[];
  online: number;
  state: { state: ClientState; prev: ClientState; attempt: number; code?: number; reason?: string; delayMs?: number };
  hello: Hello;
  gap: Gap;
  error: { code: string; message: string; nonce?: string; retryAfterMs?: number };
  reconnect: { attempt: number; delayMs: number; code: number; reason: string };
  close: { code: number; reason: string; wasClean: boolean };
  /** an admin deleted these comments: remove them wherever they are shown */
  delete: { room: string; ids: number[] };
  /** a system message from an admin (plain text: show it as text, never as HTML) */
  notice: { room: string; text: string };
  /** comments the server left out of a batch in a hot room (`count`), and the client's running `total` */
  shed: { count: number; total: number };
}

export class DanmakuError extends Error {
  constructor(code: string, message?: string, nonce?: string, retryAfterMs?: number);
  /** a protocol error code, or `timeout`, `disconnected`, `not_connected`, `closed`, `bad_json` */
  code: string;
  nonce?: string;
  /** on `rate_limited`: milliseconds to wait before sending again */
  retryAfterMs?: number;
}

export class Emitter<E extends Record<string, any> = Record<string, any>> {
  on<K extends keyof E & string>(type: K, fn: (value: E[K]) => void): () => void;
  off<K extends keyof E & string>(type: K, fn: (value: E[K]) => void): void;
  once<K extends keyof E & string>(type: K, fn: (value: E[K]) => void): () => void;
  emit<K extends keyof E & string>(type: K, value: E[K]): void;
}

export class DanmakuClient extends Emitter<ClientEvents> {
  constructor(options: ClientOptions);
  readonly room: string;
  readonly user: string | null;
  readonly url: string;
  readonly state: ClientState;
  /** viewers in the room, from hello and online frames */
  readonly online: number;
  /** reconnect attempts since the last stable connection */
  readonly attempt: number;
  /** id of the last comment delivered; the next connection's `since` */
  readonly lastId: number | null;
  readonly cursor: Cursor;
  /** comments the server shed from this room's batches (hot room) since the client was created */
  readonly shed: number;
  connect(): void;
  /** closes for good (no reconnect); pending sends reject with `closed` */
  close(code?: number, reason?: string): void;
  /** skips the current backoff wait */
  reconnectNow(): void;
  /** resolves with the comment id from the ack */
  send(comment: SendInput, options?: { timeoutMs?: number }): Promise<number>;
  /** marked `own`, acked here, or matches a send still waiting for its ack */
  isOwn(comment: Partial<Comment> | null | undefined): boolean;
}

export const CLIENT_DEFAULTS: Readonly<Required<Omit<ClientOptions,
  'url' | 'room' | 'user' | 'since' | 'token' | 'WebSocket' | 'setTimeout' | 'clearTimeout' | 'now' | 'random'>>>;

/** Delay in [cap * (1 - jitter), cap], cap = min(maxMs, baseMs * 2^attempt). */
export function backoffDelay(
  attempt: number,
  options?: { baseMs?: number; maxMs?: number; jitter?: number },
  random?: () => number,
): number;

export function validateRoom(room: string): string;
export function validateUser(user: string): string;
export function validateComment(input: SendInput, options?: { maxChars?: number }): SendInput;
export function buildUrl(
  url: string,
  params: { room: string; user?: string | null; since?: number | null; token?: string | null },
): string;
export function wsUrlFromLocation(loc?: { protocol: string; host: string }): string;

export class Cursor {
  constructor(since?: number | null);
  lastId: number | null;
  /** comments dropped because their id was not above the position */
  duplicates: number;
  since(): number | null;
  onHello(hello: Pick<Hello, 'last_id' | 'recovered'>): Gap | null;
  /** `upto`: the batch's field; the position moves to it when it is beyond the batch's last comment */
  accept<T extends { id: number }>(msgs: T[], upto?: number): T[];
  /** ids deleted by an admin: never delivered from now on */
  forget(ids: number[]): void;
}
