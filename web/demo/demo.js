// The demo room page's glue: a canvas-generated live video (nothing fetched, no media files), the overlay
// renderer on top of it, the SDK connection to this page's own server, settings, and counters. It exists to show
// how the three modules fit together and to give end-to-end tests a page with stable hooks:
// window.danmaku = {client, renderer, settings, room, user, ready}, and <html data-connection="open|...">.
//
// Every piece of comment data reaches the DOM through textContent; nothing here uses innerHTML.

import { DanmakuClient, DanmakuError, validateRoom, validateUser, wsUrlFromLocation } from '../sdk/danmaku.js';
import { DanmakuRenderer } from '../renderer/renderer.js';
import { Settings } from '../settings.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function showBanner(text) {
  const b = $('banner');
  b.textContent = text;
  b.hidden = false;
}

// ---- room and user ----

let room = params.get('room') || 'lobby';
try {
  validateRoom(room);
} catch {
  showBanner(`"${room}" is not a valid room name (1-64 of A-Z a-z 0-9 _ . : -); showing room "lobby" instead.`);
  room = 'lobby';
}

function guestName() {
  // Per tab (sessionStorage), so two tabs of one browser are two viewers, and a reload keeps the name.
  try {
    const saved = sessionStorage.getItem('danmaku.guest');
    if (saved) return saved;
    const name = `guest-${Math.random().toString(36).slice(2, 6)}`;
    sessionStorage.setItem('danmaku.guest', name);
    return name;
  } catch {
    return `guest-${Math.random().toString(36).slice(2, 6)}`;
  }
}

let user = params.get('user');
try {
  user = user ? validateUser(user) : guestName();
} catch {
  showBanner('That user name is not valid (1-32 characters, no control characters); using a guest name.');
  user = guestName();
}
$('room-name').textContent = room;
$('user-name').textContent = user;
document.title = `${room} · danmaku`;

// ---- the generated live video ----

const video = $('video');
const canvas = document.createElement('canvas');
canvas.width = 960;
canvas.height = 540;
const ctx = canvas.getContext('2d');
// `?video=static` repaints once a second: a nearly free video for renderer benchmarks.
const staticVideo = params.get('video') === 'static';
const startedAt = performance.now();
const balls = Array.from({ length: 7 }, (_, i) => ({
  x: 120 + i * 110, y: 100 + (i * 67) % 300, vx: 90 + i * 23, vy: 70 + i * 17, r: 18 + (i % 3) * 10, hue: i * 50,
}));
let lastDraw = 0;

function drawFrame(now) {
  const t = (now - startedAt) / 1000;
  const dt = Math.min(0.1, (now - lastDraw) / 1000 || 0);
  lastDraw = now;
  const { width: w, height: h } = canvas;
  const hue = (t * 12) % 360;
  const g = ctx.createLinearGradient(0, 0, w, h);
  g.addColorStop(0, `hsl(${hue}, 45%, 18%)`);
  g.addColorStop(1, `hsl(${(hue + 80) % 360}, 50%, 10%)`);
  ctx.fillStyle = g;
  ctx.fillRect(0, 0, w, h);
  // A moving grid: motion that makes a frozen video obvious.
  ctx.strokeStyle = 'rgba(255,255,255,0.06)';
  ctx.lineWidth = 1;
  const off = (t * 40) % 60;
  ctx.beginPath();
  for (let x = -60 + off; x < w; x += 60) { ctx.moveTo(x, 0); ctx.lineTo(x, h); }
  for (let y = -60 + off; y < h; y += 60) { ctx.moveTo(0, y); ctx.lineTo(w, y); }
  ctx.stroke();
  for (const b of balls) {
    b.x += b.vx * dt;
    b.y += b.vy * dt;
    if (b.x < b.r || b.x > w - b.r) b.vx = -b.vx;
    if (b.y < b.r || b.y > h - b.r) b.vy = -b.vy;
    b.x = Math.min(w - b.r, Math.max(b.r, b.x));
    b.y = Math.min(h - b.r, Math.max(b.r, b.y));
    ctx.fillStyle = `hsla(${(b.hue + t * 30) % 360}, 80%, 60%, 0.85)`;
    ctx.beginPath();
    ctx.arc(b.x, b.y, b.r, 0, Math.PI * 2);
    ctx.fill();
  }
  ctx.fillStyle = '#fb7299';
  ctx.fillRect(28, 28, 84, 36);
  ctx.fillStyle = '#fff';
  ctx.font = 'bold 22px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  ctx.fillText('LIVE', 44, 47);
  ctx.font = '600 20px system-ui, sans-serif';
  ctx.fillText(`#${room}`, 128, 47);
  const clock = new Date().toLocaleTimeString();
  ctx.font = 'bold 64px ui-monospace, monospace';
  ctx.textAlign = 'center';
  ctx.fillText(clock, w / 2, h / 2);
  ctx.font = '18px ui-monospace, monospace';
  ctx.fillStyle = 'rgba(255,255,255,0.7)';
  ctx.fillText(`generated locally · ${t.toFixed(1)} s`, w / 2, h / 2 + 52);
  ctx.textAlign = 'left';
}

