// rtclient.js: the rtserver browser client (plain ES module, no build step; types in rtclient.d.ts).
//
// Negotiates WebSocket -> Server-Sent Events -> long-polling (a transport that fails
// `fallbackAfter` times in a row, `fallbackAfterOpened` if it worked here before, counting
// an attempt silent past `openTimeoutMs` as failed, gives way to the next); reconnects with exponential backoff and full jitter; resumes every
// room from the last cursor in one request (`?since=` with `?rooms=`); drops any event id it
// already delivered (an event routed to two rooms, a replay after a resume); sends heartbeats;
// follows each close code's action (docs/protocol.md): resume, refresh the token, or stop.

const CLOSE_ACTIONS = { resume: "resume", refresh_token: "refresh_token", stop: "stop" };

// What a close code asks of the client, by the ranges of protocol/errors.py: 4000-4099
// reconnect and resume, 4100-4199 refresh the token first, 4400-4499 stop; of the standard
// codes, a normal close, a protocol error and a message too big stop, the rest resume.
function actionFor(code) {
  if (code >= 4100 && code < 4200) return CLOSE_ACTIONS.refresh_token;
  if (code === 1000 || code === 1002 || code === 1009 || (code >= 4400 && code < 4500)) return CLOSE_ACTIONS.stop;
  return CLOSE_ACTIONS.resume;
}

class Closed extends Error {
  constructor(code, reason, action) {
    super(`closed ${code} ${reason || ""}`);
    this.code = code;
    this.reason = reason || "";
    this.action = action || actionFor(code);
  }
}

export class RtClient {
  constructor(options = {}) {
    this.options = {
      url: globalThis.location ? globalThis.location.origin : "http://127.0.0.1:8080",
      ns: "hub",
      transports: ["websocket", "sse", "poll"],
      fallbackAfter: 2,
      fallbackAfterOpened: 10,
      openTimeoutMs: 8000,
      backoffBaseMs: 500,
      backoffMaxMs: 15000,
      seenIds: 5000,
      ...options,
    };
    if (typeof this.options.getToken !== "function") throw new TypeError("getToken is required");
    this.state = "idle"; // idle | connecting | open | reconnecting | stopped
    this.transport = null; // websocket | sse | poll
    this.cursor = null;
    this.session = null;
    this.hello = null;
    this.rooms = new Set(this.options.rooms || []);
    this._fresh = new Set(this.rooms);
    this._presence = null; // the state this client asked for ("online" | "away")
    this._handlers = new Map();
    this._seen = new Set();
    this._seenOrder = [];
    this._transportIndex = 0;
    this._worked = new Set(); // transports that opened at least once
    this._failures = 0;
    this._attempt = 0;
    this._refs = 1;
    this._replies = new Map();
    this._conn = null;
    this._timers = new Set();
    this._token = null;
  }

