/*
 * Live balance dashboard for balance-aggregator.
 *
 * Speaks the /v1/stream protocol: a snapshot first, then balance / removed / status /
 * event messages, each with a deployment-wide seq. The last seq is kept; after a
 * disconnect the page reconnects with backoff and ?since=<seq>, so the server replays
 * what was missed (or sends a fresh snapshot). Amounts stay decimal strings end to end
 * and are summed exactly with BigInt. Every server-provided string reaches the DOM only
 * through textContent or setAttribute.
 */
"use strict";

(() => {
  // Valued at 1 USD between price polls, as the service values them (§6). Solana mints
  // count only by address: anyone can mint a token whose symbol reads "USDC".
  const STABLECOINS = new Set(["USD", "USDC", "USDT", "USDM"]);
  const STABLE_MINTS = new Set([
    "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
    "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB",
  ]);
  const MINT_VENUES = new Set(["solanatracker"]);
  const FIELDS = ["total", "available", "locked"];
  const TOKEN_KEY = "balagg.token";
  const PING_MS = 15000;
  const SILENCE_MS = 45000;
  const POLL_MS = 5000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const MAX_EVENTS = 8;

  // ---------------------------------------------------------------------------------
  // Exact decimals: {n: BigInt, s: scale} means n / 10^s.

  const DEC_RE = /^([+-])?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,3}))?$/;

  function parseDec(value) {
    if (typeof value === "number") value = String(value);
    if (typeof value !== "string") return null;
    const m = DEC_RE.exec(value.trim());
    if (!m || (!m[2] && !m[3])) return null;
    let digits = (m[2] || "") + (m[3] || "");
    let scale = (m[3] || "").length - (m[4] ? parseInt(m[4], 10) : 0);
    if (scale < 0) {
      digits += "0".repeat(-scale);
      scale = 0;
    }
    let n = BigInt(digits || "0");
    if (m[1] === "-") n = -n;
    return { n, s: scale };
  }

  function rescale(d, s) {
    return s === d.s ? d.n : d.n * 10n ** BigInt(s - d.s);
  }

  function addDec(a, b) {
    const s = Math.max(a.s, b.s);
    return { n: rescale(a, s) + rescale(b, s), s };
  }

  function decToString(d) {
    const neg = d.n < 0n;
    const digits = (neg ? -d.n : d.n).toString().padStart(d.s + 1, "0");
    const int = digits.slice(0, digits.length - d.s);
    const frac = digits.slice(digits.length - d.s).replace(/0+$/, "");
    const text = frac ? `${int}.${frac}` : int;
    return neg && text !== "0" ? `-${text}` : text;
  }

  /** Exact sum of decimal strings; null when any is not a decimal. */
  function sumDec(values) {
    let acc = { n: 0n, s: 0 };
    for (const v of values) {
      const d = parseDec(v);
      if (d === null) return null;
      acc = addDec(acc, d);
    }
    return acc;
  }

  /** Round half away from zero to `places` decimals and group thousands: 12,345.68 */
  function formatMoney(d, places = 2) {
    let n = d.n;
    if (d.s > places) {
      const div = 10n ** BigInt(d.s - places);
      const q = n / div;
      const r = n % div;
      const twice = (r < 0n ? -r : r) * 2n;
      n = twice >= div ? q + (n < 0n ? -1n : 1n) : q;
    } else {
      n = rescale(d, places);
    }
    const neg = n < 0n;
    const digits = (neg ? -n : n).toString().padStart(places + 1, "0");
    const int = digits.slice(0, digits.length - places).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    const frac = digits.slice(digits.length - places);
    return `${neg && n !== 0n ? "-" : ""}${int}${places ? "." + frac : ""}`;
  }

  // ---------------------------------------------------------------------------------
  // State

  const state = {
    seq: 0,
    haveSnapshot: false,
    records: new Map(), // key -> record
    statuses: new Map(), // account -> status doc
    seen: new Map(), // account -> newest activity time (ms) seen on the stream
    bySymbol: new Map(), // symbol -> Set(key)
    serverTotals: new Map(), // symbol -> {total, usd} from GET /v1/totals
    events: [],
  };

  const dirty = {
    records: new Map(), // key -> Set(changed fields) | null (removed)
    accounts: new Set(),
    symbols: new Set(),
    events: false,
    usd: false,
  };

  const recKey = (account, wallet, asset) => `${account}\u0000${wallet}\u0000${asset}`;
  const symbolOf = (rec) => rec.symbol || rec.asset;

  function accountState(account) {
    const st = state.statuses.get(account);
    return st && typeof st.state === "string" ? st.state : "unknown";
  }

  function isStale(rec) {
    const st = state.statuses.get(rec.account);
    if (st && typeof st.state === "string") return st.state !== "live";
    return rec.stale === true;
  }

  function markSeen(account, when) {
    const t = typeof when === "string" ? Date.parse(when) : when;
    if (!Number.isFinite(t)) return;
    if (!(state.seen.get(account) >= t)) state.seen.set(account, t);
  }

  function markRecord(key, fields) {
    const prev = dirty.records.get(key);
    if (fields === null) {
      dirty.records.set(key, null);
    } else if (prev) {
      for (const f of fields) prev.add(f);
    } else {
      dirty.records.set(key, new Set(fields));
    }
  }

  function indexSymbol(key, oldRec, newRec) {
    const oldSym = oldRec ? symbolOf(oldRec) : null;
    const newSym = newRec ? symbolOf(newRec) : null;
    if (oldSym !== null) dirty.symbols.add(oldSym);
    if (newSym !== null) dirty.symbols.add(newSym);
    if (oldSym === newSym) return;
    if (oldSym !== null) state.bySymbol.get(oldSym)?.delete(key);
    if (newSym !== null) {
      if (!state.bySymbol.has(newSym)) state.bySymbol.set(newSym, new Set());
      state.bySymbol.get(newSym).add(key);
    }
  }

  function validRecord(rec) {
    return (
      rec !== null &&
      typeof rec === "object" &&
      typeof rec.account === "string" &&
      typeof rec.wallet === "string" &&
      typeof rec.asset === "string"
    );
  }

  function upsertRecord(rec, flashChanges) {
    if (!validRecord(rec)) return;
    const key = recKey(rec.account, rec.wallet, rec.asset);
    const old = state.records.get(key);
    state.records.set(key, rec);
    indexSymbol(key, old, rec);
    const changed = [];
    if (old && flashChanges) {
      for (const f of FIELDS) if (old[f] !== rec[f]) changed.push(f);
      if (old.symbol !== rec.symbol) changed.push("symbol");
    }
    markRecord(key, changed);
    if (!state.statuses.has(rec.account)) dirty.accounts.add(rec.account);
    markSeen(rec.account, rec.updated_at);
  }

  function removeRecord(account, wallet, asset) {
    const key = recKey(account, wallet, asset);
    const old = state.records.get(key);
    if (!old) return;
    state.records.delete(key);
    indexSymbol(key, old, null);
    markRecord(key, null);
    dirty.accounts.add(account);
  }

  function setStatus(doc) {
    if (!doc || typeof doc !== "object" || typeof doc.account !== "string") return;
    const prev = state.statuses.get(doc.account);
    const next = { ...doc };
    if (prev && prev.last_message_at && !next.last_message_at) {
      next.last_message_at = prev.last_message_at;
    }
    state.statuses.set(doc.account, next);
    markSeen(doc.account, next.last_message_at);
    dirty.accounts.add(doc.account);
    if (!prev || prev.state !== next.state) {
      for (const [key, rec] of state.records) if (rec.account === doc.account) markRecord(key, []);
    }
  }

  function applySnapshot(msg) {
    const incoming = new Map();
    for (const rec of Array.isArray(msg.balances) ? msg.balances : []) {
      if (validRecord(rec)) incoming.set(recKey(rec.account, rec.wallet, rec.asset), rec);
    }
    for (const [key, rec] of [...state.records]) {
      if (!incoming.has(key)) removeRecord(rec.account, rec.wallet, rec.asset);
    }
    const hadSnapshot = state.haveSnapshot;
    const statusIds = new Set();
    for (const doc of Array.isArray(msg.accounts) ? msg.accounts : []) {
      if (doc && typeof doc.account === "string") {
        statusIds.add(doc.account);
        setStatus(doc);
      }
    }
    for (const id of [...state.statuses.keys()]) {
      if (!statusIds.has(id)) {
        state.statuses.delete(id);
        dirty.accounts.add(id);
      }
    }
    for (const rec of incoming.values()) upsertRecord(rec, hadSnapshot);
    state.haveSnapshot = true;
  }

  function handleMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    const type = msg.type;
    if (type === "pong") return;
    if (type === "error") {
      console.warn("stream error", msg);
      return;
    }
    const seq = typeof msg.seq === "number" ? msg.seq : null;
    if (type === "snapshot") {
      applySnapshot(msg);
      if (seq !== null) state.seq = seq;
      schedule();
      return;
    }
    if (seq !== null) {
      if (state.haveSnapshot && seq <= state.seq) return; // already applied (replay overlap)
      state.seq = seq;
    }
    if (type === "balance") {
      upsertRecord(msg.balance, true);
    } else if (type === "removed") {
      if (typeof msg.account === "string" && typeof msg.wallet === "string") {
        removeRecord(msg.account, msg.wallet, String(msg.asset));
      }
    } else if (type === "status") {
      const doc = typeof msg.account === "object" ? msg.account : msg.status;
      setStatus(doc);
    } else if (type === "event") {
      state.events.unshift({
        seq,
        account: String(msg.account ?? ""),
        kind: String(msg.kind ?? ""),
        data: msg.data,
        at: Date.now(),
      });
      state.events.length = Math.min(state.events.length, MAX_EVENTS);
      if (typeof msg.account === "string") {
        markSeen(msg.account, Date.now());
        dirty.accounts.add(msg.account);
      }
      dirty.events = true;
    }
    schedule();
  }

  // ---------------------------------------------------------------------------------
  // DOM

  const $ = (id) => document.getElementById(id);
  const els = {};
  const cards = new Map(); // account -> card parts
  const rows = new Map(); // record key -> row parts
  const totalRows = new Map(); // symbol -> row parts

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function flash(node) {
    node.classList.remove("flash");
    void node.offsetWidth; // restart the animation
    node.classList.add("flash");
    node.dataset.changed = String((parseInt(node.dataset.changed || "0", 10) || 0) + 1);
  }

  function shorten(text, keep = 8) {
    return text.length > keep * 2 + 3 ? `${text.slice(0, keep)}…${text.slice(-keep)}` : text;
  }

  /** Insert `node` into `parent` keeping children ordered by `sortOf(child)`. */
  function insertSorted(parent, node, sort, sortOf) {
    for (const child of parent.children) {
      if (child !== node && sortOf(child) > sort) {
        parent.insertBefore(node, child);
        return;
      }
    }
    parent.appendChild(node);
  }

  const sortKeys = new WeakMap();
  const sortOf = (node) => sortKeys.get(node) ?? "";

  function ensureCard(account) {
    let card = cards.get(account);
    if (card) return card;
    const root = els.accountTpl.content.firstElementChild.cloneNode(true);
    root.dataset.account = account;
    const q = (sel) => root.querySelector(sel);
    card = {
      root,
      id: q('[data-field="id"]'),
      venue: q('[data-field="venue"]'),
      badge: q("[data-badge]"),
      age: q("[data-age]"),
      reconnects: q("[data-reconnects]"),
      owner: q("[data-owner]"),
      error: q("[data-error]"),
      tbody: q("[data-rows]"),
      empty: q("[data-rows-empty]"),
      count: 0,
    };
    card.id.textContent = account;
    sortKeys.set(root, account);
    insertSorted(els.accounts, root, account, sortOf);
    cards.set(account, card);
    return card;
  }

  function renderCard(account) {
    const st = state.statuses.get(account);
    const hasRecords = (cards.get(account)?.count ?? 0) > 0;
    if (!st && !hasRecords) {
      const card = cards.get(account);
      if (card) {
        card.root.remove();
        cards.delete(account);
      }
      return;
    }
    const card = ensureCard(account);
    const s = accountState(account);
    card.root.dataset.state = s;
    card.badge.dataset.state = s;
    card.badge.textContent = s.replace(/_/g, " ");
    let venue = st && typeof st.venue === "string" ? st.venue : "";
    if (!venue) {
      for (const r of state.records.values()) {
        if (r.account === account && typeof r.venue === "string") {
          venue = r.venue;
          break;
        }
      }
    }
    card.venue.textContent = venue;
    const reconnects = st && st.reconnects !== undefined && st.reconnects !== null;
    card.reconnects.textContent = reconnects ? String(st.reconnects) : "—";
    card.owner.textContent = st && st.owner ? String(st.owner) : "—";
    const error = st && st.last_error ? String(st.last_error) : "";
    card.error.textContent = error;
    card.error.hidden = !error;
    renderAge(account, card);
  }

  function renderAge(account, card) {
    const seen = state.seen.get(account);
    if (seen === undefined) {
      card.age.textContent = "never";
      card.age.dataset.age = "";
      return;
    }
    const secs = Math.max(0, Math.floor((Date.now() - seen) / 1000));
    card.age.dataset.age = String(secs);
    card.age.title = new Date(seen).toISOString();
    let text;
    if (secs < 120) text = `${secs} s ago`;
    else if (secs < 7200) text = `${Math.floor(secs / 60)} min ago`;
    else text = `${Math.floor(secs / 3600)} h ago`;
    card.age.textContent = text;
  }

  function createRow(key, rec) {
    const card = ensureCard(rec.account);
    const tr = el("tr");
    const id = `${rec.account}|${rec.wallet}|${rec.asset}`;
    tr.dataset.row = id;
    const wallet = el("td", rec.wallet ? "id" : "unknown", rec.wallet ? shorten(rec.wallet) : "exchange");
    wallet.title = rec.wallet || "exchange account";
    wallet.dataset.cell = `${id}|wallet`;
    const asset = el("td", rec.asset.length > 12 ? "id" : "", shorten(rec.asset, 6));
    asset.title = rec.asset;
    asset.dataset.cell = `${id}|asset`;
    const symbol = el("td", "sym");
    symbol.dataset.cell = `${id}|symbol`;
    const parts = { tr, card: rec.account, symbol, cells: {}, mark: el("td", "mark") };
    tr.append(wallet, asset, symbol);
    for (const f of FIELDS) {
      const td = el("td", "num");
      td.dataset.cell = `${id}|${f}`;
      parts.cells[f] = td;
      tr.appendChild(td);
    }
    tr.appendChild(parts.mark);
    sortKeys.set(tr, `${rec.wallet}\u0000${symbolOf(rec)}\u0000${rec.asset}`);
    insertSorted(card.tbody, tr, sortKeys.get(tr), sortOf);
    card.count += 1;
    card.empty.hidden = true;
    rows.set(key, parts);
    return parts;
  }

  function renderRecord(key, changed) {
    const rec = state.records.get(key);
    let parts = rows.get(key);
    if (!rec) {
      if (parts) {
        parts.tr.remove();
        rows.delete(key);
        const card = cards.get(parts.card);
        if (card) {
          card.count -= 1;
          card.empty.hidden = card.count > 0;
        }
      }
      return;
    }
    if (!parts) parts = createRow(key, rec);
    const sym = rec.symbol || "—";
    parts.symbol.textContent = sym;
    parts.symbol.title = rec.symbol ? `${rec.symbol} (${rec.asset})` : "no symbol known";
    parts.symbol.classList.toggle("unknown", !rec.symbol);
    for (const f of FIELDS) {
      const text = typeof rec[f] === "string" ? rec[f] : String(rec[f] ?? "");
      parts.cells[f].textContent = text;
      parts.cells[f].dataset.value = text;
    }
    const stale = isStale(rec);
    parts.tr.dataset.stale = String(stale);
    if (stale && !parts.mark.firstChild) {
      parts.mark.appendChild(el("span", "tag", "stale"));
    } else if (!stale && parts.mark.firstChild) {
      parts.mark.replaceChildren();
    }
    if (changed) {
      for (const f of changed) {
        if (f === "symbol") flash(parts.symbol);
        else if (parts.cells[f]) flash(parts.cells[f]);
      }
    }
  }

  function isStable(rec) {
    if (MINT_VENUES.has(rec.venue)) return STABLE_MINTS.has(rec.asset);
    return STABLECOINS.has(String(rec.symbol || rec.asset).toUpperCase());
  }

  /**
   * The USD value of a symbol's total: the service's figure while it describes the same
   * total; between polls, the total itself when every holding is a stablecoin; else the
   * last figure the service gave (null when it could not value the symbol).
   */
  function usdFor(symbol, total) {
    const server = state.serverTotals.get(symbol);
    const serverUsd = server && server.usd !== null ? parseDec(server.usd) : null;
    if (server && server.total === decToString(total)) return serverUsd;
    const keys = state.bySymbol.get(symbol) || new Set();
    const stable = [...keys].every((k) => {
      const rec = state.records.get(k);
      return !rec || isStable(rec) || parseDec(rec.total)?.n === 0n;
    });
    return stable ? total : serverUsd;
  }

  function renderTotal(symbol) {
    const keys = state.bySymbol.get(symbol);
    let parts = totalRows.get(symbol);
    if (!keys || keys.size === 0) {
      if (parts) {
        parts.tr.remove();
        totalRows.delete(symbol);
      }
      state.bySymbol.delete(symbol);
      return;
    }
    const recs = [...keys].map((k) => state.records.get(k)).filter(Boolean);
    if (!parts) {
      const tr = el("tr");
      tr.dataset.total = symbol;
      parts = { tr, cells: {} };
      const name = el("td", "sym", symbol);
      name.title = symbol;
      tr.appendChild(name);
      for (const f of [...FIELDS, "usd", "accounts"]) {
        const td = el("td", "num");
        td.dataset.totalCell = `${symbol}|${f}`;
        parts.cells[f] = td;
        tr.appendChild(td);
      }
      sortKeys.set(tr, symbol);
      insertSorted(els.totalsBody, tr, symbol, sortOf);
      totalRows.set(symbol, parts);
    }
    for (const f of FIELDS) {
      const sum = sumDec(recs.map((r) => r[f]));
      const text = sum === null ? "?" : decToString(sum);
      const cell = parts.cells[f];
      if (cell.dataset.value !== undefined && cell.dataset.value !== text) flash(cell);
      cell.textContent = text;
      cell.dataset.value = text;
      if (f === "total") parts.total = sum;
    }
    parts.cells.accounts.textContent = String(new Set(recs.map((r) => r.account)).size);
    parts.tr.dataset.stale = String(recs.length > 0 && recs.every(isStale));
    renderUsd(symbol, parts);
  }

  function renderUsd(symbol, parts) {
    const usd = parts.total ? usdFor(symbol, parts.total) : null;
    const cell = parts.cells.usd;
    const text = usd === null ? "—" : formatMoney(usd);
    cell.textContent = text;
    cell.title = usd === null ? "no USD price known" : `${decToString(usd)} USD`;
    cell.dataset.value = usd === null ? "" : decToString(usd);
    cell.classList.toggle("unknown", usd === null);
    parts.usd = usd;
  }

  function renderHeader() {
    els.seq.textContent = String(state.seq);
    els.seq.dataset.seq = String(state.seq);
    let sum = { n: 0n, s: 0 };
    let any = false;
    for (const parts of totalRows.values()) {
      if (parts.usd) {
        sum = addDec(sum, parts.usd);
        any = true;
      }
    }
    els.usdTotal.textContent = any ? formatMoney(sum) : "—";
    els.usdTotal.dataset.value = any ? decToString(sum) : "";
    els.totalsEmpty.hidden = totalRows.size > 0;
    els.accountsEmpty.hidden = cards.size > 0;
    let live = 0;
    for (const id of cards.keys()) if (accountState(id) === "live") live += 1;
    els.accountsCount.textContent = cards.size ? `${cards.size} · ${live} live` : "";
  }

  function renderEvents() {
    const items = state.events.map((ev) => {
      const li = el("li");
      li.dataset.event = String(ev.seq ?? "");
      li.dataset.kind = ev.kind;
      const head = el("div", "ev-head");
      head.append(
        el("span", "ev-kind", ev.kind),
        el("span", "ev-account", ev.account),
        el("span", "ev-time", new Date(ev.at).toLocaleTimeString()),
      );
      let data = "";
      try {
        data = JSON.stringify(ev.data) ?? "";
      } catch {
        data = String(ev.data);
      }
      li.append(head, el("div", "ev-data", data.length > 200 ? `${data.slice(0, 199)}…` : data));
      return li;
    });
    els.events.replaceChildren(...items);
    els.eventsEmpty.hidden = items.length > 0;
  }

  let scheduled = false;

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(render);
    setTimeout(render, 250); // hidden tabs get no animation frames
  }

  function render() {
    if (!scheduled) return;
    scheduled = false;
    const recs = dirty.records;
    dirty.records = new Map();
    for (const [key, changed] of recs) renderRecord(key, changed);
    const accounts = dirty.accounts;
    dirty.accounts = new Set();
    for (const key of recs.keys()) {
      const rec = state.records.get(key);
      if (rec) accounts.add(rec.account);
    }
    for (const account of accounts) renderCard(account);
    const symbols = dirty.symbols;
    dirty.symbols = new Set();
    for (const symbol of symbols) renderTotal(symbol);
    if (dirty.usd) {
      dirty.usd = false;
      for (const [symbol, parts] of totalRows) renderUsd(symbol, parts);
    }
    if (dirty.events) {
      dirty.events = false;
      renderEvents();
    }
    renderHeader();
  }

  function tick() {
    for (const [account, card] of cards) renderAge(account, card);
  }

  // ---------------------------------------------------------------------------------
  // Token and REST

  const memoryStore = new Map();
  const store = {
    get() {
      try {
        return sessionStorage.getItem(TOKEN_KEY) || "";
      } catch {
        return memoryStore.get(TOKEN_KEY) || "";
      }
    },
    set(value) {
      try {
        if (value) sessionStorage.setItem(TOKEN_KEY, value);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch {
        memoryStore.set(TOKEN_KEY, value);
      }
    },
  };

  function tokenFromPage() {
    const url = new URL(location.href);
    const token = url.searchParams.get("token");
    if (token) {
      store.set(token);
      url.searchParams.delete("token"); // keep it out of the address bar and history
      history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    }
    return store.get();
  }

  let token = "";
  let needToken = false;

  function authHeaders() {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function askForToken(rejected) {
    needToken = true;
    setConn("unauthorized", "token needed");
    els.tokenLabel.textContent = rejected
      ? "The API token was refused. Enter another one:"
      : "This service needs an API token.";
    els.tokenForm.hidden = false;
    els.tokenInput.focus();
  }

  /** GET a JSON route; null on any failure (a 401 asks for a token). */
  async function getJSON(path) {
    let resp;
    try {
      resp = await fetch(new URL(path, document.baseURI), {
        headers: { Accept: "application/json", ...authHeaders() },
        cache: "no-store",
      });
    } catch {
      return null;
    }
    if (resp.status === 401) {
      if (!needToken) {
        const rejected = Boolean(token);
        token = "";
        store.set("");
        askForToken(rejected);
        closeSocket();
      }
      return null;
    }
    if (!resp.ok) return null;
    try {
      return await resp.json();
    } catch {
      return null;
    }
  }

  async function poll() {
    if (needToken) return;
    const [totals, accounts] = await Promise.all([
      getJSON("v1/totals?quote=USD"),
      getJSON("v1/accounts"),
    ]);
    if (totals && Array.isArray(totals.totals)) {
      const rows = new Map();
      for (const row of totals.totals) {
        if (row && typeof row.symbol === "string") {
          rows.set(row.symbol, { total: String(row.total), usd: row.usd ?? null });
        }
      }
      state.serverTotals = rows;
      dirty.usd = true;
    }
    if (accounts && Array.isArray(accounts.accounts)) {
      // Quiet connections emit no stream message; REST knows their last message time.
      for (const doc of accounts.accounts) {
        if (doc && typeof doc.account === "string" && doc.last_message_at) {
          markSeen(doc.account, doc.last_message_at);
          const st = state.statuses.get(doc.account);
          if (st && !(Date.parse(st.last_message_at) >= Date.parse(doc.last_message_at))) {
            st.last_message_at = doc.last_message_at;
          }
        }
      }
    }
    schedule();
  }

  // ---------------------------------------------------------------------------------
  // The stream

  let ws = null;
  let attempt = 0;
  let reconnectTimer = null;
  let pingTimer = null;
  let lastReceived = 0;
  let gotMessage = false;

  function setConn(mode, text) {
    els.conn.dataset.conn = mode;
    els.connText.textContent = text || mode;
  }

  function streamUrl() {
    const url = new URL("v1/stream", document.baseURI);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (state.haveSnapshot) url.searchParams.set("since", String(state.seq));
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }

  function closeSocket() {
    if (ws) {
      const old = ws;
      ws = null;
      old.onopen = old.onmessage = old.onclose = old.onerror = null;
      try {
        old.close(1000);
      } catch {
        // already closed
      }
    }
    clearInterval(pingTimer);
    pingTimer = null;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    closeSocket();
    if (needToken) return;
    setConn(attempt === 0 && !state.haveSnapshot ? "connecting" : "reconnecting");
    gotMessage = false;
    let socket;
    try {
      socket = new WebSocket(streamUrl());
    } catch {
      scheduleReconnect();
      return;
    }
    ws = socket;
    socket.onopen = () => {
      lastReceived = Date.now();
      setConn("connected");
      send({ op: "ping" }); // the pong confirms the stream (a resume may have nothing to send)
      clearInterval(pingTimer);
      pingTimer = setInterval(() => {
        if (ws !== socket) return;
        if (Date.now() - lastReceived > SILENCE_MS) {
          socket.close(4000, "silent"); // half-open connection: start over
          return;
        }
        send({ op: "ping" });
      }, PING_MS);
    };
    socket.onmessage = (ev) => {
      if (ws !== socket) return;
      lastReceived = Date.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!gotMessage) {
        gotMessage = true;
        attempt = 0;
      }
      handleMessage(msg);
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      ws = null;
      clearInterval(pingTimer);
      pingTimer = null;
      if (!gotMessage) {
        // Refused before anything arrived: find out whether a token is the reason.
        getJSON("v1/accounts").then(() => {
          if (!needToken) scheduleReconnect();
        });
      } else {
        scheduleReconnect();
      }
    };
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function scheduleReconnect() {
    if (needToken || reconnectTimer !== null) return;
    setConn("reconnecting");
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 10));
    const delay = BACKOFF_MIN_MS / 2 + Math.random() * cap; // jittered, capped exponential
    attempt += 1;
    reconnectTimer = setTimeout(connect, delay);
  }

  // ---------------------------------------------------------------------------------
  // Start

  function start() {
    els.conn = $("conn");
    els.connText = $("conn-text");
    els.seq = $("seq");
    els.usdTotal = $("usd-total");
    els.totalsBody = $("totals-body");
    els.totalsEmpty = $("totals-empty");
    els.accounts = $("accounts");
    els.accountsEmpty = $("accounts-empty");
    els.accountsCount = $("accounts-count");
    els.events = $("events");
    els.eventsEmpty = $("events-empty");
    els.accountTpl = $("account-tpl");
    els.tokenForm = $("token-form");
    els.tokenLabel = $("token-label");
    els.tokenInput = $("token-input");

    els.tokenForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = els.tokenInput.value.trim();
      if (!value) return;
      token = value;
      store.set(value);
      els.tokenInput.value = "";
      els.tokenForm.hidden = true;
      needToken = false;
      attempt = 0;
      connect();
      poll();
    });

    token = tokenFromPage();
    connect();
    poll();
    setInterval(poll, POLL_MS);
    setInterval(tick, 1000);
    window.addEventListener("online", () => {
      if (!ws && !needToken) connect();
    });
  }

  // A small read-only handle for diagnostics and tests.
  window.balanceDashboard = {
    state,
    get connected() {
      return Boolean(ws && ws.readyState === WebSocket.OPEN && gotMessage);
    },
    reconnect() {
      if (ws) ws.close(4000, "reconnect");
      else connect();
    },
    sumDec: (values) => {
      const d = sumDec(values);
      return d === null ? null : decToString(d);
    },
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
