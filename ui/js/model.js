// What the UI computes from the API's JSON: app status, health counts, the group tree,
// agents' resources, which apps an event touches, and the app definition <-> form
// conversion. Pure functions only (no DOM, no fetch): tests/ui/unit.test.mjs runs them
// under node.

export const STATUS = Object.freeze({
  RUNNING: 'Running',
  DEPLOYING: 'Deploying',
  WAITING: 'Waiting',
  DELAYED: 'Delayed',
  SUSPENDED: 'Suspended',
});

export const STATUSES = [STATUS.RUNNING, STATUS.DEPLOYING, STATUS.WAITING, STATUS.DELAYED, STATUS.SUSPENDED];

/** `/v2/queue`'s entries by app id. */
export function queueByApp(queue) {
  const byApp = new Map();
  for (const entry of queue?.queue ?? []) {
    const id = entry?.app?.id;
    if (id) byApp.set(id, entry);
  }
  return byApp;
}

/** Offers declined in the entry's last round, over every reason. */
export function declinedOffers(entry) {
  const summary = entry?.processedOffersSummary?.rejectSummaryLastOffers ?? [];
  return summary.reduce((sum, r) => sum + (Number(r.declined) || 0), 0);
}

/** The reasons with declines, most declines first: [{reason, declined, processed}]. */
export function declineReasons(entry) {
  const summary = entry?.processedOffersSummary?.rejectSummaryLastOffers ?? [];
  return summary.filter((r) => Number(r.declined) > 0).sort((a, b) => b.declined - a.declined);
}

/** True when the app waits for a launch delay (backoff after failures). */
export function isDelayed(entry) {
  return Boolean(entry) && entry.delay?.overdue === false && Number(entry.delay?.timeLeftSeconds) > 0;
}

/** True when the app waits for room: offers were declined or no agent offers anything. */
export function isWaiting(entry) {
  if (!entry || isDelayed(entry)) return false;
  if (declinedOffers(entry) > 0) return true;
  return (entry.reasons ?? []).some((r) => /no active agents|image pull failed/i.test(r));
}

/** Marathon's app status: Delayed and Waiting (from the queue) before Deploying. */
export function appStatus(app, entry) {
  if (isDelayed(entry)) return STATUS.DELAYED;
  if (isWaiting(entry)) return STATUS.WAITING;
  if ((app.deployments ?? []).length > 0) return STATUS.DEPLOYING;
  if (app.instances === 0 && !(app.tasksRunning > 0) && !(app.tasksStaged > 0)) return STATUS.SUSPENDED;
  return STATUS.RUNNING;
}

/** Task counts for the health bar. `unknown`: running without a health result. */
export function healthOf(app) {
  const healthy = app.tasksHealthy ?? 0;
  const unhealthy = app.tasksUnhealthy ?? 0;
  const running = app.tasksRunning ?? 0;
  const staged = app.tasksStaged ?? 0;
  return {
    healthy,
    unhealthy,
    unknown: Math.max(0, running - healthy - Math.min(unhealthy, running)),
    staged,
    target: app.instances ?? 0,
  };
}

export function addHealth(a, b) {
  return {
    healthy: a.healthy + b.healthy,
    unhealthy: a.unhealthy + b.unhealthy,
    unknown: a.unknown + b.unknown,
    staged: a.staged + b.staged,
    target: a.target + b.target,
  };
}

/** The image of a Docker app, else undefined. */
export function imageOf(app) {
  return app?.container?.docker?.image || undefined;
}

/** True when the app matches the search text (id, command, image, label key=value). */
export function matchesText(app, text) {
  const needle = (text ?? '').trim().toLowerCase();
  if (!needle) return true;
  const labels = Object.entries(app.labels ?? {}).map(([k, v]) => `${k}=${v}`);
  return [app.id, app.cmd, imageOf(app), ...labels].some((s) => typeof s === 'string' && s.toLowerCase().includes(needle));
}

/**
 * Apps and their groups as a tree: {kind:'group', id, name, children, apps, totals}
 * where children are groups then apps, sorted by name; totals sum the apps below.
 * `extraGroups` (ids) adds groups that have no app.
 */
