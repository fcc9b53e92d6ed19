// #/nodes: the cluster's resources (the Mesos UI's totals), each agent with CPUs, memory,
// disk and ports used of total, its attributes and state (active, draining, drained,
// lost), drain and undrain (POST/DELETE /master/slaves/{id}/drain), and the PXE machine
// profiles with their boot state (/v1/machines, when the master serves PXE boot).

import { get, request } from '../api.js';
import { confirmDialog, errorBox, errorText, fill, h, notify, timeEl } from '../dom.js';
import { coalesce, on } from '../events.js';
import { agentResources, agentState, clusterTotals } from '../model.js';
import { badge, empty, panel, resourceBar, table } from '../widgets.js';

/** Agents register and leave without events for them: the list is read this often while
 * the page is shown, besides after every task change. */
const REFRESH_MS = 10000;

export function mount(root) {
  const totalsEl = h('div', {});
  const agentsEl = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const machinesEl = h('div', {});
  fill(
    root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Nodes')),
    totalsEl,
    panel('Agents', agentsEl),
    panel('PXE machines', machinesEl),
  );
  let slaves = null;
  let machines = undefined; // null: PXE boot is not served by this master
  let timer;

  const loadSlaves = coalesce(async () => {
    clearTimeout(timer);
    try {
      const answer = await get('/master/slaves');
      slaves = answer.slaves ?? [];
      render();
    } catch (error) {
      if (!slaves) fill(agentsEl, errorBox(error));
    }
    timer = setTimeout(() => loadSlaves(), REFRESH_MS);
  }, 400);

  const loadMachines = coalesce(async () => {
    try {
      const answer = await get('/v1/machines');
      machines = answer;
    } catch (error) {
      machines = error.status === 404 ? null : { error };
    }
    renderMachines();
  }, 400);

  async function drain(slave, on) {
    const question = on
      ? [`Drain ${slave.hostname}?`, 'No new tasks are placed there and its tasks move to other agents (replacements start first, within each app’s upgrade strategy). It shows “drained” once none is left.']
      : [`Undrain ${slave.hostname}?`, 'The agent takes new tasks again.'];
    if (!(await confirmDialog(question[0], question[1], on ? 'Drain' : 'Undrain', on))) return;
    try {
      await request(on ? 'POST' : 'DELETE', `/master/slaves/${encodeURIComponent(slave.id)}/drain`);
      notify(on ? `${slave.hostname} is draining` : `${slave.hostname} takes tasks again`);
      loadSlaves();
    } catch (error) {
      notify(errorText(error), 'error');
    }
  }

  function render() {
    const totals = clusterTotals(slaves);
    const states = { active: 0, draining: 0, drained: 0, lost: 0 };
    for (const slave of slaves) states[agentState(slave)] += 1;
    fill(
      totalsEl,
      h(
        'section',
        { class: 'panel totals', 'aria-label': 'Cluster resources' },
        h('h2', {}, 'Cluster'),
        h(
          'p',
          { class: 'muted small' },
          `${slaves.length} agent${slaves.length === 1 ? '' : 's'}: `,
          Object.entries(states).filter(([, n]) => n).map(([state, n]) => `${n} ${state}`).join(', ') || 'none',
          states.lost ? ' (lost agents are not counted)' : '',
        ),
        h('div', { class: 'resource-grid' }, ['cpus', 'mem', 'disk', 'ports'].map((k) => resourceBar(k, totals[k].used, totals[k].total))),
      ),
    );
    if (!slaves.length) {
      fill(agentsEl, empty('No agent has registered yet. Start one with plinth agent --master URL.'));
      return;
    }
    const rows = [...slaves]
      .sort((a, b) => String(a.hostname).localeCompare(String(b.hostname)))
      .map((slave) => {
        const state = agentState(slave);
        const r = agentResources(slave);
        const attributes = Object.entries(slave.attributes ?? {});
        return h(
          'tr',
          { tabindex: 0, 'data-row': '', 'data-agent': slave.id, class: `agent-${state}` },
          h('td', {}, h('div', { class: 'agent-name' }, slave.hostname), h('div', { class: 'muted small' }, h('code', {}, slave.id)), h('div', { class: 'muted small' }, `seen `, timeEl(slave.last_seen_time * 1000))),
          h('td', {}, badge(state)),
          h('td', { class: 'resources-cell' }, h('div', { class: 'resource-grid compact' }, ['cpus', 'mem', 'disk', 'ports'].map((k) => resourceBar(k, r[k].used, r[k].total)))),
          h('td', { class: 'opt' }, attributes.length ? attributes.map(([k, v]) => h('span', { class: 'tag' }, `${k}:${v}`)) : h('span', { class: 'muted' }, '—')),
          h(
            'td',
            {},
            state === 'lost'
              ? null
              : slave.draining
                ? h('button', { type: 'button', class: 'small', onclick: () => drain(slave, false) }, 'Undrain')
                : h('button', { type: 'button', class: 'small', onclick: () => drain(slave, true) }, 'Drain'),
          ),
        );
      });
    fill(agentsEl, table(['Agent', 'State', 'Resources used', h('th', { class: 'opt' }, 'Attributes'), ''], rows, { class: 'agents' }));
  }

  function renderMachines() {
    if (machines === undefined) {
      fill(machinesEl, h('p', { class: 'muted' }, 'Loading…'));
      return;
    }
    if (machines === null) {
      fill(machinesEl, h('p', { class: 'muted' }, 'This master does not serve PXE boot (start it with --pxe-interface to boot blank machines as agents).'));
      return;
    }
    if (machines.error) {
      fill(machinesEl, errorBox(machines.error));
      return;
    }
    const list = machines.machines ?? [];
    const fallback = machines.defaultProfile ? `Machines without a profile boot as: ${typeof machines.defaultProfile === 'string' ? machines.defaultProfile : JSON.stringify(machines.defaultProfile)}.` : '';
    if (!list.length) {
      fill(machinesEl, empty(`No machine has a profile or has booted yet. ${fallback}`));
      return;
    }
    fill(
      machinesEl,
      fallback ? h('p', { class: 'muted small' }, fallback) : null,
      table(
        ['MAC', 'Hostname', 'Address', 'State', h('th', { class: 'opt' }, 'Role'), h('th', { class: 'opt' }, 'Attributes'), h('th', { class: 'opt' }, 'Last boot')],
        list.map((m) =>
          h(
            'tr',
            { tabindex: 0, 'data-row': '' },
            h('td', {}, h('code', {}, m.mac)),
            h('td', {}, m.hostname ?? '—'),
            h('td', {}, m.ip ?? '—'),
            h('td', {}, badge(m.state ?? 'unknown')),
            h('td', { class: 'opt' }, m.profile?.role ?? 'agent'),
            h('td', { class: 'opt' }, Object.entries(m.profile?.attributes ?? {}).map(([k, v]) => h('span', { class: 'tag' }, `${k}:${v}`))),
            h('td', { class: 'opt' }, m.lastBoot ? [timeEl(m.lastBoot * 1000), m.bootedVia ? h('span', { class: 'muted small' }, ` via ${m.bootedVia}`) : null] : '—'),
          ),
        ),
      ),
    );
  }

  const offs = [
    on('*', (event, type) => {
      if (type === 'resync') {
        loadSlaves();
        loadMachines();
      } else if (type === 'status_update_event' || type === 'agent_lost_event' || type === 'app_terminated_event') {
        loadSlaves();
        if (type === 'agent_lost_event') loadMachines();
      }
    }),
  ];
  loadSlaves();
  loadMachines();
  renderMachines();
  return {
    unmount() {
      offs.forEach((off) => off());
      loadSlaves.cancel();
      loadMachines.cancel();
      clearTimeout(timer);
    },
  };
}
