// signal-model.js: the parts of sigbridge.js that do no I/O: limits and signal checks, errors,
// connection objects, session URLs and the event emitter. Same limits as bridge/core/signal.py.

export const TYPE_PATTERN = /^[A-Za-z0-9._~-]*$/;

const utf8 = new TextEncoder();

/** An error of the signaling API: `code` is 400/401/403/404/413/429/500. */
export class SignalError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'SignalError';
    this.code = code;
  }
}

/** The wire form of a connection -> the OpenTok-style object handed to applications. */
export function toConnection(wire) {
  if (!wire || typeof wire.id !== 'string') return null;
  return Object.freeze({
    connectionId: wire.id,
    id: wire.id,
    data: typeof wire.data === 'string' ? wire.data : '',
    role: typeof wire.role === 'string' ? wire.role : '',
    creationTime: typeof wire.creation_time === 'number' ? wire.creation_time : 0,
    // The hub's name for the token this connection joined with (same token, same tokenId).
    tokenId: typeof wire.token_id === 'string' ? wire.token_id : '',
  });
}

/** Build the WebSocket address of a session from the hub's base URL (ws://, wss://, http(s)://). */
export function sessionUrl(base, sessionId) {
  let b = String(base).trim().replace(/\/+$/, '');
  b = b.replace(/^http(s?):\/\//i, 'ws$1://');
  if (!/^wss?:\/\//i.test(b)) throw new SignalError(400, `hub URL must start with ws:// or wss://: ${base}`);
  return `${b}/v1/session/${encodeURIComponent(sessionId)}`;
}

/**
 * Check a signal against the limits; returns null when it is valid, else a SignalError.
 * The same rules as bridge/core/signal.py: type and data are strings, type <= maxType characters
 * of [A-Za-z0-9._~-], data <= maxData bytes of UTF-8.
 */
export function checkSignal(type, data, limits = { max_type: 128, max_data: 8192 }) {
  if (typeof type !== 'string') return new SignalError(400, 'signal type must be a string');
  if (typeof data !== 'string') return new SignalError(400, 'signal data must be a string');
  if (type.length > limits.max_type) {
    return new SignalError(413, `signal type is ${type.length} characters, at most ${limits.max_type}`);
  }
  if (!TYPE_PATTERN.test(type)) return new SignalError(400, 'signal type may only hold A-Z a-z 0-9 . _ ~ -');
  // Cheap bound first: a UTF-16 code unit is at most 3 UTF-8 bytes.
  if (data.length * 3 > limits.max_data) {
    const size = utf8.encode(data).length;
    if (size > limits.max_data) {
      return new SignalError(413, `signal data is ${size} bytes, at most ${limits.max_data}`);
    }
  }
  return null;
}

/** on/off/once/emit, the event half of an OpenTok-style object. */
export class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  /** Add a handler: on('signal', fn), on('signal:robot.move', fn), or on({name: fn, ...}). */
  on(name, handler) {
    if (typeof name === 'object' && name !== null) {
      for (const [n, h] of Object.entries(name)) this.on(n, h);
      return this;
    }
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(handler);
    return this;
  }

  off(name, handler) {
    const set = this._handlers.get(name);
    if (set) (handler ? set.delete(handler) : set.clear());
    return this;
  }

  once(name, handler) {
    const wrapped = (ev) => { this.off(name, wrapped); handler.call(this, ev); };
    return this.on(name, wrapped);
  }

  _emit(name, event) {
    const set = this._handlers.get(name);
    if (!set) return;
    for (const handler of [...set]) {
      // A failing application handler must not break the link: report and carry on.
      try { handler.call(this, event); } catch (err) { setTimeout(() => { throw err; }); }
    }
  }
}
