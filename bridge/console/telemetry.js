// Live telemetry: for each telemetry signal type a card with the latest value of every field and,
// for numeric fields, a sparkline of the last WINDOW_MS drawn on a canvas.
// Drawing is batched into one animation frame, so a 50 Hz telemetry stream costs one redraw per frame.

const WINDOW_MS = 60000;
const MAX_POINTS = 600;

export class Telemetry {
  constructor(container, emptyNote) {
    this.container = container;
    this.emptyNote = emptyNote;
    this.cards = new Map();            // signal type -> {el, fields: Map(name -> row)}
    this.dirty = new Set();
    this.frame = 0;
  }

  clear() {
    this.container.replaceChildren();
    this.cards.clear();
    this.dirty.clear();
    this.emptyNote.hidden = false;
  }

  /** Record one telemetry signal (data: JSON object, or any text shown as is). */
  update(type, data, ts) {
    const card = this._card(type);
    card.stamp.textContent = new Date(ts || Date.now()).toLocaleTimeString();
    let value;
    try { value = JSON.parse(data); } catch { value = data; }
    const fields = value && typeof value === 'object' && !Array.isArray(value) ? value : { value };
    for (const [name, v] of Object.entries(fields)) {
      const row = this._row(card, name);
      row.value.textContent = typeof v === 'number' ? String(Math.round(v * 1000) / 1000)
        : (typeof v === 'string' ? v : JSON.stringify(v));
      if (typeof v === 'number' && Number.isFinite(v)) {
        row.points.push([ts || Date.now(), v]);
        if (row.points.length > MAX_POINTS) row.points.shift();
        this.dirty.add(row);
      }
    }
    if (this.dirty.size && !this.frame) this.frame = requestAnimationFrame(() => this._draw());
  }

  _card(type) {
    let card = this.cards.get(type);
    if (card) return card;
    this.emptyNote.hidden = true;
    const el = document.createElement('div');
    el.className = 'tele';
    el.dataset.signal = type;
    const head = document.createElement('h3');
    head.textContent = type;
    const stamp = document.createElement('span');
    stamp.className = 'small stamp';
    head.append(' ', stamp);
    const table = document.createElement('table');
    table.setAttribute('aria-label', `latest ${type}`);
    el.append(head, table);
    this.container.append(el);
    card = { el, table, stamp, fields: new Map() };
    this.cards.set(type, card);
    return card;
  }

  _row(card, name) {
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
    row = { value, canvas, points: [] };
    card.fields.set(name, row);
    return row;
  }

  _draw() {
    this.frame = 0;
    for (const row of this.dirty) drawSpark(row.canvas, row.points);
    this.dirty.clear();
  }
}

function drawSpark(canvas, points) {
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
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  // Until a full window has been seen, the points span the whole width.
  const t0 = recent[0][0];
  const span = Math.max(now - t0, 1);
  g.strokeStyle = getComputedStyle(canvas).color || '#0a6';
  g.lineWidth = 1.5;
  g.beginPath();
  recent.forEach(([t, v], i) => {
    const x = ((t - t0) / span) * (w - 2) + 1;
    const y = h - 2 - ((v - lo) / (hi - lo)) * (h - 4);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
}
