/**
 * presence.js — browser client for presencehub's live stream (GET /v1/stream).
 *
 * A plain ES module with no dependencies and no build step. It keeps one
 * websocket, reconnects with exponential backoff and jitter, and keeps a local
 * Map of users per subscription. After a drop it resumes every subscription
 * from its last applied sequence number (`since`), so only the missed changes
 * are sent; a gap in the sequence triggers the same resume.
 *
 * Usage:
 *
 *   import { PresenceClient, userStatus } from '/static/<version>/presence.js';
 *
 *   const client = new PresenceClient();
 *   client.onState((state) => console.log('connection', state)); // 'live' | 'reconnecting' | 'offline'
 *   client.connect(); // same origin: ws(s)://<host>/v1/stream, the dashboard's session cookie
 *   // or: client.connect(async () => `wss://hub.example/v1/stream?ticket=${await newTicket()}`);
 *
 *   const sub = client.subscribe(accountSid, {
 *     users: ['alice', 'bob'],            // optional watchlist; omit for the whole account
 *     onSnapshot(users, info) {},         // users: Map name → user; info: {resync, resumed}
 *     onChange(change, users) {},         // change: {seq, event, user, conflated}
 *     onState(state) {},                  // this subscription: 'live' once in sync
 *     onError(err) {},                    // {code, msg} from the server
 *   });
 *   sub.users.get('alice');               // {name, contact, expiryTime, protocol, ...}
 *   userStatus(sub.users.get('alice'));   // 'online' | 'expiring' | 'offline'
 *   sub.unsubscribe();
 *   client.close();
 *
 * The wire protocol (JSON text frames):
 *   → {"type":"subscribe","id","account_sid","users"?,"since"?:{"epoch","seq"}}
 *   → {"type":"unsubscribe","id"}
 *   ← snapshot {id, epoch, seq, users, resumed?, resync?}: replaces the state
 *   ← resumed {id, epoch, seq}: `since` was served, missed changes follow
 *   ← change {id, seq, event, user, conflated?}: seq grows by exactly 1 per
 *     account; a larger jump is a gap unless `conflated` says older changes
 *     of that user were merged into this one
 *   ← error {id, code, msg}
 */

/** How long before its expiry a registration counts as "expiring". */
export const EXPIRING_WITHIN_MS = 60_000;

/**
 * userStatus classifies a user object of the stream at time now (epoch ms,
 * default Date.now()): 'offline' when not registered or past its expiry,
 * 'expiring' when less than soonMs is left, else 'online'.
 */
export function userStatus(user, now = Date.now(), soonMs = EXPIRING_WITHIN_MS) {
  if (!user || user.registered_status !== 'active') return 'offline';
  if (!user.expiryTime) return 'online';
  const left = user.expiryTime - now;
  if (left <= 0) return 'offline';
  return left < soonMs ? 'expiring' : 'online';
}

