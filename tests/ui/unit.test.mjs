// The UI's pure modules (ui/js/model.js, ui/js/diff.js) under node's test runner:
// `node --test tests/ui/` (tests/e2e/ui.rs runs it too).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { canonicalJson, changedKeys, diffLines, withContext } from '../../ui/js/diff.js';
import {
  agentState,
  appStatus,
  appsOf,
  buildTree,
  clusterTotals,
  definitionFromForm,
  fieldForPath,
  formFromDefinition,
  formNumber,
  healthOf,
  jsonErrorLocation,
  parseRoute,
  portCount,
  queueByApp,
  STATUS,
} from '../../ui/js/model.js';

const entry = (overrides = {}) => ({
  count: 1,
  delay: { timeLeftSeconds: 0, overdue: true },
  app: { id: '/big' },
  reasons: ['no offers processed yet'],
  processedOffersSummary: { rejectSummaryLastOffers: [{ reason: 'InsufficientCpus', declined: 0, processed: 0 }] },
  ...overrides,
});

test('status: Delayed and Waiting come from the queue, before Deploying', () => {
  const app = { id: '/big', instances: 1, tasksRunning: 0, deployments: [{ id: 'd' }] };
  assert.equal(appStatus(app, undefined), STATUS.DEPLOYING);
  assert.equal(appStatus(app, entry()), STATUS.DEPLOYING, 'no offer declined yet: still deploying');
  const declined = entry({ processedOffersSummary: { rejectSummaryLastOffers: [{ reason: 'InsufficientCpus', declined: 1, processed: 1 }] } });
  assert.equal(appStatus(app, declined), STATUS.WAITING);
  assert.equal(appStatus(app, entry({ reasons: ['no active agents: nothing to offer'] })), STATUS.WAITING);
  assert.equal(appStatus(app, entry({ delay: { timeLeftSeconds: 7, overdue: false } })), STATUS.DELAYED);
  assert.equal(appStatus({ instances: 0, tasksRunning: 0, deployments: [] }), STATUS.SUSPENDED);
  assert.equal(appStatus({ instances: 0, tasksRunning: 1, deployments: [] }), STATUS.RUNNING, 'still stopping');
  assert.equal(appStatus({ instances: 2, tasksRunning: 2, deployments: [] }), STATUS.RUNNING);
});

test('health counts: unknown is running without a health result', () => {
  assert.deepEqual(healthOf({ instances: 3, tasksRunning: 2, tasksHealthy: 1, tasksUnhealthy: 0, tasksStaged: 1 }), {
    healthy: 1, unhealthy: 0, unknown: 1, staged: 1, target: 3,
  });
  assert.deepEqual(healthOf({ instances: 1 }), { healthy: 0, unhealthy: 0, unknown: 0, staged: 0, target: 1 });
});

test('the queue by app id', () => {
  const byApp = queueByApp({ queue: [entry(), { app: null }] });
  assert.deepEqual([...byApp.keys()], ['/big']);
});

test('groups come from app ids and sum what is below them', () => {
  const apps = [
    { id: '/prod/web', instances: 2, tasksRunning: 2, cpus: 0.5, mem: 64 },
    { id: '/prod/db/main', instances: 1, tasksRunning: 0, cpus: 1, mem: 512 },
    { id: '/hello', instances: 3, tasksRunning: 3, cpus: 0.1, mem: 32 },
  ];
  const tree = buildTree(apps);
  assert.deepEqual(tree.children.map((c) => `${c.kind}:${c.id}`), ['group:/prod', 'app:/hello']);
  const prod = tree.children[0];
  assert.deepEqual(prod.children.map((c) => `${c.kind}:${c.name}`), ['group:db', 'app:web']);
  assert.equal(prod.totals.instances, 3);
  assert.equal(prod.totals.running, 2);
  assert.equal(prod.totals.cpus, 2);
  assert.equal(prod.totals.mem, 640);
  assert.equal(tree.totals.apps, 3);
  assert.ok(Math.abs(tree.totals.cpus - 2.3) < 1e-9);
});

test('the apps an event is about', () => {
  assert.deepEqual(appsOf({ eventType: 'status_update_event', appId: '/hello' }), ['/hello']);
  assert.deepEqual(appsOf({ appDefinition: { id: 'hello' } }), ['/hello']);
  assert.deepEqual(
    appsOf({ plan: { affectedApps: ['/a'], steps: [{ actions: [{ action: 'ScaleApplication', app: '/b' }] }] } }).sort(),
    ['/a', '/b'],
  );
  assert.deepEqual(appsOf({ eventType: 'event_stream_attached' }), []);
});

