// Drive input: an on-screen joystick (pointer events: mouse, pen and touch) and the keyboard
// (W A S D / arrows, space = stop), turned into robot.move commands.
//
// Contract with the caller: `move(x, y, final)` is called
//   - at once when input starts, then every `periodMs` while any input is held (final = false;
//     the caller sends these with retryAfterReconnect false: a late move is worse than none);
//   - exactly once with (0, 0, true) when the input is released (and on space, blur, hidden tab).
// x is forward (+) / backward (-), y is turn right (+) / left (-) (the rover firmware's convention: left motor = x + y), both in [-1, 1]
// and scaled by the max-speed factor.

const KEYS = {
  w: [1, 0], arrowup: [1, 0], s: [-1, 0], arrowdown: [-1, 0],
  a: [0, -1], arrowleft: [0, -1], d: [0, 1], arrowright: [0, 1],
};

const round = (v) => Math.round(v * 100) / 100 + 0;   // + 0 turns -0 into 0

export class Drive {
  constructor({ pad, knob, move, scale = () => 1, periodMs = 100, onChange = () => {} }) {
    this.pad = pad;
    this.knob = knob;
    this.move = move;
    this.scale = scale;
    this.periodMs = periodMs;
    this.onChange = onChange;
    this.enabled = false;
    this.keys = new Set();
    this.stick = null;                 // [fx, fy] of the held joystick, unit disc
    this.pointerId = null;
    this.timer = null;
    this.x = 0;
    this.y = 0;
    this._bind();
  }

  _bind() {
    const pad = this.pad;
    pad.addEventListener('pointerdown', (ev) => {
      if (!this.enabled || this.pointerId !== null) return;
      this.pointerId = ev.pointerId;
      pad.setPointerCapture(ev.pointerId);
      ev.preventDefault();
      this._stickAt(ev);
    });
    pad.addEventListener('pointermove', (ev) => {
      if (ev.pointerId === this.pointerId) this._stickAt(ev);
    });
    const up = (ev) => {
      if (ev.pointerId !== this.pointerId) return;
      this.pointerId = null;
      this.stick = null;
      this.knob.style.transform = '';
      this._update();
    };
    pad.addEventListener('pointerup', up);
    pad.addEventListener('pointercancel', up);
    pad.addEventListener('lostpointercapture', up);

    window.addEventListener('keydown', (ev) => {
      if (!this.enabled || ev.ctrlKey || ev.metaKey || ev.altKey || this._typing(ev.target)) return;
      const key = ev.key.toLowerCase();
      if (key === ' ') {
        // On a focused button space keeps its usual meaning (press it) as well as stopping.
        if (!(ev.target instanceof HTMLButtonElement)) ev.preventDefault();
        this.stop();
      } else if (KEYS[key]) {
        ev.preventDefault();
        if (!ev.repeat) { this.keys.add(key); this._update(); }
      }
    });
    window.addEventListener('keyup', (ev) => {
      const key = ev.key.toLowerCase();
      if (this.keys.delete(key)) this._update();
    });
    // Dead-man: no keyup arrives for a key held while the page loses focus.
    window.addEventListener('blur', () => this.release());
    document.addEventListener('visibilitychange', () => { if (document.hidden) this.release(); });
  }

  _typing(target) {
    return target instanceof HTMLElement
      && (target.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName));
  }

  _stickAt(ev) {
    const r = this.pad.getBoundingClientRect();
    const radius = r.width / 2;
    let fx = (ev.clientX - (r.left + radius)) / radius;
    let fy = (ev.clientY - (r.top + r.height / 2)) / radius;
    const len = Math.hypot(fx, fy);
    if (len > 1) { fx /= len; fy /= len; }
    this.stick = [fx, fy];
    this.knob.style.transform = `translate(${fx * radius * 0.75}px, ${fy * radius * 0.75}px)`;
    this._update();
  }

  /** The vector the held input asks for, scaled; (0, 0) when nothing is held. */
  _vector() {
    let x = 0;
    let y = 0;
    if (this.stick) {
      x = -this.stick[1];
      y = this.stick[0];
    } else {
      [x, y] = this._keyVector();
    }
    const s = this.scale();
    return [round(x * s), round(y * s)];
  }

  /** The held keys as a vector (unscaled, each axis in [-1, 1]). */
  _keyVector() {
    let x = 0;
    let y = 0;
    for (const k of this.keys) { x += KEYS[k][0]; y += KEYS[k][1]; }
    return [Math.max(-1, Math.min(1, x)), Math.max(-1, Math.min(1, y))];
  }

  /** Keyboard driving moves the knob too, so the pad always shows what is being sent. */
  _keyKnob() {
    if (this.stick !== null) return;
    if (!this.keys.size) { this.knob.style.transform = ''; return; }
    const [kx, ky] = this._keyVector();
    const len = Math.hypot(kx, ky) || 1;
    const r = (this.pad.getBoundingClientRect().width / 2) * 0.75;
    this.knob.style.transform = `translate(${(ky / len) * r}px, ${(-kx / len) * r}px)`;
  }

  get active() { return this.stick !== null || this.keys.size > 0; }

  _update() {
    this._keyKnob();
    [this.x, this.y] = this.active ? this._vector() : [0, 0];
    this.onChange(this.x, this.y);
    if (this.active && this.timer === null) {
      this.move(this.x, this.y, false);
      this.timer = setInterval(() => {
        [this.x, this.y] = this._vector();     // picks up a max-speed change while held
        this.move(this.x, this.y, false);
      }, this.periodMs);
    } else if (!this.active && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
      this.move(0, 0, true);
    }
  }

  /** Drop every held input; sends the single stop if something was held. */
  release() {
    this.keys.clear();
    if (this.pointerId !== null) {
      try { this.pad.releasePointerCapture(this.pointerId); } catch { /* already released */ }
    }
    this.pointerId = null;
    this.stick = null;
    this.knob.style.transform = '';
    this._update();
  }

  /** Space / explicit stop: release everything and always send one stop. */
  stop() {
    const wasActive = this.active;
    this.release();
    if (!wasActive) this.move(0, 0, true);
  }

  setEnabled(on) {
    this.enabled = on;
    if (!on) this.release();
  }
}