/** The stream endpoint of the page's own origin. */
export function defaultStreamURL(loc = globalThis.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/v1/stream`;
}

const DEFAULTS = {
  minBackoff: 500, // ms before the first retry
  maxBackoff: 30_000, // ms cap between retries
  offlineAfter: 4, // failed attempts in a row before reporting 'offline'
};

// Errors after which retrying the same subscription cannot help.
const FATAL = new Set(['forbidden', 'not_found', 'bad_request', 'unauthorized']);

export class PresenceClient {
  /**
   * @param {object} [options]
   * @param {number} [options.minBackoff] first retry delay, ms (default 500)
   * @param {number} [options.maxBackoff] longest retry delay, ms (default 30000)
   * @param {number} [options.offlineAfter] failures before 'offline' (default 4)
   * @param {typeof WebSocket} [options.WebSocket] for tests or other runtimes
   */
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    /** 'live' | 'reconnecting' | 'offline' */
    this.state = 'offline';
    /** true once a connection has ever been open */
    this.everLive = false;
    this._url = null;
    this._ws = null;
    this._closed = true;
    this._attempt = 0;
    this._timer = null;
    this._subs = new Map(); // wire id → Subscription
    this._listeners = new Set();
    this._nextId = 1;
    this._online = () => this._retryNow();
    this._offline = () => this._setState('offline');
  }

  /**
   * connect opens the stream and keeps it open until close(). url is a
   * ws(s):// URL, or a function returning one (or a promise of one) — called
   * before every attempt, e.g. to fetch a fresh single-use ticket. Default:
   * this origin's /v1/stream.
   */
  connect(url) {
    this._url = url ?? defaultStreamURL();
    if (!this._closed) return this;
    this._closed = false;
    if (typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', this._online);
      globalThis.addEventListener('offline', this._offline);
    }
    this._setState('reconnecting');
    this._open();
    return this;
  }

  /** close ends the connection for good (no reconnect). */
  close() {
    this._closed = true;
    clearTimeout(this._timer);
    this._timer = null;
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this._online);
      globalThis.removeEventListener('offline', this._offline);
    }
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000, 'client closed');
    for (const sub of this._subs.values()) sub._disconnected();
    this._setState('offline');
  }

  /** onState calls fn(state) on every change of the connection state; returns an unsubscribe function. */
  onState(fn) {
    this._listeners.add(fn);
    return () => this._listeners.delete(fn);
  }

  /**
   * subscribe follows one account (or a watchlist of its users).
   * @param {string} accountSid
   * @param {object} [opts]
   * @param {string[]} [opts.users] watchlist; omit for every user of the account
   * @param {{epoch: string, seq: number}} [opts.since] resume from this position
   * @param {object[]} [opts.initial] the users already known at `since` (seeds the Map)
   * @param {(users: Map, info: object) => void} [opts.onSnapshot]
   * @param {(change: object, users: Map) => void} [opts.onResumed]
   * @param {(change: object, users: Map) => void} [opts.onChange]
   * @param {(state: string) => void} [opts.onState]
   * @param {(err: {code: string, msg: string}) => void} [opts.onError]
   * @returns {Subscription}
   */
  subscribe(accountSid, opts = {}) {
    const sub = new Subscription(this, accountSid, opts);
    this._register(sub);
    if (this._isOpen()) this._send(sub._frame());
    return sub;
  }

  _register(sub) {
    sub.wireId = `s${this._nextId++}`;
    this._subs.set(sub.wireId, sub);
  }

  _isOpen() {
    return this._ws !== null && this._ws.readyState === 1;
  }

  _send(frame) {
    if (!this._isOpen()) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    for (const fn of this._listeners) {
      try { fn(state); } catch (e) { console.error(e); }
    }
    for (const sub of this._subs.values()) sub._stateChanged();
  }

  async _open() {
    this._timer = null;
    let url = this._url;
    try {
      if (typeof url === 'function') url = await url();
    } catch (e) {
      this._failed();
      return;
    }
    if (this._closed || this._ws) return;
    let ws;
    try {
      ws = new this._WebSocket(url);
    } catch (e) {
      this._failed();
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this.everLive = true;
      // Fresh wire ids per connection: nothing from an old socket can be
      // mistaken for an answer on this one.
      const subs = [...this._subs.values()];
      this._subs.clear();
      for (const sub of subs) {
        this._register(sub);
        this._send(sub._frame());
      }
      this._setState('live');
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws || typeof ev.data !== 'string') return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      // The backoff resets only once the server talks: a socket that opens
      // and is closed at once (say, a refused session) keeps backing off.
      this._attempt = 0;
      const sub = this._subs.get(msg && msg.id);
      if (sub) sub._onFrame(msg);
    };
    ws.onclose = () => {
      if (this._ws !== ws) return;
      this._ws = null;
      for (const sub of this._subs.values()) sub._disconnected();
      if (!this._closed) this._failed();
    };
    ws.onerror = () => {}; // a close event follows
  }

  _failed() {
    if (this._closed) return;
    this._attempt++;
    const { minBackoff, maxBackoff, offlineAfter } = this.options;
    const cap = Math.min(maxBackoff, minBackoff * 2 ** Math.min(this._attempt - 1, 16));
    const delay = cap / 2 + Math.random() * (cap / 2);
    const offline = this._attempt > offlineAfter || globalThis.navigator?.onLine === false;
    this._setState(offline ? 'offline' : 'reconnecting');
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }

  _retryNow() {
    if (this._closed || this._ws) return;
    clearTimeout(this._timer);
    this._attempt = 0;
    this._setState('reconnecting');
    this._open();
  }

  // _resubscribe asks again from the subscription's last position (after a gap).
  _resubscribe(sub) {
    this._send({ type: 'unsubscribe', id: sub.wireId });
    this._subs.delete(sub.wireId);
    this._register(sub);
    this._send(sub._frame());
  }

  _remove(sub) {
    if (this._subs.get(sub.wireId) === sub) {
      this._send({ type: 'unsubscribe', id: sub.wireId });
      this._subs.delete(sub.wireId);
    }
  }
}

/** Subscription is one account (or watchlist) followed by a PresenceClient. */
export class Subscription {
  constructor(client, accountSid, opts) {
    this.client = client;
    this.accountSid = accountSid;
    this.watch = Array.isArray(opts.users) && opts.users.length ? [...opts.users] : null;
    /** Map of user name → user object (the stream's shape). */
    this.users = new Map();
    for (const u of opts.initial || []) this.users.set(u.name, u);
    /** Position of the last applied change: epoch and seq, or null before the first snapshot. */
    this.epoch = opts.since ? opts.since.epoch : null;
    this.seq = opts.since ? Number(opts.since.seq) : 0;
    this.synced = false;
    this.closed = false;
    this.state = 'offline';
    this.wireId = '';
    this._h = opts;
  }

  /** The position to resume from, or null. */
  get position() {
    return this.epoch ? { epoch: this.epoch, seq: this.seq } : null;
  }

  /** unsubscribe stops this subscription. */
  unsubscribe() {
    if (this.closed) return;
    this.closed = true;
    this.client._remove(this);
    this._setState('offline');
  }

  _frame() {
    const f = { type: 'subscribe', id: this.wireId, account_sid: this.accountSid };
    if (this.watch) f.users = this.watch;
    if (this.position) f.since = this.position;
    return f;
  }

  _call(name, ...args) {
    const fn = this._h[name];
    if (typeof fn !== 'function') return;
    try { fn.apply(this, args); } catch (e) { console.error(e); }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._call('onState', state);
  }

  // The subscription is live when the connection is and it is in sync.
  _stateChanged() {
    if (this.closed) return;
    const c = this.client.state;
    this._setState(c === 'live' ? (this.synced ? 'live' : 'reconnecting') : c);
  }

  _disconnected() {
    this.synced = false;
    this._stateChanged();
  }

  _onFrame(msg) {
    switch (msg.type) {
      case 'snapshot': {
        this.users = new Map();
        for (const u of msg.users || []) this.users.set(u.name, u);
        this.epoch = msg.epoch;
        this.seq = Number(msg.seq) || 0;
        this.synced = true;
        this._call('onSnapshot', this.users, { resync: !!msg.resync, resumed: msg.resumed, epoch: msg.epoch, seq: this.seq });
        this._stateChanged();
        return;
      }
      case 'resumed':
        // The missed changes follow, starting after the seq we sent.
        this.epoch = msg.epoch || this.epoch;
        this.synced = true;
        this._call('onResumed', { epoch: this.epoch, seq: this.seq }, this.users);
        this._stateChanged();
        return;
      case 'change': {
        if (!this.synced) return;
        const seq = Number(msg.seq);
        if (!(seq > this.seq)) return; // already applied
        // A whole-account subscription sees every seq; a watchlist only its
        // users', so only the former can tell a gap.
        if (!this.watch && seq !== this.seq + 1 && !msg.conflated) {
          this.synced = false;
          this.client._resubscribe(this);
          this._stateChanged();
          return;
        }
        const user = msg.user;
        if (user && user.name != null) {
          if (user.registered_status === 'active' || this.watch) this.users.set(user.name, user);
          else this.users.delete(user.name);
        }
        this.seq = seq;
        this._call('onChange', { seq, event: msg.event, user, conflated: !!msg.conflated }, this.users);
        return;
      }
      case 'error':
        this._call('onError', { code: msg.code, msg: msg.msg });
        if (FATAL.has(msg.code)) {
          this.closed = true;
          this.client._remove(this);
          this._setState('offline');
        }
        return;
    }
  }
}
