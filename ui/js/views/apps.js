// #/apps: apps and groups as a tree with status, instances, health, CPUs and memory;
// search and status filters (kept in the URL: #/apps?q=web&status=Waiting). Loaded once,
// then kept current from the event stream: an event refetches only the apps it names
// (GET /v2/apps/{id}), and the queue (for Waiting/Delayed).

import { appPath, get, getQueue } from '../api.js';
import { appHref, errorBox, fill, h, mib, num } from '../dom.js';
import { coalesce, on } from '../events.js';
import { appStatus, appsOf, buildTree, healthOf, matchesText, normalizeId, queueByApp, STATUSES } from '../model.js';
import { badge, empty, healthBar } from '../widgets.js';
import { watchQueue } from './queue.js';

const collapsed = new Set(); // group ids, kept while the page lives

export function mount(root) {
  const apps = new Map();
  let queue = new Map();
  let loaded = false;
  let loadError = null;
  let filter = readFilter();

  const search = h('input', {
    type: 'search',
    placeholder: 'Search by id, command, image or label',
    'aria-label': 'Search applications',
    value: filter.q,
    oninput: () => {
      filter.q = search.value;
      writeFilter(filter);
      render();
    },
  });
  const chips = h('div', { class: 'chips', role: 'group', 'aria-label': 'Filter by status' });
  const body = h('div', { class: 'apps-body' });
  fill(
    root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Applications')),
    h('div', { class: 'toolbar' }, search, chips),
    body,
  );

  const statusOf = (app) => appStatus(app, queue.get(app.id));

  // A live update re-renders the rows: keep the keyboard on the row it was on.
  function render() {
    const focused = document.activeElement?.closest?.('[data-row]');
    const selector = focused?.dataset.app
      ? `[data-app="${CSS.escape(focused.dataset.app)}"]`
      : focused?.dataset.group
        ? `[data-group="${CSS.escape(focused.dataset.group)}"]`
        : null;
    renderRows();
    if (selector && !body.contains(document.activeElement)) body.querySelector(selector)?.focus({ preventScroll: true });
  }

  function renderRows() {
    if (loadError && !loaded) {
      fill(body, errorBox(loadError));
      return;
    }
    if (!loaded) {
      fill(body, h('p', { class: 'muted' }, 'Loading…'));
      return;
    }
    const all = [...apps.values()];
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const app of all) counts[statusOf(app)] += 1;
    fill(
      chips,
      ['All', ...STATUSES].map((s) =>
        h(
          'button',
          {
            type: 'button',
            class: ['chip', (filter.status || 'All') === s ? 'active' : null],
            'aria-pressed': String((filter.status || 'All') === s),
            onclick: () => {
              filter.status = s === 'All' ? '' : s;
              writeFilter(filter);
              render();
            },
          },
          s,
          h('span', { class: 'chip-count' }, s === 'All' ? all.length : counts[s]),
        ),
      ),
    );
    if (!all.length) {
      fill(body, empty('No applications yet.', h('a', { class: 'button primary', href: '#/create' }, 'Create your first application')));
      return;
    }
    const shown = all.filter((a) => matchesText(a, filter.q) && (!filter.status || statusOf(a) === filter.status));
    if (!shown.length) {
      fill(body, empty('No application matches this filter.', h('button', { type: 'button', onclick: clearFilter }, 'Clear the filter')));
      return;
    }
    const tree = buildTree(shown, statusOf);
    const filtering = Boolean(filter.q || filter.status);
    const rows = [];
    const walk = (group, depth) => {
      for (const child of group.children) {
        if (child.kind === 'group') {
          const open = filtering || !collapsed.has(child.id);
          rows.push(groupRow(child, depth, open, () => toggle(child.id)));
          if (open) walk(child, depth + 1);
        } else {
          rows.push(appRow(child, depth));
        }
      }
    };
    walk(tree, 0);
    fill(
      body,
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'apps' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              h('th', { scope: 'col' }, 'Name'),
              h('th', { scope: 'col' }, 'Status'),
              h('th', { scope: 'col', class: 'num' }, 'Instances'),
              h('th', { scope: 'col', class: 'health-col opt' }, 'Health'),
              h('th', { scope: 'col', class: 'num opt' }, 'CPUs'),
              h('th', { scope: 'col', class: 'num opt' }, 'Memory'),
            ),
          ),
          h('tbody', {}, rows),
          h(
            'tfoot',
            {},
            h(
              'tr',
              {},
              h('td', { colspan: 2 }, `${tree.totals.apps} application${tree.totals.apps === 1 ? '' : 's'}`),
              h('td', { class: 'num' }, `${tree.totals.running} / ${tree.totals.instances}`),
              h('td', { class: 'opt' }),
              h('td', { class: 'num opt' }, num(tree.totals.cpus)),
              h('td', { class: 'num opt' }, mib(tree.totals.mem)),
            ),
          ),
        ),
      ),
      h(
        'div',
        { class: 'legend', 'aria-hidden': 'true' },
        h('span', { class: 'healthy' }, 'healthy'),
        h('span', { class: 'unhealthy' }, 'unhealthy'),
        h('span', { class: 'unknown' }, 'running, health unknown'),
        h('span', { class: 'staged' }, 'staged'),
        h('span', { class: 'missing' }, 'not running'),
      ),
    );
  }

  function toggle(id) {
    if (collapsed.has(id)) collapsed.delete(id);
    else collapsed.add(id);
    render();
    root.querySelector(`[data-group="${CSS.escape(id)}"]`)?.focus();
  }

  function clearFilter() {
    filter = { q: '', status: '' };
    search.value = '';
    writeFilter(filter);
    render();
  }

  async function loadAll() {
    try {
      const [list, q] = await Promise.all([get('/v2/apps?embed=apps.counts&embed=apps.deployments'), getQueue()]);
      apps.clear();
      for (const app of list.apps ?? []) apps.set(app.id, app);
      queue = queueByApp(q);
      loaded = true;
      loadError = null;
    } catch (error) {
      loadError = error;
    }
    render();
  }

  // One app changed: fetch it alone (a 404 means it is gone).
  const refetchApp = coalesce(async (id) => {
    try {
      const answer = await get(appPath(id, '?embed=app.counts&embed=app.deployments'));
      if (answer?.app) apps.set(answer.app.id, answer.app);
    } catch (error) {
      if (error.status === 404) apps.delete(id);
      else return;
    }
    render();
  }, 250);

  const queueWatch = watchQueue((q) => {
    queue = queueByApp(q);
    if (loaded) render();
  });

  const offs = [
    on('*', (event, type) => {
      if (type === 'resync') {
        loadAll();
        return;
      }
      if (type === 'app_terminated_event') {
        apps.delete(normalizeId(event.appId));
        render();
      }
      const ids = appsOf(event);
      for (const id of ids) if (type !== 'app_terminated_event') refetchApp(id);
      if (ids.length) queueWatch.refresh();
    }),
  ];

  render();
  loadAll();

  return {
    update() {
      filter = readFilter();
      search.value = filter.q;
      render();
    },
    unmount() {
      offs.forEach((off) => off());
      refetchApp.cancel();
      queueWatch.stop();
    },
  };
}