function drawLoop(now) {
  drawFrame(now);
  if (staticVideo) setTimeout(() => drawLoop(performance.now()), 1000);
  else requestAnimationFrame(drawLoop);
}
drawLoop(performance.now());

let videoEl = null;
if (typeof canvas.captureStream === 'function') {
  video.srcObject = canvas.captureStream(staticVideo ? 1 : 30);
  videoEl = video;
} else {
  // No captureStream: show the canvas itself; the renderer then runs on its own clock.
  video.replaceWith(canvas);
  canvas.id = 'video';
  Object.assign(canvas.style, { position: 'absolute', inset: '0', width: '100%', height: '100%' });
}

// ---- renderer, settings ----

let client = null;
const renderer = new DanmakuRenderer({
  container: $('overlay'),
  video: videoEl,
  isOwn: (c) => !!client?.isOwn(c),
});
const settings = new Settings();
settings.applyTo(renderer);
settings.bindShortcut(window, 'd');

// ---- video controls ----

function playVideo() {
  if (!videoEl) return;
  videoEl.play().then(() => {
    $('play-big').hidden = true;
  }, () => {
    // Autoplay refused (muted autoplay is normally allowed): ask for a click.
    $('play-big').hidden = false;
  });
}

function syncPlayButton() {
  const paused = videoEl ? videoEl.paused : false;
  $('btn-play').textContent = paused ? '▶' : '⏸';
  $('btn-play').title = paused ? 'play' : 'pause';
}

if (videoEl) {
  videoEl.addEventListener('play', syncPlayButton);
  videoEl.addEventListener('pause', syncPlayButton);
  playVideo();
}
$('play-big').addEventListener('click', playVideo);
$('btn-play').addEventListener('click', () => {
  if (!videoEl) {
    renderer.stats().running ? renderer.pause() : renderer.resume();
    return;
  }
  if (videoEl.paused) playVideo();
  else videoEl.pause();
});
$('video-rate').addEventListener('change', (e) => {
  const rate = Number(e.target.value);
  if (videoEl) videoEl.playbackRate = rate;
  else renderer.setRate(rate);
});
$('btn-clear').addEventListener('click', () => renderer.clear());
$('btn-fullscreen').addEventListener('click', () => {
  // The wrapper goes fullscreen, not the <video>, so the overlay comes along.
  const p = $('player');
  if (document.fullscreenElement) document.exitFullscreen?.();
  else p.requestFullscreen?.().catch(() => {});
});
$('btn-danmaku').addEventListener('click', () => settings.toggle());

// ---- settings panel ----

