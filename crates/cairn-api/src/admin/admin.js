// Cairn admin console: a little JavaScript of our own, no library. Every text from the
// server is set with textContent (never parsed as HTML). State-changing calls carry the
// session's CSRF token; the session itself is an HttpOnly cookie this script never sees.
'use strict';

const SECTIONS = ['overview', 'backups', 'policies', 'integrity'];
let csrf = null;
let timer = null;

const $ = (id) => document.getElementById(id);

function say(text) {
  $('message').textContent = text || '';
  $('error').hidden = true;
}

function fail(err) {
  const box = $('error');
  box.textContent = err && err.message ? err.message : String(err);
  box.hidden = false;
}

/** A JSON call; an error answer becomes an Error with the server's message. */
async function api(path, body) {
  const init = { credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.method = 'POST';
    init.headers['Content-Type'] = 'application/json';
    if (csrf) init.headers['X-CSRF-Token'] = csrf;
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const msg = data && data.error && data.error.message && data.error.message.value;
    const err = new Error(msg || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

function cell(row, text, cls) {
  const td = document.createElement('td');
  td.textContent = text === null || text === undefined || text === '' ? '—' : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(tbodyParent, rows, build) {
  const tbody = tbodyParent.querySelector('tbody');
  tbody.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement('tr');
    build(tr, r);
    tbody.appendChild(tr);
  }
}

function bytes(n) {
  if (!n && n !== 0) return '—';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? t : d.toLocaleString();
}

function duration(from, to) {
  if (!from || !to) return '—';
  const s = (new Date(to) - new Date(from)) / 1000;
  if (!(s >= 0)) return '—';
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

// ---- sections ------------------------------------------------------------------------

function show(name) {
  const loggedIn = csrf !== null;
  $('login').hidden = loggedIn;
  $('nav').hidden = !loggedIn;
  if (!loggedIn) {
    for (const s of SECTIONS) $(s).hidden = true;
    return;
  }
  if (!SECTIONS.includes(name)) name = 'overview';
  for (const s of SECTIONS) $(s).hidden = s !== name;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.section === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  clearInterval(timer);
  const refresh = { overview: loadOverview, backups: loadBackups, policies: loadPolicies }[name];
  if (refresh) {
    refresh().catch(onError);
    timer = setInterval(() => refresh().catch(onError), name === 'backups' ? 1000 : 5000);
  }
}

function onError(err) {
  if (err && err.status === 401 && csrf !== null) {
    // The session ended (expired, or the server restarted): log in again.
    csrf = null;
    clearInterval(timer);
    show();
    fail('The session has ended: log in again.');
    return;
  }
  fail(err);
}

function route() {
  show(location.hash.replace('#', ''));
}

// ---- overview ------------------------------------------------------------------------

async function loadOverview() {
  const v = await api('/admin/api/overview');
  $('completion-state').textContent = v.CompletionState;
  $('last-activity').textContent = v.IndexingActivityStatus.LastActivityId;
  $('db-last-activity').textContent = v.DatabaseLastActivityId;
  $('lag').textContent = v.Lag;
  $('documents').textContent = v.DocumentCount;
  $('fault').textContent = v.IndexingFault || 'none';
  chart(v.LagSamples || []);
  const replicas = v.Replicas || [];
  $('replicas-box').hidden = replicas.length === 0;
  fill($('replicas'), replicas, (tr, r) => {
    cell(tr, r.Url);
    cell(tr, r.Healthy ? r.Status : `${r.Status} (not used)`);
    cell(tr, r.CompletionState);
    cell(tr, r.Lag);
    cell(tr, r.Error);
  });
}

function svg(tag, attrs, text) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, val] of Object.entries(attrs)) el.setAttribute(k, val);
  if (text !== undefined) el.textContent = text;
  return el;
}

/** The lag samples `[[ms, lag], ...]` of the last hour as a line. */
function chart(samples) {
  const box = $('lag-chart');
  box.replaceChildren();
  const [w, h, left, bottom] = [600, 160, 40, 20];
  const now = Date.now();
  const from = now - 3600 * 1000;
  const max = Math.max(1, ...samples.map((s) => s[1]));
  box.appendChild(svg('line', { class: 'axis', x1: left, y1: h - bottom, x2: w, y2: h - bottom }));
  box.appendChild(svg('line', { class: 'axis', x1: left, y1: 5, x2: left, y2: h - bottom }));
  box.appendChild(svg('text', { x: 2, y: 14 }, String(max)));
  box.appendChild(svg('text', { x: 2, y: h - bottom }, '0'));
  box.appendChild(svg('text', { x: left, y: h - 4 }, '1 h ago'));
  box.appendChild(svg('text', { x: w - 30, y: h - 4 }, 'now'));
  const x = (t) => left + ((t - from) / (now - from)) * (w - left);
  const y = (lag) => (h - bottom) - (lag / max) * (h - bottom - 10);
  const points = samples.filter((s) => s[0] >= from).map((s) => `${x(s[0]).toFixed(1)},${y(s[1]).toFixed(1)}`);
  if (points.length > 0) box.appendChild(svg('polyline', { class: 'line', points: points.join(' ') }));
  const last = samples.length ? samples[samples.length - 1][1] : null;
  box.setAttribute('aria-label', last === null ? 'No samples yet' : `Lag now ${last}, at most ${max} over the last hour`);
}

// ---- backups -------------------------------------------------------------------------

async function loadBackups() {
  const v = await api('/admin/api/backups');
  const q = v.Query;
  const cur = q.Current;
  $('backup-state').textContent = q.State;
  $('backup-state').className = `state-${q.State}`;
  $('backup-target').textContent = cur ? `(${cur.Kind}, ${cur.TargetPath})` : '';
  const p = $('backup-progress');
  if (cur && cur.TotalBytes > 0) {
    p.max = cur.TotalBytes;
    p.value = Math.min(cur.CopiedBytes, cur.TotalBytes);
  } else {
    p.max = 100;
    p.value = q.State === 'Finished' ? 100 : 0;
  }
  $('backup-detail').textContent = cur
    ? `${bytes(cur.CopiedBytes)} of ${bytes(cur.TotalBytes)}, ${cur.CopiedFiles} of ${cur.CountOfFiles} files`
      + (cur.CurrentlyCopiedFile ? `, copying ${cur.CurrentlyCopiedFile}` : '')
      + (cur.Message ? ` — ${cur.Message}` : '')
    : 'No backup yet.';
  const running = ['Started', 'Executing', 'CancelRequested'].includes(q.State);
  $('cancel-backup').disabled = !running;
  $('start-index').disabled = running;
  $('start-repository').disabled = running;
  fill($('history'), q.History || [], (tr, b) => {
    cell(tr, when(b.StartedAt));
    cell(tr, b.Kind);
    cell(tr, b.State, `state-${b.State}`);
    cell(tr, bytes(b.TotalBytes));
    cell(tr, duration(b.StartedAt, b.FinishedAt));
    cell(tr, b.TargetPath);
  });
  fill($('finished'), v.Finished || [], (tr, b) => {
    cell(tr, b.Name);
    cell(tr, b.Kind);
    cell(tr, when(b.FinishedAt));
    cell(tr, b.Files);
    cell(tr, bytes(b.Bytes));
    const td = cell(tr, '');
    td.textContent = '';
    const verify = document.createElement('button');
    verify.type = 'button';
    verify.textContent = 'Verify';
    verify.setAttribute('aria-label', `Verify ${b.Name}`);
    verify.addEventListener('click', () => act(`Verifying ${b.Name}…`, async () => {
      const r = await api('/admin/api/backups/verify', { name: b.Name });
      return `${b.Name} verified: ${r.Files} files, ${bytes(r.Bytes)} checked in ${Number(r.Seconds).toFixed(1)} s.`;
    }));
    const link = document.createElement('a');
    link.href = `/admin/backups/${encodeURIComponent(b.Name)}/manifest.json`;
    link.textContent = 'Manifest';
    link.setAttribute('aria-label', `Download the manifest of ${b.Name}`);
    td.append(verify, ' ', link);
  });
}

/** Runs `work`, saying `busy` meanwhile and its answer (or the error) after. */
async function act(busy, work) {
  say(busy);
  try {
    say(await work());
  } catch (err) {
    say('');
    onError(err);
  }
}

async function startBackup(kind) {
  await act(`Starting a backup of the ${kind === 'Index' ? 'index' : 'repository'}…`, async () => {
    const r = await api('/admin/api/backups/start', { kind });
    await loadBackups();
    return `Backup ${r.State.toLowerCase()}: ${r.Current ? r.Current.TargetPath : ''}`;
  });
}

// ---- policies ------------------------------------------------------------------------

async function loadPolicies() {
  const v = await api('/admin/api/policies');
  const list = v.Policies || [];
  $('no-policies').hidden = list.length > 0;
  fill($('policy-table'), list, (tr, p) => {
    cell(tr, p.Name);
    cell(tr, p.Schedule);
    cell(tr, p.Kind);
    cell(tr, p.Repository);
    cell(tr, when(p.NextRunAt));
    cell(tr, p.LastSuccess ? `${p.LastSuccess.Name} at ${when(p.LastSuccess.FinishedAt)}` : 'none yet');
    cell(tr, p.LastFailure ? `${when(p.LastFailure.At)}: ${p.LastFailure.Message}` : 'none', p.LastFailure ? 'state-Faulted' : '');
    const td = cell(tr, '');
    td.textContent = '';
    const run = document.createElement('button');
    run.type = 'button';
    run.textContent = 'Run now';
    run.setAttribute('aria-label', `Run the policy ${p.Name} now`);
    run.addEventListener('click', () => act(`Running ${p.Name}…`, async () => {
      const r = await api('/admin/api/policies/run', { name: p.Name });
      return `${p.Name}: ${r.State}`;
    }));
    td.appendChild(run);
  });
}

// ---- integrity -----------------------------------------------------------------------

async function runIntegrity() {
  await act('Checking the index against the database…', async () => {
    const r = await api('/admin/api/integrity', {});
    const diffs = r.Differences || [];
    $('integrity-summary').textContent =
      `${diffs.length} difference${diffs.length === 1 ? '' : 's'}: the database's last activity is ${r.LastStoredActivity}, `
      + `the index's ${r.LastProcessedActivity}; gaps: ${(r.Gaps || []).length ? r.Gaps.join(', ') : 'none'}.`;
    $('differences').hidden = diffs.length === 0;
    fill($('differences'), diffs, (tr, d) => {
      cell(tr, d.Kind);
      cell(tr, d.NodeId);
      cell(tr, d.Path);
      cell(tr, d.DbTimestamp);
      cell(tr, d.IxTimestamp);
    });
    return 'Integrity check done.';
  });
}

// ---- session -------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const input = $('key');
  await act('Logging in…', async () => {
    const r = await api('/admin/login', { key: input.value });
    csrf = r.Csrf;
    input.value = '';
    route();
    return 'Logged in.';
  });
}

async function logout() {
  await act('Logging out…', async () => {
    await api('/admin/logout', {});
    csrf = null;
    clearInterval(timer);
    show();
    $('key').focus();
    return 'Logged out.';
  });
}

async function start() {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('start-index').addEventListener('click', () => startBackup('Index'));
  $('start-repository').addEventListener('click', () => startBackup('Repository'));
  $('cancel-backup').addEventListener('click', () => act('Asking the backup to stop…', async () => {
    const r = await api('/admin/api/backups/cancel', {});
    await loadBackups();
    return `Backup: ${r.State}`;
  }));
  $('run-integrity').addEventListener('click', runIntegrity);
  window.addEventListener('hashchange', () => { say(''); route(); });
  try {
    const s = await api('/admin/api/session');
    csrf = s.Csrf;
  } catch {
    csrf = null;
  }
  route();
  if (csrf === null) $('key').focus();
}

document.addEventListener('DOMContentLoaded', start);
