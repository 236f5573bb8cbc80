// The modelsplit console. Loaded by shell.js (with the admin token when
// the listener has one); everything it shows comes from the admin JSON
// API, with the token as a bearer header. It never builds HTML from data:
// every text goes through textContent.
(() => {
  'use strict';
  const token = (window.modelsplit && window.modelsplit.token) || '';
  const REFRESH_MS = 3000;
  const AUDIT_LIMIT = 50;
  const COLORS = ['#0b5cad', '#b3261e', '#1a6b34', '#7a4d00', '#6a1b9a', '#00696b'];
  const DASHES = ['', '6 3', '2 2', '8 3 2 3', '4 4', '1 3'];

  // ---- DOM helpers -------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') el.textContent = v;
      else if (v !== undefined && v !== null && v !== '') el.setAttribute(k, v);
    }
    return el;
  }
  const pct = (x) => (x === null || x === undefined || !isFinite(x) ? '—' : (100 * x).toFixed(1) + '%');
  const num = (x) => (x === null || x === undefined ? '—' : Number(x).toLocaleString('en-US'));
  const secs = (x) => (x === null || x === undefined ? '—' : x < 1 ? (1000 * x).toFixed(x < 0.01 ? 2 : 1) + ' ms' : x.toFixed(2) + ' s');
  const fig = (x) => (x === null || x === undefined ? '—' : Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(3) : x.toPrecision(3));
  function when(t) {
    if (!t) return '—';
    const d = new Date(t);
    return d.toLocaleString('en-GB', { hour12: false });
  }
  function relative(t) {
    if (!t) return '';
    const sec = Math.round((new Date(t).getTime() - Date.now()) / 1000);
    const a = Math.abs(sec);
    const span = a < 90 ? a + ' s' : a < 5400 ? Math.round(a / 60) + ' min' : (a / 3600).toFixed(1) + ' h';
    return sec >= 0 ? 'in ' + span : span + ' ago';
  }
  const weightsText = (w) => (w ? Object.entries(w).map(([k, v]) => k + '=' + v).join(' ') : '—');

  // ---- API ---------------------------------------------------------------
  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }
  async function api(method, path, body) {
    const init = { method, headers: {}, cache: 'no-store', credentials: 'omit' };
    if (token) init.headers.Authorization = 'Bearer ' + token;
    if (method !== 'GET') {
      // The admin guard refuses changes without it, bodyless ones too.
      init.headers['Content-Type'] = 'application/json';
      if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new APIError(0, 'cannot reach the admin API: ' + e.message);
    }
    const text = await res.text();
    let data = null;
    try {
      data = JSON.parse(text);
    } catch (_) { /* not JSON */ }
    if (!res.ok) {
      if (res.status === 401) tokenRefused();
      throw new APIError(res.status, data && typeof data.error === 'string' ? data.error : text || res.statusText);
    }
    return data;
  }
  const enc = encodeURIComponent;

  // ---- state -------------------------------------------------------------
  const state = {
    endpoints: [], // api.EndpointStatus, in config order
    byName: new Map(),
    rollouts: new Map(),
    bandits: new Map(),
    audit: [],
    selected: null,
    removed: false, // the selected endpoint is no longer in force
    series: null,
    disagreements: new Map(),
    loaded: false,
    running: null,
    again: false,
  };

  // ---- layout ------------------------------------------------------------
  const root = document.getElementById('app');
  const statusLine = document.getElementById('status');
  const overviewBody = h('tbody');
  const detail = h('section', { id: 'detail', class: 'panel', 'aria-labelledby': 'detail-title' },
    h('h2', { id: 'detail-title', text: 'Loading…' }));
  const auditBody = h('tbody');
  const dialogText = h('p', { id: 'confirm-text' });
  const dialogOK = h('button', { type: 'submit', value: 'ok', class: 'danger', id: 'confirm-ok' }, 'Confirm');
  const dialog = h('dialog', { id: 'confirm', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-text' },
    h('form', { method: 'dialog' },
      h('h2', { id: 'confirm-title', text: 'Confirm the change' }),
      dialogText,
      h('div', { class: 'row' },
        h('button', { type: 'submit', value: 'cancel', class: 'secondary', id: 'confirm-cancel' }, 'Cancel'),
        dialogOK)));
  root.append(
    h('div', { class: 'layout' },
      h('section', { id: 'overview', class: 'panel', 'aria-labelledby': 'overview-title' },
        h('h2', { id: 'overview-title', text: 'Endpoints' }),
        h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Endpoints table' },
          h('table', { id: 'endpoints' },
            h('caption', { class: 'muted', text: 'Weights in force and live share of each variant; select an endpoint for its details.' }),
            h('thead', {}, h('tr', {},
              h('th', { scope: 'col', text: 'Endpoint' }),
              h('th', { scope: 'col', text: 'Variants: weight in force, live share' }),
              h('th', { scope: 'col', class: 'num', text: 'Requests' }),
              h('th', { scope: 'col', text: 'State' }))),
            overviewBody))),
      detail),
    h('section', { id: 'audit', class: 'panel', 'aria-labelledby': 'audit-title' },
      h('h2', { id: 'audit-title', text: 'Audit trail' }),
      h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Audit table' },
        h('table', {},
          h('thead', {}, h('tr', {},
            ['Time', 'Action', 'Endpoint', 'Before → after', 'Who', 'Detail'].map((t) => h('th', { scope: 'col', text: t })))),
          auditBody))),
    dialog);

  // ---- confirmation ------------------------------------------------------
  function confirmChange(text) {
    return new Promise((resolve) => {
      dialogText.textContent = text;
      dialog.returnValue = '';
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
      dialog.showModal();
      dialogOK.focus();
    });
  }

  // Every change: confirm, send, show the API's answer (its error
  // verbatim when refused), then refresh without a reload.
  async function act(what, method, path, body) {
    if (!(await confirmChange(what + '?'))) return;
    const out = document.getElementById('action-result');
    out.className = '';
    out.textContent = 'Sending…';
    try {
      const res = await api(method, path, body);
      out.className = 'okmsg';
      out.textContent = 'Done: ' + what + (res && res.weights ? ' — weights now ' + weightsText(res.weights) : '') +
        (res && res.persisted === false && res.warning ? ' (not persisted yet: ' + res.warning + ')' : '');
    } catch (e) {
      out.className = 'notice error';
      out.textContent = 'Refused' + (e.status ? ' (HTTP ' + e.status + ')' : '') + ': ' + e.message;
    }
    await refresh();
  }

  function tokenRefused() {
    sessionStorage.removeItem('modelsplit-admin-token');
    statusLine.textContent = 'The admin token was refused (changed on the server?): reload the page to sign in again.';
  }

  // ---- overview ----------------------------------------------------------
  function stateBadges(ep) {
    const out = [];
    const ro = state.rollouts.get(ep.name);
    if (ro && ro.phase !== 'not_started') out.push(h('span', { class: 'badge ' + (ro.phase === 'rolled_back' ? 'bad' : ro.phase === 'running' ? 'ok' : 'warn'), text: 'rollout ' + ro.phase.replace('_', ' ') }));
    if (ep.override) out.push(h('span', { class: 'badge warn', text: 'live override' }));
    if ((ep.shadows || []).some((x) => x.paused)) out.push(h('span', { class: 'badge warn', text: 'shadow paused' }));
    return out;
  }
  function renderOverview() {
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.ep : undefined;
    const rows = state.endpoints.map((ep) => {
      const total = ep.variants.reduce((n, v) => n + v.requests, 0);
      const cur = ep.name === state.selected;
      return h('tr', { 'aria-current': cur ? 'true' : null, dataset: { endpoint: ep.name } },
        h('th', { scope: 'row' }, h('button', { type: 'button', class: 'link', dataset: { ep: ep.name }, onclick: () => select(ep.name), 'aria-label': 'Show endpoint ' + ep.name, text: ep.name })),
        h('td', {}, ep.variants.map((v, i) => h('div', { class: 'variant-line', dataset: { variant: v.name } },
          h('span', { class: 'swatch c' + (i % COLORS.length) }),
          v.name + ' ' + v.weight + ' · ' + pct(v.live_share)))),
        h('td', { class: 'num', text: num(total) }),
        h('td', {}, stateBadges(ep)));
    });
    overviewBody.replaceChildren(...rows);
    if (focused) {
      const again = overviewBody.querySelector('button[data-ep="' + CSS.escape(focused) + '"]');
      if (again) again.focus();
    }
  }

  // ---- detail ------------------------------------------------------------
  function select(name) {
    if (state.selected === name) return;
    state.selected = name;
    state.series = null;
    state.disagreements = new Map();
    history.replaceState(null, '', '#' + enc(name));
    renderOverview();
    renderDetail(true);
    refreshSelected().then(() => renderDetail(false));
  }

  // keep is the typed weights, so a refresh never overwrites what the
  // operator is entering.
  function typedWeights() {
    const out = {};
    detail.querySelectorAll('input[data-weight]').forEach((i) => { out[i.dataset.weight] = i.value; });
    return out;
  }

  function renderDetail(fresh) {
    const name = state.selected;
    const ep = state.byName.get(name) || state.lastSelected;
    if (!ep) {
      detail.replaceChildren(h('h2', { id: 'detail-title', text: state.loaded ? 'No endpoints configured' : 'Loading…' }));
      return;
    }
    state.lastSelected = ep;
    const typed = fresh ? {} : typedWeights();
    const active = document.activeElement && detail.contains(document.activeElement) ? document.activeElement.id : null;
    const prevResult = document.getElementById('action-result');
    const result = h('div', { id: 'action-result', role: 'alert' });
    if (!fresh && prevResult) {
      result.className = prevResult.className;
      result.textContent = prevResult.textContent;
    }
    const base = '/v1/endpoints/' + enc(ep.name);
    const kids = [h('h2', { id: 'detail-title' }, 'Endpoint ', h('span', { text: ep.name }), stateBadges(ep))];
    if (state.removed) {
      kids.push(h('p', { class: 'notice error', id: 'removed-notice', text: 'Endpoint "' + ep.name + '" is no longer in the config in force (endpoints: ' +
        state.endpoints.map((e) => e.name).slice(0, 20).join(', ') + (state.endpoints.length > 20 ? ', …' : '') + '). The figures below are the last ones seen; changes to it will be refused.' }));
    }
    kids.push(h('p', { class: 'muted' },
      (ep.override ? 'Live weights in force since ' + when(ep.override_since) : 'Weights from the config file') +
      ' · rollback depth ' + ep.rollback_depth + ' · live share counts ' + ep.live_source));
    kids.push(result);

    // Variants.
    kids.push(h('h3', { text: 'Variants' }));
    kids.push(h('div', { class: 'scroll' }, h('table', { id: 'variants' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col', text: 'Variant' }),
        h('th', { scope: 'col', class: 'num', text: 'Configured weight' }),
        h('th', { scope: 'col', class: 'num', text: 'Weight in force' }),
        h('th', { scope: 'col', class: 'num', text: 'New-user share' }),
        h('th', { scope: 'col', class: 'num', text: 'Live share' }),
        h('th', { scope: 'col', class: 'num', text: 'Requests' }),
        h('th', { scope: 'col', class: 'num', text: 'Users' }),
        h('th', { scope: 'col', text: 'Action' }))),
      h('tbody', {}, ep.variants.map((v) => h('tr', { dataset: { variant: v.name } },
        h('th', { scope: 'row', text: v.name }),
        h('td', { class: 'num', dataset: { field: 'configured' }, text: v.configured_weight }),
        h('td', { class: 'num', dataset: { field: 'weight' }, text: v.weight }),
        h('td', { class: 'num', dataset: { field: 'weight_share' }, text: pct(v.weight_share) }),
        h('td', { class: 'num', dataset: { field: 'live_share' }, text: pct(v.live_share) }),
        h('td', { class: 'num', dataset: { field: 'requests' }, text: num(v.requests) }),
        h('td', { class: 'num', dataset: { field: 'users' }, text: num(v.users) }),
        h('td', {}, h('button', { type: 'button', class: 'secondary', id: 'promote-' + v.name,
          onclick: () => act('Promote ' + v.name + ' on ' + ep.name + ' (all traffic to it)', 'POST', base + '/promote', { variant: v.name }) }, 'Promote'))))))));

    // Weights form.
    const form = h('form', { id: 'weights-form', class: 'weights', 'aria-label': 'Set weights of ' + ep.name, novalidate: true },
      ep.variants.map((v) => h('label', { for: 'w-' + v.name }, 'Weight of ' + v.name,
        h('input', { id: 'w-' + v.name, name: v.name, inputmode: 'numeric', autocomplete: 'off', dataset: { weight: v.name },
          value: typed[v.name] !== undefined ? typed[v.name] : String(v.weight) }))),
      h('button', { type: 'submit', id: 'set-weights' }, 'Set weights'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      // Numbers go as numbers; anything else goes as typed, so the API
      // (not the page) refuses it, with the API's own message.
      const weights = {};
      form.querySelectorAll('input[data-weight]').forEach((i) => {
        const raw = i.value.trim();
        weights[i.dataset.weight] = /^-?\d+$/.test(raw) ? Number(raw) : raw;
      });
      act('Set the weights of ' + ep.name + ' to ' + weightsText(weights), 'PUT', base + '/weights', { weights });
    });
    kids.push(form);
    kids.push(h('div', { class: 'row' },
      h('button', { type: 'button', class: 'secondary', id: 'rollback', onclick: () => act('Roll back ' + ep.name + ' to the weights before the last change', 'POST', base + '/rollback') }, 'Roll back'),
      h('button', { type: 'button', class: 'secondary', id: 'reset', onclick: () => act('Reset ' + ep.name + ' to the config file (drop live overrides)', 'DELETE', base + '/override') }, 'Reset to config file')));

    // Charts.
    kids.push(h('h3', { text: 'Traffic per variant (10 s windows, last 5 minutes)' }));
    kids.push(renderCharts(ep));

    // Shadows.
    kids.push(h('h3', { text: 'Shadows' }));
    const shadows = ep.shadows || [];
    if (!shadows.length) kids.push(h('p', { class: 'muted', text: 'No shadows on this endpoint.' }));
    else {
      kids.push(h('div', { class: 'scroll' }, h('table', { id: 'shadows' },
        h('thead', {}, h('tr', {}, ['Shadow', 'Sampled', 'Mode', 'State', 'Compared', 'Agreement', 'Errors', 'Dropped', 'Action'].map((t) => h('th', { scope: 'col', text: t })))),
        h('tbody', {}, shadows.map((sh) => h('tr', { dataset: { shadow: sh.name } },
          h('th', { scope: 'row', text: sh.name }),
          h('td', { text: sh.percent + '% of ' + (sh.per_request ? 'requests' : 'users') }),
          h('td', { text: sh.compare ? 'compare' : 'mirror' }),
          h('td', { text: sh.paused ? 'paused' : 'running' }),
          h('td', { class: 'num', text: num(sh.compared) }),
          h('td', { class: 'num', text: sh.agreement === undefined ? '—' : pct(sh.agreement) }),
          h('td', { class: 'num', text: num(sh.errors) }),
          h('td', { class: 'num', text: num(sh.dropped) }),
          h('td', {}, h('button', { type: 'button', class: 'secondary', id: 'shadow-' + (sh.paused ? 'resume-' : 'pause-') + sh.name,
            onclick: () => act((sh.paused ? 'Resume' : 'Pause') + ' shadow ' + sh.name + ' of ' + ep.name, 'POST', base + '/shadows/' + enc(sh.name) + '/' + (sh.paused ? 'resume' : 'pause')) },
          sh.paused ? 'Resume' : 'Pause'))))))));
      for (const sh of shadows.filter((x) => x.compare)) {
        const d = state.disagreements.get(sh.name);
        const samples = (d && d.samples) || [];
        kids.push(h('details', { open: samples.length ? true : null },
          h('summary', { text: 'Recent disagreements of ' + sh.name + ' (' + samples.length + ', redacted by the server)' }),
          samples.length ? samples.slice(-10).reverse().map((x) => h('div', { class: 'sample' },
            h('p', { text: when(x.time) + ' · ' + (x.method || '') + ' ' + x.path + ' · ' + x.reason + ' · status ' + x.primary_status + ' vs ' + x.shadow_status +
              ' · ' + secs(x.primary_latency_seconds) + ' vs ' + secs(x.shadow_latency_seconds) + (x.request_id ? ' · id ' + x.request_id : '') }),
            x.error ? h('p', { class: 'error', text: x.error }) : null,
            h('pre', { 'aria-label': 'primary answer', text: 'primary: ' + x.primary }),
            h('pre', { 'aria-label': 'shadow answer', text: 'shadow: ' + x.shadow }))) : h('p', { class: 'muted', text: 'None recorded.' })));
      }
    }

    // Rollout.
    kids.push(renderRollout(ep, base));

    // Bandit.
    kids.push(renderBandit(ep));

    detail.replaceChildren(...kids);
    if (active) {
      const again = document.getElementById(active);
      if (again) again.focus();
    }
  }

  function renderBandit(ep) {
    const box = h('div', { id: 'bandit' }, h('h3', { text: 'Bandit' }));
    const b = state.bandits.get(ep.name);
    if (!b) {
      box.append(h('p', { class: 'muted', text: 'No bandit on this endpoint (add bandit: to it in the config).' }));
      return box;
    }
    const facts = [
      ['Phase', b.phase],
      ['Rewards from', b.reward],
      ['Floor per arm', b.floor_percent + '%'],
      ['Updates', num(b.updates)],
    ];
    if (b.last_update) facts.push(['Last update', when(b.last_update)]);
    if (b.next_update) facts.push(['Next update', when(b.next_update) + ' (' + relative(b.next_update) + ')']);
    box.append(h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])));
    box.append(h('div', { class: 'scroll' }, h('table', { id: 'arms' },
      h('caption', { text: 'Arm posteriors: mean reward with its 95% interval, probability of being best, weight in force' }),
      h('thead', {}, h('tr', {}, ['Arm', 'Rewards', 'Mean', '95% interval', 'P(best)', 'Weight'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, (b.arms || []).map((a) => h('tr', {},
        h('th', { scope: 'row', text: a.name + (a.control ? ' (control)' : '') }),
        h('td', { class: 'num', text: a.control ? '—' : num(a.pulls) }),
        h('td', { class: 'num', text: a.control ? '—' : fig(a.mean) }),
        h('td', { class: 'num', text: a.control ? '—' : '[' + fig(a.lower) + ', ' + fig(a.upper) + ']' }),
        h('td', { class: 'num', text: a.control ? '—' : (100 * a.prob_best).toFixed(1) + '%' }),
        h('td', { class: 'num', text: (a.weight / 100).toFixed(2) + '%' })))))));
    return box;
  }

  function renderRollout(ep, base) {
    const box = h('div', { id: 'rollout' }, h('h3', { text: 'Rollout' }));
    const ro = state.rollouts.get(ep.name);
    if (!ro) {
      box.append(h('p', { class: 'muted', text: 'No rollout plan on this endpoint (add rollout: to it in the config).' }));
    } else {
      const facts = [
        ['Phase', ro.phase.replace('_', ' ')],
        ['Strategy', ro.strategy],
        ['Canary / baseline', (ro.canary || '—') + ' / ' + (ro.baseline || '—')],
        ['Step', ro.step ? ro.step + ' of ' + ro.steps : '— of ' + ro.steps],
        ['Weights of the step', weightsText(ro.weights)],
      ];
      if (ro.before) facts.push(['Weights before', weightsText(ro.before)]);
      if (ro.started && ro.phase !== 'not_started') facts.push(['Started', when(ro.started)]);
      if (ro.next_step_due) facts.push(['Next step due', when(ro.next_step_due) + ' (' + relative(ro.next_step_due) + ', once every gate passes)']);
      if (ro.bake_remaining_seconds) facts.push(['Bake time left', ro.bake_remaining_seconds.toFixed(0) + ' s']);
      if (ro.last_check) facts.push(['Last check', when(ro.last_check)]);
      if (ro.reason) facts.push(['Reason', ro.reason]);
      if (ro.ended) facts.push(['Ended', when(ro.ended)]);
      box.append(h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])));
      if (ro.gates && ro.gates.length) {
        box.append(h('div', { class: 'scroll' }, h('table', { id: 'gates' },
          h('thead', {}, h('tr', {}, ['Gate', 'Verdict', 'Canary', 'Baseline', 'Samples (canary / baseline)', 'p-value', 'Detail'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, ro.gates.map((g) => h('tr', {},
            h('th', { scope: 'row', text: g.gate }),
            h('td', {}, h('span', { class: 'badge ' + (g.verdict === 'pass' ? 'ok' : g.verdict === 'fail' ? 'bad' : 'warn'), text: g.verdict })),
            h('td', { class: 'num', text: fig(g.canary) }),
            h('td', { class: 'num', text: fig(g.baseline) }),
            h('td', { class: 'num', text: num(g.canary_n) + ' / ' + num(g.baseline_n) }),
            h('td', { class: 'num', text: g.p_value === undefined ? '—' : fig(g.p_value) }),
            h('td', { text: g.detail || '' })))))));
      } else if (ro.phase === 'running') {
        box.append(h('p', { class: 'muted', text: 'No gate verdicts yet (or this replica does not drive the rollout).' }));
      }
    }
    const ra = (action, label) => h('button', { type: 'button', class: action === 'abort' ? 'danger' : 'secondary', id: 'rollout-' + action,
      onclick: () => act(label + ' the rollout of ' + ep.name, 'POST', base + '/rollout/' + action) }, label);
    box.append(h('div', { class: 'row', role: 'group', 'aria-label': 'Rollout actions' },
      ra('start', 'Start'), ra('pause', 'Pause'), ra('resume', 'Resume'), ra('promote', 'Promote'), ra('abort', 'Abort')));
    return box;
  }

  // ---- charts ------------------------------------------------------------
  function renderCharts(ep) {
    const ser = state.series;
    if (!ser || ser.endpoint !== ep.name) return h('p', { class: 'muted', id: 'charts', text: state.removed ? 'No figures: the endpoint is gone.' : 'Loading figures…' });
    const now = Date.now();
    const wins = ser.windows.map((w) => {
      const start = new Date(w.start).getTime();
      const end = Math.min(new Date(w.end).getTime(), now);
      return { t: start, len: Math.max(1, (end - start) / 1000), w };
    });
    const variants = ser.variants;
    const pick = (f) => variants.map((v) => wins.map((x) => {
      const p = x.w.variants[v];
      return { t: x.t, y: p ? f(p, x) : null };
    }));
    const charts = [
      { id: 'chart-rps', title: 'Requests per second', fmt: (y) => fig(y), data: pick((p, x) => p.requests / x.len) },
      { id: 'chart-errors', title: 'Error ratio (5xx and no answer)', fmt: pct, data: pick((p) => p.error_ratio) },
      { id: 'chart-p50', title: 'Latency p50', fmt: secs, data: pick((p) => p.p50_seconds) },
      { id: 'chart-p99', title: 'Latency p99', fmt: secs, data: pick((p) => p.p99_seconds) },
    ];
    return h('div', { class: 'charts', id: 'charts' }, charts.map((c) => chart(c, variants)));
  }

  function chart(c, variants) {
    const W = 300, H = 120, L = 56, R = 8, T = 8, B = 18;
    const pts = c.data.flat().filter((p) => p.y !== null && isFinite(p.y));
    const svg = s('svg', { class: 'chart', viewBox: '0 0 ' + W + ' ' + H, role: 'img', id: c.id });
    const latest = variants.map((v, i) => {
      const last = c.data[i].filter((p) => p.y !== null).pop();
      return v + ' ' + (last ? c.fmt(last.y) : 'no data');
    }).join(', ');
    svg.append(s('title', { text: c.title + ': latest ' + latest }));
    if (!pts.length) {
      svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', text: 'no traffic yet' }));
    } else {
      const t0 = Math.min(...pts.map((p) => p.t)), t1 = Math.max(...pts.map((p) => p.t));
      const ymax = Math.max(...pts.map((p) => p.y)) || 1;
      const x = (t) => L + (t1 === t0 ? (W - L - R) / 2 : ((t - t0) / (t1 - t0)) * (W - L - R));
      const y = (v) => T + (1 - v / ymax) * (H - T - B);
      svg.append(s('line', { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: '#6e7781' }));
      svg.append(s('line', { x1: L, y1: T, x2: L, y2: y(0), stroke: '#6e7781' }));
      svg.append(s('text', { x: L - 4, y: T + 9, 'text-anchor': 'end', text: c.fmt(ymax) }));
      svg.append(s('text', { x: L - 4, y: y(0), 'text-anchor': 'end', text: '0' }));
      svg.append(s('text', { x: L, y: H - 4, text: new Date(t0).toLocaleTimeString('en-GB', { hour12: false }) }));
      svg.append(s('text', { x: W - R, y: H - 4, 'text-anchor': 'end', text: new Date(t1).toLocaleTimeString('en-GB', { hour12: false }) }));
      c.data.forEach((series, i) => {
        const d = series.filter((p) => p.y !== null && isFinite(p.y)).map((p, j) => (j ? 'L' : 'M') + x(p.t).toFixed(1) + ' ' + y(p.y).toFixed(1)).join(' ');
        if (d) svg.append(s('path', { d, fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 2, 'stroke-dasharray': DASHES[i % DASHES.length] }));
        // A dot per window, so one window (or a gap) still shows.
        for (const p of series.filter((q) => q.y !== null && isFinite(q.y))) {
          svg.append(s('circle', { cx: x(p.t).toFixed(1), cy: y(p.y).toFixed(1), r: 2.5, fill: COLORS[i % COLORS.length] }));
        }
      });
    }
    return h('figure', {}, h('figcaption', { text: c.title }), svg,
      h('ul', { class: 'legend' }, variants.map((v, i) => h('li', {},
        h('span', { class: 'swatch c' + (i % COLORS.length) }), v))));
  }

  // ---- audit -------------------------------------------------------------
  function renderAudit() {
    auditBody.replaceChildren(...state.audit.map((a) => h('tr', {},
      h('td', { text: when(a.time) + (a.count > 1 ? ' (×' + a.count + ' since ' + when(a.first) + ')' : '') }),
      h('td', { text: a.action + (a.shadow ? ' ' + a.shadow : '') }),
      h('td', { text: a.endpoint }),
      h('td', { text: a.before || a.after ? weightsText(a.before) + ' → ' + weightsText(a.after) : '' }),
      h('td', { text: a.actor ? a.actor + (a.plan ? ' ' + a.plan : '') + (a.step ? ' step ' + a.step : '') : [a.remote, a.user_agent].filter(Boolean).join(' ') }),
      h('td', { text: a.detail || '' }))));
    if (!state.audit.length) auditBody.append(h('tr', {}, h('td', { colspan: '6', class: 'muted', text: 'No changes yet.' })));
  }

  // ---- refresh -----------------------------------------------------------
  async function refreshSelected() {
    const name = state.selected;
    if (!name || state.removed) return;
    const ep = state.byName.get(name);
    const jobs = [api('GET', '/v1/endpoints/' + enc(name) + '/series?seconds=300').then((x) => { if (state.selected === name) state.series = x; })];
    for (const sh of ((ep && ep.shadows) || []).filter((x) => x.compare)) {
      jobs.push(api('GET', '/v1/endpoints/' + enc(name) + '/shadows/' + enc(sh.name) + '/disagreements')
        .then((d) => { if (state.selected === name) state.disagreements.set(sh.name, d); }));
    }
    const res = await Promise.allSettled(jobs);
    const bad = res.find((r) => r.status === 'rejected');
    if (bad) throw bad.reason;
  }

  // refresh runs one refresh at a time; a call during one runs another
  // right after it (an action's answer must show without waiting).
  function refresh() {
    if (state.running) {
      state.again = true;
      return state.running;
    }
    state.running = (async () => {
      try {
        do {
          state.again = false;
          await refreshOnce();
        } while (state.again);
      } finally {
        state.running = null;
      }
    })();
    return state.running;
  }

  async function refreshOnce() {
    try {
      const list = await api('GET', '/v1/endpoints');
      state.endpoints = list.endpoints || [];
      state.byName = new Map(state.endpoints.map((e) => [e.name, e]));
      if (!state.selected || (!state.loaded && !state.byName.has(state.selected))) {
        const want = decodeURIComponent(location.hash.slice(1));
        state.selected = state.byName.has(want) ? want : state.endpoints.length ? state.endpoints[0].name : null;
      }
      state.removed = !!state.selected && !state.byName.has(state.selected);
      const first = !state.loaded;
      state.loaded = true;
      renderOverview();
      renderDetail(first);
      if (first) {
        // The first useful numbers are on screen: the browser test reads this.
        document.body.dataset.firstData = String(performance.now());
      }
      const [ro, au, ba] = await Promise.allSettled([api('GET', '/v1/rollouts'), api('GET', '/v1/audit?limit=' + AUDIT_LIMIT), api('GET', '/v1/bandits'), refreshSelected()]);
      if (ro.status === 'fulfilled') state.rollouts = new Map(((ro.value && ro.value.rollouts) || []).map((r) => [r.endpoint, r]));
      if (ba.status === 'fulfilled') state.bandits = new Map(((ba.value && ba.value.bandits) || []).map((b) => [b.endpoint, b]));
      if (au.status === 'fulfilled') state.audit = (au.value && au.value.entries) || [];
      renderOverview();
      renderDetail(false);
      renderAudit();
      const failed = [ro, au, ba].find((r) => r.status === 'rejected');
      statusLine.textContent = failed ? 'Partly refreshed: ' + failed.reason.message : 'Updated ' + new Date().toLocaleTimeString('en-GB', { hour12: false }) + ' · ' + state.endpoints.length + ' endpoints';
    } catch (e) {
      statusLine.textContent = 'Refresh failed: ' + e.message;
    }
  }

  window.addEventListener('hashchange', () => {
    const want = decodeURIComponent(location.hash.slice(1));
    if (want && want !== state.selected) select(want);
  });
  refresh();
  setInterval(() => { if (!document.hidden && !dialog.open) refresh(); }, REFRESH_MS);
})();
