// A Docker image on a BRIDGE network, as in the Marathon tutorial: its task shows the
// agent's `host:port`, a link that says which container port it reaches, and clicking it
// opens the app (the greeter answers). The image is `127.0.0.1:5000/demo/hello`, which the
// test pushed to the registry the master pulls through.
import { assert, scenario } from './lib.mjs';

const APP = {
  id: '/hello-docker',
  cpus: 0.2,
  mem: 64,
  instances: 1,
  container: { type: 'DOCKER', docker: { image: '127.0.0.1:5000/demo/hello', network: 'BRIDGE', portMappings: [{ containerPort: 3000, hostPort: 0, protocol: 'tcp' }] } },
};

await scenario('docker_links', async (t) => {
  const { page } = t;
  const link = page.locator('tr[data-task] a.address').first();

  await t.step('a Docker BRIDGE app is deployed', async () => {
    const created = await t.api('POST', '/v2/apps', APP);
    assert(created.status === 201, `POST /v2/apps: ${created.status} ${JSON.stringify(created.json)}`);
  });

  let href;
  await t.step('its task shows host:port as a link to the container port', async () => {
    await t.open('#/apps/hello-docker');
    await page.locator('.title-row .badge', { hasText: 'Running' }).waitFor();
    await link.waitFor();
    const text = await link.innerText();
    const { json } = await t.api('GET', '/v2/apps/hello-docker/tasks');
    const task = json.tasks[0];
    assert(text === `${task.host}:${task.ports[0]}`, `link text ${text} for ${JSON.stringify(task)}`);
    href = await link.getAttribute('href');
    assert(href === `http://${task.host}:${task.ports[0]}/`, `href ${href}`);
    assert((await link.getAttribute('title')) === 'container port 3000/tcp', `title ${await link.getAttribute('title')}`);
    assert((await link.getAttribute('target')) === '_blank', 'opens in a new tab');
    await t.shot('01-docker-task-links');
  });

  await t.step('clicking the link opens the app', async () => {
    const [opened] = await Promise.all([page.context().waitForEvent('page'), link.click()]);
    await opened.waitForLoadState();
    assert(opened.url() === href, `opened ${opened.url()}`);
    // The greeter answers `/` with its own "not found" (it greets on /greet/NAME only).
    const body = (await opened.locator('body').innerText()).trim();
    assert(body === 'not found', `the app answers, not the browser's error page: ${body}`);
    await opened.goto(`${href}greet/browser`);
    const greeting = await opened.locator('body').innerText();
    assert(greeting.trim() === 'Hello browser!', `greeting: ${greeting}`);
    await opened.screenshot({ path: `${t.shots}/02-app-opened.png` });
    await opened.close();
  });

  await t.step('the app is destroyed', async () => {
    const destroyed = await t.api('DELETE', '/v2/apps/hello-docker');
    assert(destroyed.status === 200, `DELETE: ${destroyed.status}`);
  });
});
