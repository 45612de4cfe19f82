// The operator console served by the hub at GET /: join a session, see who is there, drive the
// robot, use the controls it announces, watch its telemetry and the signal log.
// Everything goes through sigbridge.js; this file only wires the page to it.

import { connect } from './sigbridge.js';
import { Drive } from './drive.js';
import { parseCapabilities, renderControls } from './controls.js';
import { Telemetry } from './telemetry.js';
import { VideoPanel } from './videopanel.js';
import { PONG, RobotState } from './robot-state.js';

const $ = (id) => document.getElementById(id);
const MOVE = 'robot.move';
const DESCRIBE = 'bridge.describe';
const CAPABILITIES = 'bridge.capabilities';
const STATUS = 'bridge.status';
const ACK = 'bridge.ack';
const DEFAULT_ESTOP = 'robot.estop';
const LOG_MAX = 300;

/**
 * The bridge is the connection whose token says so: connection data `bridge` or `bridge:NAME`
 * (`sigbridge token SESSION --bridge NAME`). Only the holder of the API secret mints tokens and the
 * hub fills in every connection's data from its token, so no other publisher can pass for it; what
 * the robot says (capabilities, status, telemetry, acks) is taken only from such a connection.
 */
export function isBridge(connection) {
  const data = connection ? connection.data : '';
  return data === 'bridge' || (typeof data === 'string' && data.startsWith('bridge:'));
}

const ui = {
  session: null,          // the sigbridge Session while joined
  leaving: false,
  estop: DEFAULT_ESTOP,
  estopDefault: DEFAULT_ESTOP,  // before the bridge declares its own (#estop=TYPE in the link sets it)
  telemetryTypes: new Set(['robot.telemetry']),
  moveFailures: 0,
  ignored: 0,             // robot signals dropped because they did not come from the bridge
};
// For tests and for poking around from the devtools console.
window.sigbridgeConsole = ui;

const telemetry = new Telemetry($('telemetry-list'), $('telemetry-empty'), $('drive-tele'));
const video = new VideoPanel();
ui.video = video;


/** The bridge's connection in this session (its token data says so), or null. */
function findBridge() {
  if (!ui.session) return null;
  for (const c of ui.session.connections.values()) if (isBridge(c)) return c;
  return null;
}

// ---- join ------------------------------------------------------------------------------------

function defaultHubUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
}

async function join(url, sessionId, token) {
  const button = $('join-button');
  button.disabled = true;
  $('join-error').textContent = '';
  setLinkState('connecting');
  try {
    const s = await connect(url, sessionId, token);
    ui.session = s;
    ui.leaving = false;
    resetRobot();
    wire(s);
    video.attach(s);
    $('join').hidden = true;
    $('app').hidden = false;
    $('leave').hidden = false;
    $('whoami').textContent = `${sessionId} · ${s.connection.role}`;
    $('whoami').title = sessionId;
    setLinkState('connected');
    renderMembers();
    robot.attach(s);
    robot.bridge(findBridge());
    drive.setEnabled(!robot.offline);
    describe();
  } catch (err) {
    setLinkState('disconnected');
    $('join-error').textContent = `Could not join: ${err.code ? `${err.code} ` : ''}${err.message}`;
  } finally {
    button.disabled = false;
  }
}

function wire(s) {
  s.on('signal', onSignal);
  s.on('connectionCreated', (ev) => {
    renderMembers(); robot.bridge(findBridge()); log('sys', 'joined', ev.connection, ev.connection.data);
  });
  s.on('connectionDestroyed', (ev) => {
    renderMembers();
    robot.bridge(findBridge());
    log('sys', 'left', ev.connection, ev.reason);
  });
  s.on('sessionReconnecting', () => { setLinkState('reconnecting'); drive.release(); robot.link(false); });
  s.on('sessionReconnected', (ev) => {
    setLinkState('connected');
    renderMembers();
    robot.link(true);
    robot.bridge(findBridge());
    // A new connection (the hub's grace window had ended) missed what was said meanwhile: ask again.
    if (!ev.resumed) describe();
  });
  s.on('sessionDisconnected', (ev) => {
    drive.setEnabled(false);
    video.detach();
    robot.clear();
    setLinkState('disconnected');
    ui.session = null;
    $('app').hidden = true;
    $('leave').hidden = true;
    $('join').hidden = false;
    if (!ui.leaving) $('join-error').textContent = `Disconnected: ${ev.reason}`;
  });
}

