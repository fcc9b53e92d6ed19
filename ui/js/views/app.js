// #/apps/<id>: one app. Its tasks (host:port links, state, health, version, started) with
// Kill and Kill & Scale for the selected ones, a task's logs, the last task failure; the
// actions Scale, Restart, Suspend, Destroy and Edit; its configuration; its versions with
// a diff between two and "apply this version"; and why it waits (the queue's decline
// reasons, the deployment's blocked reason). Events naming the app refetch it alone.

import { appPath, get, getDeployments, request } from '../api.js';
import { canonicalJson, changedKeys, diffLines, withContext } from '../diff.js';
import { appHref, confirmDialog, errorBox, errorText, fill, h, mib, modal, notify, num, timeEl } from '../dom.js';
import { coalesce, on } from '../events.js';
import { appStatus, appsOf, definitionOf, healthOf, imageOf, normalizeId, STATUS } from '../model.js';
import { badge, empty, healthBar, healthWords, panel, table, tabs } from '../widgets.js';
import { logViewer } from './logs.js';
import { resetDelayButton, watchQueue, whyWaiting } from './queue.js';

export function mount(root, route) {
  const id = normalizeId(route.id);
  const s = {
    route,
    app: null,
    gone: false,
    error: null,
    entry: null,
    deployments: [],
    versions: [],
    definitions: new Map(), // version -> definition
    selected: new Set(),
    diff: { from: null, to: null },
    logs: null, // {taskId, viewer}
    diffCache: null, // {key, slot}
  };

  const head = h('div', { class: 'app-head' });
  const why = h('div', { class: 'app-why' });
  const nav = h('div', {});
  const content = h('div', { class: 'app-content' });
  const logsSlot = h('div', {});
  fill(root, head, why, nav, content, logsSlot);

  // -------------------------------------------------------------------------------------
  // Loading

  async function loadApp() {
    try {
      const answer = await get(appPath(id));
      s.app = answer.app;
      s.gone = false;
      s.error = null;
      const live = new Set((s.app.tasks ?? []).map((t) => t.id));
      for (const taskId of s.selected) if (!live.has(taskId)) s.selected.delete(taskId);
    } catch (error) {
      if (error.status === 404) s.gone = true;
      else s.error = error;
    }
    render();
  }

  async function loadDeployments() {
    try {
      const all = await getDeployments();
      s.deployments = (Array.isArray(all) ? all : []).filter((d) => (d.affectedApps ?? []).map(normalizeId).includes(id));
      render();
    } catch {
      // shown by the banner
    }
  }

  async function loadVersions() {
    try {
      const answer = await get(appPath(id, '/versions'));
      s.versions = answer.versions ?? [];
      if (!s.versions.includes(s.diff.to)) s.diff.to = s.versions[0] ?? null;
      if (!s.versions.includes(s.diff.from)) s.diff.from = s.versions[1] ?? s.versions[0] ?? null;
      if (tab() === 'versions') render();
    } catch {
      // the app may be gone; loadApp says so
    }
  }

  async function definition(version) {
    if (!s.definitions.has(version)) {
      s.definitions.set(version, get(appPath(id, `/versions/${encodeURIComponent(version)}`)));
    }
    try {
      return await s.definitions.get(version);
    } catch (error) {
      s.definitions.delete(version);
      throw error;
    }
  }

  const refetch = coalesce(() => {
    loadApp();
    loadDeployments();
  }, 250);
  const refetchVersions = coalesce(loadVersions, 400);
  const queueWatch = watchQueue((queue) => {
    s.entry = (queue?.queue ?? []).find((e) => normalizeId(e.app?.id) === id) ?? null;
    // A waiting deployment's blocked reason changes with the same scheduling rounds.
    if (s.entry && s.deployments.length) loadDeployments();
    render();
  });

  const offs = [
    on('*', (event, type) => {
      if (type === 'resync') {
        refetch();
        refetchVersions();
        return;
      }
      if (!appsOf(event).includes(id)) return;
      if (type === 'app_terminated_event') {
        s.gone = true;
        render();
        return;
      }
      refetch();
      queueWatch.refresh();
      if (type === 'api_post_event' || type.startsWith('deployment_')) refetchVersions();
    }),
  ];

  // -------------------------------------------------------------------------------------
  // Actions

  /** Runs a change; a 409 because a deployment holds the app offers to force it. */
  async function act(what, change, after) {
    try {
      const result = await change(false);
      notify(`${what}: ${result?.deploymentId ? 'deploying' : 'done'}`);
      after?.(result);
    } catch (error) {
      if (error.status === 409 && error.body?.deployments) {
        const force = await confirmDialog(
          'A deployment holds this app',
          `${errorText(error)}. Force the change anyway? The running deployment is replaced.`,
          'Force',
          true,
        );
        if (!force) return;
        try {
          const result = await change(true);
          notify(`${what}: forced${result?.deploymentId ? ', deploying' : ''}`);
          after?.(result);
        } catch (again) {
          notify(errorText(again), 'error');
        }
      } else {
        notify(errorText(error), 'error');
      }
    }
  }

  const put = (body) => (force) => request('PUT', appPath(id, force ? '?force=true' : ''), { body });

  async function scale() {
    const values = await modal({
      title: `Scale ${id}`,
      body: [
        h('label', {}, 'Instances', h('input', { name: 'instances', type: 'number', min: 0, step: 1, value: String(s.app?.instances ?? 1), required: true, id: 'scale-instances' })),
        h('p', { class: 'muted small' }, 'New instances start where there is room; extra ones are killed, youngest first.'),
      ],
      confirm: 'Scale',
      focus: '#scale-instances',
    });
    if (!values) return;
    const instances = Number(values.instances);
    if (!Number.isInteger(instances) || instances < 0) {
      notify(`"${values.instances}" is not a number of instances (a whole number, 0 or more)`, 'error');
      return;
    }
    await act(`Scale to ${instances}`, put({ instances }), refetch);
  }

  async function restart() {
    if (!(await confirmDialog(`Restart ${id}?`, 'Every task is replaced by a new one, within the app’s upgrade strategy.', 'Restart'))) return;
    await act('Restart', (force) => request('POST', appPath(id, `/restart${force ? '?force=true' : ''}`)), refetch);
  }

  async function suspend() {
    if (!(await confirmDialog(`Suspend ${id}?`, 'The app is scaled to 0 instances: every task is killed, the configuration stays.', 'Suspend', true))) return;
    await act('Suspend', put({ instances: 0 }), refetch);
  }

  async function destroy() {
    if (!(await confirmDialog(`Destroy ${id}?`, 'Every task is killed and the app, with its versions, is removed. This cannot be undone.', 'Destroy', true))) return;
    try {
      await request('DELETE', appPath(id));
      notify(`${id} is being destroyed`);
      location.hash = '#/apps';
    } catch (error) {
      notify(errorText(error), 'error');
    }
  }

  async function kill(scaleDown) {
    const ids = [...s.selected];
    if (!ids.length) return;
    const what = `${ids.length} task${ids.length === 1 ? '' : 's'}`;
    const message = scaleDown
      ? `${what} will be killed and the app scaled down by ${ids.length}: they are not replaced.`
      : `${what} will be killed; the app starts replacements.`;
    if (!(await confirmDialog(scaleDown ? 'Kill and scale?' : 'Kill tasks?', message, scaleDown ? 'Kill & Scale' : 'Kill', true))) return;
    try {
      await request('POST', `/v2/tasks/delete${scaleDown ? '?scale=true' : ''}`, { body: { ids } });
      notify(scaleDown ? `Killed ${what} and scaled down` : `Killed ${what}`);
      s.selected.clear();
      refetch();
    } catch (error) {
      notify(errorText(error), 'error');
    }
  }

  async function applyVersion(version) {
    if (!(await confirmDialog('Apply this version?', `${id} is deployed again with its configuration of ${new Date(version).toLocaleString()}.`, 'Apply'))) return;
    await act('Apply version', put({ version }), () => {
      refetch();
      refetchVersions();
    });
  }

  async function cancelDeployment(deployment, force) {
    const question = force
      ? ['Force stop the deployment?', 'The deployment is dropped where it stands; nothing is rolled back.']
      : ['Roll the deployment back?', 'A new deployment returns the app to its previous configuration.'];
    if (!(await confirmDialog(question[0], question[1], force ? 'Force stop' : 'Roll back', true))) return;
    try {
      await request('DELETE', `/v2/deployments/${encodeURIComponent(deployment.id)}${force ? '?force=true' : ''}`);
      notify(force ? 'Deployment stopped' : 'Rolling back');
      refetch();
    } catch (error) {
      notify(errorText(error), 'error');
    }
  }

  // -------------------------------------------------------------------------------------
  // Rendering

  const tab = () => s.route.query.tab || 'tasks';
  const tabHref = (name) => `${appHref(id)}?tab=${name}`;

  function render() {
    const focusedKey = document.activeElement?.dataset?.key;
    renderHead();
    renderWhy();
    renderContent();
    renderLogs();
    if (focusedKey) root.querySelector(`[data-key="${CSS.escape(focusedKey)}"]`)?.focus();
  }

  function crumbs() {
    const parts = id.split('/').filter(Boolean);
    const links = [h('a', { href: '#/apps' }, 'Applications')];
    for (let i = 0; i < parts.length - 1; i += 1) links.push(' / ', h('a', { href: `#/apps?q=${encodeURIComponent(`/${parts.slice(0, i + 1).join('/')}/`)}` }, parts[i]));
    return h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, links);
  }

  function renderHead() {
    const app = s.app;
    if (!app) {
      fill(
        head,
        crumbs(),
        h('h1', {}, id),
        s.gone ? empty(`There is no app ${id} (any more).`, h('a', { class: 'button', href: '#/apps' }, 'Back to the applications')) : null,
        s.error ? errorBox(s.error) : null,
        !s.gone && !s.error ? h('p', { class: 'muted' }, 'Loading…') : null,
      );
      return;
    }
    const status = appStatus(app, s.entry);
    const what = imageOf(app) ? h('span', {}, 'image ', h('code', {}, imageOf(app))) : h('code', {}, app.cmd ?? (app.args ?? []).join(' '));
    fill(
      head,
      crumbs(),
      h(
        'div',
        { class: 'title-row' },
        h('h1', {}, id),
        badge(status),
        s.gone ? badge('Destroyed') : null,
      ),
      h('p', { class: 'app-what' }, what),
      h(
        'div',
        { class: 'facts' },
        fact('Instances', `${app.tasksRunning ?? 0} running of ${app.instances}`),
        fact('Health', [healthBar(healthOf(app)), h('div', { class: 'health-words' }, healthWords(healthOf(app), (app.healthChecks ?? []).length > 0))]),
        fact('Per instance', `${num(app.cpus)} CPU · ${mib(app.mem)}${app.disk ? ` · ${mib(app.disk)} disk` : ''}`),
        fact('Version', timeEl(app.version)),
      ),
      h(
        'div',
        { class: 'actions', role: 'toolbar', 'aria-label': 'App actions' },
        h('button', { type: 'button', class: 'primary', onclick: scale }, 'Scale'),
        h('button', { type: 'button', onclick: restart }, 'Restart'),
        h('button', { type: 'button', onclick: suspend, disabled: app.instances === 0 }, 'Suspend'),
        h('a', { class: 'button', href: `#/edit/${id.replace(/^\//, '')}` }, 'Edit'),
        h('button', { type: 'button', class: 'danger', onclick: destroy }, 'Destroy'),
      ),
    );
  }

  function renderWhy() {
    const parts = [];
    const waiting = s.entry && (appStatus(s.app ?? {}, s.entry) === STATUS.WAITING || appStatus(s.app ?? {}, s.entry) === STATUS.DELAYED);
    if (waiting) {
      parts.push(
        h(
          'section',
          { class: 'panel waiting' },
          h('h2', {}, 'Why it waits'),
          h('p', { class: 'muted small' }, `${s.entry.count} instance${s.entry.count === 1 ? '' : 's'} to launch, waiting since `, timeEl(s.entry.since), '.'),
          whyWaiting(s.entry),
          s.entry.delay?.overdue === false ? resetDelayButton(id) : null,
        ),
      );
    }
    for (const d of s.deployments) {
      const blocked = (d.currentActions ?? []).map((a) => a.blockedReason).filter(Boolean);
      parts.push(
        h(
          'section',
          { class: ['panel', 'deployment-panel', blocked.length ? 'blocked' : null] },
          h('h2', {}, 'Deploying'),
          h(
            'p',
            {},
            (d.currentActions ?? []).map((a) => a.action).join(', ') || 'working',
            ` — step ${d.currentStep ?? 1} of ${d.totalSteps ?? (d.steps ?? []).length} · `,
            h('a', { href: '#/deployments' }, h('code', { class: 'small' }, d.id)),
          ),
          blocked.length ? h('p', { class: 'blocked-reason' }, h('strong', {}, 'Blocked: '), blocked.join('; ')) : null,
          h(
            'div',
            { class: 'actions' },
            h('button', { type: 'button', onclick: () => cancelDeployment(d, false) }, 'Roll back'),
            h('button', { type: 'button', class: 'danger', onclick: () => cancelDeployment(d, true) }, 'Force stop'),
          ),
        ),
      );
    }
    const failure = s.app?.lastTaskFailure;
    if (failure) {
      parts.push(
        h(
          'section',
          { class: 'panel failure' },
          h('h2', {}, 'Last task failure'),
          h(
            'p',
            {},
            h('span', { class: 'badge status-failed' }, prettyState(failure.state)),
            ' ',
            failure.message || 'no message',
            h('span', { class: 'muted small' }, ' · ', failure.host ?? '', ' · ', timeEl(failure.timestamp), failure.taskId ? ` · ${failure.taskId}` : ''),
          ),
        ),
      );
    }
    fill(why, parts);
  }

  function renderContent() {
    if (!s.app) {
      fill(nav);
      fill(content);
      return;
    }
    const current = tab();
    fill(
      nav,
      tabs(
        [
          { id: 'tasks', label: `Tasks (${(s.app.tasks ?? []).length})`, href: tabHref('tasks') },
          { id: 'configuration', label: 'Configuration', href: tabHref('configuration') },
          { id: 'versions', label: `Versions${s.versions.length ? ` (${s.versions.length})` : ''}`, href: tabHref('versions') },
        ],
        current,
      ),
    );
    if (current === 'configuration') fill(content, configuration(s.app));
    else if (current === 'versions') fill(content, versions());
    else fill(content, tasksTable());
  }

  function tasksTable() {
    const app = s.app;
    const tasks = [...(app.tasks ?? [])].sort((a, b) => String(a.stagedAt).localeCompare(String(b.stagedAt)));
    const configVersion = app.versionInfo?.lastConfigChangeAt ?? app.version;
    const count = s.selected.size;
    const all = h('input', {
      type: 'checkbox',
      'aria-label': 'Select every task',
      checked: tasks.length > 0 && count === tasks.length,
      indeterminate: count > 0 && count < tasks.length,
      onchange: (event) => {
        s.selected = new Set(event.target.checked ? tasks.map((t) => t.id) : []);
        render();
      },
    });
    const toolbar = h(
      'div',
      { class: 'actions task-actions', role: 'toolbar', 'aria-label': 'Task actions' },
      h('span', { class: 'muted small' }, count ? `${count} selected` : 'Select tasks to kill them'),
      h('button', { type: 'button', disabled: !count, onclick: () => kill(false) }, 'Kill'),
      h('button', { type: 'button', class: 'danger', disabled: !count, onclick: () => kill(true) }, 'Kill & Scale'),
    );
    if (!tasks.length) {
      return [toolbar, empty(app.instances === 0 ? 'Suspended: no tasks run (scale up to start some).' : 'No tasks yet.')];
    }
    const rows = tasks.map((task) => {
      const checked = s.selected.has(task.id);
      const toggle = () => {
        if (s.selected.has(task.id)) s.selected.delete(task.id);
        else s.selected.add(task.id);
        render();
      };
      const old = configVersion && task.version && task.version < configVersion;
      return h(
        'tr',
        {
          tabindex: 0,
          'data-row': '',
          'data-key': `task:${task.id}`,
          'data-task': task.id,
          class: checked ? 'selected' : null,
          onkeydown: (event) => {
            if (event.key === 'x' || event.key === ' ') {
              event.preventDefault();
              toggle();
            } else if (event.key === 'l') {
              openLogs(task.id);
            }
          },
        },
        h('td', { class: 'check' }, h('input', { type: 'checkbox', checked, 'aria-label': `Select ${task.id}`, onchange: toggle })),
        h('td', { class: 'task-id' }, h('code', { title: task.id }, task.id)),
        h('td', {}, addresses(app, task)),
        h('td', {}, h('span', { class: ['state', `state-${String(task.state).toLowerCase()}`] }, prettyState(task.state)), task.message && task.state !== 'TASK_RUNNING' ? h('div', { class: 'muted small' }, task.message) : null),
        h('td', {}, taskHealth(app, task)),
        h('td', { class: 'opt' }, timeEl(task.version), old ? h('span', { class: 'badge status-old', title: 'started from an older configuration' }, 'old') : null),
        h('td', { class: 'opt' }, task.startedAt ? timeEl(task.startedAt) : h('span', { class: 'muted' }, 'staged ', timeEl(task.stagedAt))),
        h('td', {}, h('button', { type: 'button', class: 'small', onclick: () => openLogs(task.id), 'aria-label': `Logs of ${task.id}` }, 'Logs')),
      );
    });
    return [toolbar, table([h('th', { class: 'check' }, all), 'Task', 'Address', 'State', 'Health', h('th', { class: 'opt' }, 'Version'), h('th', { class: 'opt' }, 'Started'), ''], rows, { class: 'tasks' })];
  }

  function configuration(app) {
    const def = definitionOf(app);
    const rows = [
      ['Command', def.cmd ?? (def.args ? def.args.join(' ') : '—')],
      ['Image', imageOf(def) ?? '—'],
      ['Network', def.networks?.[0]?.mode ?? def.container?.docker?.network ?? 'host'],
      ['CPUs', num(def.cpus)],
      ['Memory', mib(def.mem)],
      ['Disk', mib(def.disk ?? 0)],
      ['Instances', def.instances],
      ['Ports', portsText(def)],
      ['Environment', Object.keys(def.env ?? {}).length ? Object.entries(def.env).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join('\n') : '—'],
      ['Labels', Object.keys(def.labels ?? {}).length ? Object.entries(def.labels).map(([k, v]) => `${k}=${v}`).join('\n') : '—'],
      ['Constraints', (def.constraints ?? []).length ? def.constraints.map((c) => c.join(' ')).join('\n') : '—'],
      ['Health checks', (def.healthChecks ?? []).length ? def.healthChecks.map(healthCheckText).join('\n') : '—'],
    ];
    return [
      panel('Summary', h('dl', { class: 'config' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, h('span', { class: 'pre' }, String(v)))]))),
      panel('JSON', h('pre', { class: 'json' }, canonicalJson(def))),
    ];
  }

  function versions() {
    if (!s.versions.length) return h('p', { class: 'muted' }, 'Loading the versions…');
    const current = s.app?.version;
    const rows = s.versions.map((version, index) =>
      h(
        'tr',
        { tabindex: 0, 'data-row': '', 'data-key': `version:${version}`, class: version === current ? 'current' : null },
        h('td', { class: 'check' }, h('input', { type: 'radio', name: 'diff-from', 'aria-label': `Compare from ${version}`, checked: s.diff.from === version, onchange: () => setDiff('from', version) })),
        h('td', { class: 'check' }, h('input', { type: 'radio', name: 'diff-to', 'aria-label': `Compare to ${version}`, checked: s.diff.to === version, onchange: () => setDiff('to', version) })),
        h(
          'td',
          {},
          h('code', { class: 'small' }, version),
          ' ',
          h('span', { class: 'muted small' }, timeEl(version)),
          ' ',
          version === current ? badge('Current') : index === 0 ? badge('Latest') : null,
          index === s.versions.length - 1 ? h('span', { class: 'muted small' }, ' · created') : null,
        ),
        h('td', { class: 'end' }, version === current ? null : h('button', { type: 'button', class: 'small', onclick: () => applyVersion(version) }, 'Apply this version')),
      ),
    );
    // The diff is kept while the pair stays the same (the list re-renders on every event).
    const key = `${s.diff.from}|${s.diff.to}`;
    if (s.diffCache?.key !== key) {
      const slot = h('div', { class: 'diff-slot' }, h('p', { class: 'muted' }, 'Comparing…'));
      s.diffCache = { key, slot };
      renderDiff(slot);
    }
    const diffSlot = s.diffCache.slot;
    return [
      panel(
        'Versions',
        h('p', { class: 'muted small' }, 'Pick two versions (From, To) to see what changed; “Apply this version” deploys it again (a rollback).'),
        table([h('th', { class: 'check' }, 'From'), h('th', { class: 'check' }, 'To'), 'Version', ''], rows, { class: 'versions' }),
      ),
      diffSlot,
    ];
  }

  function setDiff(which, version) {
    s.diff[which] = version;
    render();
  }

  async function renderDiff(slot) {
    const { from, to } = s.diff;
    if (!from || !to) {
      fill(slot);
      return;
    }
    try {
      const [a, b] = await Promise.all([definition(from), definition(to)]);
      const before = definitionOf(a);
      const after = definitionOf(b);
      const keys = changedKeys(before, after);
      const lines = withContext(diffLines(canonicalJson(before), canonicalJson(after)), 3);
      fill(
        slot,
        panel(
          'Changes',
          h('p', { class: 'muted small' }, `From ${new Date(from).toLocaleString()} to ${new Date(to).toLocaleString()}: `, keys.length ? `${keys.join(', ')} changed.` : 'the same configuration.'),
          keys.length
            ? h(
                'pre',
                { class: 'diff', 'aria-label': 'Differences' },
                lines.map((line) => h('span', { class: ['line', { '+': 'add', '-': 'del', '…': 'skip' }[line.op] ?? null] }, `${line.op === '…' ? '⋯' : line.op} ${line.text}\n`)),
              )
            : null,
        ),
      );
    } catch (error) {
      fill(slot, errorBox(error));
    }
  }

  function openLogs(taskId) {
    location.hash = `${appHref(id)}?tab=tasks&logs=${encodeURIComponent(taskId)}`;
  }

  function renderLogs() {
    const wanted = s.route.query.logs;
    if (s.logs && s.logs.taskId !== wanted) {
      s.logs.viewer.stop();
      s.logs = null;
      fill(logsSlot);
    }
    if (wanted && !s.logs) {
      const viewer = logViewer(wanted, { onClose: () => (location.hash = `${appHref(id)}?tab=${tab()}`) });
      s.logs = { taskId: wanted, viewer };
      fill(logsSlot, viewer.el);
    }
  }

  render();
  loadApp();
  loadDeployments();
  loadVersions();

  return {
    update(next) {
      s.route = next;
      render();
      if (tab() === 'versions') loadVersions();
    },
    unmount() {
      offs.forEach((off) => off());
      refetch.cancel();
      refetchVersions.cancel();
      queueWatch.stop();
      s.logs?.viewer.stop();
    },
  };
}