export function buildTree(apps, statusOf = () => STATUS.RUNNING, extraGroups = []) {
  const root = newGroup('/');
  const groups = new Map([['/', root]]);
  const groupFor = (id) => {
    if (groups.has(id)) return groups.get(id);
    const parentId = id.slice(0, id.lastIndexOf('/')) || '/';
    const group = newGroup(id);
    groups.set(id, group);
    groupFor(parentId).groups.push(group);
    return group;
  };
  for (const id of extraGroups) {
    if (id && id !== '/') groupFor(normalizeId(id));
  }
  for (const app of apps) {
    const id = normalizeId(app.id);
    const parentId = id.slice(0, id.lastIndexOf('/')) || '/';
    groupFor(parentId).apps.push({ kind: 'app', id, name: id.slice(id.lastIndexOf('/') + 1), app, status: statusOf(app) });
  }
  const finish = (group) => {
    group.groups.sort((a, b) => a.name.localeCompare(b.name));
    group.apps.sort((a, b) => a.name.localeCompare(b.name));
    let totals = { instances: 0, running: 0, cpus: 0, mem: 0, apps: 0, health: addHealth(emptyHealth(), emptyHealth()) };
    for (const child of group.groups) {
      finish(child);
      totals = addTotals(totals, child.totals);
    }
    for (const leaf of group.apps) {
      const a = leaf.app;
      totals = addTotals(totals, {
        instances: a.instances ?? 0,
        running: a.tasksRunning ?? 0,
        cpus: (a.cpus ?? 0) * (a.instances ?? 0),
        mem: (a.mem ?? 0) * (a.instances ?? 0),
        apps: 1,
        health: healthOf(a),
      });
    }
    group.totals = totals;
    group.children = [...group.groups, ...group.apps];
  };
  finish(root);
  return root;
}

function newGroup(id) {
  return { kind: 'group', id, name: id === '/' ? '/' : id.slice(id.lastIndexOf('/') + 1), groups: [], apps: [] };
}

function emptyHealth() {
  return { healthy: 0, unhealthy: 0, unknown: 0, staged: 0, target: 0 };
}

function addTotals(a, b) {
  return {
    instances: a.instances + b.instances,
    running: a.running + b.running,
    cpus: a.cpus + b.cpus,
    mem: a.mem + b.mem,
    apps: a.apps + b.apps,
    health: addHealth(a.health, b.health),
  };
}

/** `hello` or `/hello/` -> `/hello`. */
export function normalizeId(id) {
  const trimmed = String(id ?? '').replace(/^\/+|\/+$/g, '');
  return `/${trimmed}`;
}

/** The app ids an event is about (status updates, deployments, API posts, health). */
export function appsOf(event) {
  const ids = new Set();
  const add = (id) => {
    if (typeof id === 'string' && id) ids.add(normalizeId(id));
  };
  add(event?.appId);
  add(event?.appDefinition?.id);
  for (const id of event?.plan?.affectedApps ?? []) add(id);
  for (const step of event?.plan?.steps ?? []) for (const action of step.actions ?? []) add(action.app);
  return [...ids];
}

// ---------------------------------------------------------------------------------------
// Routes: #/apps, #/apps/<id>, #/create, #/edit/<id>, #/deployments, #/queue, #/nodes

