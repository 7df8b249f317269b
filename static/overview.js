// overview.js — the accounts overview, live.
//
// The server rendered one row per visible account (a page of at most 50)
// and put their sids, realms and last-hour series in
// <script type="application/json" id="overview-data">. This module opens one
// websocket (PresenceClient) with one whole-account subscription per row and
// keeps each row's online count (and its data-online attribute), expiring
// count, changes in the last minute and sparkline current. Values go through
// textContent / setAttribute only.

import { PresenceClient, userStatus } from './presence.js';

const $ = (id) => document.getElementById(id);
// Sparkline geometry, shared with web/view.go Sparkline (keep in sync).
const SPARK_W = 120;
const SPARK_H = 24;

function sparkPoints(series) {
  if (!series.length) return '';
  const top = Math.max(1, ...series);
  return series.map((v, i) => {
    const x = series.length > 1 ? (i * SPARK_W) / (series.length - 1) : 0;
    const y = SPARK_H - 1 - (v * (SPARK_H - 2)) / top;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  }).join(' ');
}

function start(data) {
  const offset = (data.now || Date.now()) - Date.now();
  const now = () => Date.now() + offset;
  const soon = data.expiring_within_ms || 60_000;
  const connEl = $('conn-state');
  const connText = $('conn-text');
  const totalEl = document.querySelector('[data-testid=total-online]');
  const rows = [];
  const client = new PresenceClient();

  for (const a of data.accounts || []) {
    const tr = document.querySelector(`tr[data-testid=account-row][data-account="${CSS.escape(a.account_sid)}"]`);
    if (!tr || !a.realm) continue;
    const row = {
      tr,
      online: Number(tr.dataset.online) || 0,
      onlineEl: tr.querySelector('[data-testid=account-online]'),
      expiringEl: tr.querySelector('[data-testid=account-expiring]'),
      changesEl: tr.querySelector('[data-testid=account-changes]'),
      line: tr.querySelector('[data-testid=account-spark] polyline'),
      series: (a.series || []).slice(),
      minute: Math.floor(now() / 60_000),
      changes: [], // times of changes seen here
      baseChanges: Number(tr.querySelector('[data-testid=account-changes]')?.textContent) || 0,
      baseUntil: now() + 60_000, // the server's count fades out over its minute
      users: null,
    };
    rows.push(row);
    row.sub = client.subscribe(a.account_sid, {
      onSnapshot(users) { row.users = users; render(row); },
      onChange(change, users) {
        row.users = users;
        row.changes.push(now());
        render(row);
      },
    });
  }

  function render(row) {
    const t = now();
    let online = 0;
    let expiring = 0;
    if (row.users) {
      for (const u of row.users.values()) {
        const st = userStatus(u, t, soon);
        if (st !== 'offline') online++;
        if (st === 'expiring') expiring++;
      }
    } else {
      online = row.online;
    }
    if (totalEl && online !== row.online) {
      totalEl.textContent = String((Number(totalEl.textContent) || 0) + online - row.online);
    }
    row.online = online;
    row.tr.setAttribute('data-online', String(online));
    if (row.onlineEl) row.onlineEl.textContent = String(online);
    if (row.expiringEl && row.users) row.expiringEl.textContent = String(expiring);
    while (row.changes.length && row.changes[0] <= t - 60_000) row.changes.shift();
    const base = t < row.baseUntil ? row.baseChanges : 0;
    if (row.changesEl) row.changesEl.textContent = String(base + row.changes.length);
    const m = Math.floor(t / 60_000);
    if (row.series.length) {
      while (row.minute < m) { row.series.shift(); row.series.push(online); row.minute++; }
      row.series[row.series.length - 1] = online;
      if (row.line) row.line.setAttribute('points', sparkPoints(row.series));
    }
  }

  client.onState((state) => {
    if (!connEl) return;
    connEl.setAttribute('data-state', state);
    connText.textContent = state === 'live' ? 'Live' : state === 'reconnecting' ? 'Connecting…' : 'Offline: retrying';
  });
  if (rows.length) {
    client.connect();
    setInterval(() => rows.forEach(render), 1000);
  } else if (connEl) {
    connText.textContent = 'Nothing to follow';
  }
}

const dataEl = $('overview-data');
if (dataEl) {
  try {
    start(JSON.parse(dataEl.textContent));
  } catch (e) {
    console.error('overview: could not start', e);
  }
}