function renderSettings(v) {
  $('set-enabled').checked = v.enabled;
  $('set-opacity').value = String(Math.round(v.opacity * 100));
  $('out-opacity').textContent = `${Math.round(v.opacity * 100)}%`;
  $('set-font').value = String(Math.round(v.fontScale * 100));
  $('out-font').textContent = `${Math.round(v.fontScale * 100)}%`;
  $('set-speed').value = String(Math.round(v.speed * 100));
  $('out-speed').textContent = `${v.speed}×`;
  $('set-area').value = String(v.area);
  $('set-motion').value = v.reducedMotion;
  const b = $('btn-danmaku');
  b.setAttribute('aria-pressed', String(v.enabled));
  b.textContent = v.enabled ? '弹 on' : '弹 off';
  const list = $('blocked-list');
  list.replaceChildren(...v.blocked.map((word) => {
    const li = el('li');
    li.append(el('span', '', word));
    const x = el('button', '', '×');
    x.type = 'button';
    x.title = `unblock "${word}"`;
    x.setAttribute('aria-label', `unblock ${word}`);
    x.addEventListener('click', () => settings.removeBlocked(word));
    li.append(x);
    return li;
  }));
}
renderSettings(settings.get());
settings.onChange(renderSettings);

$('set-enabled').addEventListener('change', (e) => settings.set({ enabled: e.target.checked }));
$('set-opacity').addEventListener('input', (e) => settings.set({ opacity: Number(e.target.value) / 100 }));
$('set-font').addEventListener('change', (e) => settings.set({ fontScale: Number(e.target.value) / 100 }));
$('set-font').addEventListener('input', (e) => { $('out-font').textContent = `${e.target.value}%`; });
$('set-speed').addEventListener('input', (e) => settings.set({ speed: Number(e.target.value) / 100 }));
$('set-area').addEventListener('change', (e) => settings.set({ area: Number(e.target.value) }));
$('set-motion').addEventListener('change', (e) => settings.set({ reducedMotion: e.target.value }));
$('set-reset').addEventListener('click', () => settings.reset());
$('block-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('block-word');
  if (input.value.trim()) settings.addBlocked(input.value);
  input.value = '';
});

// ---- comment log ----

const LOG_MAX = 200;
const log = $('log');

