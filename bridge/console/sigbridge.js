// sigbridge.js: browser client for the signal-bridge session hub (wire protocol v1, see DESIGN.md).
//
// Mirrors the signaling part of the Vonage/OpenTok JS `Session`:
//
//   import { connect } from '/sigbridge.js';
//   const s = await connect('ws://hub:8765', 'lab-1', token);
//   s.on('signal:robot.telemetry', (ev) => console.log(ev.data, ev.from));
//   await s.signal({ type: 'robot.move', data: '{"x":0.5,"y":0}', retryAfterReconnect: false });
//
// Contracts:
// - connect() resolves once the hub answered `connected` (and sent the member-list pages that follow
//   it in a big session: s.connections is whole), and rejects with a SignalError
//   (code 401/403 refused token, 500 hub unreachable) otherwise. It does not retry a first connect.
// - signal() validates locally with the hub's limits (400 bad type/data/to, 413 too long), then
//   resolves when the hub acked, rejects with the hub's nack code (400/403/404/413/429), or 500 when
//   not connected. While reconnecting, retryAfterReconnect true (the default) queues the signal and
//   sends it after resume; false fails at once with 500 and counts it in stats.dropped. A retry
//   signal unanswered when the link dropped is settled by the resume's last_id if the hub had it
//   (resolved, or rejected with the nack the hub lists), else sent again: never relayed twice.
//   A signal sent after waiting (queued, or re-sent after a drop) carries queued_ms, so that its ts at
//   the receivers is when it was issued here (a stale guard downstream sees its true age).
// - Events: 'signal' and 'signal:TYPE' {type, data, from, seq, ts} (from: a connection object, or
//   null for REST signals); 'connectionCreated' / 'connectionDestroyed' {connection, reason};
//   'sessionReconnecting', 'sessionReconnected', 'sessionDisconnected' {reason}.
//   Signals replayed by the hub after a resume are delivered once: duplicates are dropped by seq.
// - Link liveness: a ping every pingIntervalMs (2 s); the link counts as lost after linkTimeoutMs
//   (6 s) without any frame. Reconnection retries with capped exponential backoff and jitter and
//   gives up after giveUpMs (60 s) with sessionDisconnected {reason: 'networkDisconnected'}.
// - Several hubs that share sessions (docs/cluster.md): `url` may be a list (or one string of URLs
//   separated by commas). connect() tries them in order; after a drop the resume goes to the next
//   URL, and a failed attempt moves on again at once: the backoff grows once per round of the list.
//   s.url is the session URL on the hub in use.
// No dependency, no build step: an ES module served as-is by the hub.

import { Emitter, SignalError, checkSignal, sessionUrl, toConnection } from './signal-model.js';

export { Emitter, SignalError, TYPE_PATTERN, checkSignal, sessionUrl } from './signal-model.js';
// Camera streams (sigbridge camera): new CameraViewer(session, videoElement).start(); see video.js.
export { CAMERA, CameraViewer, describeCameras } from './video.js';

const DEFAULTS = Object.freeze({
  pingIntervalMs: 2000,
  linkTimeoutMs: 6000,
  connectTimeoutMs: 10000,
  retryMinMs: 250,
  retryMaxMs: 4000,
  giveUpMs: 60000,
});

/** Connect to a session; resolves to a Session once the hub has accepted the token. */
export async function connect(url, sessionId, token, options = {}) {
  const session = new Session(hubUrls(url).map((u) => sessionUrl(u, sessionId)), token, options);
  await session._start();
  return session;
}

/** The hub URLs of a string (one, or several separated by commas) or an array; repeats dropped. */
export function hubUrls(url) {
  const items = Array.isArray(url) ? url : String(url).split(',');
  const urls = [];
  for (const item of items) {
    const u = String(item).trim();
    if (u === '') throw new SignalError(400, 'empty hub URL');
    if (!urls.includes(u)) urls.push(u);
  }
  if (urls.length === 0) throw new SignalError(400, 'no hub URL');
  return urls;
}

