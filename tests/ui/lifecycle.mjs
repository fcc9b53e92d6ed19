// The tutorial as a user clicks it: create `hello` through the form, see it go from
// Deploying to Running, scale it to 3, kill a task and see it replaced, read its log,
// edit the command and watch the rolling deployment, diff the versions, roll back to the
// first version, destroy it; keyboard navigation and a phone-sized screen on the way.
import { assert, scenario } from './lib.mjs';

const CMD = 'echo hello; sleep 1000';
const NEW_CMD = 'echo bye; sleep 1000';

await scenario('lifecycle', async (t) => {
  const { page } = t;
  // Every status the app page shows, in order, however briefly.
  await page.context().addInitScript(() => {
    window.__statuses = [];
    new MutationObserver(() => {
      const text = document.querySelector('.title-row .badge')?.textContent;
      if (text && window.__statuses.at(-1) !== text) window.__statuses.push(text);
    }).observe(document, { subtree: true, childList: true, characterData: true });
  });
  const status = () => page.locator('.title-row .badge').first();
  const tasks = page.locator('tr[data-task]');
  const runningTasks = async () =>
    (await tasks.evaluateAll((rows) => rows.filter((r) => r.querySelector('.state')?.textContent === 'Running').map((r) => r.dataset.task)));

  await t.step('a browser at / is sent to the UI, which shows no apps yet', async () => {
    await page.goto(`${t.base}/`);
    await t.started();
    await page.waitForURL(/\/ui\/#\/apps$/);
    await page.getByText('No applications yet.').waitFor();
    assert((await page.title()).includes('Applications'), `title: ${await page.title()}`);
    await t.shot('01-apps-empty');
  });

  await t.step('the form creates hello', async () => {
    await page.getByRole('link', { name: 'Create application' }).first().click();
    await page.waitForURL(/#\/create$/);
    await page.getByLabel('ID', { exact: true }).fill('hello');
    await page.getByLabel('Command', { exact: true }).fill(CMD);
    await page.getByLabel('CPUs', { exact: true }).fill('0.1');
    await page.getByLabel('Memory (MiB)', { exact: true }).fill('32');
    await page.getByLabel('Instances', { exact: true }).fill('1');
    await t.shot('02-create-form');
    await page.getByRole('button', { name: 'Create application' }).click();
    await page.waitForURL(/#\/apps\/hello$/);
  });

  await t.step('hello goes from Deploying to Running', async () => {
    await page.locator('.title-row .badge', { hasText: 'Running' }).waitFor();
    await page.getByText('1 running of 1').waitFor();
    const seen = await page.evaluate(() => window.__statuses);
    assert(seen.indexOf('Deploying') >= 0 && seen.indexOf('Deploying') < seen.lastIndexOf('Running'), `statuses seen: ${seen.join(' → ')}`);
    await tasks.first().locator('a.address').first().waitFor();
  });

  await t.step('the list shows hello running, and the keyboard gets there', async () => {
    await page.getByRole('link', { name: 'Applications' }).first().click();
    const row = page.locator('tr[data-app="/hello"]');
    await row.locator('.badge', { hasText: 'Running' }).waitFor();
    assert((await row.locator('td.num').first().innerText()) === '1 / 1', 'instances 1 / 1');
    await t.shot('03-apps-running');
    await page.locator('main').focus();
    await page.keyboard.press('j');
    assert(await row.evaluate((el) => el === document.activeElement), 'j focuses the first row');
    await page.keyboard.press('Enter');
    await page.waitForURL(/#\/apps\/hello$/);
  });

  await t.step('Scale to 3 by clicking', async () => {
    await page.getByRole('button', { name: 'Scale', exact: true }).click();
    const dialog = page.locator('dialog[open]');
    await dialog.getByLabel('Instances').fill('3');
    await dialog.getByRole('button', { name: 'Scale' }).click();
    await page.getByText('3 running of 3').waitFor();
    await t.until('3 running tasks', async () => (await runningTasks()).length === 3);
    await t.shot('04-app-scaled');
  });

  let killed;
  await t.step('a killed task is replaced', async () => {
    const before = await runningTasks();
    killed = before[0];
    await page.locator(`tr[data-task="${killed}"] input[type=checkbox]`).check();
    await page.getByRole('button', { name: 'Kill', exact: true }).click();
    await page.locator('dialog[open]').getByRole('button', { name: 'Kill' }).click();
    await t.until('the killed task to be replaced', async () => {
      const now = await runningTasks();
      return now.length === 3 && !now.includes(killed) && now;
    });
  });

  await t.step('a task’s stdout, followed, through the master', async () => {
    await tasks.first().getByRole('button', { name: /^Logs/ }).click();
    await page.locator('pre.log-output', { hasText: 'hello' }).waitFor();
    await page.locator('.log-state', { hasText: 'following' }).waitFor();
    await page.locator('.logs').getByRole('button', { name: 'stderr' }).click();
    await page.locator('.log-state', { hasText: 'following' }).waitFor();
    assert(!(await page.locator('pre.log-output').innerText()).includes('hello'), 'stderr is not stdout');
    await page.locator('.logs').getByRole('button', { name: 'stdout' }).click();
    await page.locator('pre.log-output', { hasText: 'hello' }).waitFor();
    await t.shot('05-app-logs');
    await page.getByRole('button', { name: 'Close the logs' }).click();
    await page.locator('.logs').waitFor({ state: 'detached' });
  });

  await t.step('Edit the command; the rolling deployment replaces every task', async () => {
    const oldTasks = await runningTasks();
    await page.getByRole('link', { name: 'Edit', exact: true }).click();
    await page.waitForURL(/#\/edit\/hello$/);
    const command = page.getByLabel('Command', { exact: true });
    await t.until('the form to hold the current command', async () => (await command.inputValue()) === CMD);
    assert(await page.getByLabel('ID', { exact: true }).isDisabled(), 'the id cannot change');
    await command.fill(NEW_CMD);
    await page.evaluate(() => (window.__statuses = []));
    await page.getByRole('button', { name: 'Save and deploy' }).click();
    await page.waitForURL(/#\/apps\/hello$/);
    await page.locator('.app-what', { hasText: NEW_CMD }).waitFor();
    await t.until('three new tasks, none of the old ones', async () => {
      const now = await runningTasks();
      return now.length === 3 && now.every((id) => !oldTasks.includes(id)) && now;
    });
    await page.locator('.title-row .badge', { hasText: 'Running' }).waitFor();
    const seen = await page.evaluate(() => window.__statuses);
    assert(seen.includes('Deploying'), `the deployment was shown: ${seen.join(' → ')}`);
    assert((await page.locator('.badge.status-old').count()) === 0, 'no task of the old command is left');
  });

  await t.step('versions: a diff between two, and the first version applied again', async () => {
    await page.getByRole('link', { name: /^Versions/ }).click();
    await page.waitForURL(/tab=versions/);
    const rows = page.locator('table.versions tbody tr');
    await t.until('three versions (create, scale, edit)', async () => (await rows.count()) >= 3);
    const diff = page.locator('pre.diff');
    await diff.waitFor();
    const added = await diff.locator('.add').allInnerTexts();
    const removed = await diff.locator('.del').allInnerTexts();
    assert(added.some((l) => l.includes(NEW_CMD)) && removed.some((l) => l.includes(CMD)), `diff: +${added} -${removed}`);
    await t.shot('06-app-versions-diff');
    // From the first version to the current one: instances and cmd changed.
    await rows.last().locator('input[name=diff-from]').check();
    await page.locator('.diff-slot', { hasText: 'instances' }).waitFor();
    await rows.last().getByRole('button', { name: 'Apply this version' }).click();
    await page.locator('dialog[open]').getByRole('button', { name: 'Apply' }).click();
    await page.locator('.app-what', { hasText: CMD }).waitFor();
    await page.getByText('1 running of 1').waitFor();
    await page.getByRole('link', { name: /^Tasks/ }).click();
    await t.until('one task of the first version', async () => (await runningTasks()).length === 1);
    await page.locator('.title-row .badge', { hasText: 'Running' }).waitFor();
  });

  await t.step('the configuration tab shows the definition', async () => {
    await page.getByRole('link', { name: 'Configuration' }).click();
    await page.locator('dl.config', { hasText: CMD }).waitFor();
    await page.locator('pre.json', { hasText: '"mem": 32' }).waitFor();
  });

  await t.step('on a phone-sized screen', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('link', { name: /^Tasks/ }).click();
    await t.shot('07-phone-app');
    await page.getByRole('link', { name: 'Applications' }).first().click();
    await page.locator('tr[data-app="/hello"]').waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 1, `the page scrolls sideways by ${overflow}px`);
    await t.shot('08-phone-apps');
    await page.setViewportSize({ width: 1280, height: 860 });
  });

  await t.step('keyboard shortcuts: g n, g d, ?', async () => {
    await page.locator('main').focus();
    await page.keyboard.press('g');
    await page.keyboard.press('n');
    await page.waitForURL(/#\/nodes$/);
    await page.keyboard.press('g');
    await page.keyboard.press('d');
    await page.waitForURL(/#\/deployments$/);
    await page.keyboard.press('?');
    await page.locator('dialog[open]', { hasText: 'Keyboard shortcuts' }).waitFor();
    await page.keyboard.press('Escape');
    await page.locator('dialog[open]').waitFor({ state: 'detached' });
  });

  await t.step('Destroy', async () => {
    await t.open('#/apps/hello');
    await page.getByRole('button', { name: 'Destroy' }).click();
    await page.locator('dialog[open]').getByRole('button', { name: 'Destroy' }).click();
    await page.waitForURL(/#\/apps$/);
    await page.getByText('No applications yet.').waitFor();
    const left = await t.api('GET', '/v2/apps');
    assert((left.json.apps ?? []).length === 0, `apps left: ${JSON.stringify(left.json)}`);
  });
});
