// Torpor dashboard: vanilla JS over the REST API (docs/api.md), no framework.
// The API key lives in sessionStorage (this tab only) and goes out as
// X-API-Key; the sandbox list is polled every 2 s. Every text from the API
// is put in the page with textContent, never as HTML.
'use strict';

(function () {
  const KEY_STORE = 'torpor.apiKey';
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);

  let sandboxes = [];
  let clockOffset = 0;        // server clock minus this browser's, from the Date header
  let pollTimer = null;
  let pollGen = 0;            // bumps on connect/forget so a stale poll never renders
  const busy = new Map();     // sandbox id -> action in flight ("pausing…")
  const confirmDelete = new Map(); // sandbox id -> timer of a pending "confirm delete"

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    toString() {
      return (this.status ? this.status + ' ' : '') + this.code + ': ' + this.message;
    }
  }

  function apiKey() { return sessionStorage.getItem(KEY_STORE) || ''; }

  async function api(method, path, body) {
    const headers = { 'X-API-Key': apiKey() };
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network_error', 'cannot reach torpor-cp (' + e.message + ')');
    }
    const date = Date.parse(resp.headers.get('Date') || '');
    if (!Number.isNaN(date)) clockOffset = date - Date.now();
    const text = await resp.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!resp.ok) {
      const err = data && data.error;
      throw new ApiError(resp.status, err && err.code ? err.code : 'http_error',
                         err && err.message ? err.message : (text || resp.statusText || 'request failed'));
    }
    return data;
  }

  // ---- messages ---------------------------------------------------------
  function showError(what, e) {
    $('error-text').textContent = what + ': ' + (e instanceof ApiError ? e.toString() : String(e));
    $('error').hidden = false;
  }
  function clearError() { $('error').hidden = true; }

  function setLive(text, ok) {
    const el = $('live');
    el.textContent = text;
    el.classList.toggle('ok', ok === true);
    el.classList.toggle('bad', ok === false);
  }

  // ---- time -------------------------------------------------------------
  function serverNow() { return Date.now() + clockOffset; }

  function duration(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + 's';
    let m = Math.floor(s / 60); s %= 60;
    if (m < 60) return m + 'm ' + s + 's';
    let h = Math.floor(m / 60); m %= 60;
    if (h < 24) return h + 'h ' + m + 'm';
    const d = Math.floor(h / 24); h %= 24;
    return d + 'd ' + h + 'h';
  }

  function ago(ts) {
    const t = Date.parse(ts || '');
    return Number.isNaN(t) ? '—' : duration(serverNow() - t) + ' ago';
  }

  // Time before the sandbox is auto-paused: expires_at when the API gives
  // it, otherwise last activity + timeout. Only a running sandbox has one.
  function timeLeft(sb) {
    if (sb.status !== 'running') return { text: '—' };
    let deadline = NaN;
    if (sb.expires_at) deadline = Date.parse(sb.expires_at);
    else if (sb.timeout_sec === 0) return { text: 'never' };
    else if (sb.last_active_at) deadline = Date.parse(sb.last_active_at) + sb.timeout_sec * 1000;
    if (Number.isNaN(deadline)) return { text: '—' };
    const left = deadline - serverNow();
    return left <= 0 ? { text: 'due', due: true } : { text: duration(left) };
  }

  // ---- rendering --------------------------------------------------------
  function el(tag, props, children) {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const c of children || []) e.append(c);
    return e;
  }

  function actionButton(sb, label, action, cls) {
    const b = el('button', { type: 'button', textContent: label, className: 'small ' + (cls || '') });
    b.dataset.action = action;
    b.dataset.id = sb.id;
    b.disabled = busy.has(sb.id);
    return b;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }
  function setAttr(node, name, value) {
    if (node[name] !== value) node[name] = value;
  }

  // Rows are kept and updated in place, never rebuilt on a refresh: a
  // click (press and release on the same button) must survive the 1 s
  // repaint and the 2 s poll.
  const rowEls = new Map(); // sandbox id -> {tr, td: [cells], state, actionsKey}

  function newRow(id) {
    const td = [];
    for (let i = 0; i < 8; i++) td.push(el('td'));
    td[0].className = 'id';
    td[3].className = 'num';
    const state = el('span');
    td[1].append(state);
    const tr = el('tr', {}, td);
    tr.dataset.id = id;
    return { tr, td, state, actionsKey: null };
  }

  function fillRow(r, sb, selected) {
    const left = timeLeft(sb);
    setText(r.td[0], sb.id);
    setText(r.state, busy.get(sb.id) || sb.status);
    setAttr(r.state, 'className', 'state state-' + sb.status);
    setText(r.td[2], sb.template);
    setText(r.td[3], sb.memory_mb + ' MiB');
    setText(r.td[4], ago(sb.created_at));
    setAttr(r.td[4], 'title', sb.created_at);
    setText(r.td[5], ago(sb.last_active_at));
    setAttr(r.td[5], 'title', sb.last_active_at || 'never active');
    setText(r.td[6], left.text);
    setAttr(r.td[6], 'className', left.due ? 'due' : (left.text === 'never' || left.text === '—' ? 'muted' : ''));
    setAttr(r.td[6], 'title',
            sb.timeout_sec ? 'auto-pause after ' + sb.timeout_sec + ' s of inactivity' : 'no auto-pause');
    if (r.tr.dataset.status !== sb.status) r.tr.dataset.status = sb.status;
    r.tr.classList.toggle('selected', sb.id === selected);

    const actions = sb.status === 'running' ? ['pause', 'exec'] : sb.status === 'paused' ? ['resume'] : [];
    const confirming = confirmDelete.has(sb.id);
    const key = actions.join() + '|' + busy.has(sb.id) + '|' + confirming;
    if (key !== r.actionsKey) {
      const labels = { pause: 'Pause', exec: 'Exec', resume: 'Resume' };
      const box = el('div', { className: 'actions' }, actions.map((a) => actionButton(sb, labels[a], a)));
      box.append(actionButton(sb, confirming ? 'Confirm delete' : 'Delete', 'delete',
                              'danger' + (confirming ? ' confirm' : '')));
      r.td[7].replaceChildren(box);
      r.actionsKey = key;
    }
  }

  function render() {
    const rows = $('sandbox-rows');
    const selected = $('exec-target').value;
    const seen = new Set();
    let prev = null;
    for (const sb of sandboxes) {
      seen.add(sb.id);
      let r = rowEls.get(sb.id);
      if (!r) {
        r = newRow(sb.id);
        rowEls.set(sb.id, r);
      }
      fillRow(r, sb, selected);
      const want = prev ? prev.nextSibling : rows.firstChild;
      if (want !== r.tr) rows.insertBefore(r.tr, want);
      prev = r.tr;
    }
    for (const [id, r] of rowEls) {
      if (!seen.has(id)) {
        r.tr.remove();
        rowEls.delete(id);
      }
    }
    $('empty').hidden = sandboxes.length > 0;
    setText($('count'), sandboxes.length ? '(' + sandboxes.length + ')' : '');
    renderExecTargets(selected);
  }

  function renderExecTargets(selected) {
    const sel = $('exec-target');
    const running = sandboxes.filter((sb) => sb.status === 'running');
    const ids = running.map((sb) => sb.id);
    const have = Array.from(sel.options).map((o) => o.value);
    if (ids.join() !== have.join()) {
      sel.replaceChildren(...running.map((sb) => el('option', { value: sb.id, textContent: sb.id })));
      if (!ids.length) sel.append(el('option', { value: '', textContent: 'no running sandbox' }));
    }
    if (ids.includes(selected)) sel.value = selected;
    $('exec-submit').disabled = !ids.length;
  }

  // ---- polling ----------------------------------------------------------
  async function poll() {
    const gen = pollGen;
    clearTimeout(pollTimer);
    try {
      const list = await api('GET', '/v1/sandboxes');
      if (gen !== pollGen) return;
      sandboxes = list;
      setLive('live · updated ' + new Date().toLocaleTimeString(), true);
      render();
    } catch (e) {
      if (gen !== pollGen) return;
      setLive('not updated: ' + e.code, false);
      showError('Listing sandboxes failed', e);
      if (e.status === 401) {      // a bad key: back to the key form
        disconnect(false);
        return;
      }
    }
    if (gen === pollGen) pollTimer = setTimeout(poll, POLL_MS);
  }

  // ---- key --------------------------------------------------------------
  function connect() {
    const key = apiKey();
    const on = !!key;
    $('login').hidden = on;
    $('app').hidden = !on;
    $('key-info').hidden = !on;
    $('key-prefix').textContent = on ? key.slice(0, 8) + '…' : '';
    pollGen++;
    clearTimeout(pollTimer);
    if (on) {
      setLive('connecting…');
      poll();
    } else {
      setLive('not connected');
    }
  }

  function disconnect(clearMessage) {
    sessionStorage.removeItem(KEY_STORE);
    sandboxes = [];
    render();
    if (clearMessage) clearError();
    connect();
    $('api-key').focus();
  }

  // ---- actions ----------------------------------------------------------
  async function sandboxAction(id, action) {
    if (action === 'exec') {
      $('exec-target').value = id;
      render();
      $('exec-cmd').focus();
      return;
    }
    if (action === 'delete' && !confirmDelete.has(id)) {
      confirmDelete.set(id, setTimeout(() => { confirmDelete.delete(id); render(); }, 4000));
      render();
      return;
    }
    clearTimeout(confirmDelete.get(id));
    confirmDelete.delete(id);
    const label = { pause: 'pausing…', resume: 'resuming…', delete: 'deleting…' }[action];
    busy.set(id, label);
    render();
    try {
      if (action === 'delete') await api('DELETE', '/v1/sandboxes/' + encodeURIComponent(id));
      else await api('POST', '/v1/sandboxes/' + encodeURIComponent(id) + '/' + action);
      clearError();
    } catch (e) {
      showError(action.charAt(0).toUpperCase() + action.slice(1) + ' ' + id + ' failed', e);
    } finally {
      busy.delete(id);
    }
    await poll();
  }

  async function createSandbox(ev) {
    ev.preventDefault();
    const button = $('create-submit');
    const body = {
      template: $('create-template').value.trim(),
      memory_mb: Number($('create-memory').value),
      timeout_sec: Number($('create-timeout').value),
    };
    button.disabled = true;
    button.textContent = 'Creating…';
    try {
      const sb = await api('POST', '/v1/sandboxes', body);
      clearError();
      $('exec-target').value = sb.id;
    } catch (e) {
      showError('Create failed', e);
    } finally {
      button.disabled = false;
      button.textContent = 'Create';
    }
    await poll();
  }

  function decode(text, encoding) {
    if (encoding !== 'base64') return text;
    try { return atob(text); } catch (e) { return text; }
  }

  async function runExec(ev) {
    ev.preventDefault();
    const id = $('exec-target').value;
    if (!id) return;
    const button = $('exec-submit');
    button.disabled = true;
    button.textContent = 'Running…';
    try {
      const res = await api('POST', '/v1/sandboxes/' + encodeURIComponent(id) + '/exec', {
        cmd: $('exec-cmd').value,
        timeout_sec: Number($('exec-timeout').value),
      });
      clearError();
      const exit = $('exec-exit');
      exit.textContent = String(res.exit_code);
      exit.className = res.exit_code === 0 ? 'pass' : 'fail';
      $('exec-duration').textContent = res.duration_ms + ' ms in ' + res.sandbox_id;
      const notes = [];
      if (res.timed_out) notes.push('timed out');
      if (res.stdout_truncated) notes.push('stdout truncated');
      if (res.stderr_truncated) notes.push('stderr truncated');
      if (res.encoding === 'base64') notes.push('binary output');
      $('exec-notes').textContent = notes.join(' · ');
      $('exec-stdout').textContent = decode(res.stdout, res.encoding);
      $('exec-stderr').textContent = decode(res.stderr, res.encoding);
      $('exec-result').hidden = false;
    } catch (e) {
      showError('Exec in ' + id + ' failed', e);
    } finally {
      button.textContent = 'Run';
      button.disabled = !$('exec-target').value;
    }
  }

  // ---- wiring -----------------------------------------------------------
  document.addEventListener('DOMContentLoaded', () => {
    $('key-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = $('api-key').value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      $('api-key').value = '';
      clearError();
      connect();
    });
    $('key-forget').addEventListener('click', () => disconnect(true));
    $('error-close').addEventListener('click', clearError);
    $('create-form').addEventListener('submit', createSandbox);
    $('exec-form').addEventListener('submit', runExec);
    $('exec-target').addEventListener('change', render);
    $('sandbox-rows').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-action]');
      if (b && !b.disabled) sandboxAction(b.dataset.id, b.dataset.action);
    });
    // Ages and countdowns move between polls.
    setInterval(() => { if (apiKey()) render(); }, 1000);
    connect();
  });
})();
