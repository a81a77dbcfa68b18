// Viewer preferences for the danmaku overlay, kept in localStorage so they survive reloads and follow the viewer
// across rooms. Values are sanitized on every read and write: storage is user-editable and may hold anything,
// and the renderer should never see an opacity of "banana".
//
// Reduced motion: with `prefers-reduced-motion: reduce` (or the setting forced on), scroll comments are shown as
// static top/bottom comments instead of moving. Slowing them down would still be motion; static lanes keep the
// content and lose only density (more comments wait and are dropped, counted as usual).

export const AREAS = Object.freeze([0.25, 0.5, 0.75, 1]);
export const REDUCED_MOTION = Object.freeze(['auto', 'on', 'off']);
const MAX_BLOCKED = 200;
const MAX_BLOCKED_CHARS = 50;

export const SETTINGS_DEFAULTS = Object.freeze({
  enabled: true,
  opacity: 1,
  fontScale: 1,
  speed: 1,
  area: 1,
  blocked: Object.freeze([]),
  reducedMotion: 'auto',
});

export const STORAGE_KEY = 'danmaku.settings.v1';

function clamp(v, lo, hi, dflt) {
  const n = Number(v);
  if (!Number.isFinite(n)) return dflt;
  return Math.min(hi, Math.max(lo, n));
}

/** Normalizes a blocked-word list: trimmed, non-empty, unique (case-insensitively), bounded. */
export function normalizeBlocked(list) {
  if (!Array.isArray(list)) return [];
  const seen = new Set();
  const out = [];
  for (const w of list) {
    if (typeof w !== 'string') continue;
    const t = [...w.trim()].slice(0, MAX_BLOCKED_CHARS).join('');
    const key = t.toLowerCase();
    if (!t || seen.has(key)) continue;
    seen.add(key);
    out.push(t);
    if (out.length >= MAX_BLOCKED) break;
  }
  return out;
}

/** Any stored or user-given object -> a complete, valid settings object. */
export function sanitizeSettings(raw) {
  const r = raw && typeof raw === 'object' ? raw : {};
  const d = SETTINGS_DEFAULTS;
  const area = Number(r.area);
  return {
    enabled: typeof r.enabled === 'boolean' ? r.enabled : d.enabled,
    opacity: clamp(r.opacity, 0.1, 1, d.opacity),
    fontScale: clamp(r.fontScale, 0.5, 2, d.fontScale),
    speed: clamp(r.speed, 0.25, 3, d.speed),
    area: AREAS.includes(area) ? area : d.area,
    blocked: normalizeBlocked(r.blocked ?? d.blocked),
    reducedMotion: REDUCED_MOTION.includes(r.reducedMotion) ? r.reducedMotion : d.reducedMotion,
  };
}

/**
 * Whether `text` contains one of the blocked words. Plain case-insensitive substrings: no regular expressions,
 * which a viewer could make pathological and which would run on every comment.
 */
export function isBlocked(text, blocked) {
  if (!blocked || blocked.length === 0 || typeof text !== 'string') return false;
  const t = text.toLowerCase();
  return blocked.some((w) => t.includes(String(w).toLowerCase()));
}

function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, String(v)),
    removeItem: (k) => void m.delete(k),
  };
}

function defaultStorage() {
  try {
    // Accessing localStorage throws in some privacy modes; settings then last for the page only.
    const s = globalThis.localStorage;
    if (s) return s;
  } catch {
    // fall through
  }
  return memoryStorage();
}

/** Settings store with change notifications. */
export class Settings {
  /**
   * @param {{storage?: Storage, key?: string, matchMedia?: (q: string) => MediaQueryList, window?: any}} [options]
   */
  constructor(options = {}) {
    this.storage = options.storage ?? defaultStorage();
    this.key = options.key ?? STORAGE_KEY;
    this._matchMedia = options.matchMedia ?? (typeof globalThis.matchMedia === 'function' ? (q) => globalThis.matchMedia(q) : null);
    this._handlers = new Set();
    this._values = this._load();
    const win = options.window ?? (typeof globalThis.addEventListener === 'function' ? globalThis : null);
    // Another tab changed the settings: follow it, so two open rooms do not disagree.
    win?.addEventListener?.('storage', (e) => {
      if (e.key === this.key) {
        this._values = this._load();
        this._emit();
      }
    });
    this._mq = this._matchMedia?.('(prefers-reduced-motion: reduce)') ?? null;
    this._mq?.addEventListener?.('change', () => {
      if (this._values.reducedMotion === 'auto') this._emit();
    });
  }

  _load() {
    try {
      const raw = this.storage.getItem(this.key);
      return sanitizeSettings(raw ? JSON.parse(raw) : {});
    } catch {
      return sanitizeSettings({});
    }
  }

  _save() {
    try {
      this.storage.setItem(this.key, JSON.stringify(this._values));
    } catch {
      // Quota or privacy mode: keep the in-memory values.
    }
  }

  /** A copy of the current values. */
  get() {
    return { ...this._values, blocked: [...this._values.blocked] };
  }

  /** Merges, sanitizes, saves and notifies. */
  set(patch) {
    this._values = sanitizeSettings({ ...this._values, ...patch });
    this._save();
    this._emit();
    return this.get();
  }

  reset() {
    return this.set({ ...SETTINGS_DEFAULTS, blocked: [] });
  }

  toggle() {
    return this.set({ enabled: !this._values.enabled });
  }

  addBlocked(word) {
    return this.set({ blocked: [...this._values.blocked, word] });
  }

  removeBlocked(word) {
    const key = String(word).trim().toLowerCase();
    return this.set({ blocked: this._values.blocked.filter((w) => w.toLowerCase() !== key) });
  }

  isBlocked(text) {
    return isBlocked(text, this._values.blocked);
  }

  /** Effective reduced motion: the setting, or the system preference when `auto`. */
  reducedMotion() {
    const v = this._values.reducedMotion;
    if (v === 'on') return true;
    if (v === 'off') return false;
    return !!this._mq?.matches;
  }

  /** @returns {() => void} unsubscribe */
  onChange(fn) {
    this._handlers.add(fn);
    return () => this._handlers.delete(fn);
  }

  _emit() {
    const v = this.get();
    for (const fn of [...this._handlers]) {
      try {
        fn(v);
      } catch (e) {
        console.error(e);
      }
    }
  }

  /** What the renderer's setOptions() takes. */
  rendererOptions() {
    const v = this._values;
    return {
      enabled: v.enabled,
      opacity: v.opacity,
      fontScale: v.fontScale,
      speed: v.speed,
      area: v.area,
      blocked: [...v.blocked],
      reducedMotion: this.reducedMotion(),
    };
  }

  /** Keeps a renderer in sync with these settings. @returns {() => void} unsubscribe */
  applyTo(renderer) {
    renderer.setOptions(this.rendererOptions());
    return this.onChange(() => renderer.setOptions(this.rendererOptions()));
  }

  /**
   * Toggles danmaku with a key (default `d`), except while the viewer types in a field or holds a modifier.
   * @returns {() => void} unbind
   */
  bindShortcut(target = globalThis, key = 'd') {
    const onKey = (e) => {
      if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
      if (String(e.key).toLowerCase() !== key) return;
      const el = e.target;
      const tag = el?.tagName?.toLowerCase?.();
      if (tag === 'input' || tag === 'textarea' || tag === 'select' || el?.isContentEditable) return;
      e.preventDefault?.();
      this.toggle();
    };
    target.addEventListener('keydown', onKey);
    return () => target.removeEventListener('keydown', onKey);
  }
}
