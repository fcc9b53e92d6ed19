// The UI against a master that wants credentials: it asks for them in its own form (not
// the browser's box), says when they are refused, shows a read-only user the apps and
// live updates but refuses them a change in words, and lets an admin change things.
import { assert, scenario } from './lib.mjs';

const ADMIN = 'Basic ' + Buffer.from('ops:s3cret').toString('base64');

await scenario('login', async (t) => {
  const { page } = t;
  const dialog = page.locator('dialog[open]');
  const signIn = async (user, password) => {
    await dialog.locator('#login-user').fill(user);
    await dialog.locator('#login-password').fill(password);
    await dialog.getByRole('button', { name: 'Sign in' }).click();
  };

  await t.step('the API refuses the test without credentials, and takes the admin', async () => {
    t.auth = undefined;
    const anonymous = await t.api('GET', '/v2/apps');
    assert(anonymous.status === 401, `GET /v2/apps without credentials: ${anonymous.status}`);
    t.auth = ADMIN;
    const created = await t.api('POST', '/v2/apps', { id: '/guarded', cmd: 'sleep 1000', cpus: 0.1, mem: 16, instances: 0 });
    assert(created.status === 201, `POST as admin: ${created.status} ${JSON.stringify(created.json)}`);
  });

  await t.step('the page asks for credentials in its own form', async () => {
    await page.goto(`${t.base}/ui/#/apps`);
    await dialog.locator('h2', { hasText: 'Sign in to the master' }).waitFor();
    await t.shot('01-sign-in');
  });

  await t.step('wrong credentials are refused and asked for again', async () => {
    await signIn('viewer', 'wrong');
    await dialog.getByText('Invalid username or password').waitFor();
    await dialog.locator('h2', { hasText: 'Sign in to the master' }).waitFor();
  });

  await t.step('a read-only user sees the apps, kept live', async () => {
    await signIn('viewer', 'look');
    await page.locator('tr[data-app="/guarded"]').waitFor();
    const created = await t.api('POST', '/v2/apps', { id: '/arrives-live', cmd: 'sleep 1000', cpus: 0.1, mem: 16, instances: 0 });
    assert(created.status === 201, `POST as admin: ${created.status}`);
    await page.locator('tr[data-app="/arrives-live"]').waitFor();
    await t.shot('02-read-only-apps');
  });

  await t.step('a read-only user is refused a change, in words', async () => {
    await t.open('#/apps/guarded');
    await page.getByRole('button', { name: 'Scale', exact: true }).click();
    await dialog.getByLabel('Instances').fill('2');
    await dialog.getByRole('button', { name: 'Scale' }).click();
    await page.locator('.toast.error', { hasText: /read-only/i }).waitFor();
    const { json } = await t.api('GET', '/v2/apps/guarded');
    assert(json.app.instances === 0, `instances after a refused scale: ${json.app.instances}`);
    await t.shot('03-read-only-refused');
  });

  await t.step('an admin signs in and scales', async () => {
    await page.evaluate(() => sessionStorage.clear());
    await page.context().clearCookies();
    const fresh = await page.context().newPage();
    t.page = fresh;
    await fresh.goto(`${t.base}/ui/#/apps/guarded`);
    const freshDialog = fresh.locator('dialog[open]');
    await freshDialog.locator('#login-user').fill('ops');
    await freshDialog.locator('#login-password').fill('s3cret');
    await freshDialog.getByRole('button', { name: 'Sign in' }).click();
    await fresh.getByRole('button', { name: 'Scale', exact: true }).click();
    await freshDialog.getByLabel('Instances').fill('1');
    await freshDialog.getByRole('button', { name: 'Scale' }).click();
    await t.until('the admin\'s scale to take effect', async () => (await t.api('GET', '/v2/apps/guarded')).json.app.instances === 1);
    await fresh.screenshot({ path: `${t.shots}/04-admin-scaled.png` });
  });
});
