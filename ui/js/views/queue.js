// #/queue: apps waiting for launches and why (the decline reasons of the last offers,
// the backoff delay, a failed image pull). Also `watchQueue`, which the other views use.

import { get, getQueue, request } from '../api.js';
import { appHref, errorText, fill, h, notify, timeEl } from '../dom.js';
import { coalesce, on } from '../events.js';
import { declineReasons, isDelayed, isWaiting, STATUS } from '../model.js';
import { badge, empty, panel } from '../widgets.js';

/** While anything waits, the queue is read again this often: offers are declined on
 * every scheduling round and no event says so. Nothing is polled while it is empty. */
const WAITING_REFRESH_MS = 5000;

/**
 * Keeps `/v2/queue` current for a view: read now, on `refresh()` (coalesced; views call
 * it for events that touch apps) and every few seconds only while the queue has entries.
 */
export function watchQueue(onQueue) {
  let timer;
  let stopped = false;
  const load = coalesce(async () => {
    clearTimeout(timer);
    try {
      const queue = await getQueue();
      if (stopped) return;
      onQueue(queue);
      if ((queue?.queue ?? []).length) timer = setTimeout(() => load(), WAITING_REFRESH_MS);
    } catch {
      // the banner says when the master is gone; 'resync' reloads
    }
  }, 300);
  const off = on('resync', () => load());
  load();
  return {
    refresh: () => load(),
    stop() {
      stopped = true;
      clearTimeout(timer);
      load.cancel();
      off();
    },
  };
}

/** Why an app waits, in words: the queue's reasons and the offers declined, by reason. */
export function whyWaiting(entry) {
  if (!entry) return null;
  const delayed = isDelayed(entry);
  const reasons = entry.reasons ?? [];
  const declines = declineReasons(entry);
  const processed = entry.processedOffersSummary?.rejectSummaryLastOffers?.[0]?.processed ?? 0;
  return h(
    'div',
    { class: 'why' },
    delayed
      ? h('p', {}, h('strong', {}, 'Delayed: '), `the next launch waits ${entry.delay.timeLeftSeconds} s more (backoff after failed tasks).`)
      : null,
    reasons.length ? h('ul', { class: 'reasons' }, reasons.map((r) => h('li', {}, r))) : null,
    declines.length
      ? h(
          'table',
          { class: 'declines' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Declined because'), h('th', { class: 'num' }, 'Offers'))),
          h(
            'tbody',
            {},
            declines.map((d) => h('tr', {}, h('td', {}, h('code', {}, d.reason)), h('td', { class: 'num' }, `${d.declined} of ${d.processed || processed}`))),
          ),
        )
      : null,
    entry.lastImagePull
      ? h('p', { class: 'muted small' }, `Image pull: ${entry.lastImagePull.state ?? ''}${entry.lastImagePull.message ? ` — ${entry.lastImagePull.message}` : ''}`)
      : null,
  );
}

/** "Launch now" for a delayed app (DELETE /v2/queue/{id}/delay). */
export function resetDelayButton(appId) {
  return h(
    'button',
    {
      type: 'button',
      onclick: async () => {
        try {
          await request('DELETE', `/v2/queue/${String(appId).replace(/^\/+/, '').split('/').map(encodeURIComponent).join('/')}/delay`);
          notify(`${appId}: the launch delay was reset`);
        } catch (error) {
          notify(errorText(error), 'error');
        }
      },
    },
    'Launch now',
  );
}

export function mount(root) {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  fill(root, h('div', { class: 'page-head' }, h('h1', {}, 'Queue')), h('p', { class: 'lead muted' }, 'Apps with instances waiting to launch, and why.'), body);
  const watch = watchQueue((queue) => {
    render(queue?.queue ?? []);
  });
  const offs = [on('*', (event, type) => {
    if (type !== 'resync') watch.refresh();
  })];

  function render(entries) {
    if (!entries.length) {
      fill(body, empty('Nothing waits: every app has the instances it asks for.'));
      return;
    }
    fill(
      body,
      entries.map((entry) => {
        const id = entry.app?.id ?? '?';
        const status = isDelayed(entry) ? STATUS.DELAYED : isWaiting(entry) ? STATUS.WAITING : 'Launching';
        return panel(
          null,
          h(
            'div',
            { class: 'queue-head', tabindex: 0, 'data-row': '', 'data-href': appHref(id) },
            h('a', { href: appHref(id), class: 'app-link' }, id),
            badge(status),
            h('span', { class: 'muted' }, `${entry.count} instance${entry.count === 1 ? '' : 's'} to launch · waiting since `, timeEl(entry.since)),
            isDelayed(entry) ? resetDelayButton(id) : null,
          ),
          whyWaiting(entry),
        );
      }),
    );
  }

  return {
    unmount() {
      watch.stop();
      offs.forEach((off) => off());
    },
  };
}
