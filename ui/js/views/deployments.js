// #/deployments: running deployments with their steps and current actions (and why an
// action is blocked); Roll back (DELETE /v2/deployments/{id}) and Force stop (?force=true).

import { get, getDeployments, request } from '../api.js';
import { appHref, confirmDialog, errorBox, errorText, fill, h, notify, timeEl } from '../dom.js';
import { coalesce, on } from '../events.js';
import { empty } from '../widgets.js';

export function mount(root) {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  fill(
    root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Deployments')),
    h('p', { class: 'lead muted' }, 'Changes on their way: starts, scales, new versions, restarts and stops.'),
    body,
  );
  let deployments = null;
  let timer;

  // Blocked reasons change with scheduling rounds, which send no event: while anything
  // deploys, the list is read again every few seconds (nothing is polled when it is empty).
  const load = coalesce(async () => {
    clearTimeout(timer);
    try {
      const answer = await getDeployments();
      deployments = Array.isArray(answer) ? answer : [];
      render();
      if (deployments.length) timer = setTimeout(() => load(), 5000);
    } catch (error) {
      if (!deployments) fill(body, errorBox(error));
    }
  }, 300);

  async function cancel(deployment, force) {
    const question = force
      ? ['Force stop this deployment?', 'It is dropped where it stands: nothing is rolled back and the apps keep the tasks they have now.']
      : ['Roll this deployment back?', 'A new deployment takes the apps back to the configuration they had before.'];
    if (!(await confirmDialog(question[0], question[1], force ? 'Force stop' : 'Roll back', true))) return;
    try {
      const answer = await request('DELETE', `/v2/deployments/${encodeURIComponent(deployment.id)}${force ? '?force=true' : ''}`);
      notify(force ? `Deployment ${deployment.id} stopped` : `Rolling back: deployment ${answer?.deploymentId ?? ''} started`);
      load();
    } catch (error) {
      notify(errorText(error), 'error');
    }
  }

  function render() {
    if (!deployments.length) {
      fill(body, empty('No deployment is running: every app has the configuration and instances it asks for.'));
      return;
    }
    fill(
      body,
      deployments.map((d) => {
        const current = d.currentStep ?? 1;
        const total = d.totalSteps ?? (d.steps ?? []).length;
        const blocked = (d.currentActions ?? []).filter((a) => a.blockedReason);
        return h(
          'section',
          { class: ['panel', 'deployment', blocked.length ? 'blocked' : null], 'data-deployment': d.id },
          h(
            'div',
            { class: 'deployment-head', tabindex: 0, 'data-row': '' },
            h('h2', {}, (d.affectedApps ?? []).map((id, i) => [i ? ', ' : null, h('a', { href: appHref(id) }, id)])),
            h('span', { class: 'muted small' }, h('code', {}, d.id), ' · version ', timeEl(d.version)),
          ),
          h('div', { class: 'progress', title: `step ${current} of ${total}` }, h('span', { style: { width: `${total ? (100 * Math.max(0, current - 1)) / total : 0}%` } })),
          h(
            'ol',
            { class: 'steps' },
            (d.steps ?? []).map((step, index) =>
              h(
                'li',
                { class: index + 1 < current ? 'done' : index + 1 === current ? 'current' : 'todo' },
                h('span', { class: 'step-label' }, `Step ${index + 1}`),
                (step.actions ?? []).map((a) => h('span', { class: 'action' }, `${a.action} `, h('a', { href: appHref(a.app) }, a.app))),
              ),
            ),
          ),
          (d.currentActions ?? []).length
            ? h(
                'div',
                { class: 'current-actions' },
                h('h3', {}, 'Now'),
                h(
                  'ul',
                  {},
                  d.currentActions.map((a) =>
                    h('li', {}, `${a.action} `, h('a', { href: appHref(a.app) }, a.app), a.blockedReason ? h('p', { class: 'blocked-reason' }, h('strong', {}, 'Blocked: '), a.blockedReason) : null),
                  ),
                ),
              )
            : null,
          h(
            'div',
            { class: 'actions' },
            h('button', { type: 'button', onclick: () => cancel(d, false) }, 'Roll back'),
            h('button', { type: 'button', class: 'danger', onclick: () => cancel(d, true) }, 'Force stop'),
          ),
        );
      }),
    );
  }

  const offs = [
    on('*', (event, type) => {
      // Steps and blocked reasons move with deployments and with their apps' tasks.
      if (type === 'resync' || type.startsWith('deployment_') || type === 'app_terminated_event' || type === 'api_post_event') load();
      else if (type === 'status_update_event' && deployments?.length) load();
    }),
  ];
  load();
  return {
    unmount() {
      offs.forEach((off) => off());
      load.cancel();
      clearTimeout(timer);
    },
  };
}
