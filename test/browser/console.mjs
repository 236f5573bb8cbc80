// Drives the modelsplit web console in a real Chromium (Debian's, through
// playwright-core) for test/console_browser_test.go, which starts
// `modelsplit serve`, sends the traffic and checks what this script
// reports against /metrics, `modelsplit status` and the API.
//
// Input: $CONSOLE_TEST, JSON {url, tokenUrl, token, artifacts, chromium,
// endpoint, variants, stale, endpoints}. Protocol on stdout: "WAIT <name>"
// asks the Go test to do something (it answers "ok" on stdin), "LOG ..."
// is progress, and the last line is "RESULT <json>". Any failure exits 1
// with the reason on stderr.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import path from 'node:path';

const cfg = JSON.parse(process.env.CONSOLE_TEST);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const result = { screenshots: [] };

function log(...a) { console.log('LOG', ...a); }
async function waitFor(name) {
  console.log('WAIT ' + name);
  const { value, done } = await lines.next();
  if (done || value.trim() !== 'ok') throw new Error('the Go test did not confirm ' + name + ': ' + value);
}
function fail(msg) { throw new Error(msg); }

// variantsShown reads the selected endpoint's variants table as shown.
async function variantsShown(page) {
  return page.$$eval('#variants tbody tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.variant,
    Object.fromEntries([...r.querySelectorAll('td[data-field]')].map((td) => [td.dataset.field, td.textContent]))])));
}

// confirm answers the confirmation dialog with the keyboard.
async function confirm(page, accept) {
  await page.waitForSelector('dialog#confirm[open]');
  result.lastConfirm = await page.textContent('#confirm-text');
  if (accept) {
    // The dialog focuses its Confirm button: Enter presses it.
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    if (focused !== 'confirm-ok') fail('the confirmation dialog did not focus Confirm (focus on ' + focused + ')');
    await page.keyboard.press('Enter');
  } else {
    await page.keyboard.press('Escape');
  }
  await page.waitForSelector('dialog#confirm:not([open])', { state: 'attached' });
}

async function actionResult(page, before) {
  await page.waitForFunction((prev) => {
    const el = document.getElementById('action-result');
    return el && el.textContent && el.textContent !== 'Sending…' && el.textContent !== prev;
  }, before, { timeout: 10000 });
  return page.textContent('#action-result');
}

async function setWeights(page, weights, accept = true) {
  for (const [v, w] of Object.entries(weights)) await page.fill('#w-' + v, String(w));
  const before = await page.textContent('#action-result');
  await page.click('#set-weights');
  await confirm(page, accept);
  return accept ? actionResult(page, before) : null;
}

async function shot(page, name) {
  const file = path.join(cfg.artifacts, name);
  await page.screenshot({ path: file, fullPage: true });
  result.screenshots.push(file);
  log('screenshot', file);
}