function groupRow(group, depth, open, toggle) {
  const t = group.totals;
  return h(
    'tr',
    {
      class: 'group-row',
      tabindex: 0,
      'data-row': '',
      'data-group': group.id,
      'aria-expanded': String(open),
      onclick: toggle,
      onkeydown: (event) => {
        if (event.key === 'Enter' || event.key === ' ' || (event.key === 'ArrowLeft' && open) || (event.key === 'ArrowRight' && !open)) {
          event.preventDefault();
          toggle();
        }
      },
    },
    h(
      'td',
      { class: 'name' },
      h(
        'div',
        { class: 'name-cell', style: { paddingLeft: `${depth * 1.25}rem` } },
        h('span', { class: 'twisty', 'aria-hidden': 'true' }, open ? '▾' : '▸'),
        h('div', {}, h('span', { class: 'group-name' }, `${group.name}/`), h('span', { class: 'muted small' }, ` ${t.apps} app${t.apps === 1 ? '' : 's'}`)),
      ),
    ),
    h('td', {}),
    h('td', { class: 'num' }, `${t.running} / ${t.instances}`),
    h('td', { class: 'health-col opt' }, healthBar(t.health)),
    h('td', { class: 'num opt' }, num(t.cpus)),
    h('td', { class: 'num opt' }, mib(t.mem)),
  );
}

function appRow(leaf, depth) {
  const app = leaf.app;
  const href = appHref(app.id);
  const image = app.container?.docker?.image;
  return h(
    'tr',
    { tabindex: 0, 'data-row': '', 'data-href': href, 'data-app': app.id, onclick: (event) => {
      if (!event.target.closest('a')) location.hash = href;
    } },
    h(
      'td',
      { class: 'name' },
      h(
        'div',
        { class: 'name-cell', style: { paddingLeft: `${depth * 1.25}rem` } },
        h('span', { class: 'twisty', 'aria-hidden': 'true' }),
        h(
          'div',
          { class: 'name-text' },
          h('a', { href, class: 'app-link', tabindex: -1 }, leaf.name),
          h('div', { class: 'sub muted small' }, image ? `image ${image}` : app.cmd ?? (app.args ?? []).join(' ')),
          h('div', { class: 'phone-only' }, healthBar(healthOf(app))),
        ),
      ),
    ),
    h('td', {}, badge(leaf.status)),
    h('td', { class: 'num' }, `${app.tasksRunning ?? 0} / ${app.instances}`),
    h('td', { class: 'health-col opt' }, healthBar(healthOf(app))),
    h('td', { class: 'num opt', title: `${num(app.cpus)} × ${app.instances}` }, num((app.cpus ?? 0) * (app.instances ?? 0))),
    h('td', { class: 'num opt', title: `${mib(app.mem)} × ${app.instances}` }, mib((app.mem ?? 0) * (app.instances ?? 0))),
  );
}

function readFilter() {
  const query = new URLSearchParams(location.hash.split('?')[1] ?? '');
  return { q: query.get('q') ?? '', status: query.get('status') ?? '' };
}

function writeFilter(filter) {
  const query = new URLSearchParams();
  if (filter.q) query.set('q', filter.q);
  if (filter.status) query.set('status', filter.status);
  const text = query.toString();
  history.replaceState(null, '', `#/apps${text ? `?${text}` : ''}`);
}
