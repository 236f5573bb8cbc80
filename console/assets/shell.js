// The console's shell: the only script served without the admin token.
// It holds no data and no console code. It loads /console/app.js with
// the token as a bearer header (a <script src> cannot send one) and asks
// for the token when the listener answers 401.
(() => {
  'use strict';
  const KEY = 'modelsplit-admin-token';
  const $ = (id) => document.getElementById(id);

  async function errorText(res) {
    const text = await res.text();
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === 'string') return body.error;
    } catch (_) { /* not JSON */ }
    return text || res.statusText;
  }

  function showLogin(message) {
    $('app').replaceChildren();
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('status').textContent = 'Token required';
    $('token').focus();
  }

  async function load(token) {
    const headers = token ? { Authorization: 'Bearer ' + token } : {};
    let res;
    try {
      res = await fetch('/console/app.js', { headers, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      showLogin('Cannot reach the admin listener: ' + e.message);
      return;
    }
    if (res.status === 401) {
      sessionStorage.removeItem(KEY);
      showLogin(token ? 'Refused: ' + (await errorText(res)) : '');
      return;
    }
    if (!res.ok) {
      showLogin('The console could not load (HTTP ' + res.status + '): ' + (await errorText(res)));
      return;
    }
    const code = await res.text();
    if (token) sessionStorage.setItem(KEY, token);
    $('login').hidden = true;
    $('logout').hidden = !token;
    window.modelsplit = { token: token || '' };
    const url = URL.createObjectURL(new Blob([code], { type: 'text/javascript' }));
    const script = document.createElement('script');
    script.src = url;
    script.onload = () => URL.revokeObjectURL(url);
    document.body.appendChild(script);
  }

  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    $('token').value = '';
    if (token) load(token);
  });
  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  load(sessionStorage.getItem(KEY) || '');
})();