const browser = await chromium.launch({ executablePath: cfg.chromium, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
try {
  // ---- loopback, no token: first paint with 100 endpoints ----
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  const page = await ctx.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Refused changes log "Failed to load resource" (a 4xx is what those
  // steps expect); any other console error (a CSP violation, an
  // exception) counts.
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text()); });
  const t0 = Date.now();
  await page.goto(cfg.url + '#' + encodeURIComponent(cfg.endpoint));
  await page.waitForSelector('body[data-first-data]', { timeout: 10000 });
  result.firstDataWallMs = Date.now() - t0;
  result.firstDataMs = Number(await page.getAttribute('body', 'data-first-data'));
  result.fcpMs = await page.evaluate(() => {
    const e = performance.getEntriesByName('first-contentful-paint')[0];
    return e ? e.startTime : null;
  });
  result.rowsAtFirstData = await page.$$eval('#endpoints tbody tr', (r) => r.length);
  result.loginVisible = await page.isVisible('#login');
  log('first data', result.firstDataMs, 'ms after navigation start;', result.rowsAtFirstData, 'rows');

  // ---- the shares shown, once rollouts/audit/series are in ----
  await page.waitForSelector('#charts svg', { timeout: 10000 });
  result.shown = await variantsShown(page);
  result.overviewLine = await page.$$eval('#endpoints tbody tr[data-endpoint="' + cfg.endpoint + '"] .variant-line', (els) => els.map((e) => e.textContent));
  result.chartPaths = await page.$$eval('#chart-rps path', (p) => p.length);
  result.chartTitle = await page.textContent('#chart-rps title');
  await shot(page, 'console-desktop.png');

  // ---- live refresh: more traffic shows up without a reload ----
  const reqBefore = Object.values(result.shown).reduce((n, v) => n + Number(v.requests.replace(/,/g, '')), 0);
  await waitFor('more-traffic');
  await page.waitForFunction((n) => {
    const cells = [...document.querySelectorAll('#variants td[data-field="requests"]')];
    return cells.reduce((s, c) => s + Number(c.textContent.replace(/,/g, '')), 0) > n;
  }, reqBefore, { timeout: 10000 });
  result.liveRefreshed = true;

  // ---- a cancelled change sends nothing ----
  await page.click('#rollback');
  await confirm(page, false);
  result.cancelledSentNothing = (await page.textContent('#action-result')) === '';

  // ---- set weights through the form ----
  result.setWeights = await setWeights(page, cfg.newWeights);
  await page.waitForFunction((w) => Object.entries(w).every(([v, x]) => {
    const td = document.querySelector('#variants tr[data-variant="' + v + '"] td[data-field="weight"]');
    return td && td.textContent === String(x);
  }), cfg.newWeights, { timeout: 10000 });
  result.afterSet = await variantsShown(page);
  await page.waitForFunction(() => [...document.querySelectorAll('#audit tbody tr')].some((r) => r.textContent.includes('set_weights')));
  result.auditTop = await page.textContent('#audit tbody tr');

  // ---- a refused change: the API's message, verbatim ----
  result.refused = await setWeights(page, cfg.badWeights);
  result.afterRefused = await variantsShown(page);

  // ---- rollout actions: start, a weight change refused while it
  // drives the endpoint (the API's 409, verbatim), abort ----
  let before = await page.textContent('#action-result');
  await page.click('#rollout-start');
  await confirm(page, true);
  result.rolloutStart = await actionResult(page, before);
  await page.waitForFunction(() => /Phase\s*running/.test(document.getElementById('rollout').textContent), null, { timeout: 10000 });
  result.rolloutShown = await page.textContent('#rollout dl');
  result.ownedRefusal = await setWeights(page, cfg.newWeights);
  before = await page.textContent('#action-result');
  await page.click('#rollout-abort');
  await confirm(page, true);
  result.rolloutAbort = await actionResult(page, before);
  await page.waitForFunction(() => /Phase\s*aborted/.test(document.getElementById('rollout').textContent), null, { timeout: 10000 });

  // ---- a bandit's arms (ep-001) ----
  await page.evaluate(() => { location.hash = '#ep-001'; });
  await page.waitForFunction(() => document.querySelectorAll('#arms tbody tr').length === 2 &&
    [...document.querySelectorAll('#arms tbody tr')].every((r) => r.lastElementChild.textContent.trim() !== '0.00%'), null, { timeout: 15000 });
  result.banditArms = await page.$$eval('#arms tbody tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent.trim()).join(' ')));
  await page.evaluate(() => { location.hash = '#chat'; });

  // ---- accessibility basics ----
  result.a11y = await page.evaluate(() => {
    const problems = [];
    for (const i of document.querySelectorAll('input, select, textarea')) {
      if (i.closest('[hidden]')) continue;
      if (!(i.labels && i.labels.length) && !i.getAttribute('aria-label')) problems.push('input without a label: ' + (i.id || i.name));
    }
    for (const b of document.querySelectorAll('button')) {
      if (b.closest('[hidden]') || b.closest('dialog:not([open])')) continue;
      if (!(b.textContent.trim() || b.getAttribute('aria-label'))) problems.push('button without a name');
    }
    for (const svg of document.querySelectorAll('svg[role="img"]')) {
      if (!svg.querySelector('title')) problems.push('chart without a title');
    }
    for (const t of document.querySelectorAll('table')) {
      if (!t.querySelector('th')) problems.push('table without headers');
    }
    // Text contrast (WCAG AA, 4.5:1) against the nearest opaque background.
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const seen = new Set();
    for (const el of document.querySelectorAll('button, th, td, p, dt, dd, figcaption, label, caption, summary, .badge, h1, h2, h3, li')) {
      if (!el.textContent.trim() || el.closest('[hidden]') || el.closest('dialog:not([open])')) continue;
      const st = getComputedStyle(el);
      let bg = null;
      for (let n = el; n && !bg; n = n.parentElement) {
        const c = rgb(getComputedStyle(n).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] === 1)) bg = c.slice(0, 3);
      }
      bg = bg || [255, 255, 255];
      const [l1, l2] = [lum(rgb(st.color).slice(0, 3)), lum(bg)].sort((a, b) => b - a);
      const ratio = (l1 + 0.05) / (l2 + 0.05);
      const key = st.color + ' on ' + bg.join(',');
      if (ratio < 4.5 && !seen.has(key)) {
        seen.add(key);
        problems.push('contrast ' + ratio.toFixed(2) + ':1 for "' + el.textContent.trim().slice(0, 30) + '" (' + key + ')');
      }
    }
    return problems;
  });
  // Keyboard: Tab from the skip link (the page's first stop) reaches an endpoint button.
  await page.evaluate(() => document.querySelector('a.skip').focus());
  let reached = null;
  for (let i = 0; i < 12 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement && document.activeElement.dataset && document.activeElement.dataset.ep);
  }
  result.keyboardReachesEndpoints = reached;
  if (reached) {
    // Enter on a focused endpoint button selects it.
    await page.keyboard.press('Enter');
    await page.waitForFunction((n) => document.querySelector('#detail-title span') && document.querySelector('#detail-title span').textContent === n, reached);
  }

  // ---- a stale page acting on an endpoint that was removed ----
  await page.click('button[data-ep="' + cfg.stale + '"]');
  await page.waitForFunction((n) => document.querySelector('#detail-title span').textContent === n, cfg.stale);
  await page.waitForSelector('#weights-form');
  await waitFor('remove-endpoint');
  const staleWeights = Object.fromEntries(cfg.variants.map((v, i) => [v, i === 0 ? 1 : 0]));
  result.stale = await setWeights(page, staleWeights);
  await page.waitForSelector('#removed-notice', { timeout: 10000 });
  result.staleNotice = await page.textContent('#removed-notice');
  result.staleTitle = await page.textContent('#detail-title');

  // ---- phone width ----
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('button[data-ep="' + cfg.endpoint + '"]');
  await page.waitForSelector('#charts svg');
  result.phoneOverflowPx = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  await shot(page, 'console-phone.png');
  result.pageErrors = pageErrors;
  await ctx.close();

  // ---- off loopback with a token: the prompt, nothing without it ----
  const tctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const tp = await tctx.newPage();
  await tp.goto(cfg.tokenUrl);
  await tp.waitForSelector('#login:not([hidden])', { timeout: 10000 });
  result.token = {
    promptShown: true,
    appEmpty: (await tp.$$eval('#app *', (e) => e.length)) === 0,
    textBefore: await tp.textContent('body'),
    // What the page's own origin gets without the token.
    apiWithout: await tp.evaluate(async () => (await fetch('/v1/endpoints')).status),
    appWithout: await tp.evaluate(async () => (await fetch('/console/app.js')).status),
    seriesWithout: await tp.evaluate(async (ep) => (await fetch('/v1/endpoints/' + ep + '/series')).status, cfg.endpoints[0]),
  };
  await shot(tp, 'console-token-prompt.png');
  await tp.fill('#token', 'not-the-token');
  await tp.press('#token', 'Enter');
  await tp.waitForFunction(() => document.getElementById('login-error').textContent !== '');
  result.token.wrong = await tp.textContent('#login-error');
  await tp.fill('#token', cfg.token);
  await tp.press('#token', 'Enter');
  await tp.waitForSelector('body[data-first-data]', { timeout: 10000 });
  result.token.rowsAfter = await tp.$$eval('#endpoints tbody tr', (r) => r.length);
  result.token.loginHiddenAfter = await tp.isHidden('#login');
  // A change from the signed-in page passes the token and the guard.
  const ep = cfg.endpoints[0];
  await tp.waitForSelector('#weights-form');
  result.token.change = await setWeights(tp, Object.fromEntries(cfg.variants.map((v, i) => [v, i === 0 ? 3 : 1])));
  await tctx.close();
  log('token endpoint', ep);
} finally {
  await browser.close();
}
// Exit only once the result is written: stdout is a pipe, and
// process.exit would cut a long line short.
process.stdout.write('RESULT ' + JSON.stringify(result) + '\n', () => process.exit(0));
