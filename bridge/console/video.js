// video.js: watch a signal-bridge camera (`sigbridge camera`) over WebRTC, signaled with camera.*
// signals through a sigbridge.js Session (docs/protocol.md, "Camera signals"). No dependency.
//
//   import { connect, CameraViewer } from '/sigbridge.js';
//   const v = new CameraViewer(session, document.querySelector('video'));
//   v.on('state', (ev) => console.log(ev.state, ev.reason));
//   v.start();                      // or v.start(cameraConnectionId); v.stop() to end it
//
// Contracts:
// - start() sends camera.watch (to one camera connection, or to everyone: the first camera to offer
//   wins, the others are told camera.stop). The camera offers (every candidate in its SDP); the
//   answer goes back in parts of at most 3500 characters; the browser's candidates trickle as
//   camera.candidate. Every camera signal is sent with retryAfterReconnect false.
// - state: idle -> asking -> connecting -> live, and ended / refused (with `reason`). 'state' events
//   {state, reason}; 'status' events carry a camera.status object.
// - stats: fps (frames presented in the last second), latencyMs (glass to glass when the frames
//   carry the synthetic camera's frame code, bridge/core/framecode.py: capture time on the hub's
//   clock, read back from the picture; else an estimate from WebRTC stats: jitter buffer + RTT/2),
//   latencySource ('frame code' | 'estimate'), counter (the last frame number read), codeFrames,
//   badCodes (frames whose code did not decode; a frame with no code in view counts as neither),
//   latencies (the last 600 glass-to-glass figures).

import { Emitter } from './signal-model.js';

export const CAMERA = Object.freeze({
  WATCH: 'camera.watch', OFFER: 'camera.offer', ANSWER: 'camera.answer', CANDIDATE: 'camera.candidate',
  STOP: 'camera.stop', DESCRIBE: 'camera.describe', ENDED: 'camera.ended', REFUSED: 'camera.refused',
  STATUS: 'camera.status',
});
const PART_CHARS = 3500;
const MAX_PARTS = 8;
const COLUMNS = 16;
const ROWS = 4;

/** Ask every camera in the session for its camera.status (answers arrive as 'signal:camera.status'). */
export function describeCameras(session, to = null) {
  return session.signal({ type: CAMERA.DESCRIBE, data: '{}', to, retryAfterReconnect: false });
}

/** The cell size of the frame code for a frame `width` pixels wide (bridge/core/framecode.py). */
export function codeCell(width) { return Math.max(8, Math.floor(width / 40) & ~1); }

/** Decode 64 bits (array of 0/1) into {counter, ts}, or null when the check byte does not match. */
export function decodeCode(bits) {
  const bytes = [];
  for (let i = 0; i < 8; i += 1) {
    let b = 0;
    for (let j = 0; j < 8; j += 1) b = (b << 1) | (bits[i * 8 + j] ? 1 : 0);
    bytes.push(b);
  }
  const check = (bytes.slice(0, 7).reduce((a, b) => a + b, 0) + 0x5a) & 0xff;
  if (check !== bytes[7]) return null;
  const counter = (bytes[0] << 16) | (bytes[1] << 8) | bytes[2];
  const ts = ((bytes[3] << 24) >>> 0) + (bytes[4] << 16) + (bytes[5] << 8) + bytes[6];
  return { counter, ts };
}

export class CameraViewer extends Emitter {
  constructor(session, video, { camera = null, iceServers = [] } = {}) {
    super();
    this.session = session;
    this.video = video;
    this.camera = camera;                // a camera name, or null for any
    this.iceServers = iceServers;
    this.state = 'idle';
    this.reason = '';
    this.stream = null;                  // the camera's stream id once offered
    this.cameraId = null;                // the camera's connection id
    this.info = null;                    // width, height, fps, codec of the offer
    this.stats = this._freshStats();
    this._pc = null;
    this._parts = new Map();             // stream -> {from, parts: [], count}
    this._canvas = null;
    this._presented = [];
    this._onSession = {
      [`signal:${CAMERA.OFFER}`]: (ev) => this._onOffer(ev),
      [`signal:${CAMERA.ENDED}`]: (ev) => this._onEnded(ev),
      [`signal:${CAMERA.REFUSED}`]: (ev) => this._onRefused(ev),
      [`signal:${CAMERA.STATUS}`]: (ev) => this._onStatus(ev),
      connectionDestroyed: (ev) => {
        // Only a stream in progress ends here; one already ended keeps the camera's own reason.
        if (ev.connection && ev.connection.id === this.cameraId && ['connecting', 'live'].includes(this.state)) {
          this._end('ended', 'the camera left the session');
        }
      },
    };
    session.on(this._onSession);
    this._statsTimer = setInterval(() => this._poll(), 1000);
  }

