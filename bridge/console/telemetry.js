// Live telemetry read like an instrument: one card per stream - a telemetry signal type, and for MQTT
// telemetry ({"topic", "payload"}) one per topic - with every field's latest value and unit, a
// sparkline of the last WINDOW_MS with its scale, warnings past the configured thresholds, the age
// of the last update and a stale marker. Display hints come from the bridge's capabilities
// (telemetry_info: max_rate_hz and fields {unit, min, max, warn_below, warn_above}).
// Drawing is batched into one animation frame, so a 50 Hz stream costs one redraw per frame.
//
// A card is stale (data-stale="true") when nothing came for STALE_INTERVALS expected intervals
// (the stream's observed interval, at least 1 / max_rate_hz), never sooner than STALE_MIN_MS, and
// always while the robot is offline (setOffline). Ages use the local clock of arrival, so a clock
// offset between the hub and this machine cannot make data look fresh.

const WINDOW_MS = 60000;
const MAX_POINTS = 600;
const STALE_INTERVALS = 3;
const STALE_MIN_MS = 1000;
const SUMMARY_MAX = 4;

export class Telemetry {
  constructor(container, emptyNote, summary = null) {
    this.container = container;
    this.emptyNote = emptyNote;
    this.summary = summary;            // compact strip beside the joystick (phone: visible while driving)
    this.cards = new Map();            // stream key -> card
    this.dirty = new Set();
    this.frame = 0;
    this.info = {};
    this.offline = false;
    setInterval(() => this._ages(), 250);
  }

  clear() {
    this.container.replaceChildren();
    this.cards.clear();
    this.dirty.clear();
    this.emptyNote.hidden = false;
    if (this.summary) this.summary.replaceChildren();
  }

  setInfo(info) { this.info = info || {}; }
  setOffline(off) { this.offline = off; this._ages(); }

  /** Record one telemetry signal (data: JSON object, MQTT {topic, payload}, or text shown as is). */
  update(type, data, ts) {
    let value;
    try { value = JSON.parse(data); } catch { value = data; }
    let key = type;
    let label = type;
    if (value && typeof value === 'object' && !Array.isArray(value) && typeof value.topic === 'string'
        && 'payload' in value && Object.keys(value).length === 2) {
      key = `${type}\u0000${value.topic}`;
      label = `${type} · ${value.topic}`;
      value = value.payload;
    }
    const fields = value && typeof value === 'object' && !Array.isArray(value) ? value : { value };
    const card = this._card(key, type, label);
    const now = performance.now();
    if (card.lastAt) {
      const gap = now - card.lastAt;
      card.interval = card.interval === null ? gap : card.interval * 0.8 + gap * 0.2;
    }
    card.lastAt = now;
    card.stamp.textContent = new Date(ts || Date.now()).toLocaleTimeString();
    const hints = (this.info[type] && this.info[type].fields) || {};
    for (const [name, v] of Object.entries(fields)) {
      const hint = hints[name] || {};
      const row = this._row(card, name, hint);
      const shown = typeof v === 'number' ? String(Math.round(v * 1000) / 1000)
        : (typeof v === 'string' ? v : JSON.stringify(v));
      row.value.textContent = hint.unit ? `${shown} ${hint.unit}` : shown;
      const warn = typeof v === 'number' && ((typeof hint.warn_below === 'number' && v < hint.warn_below)
        || (typeof hint.warn_above === 'number' && v > hint.warn_above));
      row.tr.dataset.warn = warn ? (v < hint.warn_below ? 'low' : 'high') : '';
      row.latest = { text: row.value.textContent, warn: row.tr.dataset.warn, number: typeof v === 'number' };
      if (typeof v === 'number' && Number.isFinite(v)) {
        row.points.push([ts || Date.now(), v]);
        if (row.points.length > MAX_POINTS) row.points.shift();
        this.dirty.add(row);
      }
    }
    card.el.dataset.stale = 'false';
    this._summarise();
    if (this.dirty.size && !this.frame) this.frame = requestAnimationFrame(() => this._draw());
  }

  _card(key, type, label) {
    let card = this.cards.get(key);
    if (card) return card;
    this.emptyNote.hidden = true;
    const el = document.createElement('div');
    el.className = 'tele';
    el.dataset.signal = type;
    el.dataset.stream = label;
    const head = document.createElement('h3');
    head.textContent = label;
    const stamp = document.createElement('span');
    stamp.className = 'small stamp';
    const age = document.createElement('span');
    age.className = 'small age';
    head.append(' ', stamp, ' ', age);
    const table = document.createElement('table');
    table.setAttribute('aria-label', `latest ${label}`);
    el.append(head, table);
    this.container.append(el);
    const hz = this.info[type] && this.info[type].max_rate_hz;
    card = { el, table, stamp, age, type, label, fields: new Map(), lastAt: 0, interval: null,
      minInterval: typeof hz === 'number' && hz > 0 ? 1000 / hz : 0 };
    this.cards.set(key, card);
    return card;
  }