function setLinkState(state) {
  const el = $('link-state');
  el.textContent = state;
  el.className = `state state-${state}`;
  el.dataset.state = state;
}

// The library measures RTT on every keep-alive ping (2 s); showing it twice as often is enough.
setInterval(() => {
  const s = ui.session;
  $('rtt').textContent = s && s.rttMs !== null ? `RTT ${Math.round(s.rttMs)} ms` : 'RTT –';
}, 500);

// ---- sending ---------------------------------------------------------------------------------

function target() {
  const id = $('target').value;
  return id && ui.session && ui.session.connections.has(id) ? id : null;
}

/** Send a signal the operator asked for (to the chosen target, or `to`); the outcome goes into the log. */
function send(type, data, retryAfterReconnect = true, to = target()) {
  if (!ui.session) return Promise.resolve();
  return ui.session.signal({ type, data, to, retryAfterReconnect })
    .then(() => log('out', type, ui.session && ui.session.connection, data))
    .catch((err) => log('err', type, null, `${err.code} ${err.message}`));
}

function describe() { send(DESCRIBE, '{}'); }

/**
 * Where robot commands go: the chosen target, else the bridge. Never everyone: with no bridge (or the
 * robot offline) a command is not sent at all rather than broadcast to whoever is in the session.
 */
function robotTo() {
  if (robot.offline) return null;
  return target() || (robot.bridgeConn && robot.bridgeConn.id) || null;
}

function sendToRobot(type, data, retryAfterReconnect = true) {
  const to = robotTo();
  if (to === null) { log('err', type, null, 'not sent: the robot is offline'); return Promise.resolve(); }
  return send(type, data, retryAfterReconnect, to);
}

const drive = new Drive({
  pad: $('pad'),
  knob: $('knob'),
  scale: () => Number($('speed').value),
  onChange: (x, y) => { $('drive-out').textContent = `x ${x.toFixed(2)} · y ${y.toFixed(2)}`; },
  move: (x, y, final) => {
    const data = JSON.stringify({ x, y });
    // The one stop is worth delivering late; it goes to the bridge only (nothing when it is gone).
    const to = final ? target() || (robot.bridgeConn && robot.bridgeConn.id) : robotTo();
    if (!ui.session || !to) return;
    if (final) { send(MOVE, data, true, to); return; }
    // Held-input moves are perishable: never queued, failures only counted (10 per second).
    ui.session.signal({ type: MOVE, data, to, retryAfterReconnect: false })
      .catch(() => { ui.moveFailures += 1; });
  },
});

// What the robot is doing, from the bridge only; driving is disabled while it is offline.
const robot = new RobotState({
  banner: $('robot-banner'), text: $('robot-text'), detail: $('robot-detail'), lease: $('robot-lease'),
  reset: $('estop-reset'), latency: $('robot-rtt'),
  send: (type, data, to) => {
    if (ui.session) ui.session.signal({ type, data, to, retryAfterReconnect: false }).catch(() => {});
  },
  onChange: (state) => {
    drive.setEnabled(state !== 'offline');
    telemetry.setOffline(state === 'offline');
    log('sys', 'robot', null, state);
  },
});
ui.robot = robot;

$('speed').addEventListener('input', () => { $('speed-out').textContent = Number($('speed').value).toFixed(2); });
// E-STOP goes to everyone: it reaches the bridge whatever "Send to" says, also before the console
// knows which connection the bridge is; its type is the one the bridge declared (default robot.estop).
$('estop').addEventListener('click', () => { drive.release(); send(ui.estop, '{}', true, null); });
$('estop-reset').addEventListener('click', () => send($('estop-reset').dataset.signal, '{}'));
$('describe').addEventListener('click', describe);
$('lease-acquire').addEventListener('click', () => sendToRobot($('lease-acquire').dataset.signal, '{}', false));
$('lease-release').addEventListener('click', () => sendToRobot($('lease-release').dataset.signal, '{}', false));
$('leave').addEventListener('click', () => {
  ui.leaving = true;
  if (ui.session) ui.session.disconnect();
});