  _freshStats() {
    return { fps: 0, latencyMs: null, latencySource: null, counter: null, codeFrames: 0, badCodes: 0,
      framesDecoded: 0, latencies: [] };
  }

  /** Ask for the stream (`to`: a camera's connection id, else every camera). */
  start(to = null) {
    this._teardown();
    this.stats = this._freshStats();
    this._setState('asking', '');
    const data = JSON.stringify(this.camera ? { camera: this.camera } : {});
    return this._send(CAMERA.WATCH, data, to);
  }

  /** End the stream (the camera is told) and forget it. */
  stop() {
    if (this.stream && this.cameraId) this._send(CAMERA.STOP, JSON.stringify({ stream: this.stream }), this.cameraId);
    this._end('idle', 'stopped');
  }

  /** Stop and stop listening to the session (the viewer cannot be used again). */
  close() {
    this.stop();
    for (const [name, h] of Object.entries(this._onSession)) this.session.off(name, h);
    clearInterval(this._statsTimer);
  }

  _send(type, data, to) {
    return this.session.signal({ type, data, to, retryAfterReconnect: false }).catch((err) => {
      if (type === CAMERA.WATCH) this._end('ended', `camera.watch not sent: ${err.code} ${err.message}`);
    });
  }

  _setState(state, reason) {
    this.state = state;
    this.reason = reason;
    this._emit('state', { state, reason });
  }

  _end(state, reason) {
    this._teardown();
    this._setState(state, reason);
  }

  _teardown() {
    if (this._pc) { this._pc.close(); this._pc = null; }
    if (this.video) this.video.srcObject = null;
    this.stream = null;
    this._parts.clear();
  }

  // ---- signals from the camera ------------------------------------------------------------

  _parse(ev) {
    try { const obj = JSON.parse(ev.data); return obj && typeof obj === 'object' ? obj : null; } catch { return null; }
  }

  _onOffer(ev) {
    const msg = this._parse(ev);
    if (!msg || !ev.from || typeof msg.stream !== 'string' || typeof msg.sdp !== 'string') return;
    if (this.state !== 'asking' || (this.stream !== null && msg.stream !== this.stream)) {
      // Another camera answered a broadcast watch, or an offer we no longer want: say so once.
      if (msg.part === 0 && msg.stream !== this.stream) {
        this._send(CAMERA.STOP, JSON.stringify({ stream: msg.stream }), ev.from.id);
      }
      return;
    }
    const count = Number.isInteger(msg.parts) && msg.parts >= 1 && msg.parts <= MAX_PARTS ? msg.parts : 1;
    let entry = this._parts.get(msg.stream);
    if (!entry) { entry = { from: ev.from.id, parts: new Array(count), got: 0 }; this._parts.set(msg.stream, entry); }
    if (entry.from !== ev.from.id || !Number.isInteger(msg.part) || msg.part < 0 || msg.part >= count
        || entry.parts[msg.part] !== undefined) return;
    entry.parts[msg.part] = msg.sdp;
    entry.got += 1;
    if (msg.part === 0 && msg.info) this.info = msg.info;
    if (entry.got < count) return;
    this._parts.clear();
    this.stream = msg.stream;
    this.cameraId = ev.from.id;
    this._answer(entry.parts.join('')).catch((err) => {
      this.stop();
      this._setState('ended', `could not answer the offer: ${err.message}`);
    });
  }