function fact(label, value) {
  return h('div', { class: 'fact' }, h('div', { class: 'fact-label' }, label), h('div', { class: 'fact-value' }, value));
}

/** TASK_RUNNING -> Running. */
export function prettyState(state) {
  const word = String(state ?? '').replace(/^TASK_/, '').toLowerCase().replace(/_/g, ' ');
  return word ? word[0].toUpperCase() + word.slice(1) : '—';
}

/** The task's `host:port` links; a Docker task's say which container port each reaches. */
function addresses(app, task) {
  const host = task.host ?? '';
  const ports = task.ports ?? [];
  if (!ports.length) return h('span', {}, host || '—');
  // Host ports are given to the mappings that ask for one, in their order.
  const mappings = (app.container?.portMappings ?? app.container?.docker?.portMappings ?? []).filter((m) => m.hostPort !== undefined && m.hostPort !== null);
  const title = (index) => (mappings[index] ? `container port ${mappings[index].containerPort}/${mappings[index].protocol ?? 'tcp'}` : null);
  return h(
    'span',
    { class: 'addresses' },
    ports.map((port, index) => [index ? ' ' : null, h('a', { href: `http://${host}:${port}/`, target: '_blank', rel: 'noopener', class: 'address', title: title(index) }, `${host}:${port}`)]),
  );
}

