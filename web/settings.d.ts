// Type declarations for settings.js.

export const AREAS: readonly [0.25, 0.5, 0.75, 1];
export const REDUCED_MOTION: readonly ['auto', 'on', 'off'];
export const STORAGE_KEY: string;

export interface SettingsValues {
  enabled: boolean;
  /** 0.1..1 */
  opacity: number;
  /** 0.5..2 */
  fontScale: number;
  /** 0.25..3 */
  speed: number;
  area: 0.25 | 0.5 | 0.75 | 1;
  blocked: string[];
  /** auto follows prefers-reduced-motion */
  reducedMotion: 'auto' | 'on' | 'off';
}
export const SETTINGS_DEFAULTS: Readonly<SettingsValues>;

export function sanitizeSettings(raw: unknown): SettingsValues;
export function normalizeBlocked(list: unknown): string[];
export function isBlocked(text: string, blocked: string[]): boolean;

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export class Settings {
  constructor(options?: {
    storage?: StorageLike;
    key?: string;
    matchMedia?: (query: string) => { matches: boolean; addEventListener?(t: 'change', fn: () => void): void };
    window?: { addEventListener(type: 'storage', fn: (e: { key: string | null }) => void): void } | null;
  });
  get(): SettingsValues;
  set(patch: Partial<SettingsValues>): SettingsValues;
  reset(): SettingsValues;
  /** flips `enabled` */
  toggle(): SettingsValues;
  addBlocked(word: string): SettingsValues;
  removeBlocked(word: string): SettingsValues;
  isBlocked(text: string): boolean;
  /** effective: the setting, or the system preference when `auto` */
  reducedMotion(): boolean;
  onChange(fn: (values: SettingsValues) => void): () => void;
  rendererOptions(): {
    enabled: boolean; opacity: number; fontScale: number; speed: number; area: number;
    blocked: string[]; reducedMotion: boolean;
  };
  /** pushes the settings into the renderer now and on every change */
  applyTo(renderer: { setOptions(o: ReturnType<Settings['rendererOptions']>): void }): () => void;
  /** toggles with `key` (default `d`) unless typing in a field; returns an unbind function */
  bindShortcut(target?: EventTarget, key?: string): () => void;
}