// Appends many entries at once: reading the scroll position forces a layout, so it is done once per batch, not
// once per comment (a flood would otherwise spend its frames on layouts).
function logAppend(...items) {
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
  const keep = items.slice(-LOG_MAX);
  log.append(...keep);
  let extra = log.childElementCount - LOG_MAX;
  while (extra-- > 0) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function logEntry(c, own) {
  const li = el('li', own ? 'own' : '');
  li.dataset.id = String(c.id);
  const sw = el('span', 'swatch');
  sw.style.background = /^#[0-9a-f]{6}$/i.test(c.color) ? c.color : '#ffffff';
  const text = Number.isSafeInteger(c.count) && c.count > 1 ? `${c.text} ×${c.count}` : c.text;
  li.append(sw, el('span', 'user', `${c.user}:`), el('span', 'text', text));
  return li;
}

function logSystem(text, warn = false) {
  logAppend(el('li', warn ? 'sys warn' : 'sys', text));
}

// ---- connection ----

const connText = {
  connecting: 'connecting…',
  open: 'connected',
  reconnecting: 'reconnecting…',
  closed: 'disconnected',
};

function setConn(state, detail = '') {
  $('conn').dataset.state = state;
  document.documentElement.dataset.connection = state;
  $('conn-text').textContent = detail || connText[state] || state;
}

let resolveReady;
const ready = new Promise((r) => { resolveReady = r; });

try {
  const url = params.get('server') || wsUrlFromLocation(location);
  client = new DanmakuClient({ url, room, user });
} catch (e) {
  setConn('closed', 'cannot connect');
  showBanner(`Cannot connect: ${e.message}`);
}

if (client) {
  setConn(client.state);
  client.on('state', (s) => {
    setConn(s.state);
    if (s.state === 'open') resolveReady(client);
  });
  client.on('reconnect', (r) => {
    setConn('reconnecting', `reconnecting in ${(r.delayMs / 1000).toFixed(1)} s (try ${r.attempt})`);
    if (r.attempt === 1) logSystem(`connection lost (${r.code}${r.reason ? `: ${r.reason}` : ''}); reconnecting`, true);
  });
  client.on('hello', (h) => logSystem(`joined #${h.room} at comment ${h.last_id}`));
  client.on('online', (n) => { $('online-count').textContent = String(n); });
  client.on('gap', (g) => {
    logSystem(g.reason === 'reset'
      ? 'the server restarted: comments sent meanwhile may be missing'
      : 'some comments were missed while disconnected (too old to recover)', true);
  });
  // The SDK delivers each comment once, the viewer's own ones as soon as they are acked (a hot room may shed
  // them from its batches), so whatever arrives here is drawn and logged once.
  client.on('batch', (msgs) => {
    const entries = [];
    for (const c of msgs) {
      const own = client.isOwn(c);
      renderer.add(c, { own });
      entries.push(logEntry(c, own));
    }
    logAppend(...entries);
  });
  client.on('delete', (d) => {
    renderer.remove(d.ids);
    logSystem(`a moderator removed ${d.ids.length === 1 ? 'a comment' : `${d.ids.length} comments`}`);
  });
  client.on('notice', (n) => logSystem(`notice: ${n.text}`, true));
  client.on('error', (e) => {
    // Send refusals are shown next to the send box; anything else goes to the log.
    if (e.nonce === undefined && e.code !== 'message_too_large') logSystem(`server error: ${e.code} ${e.message}`, true);
  });
  // The browser knows when the network is back before our backoff timer does.
  window.addEventListener('online', () => client.reconnectNow());
}

// Recent history for the log (not the overlay: old comments flying by would be a burst). Best effort: a gateway
// in cluster mode has no HTTP API.
fetch(`/api/rooms/${encodeURIComponent(room)}/danmaku?limit=20`)
  .then((r) => (r.ok ? r.json() : null))
  .then((body) => {
    const msgs = Array.isArray(body?.msgs) ? body.msgs : [];
    const first = log.firstElementChild;
    for (const c of msgs) {
      if (client?.lastId !== null && c.id > client.lastId) continue; // the live feed has it
      const li = el('li', 'history');
      li.append(el('span', 'user', `${c.user}:`), el('span', 'text', c.text));
      log.insertBefore(li, first);
    }
  })
  .catch(() => {});

// ---- sending ----

const friendly = {
  empty_text: 'Type something first.',
  text_too_long: 'Too long: at most 100 characters.',
  invalid_text: 'Line breaks and control characters are not allowed.',
  invalid_color: 'Pick a color.',
  invalid_mode: 'Pick a mode.',
  not_connected: 'Not connected right now; try again in a moment.',
  timeout: 'The server did not answer in time; your comment may still appear.',
  disconnected: 'The connection dropped before the server answered; your comment may still appear.',
  closed: 'The connection is closed.',
  message_too_large: 'That message is too large.',
  unavailable: 'The server is full; try again later.',
  rate_limited: 'You are sending too fast.',
};

function sendStatus(text, kind = '') {
  const s = $('send-status');
  s.textContent = text;
  s.className = `send-status ${kind}`;
}

$('send-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!client) return;
  const input = $('send-text');
  const button = $('send-button');
  button.disabled = true;
  try {
    const id = await client.send({ text: input.value, color: $('send-color').value, mode: $('send-mode').value });
    input.value = '';
    sendStatus(`sent (#${id})`, 'ok');
    delete $('send-status').dataset.code;
  } catch (err) {
    const code = err instanceof DanmakuError ? err.code : 'error';
    const wait = err?.retryAfterMs ? ` Wait ${Math.ceil(err.retryAfterMs / 1000)} s.` : '';
    sendStatus((friendly[code] ?? `Refused: ${code}${err?.message ? ` (${err.message})` : ''}`) + wait, 'error');
    $('send-status').dataset.code = code;
  } finally {
    button.disabled = false;
    input.focus();
  }
});

// ---- counters ----

function renderStats() {
  const s = renderer.stats();
  const values = {
    shown: s.shown, live: s.live, queued: s.queued + s.queuedOwn, lanes: s.lanes.count,
    cleared: s.cleared, elements: `${s.elements} / ${s.maxElements}`, ...s.dropped,
    shedByServer: client?.shed ?? 0,
  };
  for (const dd of document.querySelectorAll('#stats [data-stat]')) {
    const v = values[dd.dataset.stat];
    if (v !== undefined) dd.textContent = String(v);
  }
}
setInterval(renderStats, 500);
renderStats();

// ---- hooks for tests and the console ----

window.danmaku = { client, renderer, settings, room, user, ready, video: videoEl };
