// One stream of the master's events (`/v1/events`: Marathon's events and Plinth's own, such as `agent_lost_event`; Server-Sent Events) for the whole
// page. It is read with `request` (a fetch) rather than EventSource, so it carries the
// same credentials as every other call. Views subscribe to event types and refetch only
// what an event names; after a reconnect they get 'resync' (events may have been missed)
// and refetch what they show.

import { connection, request } from './api.js';

const handlers = new Map();
let started = false;

/** fn(payload, type) for events of `type` ('*' for all, 'resync' after a reconnect). */
export function on(type, fn) {
  if (!handlers.has(type)) handlers.set(type, new Set());
  handlers.get(type).add(fn);
  return () => handlers.get(type)?.delete(fn);
}

function emit(type, payload) {
  for (const key of [type, '*']) {
    for (const fn of handlers.get(key) ?? []) {
      try {
        fn(payload, type);
      } catch (error) {
        console.error(`event handler for ${type} failed`, error);
      }
    }
  }
}

/** Starts reading the stream (once); it reconnects by itself. */
export function start() {
  if (started) return;
  started = true;
  run();
}

async function run() {
  let attached = false;
  for (;;) {
    await connection.whenOnline();
    try {
      const response = await request('GET', '/v1/events', { raw: true, accept: 'text/event-stream' });
      if (attached) emit('resync', {});
      attached = true;
      await read(response.body);
    } catch (error) {
      if (error?.status === 401) return; // no credentials given: nothing to stream
    }
    // The stream ended: the master went away (or restarted). Find out which.
    await connection.check();
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Parses `event:`/`data:` blocks off the byte stream until it ends. */
async function read(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let type = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r?\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer[newline] === '\r' ? 2 : 1));
      if (line === '') {
        if (data.length) dispatch(type || 'message', data.join('\n'));
        type = '';
        data = [];
      } else if (line.startsWith(':')) {
        // a keep-alive comment
      } else {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const content = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') type = content;
        else if (field === 'data') data.push(content);
      }
    }
  }
}

function dispatch(type, text) {
  let payload;
  try {
    payload = JSON.parse(text);
  } catch {
    payload = { text };
  }
  emit(payload?.eventType ?? type, payload);
}

/**
 * A refetch that runs at most once per `ms` for each key, however many events ask:
 * `const refetchApp = coalesce((id) => ..., 250); refetchApp('/hello')`.
 */
export function coalesce(fn, ms = 250) {
  const timers = new Map();
  const call = (key = '') => {
    if (timers.has(key)) return;
    timers.set(
      key,
      setTimeout(() => {
        timers.delete(key);
        fn(key);
      }, ms),
    );
  };
  call.cancel = () => {
    for (const timer of timers.values()) clearTimeout(timer);
    timers.clear();
  };
  return call;
}
