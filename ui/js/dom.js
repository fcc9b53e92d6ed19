// A few DOM helpers (no framework): element building, numbers and times for people,
// dialogs, notices and error messages in words.

/**
 * h('button', {class: 'primary', onclick: fn, disabled: true}, 'Save') builds an element.
 * Props starting with "on" are listeners; `class`, `style` (object), `dataset` (object)
 * and boolean attributes are handled; children may be strings, nodes, arrays or nothing.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    } else if (key === 'style') {
      Object.assign(el.style, value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'value' || key === 'checked' || key === 'selected' || key === 'indeterminate') {
      el[key] = value;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false || child === true) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---------------------------------------------------------------------------------------
// Numbers and times for people

/** 0.30000000000000004 -> "0.3"; at most `digits` decimals, no trailing zeros. */
export function num(value, digits = 2) {
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value ?? '');
  return String(Number(n.toFixed(digits)));
}

/** Memory in MiB (Mesos' unit) as "32 MiB" or "1.5 GiB". */
export function mib(value) {
  const n = Number(value) || 0;
  if (Math.abs(n) >= 1024) return `${num(n / 1024, 1)} GiB`;
  return `${num(n, 0)} MiB`;
}

/** "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago"; future times "in 5 s". */
export function ago(timestamp, now = Date.now()) {
  const t = typeof timestamp === 'number' ? timestamp : Date.parse(timestamp);
  if (!Number.isFinite(t)) return '—';
  const seconds = Math.round((now - t) / 1000);
  const abs = Math.abs(seconds);
  let text;
  if (abs < 5) return 'just now';
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.floor(abs / 60)} min`;
  else if (abs < 86400) text = `${Math.floor(abs / 3600)} h`;
  else text = `${Math.floor(abs / 86400)} d`;
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}

/** A timestamp as the local date and time, for titles. */
export function when(timestamp) {
  const t = typeof timestamp === 'number' ? timestamp : Date.parse(timestamp);
  return Number.isFinite(t) ? new Date(t).toLocaleString() : '';
}

/** A <time> showing `ago` with the exact time on hover. */
export function timeEl(timestamp) {
  if (!timestamp) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: String(timestamp), title: when(timestamp) }, ago(timestamp));
}

/** `/prod/web` -> `#/apps/prod/web`. */
export function appHref(id) {
  return `#/apps/${String(id).replace(/^\/+/, '').split('/').map(encodeURIComponent).join('/')}`;
}

// ---------------------------------------------------------------------------------------
// Errors in words

/** A sentence for an error from `request` (or anything thrown). */
export function errorText(error) {
  if (!error) return 'Something went wrong.';
  if (error.status === 0) return `The master cannot be reached (${error.message}).`;
  if (error.status) {
    const head = `${error.message || 'The master refused the request'}`;
    return `${head} (HTTP ${error.status}${STATUS_TEXT[error.status] ? ` ${STATUS_TEXT[error.status]}` : ''})`;
  }
  return error.message || String(error);
}

const STATUS_TEXT = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  422: 'Unprocessable Entity',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
};

/** An error box: the sentence and, for 422s, each path with what is wrong there. */
export function errorBox(error, extra) {
  const details = error?.details ?? [];
  return h(
    'div',
    { class: 'alert error', role: 'alert' },
    h('p', {}, errorText(error)),
    details.length
      ? h('ul', { class: 'details' }, details.map((d) => h('li', {}, h('code', {}, d.path || '/'), ' ', (d.errors ?? []).join('; '))))
      : null,
    extra,
  );
}

// ---------------------------------------------------------------------------------------
// Notices

let toasts;

/** A short notice at the bottom; errors stay until dismissed. */
export function notify(message, kind = 'info') {
  toasts ??= document.getElementById('toasts');
  const close = () => item.remove();
  const item = h(
    'div',
    { class: ['toast', kind], role: kind === 'error' ? 'alert' : 'status' },
    h('span', {}, message),
    h('button', { class: 'icon', title: 'Dismiss', 'aria-label': 'Dismiss', onclick: close }, '×'),
  );
  toasts.append(item);
  if (kind !== 'error') setTimeout(close, 4000);
  return item;
}

// ---------------------------------------------------------------------------------------
// Dialogs (native <dialog>: Escape closes, focus stays inside)

/**
 * A modal with a form: resolves to the form's values (FormData as an object) when
 * submitted with the confirm button, or null when cancelled.
 */
export function modal({ title, body, confirm = 'OK', danger = false, focus }) {
  return new Promise((resolve) => {
    const form = h(
      'form',
      { method: 'dialog' },
      h('h2', {}, title),
      h('div', { class: 'dialog-body' }, body),
      h(
        'div',
        { class: 'dialog-actions' },
        h('button', { type: 'button', value: 'cancel', onclick: () => dialog.close('cancel') }, 'Cancel'),
        h('button', { type: 'submit', value: 'ok', class: danger ? 'danger' : 'primary' }, confirm),
      ),
    );
    const dialog = h('dialog', { class: 'modal' }, form);
    let values = null;
    form.addEventListener('submit', (event) => {
      values = Object.fromEntries(new FormData(form).entries());
      if (event.submitter?.value !== 'ok') values = null;
    });
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'ok' ? values ?? {} : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    const target = focus ? form.querySelector(focus) : form.querySelector('input, select, textarea');
    (target ?? form.querySelector('button[type=submit]'))?.focus();
    target?.select?.();
  });
}

/** Yes or no. */
export async function confirmDialog(title, message, confirm = 'Confirm', danger = false) {
  return (await modal({ title, body: h('p', {}, message), confirm, danger })) !== null;
}

/** True while a dialog is open (keyboard shortcuts stay out of its way). */
export function dialogOpen() {
  return Boolean(document.querySelector('dialog[open]'));
}