// ---- receiving -------------------------------------------------------------------------------

/** The connection a signal came from, as the hub describes it (never the signal's own claim). */
function sender(ev) {
  return ev.from && ui.session ? ui.session.connections.get(ev.from.id) : undefined;
}

function fromRobot(type) {
  return type === CAPABILITIES || type === STATUS || type === ACK || type === PONG
    || ui.telemetryTypes.has(type);
}

function onSignal(ev) {
  const own = ev.from && ui.session && ui.session.connection && ev.from.id === ui.session.connection.id;
  if (own) return;                     // our own broadcasts come back; they are logged on ack
  if (fromRobot(ev.type) && !isBridge(sender(ev))) {
    // Anyone may send these types; only the bridge's count. One log line per run, not per signal.
    ui.ignored += 1;
    log('sys', ev.type, ev.from, 'ignored: not from the bridge (its token data must be bridge:NAME)');
    return;
  }
  if (isBridge(sender(ev))) robot.heard();
  if (ev.type === PONG) { robot.pong(ev.data); return; }   // once a second: not worth a log line
  if (ev.type === STATUS) robot.status(ev.data);
  if (ev.type === CAPABILITIES) applyCapabilities(ev);
  if (ui.telemetryTypes.has(ev.type)) telemetry.update(ev.type, ev.data, ev.ts);
  log('in', ev.type, ev.from, ev.data);
}

/** Forget what the previous session's robot announced. */
function resetRobot() {
  $('controls-list').replaceChildren();
  $('controls-empty').hidden = false;
  $('log-list').replaceChildren();
  telemetry.clear();
  ui.estop = ui.estopDefault;
  ui.telemetryTypes = new Set(['robot.telemetry']);
  $('estop-type').textContent = ui.estop;
  $('estop-reset').hidden = true;
  $('lease').hidden = true;
}

function applyCapabilities(ev) {
  let caps;
  try { caps = parseCapabilities(ev.data); } catch (err) { log('err', ev.type, ev.from, err.message); return; }
  renderControls($('controls-list'), caps, (type, data) => sendToRobot(type, data));
  robot.capabilities(caps);
  telemetry.setInfo(caps.info);
  $('controls-empty').hidden = true;
  ui.estop = caps.estop ? caps.estop.signal : ui.estopDefault;
  $('estop-type').textContent = caps.estop ? ui.estop : `${ui.estop} (robot declares no e-stop)`;
  // Shown by the robot state only while latched, and only to a role the bridge takes a reset from.
  if (caps.estop && caps.estop.reset) $('estop-reset').dataset.signal = caps.estop.reset;
  for (const t of caps.telemetry) ui.telemetryTypes.add(t);
  const lease = caps.control && caps.control.lease;
  $('lease').hidden = !lease;
  if (lease) {
    $('lease-acquire').dataset.signal = caps.control.acquire || 'control.acquire';
    $('lease-release').dataset.signal = caps.control.release || 'control.release';
  }
  // Commands go to the robot that described itself, not to every operator in the session.
  if (sender(ev)) {
    renderMembers();
    $('target').value = ev.from.id;
  }
}

// ---- connections -----------------------------------------------------------------------------

function short(id) { return id ? id.slice(0, 8) : 'server'; }

function renderMembers() {
  const s = ui.session;
  if (!s) return;
  const list = $('members-list');
  list.replaceChildren();
  const all = [s.connection, ...s.connections.values()];
  for (const c of all) {
    const li = document.createElement('li');
    li.dataset.connectionId = c.id;
    const who = document.createElement('span');
    who.className = 'mono';
    who.textContent = `${short(c.id)}${c === s.connection ? ' (you)' : ''}`;
    const role = document.createElement('span');
    role.className = 'role';
    role.textContent = isBridge(c) ? `${c.role} · bridge` : c.role;
    if (isBridge(c)) li.dataset.bridge = 'true';
    const data = document.createElement('span');
    data.className = 'conn-data';
    data.textContent = c.data || '—';
    li.append(who, role, data);
    list.append(li);
  }
  $('members-count').textContent = `(${all.length})`;
  // Keep the target list in step with the session; fall back to everyone when the target left.
  const select = $('target');
  const chosen = select.value;
  select.replaceChildren(new Option('everyone', ''));
  for (const c of s.connections.values()) {
    select.add(new Option(`${short(c.id)} ${c.data}`.trim().slice(0, 40), c.id));
  }
  select.value = s.connections.has(chosen) ? chosen : '';
}