export class Session extends Emitter {
  constructor(wsUrls, token, options) {
    super();
    this.urls = Array.isArray(wsUrls) ? wsUrls : [wsUrls];
    this._hub = 0;                       // index of the hub URL in use (or to dial next)
    this._tried = 0;                     // failed attempts in this round of the list
    this.url = this.urls[0];
    this.options = Object.freeze({ ...DEFAULTS, ...options });
    this.connection = null;              // own connection object
    this.connections = new Map();        // id -> connection object of the others
    this.state = 'connecting';           // connecting | connected | reconnecting | disconnected
    this.rttMs = null;                   // last measured round trip to the hub
    this.clockOffsetMs = null;           // hub clock - local clock, from the fastest recent ping
    this.limits = { max_type: 128, max_data: 8192 };
    this.stats = { sent: 0, received: 0, duplicates: 0, dropped: 0, malformed: 0, reconnects: 0 };
    this._token = token;
    this._ws = null;
    this._secret = null;
    this._lastSeq = 0;
    this._nextId = 0;                    // signal/ping ids count up for the client's life (last_id)
    this._pending = new Map();           // id -> {frame, retry, resolve, reject} awaiting ack
    this._queue = [];                    // retry=true signals waiting for a resume
    this._pings = new Map();             // ping id -> local send time
    this._samples = [];                  // recent [rtt, offset] pairs
    this._lastRx = 0;
    this._timers = [];
    this._lostAt = 0;
    this._attempt = 0;
  }

  // ---- sending ------------------------------------------------------------------------------

  /**
   * Send a signal: {type, data, to, retryAfterReconnect}. `to` is a connection object or id, or
   * absent for everyone. Returns a Promise; `callback(err)` (null on success) is called as well.
   */
  signal(opts = {}, callback = undefined) {
    const result = this._signal(opts);
    if (typeof callback === 'function') {
      result.then(() => callback(null), (err) => callback(err));
      result.catch(() => {});            // the callback handles it; no unhandled rejection
    }
    return result;
  }

  _signal({ type = '', data = '', to = null, retryAfterReconnect = true } = {}) {
    const invalid = checkSignal(type, data, this.limits);
    if (invalid) return Promise.reject(invalid);
    let target = null;
    if (to !== null && to !== undefined) {
      target = typeof to === 'string' ? to : (to.connectionId ?? to.id);
      if (typeof target !== 'string' || target === '') {
        return Promise.reject(new SignalError(400, 'signal `to` must be a connection or its id'));
      }
    }
    const frame = { op: 'signal', type, data, retry: retryAfterReconnect !== false };
    if (target !== null) frame.to = target;
    return new Promise((resolve, reject) => {
      const item = { frame, resolve, reject, issued: performance.now() };
      if (this.state === 'connected') {
        this._send(item);
      } else if (this.state === 'reconnecting' && frame.retry) {
        this._queue.push(item);
      } else {
        if (this.state === 'reconnecting') this.stats.dropped += 1;
        reject(new SignalError(500, `not connected (${this.state})`));
      }
    });
  }

  _send(item) {
    // A re-sent signal keeps its id, so that the last_id of a resume can tell whether the hub had it.
    const id = item.id ?? (item.id = ++this._nextId);
    this._pending.set(id, item);
    this.stats.sent += 1;
    // A signal that waited (queued while reconnecting, or re-sent after a drop) says for how long, so
    // the hub stamps its ts when it was issued and a stale guard sees its true age.
    const waited = Math.floor(performance.now() - item.issued);
    const wire = waited > 0 ? { ...item.frame, id, queued_ms: waited } : { ...item.frame, id };
    this._ws.send(JSON.stringify(wire));
  }

  // ---- the link -----------------------------------------------------------------------------

