// Bad input and waiting apps through the UI: a negative instance count (the master's 422
// next to the field), invalid JSON in the JSON mode (refused before anything is sent), a
// duplicate id (the 409), an app that cannot fit (the decline reason on its page, in the
// queue and on its blocked deployment; force stop), the nodes page following the agent's
// used resources as tasks start, and the login form when the API answers 401.
import { assert, scenario } from './lib.mjs';

await scenario('bad_input', async (t) => {
  const { page } = t;
  const posts = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && new URL(request.url()).pathname === '/v2/apps') posts.push(request.postData());
  });
  const cpusUsed = () => page.locator('tr[data-agent] .resource', { hasText: 'CPUs' }).first().locator('.resource-text span').nth(1).innerText();

  await t.step('the nodes page shows the agent and the cluster’s totals', async () => {
    await t.open('#/nodes');
    await page.locator('tr[data-agent] .badge', { hasText: 'active' }).waitFor();
    assert((await cpusUsed()) === '0 / 4', `CPUs used: ${await cpusUsed()}`);
    await page.locator('.totals', { hasText: 'Memory' }).waitFor();
    await page.getByText('This master does not serve PXE boot').waitFor();
  });

  await t.step('the agent’s used resources follow tasks as they start, without a reload', async () => {
    const created = await t.api('POST', '/v2/apps', { id: '/dup', cmd: 'sleep 1000', cpus: 0.5, mem: 64, instances: 1 });
    assert(created.status === 201, `create: ${JSON.stringify(created)}`);
    await t.until('0.5 CPUs used', async () => (await cpusUsed()) === '0.5 / 4');
    await page.locator('tr[data-agent] .resource', { hasText: '64 MiB / 2 GiB' }).waitFor();
    await t.shot('11-nodes');
  });

  await t.step('a negative instance count: the 422 is shown next to Instances', async () => {
    await t.open('#/create');
    await page.getByLabel('ID', { exact: true }).fill('negative');
    await page.getByLabel('Command', { exact: true }).fill('sleep 1000');
    await page.getByLabel('Instances', { exact: true }).fill('-1');
    await page.getByRole('button', { name: 'Create application' }).click();
    const field = page.locator('.field.invalid[data-path="/instances"]');
    await field.locator('.field-error', { hasText: 'greater than or equal to 0' }).waitFor();
    await page.locator('.general-error .alert', { hasText: 'HTTP 422' }).waitFor();
    await t.shot('12-form-422');
    assert((await t.api('GET', '/v2/apps/negative')).status === 404, 'nothing was created');
  });

  await t.step('invalid JSON in the JSON mode is refused with a message, nothing sent', async () => {
    await page.getByRole('tab', { name: 'JSON' }).click();
    const editor = page.getByLabel('App definition (Marathon JSON)');
    await editor.fill('{"id": "broken", "cmd": "sleep 1",');
    const before = posts.length;
    await page.getByRole('button', { name: 'Create application' }).click();
    await page.locator('.general-error .alert', { hasText: 'The JSON is not valid' }).waitFor();
    assert(posts.length === before, 'no request went out');
    await page.getByRole('tab', { name: 'Form' }).click();
    await page.locator('.general-error .alert', { hasText: 'The JSON is not valid' }).waitFor();
    assert(await editor.isVisible(), 'stays in the JSON mode until the JSON is fixed');
    await t.shot('13-json-invalid');
    await editor.fill('[1, 2]');
    await page.getByRole('button', { name: 'Create application' }).click();
    await page.locator('.general-error .alert', { hasText: 'must be one object' }).waitFor();
    assert(posts.length === before, 'still nothing sent');
  });

  await t.step('a duplicate id: the 409 next to the ID', async () => {
    await t.open('#/create');
    await page.getByLabel('ID', { exact: true }).fill('dup');
    await page.getByLabel('Command', { exact: true }).fill('sleep 1000');
    await page.getByRole('button', { name: 'Create application' }).click();
    await page.locator('.field.invalid[data-path="/id"] .field-error', { hasText: 'already exists' }).waitFor();
    await page.locator('.general-error .alert', { hasText: 'HTTP 409' }).waitFor();
    await t.shot('14-form-409');
  });

  await t.step('an app that cannot fit says why it waits', async () => {
    await t.open('#/create');
    await page.getByRole('tab', { name: 'JSON' }).click();
    await page.getByLabel('App definition (Marathon JSON)').fill(JSON.stringify({ id: '/big', cmd: 'sleep 1000', cpus: 1000, mem: 32, instances: 1 }, null, 2));
    await page.getByRole('button', { name: 'Create application' }).click();
    await page.waitForURL(/#\/apps\/big$/);
    await page.locator('.title-row .badge', { hasText: 'Waiting' }).waitFor();
    const why = page.locator('.app-why .panel', { hasText: 'Why it waits' });
    await why.locator('code', { hasText: 'InsufficientCpus' }).waitFor();
    await why.getByText(/cpus/i).first().waitFor();
    await page.locator('.blocked-reason').first().waitFor();
    await t.shot('15-app-waiting');
  });

  await t.step('the queue lists it with the decline reason', async () => {
    await page.getByRole('link', { name: /^Queue/ }).click();
    const item = page.locator('.panel', { hasText: '/big' });
    await item.locator('code', { hasText: 'InsufficientCpus' }).waitFor();
    await item.locator('.badge', { hasText: 'Waiting' }).waitFor();
    assert((await page.locator('#count-queue').innerText()) === '1', 'the header counts one waiting app');
    await t.shot('16-queue');
  });

  await t.step('the deployments page shows the blocked deployment; force stop drops it', async () => {
    await page.getByRole('link', { name: /^Deployments/ }).click();
    const deployment = page.locator('section.deployment', { hasText: '/big' });
    await deployment.locator('.blocked-reason').waitFor();
    await deployment.locator('ol.steps li.current').first().waitFor();
    await t.shot('17-deployments');
    await deployment.getByRole('button', { name: 'Force stop' }).click();
    await page.locator('dialog[open]').getByRole('button', { name: 'Force stop' }).click();
    await deployment.waitFor({ state: 'detached' });
    await page.getByText('No deployment is running').waitFor();
    const left = await t.api('GET', '/v2/deployments');
    assert(Array.isArray(left.json) && left.json.length === 0, `deployments: ${JSON.stringify(left.json)}`);
  });

  await t.step('apps list: filters by status and by text, kept in the URL', async () => {
    await t.open('#/apps');
    await page.locator('tr[data-app="/big"] .badge', { hasText: 'Waiting' }).waitFor();
    await page.getByRole('button', { name: /^Waiting/ }).click();
    await page.waitForURL(/status=Waiting/);
    await page.locator('tr[data-app="/dup"]').waitFor({ state: 'detached' });
    await page.getByRole('button', { name: /^All/ }).click();
    await page.getByRole('searchbox').fill('dup');
    await page.waitForURL(/q=dup/);
    await page.locator('tr[data-app="/big"]').waitFor({ state: 'detached' });
    await page.locator('tr[data-app="/dup"]').waitFor();
    await page.reload();
    await page.locator('tr[data-app="/dup"]').waitFor();
    assert((await page.getByRole('searchbox').inputValue()) === 'dup', 'the filter survives a reload');
    await page.keyboard.press('Escape');
  });

  await t.step('an API that wants credentials: the login form, then every call carries them', async () => {
    const expected = `Basic ${Buffer.from('admin:secret').toString('base64')}`;
    const seen = [];
    // A stub in front of the master: 401 unless the request has the credentials.
    await page.route(/\/(v2|master|v1)\//, (route) => {
      const auth = route.request().headers().authorization;
      seen.push(auth ?? '');
      if (auth === expected) return route.continue();
      return route.fulfill({ status: 401, contentType: 'application/json', headers: { 'www-authenticate': 'Basic realm="plinth"' }, body: JSON.stringify({ message: 'credentials required' }) });
    });
    await t.open('#/apps');
    await page.reload();
    const dialog = page.locator('dialog[open]', { hasText: 'Sign in to the master' });
    await dialog.waitFor();
    await dialog.getByText('credentials required').waitFor();
    await t.shot('18-login');
    await dialog.getByLabel('User').fill('admin');
    await dialog.getByLabel('Password').fill('secret');
    await dialog.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('tr[data-app="/dup"]').waitFor();
    assert(seen.includes(expected), 'the retried calls carry the credentials');
    assert((await page.evaluate(() => sessionStorage.getItem('plinth.auth'))) === expected.slice(6), 'kept in sessionStorage');
    // The event stream carries them too: a change shows up live.
    await t.api('PUT', '/v2/apps/dup', { instances: 2 });
    await page.locator('tr[data-app="/dup"] td.num', { hasText: '2 / 2' }).first().waitFor();
    await page.unroute(/\/(v2|master|v1)\//);
  });

  await t.step('groups in the tree, health checks in the bar', async () => {
    const check = { protocol: 'HTTP', path: '/', portIndex: 0, gracePeriodSeconds: 30, intervalSeconds: 2, timeoutSeconds: 2, maxConsecutiveFailures: 3, delaySeconds: 1 };
    for (const app of [
      { id: '/prod/web', cmd: 'python3 -m http.server $PORT0', cpus: 0.25, mem: 64, instances: 2, healthChecks: [check], labels: { tier: 'web' } },
      { id: '/prod/worker', cmd: 'while true; do date; sleep 5; done', cpus: 0.1, mem: 32, instances: 1 },
    ]) {
      const created = await t.api('POST', '/v2/apps', app);
      assert(created.status === 201, JSON.stringify(created));
    }
    await t.open('#/apps');
    const group = page.locator('tr[data-group="/prod"]');
    await group.locator('td.num', { hasText: '3 / 3' }).waitFor();
    await page.locator('tr[data-app="/prod/web"] td.health-col .health-bar[aria-label="2 healthy"]').waitFor();
    await t.shot('19-apps-tree');
    await group.click();
    await page.locator('tr[data-app="/prod/web"]').waitFor({ state: 'detached' });
    await group.click();
    await page.locator('tr[data-app="/prod/web"]').click();
    await page.waitForURL(/#\/apps\/prod\/web$/);
    await page.locator('.health.healthy').nth(1).waitFor();
    await page.locator('a.address').first().waitFor();
    await t.shot('20-app-healthy');
    await t.open('#/nodes');
    // dup 2 × 0.5, web 2 × 0.25, worker 0.1
    await t.until('the new tasks in the agent’s CPUs', async () => (await cpusUsed()) === '1.6 / 4');
    await t.shot('21-nodes-busy');
  });

  await t.step('PXE machines (from a stand-in /v1/machines: this master serves no PXE boot)', async () => {
    const machines = {
      defaultProfile: 'agent',
      machines: [
        { mac: '52:54:00:12:34:56', ip: '10.0.0.101', hostname: 'rack2-a', state: 'registered', agentId: 'a1', profile: { role: 'agent', hostname: 'rack2-a', attributes: { rack: 'r2' } }, lastBoot: Date.now() / 1000 - 120, bootedVia: 'ipxe-script' },
        { mac: '52:54:00:12:34:57', ip: null, hostname: 'rack2-b', state: 'configured', agentId: null, profile: { role: 'agent', hostname: 'rack2-b', attributes: {} }, lastBoot: null, bootedVia: null },
      ],
    };
    await page.route('**/v1/machines', (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(machines) }));
    await page.reload();
    await page.locator('td', { hasText: '52:54:00:12:34:56' }).waitFor();
    await page.locator('.badge', { hasText: 'registered' }).waitFor();
    await page.locator('.badge', { hasText: 'configured' }).waitFor();
    await page.locator('.tag', { hasText: 'rack:r2' }).waitFor();
    await t.shot('22-nodes-pxe-stand-in');
    await page.unroute('**/v1/machines');
  });

  await t.step('drain and undrain the agent', async () => {
    const row = page.locator('tr[data-agent]').first();
    await row.getByRole('button', { name: 'Drain' }).click();
    await page.locator('dialog[open]').getByRole('button', { name: 'Drain' }).click();
    await row.locator('.badge', { hasText: 'draining' }).waitFor();
    const slaves = await t.api('GET', '/master/slaves');
    assert(slaves.json.slaves[0].draining === true, JSON.stringify(slaves.json));
    await row.getByRole('button', { name: 'Undrain' }).click();
    await page.locator('dialog[open]').getByRole('button', { name: 'Undrain' }).click();
    await row.locator('.badge', { hasText: 'active' }).waitFor();
  });
});