function taskHealth(app, task) {
  const results = task.healthCheckResults ?? [];
  if (!(app.healthChecks ?? []).length) return h('span', { class: 'muted' }, '—');
  if (!results.length) return h('span', { class: 'health unknown' }, 'unknown');
  const alive = results.every((r) => r.alive);
  const cause = results.map((r) => r.lastFailureCause).filter(Boolean).join('; ');
  return h('span', { class: ['health', alive ? 'healthy' : 'unhealthy'], title: cause || null }, alive ? 'healthy' : 'unhealthy');
}

function portsText(def) {
  const mappings = def.container?.portMappings ?? def.container?.docker?.portMappings;
  if (mappings?.length) return mappings.map((m) => `${m.containerPort}→${m.hostPort ?? '-'}${m.servicePort ? ` (service ${m.servicePort})` : ''}/${m.protocol ?? 'tcp'}${m.name ? ` ${m.name}` : ''}`).join('\n');
  const definitions = def.portDefinitions ?? [];
  if (definitions.length) return definitions.map((p) => `${p.port || 'any'}/${p.protocol ?? 'tcp'}${p.name ? ` ${p.name}` : ''}`).join('\n');
  return 'none';
}

function healthCheckText(c) {
  const target = c.protocol === 'COMMAND' ? c.command?.value : `${c.path ?? ''} port index ${c.portIndex ?? 0}`;
  return `${c.protocol} ${target} every ${c.intervalSeconds ?? 60} s, ${c.maxConsecutiveFailures ?? 3} failures kill`;
}
