// A task's stdout or stderr, read through the master (`/v1/tasks/{id}/logs`, which asks
// the task's agent: the page cannot reach agents itself), optionally followed as it grows.

import { request } from '../api.js';
import { errorText, fill, h } from '../dom.js';

/** Text kept on screen; older output is dropped from the top. */
const MAX_CHARS = 512 * 1024;

/** {el, stop()}: the viewer for one task. */
export function logViewer(taskId, { onClose } = {}) {
  let stream = 'stdout';
  let follow = true;
  let controller = null;
  let generation = 0;
  const output = h('pre', { class: 'log-output', tabindex: 0, 'aria-label': `Output of task ${taskId}`, 'aria-live': 'off' });
  const state = h('span', { class: 'muted small log-state' });
  const streamButtons = ['stdout', 'stderr'].map((name) =>
    h('button', { type: 'button', class: 'chip', 'aria-pressed': String(name === stream), onclick: () => switchTo(name), dataset: { stream: name } }, name),
  );
  const followBox = h('input', {
    type: 'checkbox',
    checked: follow,
    onchange: () => {
      follow = followBox.checked;
      load();
    },
  });
  const el = h(
    'section',
    { class: 'panel logs', 'aria-label': `Logs of ${taskId}` },
    h(
      'div',
      { class: 'logs-head' },
      h('h2', {}, 'Logs ', h('code', { class: 'small' }, taskId)),
      h('div', { class: 'chips' }, streamButtons),
      h('label', { class: 'inline' }, followBox, ' Follow'),
      state,
      onClose ? h('button', { type: 'button', class: 'icon', title: 'Close the logs', 'aria-label': 'Close the logs', onclick: onClose }, '×') : null,
    ),
    output,
  );

  function switchTo(name) {
    stream = name;
    for (const button of streamButtons) button.setAttribute('aria-pressed', String(button.dataset.stream === name));
    load();
  }

  function show(text, append) {
    const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 8;
    let content = append ? output.textContent + text : text;
    if (content.length > MAX_CHARS) content = content.slice(content.length - MAX_CHARS);
    output.textContent = content;
    if (atBottom || !append) output.scrollTop = output.scrollHeight;
  }

  async function load() {
    controller?.abort();
    controller = new AbortController();
    const mine = ++generation;
    const signal = controller.signal;
    show('', false);
    fill(state, follow ? 'following…' : 'loading…');
    let offset = 0;
    try {
      // What is there, page by page (answers are capped), then the rest as it comes.
      for (;;) {
        const response = await request('GET', logsUrl(taskId, stream, offset, false), { raw: true, accept: 'text/plain', signal });
        const text = await response.text();
        const next = Number(response.headers.get('x-plinth-log-offset'));
        if (mine !== generation) return;
        show(text, true);
        if (!text || !Number.isFinite(next) || next <= offset) break;
        offset = next;
      }
      if (!follow) {
        fill(state, output.textContent ? '' : `(${stream} is empty)`);
        return;
      }
      const response = await request('GET', logsUrl(taskId, stream, offset, true), { raw: true, accept: 'text/plain', signal });
      fill(state, 'following');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (mine !== generation) return;
        if (done) break;
        show(value, true);
      }
      fill(state, 'the task has ended: this is all of it');
    } catch (error) {
      if (error?.name === 'AbortError' || mine !== generation) return;
      fill(state, h('span', { class: 'error-text' }, errorText(error)));
    }
  }

  load();
  return {
    el,
    stop() {
      generation += 1;
      controller?.abort();
    },
  };
}

function logsUrl(taskId, stream, offset, follow) {
  return `/v1/tasks/${encodeURIComponent(taskId)}/logs?stream=${stream}&offset=${offset}${follow ? '&follow=true' : ''}`;
}