/** The route of a hash: {view, id, query, path}. */
export function parseRoute(hash) {
  const raw = (hash || '').replace(/^#/, '') || '/apps';
  const [pathPart, queryPart = ''] = raw.split('?');
  const segments = pathPart.split('/').filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  const query = Object.fromEntries(new URLSearchParams(queryPart));
  const [first = 'apps', ...rest] = segments;
  const id = rest.length ? `/${rest.join('/')}` : undefined;
  if (first === 'apps' && id) return { view: 'app', id, query, path: pathPart };
  if (first === 'edit' && id) return { view: 'edit', id, query, path: pathPart };
  if (['apps', 'create', 'deployments', 'queue', 'nodes'].includes(first) && !id) return { view: first, query, path: pathPart };
  return { view: 'missing', query, path: pathPart };
}

// ---------------------------------------------------------------------------------------
// Agents

/** Number of ports in a Mesos range text: `[31000-31099]`, `[1-2,5-5]`, `[]`. */
export function portCount(ranges) {
  if (typeof ranges !== 'string') return 0;
  let count = 0;
  for (const part of ranges.replace(/[[\]\s]/g, '').split(',')) {
    if (!part) continue;
    const [begin, end = begin] = part.split('-').map(Number);
    if (Number.isFinite(begin) && Number.isFinite(end) && end >= begin) count += end - begin + 1;
  }
  return count;
}

/** active, draining, drained or lost. */
export function agentState(slave) {
  if (!slave.active) return 'lost';
  if (slave.drained) return 'drained';
  if (slave.draining) return 'draining';
  return 'active';
}

/** {cpus, mem, disk, ports} as {used, total} for one agent. */
export function agentResources(slave) {
  const total = slave.resources ?? {};
  const used = slave.used_resources ?? {};
  return {
    cpus: { used: used.cpus ?? 0, total: total.cpus ?? 0 },
    mem: { used: used.mem ?? 0, total: total.mem ?? 0 },
    disk: { used: used.disk ?? 0, total: total.disk ?? 0 },
    ports: { used: portCount(used.ports), total: portCount(total.ports) },
  };
}

/** The cluster's resources: the sum over agents that are not lost. */
export function clusterTotals(slaves) {
  const sum = { cpus: { used: 0, total: 0 }, mem: { used: 0, total: 0 }, disk: { used: 0, total: 0 }, ports: { used: 0, total: 0 } };
  for (const slave of slaves) {
    if (!slave.active) continue;
    const r = agentResources(slave);
    for (const key of Object.keys(sum)) {
      sum[key].used += r[key].used;
      sum[key].total += r[key].total;
    }
  }
  return sum;
}

// ---------------------------------------------------------------------------------------
// App definitions and the form

/** Fields the API adds to an app that are not part of its definition. */
export const RUNTIME_FIELDS = [
  'version', 'versionInfo', 'tasks', 'tasksStaged', 'tasksRunning', 'tasksHealthy', 'tasksUnhealthy',
  'deployments', 'readinessCheckResults', 'lastTaskFailure', 'taskStats', 'taskCounts', 'lastImagePull',
];

/** The app's definition without what the API adds (a copy). */
export function definitionOf(app) {
  const def = structuredClone(app ?? {});
  for (const key of RUNTIME_FIELDS) delete def[key];
  return def;
}

const text = (v) => (v === undefined || v === null ? '' : String(v));

/** The form's model: every value a string, lists as arrays of rows. */
export function formFromDefinition(def = {}) {
  const docker = def.container?.docker ?? {};
  const networkMode = def.networks?.[0]?.mode ?? (['BRIDGE', 'USER'].includes(docker.network) ? 'container/bridge' : 'host');
  const mappings = def.container?.portMappings ?? docker.portMappings ?? [];
  return {
    id: text(def.id),
    cmd: text(def.cmd ?? (Array.isArray(def.args) ? def.args.join(' ') : '')),
    cpus: text(def.cpus),
    mem: text(def.mem),
    disk: text(def.disk),
    instances: text(def.instances),
    image: text(docker.image),
    network: networkMode === 'container/bridge' ? 'bridge' : 'host',
    portMappings: mappings.map((m) => ({
      containerPort: text(m.containerPort),
      hostPort: text(m.hostPort),
      servicePort: text(m.servicePort),
      protocol: text(m.protocol || 'tcp'),
      name: text(m.name),
    })),
    portDefinitions: (def.portDefinitions ?? (def.ports ?? []).map((port) => ({ port }))).map((p) => ({
      port: text(p.port),
      protocol: text(p.protocol || 'tcp'),
      name: text(p.name),
    })),
    env: Object.entries(def.env ?? {}).map(([key, value]) => ({ key, value: typeof value === 'string' ? value : JSON.stringify(value) })),
    labels: Object.entries(def.labels ?? {}).map(([key, value]) => ({ key, value: text(value) })),
    healthChecks: (def.healthChecks ?? []).map((c) => ({
      protocol: text(c.protocol || 'HTTP'),
      path: text(c.path),
      portIndex: text(c.portIndex),
      command: text(c.command?.value),
      gracePeriodSeconds: text(c.gracePeriodSeconds),
      intervalSeconds: text(c.intervalSeconds),
      timeoutSeconds: text(c.timeoutSeconds),
      maxConsecutiveFailures: text(c.maxConsecutiveFailures),
    })),
    constraints: (def.constraints ?? []).map((c) => ({ field: text(c[0]), operator: text(c[1]), value: text(c[2]) })),
  };
}

/** A number from a form field; empty is undefined, and text that is not a number stays
 * text, so the master's 422 names the field instead of the UI guessing. */
export function formNumber(value) {
  const trimmed = String(value ?? '').trim();
  if (trimmed === '') return undefined;
  const n = Number(trimmed);
  return Number.isFinite(n) ? n : trimmed;
}

function setOrDelete(object, key, value) {
  if (value === undefined || value === '' || (Array.isArray(value) && value.length === 0 && !(key in object))) {
    delete object[key];
  } else {
    object[key] = value;
  }
}

/**
 * The definition the form describes, on top of `base` (the app's current definition when
 * editing), so fields the form does not show are kept. Old forms the form replaces
 * (`ports`, `container.docker.network`, `container.docker.portMappings`) are dropped.
 */
export function definitionFromForm(form, base = {}) {
  const def = structuredClone(base);
  for (const key of RUNTIME_FIELDS) delete def[key];
  def.id = form.id.trim();
  setOrDelete(def, 'cmd', form.cmd.trim() === '' ? undefined : form.cmd);
  if (def.cmd !== undefined) delete def.args;
  for (const key of ['cpus', 'mem', 'disk', 'instances']) setOrDelete(def, key, formNumber(form[key]));
  const image = form.image.trim();
  const bridge = form.network === 'bridge';
  delete def.ports;
  if (image) {
    const container = def.container ?? {};
    container.type = container.type || 'DOCKER';
    const docker = { ...(container.docker ?? {}), image };
    delete docker.network;
    delete docker.portMappings;
    container.docker = docker;
    def.container = container;
    def.networks = [{ mode: bridge ? 'container/bridge' : 'host' }];
  } else {
    if (def.container?.docker || def.container?.type === 'DOCKER') delete def.container;
    if ((def.networks ?? []).every((n) => n.mode === 'host')) delete def.networks;
  }
  if (image && bridge) {
    def.container.portMappings = form.portMappings.map((m) => {
      const mapping = { containerPort: formNumber(m.containerPort) ?? 0 };
      const hostPort = formNumber(m.hostPort);
      if (hostPort !== undefined) mapping.hostPort = hostPort;
      const servicePort = formNumber(m.servicePort);
      if (servicePort !== undefined) mapping.servicePort = servicePort;
      mapping.protocol = m.protocol || 'tcp';
      if (m.name.trim()) mapping.name = m.name.trim();
      return mapping;
    });
    delete def.portDefinitions;
  } else {
    if (def.container) delete def.container.portMappings;
    const definitions = form.portDefinitions.map((p) => {
      const definition = { port: formNumber(p.port) ?? 0, protocol: p.protocol || 'tcp' };
      if (p.name.trim()) definition.name = p.name.trim();
      return definition;
    });
    // No rows on a new app: Marathon's default (one port, $PORT0). Rows removed while
    // editing: no ports.
    setOrDelete(def, 'portDefinitions', definitions);
  }
  const pairs = (rows) => Object.fromEntries(rows.filter((r) => r.key.trim()).map((r) => [r.key.trim(), r.value]));
  setOrDelete(def, 'env', Object.keys(pairs(form.env)).length || 'env' in def ? pairs(form.env) : undefined);
  setOrDelete(def, 'labels', Object.keys(pairs(form.labels)).length || 'labels' in def ? pairs(form.labels) : undefined);
  setOrDelete(def, 'healthChecks', form.healthChecks.map(healthCheckFromRow));
  setOrDelete(
    def,
    'constraints',
    form.constraints
      .filter((c) => c.field.trim() || c.operator.trim())
      .map((c) => (c.value.trim() === '' ? [c.field.trim(), c.operator.trim()] : [c.field.trim(), c.operator.trim(), c.value.trim()])),
  );
  return def;
}

function healthCheckFromRow(row) {
  const protocol = row.protocol || 'HTTP';
  const check = { protocol };
  if (protocol === 'COMMAND') {
    check.command = { value: row.command };
  } else {
    if (protocol !== 'TCP' && row.path.trim()) check.path = row.path.trim();
    check.portIndex = formNumber(row.portIndex) ?? 0;
  }
  for (const key of ['gracePeriodSeconds', 'intervalSeconds', 'timeoutSeconds', 'maxConsecutiveFailures']) {
    const value = formNumber(row[key]);
    if (value !== undefined) check[key] = value;
  }
  return check;
}

/** Empty rows for the form's lists. */
export const EMPTY_ROWS = {
  portMappings: () => ({ containerPort: '', hostPort: '0', servicePort: '', protocol: 'tcp', name: '' }),
  portDefinitions: () => ({ port: '0', protocol: 'tcp', name: '' }),
  env: () => ({ key: '', value: '' }),
  labels: () => ({ key: '', value: '' }),
  healthChecks: () => ({
    protocol: 'HTTP', path: '/', portIndex: '0', command: '', gracePeriodSeconds: '', intervalSeconds: '',
    timeoutSeconds: '', maxConsecutiveFailures: '',
  }),
  constraints: () => ({ field: 'hostname', operator: 'UNIQUE', value: '' }),
};

/**
 * Where a 422 detail belongs: the longest field path that starts the detail's path.
 * `paths` are the form's field paths (`/id`, `/container/portMappings(0)/hostPort`).
 */
export function fieldForPath(path, paths) {
  const normal = String(path ?? '').replace(/\[(\d+)\]/g, '($1)').replace(/\/(\d+)(?=\/|$)/g, '($1)');
  let best;
  for (const candidate of paths) {
    if (normal === candidate || normal.startsWith(`${candidate}/`) || normal.startsWith(`${candidate}(`)) {
      if (!best || candidate.length > best.length) best = candidate;
    }
  }
  return best;
}

/** Where a JSON.parse error points, as "line L, column C" (when the message has a position). */
export function jsonErrorLocation(source, message) {
  const position = /position (\d+)/.exec(message);
  const lineColumn = /line (\d+) column (\d+)/.exec(message);
  if (lineColumn) return `line ${lineColumn[1]}, column ${lineColumn[2]}`;
  if (!position) return '';
  const before = source.slice(0, Number(position[1]));
  const line = before.split('\n').length;
  const column = before.length - before.lastIndexOf('\n');
  return `line ${line}, column ${column}`;
}