  // -- public API ----------------------------------------------------------------------
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this._handlers.get(event).delete(fn);
  }

  start() {
    if (this.state !== "idle" && this.state !== "stopped") return this;
    this._setState("connecting");
    this._connect();
    return this;
  }

  stop() {
    this._clearTimers();
    this._setState("stopped");
    if (this._conn) this._conn.close();
    this._conn = null;
  }

  async subscribe(room) {
    if (this.rooms.has(room)) return { op: "ack", room };
    this.rooms.add(room);
    this._fresh.add(room);
    if (this.transport === "websocket" && this.state === "open") {
      const ack = await this._command({ op: "sub", room });
      this._fresh.delete(room);
      return ack;
    }
    this._reopen(); // SSE and polls name their rooms: reopen with them and the cursor
    return { op: "ack", room };
  }

  async unsubscribe(room) {
    if (!this.rooms.delete(room)) return { op: "ack", room };
    this._fresh.delete(room);
    if (this.transport === "websocket" && this.state === "open") return this._command({ op: "unsub", room });
    this._reopen();
    return { op: "ack", room };
  }

  /** Emit a client event; resolves with the ack, rejects with the error frame. */
  async emit(event, data = {}, room = undefined) {
    if (event === "presence:online" || event === "presence:away") this._presence = event.slice(9);
    const frame = { op: "emit", event, data };
    if (room) frame.room = room;
    if (this.transport === "websocket" && this.state === "open") return this._command(frame);
    return this._post(frame);
  }

  // -- events --------------------------------------------------------------------------
  _fire(event, value) {
    for (const fn of this._handlers.get(event) || []) {
      try { fn(value); } catch (err) { console.error("rtclient handler failed", err); }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._fire("state", state);
  }

  _setTransport(name) {
    if (this.transport === name) return;
    this.transport = name;
    this._fire("transport", name);
  }

  _deliver(frame) {
    if (frame.op === "hello") {
      this.hello = frame;
      this.session = frame.session;
      if (!this.cursor) this.cursor = frame.cursor;
      this._opened();
      if (frame.recovered === false) this._fire("reset", frame); // history lost: reload your state
      this._fire("hello", frame);
      return;
    }
    if (frame.op !== "evt") {
      const reply = this._replies.get(frame.ref);
      if (reply) {
        this._replies.delete(frame.ref);
        (frame.op === "error" ? reply.reject : reply.resolve)(frame);
      }
      return;
    }
    if (frame.cursor) this.cursor = frame.cursor;
    if (this._seen.has(frame.id)) return;
    this._seen.add(frame.id);
    this._seenOrder.push(frame.id);
    if (this._seenOrder.length > this.options.seenIds) this._seen.delete(this._seenOrder.shift());
    this._fire("event", frame);
    this._fire(frame.event, frame);
  }

  _opened() {
    this._failures = 0;
    this._attempt = 0;
    this._worked.add(this.transport);
    this._fresh.clear();
    this._setState("open");
    this._startHeartbeat();
    if (this._presence && this.transport === "websocket") {
      this.emit(`presence:${this._presence}`).catch(() => {});
    }
  }

  // -- connecting ----------------------------------------------------------------------
  async _connect() {
    this._clearTimers();
    if (this.state === "stopped") return;
    const name = this.options.transports[this._transportIndex];
    this._setTransport(name);
    try {
      this._token = this._token || await this.options.getToken();
    } catch (err) {
      this._fire("error", err);
      this._scheduleReconnect(false);
      return;
    }
    const opener = { websocket: this._openWebSocket, sse: this._openSse, poll: this._openPoll }[name];
    const conn = opener.call(this);
    this._conn = conn;
    this._timer(() => { if (this._conn === conn && this.state !== "open") conn.close(new Closed(4900, "open timeout")); },
      this.options.openTimeoutMs);
    conn.done.then((closed) => this._closed(conn, closed));
  }

  _closed(conn, closed) {
    if (this._conn !== conn) return; // replaced (reopened with new rooms) or stopped
    this._conn = null;
    this._stopHeartbeat();
    for (const reply of this._replies.values()) reply.reject({ op: "error", code: 201, message: "disconnected" });
    this._replies.clear();
    if (this.state === "stopped") return;
    const wasOpen = this.state === "open";
    this._fire("close", closed);
    if (closed.action === CLOSE_ACTIONS.stop) {
      this.stop();
      return;
    }
    if (closed.action === CLOSE_ACTIONS.refresh_token) this._token = null;
    this._scheduleReconnect(wasOpen);
  }

  _scheduleReconnect(wasOpen) {
    this._setState("reconnecting");
    if (!wasOpen) {
      // A transport that worked here before is given longer: a network outage makes every
      // transport fail, and should not cost the best one.
      const limit = this._worked.has(this.transport) ? this.options.fallbackAfterOpened : this.options.fallbackAfter;
      this._failures += 1;
      if (this._failures >= limit && this._transportIndex < this.options.transports.length - 1) {
        this._transportIndex += 1; // this transport keeps failing here: the next one
        this._failures = 0;
        this._attempt = 0;
      }
    }
    const cap = Math.min(this.options.backoffMaxMs, this.options.backoffBaseMs * 2 ** this._attempt);
    this._attempt += 1;
    this._timer(() => this._connect(), Math.random() * cap); // full jitter
  }

  _reopen() {
    if (!this._conn || this.state === "stopped") return;
    const old = this._conn;
    this._conn = null;
    this._stopHeartbeat();
    old.close();
    this._setState("reconnecting");
    this._connect();
  }

  _query(extra = {}) {
    const params = new URLSearchParams();
    const rooms = [...this.rooms];
    if (rooms.length) params.set("rooms", rooms.join(","));
    const fresh = rooms.filter((r) => this._fresh.has(r));
    if (fresh.length && this.cursor) params.set("fresh", fresh.join(","));
    if (this.cursor) params.set("since", this.cursor);
    for (const [k, v] of Object.entries(extra)) if (v) params.set(k, v);
    return params.toString();
  }

  _httpUrl(path, extra) {
    return `${this.options.url}/${this.options.ns}/${path}?${this._query(extra)}`;
  }

  _openWebSocket() {
    const url = this._httpUrl("ws").replace(/^http/, "ws");
    const ws = new WebSocket(url, ["rt.v1.json", `bearer.${this._token}`]);
    let resolve;
    const done = new Promise((r) => { resolve = r; });
    let finished = false;
    const finish = (closed) => { if (!finished) { finished = true; resolve(closed); } };
    ws.onmessage = (msg) => this._deliver(JSON.parse(msg.data));
    ws.onclose = (ev) => finish(new Closed(ev.code || 1006, ev.reason));
    return {
      done,
      send: (frame) => ws.send(JSON.stringify(frame)),
      close: (closed) => { finish(closed || new Closed(1000, "client", "resume")); try { ws.close(); } catch (_) {} },
    };
  }

  _openSse() {
    const controller = new AbortController();
    const url = this._httpUrl("sse", { session: this.session, presence: this._presence });
    let resolve;
    const done = new Promise((r) => { resolve = r; });
    let finished = false;
    const finish = (closed) => { if (!finished) { finished = true; resolve(closed); controller.abort(); } };
    (async () => {
      const response = await fetch(url, {
        headers: { authorization: `Bearer ${this._token}`, accept: "text/event-stream" },
        signal: controller.signal, cache: "no-store",
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        finish(new Closed(body.error || 1006, body.message));
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let message = {};
      for (;;) {
        const { value, done: ended } = await reader.read();
        if (ended) break;
        buffer += value;
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).replace(/\r$/, "");
          buffer = buffer.slice(newline + 1);
          if (line === "") {
            if (message.data !== undefined) {
              const data = JSON.parse(message.data);
              if (message.event === "close") { finish(new Closed(data.code, data.reason, data.action)); return; }
              this._deliver(data);
            }
            message = {};
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            message[field] = field === "data" && message.data !== undefined ? `${message.data}\n${val}` : val;
          }
        }
      }
      finish(new Closed(1006, "stream ended"));
    })().catch(() => finish(new Closed(1006, "network error")));
    return { done, close: (closed) => finish(closed || new Closed(1000, "client", "resume")) };
  }

  _openPoll() {
    let controller = null;
    let resolve;
    const done = new Promise((r) => { resolve = r; });
    let finished = false;
    const finish = (closed) => { if (!finished) { finished = true; resolve(closed); if (controller) controller.abort(); } };
    (async () => {
      let first = true;
      while (!finished) {
        controller = new AbortController();
        const url = this._httpUrl("poll", { session: this.session, presence: this._presence });
        const response = await fetch(url, {
          headers: { authorization: `Bearer ${this._token}` }, signal: controller.signal, cache: "no-store",
        });
        const body = await response.json().catch(() => ({}));
        if (!response.ok) { finish(new Closed(body.error || 1006, body.message)); return; }
        if (first) {
          // The poll's answer stands for the hello of a stream.
          this._deliver({ op: "hello", session: body.session, cursor: body.cursor, recovered: body.recovered,
                          rooms: [...this.rooms], heartbeat_s: (this.hello && this.hello.heartbeat_s) || 30 });
          first = false;
        }
        for (const frame of body.events) this._deliver(frame);
        this.cursor = body.cursor;
        if (body.close) { finish(new Closed(body.close.code, body.close.reason, body.close.action)); return; }
      }
    })().catch(() => finish(new Closed(1006, "network error")));
    return { done, close: (closed) => finish(closed || new Closed(1000, "client", "resume")) };
  }

  // -- commands and heartbeats ------------------------------------------------------------
  _command(frame) {
    const ref = this._refs++;
    frame.ref = ref;
    return new Promise((resolve, reject) => {
      this._replies.set(ref, { resolve, reject });
      try { this._conn.send(frame); } catch (err) { this._replies.delete(ref); reject(err); }
    });
  }

  async _post(frame) {
    const session = this.session ? `?session=${encodeURIComponent(this.session)}` : "";
    const response = await fetch(`${this.options.url}/${this.options.ns}/commands${session}`, {
      method: "POST",
      headers: { authorization: `Bearer ${this._token || await this.options.getToken()}`, "content-type": "application/json" },
      body: JSON.stringify({ ...frame, ref: this._refs++ }),
    });
    const reply = await response.json();
    if (reply.op === "error" || !response.ok) throw reply;
    return reply;
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    const seconds = (this.hello && this.hello.heartbeat_s) || 30;
    this._heartbeat = setInterval(() => { this.emit("heartbeat").catch(() => {}); }, seconds * 1000);
  }

  _stopHeartbeat() {
    if (this._heartbeat) clearInterval(this._heartbeat);
    this._heartbeat = null;
  }

  _timer(fn, ms) {
    const id = setTimeout(() => { this._timers.delete(id); fn(); }, ms);
    this._timers.add(id);
  }

  _clearTimers() {
    for (const id of this._timers) clearTimeout(id);
    this._timers.clear();
  }
}

export { Closed, actionFor };
