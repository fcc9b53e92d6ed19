// The master going away under an open page: the banner says so in words, the page keeps
// what it last knew, and when the master is back the banner says that too, the page
// catches up and live updates flow again (the event stream reattached).
import { assert, scenario } from './lib.mjs';

await scenario('outage', async (t) => {
  const { page } = t;

  await t.step('an app runs and the page shows it', async () => {
    const created = await t.api('POST', '/v2/apps', { id: '/steady', cmd: 'sleep 1000', cpus: 0.1, mem: 16 });
    assert(created.status === 201, JSON.stringify(created));
    await t.open('#/apps');
    await page.locator('tr[data-app="/steady"] .badge', { hasText: 'Running' }).waitFor();
    assert(await page.locator('#banner').isHidden(), 'no banner while the master answers');
  });

  await t.step('the master stops: the banner says so', async () => {
    await t.control('stop-master');
    const banner = page.locator('#banner.down');
    await banner.waitFor();
    const text = await banner.innerText();
    assert(/master is not answering/i.test(text) && text.includes(new URL(t.base).host), `banner: ${text}`);
    await page.locator('#live.off', { hasText: 'offline' }).waitFor();
    assert(await page.locator('tr[data-app="/steady"]').isVisible(), 'what the page knew stays');
    await t.shot('31-master-gone');
  });

  await t.step('an action while it is gone fails in words', async () => {
    // Within the page (the page's own files come from the master too).
    await page.evaluate(() => (location.hash = '#/apps/steady'));
    await page.locator('#banner.down').waitFor();
    await page.locator('.alert.error', { hasText: 'cannot be reached' }).waitFor();
  });

  await t.step('the master is back: the banner says so and the page catches up', async () => {
    await t.control('start-master');
    await page.locator('#banner.up', { hasText: 'Connected again' }).waitFor({ timeout: 60000 });
    await page.locator('#live:not(.off)').waitFor();
    await page.locator('.title-row .badge', { hasText: 'Running' }).waitFor();
    await t.shot('32-master-back');
    await page.locator('#banner').waitFor({ state: 'hidden', timeout: 10000 });
  });

  await t.step('live updates flow again after the reconnect', async () => {
    await t.open('#/apps');
    await page.locator('tr[data-app="/steady"]').waitFor();
    // Changes made elsewhere show up without a reload: the event stream is attached.
    await page.waitForTimeout(500);
    const scaled = await t.api('PUT', '/v2/apps/steady', { instances: 2 });
    assert(scaled.status === 200, JSON.stringify(scaled));
    await page.locator('tr[data-app="/steady"] td.num', { hasText: '2 / 2' }).first().waitFor();
    const created = await t.api('POST', '/v2/apps', { id: '/after', cmd: 'sleep 1000', cpus: 0.1, mem: 16 });
    assert(created.status === 201, JSON.stringify(created));
    await page.locator('tr[data-app="/after"]').waitFor();
  });
});
