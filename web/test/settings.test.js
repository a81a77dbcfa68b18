// Unit tests of settings.js: values are sanitized, persisted, pushed into a renderer, the shortcut ignores typing,
// and reduced motion follows the system preference when set to auto.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Settings, SETTINGS_DEFAULTS, isBlocked, sanitizeSettings } from '../settings.js';

function memStorage(init = {}) {
  const m = new Map(Object.entries(init));
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), map: m };
}

function fakeMQ(matches) {
  const mq = new EventTarget();
  mq.matches = matches;
  return mq;
}

test('sanitize: garbage in, valid settings out', () => {
  assert.deepEqual(sanitizeSettings(null), { ...SETTINGS_DEFAULTS, blocked: [] });
  const s = sanitizeSettings({ enabled: 'yes', opacity: 'banana', fontScale: 99, speed: -1, area: 0.3, blocked: ['  a ', 'A', '', 7, 'b'], reducedMotion: 'sometimes' });
  assert.deepEqual(s, { enabled: true, opacity: 1, fontScale: 2, speed: 0.25, area: 1, blocked: ['a', 'b'], reducedMotion: 'auto' });
});

test('persisted across instances; a corrupt store falls back to defaults', () => {
  const storage = memStorage();
  const a = new Settings({ storage, window: null, matchMedia: () => fakeMQ(false) });
  a.set({ opacity: 0.5, area: 0.25 });
  a.addBlocked('spoiler');
  const b = new Settings({ storage, window: null, matchMedia: () => fakeMQ(false) });
  assert.equal(b.get().opacity, 0.5);
  assert.equal(b.get().area, 0.25);
  assert.deepEqual(b.get().blocked, ['spoiler']);
  assert.equal(b.isBlocked('a SPOILER!'), true);
  b.removeBlocked('SPOILER');
  assert.deepEqual(b.get().blocked, []);
  const c = new Settings({ storage: memStorage({ 'danmaku.settings.v1': '{not json' }), window: null });
  assert.deepEqual(c.get(), { ...SETTINGS_DEFAULTS, blocked: [] });
});

test('applyTo pushes current values and every change into the renderer', () => {
  const mq = fakeMQ(false);
  const s = new Settings({ storage: memStorage(), window: null, matchMedia: () => mq });
  const seen = [];
  s.applyTo({ setOptions: (o) => seen.push(o) });
  assert.equal(seen.length, 1);
  assert.equal(seen[0].reducedMotion, false);
  s.toggle();
  assert.equal(seen.at(-1).enabled, false);
  // The system preference changes while on auto: the renderer follows.
  mq.matches = true;
  mq.dispatchEvent(new Event('change'));
  assert.equal(seen.at(-1).reducedMotion, true);
  s.set({ reducedMotion: 'off' });
  assert.equal(seen.at(-1).reducedMotion, false);
  s.set({ reducedMotion: 'on' });
  mq.matches = false;
  assert.equal(s.reducedMotion(), true);
});

test('shortcut toggles on d, not while typing or with modifiers', () => {
  const s = new Settings({ storage: memStorage(), window: null });
  const target = new EventTarget();
  s.bindShortcut(target, 'd');
  const key = (k, extra = {}) => {
    const e = new Event('keydown');
    const { target: el = { tagName: 'BODY' }, ...rest } = extra;
    Object.assign(e, { key: k, ...rest });
    // Event.target is a getter set by dispatch; shadow it with the element the key was typed in.
    Object.defineProperty(e, 'target', { value: el });
    target.dispatchEvent(e);
  };
  key('d');
  assert.equal(s.get().enabled, false);
  key('D');
  assert.equal(s.get().enabled, true);
  key('d', { target: { tagName: 'INPUT' } });
  key('d', { target: { tagName: 'DIV', isContentEditable: true } });
  key('d', { ctrlKey: true });
  key('x');
  assert.equal(s.get().enabled, true);
});

test('isBlocked: case-insensitive substrings, no regex', () => {
  assert.equal(isBlocked('Hello World', ['world']), true);
  assert.equal(isBlocked('a.b', ['.*']), false);
  assert.equal(isBlocked('anything', []), false);
});
