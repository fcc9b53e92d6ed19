// Every call to the master goes through `request`: JSON in and out, Marathon's error
// bodies as ApiError, credentials when the API asks for them (HTTP basic, kept in
// sessionStorage, asked for once on a 401 and the call retried), and the connection
// state: a call that cannot reach the master marks it gone, and a probe of /ping every
// 2 s notices when it is back.

const AUTH_KEY = 'plinth.auth';
const PROBE_INTERVAL_MS = 2000;

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
    this.details = Array.isArray(body?.details) ? body.details : [];
  }
}

// ---------------------------------------------------------------------------------------
// Connection state

const listeners = new Set();
let online = true;
let downSince = null;
let lastError = '';
let probing = false;
let waiters = [];

export const connection = {
  get online() {
    return online;
  },
  get downSince() {
    return downSince;
  },
  get lastError() {
    return lastError;
  },
  /** fn(online) on every change. */
  subscribe(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  },
  /** Resolves once the master answers again (at once when it does). */
  whenOnline() {
    return online ? Promise.resolve() : new Promise((resolve) => waiters.push(resolve));
  },
  /** Asks /ping now; marks the master gone when it does not answer. */
  async check() {
    try {
      await request('GET', '/ping', { accept: 'text/plain' });
      return true;
    } catch {
      return false;
    }
  },
};

function markDown(error) {
  lastError = error?.message ?? String(error);
  if (!online) return;
  online = false;
  downSince = new Date();
  for (const fn of listeners) fn(false);
  probe();
}

function markUp() {
  if (online) return;
  online = true;
  downSince = null;
  for (const fn of listeners) fn(true);
  const resolve = waiters;
  waiters = [];
  for (const fn of resolve) fn();
}

async function probe() {
  if (probing) return;
  probing = true;
  while (!online) {
    await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS));
    await connection.check();
  }
  probing = false;
}

// ---------------------------------------------------------------------------------------
// Credentials

let askCredentials = async () => null;
let pendingLogin = null;

/** The UI's login form: fn(message) resolves to {user, password} or null. */
export function setCredentialsPrompt(fn) {
  askCredentials = fn;
}

function storedAuth() {
  try {
    return sessionStorage.getItem(AUTH_KEY);
  } catch {
    return null;
  }
}

function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return btoa(String.fromCharCode(...bytes));
}

async function login(message) {
  pendingLogin ??= (async () => {
    const answer = await askCredentials(message);
    if (!answer) return false;
    sessionStorage.setItem(AUTH_KEY, basic(answer.user, answer.password));
    return true;
  })().finally(() => {
    pendingLogin = null;
  });
  return pendingLogin;
}

export function forgetCredentials() {
  sessionStorage.removeItem(AUTH_KEY);
}

export function hasCredentials() {
  return Boolean(storedAuth());
}

// ---------------------------------------------------------------------------------------
// Requests

/**
 * `request(method, path, {body, signal, raw, accept})`: the parsed JSON answer (text for
 * non-JSON answers, null when empty), or with `raw` the Response itself (for streams).
 * Throws ApiError: status 0 when the master cannot be reached, else its status with
 * Marathon's `message` and `details`.
 */
export async function request(method, path, options = {}) {
  const { body, signal, raw = false, accept = 'application/json' } = options;
  for (let attempt = 0; ; attempt += 1) {
    // X-Requested-With: the master then leaves the challenge out of a 401, so the browser
    // shows this UI's own form instead of its dialog (see master/src/api/auth.rs).
    const headers = { Accept: accept, 'X-Requested-With': 'plinth-ui' };
    const auth = storedAuth();
    if (auth) headers.Authorization = `Basic ${auth}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: 'no-store',
        credentials: 'same-origin',
      });
    } catch (error) {
      if (error?.name === 'AbortError') throw error;
      markDown(error);
      throw new ApiError(0, `no answer from ${location.host}: ${error?.message ?? error}`);
    }
    markUp();
    if (response.status === 401 && attempt < 5) {
      const answer = await parse(response);
      const message = answer?.message ?? (auth ? 'Those credentials were refused.' : 'The master wants credentials.');
      if (await login(message)) continue;
      throw new ApiError(401, message, answer);
    }
    if (raw) {
      if (!response.ok) throw errorFrom(response, await parse(response));
      return response;
    }
    const answer = await parse(response);
    if (!response.ok) throw errorFrom(response, answer);
    return answer;
  }
}

async function parse(response) {
  const text = await response.text().catch(() => '');
  if (!text) return null;
  const type = response.headers.get('content-type') ?? '';
  if (type.includes('json')) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

function errorFrom(response, answer) {
  const message =
    (answer && typeof answer === 'object' && answer.message) ||
    (typeof answer === 'string' && answer.trim()) ||
    response.statusText ||
    'The request failed';
  return new ApiError(response.status, message, typeof answer === 'object' ? answer : null);
}

/** GET as JSON. */
export const get = (path, options) => request('GET', path, options);

/** An app's API path: `/prod/web` -> `/v2/apps/prod/web` (each segment encoded). */
export function appPath(id, suffix = '') {
  const segments = String(id).replace(/^\/+/, '').split('/').map(encodeURIComponent);
  return `/v2/apps/${segments.join('/')}${suffix}`;
}

/**
 * The queue with Plinth's reasons in words (`/v1/queue`: Marathon's `/v2/queue` carries
 * only what strict Marathon clients accept). Entries get `app.id` as `/v2/queue` has it.
 */
export async function getQueue() {
  const queue = await get('/v1/queue');
  for (const entry of queue?.queue ?? []) entry.app ??= { id: entry.appId };
  return queue;
}

/**
 * Deployments with why they wait (`/v1/deployments`); the blocked reason is put on the
 * current actions, where the views show it.
 */
export async function getDeployments() {
  const deployments = await get('/v1/deployments');
  for (const d of deployments ?? []) {
    if (d.blockedReason) for (const action of d.currentActions ?? []) action.blockedReason ??= d.blockedReason;
  }
  return deployments;
}
