// Small pieces the views share: status badges, the health bar, resource bars, tabs.

import { h, num, mib } from './dom.js';

/** A status word in its colour (Running, Deploying, Waiting, Delayed, Suspended, ...). */
export function badge(status, title) {
  return h('span', { class: ['badge', `status-${String(status).toLowerCase().replace(/[^a-z]+/g, '-')}`], title }, status);
}

const HEALTH_PARTS = [
  ['healthy', 'healthy'],
  ['unhealthy', 'unhealthy'],
  ['unknown', 'running, health unknown'],
  ['staged', 'staged'],
];

/**
 * Marathon's health bar: healthy, unhealthy, unknown and staged tasks as parts of the
 * target (or of the tasks there are, when more run than asked for).
 */
export function healthBar(health) {
  const counted = health.healthy + health.unhealthy + health.unknown + health.staged;
  const total = Math.max(health.target, counted, 1);
  const words = HEALTH_PARTS.filter(([key]) => health[key] > 0).map(([key, word]) => `${health[key]} ${word}`);
  const missing = Math.max(0, health.target - counted);
  if (missing) words.push(`${missing} not running`);
  const title = words.length ? words.join(', ') : 'no instances';
  return h(
    'div',
    { class: 'health-bar', role: 'img', 'aria-label': title, title },
    HEALTH_PARTS.filter(([key]) => health[key] > 0).map(([key]) =>
      h('span', { class: `part ${key}`, style: { width: `${(100 * health[key]) / total}%` } }),
    ),
  );
}

/** The health bar's numbers in words ("2 healthy · 1 staged"; "no health checks"). */
export function healthWords(health, checked) {
  const parts = [];
  if (checked) {
    if (health.healthy) parts.push(`${health.healthy} healthy`);
    if (health.unhealthy) parts.push(`${health.unhealthy} unhealthy`);
    if (health.unknown) parts.push(`${health.unknown} not checked yet`);
  } else if (health.unknown) {
    parts.push(`${health.unknown} running, no health checks`);
  }
  if (health.staged) parts.push(`${health.staged} staged`);
  return parts.join(' · ') || 'no tasks';
}

/** A used/total bar with its numbers: kind is 'cpus', 'mem', 'disk' or 'ports'. */
export function resourceBar(kind, used, total) {
  const share = total > 0 ? Math.min(1, used / total) : 0;
  const format = kind === 'mem' || kind === 'disk' ? mib : (v) => num(v);
  const level = share >= 0.9 ? 'high' : share >= 0.7 ? 'mid' : 'low';
  const label = `${format(used)} / ${format(total)}`;
  return h(
    'div',
    { class: 'resource', title: `${RESOURCE_NAMES[kind]}: ${label} used (${Math.round(share * 100)}%)` },
    h('div', { class: 'resource-text' }, h('span', { class: 'resource-name' }, RESOURCE_NAMES[kind]), h('span', {}, label)),
    h('div', { class: 'bar' }, h('span', { class: `fill ${level}`, style: { width: `${share * 100}%` } })),
  );
}

export const RESOURCE_NAMES = { cpus: 'CPUs', mem: 'Memory', disk: 'Disk', ports: 'Ports' };

/** Tabs as links (so each tab has its URL): [{id, label, href}], the current id. */
export function tabs(items, current) {
  return h(
    'nav',
    { class: 'tabs', 'aria-label': 'Sections' },
    items.map((item) =>
      h('a', { href: item.href, class: item.id === current ? 'active' : null, 'aria-current': item.id === current ? 'page' : null }, item.label),
    ),
  );
}

/** A titled panel. */
export function panel(title, ...children) {
  return h('section', { class: 'panel' }, title ? h('h2', {}, title) : null, children);
}

/** A table whose rows can be moved through with j/k (see main.js). */
export function table(head, rows, props = {}) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      props,
      h('thead', {}, h('tr', {}, head.map((cell) => (cell instanceof Node ? cell : h('th', { scope: 'col' }, cell))))),
      h('tbody', {}, rows),
    ),
  );
}

/** "Nothing here" with an optional action. */
export function empty(message, action) {
  return h('div', { class: 'empty' }, h('p', {}, message), action);
}
