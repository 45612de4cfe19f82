// Controls generated from a bridge.capabilities announcement.
//
// parseCapabilities(text) checks the announcement (version 1, see DESIGN.md / issue 5) and returns
// {rules, estop, telemetry, control, info} (info: telemetry_info, units/ranges/warnings) or throws an Error saying what is wrong. renderControls()
// draws one form per concrete rule (glob rules such as "robot.*" cannot be sent as such and are
// skipped): a slider for a bounded number, a number box otherwise, a select for an enum, a text box
// for a pattern, a checkbox for a bool. Submitting a form calls send(type, json).

const GLOB = /[*?[\]]/;

export function parseCapabilities(text) {
  let caps;
  try { caps = JSON.parse(text); } catch { throw new Error('bridge.capabilities: data is not JSON'); }
  if (!caps || typeof caps !== 'object') throw new Error('bridge.capabilities: data is not an object');
  if (caps.version !== 1) throw new Error(`bridge.capabilities: unknown version ${caps.version}`);
  if (!Array.isArray(caps.rules)) throw new Error('bridge.capabilities: rules must be a list');
  const rules = caps.rules.filter((r) => r && typeof r.signal === 'string');
  const estop = caps.estop && typeof caps.estop.signal === 'string' ? caps.estop : null;
  const telemetry = Array.isArray(caps.telemetry) ? caps.telemetry.filter((t) => typeof t === 'string') : [];
  const control = caps.control && typeof caps.control === 'object' ? caps.control : null;
  const info = caps.telemetry_info && typeof caps.telemetry_info === 'object' ? caps.telemetry_info : {};
  return { rules, estop, telemetry, control, info };
}

let uid = 0;

function field(name, spec, form) {
  const id = `ctl-${++uid}`;
  const wrap = document.createElement('div');
  wrap.className = 'field';
  const label = document.createElement('label');
  label.htmlFor = id;
  label.textContent = name;
  wrap.append(label);
  const type = spec && spec.type;
  const dflt = spec ? spec.default : undefined;
  let input;
  let read;
  if (type === 'bool') {
    input = document.createElement('input');
    input.type = 'checkbox';
    input.checked = dflt === true;
    wrap.classList.add('check');
    read = () => input.checked;
  } else if (type === 'string' && Array.isArray(spec.enum)) {
    input = document.createElement('select');
    for (const v of spec.enum) input.add(new Option(String(v), String(v), false, v === dflt));
    read = () => input.value;
  } else if (type === 'int' || type === 'float') {
    const bounded = typeof spec.min === 'number' && typeof spec.max === 'number';
    input = document.createElement('input');
    input.type = bounded ? 'range' : 'number';
    if (typeof spec.min === 'number') input.min = String(spec.min);
    if (typeof spec.max === 'number') input.max = String(spec.max);
    input.step = type === 'int' ? '1' : (bounded ? String((spec.max - spec.min) / 100) : 'any');
    let start = typeof dflt === 'number' ? dflt : null;
    if (start === null && bounded) start = spec.min <= 0 && spec.max >= 0 ? 0 : spec.min;
    if (start !== null) input.value = String(start);
    if (bounded) {
      const out = document.createElement('output');
      out.htmlFor = id;
      out.textContent = input.value;
      input.addEventListener('input', () => { out.textContent = input.value; });
      label.append(' ', out);
    }
    read = () => {
      if (input.value === '') return undefined;        // optional and left empty: not sent
      const v = Number(input.value);
      return type === 'int' ? Math.round(v) : v;
    };
  } else {
    input = document.createElement('input');
    input.type = 'text';
    if (spec && typeof spec.pattern === 'string') input.pattern = spec.pattern;
    if (typeof dflt === 'string') input.value = dflt;
    read = () => (input.value === '' ? undefined : input.value);
  }
  input.id = id;
  input.name = name;
  // The bridge refuses a signal that lacks a required param; let the browser say so first.
  if (spec && spec.required === true && type !== 'bool') input.required = true;
  wrap.append(input);
  form.append(wrap);
  return read;
}

/** Replace the content of `container` with one form per concrete rule. */
export function renderControls(container, caps, send) {
  container.replaceChildren();
  for (const rule of caps.rules) {
    if (GLOB.test(rule.signal)) continue;
    const form = document.createElement('form');
    form.className = 'control';
    form.dataset.signal = rule.signal;
    const box = document.createElement('fieldset');
    const legend = document.createElement('legend');
    legend.textContent = rule.signal;
    if (rule.ack) legend.title = 'the bridge acknowledges with bridge.ack';
    box.append(legend);
    const readers = [];
    const params = rule.params && typeof rule.params === 'object' ? rule.params : {};
    for (const [name, spec] of Object.entries(params)) readers.push([name, field(name, spec, box)]);
    const button = document.createElement('button');
    button.type = 'submit';
    button.textContent = `Send ${rule.signal}`;
    box.append(button);
    form.append(box);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      if (!form.reportValidity()) return;
      const data = {};
      for (const [name, read] of readers) {
        const v = read();
        if (v !== undefined) data[name] = v;
      }
      send(rule.signal, JSON.stringify(data));
    });
    container.append(form);
  }
}
