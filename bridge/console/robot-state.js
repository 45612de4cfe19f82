// robot-state.js: what the robot is doing, from what the bridge itself says (bridge.status, and
// bridge.pong in answer to a ping every second), shown as one banner and on the page root as
// data-robot-state="offline|ready|degraded|estopped".
//
// Contract with console.js:
//   - `bridge(conn)` when the bridge's connection is known (or null when it left);
//   - `status(data)`, `heard()` (any signal from the bridge), `pong(data)`: only for signals that came
//     from the bridge (console.js checks the sender);
//   - `link(connected)` with the console's own link state;
//   - `offline` is true while the console cannot know the robot's state: its own link is down, no
//     bridge connection, no bridge.status yet, or nothing heard from the bridge for OFFLINE_AFTER_MS
//     (a frozen or cut-off bridge keeps its connection for the hub's grace window, so silence counts).
//     Driving is disabled then, and nothing is sent in the robot's place.

export const PING = 'bridge.ping';
export const PONG = 'bridge.pong';
export const PING_EVERY_MS = 1000;
export const OFFLINE_AFTER_MS = 3500;

export class RobotState {
  constructor({ banner, text, detail, lease, reset, latency, onChange = () => {}, send }) {
    Object.assign(this, { banner, text, detail, lease, reset, latency, send });
    this.onChange = () => {};          // not for the first render (the page is still being built)
    this.clear();
    this.onChange = onChange;
    setInterval(() => this._tick(), 250);
  }

  clear() {
    this.session = null;
    this.bridgeConn = null;
    this.linked = false;
    this.last = null;                  // the last bridge.status object
    this.heardAt = 0;
    this.pingSeq = 0;
    this.pending = new Map();          // ping id -> performance.now() when sent
    this.rttMs = null;
    this.caps = null;
    this._render();
  }

  attach(session) { this.session = session; this.linked = true; this._render(); }
  link(connected) { this.linked = connected; this._render(); }
  bridge(conn) {
    if (conn === null || !this.bridgeConn || conn.id !== this.bridgeConn.id) this.last = null;
    this.bridgeConn = conn;
    this._render();
  }
  capabilities(caps) { this.caps = caps; this._render(); }
  heard() { this.heardAt = performance.now(); }

  status(data) {
    let s;
    try { s = JSON.parse(data); } catch { return; }
    if (!s || typeof s !== 'object' || typeof s.state !== 'string') return;
    this.last = s;
    this.heard();
    this._render();
  }

  pong(data) {
    let p;
    try { p = JSON.parse(data); } catch { return; }
    const sent = p && this.pending.get(p.id);
    if (sent === undefined) return;
    this.pending.delete(p.id);
    this.rttMs = performance.now() - sent;
    this.heard();
  }

  get offline() {
    return !this.session || !this.linked || !this.bridgeConn || !this.last
      || performance.now() - this.heardAt > OFFLINE_AFTER_MS;
  }

  /** offline | estopped | degraded | ready */
  get state() {
    if (this.offline) return 'offline';
    return ['estopped', 'degraded', 'ready'].includes(this.last.state) ? this.last.state : 'degraded';
  }

  _tick() {
    const now = performance.now();
    if (this.session && this.linked && this.bridgeConn && now - (this._pingAt || 0) >= PING_EVERY_MS) {
      this._pingAt = now;
      const id = `p${(this.pingSeq += 1)}`;
      this.pending.set(id, now);
      for (const [k, t] of this.pending) if (now - t > 10000) this.pending.delete(k);
      this.send(PING, JSON.stringify({ id }), this.bridgeConn.id);
    }
    this._render();
  }

  _render() {
    const state = this.state;
    const root = document.documentElement;
    const changed = root.dataset.robotState !== state;
    root.dataset.robotState = state;
    this.banner.dataset.state = state;
    const me = this.session && this.session.connection;
    const s = this.last;
    let text;
    let detail = '';
    if (state === 'offline') {
      text = 'OFFLINE';
      detail = !this.session || !this.linked ? 'your link to the hub is down'
        : !this.bridgeConn ? 'no robot in the session'
          : !s ? 'waiting for the robot to report' : 'no answer from the robot';
      detail += ' · driving disabled';
    } else if (state === 'estopped') {
      text = 'E-STOPPED';
      detail = 'emergency stop latched: the robot takes no command until it is reset';
    } else if (state === 'degraded') {
      const down = Object.entries(s.devices || {}).filter(([, v]) => v !== 'up').map(([k]) => k);
      text = 'DEGRADED';
      detail = down.length ? `device down: ${down.join(', ')}` : `robot reports ${s.state}`;
    } else {
      text = 'READY';
    }
    this.text.textContent = text;
    this.detail.textContent = detail;
    // The lease line: only when the robot uses one.
    const leaseOn = this.caps && this.caps.control && this.caps.control.lease;
    this.lease.hidden = !leaseOn || state === 'offline';
    if (leaseOn && s) {
      this.lease.textContent = !s.lease ? 'control: free'
        : (me && s.lease === me.id ? 'control: you drive' : `control: another operator drives (${s.lease.slice(0, 8)})`);
      this.lease.dataset.holder = !s.lease ? 'free' : (me && s.lease === me.id ? 'you' : 'other');
    }
    // Reset: only while latched and only for a role the bridge accepts a reset from.
    const estop = this.caps && this.caps.estop;
    const roles = estop && Array.isArray(estop.reset_roles) ? estop.reset_roles : ['moderator'];
    this.reset.hidden = !(state === 'estopped' && estop && estop.reset && me && roles.includes(me.role));
    this.latency.textContent = this.rttMs !== null && state !== 'offline'
      ? `robot ${Math.round(this.rttMs)} ms` : 'robot –';
    if (changed) this.onChange(state);
  }
}
