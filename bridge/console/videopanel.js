// videopanel.js: the console's camera panel (index.html #video): a CameraViewer (video.js) wired to
// the page. It asks for camera.status when joined, shows the stream's state, frame rate and latency,
// and watches again when a camera comes back (a restarted `sigbridge camera`) while the operator
// had asked to watch.

import { CAMERA, CameraViewer, describeCameras } from './video.js';

const $ = (id) => document.getElementById(id);

export class VideoPanel {
  constructor() {
    this.viewer = null;
    this.wanted = false;                 // the operator pressed Watch and not Stop
    this.cameraId = null;
    $('video-watch').addEventListener('click', () => { this.wanted = true; this._watch(); });
    $('video-stop').addEventListener('click', () => {
      this.wanted = false;
      if (this.viewer) this.viewer.stop();
    });
    setInterval(() => this._render(), 500);
  }

  /** A session was joined: look for cameras. */
  attach(session) {
    this.detach();
    const viewer = new CameraViewer(session, $('video-el'));
    this.viewer = viewer;
    viewer.on('state', () => this._render());
    viewer.on('status', (ev) => {
      this.cameraId = ev.from ? ev.from.id : null;
      $('video-camera').textContent = `${ev.status.camera} · ${ev.status.width}x${ev.status.height}`
        + `@${ev.status.fps} ${ev.status.codec}`;
      // A camera (re)joined while the operator wants the picture and nothing is playing: ask it.
      if (this.wanted && !['asking', 'connecting', 'live'].includes(viewer.state)) this._watch();
      this._render();
    });
    session.on(`signal:${CAMERA.REFUSED}`, () => this._render());
    describeCameras(session).catch(() => {});
    this._render();
  }

  /** The session ended. */
  detach() {
    if (this.viewer) this.viewer.close();
    this.viewer = null;
    this.cameraId = null;
    $('video-camera').textContent = '';
    this._render();
  }

  _watch() {
    if (!this.viewer) return;
    const known = this.cameraId && this.viewer.session.connections.has(this.cameraId);
    this.viewer.start(known ? this.cameraId : null);
  }

  _render() {
    const v = this.viewer;
    const state = v ? v.state : 'idle';
    const el = $('video-state');
    el.textContent = v && v.reason && state !== 'live' ? `${state}: ${v.reason}` : state;
    el.dataset.state = state;
    $('video').dataset.state = state;
    const live = state === 'live';
    $('video-fps').textContent = live ? `${v.stats.fps} fps` : '– fps';
    const lat = live && v.stats.latencyMs !== null
      ? `${Math.round(v.stats.latencyMs)} ms${v.stats.latencySource === 'estimate' ? ' (est.)' : ''}` : '–';
    $('video-latency').textContent = `latency ${lat}`;
    $('video-watch').hidden = ['asking', 'connecting', 'live'].includes(state);
    $('video-stop').hidden = !$('video-watch').hidden;
  }
}