  _row(card, name, hint) {
    let row = card.fields.get(name);
    if (row) return row;
    const tr = card.table.insertRow();
    tr.dataset.field = name;
    const th = document.createElement('th');
    th.scope = 'row';
    th.textContent = name;
    const value = tr.insertCell();
    value.className = 'value mono';
    const plotCell = tr.insertCell();
    const canvas = document.createElement('canvas');
    canvas.className = 'spark';
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', `${name} over the last minute`);
    plotCell.append(canvas);
    tr.prepend(th);
    row = { tr, value, canvas, points: [], hint, name, card, latest: null };
    card.fields.set(name, row);
    return row;
  }

  _ages() {
    const now = performance.now();
    for (const card of this.cards.values()) {
      const age = now - card.lastAt;
      const expected = Math.max(card.interval || 0, card.minInterval);
      const stale = this.offline || age > Math.max(STALE_INTERVALS * expected, STALE_MIN_MS);
      card.age.textContent = `${age < 10000 ? (age / 1000).toFixed(1) : Math.round(age / 1000)} s ago${stale ? ' · STALE' : ''}`;
      card.el.dataset.stale = stale ? 'true' : 'false';
    }
    if (this.summary) this.summary.dataset.stale = String([...this.cards.values()].some((c) => c.el.dataset.stale === 'true'));
  }

  /** The strip beside the joystick: fields with display hints first, then other numbers; warnings loud. */
  _summarise() {
    if (!this.summary) return;
    const rows = [];
    for (const card of this.cards.values()) for (const row of card.fields.values()) if (row.latest) rows.push(row);
    rows.sort((a, b) => (Object.keys(b.hint).length > 0) - (Object.keys(a.hint).length > 0));
    const chosen = rows.filter((r) => r.latest.number).slice(0, SUMMARY_MAX);
    this.summary.replaceChildren(...chosen.map((r) => {
      const span = document.createElement('span');
      span.className = 'chip';
      span.dataset.field = r.name;
      span.dataset.warn = r.latest.warn;
      const low = r.latest.warn === 'low' && /batt/i.test(r.name);
      span.textContent = `${r.name} ${r.latest.text}${low ? ' · battery low' : ''}`;
      return span;
    }));
  }

  _draw() {
    this.frame = 0;
    for (const row of this.dirty) drawSpark(row.canvas, row.points, row.hint);
    this.dirty.clear();
  }
}

function drawSpark(canvas, points, hint) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(40, canvas.clientWidth);
  const h = Math.max(16, canvas.clientHeight);
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const now = points.length ? points[points.length - 1][0] : 0;
  const recent = points.filter((p) => now - p[0] <= WINDOW_MS);
  if (recent.length < 2) return;
  let lo = Infinity;
  let hi = -Infinity;
  for (const [, v] of recent) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  // The configured range is the scale (values past it are clipped to the edge).
  if (typeof hint.min === 'number') lo = hint.min;
  if (typeof hint.max === 'number') hi = hint.max;
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const t0 = recent[0][0];
  const span = Math.max(now - t0, 1);
  const yOf = (v) => h - 2 - ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * (h - 4);
  for (const [key, colour] of [['warn_below', '#c62828'], ['warn_above', '#c62828']]) {
    if (typeof hint[key] === 'number') {
      g.strokeStyle = colour;
      g.setLineDash([3, 3]);
      g.beginPath(); g.moveTo(0, yOf(hint[key])); g.lineTo(w, yOf(hint[key])); g.stroke();
      g.setLineDash([]);
    }
  }
  g.strokeStyle = getComputedStyle(canvas).color || '#0a6';
  g.lineWidth = 1.5;
  g.beginPath();
  recent.forEach(([t, v], i) => {
    const x = ((t - t0) / span) * (w - 2) + 1;
    if (i === 0) g.moveTo(x, yOf(v)); else g.lineTo(x, yOf(v));
  });
  g.stroke();
  // The scale: top and bottom values, so a wiggle reads as a size.
  g.fillStyle = '#5b6675';
  g.font = '9px system-ui, sans-serif';
  const fmt = (v) => String(Math.round(v * 100) / 100);
  g.fillText(fmt(hi), 2, 9);
  g.fillText(fmt(lo), 2, h - 2);
  canvas.dataset.scale = `${fmt(lo)}..${fmt(hi)}`;
}
