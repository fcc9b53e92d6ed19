// The page: hash routes to views, the header's counts, the banner that says when the
// master is gone (and when it is back), the login form for APIs that want credentials,
// and keyboard shortcuts.
//
// Views are modules with `mount(root, route)` returning `{unmount(), update?(route)}`;
// they fetch what they show and subscribe to the events that change it.

import { connection, get, getDeployments, getQueue, setCredentialsPrompt } from './api.js';
import { dialogOpen, fill, h, modal } from './dom.js';
import { coalesce, on, start as startEvents } from './events.js';
import * as appsView from './views/apps.js';
import * as appView from './views/app.js';
import * as deploymentsView from './views/deployments.js';
import * as formView from './views/form.js';
import * as nodesView from './views/nodes.js';
import * as queueView from './views/queue.js';
import { parseRoute } from './model.js';

const main = document.getElementById('main');
const banner = document.getElementById('banner');

// ---------------------------------------------------------------------------------------
// Routes: #/apps, #/apps/<id>, #/create, #/edit/<id>, #/deployments, #/queue, #/nodes

const VIEWS = {
  apps: appsView,
  app: appView,
  create: formView,
  edit: formView,
  deployments: deploymentsView,
  queue: queueView,
  nodes: nodesView,
  missing: {
    mount(root, route) {
      fill(
        root,
        h('div', { class: 'empty' }, h('h1', {}, 'No such page'), h('p', {}, `Nothing lives at #${route.path}.`), h('a', { href: '#/apps' }, 'Go to the applications')),
      );
      return { unmount() {} };
    },
  },
};

const NAV_OF = { apps: 'apps', app: 'apps', create: 'apps', edit: 'apps', deployments: 'deployments', queue: 'queue', nodes: 'nodes' };

let current = null;

function route() {
  if (!location.hash || location.hash === '#' || location.hash === '#/') {
    history.replaceState(null, '', '#/apps');
  }
  const next = parseRoute(location.hash);
  for (const link of document.querySelectorAll('.main-nav a')) {
    link.classList.toggle('active', link.dataset.view === NAV_OF[next.view]);
    link.toggleAttribute('aria-current', link.dataset.view === NAV_OF[next.view]);
  }
  // Same view and same subject: let it apply the new query (tab, filter) in place.
  if (current && current.route.view === next.view && current.route.id === next.id && current.instance.update) {
    current.route = next;
    current.instance.update(next);
    return;
  }
  current?.instance.unmount();
  main.replaceChildren();
  const instance = VIEWS[next.view].mount(main, next);
  current = { route: next, instance };
  document.title = titleOf(next);
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function titleOf(r) {
  const names = { apps: 'Applications', create: 'Create application', deployments: 'Deployments', queue: 'Queue', nodes: 'Nodes', missing: 'Not found' };
  if (r.view === 'app') return `${r.id} · Plinth`;
  if (r.view === 'edit') return `Edit ${r.id} · Plinth`;
  return `${names[r.view]} · Plinth`;
}

// ---------------------------------------------------------------------------------------
// Header counts: running deployments and waiting apps

const countDeployments = document.getElementById('count-deployments');
const countQueue = document.getElementById('count-queue');

const refreshCounts = coalesce(async () => {
  try {
    const [deployments, queue] = await Promise.all([getDeployments(), getQueue()]);
    showCount(countDeployments, Array.isArray(deployments) ? deployments.length : 0);
    showCount(countQueue, queue?.queue?.length ?? 0);
  } catch {
    // the banner says why
  }
}, 1000);

function showCount(el, n) {
  el.textContent = n ? String(n) : '';
  el.title = n ? String(n) : '';
}

// ---------------------------------------------------------------------------------------
// The banner: the master is gone / back

const live = document.getElementById('live');
let bannerTimer;

function showConnection(isOnline) {
  clearTimeout(bannerTimer);
  live.classList.toggle('off', !isOnline);
  live.textContent = isOnline ? 'live' : 'offline';
  if (!isOnline) {
    const since = connection.downSince?.toLocaleTimeString() ?? '';
    banner.className = 'banner down';
    fill(
      banner,
      h('strong', {}, 'The master is not answering.'),
      ` Lost contact with ${location.host} at ${since}: it is stopped, restarting or out of reach. `,
      'Retrying every 2 seconds; what you see here may be out of date.',
    );
    banner.hidden = false;
    document.body.classList.add('offline');
  } else {
    banner.className = 'banner up';
    fill(banner, h('strong', {}, 'Connected again.'), ` The master at ${location.host} answers; the page is up to date.`);
    banner.hidden = false;
    document.body.classList.remove('offline');
    bannerTimer = setTimeout(() => {
      banner.hidden = true;
    }, 4000);
    refreshCounts();
  }
}

// ---------------------------------------------------------------------------------------
// Credentials (only when the API answers 401)

setCredentialsPrompt(async (message) => {
  const values = await modal({
    title: 'Sign in to the master',
    body: [
      h('p', {}, message),
      h('label', {}, 'User', h('input', { name: 'user', autocomplete: 'username', required: true, id: 'login-user' })),
      h('label', {}, 'Password', h('input', { name: 'password', type: 'password', autocomplete: 'current-password', id: 'login-password' })),
      h('p', { class: 'muted small' }, 'Kept for this browser tab only (session storage), sent as HTTP basic authentication.'),
    ],
    confirm: 'Sign in',
  });
  return values ? { user: values.user ?? '', password: values.password ?? '' } : null;
});

// ---------------------------------------------------------------------------------------
// Keyboard: g a / g d / g q / g n, c (create), / (search), j k (rows), ? (help)

const SHORTCUTS = [
  ['g a', 'Applications'],
  ['g d', 'Deployments'],
  ['g q', 'Queue'],
  ['g n', 'Nodes'],
  ['c', 'Create an application'],
  ['/', 'Search the applications'],
  ['j / k', 'Next / previous row'],
  ['Enter', 'Open the row'],
  ['x', 'Select the task (on its row)'],
  ['l', 'The task’s logs (on its row)'],
  ['Esc', 'Close a dialog'],
  ['?', 'This help'],
];

function showShortcuts() {
  modal({
    title: 'Keyboard shortcuts',
    body: h('dl', { class: 'shortcuts' }, SHORTCUTS.map(([keys, what]) => [h('dt', {}, keys.split(' ').map((k) => (k === '/' && keys !== '/' ? ' / ' : h('kbd', {}, k)))), h('dd', {}, what)])),
    confirm: 'Close',
  });
}

let pendingG = false;

function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
}