  async _answer(sdp) {
    this._setState('connecting', '');
    // Our own servers, else the camera's STUN servers (its offer says which; never TURN credentials).
    const shared = this.info && Array.isArray(this.info.ice_servers) && this.info.ice_servers.length
      ? [{ urls: this.info.ice_servers.filter((u) => typeof u === 'string' && /^stuns?:/.test(u)) }] : [];
    const pc = new RTCPeerConnection({ iceServers: this.iceServers.length ? this.iceServers : shared });
    this._pc = pc;
    const stream = this.stream;
    const camera = this.cameraId;
    pc.ontrack = (ev) => {
      if (this.video) {
        this.video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
        this._watchFrames();
      }
    };
    pc.onicecandidate = (ev) => {
      if (this._pc !== pc) return;
      const c = ev.candidate;
      this._send(CAMERA.CANDIDATE, JSON.stringify(c && c.candidate
        ? { stream, candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
        : { stream, candidate: null }), camera);
    };
    pc.onconnectionstatechange = () => {
      if (this._pc !== pc) return;
      if (pc.connectionState === 'connected') this._setState('live', '');
      if (pc.connectionState === 'failed') this._end('ended', 'the peer connection failed (ICE or DTLS)');
    };
    await pc.setRemoteDescription({ type: 'offer', sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    const text = pc.localDescription.sdp;
    const parts = Math.ceil(text.length / PART_CHARS);
    for (let i = 0; i < parts; i += 1) {
      this._send(CAMERA.ANSWER, JSON.stringify({ stream, sdp: text.slice(i * PART_CHARS, (i + 1) * PART_CHARS),
        part: i, parts }), camera);
    }
  }

  _onEnded(ev) {
    const msg = this._parse(ev);
    if (msg && msg.stream === this.stream) this._end('ended', String(msg.reason || 'ended by the camera'));
  }

  _onRefused(ev) {
    const msg = this._parse(ev);
    if (!msg) return;
    if (this.state === 'asking' || (msg.stream && msg.stream === this.stream)) {
      this._end('refused', `${msg.code} ${msg.message}`);
    }
  }

  _onStatus(ev) {
    const msg = this._parse(ev);
    if (msg) this._emit('status', { status: msg, from: ev.from });
  }

  // ---- frames: rate and glass-to-glass latency --------------------------------------------

  _watchFrames() {
    const video = this.video;
    if (!video || typeof video.requestVideoFrameCallback !== 'function') return;
    // One loop per stream: a callback of an earlier stream may still be pending on the element.
    const generation = (this._generation = (this._generation || 0) + 1);
    const onFrame = (now, meta) => {
      if (this.video !== video || !video.srcObject || generation !== this._generation) return;
      this._presented.push(now);
      this._readCode(video, meta);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  _readCode(video, meta) {
    const w = video.videoWidth;
    if (!w) return;
    const c = codeCell(w);
    const cw = c * (COLUMNS + 2);
    const ch = c * (ROWS + 2);
    if (!this._canvas) this._canvas = document.createElement('canvas');
    const canvas = this._canvas;
    if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(video, 0, 0, cw, ch, 0, 0, cw, ch);
    const px = ctx.getImageData(0, 0, cw, ch).data;
    const bits = [];
    for (let r = 0; r < ROWS; r += 1) {
      for (let col = 0; col < COLUMNS; col += 1) {
        const x = c * (1 + col) + (c >> 1);
        const y = c * (1 + r) + (c >> 1);
        const i = (y * cw + x) * 4;
        bits.push((px[i] + px[i + 1] + px[i + 2]) / 3 > 128 ? 1 : 0);
      }
    }
    // Every cell alike: no code in view (Chromium's first frame callback can come before the frame
    // can be drawn, giving a blank canvas; a real camera has no code). Neither a code nor a bad one.
    if (bits.every((b) => b === bits[0])) return;
    const code = decodeCode(bits);
    if (!code) { this.stats.badCodes += 1; return; }
    this.stats.codeFrames += 1;
    this.stats.counter = code.counter;
    // The moment this frame is shown, on the hub's clock (the camera wrote the hub's clock too).
    const shown = performance.timeOrigin + (meta && meta.expectedDisplayTime ? meta.expectedDisplayTime : performance.now());
    const offset = this.session.clockOffsetMs || 0;
    const latency = ((Math.round(shown + offset) - code.ts) % 2 ** 32 + 2 ** 32) % 2 ** 32;
    if (latency < 60000) {
      this.stats.latencyMs = latency;
      this.stats.latencySource = 'frame code';
      this.stats.latencies.push(latency);
      if (this.stats.latencies.length > 600) this.stats.latencies.shift();
      this._lastCodeAt = performance.now();
    }
  }

  async _poll() {
    const now = performance.now();
    this._presented = this._presented.filter((t) => now - t <= 1000);
    this.stats.fps = this._presented.length;
    const pc = this._pc;
    if (!pc) return;
    let rtt = null;
    let jitter = null;
    try {
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          this.stats.framesDecoded = s.framesDecoded || 0;
          if (s.jitterBufferEmittedCount) jitter = (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount;
        }
        if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined) {
          rtt = 1000 * s.currentRoundTripTime;
        }
      });
    } catch { return; }
    const coded = this._lastCodeAt !== undefined && now - this._lastCodeAt < 2000;
    if (!coded && jitter !== null) {
      this.stats.latencyMs = Math.round(jitter + (rtt || 0) / 2);
      this.stats.latencySource = 'estimate';
    }
    this._emit('stats', { ...this.stats, latencies: undefined });
  }
}