// ---- log -------------------------------------------------------------------------------------

// A run of entries of the same stream (a bridge.ack per 10 Hz move, telemetry) collapses into one
// line with a count, so the rest of the history stays on screen.
let lastEntry = null;                  // {key, li, count}

function streamKey(kind, type, from, text) {
  if (kind === 'sys' && fromRobot(type)) return `${kind}|${type}|${from ? from.id : ''}|ignored`;
  if (type === ACK) {
    // Keep refusals apart from the stream of "applied", and clamps to different values apart.
    return `${kind}|${type}|${from ? from.id : ''}|${text.replace(/^#\S+ /, '')}`;
  }
  if (type === MOVE || ui.telemetryTypes.has(type)) return `${kind}|${type}|${from ? from.id : ''}`;
  return null;
}

function log(kind, type, from, text) {
  const chatty = type === MOVE || ui.telemetryTypes.has(type);
  if (chatty && kind !== 'err' && !$('log-chatty').checked) return;
  const list = $('log-list');
  const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
  const arrow = { in: '←', out: '→', err: '✕', sys: '•' }[kind];
  const who = from ? `${short(from.id)}${from.data ? ` ${from.data}` : ''}` : (kind === 'in' ? 'server' : '');
  const body = type === ACK && kind === 'in' ? ackText(text) : String(text ?? '');
  const line = `${new Date().toLocaleTimeString()} ${arrow} ${type || '(no type)'} ${who ? `[${who}] ` : ''}`
    + (body.length > 300 ? `${body.slice(0, 300)}…` : body);
  const key = kind === 'err' ? null : streamKey(kind, type, from, body);
  if (key !== null && lastEntry && lastEntry.key === key && list.lastElementChild === lastEntry.li) {
    lastEntry.count += 1;
    lastEntry.li.textContent = `${line} (×${lastEntry.count})`;
  } else {
    const li = document.createElement('li');
    li.className = `log-${kind}`;
    li.dataset.type = type;
    li.textContent = line;
    list.append(li);
    lastEntry = { key, li, count: 1 };
    while (list.children.length > LOG_MAX) list.firstElementChild.remove();
  }
  if (stick) list.scrollTop = list.scrollHeight;
}
/** A bridge.ack as a person reads it: "#12 clamped: x=1", "#13 estopped: e-stop latched". */
function ackText(data) {
  let a;
  try { a = JSON.parse(data); } catch { return String(data); }
  if (!a || typeof a !== 'object') return String(data);
  let text = `#${a.id} ${a.status}`;
  if (a.status === 'clamped' && a.values && Array.isArray(a.clamped)) {
    text += ` to ${a.clamped.map((k) => `${k}=${JSON.stringify(a.values[k])}`).join(', ')}`;
  }
  if (a.reason) text += `: ${a.reason}`;
  return text;
}
$('log-clear').addEventListener('click', () => $('log-list').replaceChildren());

// ---- start -----------------------------------------------------------------------------------

$('hub-url').value = defaultHubUrl();
$('join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  join($('hub-url').value, $('session-id').value.trim(), $('token').value.trim());
});

// #session=...&token=...[&url=...][&estop=TYPE] joins directly; the fragment never reaches the server.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get('url')) $('hub-url').value = fragment.get('url');
if (fragment.get('estop')) ui.estop = ui.estopDefault = fragment.get('estop');
if (fragment.get('session')) $('session-id').value = fragment.get('session');
if (fragment.get('token')) $('token').value = fragment.get('token');
if (fragment.get('session') && fragment.get('token')) {
  join($('hub-url').value, fragment.get('session'), fragment.get('token'));
}
