// dashboard.js — the account page's live logic.
//
// The server rendered the page from the hub's snapshot and put the same data
// in <script type="application/json" id="account-data">. This module keeps a
// model of every row (SIP clients ∪ registered users), resumes the stream
// from the snapshot's position, applies changes to the model as they arrive
// and redraws at most once per animation frame: only the visible page of the
// table (~100 rows), the counters, the chart and the feed. Nothing here uses
// innerHTML for data: every value goes through textContent or setAttribute.
//
// Row markup mirrors web/account.templ's userRow (keep in sync): each row has
// data-testid="user-row", data-user and data-status (online|expiring|offline).

import { PresenceClient, userStatus } from './presence.js';

const $ = (id) => document.getElementById(id);

const SORT_KEYS = ['name', 'status', 'protocol', 'contact', 'proxy', 'since', 'left', 'event', 'app', 'queue', 'user'];
const STATUS_ORDER = { online: 0, expiring: 1, offline: 2 };
const STATUS_LABEL = { online: 'online', expiring: 'expiring soon', offline: 'offline' };
const CHART_REFRESH_MS = 60_000; // the chart (from the registration history) is re-read this often
const LIST_INTERVAL_MS = 100; // recompute filter+sort at most this often

function startAccountPage(data) {
  const offset = (data.now || Date.now()) - Date.now(); // server clock − browser clock
  const now = () => Date.now() + offset;
  const soon = data.expiring_within_ms || 60_000;
  const pageSize = data.page_size || 100;
  const feedSize = data.feed_size || 100;
  const accountSid = data.account_sid;
  const userURL = (name) => `/accounts/${accountSid}/users/${encodeURIComponent(name)}`;

  // ---- model ---------------------------------------------------------------

  // foldName is the server's one rule for usernames that are the same
  // (hub.Fold): ASCII letters lower-cased, nothing else, so the page merges
  // SIP clients and registrations exactly as the server does.
  const foldName = (name) => name.replace(/[A-Z]+/g, (s) => s.toLowerCase());

  // Users the registration history counted as flapping when the page was
  // rendered (not kept live: the server counts sessions in PostgreSQL).
  const flappingKeys = new Set((data.flapping || []).map(foldName));
  /** key (foldName(name)) → row */
  const rows = new Map();
  const newRow = (name) => ({
    key: foldName(name), name, client: null, user: null,
    since: null, lastEvent: null, eventTime: null, status: 'offline', v: 0,
    flapping: flappingKeys.has(foldName(name)),
  });
  const registered = (r) => !!(r.user && r.user.registered_status === 'active');
  const statusOf = (r, t) => (registered(r) ? userStatus(r.user, t, soon) : 'offline');
  const leftOf = (r, t) => (registered(r) && r.user.expiryTime ? Math.max(0, r.user.expiryTime - t) : 0);
  const flagsOf = (r) => {
    if (registered(r)) {
      const u = r.user;
      return [u.allow_direct_app_calling, u.allow_direct_queue_calling, u.allow_direct_user_calling].map((x) => !!Number(x));
    }
    return r.client ? [r.client.app, r.client.queue, r.client.user] : [false, false, false];
  };

  for (const c of data.clients || []) {
    const k = foldName(c.name);
    if (rows.has(k)) continue;
    const r = newRow(c.name);
    r.client = c;
    rows.set(k, r);
  }
  const t0 = now();
  for (const u of data.users || []) {
    const k = foldName(u.name);
    let r = rows.get(k);
    if (!r) rows.set(k, (r = newRow(u.name)));
    r.user = u;
    r.since = u.since ?? null;
    r.lastEvent = u.last_event || null;
    r.eventTime = u.event_time ?? null;
  }
  for (const r of rows.values()) r.status = statusOf(r, t0);

  // applyUser puts one user object of the stream into the model. event is
  // the change's event, or null when it comes from a snapshot.
  function applyUser(u, event) {
    const k = foldName(u.name);
    let r = rows.get(k);
    const active = u.registered_status === 'active';
    if (!r) {
      if (!active) return;
      rows.set(k, (r = newRow(u.name)));
      membershipChanged = true;
    }
    const was = registered(r);
    if (active) {
      if (event === 'registered') r.since = u.event_time ?? null;
      else if (!was) r.since = null; // registered before we knew: unknown
      r.user = u;
    } else {
      r.user = null;
      r.since = null;
      if (!r.client) {
        rows.delete(k);
        membershipChanged = true;
        return;
      }
    }
    if (event) {
      r.lastEvent = event;
      r.eventTime = u.event_time ?? null;
    } else if (was && r.eventTime !== (u.event_time ?? null)) {
      r.lastEvent = null; // changed while we were away; which event is unknown
      r.eventTime = u.event_time ?? null;
    }
    r.status = statusOf(r, now());
    r.v++;
    contentChanged = true;
  }

  function applySnapshot(users) {
    const seen = new Set();
    for (const u of users.values()) {
      seen.add(foldName(u.name));
      applyUser(u, null);
    }
    for (const [k, r] of rows) {
      if (seen.has(k) || !r.user) continue;
      r.user = null;
      r.since = null;
      if (!r.client) {
        rows.delete(k);
        membershipChanged = true;
      } else {
        r.status = 'offline';
        r.v++;
        contentChanged = true;
      }
    }
  }

  // ---- query (search, filters, sort, page) ----------------------------------

  const q0 = data.query || {};
  const query = {
    q: q0.q || '',
    status: q0.status || '',
    protocol: q0.protocol || '',
    sort: SORT_KEYS.includes(q0.sort) ? q0.sort : 'name',
    desc: q0.dir === 'desc',
    page: q0.page || 1,
    flapping: !!q0.flapping,
    range: q0.range || '',
  };

  const cmpStr = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  const byName = (a, b) => cmpStr(a.key, b.key) || cmpStr(a.name, b.name);
  function comparator(key, t) {
    switch (key) {
      case 'status': return (a, b) => STATUS_ORDER[a.status] - STATUS_ORDER[b.status];
      case 'protocol': return (a, b) => cmpStr(registered(a) ? a.user.protocol || '' : '', registered(b) ? b.user.protocol || '' : '');
      case 'contact': return (a, b) => cmpStr(registered(a) ? a.user.contact || '' : '', registered(b) ? b.user.contact || '' : '');
      case 'proxy': return (a, b) => cmpStr(registered(a) ? a.user.proxy || '' : '', registered(b) ? b.user.proxy || '' : '');
      case 'since': return (a, b) => (a.since || 0) - (b.since || 0);
      case 'left': return (a, b) => leftOf(a, t) - leftOf(b, t);
      case 'event': return (a, b) => (a.eventTime || 0) - (b.eventTime || 0);
      case 'app': return (a, b) => flagsOf(a)[0] - flagsOf(b)[0];
      case 'queue': return (a, b) => flagsOf(a)[1] - flagsOf(b)[1];
      case 'user': return (a, b) => flagsOf(a)[2] - flagsOf(b)[2];
    }
    return () => 0;
  }

  let list = [];
  function computeList(t) {
    const needle = query.q.trim().toLowerCase();
    const out = [];
    for (const r of rows.values()) {
      if (needle && !r.key.includes(needle)) continue;
      if (query.status && r.status !== query.status) continue;
      if (query.protocol && (!registered(r) || (r.user.protocol || 'unknown').toLowerCase() !== query.protocol)) continue;
      if (query.flapping && !r.flapping) continue;
      out.push(r);
    }
    const by = comparator(query.sort, t);
    const sign = query.desc ? -1 : 1;
    out.sort((a, b) => sign * (by(a, b) || byName(a, b)));
    list = out;
    const pages = Math.max(1, Math.ceil(list.length / pageSize));
    query.page = Math.min(Math.max(1, query.page), pages);
  }

  function queryString() {
    const p = new URLSearchParams();
    if (query.q) p.set('q', query.q);
    if (query.status) p.set('status', query.status);
    if (query.protocol) p.set('protocol', query.protocol);
    if (query.sort !== 'name') p.set('sort', query.sort);
    if (query.desc) p.set('dir', 'desc');
    if (query.page > 1) p.set('page', String(query.page));
    if (query.flapping) p.set('flapping', '1');
    if (query.range) p.set('range', query.range);
    const s = p.toString();
    return s ? `?${s}` : '';
  }

  // ---- DOM -------------------------------------------------------------------

  const tbody = $('users-body');
  const pagerEl = $('pager');
  const summaryEl = $('table-summary');
  const feedEl = $('feed');
  const protoEl = $('protocol-counts');
  const connEl = $('conn-state');
  const connText = $('conn-text');
  const counterEls = {
    online: $('count-online'), expiring: $('count-expiring'), offline: $('count-offline'),
    registered: $('count-registered'), total: $('count-total'),
  };

  const h = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) if (v != null) e.setAttribute(k, v);
    for (const c of children) if (c != null) e.append(c);
    return e;
  };
  const dash = (s) => (s == null || s === '' ? '—' : String(s));
  // One formatter each: toLocale*String builds a new one per call, which is
  // slow at hundreds of rows a frame.
  const clockFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'short', timeStyle: 'medium' });
  const clock = (ms) => clockFmt.format(ms);
  const dateTime = (ms) => dateTimeFmt.format(ms);
  const iso = (ms) => new Date(ms).toISOString();
  function fmtLeft(ms) {
    const s = Math.floor(ms / 1000);
    if (s <= 0) return '0s';
    const hh = Math.floor(s / 3600), mm = Math.floor(s / 60) % 60, ss = s % 60;
    const p2 = (n) => String(n).padStart(2, '0');
    if (hh > 0) return `${hh}h ${p2(mm)}m`;
    if (mm > 0) return `${mm}m ${p2(ss)}s`;
    return `${ss}s`;
  }
  const leftText = (r, t) => (registered(r) && r.user.expiryTime ? fmtLeft(leftOf(r, t)) : '—');

  function fillRow(tr, r, t) {
    tr.setAttribute('data-testid', 'user-row');
    tr.setAttribute('data-user', r.name);
    tr.setAttribute('data-status', r.status);
    const reg = registered(r);
    const u = reg ? r.user : null;
    const name = h('th', { scope: 'row', class: 'name' });
    if (r.client) {
      name.append(h('a', { href: `/accounts/${accountSid}/clients/${r.client.sid}`, 'data-testid': 'client-link' }, r.name));
      if (!r.client.active) name.append(' ', h('span', { class: 'tag', 'data-testid': 'inactive' }, 'inactive'));
    } else {
      name.append(r.name, ' ', h('span', { class: 'tag', 'data-testid': 'no-client' }, 'no client'));
    }
    if (r.flapping) {
      name.append(' ', h('span', { class: 'tag tag-flapping', 'data-testid': 'flapping',
        title: 'more sessions or NAT binding changes in the last hour than --flap-sessions' }, 'flapping'));
    }
    name.append(' ', h('a', { class: 'user-link', href: userURL(r.name), 'data-testid': 'user-link', 'aria-label': `Presence history of ${r.name}` }, 'history'));
    const since = h('td');
    if (reg && r.since) since.append(h('time', { datetime: iso(r.since) }, dateTime(r.since)));
    else since.append('—');
    const left = h('td', { class: 'num left', 'data-testid': 'time-left' }, leftText(r, t));
    const ev = h('td');
    if (r.lastEvent) ev.append(r.lastEvent, ' ');
    if (r.eventTime) ev.append(h('time', { datetime: iso(r.eventTime), class: 'muted' }, clock(r.eventTime)));
    if (!r.lastEvent && !r.eventTime) ev.append('—');
    const flags = flagsOf(r);
    tr.replaceChildren(
      name,
      h('td', { class: 'status' }, h('span', { class: `badge badge-${r.status}` }, STATUS_LABEL[r.status])),
      h('td', null, dash(u && u.protocol)),
      h('td', { class: 'mono wrap' }, dash(u && u.contact)),
      h('td', { class: 'mono' }, dash(u && u.proxy)),
      since,
      left,
      ev,
      ...['app', 'queue', 'user'].map((f, i) =>
        h('td', { class: 'flag', 'data-flag': f, 'data-value': flags[i] ? '1' : '0' }, flags[i] ? 'yes' : 'no')),
    );
    tr._v = r.v;
    tr._left = left;
    tr._row = r;
  }

  /** key → <tr> of the rows on the current page */
  let shown = new Map();
  let shownKeys = '';
  function renderRows(t) {
    const start = (query.page - 1) * pageSize;
    const visible = list.slice(start, start + pageSize);
    const next = new Map();
    for (const r of visible) {
      let tr = shown.get(r.key);
      if (!tr || tr._row !== r) {
        tr = document.createElement('tr');
        fillRow(tr, r, t);
      } else if (tr._v !== r.v) {
        fillRow(tr, r, t);
      } else {
        const txt = leftText(r, t);
        if (tr._left.textContent !== txt) tr._left.textContent = txt;
      }
      next.set(r.key, tr);
    }
    const keys = visible.map((r) => r.key).join('\n');
    // Touch the children only when the page's membership or order changed:
    // moving a node would drop the focus of a link inside it.
    if (keys !== shownKeys || tbody.children.length !== Math.max(1, visible.length)) {
      if (visible.length) tbody.replaceChildren(...next.values());
      else tbody.replaceChildren(h('tr', { class: 'empty' }, h('td', { colspan: '11' }, 'No users match.')));
      shownKeys = keys;
    }
    shown = next;
  }

  function renderPager() {
    const pages = Math.max(1, Math.ceil(list.length / pageSize));
    const prev = h('button', { type: 'button', 'data-testid': 'page-prev', class: 'button-quiet' }, 'Previous');
    const next = h('button', { type: 'button', 'data-testid': 'page-next', class: 'button-quiet' }, 'Next');
    prev.disabled = query.page <= 1;
    next.disabled = query.page >= pages;
    prev.addEventListener('click', () => goPage(query.page - 1));
    next.addEventListener('click', () => goPage(query.page + 1));
    const info = h('span', { 'data-testid': 'page-info' }, `Page ${query.page} of ${pages}`);
    const focused = pagerEl.contains(document.activeElement) ? document.activeElement.getAttribute('data-testid') : null;
    pagerEl.replaceChildren(prev, info, next);
    if (focused) {
      const again = pagerEl.querySelector(`[data-testid="${focused}"]`);
      if (again && !again.disabled) again.focus();
    }
  }

  function goPage(p) {
    query.page = p;
    pagerDirty = true;
    updateURL();
    schedule();
  }

  function counts(t) {
    const c = { online: 0, expiring: 0, offline: 0, total: rows.size, protocols: new Map() };
    for (const r of rows.values()) {
      c[r.status]++;
      if (registered(r) && r.status !== 'offline') {
        const p = (r.user.protocol || 'unknown').toLowerCase();
        c.protocols.set(p, (c.protocols.get(p) || 0) + 1);
      }
    }
    c.registered = c.online + c.expiring;
    return c;
  }

  let lastProtoKey = '';
  function renderCounters(c) {
    for (const k of ['online', 'expiring', 'offline', 'registered', 'total']) {
      const e = counterEls[k];
      if (e && e.textContent !== String(c[k])) e.textContent = String(c[k]);
    }
    if (summaryEl) summaryEl.textContent = `${list.length} of ${c.total} users`;
    const entries = [...c.protocols.entries()].sort((a, b) => cmpStr(a[0], b[0]));
    const key = entries.map(([p, n]) => `${p}=${n}`).join(',');
    if (protoEl && key !== lastProtoKey) {
      lastProtoKey = key;
      if (entries.length === 0) {
        protoEl.replaceChildren(h('li', { class: 'muted', 'data-empty': '' }, 'none registered'));
      } else {
        protoEl.replaceChildren(...entries.map(([p, n]) =>
          h('li', { 'data-testid': 'count-protocol', 'data-protocol': p },
            h('span', { class: 'counter-label' }, p), ' ', h('strong', null, String(n)))));
      }
    }
  }

  // ---- chart -------------------------------------------------------------------
  //
  // The server draws the chart (web/chart.templ) from the registration
  // history; here the range links fetch the chart alone and swap it in, it
  // is re-read every CHART_REFRESH_MS, its times are relabelled in the
  // browser's time zone, and "registered now" follows the stream.

  const tickFmt = {
    minute: new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' }),
    day: new Intl.DateTimeFormat(undefined, { weekday: 'short', day: '2-digit' }),
  };
  let zone = '';
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ''; } catch (e) { zone = ''; }
  let chartRequest = 0;
  let lastChartNow = -1;
  function localizeChart() {
    const box = $('chart-box');
    if (!box) return;
    const fmt = box.getAttribute('data-range') === '7d' ? tickFmt.day : tickFmt.minute;
    for (const t of box.querySelectorAll('[data-testid=chart-x-tick][data-ms]')) {
      t.textContent = fmt.format(Number(t.getAttribute('data-ms')));
    }
    const z = box.querySelector('[data-testid=chart-zone]');
    if (z) z.textContent = zone ? `your time zone (${zone})` : 'your time zone';
    for (const a of box.querySelectorAll('a[data-range]')) {
      a.addEventListener('click', (e) => {
        if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        loadChart(a.getAttribute('data-range'));
      });
    }
    lastChartNow = -1;
  }
  async function loadChart(range) {
    const box = $('chart-box');
    if (!box) return;
    const key = range || box.getAttribute('data-range') || '';
    const req = ++chartRequest;
    try {
      const res = await fetch(`/accounts/${accountSid}/chart?range=${encodeURIComponent(key)}`, { credentials: 'same-origin', headers: { Accept: 'text/html' } });
      if (!res.ok || req !== chartRequest) return;
      const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
      const fresh = doc.getElementById('chart-box');
      const cur = $('chart-box');
      if (!fresh || !cur || req !== chartRequest) return;
      cur.replaceWith(document.importNode(fresh, true));
      localizeChart();
      if (range != null) {
        query.range = key === '1h' ? '' : key;
        updateURL();
      }
      schedule();
    } catch (e) {
      // Offline: the chart stays as it is until the next refresh.
    }
  }
  localizeChart();
  setInterval(() => loadChart(null), CHART_REFRESH_MS);

  function renderChart(registeredNow) {
    if (registeredNow === lastChartNow) return;
    const el = $('chart-now');
    if (!el) return;
    lastChartNow = registeredNow;
    el.textContent = String(registeredNow);
  }

  // ---- feed ----------------------------------------------------------------------

  let feedSeq = Number(data.seq) || 0;
  let feedEpoch = data.epoch;
  for (const li of feedEl ? feedEl.querySelectorAll('li[data-seq]') : []) {
    feedSeq = Math.max(feedSeq, Number(li.getAttribute('data-seq')) || 0);
  }
  let pendingFeed = [];
  function queueFeed(seq, event, user) {
    if (seq <= feedSeq) return; // already shown (replayed on resume)
    feedSeq = seq;
    pendingFeed.push({ seq, event, name: user.name, time: user.event_time || now() });
    if (pendingFeed.length > feedSize) pendingFeed = pendingFeed.slice(-feedSize);
  }
  function renderFeed() {
    if (!pendingFeed.length || !feedEl) return;
    const frag = document.createDocumentFragment();
    for (let i = pendingFeed.length - 1; i >= 0; i--) {
      const it = pendingFeed[i];
      frag.append(h('li', { 'data-testid': 'feed-item', 'data-seq': String(it.seq), 'data-event': it.event, 'data-user': it.name },
        h('time', { datetime: iso(it.time) }, clock(it.time)), ' ',
        h('a', { class: 'feed-user', href: userURL(it.name), 'data-testid': 'feed-user-link' }, it.name), ' ',
        h('span', { class: `event event-${it.event}` }, it.event)));
    }
    pendingFeed = [];
    feedEl.prepend(frag);
    while (feedEl.children.length > feedSize) feedEl.lastElementChild.remove();
    const empty = $('feed-empty');
    if (empty) empty.remove();
  }

  // ---- frame loop ------------------------------------------------------------------

  let membershipChanged = true;
  let contentChanged = true;
  let listDirty = true;
  let pagerDirty = false;
  let lastList = 0;
  let scheduled = false;
  let listTimer = null;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(frame);
  }
  function frame() {
    scheduled = false;
    const t = now();
    // With the default view (by name, no status or protocol filter) a
    // change of a user's state cannot move rows: only membership can.
    const contentMatters = query.sort !== 'name' || query.status !== '' || query.protocol !== '';
    if (membershipChanged || (contentChanged && contentMatters)) listDirty = true;
    membershipChanged = contentChanged = false;
    if (listDirty) {
      // Under a burst, re-filter and re-sort at most every LIST_INTERVAL_MS;
      // the visible rows' cells still update every frame.
      const wait = lastList + LIST_INTERVAL_MS - performance.now();
      if (wait <= 0 || list.length === 0) {
        computeList(t);
        lastList = performance.now();
        listDirty = false;
        pagerDirty = true;
      } else if (!listTimer) {
        listTimer = setTimeout(() => { listTimer = null; schedule(); }, wait);
      }
    }
    if (pagerDirty) {
      pagerDirty = false;
      renderPager();
    }
    renderRows(t);
    const c = counts(t);
    renderCounters(c);
    renderChart(c.registered);
    renderFeed();
  }

  // Once a second: countdowns, and statuses that lapse on the browser's clock
  // (the server's expired event is the truth and follows).
  setInterval(() => {
    const t = now();
    for (const r of rows.values()) {
      if (!r.user) continue;
      const s = statusOf(r, t);
      if (s !== r.status) {
        r.status = s;
        r.v++;
        contentChanged = true;
      }
    }
    schedule();
  }, 1000);

  // ---- controls -----------------------------------------------------------------------

  function updateURL() {
    const url = `${location.pathname}${queryString()}`;
    history.replaceState(null, '', url);
    for (const a of document.querySelectorAll('a[data-sort]')) {
      const key = a.getAttribute('data-sort');
      const th = a.closest('th');
      const p = new URLSearchParams(queryString());
      p.delete('page');
      if (query.sort === key) {
        th.setAttribute('aria-sort', query.desc ? 'descending' : 'ascending');
        if (query.desc) p.delete('dir'); else p.set('dir', 'desc');
      } else {
        th.setAttribute('aria-sort', 'none');
        p.delete('dir');
      }
      if (key === 'name') p.delete('sort'); else p.set('sort', key);
      const s = p.toString();
      a.setAttribute('href', `${location.pathname}${s ? `?${s}` : ''}`);
    }
  }

  const form = $('user-filter');
  if (form) {
    const qIn = $('filter-q'), stIn = $('filter-status'), prIn = $('filter-protocol'), flIn = $('filter-flapping');
    const apply = () => {
      query.q = qIn ? qIn.value : '';
      query.status = stIn ? stIn.value : '';
      query.protocol = prIn ? prIn.value : '';
      query.flapping = flIn ? flIn.checked : false;
      query.page = 1;
      listDirty = true;
      lastList = 0; // the user is waiting: no throttling
      updateURL();
      schedule();
    };
    form.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
    form.addEventListener('input', apply);
    form.addEventListener('change', apply);
  }
  for (const a of document.querySelectorAll('a[data-sort]')) {
    a.addEventListener('click', (e) => {
      if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return; // let "open in new tab" work
      e.preventDefault();
      const key = a.getAttribute('data-sort');
      if (query.sort === key) query.desc = !query.desc;
      else { query.sort = key; query.desc = false; }
      query.page = 1;
      listDirty = true;
      lastList = 0;
      updateURL();
      schedule();
    });
  }

  // ---- connection -------------------------------------------------------------------

  const client = new PresenceClient();
  function showState(state, msg) {
    if (!connEl) return;
    connEl.setAttribute('data-state', state);
    let text = msg;
    if (!text) {
      if (state === 'live') text = 'Live';
      else if (state === 'reconnecting') text = client.everLive ? 'Reconnecting…' : 'Connecting…';
      else text = 'Offline: retrying';
    }
    connText.textContent = text;
  }

  if (data.realm) {
    client.subscribe(accountSid, {
      since: data.epoch ? { epoch: data.epoch, seq: Number(data.seq) || 0 } : undefined,
      initial: data.users,
      onSnapshot(users, info) {
        applySnapshot(users);
        // A new epoch numbers its changes afresh; in the same epoch, what
        // the feed shows already stays shown once.
        feedSeq = info.epoch === feedEpoch ? Math.max(info.seq, feedSeq) : info.seq;
        feedEpoch = info.epoch;
        schedule();
      },
      onChange(change) {
        if (change.user && change.user.name != null) {
          applyUser(change.user, change.event);
          queueFeed(change.seq, change.event, change.user);
        }
        schedule();
      },
      onState(state) { showState(state); },
      onError(err) {
        if (err.code === 'forbidden' || err.code === 'not_found') {
          showState('offline', `Updates unavailable: ${err.msg || err.code}`);
        }
      },
    });
    client.connect();
    showState('reconnecting');
  } else {
    showState('offline', 'No SIP realm: nothing to follow');
  }

  // Take over the server-rendered rows with the live model.
  updateURL();
  schedule();
}

// Start last: every module-level constant above is initialised by now.
const dataEl = $('account-data');
if (dataEl) {
  try {
    startAccountPage(JSON.parse(dataEl.textContent));
  } catch (e) {
    console.error('dashboard: could not start', e);
  }
}