test('ports and agents', () => {
  assert.equal(portCount('[31000-31099]'), 100);
  assert.equal(portCount('[31000-31004,31010-31010]'), 6);
  assert.equal(portCount('[]'), 0);
  assert.equal(portCount(undefined), 0);
  assert.equal(agentState({ active: false }), 'lost');
  assert.equal(agentState({ active: true, draining: true, drained: true }), 'drained');
  assert.equal(agentState({ active: true, draining: true }), 'draining');
  assert.equal(agentState({ active: true }), 'active');
  const slave = (active, cpus) => ({ active, resources: { cpus: 4, mem: 2048, disk: 4096, ports: '[31000-31099]' }, used_resources: { cpus, mem: 32, disk: 0, ports: '[31000-31000]' } });
  const totals = clusterTotals([slave(true, 0.1), slave(true, 1), slave(false, 3)]);
  assert.deepEqual(totals.cpus, { used: 1.1, total: 8 });
  assert.deepEqual(totals.ports, { used: 2, total: 200 });
});

test('routes', () => {
  assert.deepEqual(parseRoute('#/apps'), { view: 'apps', query: {}, path: '/apps' });
  assert.deepEqual(parseRoute(''), { view: 'apps', query: {}, path: '/apps' });
  assert.equal(parseRoute('#/apps/prod/web?tab=versions').id, '/prod/web');
  assert.equal(parseRoute('#/apps/prod/web?tab=versions').query.tab, 'versions');
  assert.equal(parseRoute('#/apps/hello').view, 'app');
  assert.equal(parseRoute('#/edit/a%20b').id, '/a b');
  assert.equal(parseRoute('#/create').view, 'create');
  assert.equal(parseRoute('#/nodes').view, 'nodes');
  assert.equal(parseRoute('#/nope').view, 'missing');
});

test('a new app from the form: only what was filled in, numbers as numbers', () => {
  const form = formFromDefinition({ id: '', cmd: '', cpus: 0.1, mem: 128, disk: 0, instances: 1 });
  Object.assign(form, { id: 'hello', cmd: 'echo hello; sleep 1000', mem: '32' });
  assert.deepEqual(definitionFromForm(form), { id: 'hello', cmd: 'echo hello; sleep 1000', cpus: 0.1, mem: 32, disk: 0, instances: 1 });
  form.instances = '-1';
  assert.equal(definitionFromForm(form).instances, -1, 'the master, not the form, refuses it');
  form.cpus = 'lots';
  assert.equal(definitionFromForm(form).cpus, 'lots');
  assert.equal(formNumber(' '), undefined);
});

test('a Docker app with bridge networking, port mappings, env, labels, checks and constraints', () => {
  const form = formFromDefinition({});
  Object.assign(form, { id: '/web', cpus: '0.5', mem: '64', image: 'busybox', network: 'bridge' });
  form.portMappings.push({ containerPort: '3000', hostPort: '0', servicePort: '', protocol: 'tcp', name: 'http' });
  form.env.push({ key: 'GREETING', value: 'hi' }, { key: ' ', value: 'ignored' });
  form.labels.push({ key: 'tier', value: 'web' });
  form.healthChecks.push({ protocol: 'HTTP', path: '/health', portIndex: '0', command: '', gracePeriodSeconds: '10', intervalSeconds: '', timeoutSeconds: '', maxConsecutiveFailures: '2' });
  form.constraints.push({ field: 'hostname', operator: 'UNIQUE', value: '' }, { field: 'rack', operator: 'IS', value: 'r1' });
  assert.deepEqual(definitionFromForm(form), {
    id: '/web',
    cpus: 0.5,
    mem: 64,
    container: { type: 'DOCKER', docker: { image: 'busybox' }, portMappings: [{ containerPort: 3000, hostPort: 0, protocol: 'tcp', name: 'http' }] },
    networks: [{ mode: 'container/bridge' }],
    env: { GREETING: 'hi' },
    labels: { tier: 'web' },
    healthChecks: [{ protocol: 'HTTP', path: '/health', portIndex: 0, gracePeriodSeconds: 10, maxConsecutiveFailures: 2 }],
    constraints: [['hostname', 'UNIQUE'], ['rack', 'IS', 'r1']],
  });
});