function moveRow(step) {
  const rows = [...main.querySelectorAll('[data-row]')].filter((r) => r.offsetParent !== null);
  if (!rows.length) return;
  const index = rows.indexOf(document.activeElement.closest?.('[data-row]'));
  const next = rows[Math.max(0, Math.min(rows.length - 1, index < 0 ? 0 : index + step))];
  next.focus();
}

document.addEventListener('keydown', (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || dialogOpen() || typing(event.target)) return;
  const key = event.key;
  if (pendingG) {
    pendingG = false;
    const link = document.querySelector(`.main-nav a[data-key="${key}"]`);
    if (link) {
      event.preventDefault();
      location.hash = link.getAttribute('href');
    }
    return;
  }
  if (key === 'g') {
    pendingG = true;
    setTimeout(() => (pendingG = false), 1500);
  } else if (key === 'c') {
    event.preventDefault();
    location.hash = '#/create';
  } else if (key === '/') {
    const search = main.querySelector('input[type=search]');
    if (search) {
      event.preventDefault();
      search.focus();
    }
  } else if (key === 'j' || key === 'ArrowDown') {
    if (key === 'ArrowDown' && !document.activeElement?.closest?.('[data-row]')) return;
    event.preventDefault();
    moveRow(1);
  } else if (key === 'k' || key === 'ArrowUp') {
    if (key === 'ArrowUp' && !document.activeElement?.closest?.('[data-row]')) return;
    event.preventDefault();
    moveRow(-1);
  } else if (key === 'Enter' && document.activeElement?.dataset?.href) {
    event.preventDefault();
    location.hash = document.activeElement.dataset.href;
  } else if (key === '?') {
    event.preventDefault();
    showShortcuts();
  }
});

// ---------------------------------------------------------------------------------------
// Start

document.getElementById('shortcuts-link').addEventListener('click', (event) => {
  event.preventDefault();
  showShortcuts();
});
window.addEventListener('hashchange', route);
connection.subscribe(showConnection);
for (const type of ['deployment_info', 'deployment_success', 'deployment_failed', 'deployment_step_success', 'status_update_event', 'app_terminated_event', 'api_post_event', 'resync']) {
  on(type, () => refreshCounts());
}
startEvents();
route();
refreshCounts();
document.documentElement.dataset.started = 'true';
get('/v1/info')
  .then((info) => {
    document.getElementById('about').textContent = `${info.name ?? 'plinth'} ${info.version ?? ''} · master ${info.leader ?? location.host}`;
  })
  .catch(() => {});