  /** Open a link and authenticate; resolves with the `connected` frame, rejects with SignalError. */
  _open(resume) {
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = new WebSocket(this.url); } catch (err) {
        reject(new SignalError(500, `cannot open ${this.url}: ${err.message}`));
        return;
      }
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try { ws.close(); } catch { /* already closing */ }
        reject(err);
      };
      const timer = setTimeout(() => fail(new SignalError(500, 'hub did not answer in time')),
        this.options.connectTimeoutMs);
      ws.onopen = () => {
        const hello = { op: 'connect', token: this._token };
        if (resume) hello.resume = resume;
        ws.send(JSON.stringify(hello));
      };
      ws.onerror = () => fail(new SignalError(500, `cannot reach the hub at ${this.url}`));
      ws.onclose = (ev) => fail(new SignalError(500, `link closed (${ev.code}) before connected`));
      // A big session's member list goes on in `connections` pages after `connected` ("more": true);
      // they follow at once, and the link is ours only with the whole list.
      let hello = null;
      const members = [];
      const take = (page) => {
        if (Array.isArray(page.connections)) members.push(...page.connections);
        if (page.more === true) return;
        settled = true;
        clearTimeout(timer);
        resolve({ ws, msg: { ...hello, connections: members, more: false } });
      };
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch { msg = null; }
        if (hello !== null) {
          if (msg && msg.op === 'connections') take(msg);
          else fail(new SignalError(500, 'expected the member list pages after connected'));
        } else if (msg && msg.op === 'connected' && msg.connection) {
          hello = msg;
          take(msg);
        } else if (msg && msg.op === 'error') {
          fail(new SignalError(msg.code || 500, msg.message || 'refused by the hub'));
        } else {
          fail(new SignalError(500, 'unexpected first frame from the hub'));
        }
      };
    });
  }

  async _start() {
    const failures = [];
    for (;;) {
      try {
        const { ws, msg } = await this._open(null);
        this._adopt(ws, msg, false);
        return;
      } catch (err) {
        // A refused token is refused by every hub; an unreachable hub: try the next one.
        if (err.code !== 500) throw err;
        failures.push(err.message);
        if (this._hub + 1 >= this.urls.length) {
          throw new SignalError(500, failures.length > 1 ? failures.join('; ') : err.message);
        }
        this._nextHub();
      }
    }
  }

  /** Move to the next hub URL (round the list). */
  _nextHub() {
    this._hub = (this._hub + 1) % this.urls.length;
    this.url = this.urls[this._hub];
  }

  /** Take over an authenticated link: update identity and members, start pings, flush the queue. */
  _adopt(ws, msg, reconnecting) {
    this._ws = ws;
    this._secret = msg.resume_secret;
    if (msg.limits && Number.isInteger(msg.limits.max_type) && Number.isInteger(msg.limits.max_data)) {
      this.limits = { max_type: msg.limits.max_type, max_data: msg.limits.max_data };
    }
    if (typeof msg.server_time === 'number') this.clockOffsetMs = msg.server_time - Date.now();
    const previousId = this.connection && this.connection.id;
    this.connection = toConnection(msg.connection);
    // A fresh connection (not resumed) starts a new seq series at the hub.
    if (!msg.resumed || this.connection.id !== previousId) this._lastSeq = 0;
    const fresh = new Map();
    for (const w of Array.isArray(msg.connections) ? msg.connections : []) {
      const c = toConnection(w);
      if (c && c.id !== this.connection.id) fresh.set(c.id, c);
    }
    const old = this.connections;
    this.connections = fresh;
    if (reconnecting) {
      for (const [id, c] of old) {
        if (!fresh.has(id)) this._emit('connectionDestroyed', { connection: c, reason: 'networkDisconnected' });
      }
    }
    for (const [id, c] of fresh) {
      if (!old.has(id)) this._emit('connectionCreated', { connection: c });
    }
    ws.onmessage = (ev) => this._onFrame(ev.data);
    ws.onclose = () => { if (this._ws === ws) this._lost('link closed'); };
    ws.onerror = () => {};               // onclose follows
    this._lastRx = Date.now();
    this.state = 'connected';
    this._startTimers();
    if (reconnecting) {
      this.stats.reconnects += 1;
      this._emit('sessionReconnected', { resumed: Boolean(msg.resumed) });
    }
    const queued = this._queue;
    this._queue = [];
    // A resuming hub tells the highest signal id it processed (last_id) and the nacks among them:
    // those signals reached it and only the answer was lost, so they are settled, not sent twice.
    // An older hub sends no last_id: everything queued goes out again.
    const lastId = msg.resumed && Number.isInteger(msg.last_id) ? msg.last_id : -1;
    const refused = new Map();
    for (const n of Array.isArray(msg.nacks) ? msg.nacks : []) {
      if (n && Number.isInteger(n.id)) refused.set(n.id, n);
    }
    for (const item of queued) {
      if (item.id === undefined || item.id > lastId) { this._send(item); continue; }
      const n = refused.get(item.id);
      if (n) item.reject(new SignalError(n.code || 500, n.message || 'refused'));
      else item.resolve();
    }
    // The socket may have closed between `connected` and now, while no handler of ours listened.
    if (ws.readyState !== WebSocket.OPEN) this._lost('link closed');
  }

  _startTimers() {
    this._stopTimers();
    const ping = () => {
      const id = ++this._nextId;
      this._pings.set(id, performance.now());
      if (this._pings.size > 16) this._pings.delete(this._pings.keys().next().value);
      try { this._ws.send(JSON.stringify({ op: 'ping', id })); } catch { /* onclose follows */ }
    };
    ping();
    this._timers.push(setInterval(ping, this.options.pingIntervalMs));
    const check = Math.min(500, this.options.linkTimeoutMs / 4);
    this._timers.push(setInterval(() => {
      if (Date.now() - this._lastRx > this.options.linkTimeoutMs) this._lost('no answer from the hub');
    }, check));
  }

  _stopTimers() {
    for (const t of this._timers) clearInterval(t);
    this._timers = [];
  }

  _onFrame(text) {
    this._lastRx = Date.now();
    let msg;
    try { msg = JSON.parse(text); } catch { msg = null; }
    if (!msg || typeof msg !== 'object') { this.stats.malformed += 1; return; }
    switch (msg.op) {
      case 'signal': return this._onSignal(msg);
      case 'ack': return this._settle(msg.id, null);
      case 'nack': return this._settle(msg.id, new SignalError(msg.code || 500, msg.message || 'refused'));
      case 'pong': return this._onPong(msg);
      case 'connection_created': {
        const c = toConnection(msg.connection);
        if (!c || (this.connection && c.id === this.connection.id)) return undefined;
        this.connections.set(c.id, c);
        return this._emit('connectionCreated', { connection: c });
      }
      case 'connection_destroyed': {
        const c = toConnection(msg.connection);
        if (!c) return undefined;
        this.connections.delete(c.id);
        return this._emit('connectionDestroyed', { connection: c, reason: msg.reason || 'clientDisconnected' });
      }
      case 'disconnected': return this._close(msg.reason || 'forceDisconnected', false);
      default: this.stats.malformed += 1; return undefined;
    }
  }

  _onSignal(msg) {
    if (typeof msg.seq !== 'number' || typeof msg.type !== 'string' || typeof msg.data !== 'string') {
      this.stats.malformed += 1;
      return;
    }
    // The hub replays what we missed after a resume; anything at or below last_seq is a duplicate.
    if (msg.seq <= this._lastSeq) { this.stats.duplicates += 1; return; }
    this._lastSeq = msg.seq;
    this.stats.received += 1;
    let from = null;
    if (typeof msg.from === 'string') {
      from = this.connections.get(msg.from)
        || (this.connection && msg.from === this.connection.id ? this.connection : null)
        || toConnection({ id: msg.from });
    }
    const event = { type: msg.type, data: msg.data, from, seq: msg.seq, ts: msg.ts };
    this._emit('signal', event);
    if (msg.type) this._emit(`signal:${msg.type}`, event);
  }

  _settle(id, err) {
    const item = this._pending.get(id);
    if (!item) return;
    this._pending.delete(id);
    if (err) item.reject(err); else item.resolve();
  }

  _onPong(msg) {
    const sent = this._pings.get(msg.id);
    if (sent === undefined) return;
    this._pings.delete(msg.id);
    const rtt = performance.now() - sent;
    this.rttMs = Math.round(rtt * 10) / 10;
    if (typeof msg.server_time === 'number') {
      // The server read its clock about half a round trip ago; trust the fastest recent sample.
      const offset = msg.server_time - (Date.now() - rtt / 2);
      this._samples.push([rtt, offset]);
      if (this._samples.length > 8) this._samples.shift();
      const best = this._samples.reduce((a, b) => (b[0] < a[0] ? b : a));
      this.clockOffsetMs = Math.round(best[1]);
    }
  }

  /** The link dropped: fail or requeue what was in flight, then reconnect with resume. */
  _lost(why) {
    if (this.state !== 'connected') return;
    const ws = this._ws;
    this._ws = null;
    this._stopTimers();
    try { ws.close(); } catch { /* already closed */ }
    this.state = 'reconnecting';
    this._lostAt = Date.now();
    this._attempt = 0;
    this._tried = 0;
    this._nextHub();                     // the hub that dropped us is the likeliest to be dead
    // Unacked signals: retry=true ones wait for the resume (settled by its last_id, or sent again);
    // retry=false ones fail now, their fate is unknown and they must not be replayed late.
    const inflight = [...this._pending.values()];
    this._pending.clear();
    for (const item of inflight) {
      if (item.frame.retry) this._queue.push(item);
      else { this.stats.dropped += 1; item.reject(new SignalError(500, `link lost before ack: ${why}`)); }
    }
    this._emit('sessionReconnecting', { reason: why });
    this._scheduleRetry();
  }

  _scheduleRetry() {
    const o = this.options;
    const base = Math.min(o.retryMaxMs, o.retryMinMs * 2 ** this._attempt);
    const delay = this._attempt === 0 ? 0 : base / 2 + Math.random() * base / 2;   // jitter
    this._attempt += 1;
    this._retryTimer = setTimeout(() => this._retry(), delay);
  }

  async _retry() {
    if (this.state !== 'reconnecting') return;
    if (Date.now() - this._lostAt > this.options.giveUpMs) {
      this._close('networkDisconnected', false);
      return;
    }
    const resume = { connection_id: this.connection.id, secret: this._secret, last_seq: this._lastSeq };
    try {
      const { ws, msg } = await this._open(resume);
      if (this.state !== 'reconnecting') { ws.close(); return; }
      this._adopt(ws, msg, true);
    } catch (err) {
      if (this.state !== 'reconnecting') return;
      // A refused token will not get better by retrying.
      if (err.code === 401 || err.code === 403) { this._close('networkDisconnected', false); return; }
      this._nextHub();
      this._tried = (this._tried + 1) % this.urls.length;
      // Within a round of the list the next hub is dialled at once; the backoff grows per round.
      if (this._tried !== 0) this._retryTimer = setTimeout(() => this._retry(), 0);
      else this._scheduleRetry();
    }
  }

  /** Leave the session; resolves once the link is closed. Queued and unacked signals fail with 500. */
  disconnect() {
    this._close('clientDisconnected', true);
    return Promise.resolve();
  }

  _close(reason, polite) {
    if (this.state === 'disconnected') return;
    const ws = this._ws;
    this._ws = null;
    this.state = 'disconnected';
    this._stopTimers();
    clearTimeout(this._retryTimer);
    if (ws) {
      if (polite) { try { ws.send(JSON.stringify({ op: 'disconnect' })); } catch { /* closing */ } }
      try { ws.close(1000); } catch { /* already closed */ }
    }
    const failed = [...this._pending.values(), ...this._queue];
    this._pending.clear();
    this._queue = [];
    for (const item of failed) item.reject(new SignalError(500, `not connected (${reason})`));
    this._emit('sessionDisconnected', { reason });
  }
}