test('editing keeps what the form does not show and replaces old forms', () => {
  const base = {
    id: '/web', cmd: 'serve', cpus: 1, mem: 128, instances: 2, backoffSeconds: 5, portDefinitions: [{ port: 0, protocol: 'tcp' }],
    container: { type: 'DOCKER', docker: { image: 'old', network: 'BRIDGE', portMappings: [{ containerPort: 80, hostPort: 0 }] } },
    version: '2024-01-01T00:00:00.000Z', tasks: [], tasksRunning: 2, deployments: [],
  };
  const form = formFromDefinition(base);
  assert.equal(form.network, 'bridge');
  assert.equal(form.portMappings[0].containerPort, '80');
  form.image = 'new';
  const def = definitionFromForm(form, base);
  assert.equal(def.backoffSeconds, 5);
  assert.equal(def.container.docker.image, 'new');
  assert.equal(def.container.docker.network, undefined);
  assert.equal(def.container.docker.portMappings, undefined);
  assert.deepEqual(def.container.portMappings, [{ containerPort: 80, hostPort: 0, protocol: 'tcp' }]);
  assert.deepEqual(def.networks, [{ mode: 'container/bridge' }]);
  for (const runtime of ['version', 'tasks', 'tasksRunning', 'deployments']) assert.ok(!(runtime in def), runtime);
  // Ports removed while editing: none (not the default one).
  const command = formFromDefinition({ id: '/c', cmd: 'x', portDefinitions: [{ port: 0 }] });
  command.portDefinitions = [];
  assert.deepEqual(definitionFromForm(command, { id: '/c', cmd: 'x', portDefinitions: [{ port: 0 }] }).portDefinitions, []);
  // Removing the image makes a command app again.
  form.image = '';
  form.network = 'host';
  assert.equal(definitionFromForm(form, base).container, undefined);
});

test('422 paths find their field', () => {
  const paths = ['/id', '/instances', '/container', '/container/docker/image', '/container/portMappings(0)', '/container/portMappings(0)/hostPort', '/env/NAME', '/healthChecks(1)'];
  assert.equal(fieldForPath('/instances', paths), '/instances');
  assert.equal(fieldForPath('/container/portMappings(0)/hostPort', paths), '/container/portMappings(0)/hostPort');
  assert.equal(fieldForPath('/container/portMappings(0)/servicePort', paths), '/container/portMappings(0)');
  assert.equal(fieldForPath('/container/docker/network', paths), '/container');
  assert.equal(fieldForPath('/healthChecks[1]/path', paths), '/healthChecks(1)');
  assert.equal(fieldForPath('/healthChecks/1/path', paths), '/healthChecks(1)');
  assert.equal(fieldForPath('/env/NAME', paths), '/env/NAME');
  assert.equal(fieldForPath('/', paths), undefined);
  assert.equal(fieldForPath('/idle', paths), undefined, 'a prefix of a word is no match');
});

test('JSON errors say where', () => {
  const source = '{\n  "id": "x",\n  oops\n}';
  let message = '';
  try {
    JSON.parse(source);
  } catch (e) {
    message = e.message;
  }
  assert.match(jsonErrorLocation(source, message), /^line 3, column \d+$/);
});

test('diffs of versions', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: 2, c: 3 } }), canonicalJson({ a: { c: 3, d: 2 }, b: 1 }));
  const before = canonicalJson({ id: '/hello', cmd: 'echo hello; sleep 1000', mem: 32 });
  const after = canonicalJson({ id: '/hello', cmd: 'echo bye; sleep 1000', mem: 32 });
  const lines = diffLines(before, after);
  assert.deepEqual(lines.filter((l) => l.op !== ' ').map((l) => `${l.op}${l.text.trim()}`), ['-"cmd": "echo hello; sleep 1000",', '+"cmd": "echo bye; sleep 1000",']);
  assert.equal(lines.filter((l) => l.op === ' ').length, 4);
  assert.deepEqual(changedKeys({ a: 1, b: [1], c: 3 }, { a: 1, b: [2], d: 4 }), ['b', 'c', 'd']);
  const long = diffLines(Array.from({ length: 20 }, (_, i) => `l${i}`).join('\n'), Array.from({ length: 20 }, (_, i) => (i === 10 ? 'changed' : `l${i}`)).join('\n'));
  const short = withContext(long, 2);
  assert.deepEqual(short.map((l) => l.op), ['…', ' ', ' ', '-', '+', ' ', ' ', '…']);
  assert.equal(short[0].text, '8 unchanged lines');
  assert.deepEqual(diffLines('a', 'a'), [{ op: ' ', text: 'a' }]);
  assert.deepEqual(diffLines('', 'x').map((l) => l.op), ['-', '+']);
});
