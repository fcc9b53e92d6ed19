// #/create and #/edit/<id>: an app definition as a form (ID, command, resources,
// instances, Docker image, network, ports, environment, labels, health checks,
// constraints) or as JSON. The master validates: its 422 details are shown next to the
// fields their `path` names (and listed at the top), a 409 next to the ID.

import { appPath, get, request } from '../api.js';
import { appHref, errorText, fill, h, notify } from '../dom.js';
import { definitionFromForm, definitionOf, EMPTY_ROWS, fieldForPath, formFromDefinition, jsonErrorLocation, normalizeId } from '../model.js';

const NEW_APP = { id: '', cmd: '', cpus: 0.1, mem: 128, disk: 0, instances: 1 };
const OPERATORS = ['UNIQUE', 'CLUSTER', 'GROUP_BY', 'LIKE', 'UNLIKE', 'MAX_PER', 'IS'];
const CHECK_PROTOCOLS = ['HTTP', 'HTTPS', 'TCP', 'COMMAND', 'MESOS_HTTP', 'MESOS_TCP'];

let fieldSerial = 0;

export function mount(root, route) {
  const editing = route.view === 'edit';
  const id = editing ? normalizeId(route.id) : null;
  const s = {
    base: editing ? null : {},
    form: formFromDefinition(NEW_APP),
    mode: route.query.mode === 'json' ? 'json' : 'form',
    json: '',
    error: null, // an ApiError from the master, or {message, local: true}
    busy: false,
    loadError: null,
  };
  if (s.mode === 'json') s.json = JSON.stringify(definitionFromForm(s.form, s.base ?? {}), null, 2);

  const page = h('div', { class: 'form-page' });
  fill(root, page);

  // -------------------------------------------------------------------------------------

  function render() {
    if (editing && !s.base) {
      fill(page, head(), s.loadError ? h('div', { class: 'alert error' }, errorText(s.loadError)) : h('p', { class: 'muted' }, 'Loading…'));
      return;
    }
    const body = s.mode === 'json' ? jsonEditor() : formFields();
    fill(
      page,
      head(),
      h(
        'form',
        { class: 'app-form', novalidate: true, onsubmit: (event) => {
          event.preventDefault();
          submit(false);
        } },
        h('div', { class: 'general-error', 'data-path': '/' }),
        body,
        h(
          'div',
          { class: 'form-actions' },
          h('button', { type: 'submit', class: 'primary', disabled: s.busy }, s.busy ? 'Sending…' : editing ? 'Save and deploy' : 'Create application'),
          h('a', { class: 'button', href: editing ? appHref(id) : '#/apps' }, 'Cancel'),
        ),
      ),
    );
    placeErrors();
  }

  function head() {
    return h(
      'div',
      { class: 'page-head' },
      h('div', {}, editing ? h('nav', { class: 'crumbs' }, h('a', { href: '#/apps' }, 'Applications'), ' / ', h('a', { href: appHref(id) }, id)) : null, h('h1', {}, editing ? `Edit ${id}` : 'Create application')),
      h(
        'div',
        { class: 'segmented', role: 'tablist', 'aria-label': 'Editor' },
        h('button', { type: 'button', role: 'tab', 'aria-selected': String(s.mode === 'form'), class: s.mode === 'form' ? 'active' : null, onclick: () => switchMode('form') }, 'Form'),
        h('button', { type: 'button', role: 'tab', 'aria-selected': String(s.mode === 'json'), class: s.mode === 'json' ? 'active' : null, onclick: () => switchMode('json') }, 'JSON'),
      ),
    );
  }

  function switchMode(mode) {
    if (mode === s.mode) return;
    if (mode === 'json') {
      s.json = JSON.stringify(definitionFromForm(s.form, s.base), null, 2);
      s.mode = 'json';
      s.error = null;
    } else {
      const parsed = parseJson();
      if (!parsed) return;
      s.base = parsed;
      s.form = formFromDefinition(parsed);
      s.mode = 'form';
      s.error = null;
    }
    render();
  }

  /** The JSON mode's text as an object, or null with the reason shown. */
  function parseJson() {
    let value;
    try {
      value = JSON.parse(s.json);
    } catch (error) {
      const where = jsonErrorLocation(s.json, error.message);
      s.error = { local: true, message: `The JSON is not valid${where ? ` (${where})` : ''}: ${error.message}. Nothing was sent.` };
      render();
      return null;
    }
    if (!value || typeof value !== 'object' || Array.isArray(value)) {
      s.error = { local: true, message: 'The JSON must be one object: an app definition such as {"id": "/hello", "cmd": "…"}. Nothing was sent.' };
      render();
      return null;
    }
    return value;
  }

  async function submit(force) {
    let def;
    if (s.mode === 'json') {
      def = parseJson();
      if (!def) return;
    } else {
      def = definitionFromForm(s.form, s.base);
    }
    s.busy = true;
    s.error = null;
    render();
    try {
      const answer = editing
        ? await request('PUT', appPath(id, force ? '?force=true' : ''), { body: { ...def, id } })
        : await request('POST', '/v2/apps', { body: def });
      const target = editing ? id : normalizeId(answer?.id ?? def.id);
      notify(editing ? `${id}: saved, deploying` : `${target} created`);
      location.hash = appHref(target);
    } catch (error) {
      s.busy = false;
      s.error = error;
      render();
      page.querySelector('.alert')?.scrollIntoView({ block: 'center' });
    }
  }

  // -------------------------------------------------------------------------------------
  // Errors next to fields

  function placeErrors() {
    const general = page.querySelector('.general-error');
    const error = s.error;
    if (!error) return;
    if (error.local) {
      fill(general, h('div', { class: 'alert error', role: 'alert' }, h('p', {}, error.message)));
      return;
    }
    const slots = new Map([...page.querySelectorAll('[data-path]')].map((el) => [el.dataset.path, el]));
    const paths = [...slots.keys()].filter((p) => p !== '/');
    const unplaced = [];
    for (const detail of error.details ?? []) {
      const target = s.mode === 'form' ? fieldForPath(detail.path, paths) : undefined;
      const message = (detail.errors ?? []).join('; ');
      if (target) {
        const slot = slots.get(target);
        slot.classList.add('invalid');
        slot.append(h('p', { class: 'field-error', role: 'alert' }, message, detail.path !== target ? h('span', { class: 'muted small' }, ` (${detail.path})`) : null));
      } else {
        unplaced.push(detail);
      }
    }
    if (error.status === 409 && s.mode === 'form' && !editing) {
      const slot = slots.get('/id');
      slot?.classList.add('invalid');
      slot?.append(h('p', { class: 'field-error', role: 'alert' }, error.message));
    }
    const count = (error.details ?? []).length;
    fill(
      general,
      h(
        'div',
        { class: 'alert error', role: 'alert' },
        h('p', {}, errorText(error), count && unplaced.length < count ? ` — ${count - unplaced.length} shown next to the fields below.` : ''),
        unplaced.length ? h('ul', { class: 'details' }, unplaced.map((d) => h('li', {}, h('code', {}, d.path || '/'), ' ', (d.errors ?? []).join('; ')))) : null,
        error.status === 409 && error.body?.deployments && editing
          ? h('p', {}, h('button', { type: 'button', class: 'danger', onclick: () => submit(true) }, 'Force: replace the running deployment'))
          : null,
      ),
    );
  }

  // -------------------------------------------------------------------------------------
  // The form

  function formFields() {
    const f = s.form;
    return [
      h(
        'fieldset',
        { class: 'grid' },
        h('legend', {}, 'General'),
        field({ label: 'ID', path: '/id', value: f.id, set: (v) => (f.id = v), placeholder: '/hello', hint: 'Slashes make groups: /prod/web', disabled: editing, required: true, wide: true }),
        field({ label: 'Command', path: '/cmd', value: f.cmd, set: (v) => (f.cmd = v), placeholder: 'echo hello; sleep 1000', hint: 'Run by /bin/sh -c; HOST apps get their ports as $PORT0…', wide: true, multiline: true }),
        field({ label: 'CPUs', path: '/cpus', value: f.cpus, set: (v) => (f.cpus = v), type: 'number', step: 'any', inputmode: 'decimal' }),
        field({ label: 'Memory (MiB)', path: '/mem', value: f.mem, set: (v) => (f.mem = v), type: 'number', step: 'any', inputmode: 'decimal' }),
        field({ label: 'Disk (MiB)', path: '/disk', value: f.disk, set: (v) => (f.disk = v), type: 'number', step: 'any', inputmode: 'decimal' }),
        field({ label: 'Instances', path: '/instances', value: f.instances, set: (v) => (f.instances = v), type: 'number', step: 1, inputmode: 'numeric' }),
      ),
      h(
        'fieldset',
        { class: 'grid', 'data-path': '/container' },
        h('legend', {}, 'Docker container'),
        field({ label: 'Image', path: '/container/docker/image', value: f.image, set: (v) => (f.image = v), placeholder: 'registry.local:5000/demo/hello (empty: a command app)', wide: true }),
        selectField({
          label: 'Network',
          path: '/networks',
          value: f.network,
          options: [['host', 'Host: the agent’s network, ports as $PORT0…'], ['bridge', 'Bridge: an address of its own, port mappings']],
          set: (v) => {
            f.network = v;
            render();
          },
          wide: true,
        }),
      ),
      f.network === 'bridge'
        ? rows({
            legend: 'Port mappings',
            path: '/container/portMappings',
            list: f.portMappings,
            empty: 'No port mappings.',
            add: 'Add a port mapping',
            make: EMPTY_ROWS.portMappings,
            cells: (row, i) => [
              cell('Container port', `/container/portMappings(${i})/containerPort`, row, 'containerPort', { type: 'number' }),
              cell('Host port', `/container/portMappings(${i})/hostPort`, row, 'hostPort', { type: 'number', title: '0: any free port of the agent' }),
              cell('Service port', `/container/portMappings(${i})/servicePort`, row, 'servicePort', { type: 'number' }),
              selectCell('Protocol', `/container/portMappings(${i})/protocol`, row, 'protocol', ['tcp', 'udp', 'udp,tcp']),
              cell('Name', `/container/portMappings(${i})/name`, row, 'name'),
            ],
          })
        : rows({
            legend: 'Ports',
            path: '/portDefinitions',
            list: f.portDefinitions,
            empty: editing ? 'No ports.' : 'None given: the app gets one port, $PORT0.',
            add: 'Add a port',
            make: EMPTY_ROWS.portDefinitions,
            cells: (row, i) => [
              cell('Port', `/portDefinitions(${i})/port`, row, 'port', { type: 'number', title: '0: any free port of the agent' }),
              selectCell('Protocol', `/portDefinitions(${i})/protocol`, row, 'protocol', ['tcp', 'udp', 'udp,tcp']),
              cell('Name', `/portDefinitions(${i})/name`, row, 'name'),
            ],
          }),
      rows({
        legend: 'Environment',
        path: '/env',
        list: f.env,
        empty: 'No variables.',
        add: 'Add a variable',
        make: EMPTY_ROWS.env,
        cells: (row) => [cell('Name', `/env/${row.key}/name`, row, 'key', { placeholder: 'NAME' }), cell('Value', `/env/${row.key}`, row, 'value')],
      }),
      rows({
        legend: 'Labels',
        path: '/labels',
        list: f.labels,
        empty: 'No labels.',
        add: 'Add a label',
        make: EMPTY_ROWS.labels,
        cells: (row) => [cell('Key', `/labels/${row.key}/key`, row, 'key'), cell('Value', `/labels/${row.key}`, row, 'value')],
      }),
      rows({
        legend: 'Health checks',
        path: '/healthChecks',
        list: f.healthChecks,
        empty: 'No health checks: running tasks count as ready.',
        add: 'Add a health check',
        make: EMPTY_ROWS.healthChecks,
        cells: (row, i) => [
          selectCell('Protocol', `/healthChecks(${i})/protocol`, row, 'protocol', CHECK_PROTOCOLS, () => render()),
          row.protocol === 'COMMAND'
            ? cell('Command', `/healthChecks(${i})/command`, row, 'command', { wide: true })
            : [
                row.protocol.includes('TCP') ? null : cell('Path', `/healthChecks(${i})/path`, row, 'path'),
                cell('Port index', `/healthChecks(${i})/portIndex`, row, 'portIndex', { type: 'number' }),
              ],
          cell('Grace (s)', `/healthChecks(${i})/gracePeriodSeconds`, row, 'gracePeriodSeconds', { type: 'number', placeholder: '300' }),
          cell('Interval (s)', `/healthChecks(${i})/intervalSeconds`, row, 'intervalSeconds', { type: 'number', placeholder: '60' }),
          cell('Timeout (s)', `/healthChecks(${i})/timeoutSeconds`, row, 'timeoutSeconds', { type: 'number', placeholder: '20' }),
          cell('Max failures', `/healthChecks(${i})/maxConsecutiveFailures`, row, 'maxConsecutiveFailures', { type: 'number', placeholder: '3' }),
        ],
      }),
      rows({
        legend: 'Constraints',
        path: '/constraints',
        list: f.constraints,
        empty: 'No constraints: tasks go wherever there is room.',
        add: 'Add a constraint',
        make: EMPTY_ROWS.constraints,
        cells: (row, i) => [
          cell('Field', `/constraints(${i})/field`, row, 'field', { placeholder: 'hostname' }),
          selectCell('Operator', `/constraints(${i})/operator`, row, 'operator', OPERATORS),
          cell('Value', `/constraints(${i})/value`, row, 'value', { placeholder: 'optional' }),
        ],
      }),
    ];
  }

  function field({ label, path, value, set, type = 'text', hint, wide, multiline, ...attrs }) {
    const inputId = `f${++fieldSerial}`;
    const props = { id: inputId, name: path, value, 'aria-describedby': hint ? `${inputId}-hint` : null, oninput: (e) => set(e.target.value), ...attrs };
    const input = multiline ? h('textarea', { ...props, rows: 2, spellcheck: 'false' }) : h('input', { ...props, type, autocomplete: 'off', spellcheck: 'false' });
    return h(
      'div',
      { class: ['field', wide ? 'wide' : null], 'data-path': path },
      h('label', { for: inputId }, label),
      input,
      hint ? h('p', { class: 'hint', id: `${inputId}-hint` }, hint) : null,
    );
  }

  function selectField({ label, path, value, options, set, wide }) {
    const inputId = `f${++fieldSerial}`;
    return h(
      'div',
      { class: ['field', wide ? 'wide' : null], 'data-path': path },
      h('label', { for: inputId }, label),
      h('select', { id: inputId, name: path, onchange: (e) => set(e.target.value) }, options.map(([v, text]) => h('option', { value: v, selected: v === value }, text))),
    );
  }

  function cell(label, path, row, key, { wide, ...attrs } = {}) {
    const inputId = `f${++fieldSerial}`;
    return h(
      'div',
      { class: ['cell', wide ? 'wide' : null], 'data-path': path },
      h('label', { for: inputId }, label),
      h('input', { id: inputId, value: row[key], autocomplete: 'off', spellcheck: 'false', type: attrs.type ?? 'text', ...attrs, oninput: (e) => (row[key] = e.target.value) }),
    );
  }

  function selectCell(label, path, row, key, options, after) {
    const inputId = `f${++fieldSerial}`;
    const known = options.includes(row[key]) ? options : [row[key], ...options];
    return h(
      'div',
      { class: 'cell', 'data-path': path },
      h('label', { for: inputId }, label),
      h(
        'select',
        { id: inputId, onchange: (e) => {
          row[key] = e.target.value;
          after?.();
        } },
        known.map((o) => h('option', { value: o, selected: o === row[key] }, o)),
      ),
    );
  }

  function rows({ legend, path, list, empty, add, make, cells }) {
    return h(
      'fieldset',
      { class: 'rows', 'data-path': path },
      h('legend', {}, legend),
      list.length
        ? list.map((row, i) =>
            h(
              'div',
              { class: 'row', 'data-path': `${path}(${i})` },
              cells(row, i),
              h('button', { type: 'button', class: 'icon remove', title: `Remove this ${legend.toLowerCase()} row`, 'aria-label': `Remove row ${i + 1} of ${legend}`, onclick: () => {
                list.splice(i, 1);
                render();
              } }, '×'),
            ),
          )
        : null,
      h(
        'div',
        { class: list.length ? null : 'rows-empty' },
        list.length ? null : h('p', { class: 'muted small' }, empty),
        h('button', { type: 'button', class: 'small add', onclick: () => {
          list.push(make());
          render();
          const added = page.querySelectorAll(`[data-path="${path}"] .row`);
          added[added.length - 1]?.querySelector('input, select')?.focus();
        } }, `+ ${add}`),
      ),
    );
  }

  // -------------------------------------------------------------------------------------
  // The JSON mode

  function jsonEditor() {
    return h(
      'div',
      { class: 'field wide json-field' },
      h('label', { for: 'app-json' }, 'App definition (Marathon JSON)'),
      h('textarea', { id: 'app-json', class: 'json-editor', rows: 24, spellcheck: 'false', value: s.json, oninput: (e) => (s.json = e.target.value), onkeydown: (e) => {
        if (e.key === 'Tab' && !e.shiftKey) {
          // A tab indents (two spaces); Escape then Tab leaves the editor.
          if (e.target.dataset.escaped) return;
          e.preventDefault();
          e.target.setRangeText('  ', e.target.selectionStart, e.target.selectionEnd, 'end');
          s.json = e.target.value;
        } else if (e.key === 'Escape') {
          e.target.dataset.escaped = '1';
        } else {
          delete e.target.dataset.escaped;
        }
      } }),
      h('p', { class: 'hint' }, 'Any field of Marathon’s app definition. Tab indents; Esc then Tab leaves the editor.'),
    );
  }

  // -------------------------------------------------------------------------------------

  if (editing) {
    get(appPath(id))
      .then((answer) => {
        s.base = definitionOf(answer.app);
        s.form = formFromDefinition(s.base);
        if (s.mode === 'json') s.json = JSON.stringify(s.base, null, 2);
        render();
      })
      .catch((error) => {
        s.loadError = error;
        render();
      });
  }
  render();
  if (!editing) page.querySelector('input')?.focus();

  return {
    unmount() {},
  };
}
