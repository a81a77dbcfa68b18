// 5. Viewer settings persist across reloads (localStorage): danmaku toggled off with the `D` shortcut, and the
// opacity changed with the keyboard on its slider.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { WAIT_MS, log, newPage, openRoom, postComment, roomName, withServerAndBrowser } from './lib.mjs';

const env = withServerAndBrowser();

/** What the page says about its settings, through every channel: store, storage, renderer, DOM controls. */
function state(page) {
  return page.evaluate(() => {
    const { settings, renderer } = window.danmaku;
    const stage = document.querySelector('#overlay > .dm-stage');
    const v = settings.get();
    return {
      enabled: v.enabled,
      opacity: v.opacity,
      stored: JSON.parse(localStorage.getItem('danmaku.settings.v1') ?? 'null'),
      rendererEnabled: renderer.enabled,
      stageDisplay: getComputedStyle(stage).display,
      stageOpacity: getComputedStyle(stage).opacity,
      checkbox: document.getElementById('set-enabled').checked,
      button: document.getElementById('btn-danmaku').getAttribute('aria-pressed'),
      slider: document.getElementById('set-opacity').value,
      sliderLabel: document.getElementById('out-opacity').textContent,
    };
  });
}

test('danmaku off (D shortcut) and opacity survive a reload', async () => {
  const page = await newPage(env.browser);
  const room = roomName('settings');
  await openRoom(page, env.server.url, room);

  let s = await state(page);
  assert.equal(s.enabled, true);
  assert.equal(s.opacity, 1);

  // The shortcut is ignored while typing in a field.
  await page.focus('#send-text');
  await page.keyboard.press('d');
  assert.equal(await page.inputValue('#send-text'), 'd');
  assert.equal((await state(page)).enabled, true, 'typing "d" in the send box does not toggle');
  await page.fill('#send-text', '');

  // Toggle off with the shortcut (focus on the page, not a field).
  await page.evaluate(() => document.activeElement?.blur());
  await page.keyboard.press('d');
  await page.waitForFunction(() => window.danmaku.settings.get().enabled === false, null, { timeout: WAIT_MS });
  log('pressed D: danmaku off');

  // Opacity with the keyboard on the slider: 100% -> 80% (step 5).
  await page.focus('#set-opacity');
  for (let i = 0; i < 4; i++) await page.keyboard.press('ArrowLeft');
  await page.waitForFunction(() => window.danmaku.settings.get().opacity === 0.8, null, { timeout: WAIT_MS });
  log('opacity slider: 80%');

  s = await state(page);
  assert.equal(s.rendererEnabled, false);
  assert.equal(s.stageDisplay, 'none');
  assert.equal(s.stageOpacity, '0.8');
  assert.deepEqual([s.stored.enabled, s.stored.opacity], [false, 0.8]);

  await page.reload();
  await page.waitForFunction(() => document.documentElement.dataset.connection === 'open' && !!window.danmaku, null, { timeout: WAIT_MS });
  s = await state(page);
  log(`after reload: ${JSON.stringify({ enabled: s.enabled, opacity: s.opacity })}`);
  assert.deepEqual(
    { enabled: s.enabled, opacity: s.opacity, rendererEnabled: s.rendererEnabled, stageDisplay: s.stageDisplay, stageOpacity: s.stageOpacity, checkbox: s.checkbox, button: s.button, slider: s.slider, sliderLabel: s.sliderLabel },
    { enabled: false, opacity: 0.8, rendererEnabled: false, stageDisplay: 'none', stageOpacity: '0.8', checkbox: false, button: 'false', slider: '80', sliderLabel: '80%' },
  );

  // Off means off: a comment arrives (logged) but is not shown, counted as dropped.disabled.
  const id = await postComment(env.server.url, room, { text: 'while off' });
  await page.waitForFunction((n) => window.danmaku.client.lastId >= n, id, { timeout: WAIT_MS });
  const off = await page.evaluate(() => ({ visible: window.danmaku.renderer.visible().length, stats: window.danmaku.renderer.stats() }));
  assert.equal(off.visible, 0);
  assert.equal(off.stats.shown, 0);
  assert.equal(off.stats.dropped.disabled, 1);
  assert.equal(await page.locator(`#log li[data-id="${id}"]`).count(), 1);

  // Back on with the shortcut; reload: on, opacity still 80%, and comments show again.
  await page.keyboard.press('d');
  await page.waitForFunction(() => window.danmaku.settings.get().enabled === true, null, { timeout: WAIT_MS });
  await page.reload();
  await page.waitForFunction(() => document.documentElement.dataset.connection === 'open' && !!window.danmaku, null, { timeout: WAIT_MS });
  s = await state(page);
  assert.deepEqual(
    { enabled: s.enabled, opacity: s.opacity, rendererEnabled: s.rendererEnabled, stageDisplay: s.stageDisplay, stageOpacity: s.stageOpacity, checkbox: s.checkbox, button: s.button },
    { enabled: true, opacity: 0.8, rendererEnabled: true, stageDisplay: 'block', stageOpacity: '0.8', checkbox: true, button: 'true' },
  );
  const text = 'on again';
  await postComment(env.server.url, room, { text });
  await page.waitForFunction((t) => window.danmaku.renderer.visible().some((v) => v.text === t), text, { timeout: WAIT_MS });
  log('after reload: on, 80%, comments shown');
  assert.deepEqual(page.pageErrors, []);
  await page.context().close();
});
