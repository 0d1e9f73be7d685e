/*
 * Live balance dashboard for balance-aggregator.
 *
 * Speaks the /v1/stream protocol: a snapshot first, then balance / removed / status /
 * event messages, each with a deployment-wide seq. The last seq is kept; after a
 * disconnect the page reconnects with backoff and ?since=<seq>, so the server replays
 * what was missed (or sends a fresh snapshot). Valuation comes from GET /v1/totals
 * (re-read shortly after balances change, and every few seconds), and is carried to live
 * totals with the exact unit price it implies.
 *
 * Amounts and values stay decimal strings end to end: they are parsed into BigInt-based
 * exact decimals for sums, shares and formatting, never into JS numbers (only the pixel
 * geometry of the pictures is a number). Every server-provided string reaches the DOM
 * only through textContent or setAttribute.
 *
 * Page layout: overview (headline value, coverage, unpriced assets, allocation pictures),
 * value over time (only when the service has a history API), totals by symbol, account
 * cards, and recent events written as sentences.
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
  const QUOTES = ["USD", "TWD"];
  const FIELDS = ["total", "available", "locked"];
  const TOKEN_KEY = "balagg.token";
  const QUOTE_KEY = "balagg.quote";
  const PING_MS = 15000;
  const SILENCE_MS = 45000;
  const POLL_MS = 5000;
  const REVALUE_DELAY_MS = 150; // after a balance change, re-read the valuation this soon
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const MAX_EVENTS = 30;
  const MAX_KNOWN_SYMBOLS = 5000;
  const MAX_PRICES = 5000; // distinct (source, pair) kept from the stream's price messages
  const PRICE_REVALUE_MS = 1000; // a price message re-reads the valuation at most this often
  const MAX_SLICES = 8; // the rest of a picture is one "other" slice
  const SHARE_PLACES = 6; // share of a total, in millionths, for geometry and percentages

  // ---------------------------------------------------------------------------------
  // Exact decimals: {n: BigInt, s: scale} means n / 10^s.

  const DEC_RE = /^([+-])?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,3}))?$/;
  const ZERO = { n: 0n, s: 0 };

  function parseDec(value) {
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

  function subDec(a, b) {
    return addDec(a, { n: -b.n, s: b.s });
  }

  function mulDec(a, b) {
    return { n: a.n * b.n, s: a.s + b.s };
  }

  function cmpDec(a, b) {
    const s = Math.max(a.s, b.s);
    const x = rescale(a, s);
    const y = rescale(b, s);
    return x < y ? -1 : x > y ? 1 : 0;
  }

  /** a / b when the quotient has at most `maxScale` decimals; else null. */
  function divExact(a, b, maxScale = 40) {
    if (b.n === 0n) return null;
    const num = a.n * 10n ** BigInt(b.s + maxScale);
    const den = b.n * 10n ** BigInt(a.s);
    if (num % den !== 0n) return null;
    return normDec({ n: num / den, s: maxScale });
  }

  function normDec(d) {
    let { n, s } = d;
    while (s > 0 && n % 10n === 0n) {
      n /= 10n;
      s -= 1;
    }
    return { n, s };
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
    let acc = ZERO;
    for (const v of values) {
      const d = parseDec(v);
      if (d === null) return null;
      acc = addDec(acc, d);
    }
    return acc;
  }

  const group = (int) => int.replace(/\B(?=(\d{3})+(?!\d))/g, ",");

  /** Split a plain decimal string into grouped integer part and ".fraction" (kept as is). */
  function splitAmount(text) {
    const m = /^(-?)(\d+)(\.\d+)?$/.exec(text);
    if (!m) return null;
    return { int: `${m[1]}${group(m[2])}`, frac: m[3] || "" };
  }

  /** Every decimal kept, thousands grouped: 1,005,153,193,511.66927422 */
  function formatExact(d) {
    const parts = splitAmount(decToString(d));
    return parts ? parts.int + parts.frac : decToString(d);
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
    const int = group(digits.slice(0, digits.length - places));
    const frac = digits.slice(digits.length - places);
    return `${neg && n !== 0n ? "-" : ""}${int}${places ? "." + frac : ""}`;
  }

  /** part / total in units of 10^-places (a BigInt, rounded down); 0n for a zero total. */
  function share(part, total, places = SHARE_PLACES) {
    const s = Math.max(part.s, total.s);
    const den = rescale(total, s);
    if (den <= 0n) return 0n;
    return (rescale(part, s) * 10n ** BigInt(places)) / den;
  }

  /** A share in millionths as a percentage text: 12.3% / <0.1% (for a part that is not 0) */
  function percentText(millionths, nonZero = millionths > 0n) {
    if (nonZero && millionths < 1000n) return "<0.1%";
    const tenths = (millionths + 500n) / 1000n;
    return `${tenths / 10n}.${tenths % 10n}%`;
  }

  // ---------------------------------------------------------------------------------
  // State

  const state = {
    seq: 0,
    haveSnapshot: false,
    records: new Map(), // key -> record
    statuses: new Map(), // account -> status doc
    seen: new Map(), // account -> newest activity time (ms) seen on the stream
    down: new Map(), // account -> when (ms) it was seen leaving "live"
    bySymbol: new Map(), // symbol -> Set(key)
    knownSymbols: new Map(), // mint -> the last symbol a record or swap gave it
    quote: "USD",
    valuation: null, // the last GET /v1/totals (+ /v1/balances) answer for state.quote
    prices: new Map(), // "source|pair" -> the newest stream price message (bounded)
    filter: null, // {kind: "symbol" | "account", key, label} | null
    exact: false, // show values with every decimal instead of cents
    events: [],
  };

  const dirty = {
    records: new Map(), // key -> Set(changed fields) | null (removed)
    accounts: new Set(),
    symbols: new Set(),
    events: false,
    value: false,
  };

  const recKey = (account, wallet, asset) => `${account}\u0000${wallet}\u0000${asset}`;
  const symbolOf = (rec) => rec.symbol || rec.asset; // the service groups totals by this

  function shorten(text, keep = 8) {
    return text.length > keep * 2 + 3 ? `${text.slice(0, keep)}…${text.slice(-keep)}` : text;
  }

  const looksLikeMint = (text) => /^[1-9A-HJ-NP-Za-km-z]{32,44}$/.test(text);

  /** What to call a symbol key: a mint with no symbol is named by a learnt one or shortened. */
  function displaySymbol(key) {
    if (!looksLikeMint(key)) return key;
    return state.knownSymbols.get(key) || shorten(key, 4);
  }

  function learnSymbol(mint, symbol) {
    if (typeof mint !== "string" || typeof symbol !== "string" || !symbol) return;
    if (state.knownSymbols.get(mint) === symbol) return;
    state.knownSymbols.delete(mint);
    state.knownSymbols.set(mint, symbol);
    if (state.knownSymbols.size > MAX_KNOWN_SYMBOLS) {
      state.knownSymbols.delete(state.knownSymbols.keys().next().value);
    }
  }

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
    if (rec.symbol && rec.symbol !== rec.asset) learnSymbol(rec.asset, rec.symbol);
    indexSymbol(key, old, rec);
    const changed = [];
    if (old && flashChanges) {
      for (const f of FIELDS) if (old[f] !== rec[f]) changed.push(f);
      if (old.symbol !== rec.symbol) changed.push("symbol");
    }
    markRecord(key, changed);
    if (!state.statuses.has(rec.account)) dirty.accounts.add(rec.account);
    markSeen(rec.account, rec.updated_at);
    if (!old || old.total !== rec.total) requestRevalue();
  }

  function removeRecord(account, wallet, asset) {
    const key = recKey(account, wallet, asset);
    const old = state.records.get(key);
    if (!old) return;
    state.records.delete(key);
    indexSymbol(key, old, null);
    markRecord(key, null);
    dirty.accounts.add(account);
    requestRevalue();
  }

  function pushEvent(ev) {
    state.events.unshift(ev);
    state.events.length = Math.min(state.events.length, MAX_EVENTS);
    dirty.events = true;
  }

  /** A change of connection state, as a feed entry (only on changes seen live). */
  function statusEvent(prev, next, seq) {
    const was = prev && typeof prev.state === "string" ? prev.state : null;
    const now = typeof next.state === "string" ? next.state : null;
    if (was === null || now === null || was === now) return;
    const at = Date.now();
    if (now === "live") {
      const since = state.down.get(next.account);
      state.down.delete(next.account);
      pushEvent({
        seq, account: next.account, kind: "status", at,
        data: { state: now, previous: was, down_s: since ? Math.round((at - since) / 1000) : null,
                last_error: prev.last_error ?? null, reconnects: next.reconnects ?? null },
      });
    } else if (was === "live" || !state.down.has(next.account)) {
      if (!state.down.has(next.account)) state.down.set(next.account, at);
      pushEvent({
        seq, account: next.account, kind: "status", at,
        data: { state: now, previous: was, last_error: next.last_error ?? null,
                reconnects: next.reconnects ?? null },
      });
    }
  }

  function setStatus(doc, seq = null) {
    if (!doc || typeof doc !== "object" || typeof doc.account !== "string") return;
    const prev = state.statuses.get(doc.account);
    const next = { ...doc };
    if (prev && prev.last_message_at && !next.last_message_at) {
      next.last_message_at = prev.last_message_at;
    }
    if (seq !== null) statusEvent(prev, next, seq);
    if (next.state !== "live" && !state.down.has(doc.account)) {
      state.down.set(doc.account, prev && prev.state === "live" ? Date.now() : NaN);
    } else if (next.state === "live") {
      state.down.delete(doc.account);
    }
    state.statuses.set(doc.account, next);
    markSeen(doc.account, next.last_message_at);
    dirty.accounts.add(doc.account);
    if (!prev || prev.state !== next.state) {
      for (const [key, rec] of state.records) if (rec.account === doc.account) markRecord(key, []);
      for (const [symbol, keys] of state.bySymbol) {
        for (const k of keys) {
          if (state.records.get(k)?.account === doc.account) {
            dirty.symbols.add(symbol);
            break;
          }
        }
      }
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
    if (type === "price") {
      notePrice(msg); // no seq: prices are not part of the change stream
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
      setStatus(doc, seq ?? 0);
    } else if (type === "event") {
      const data = msg.data;
      if (msg.kind === "swap" && data && typeof data === "object") {
        for (const side of [data.from, data.to]) {
          if (side && typeof side === "object") learnSymbol(side.address, side.symbol);
        }
      }
      pushEvent({
        seq,
        account: String(msg.account ?? ""),
        kind: String(msg.kind ?? ""),
        data,
        at: Date.now(),
      });
      if (typeof msg.account === "string") {
        markSeen(msg.account, Date.now());
        dirty.accounts.add(msg.account);
      }
    }
    schedule();
  }

  // ---------------------------------------------------------------------------------
  // Valuation: the service's figures per holding and per symbol, carried to live totals
  // exactly; re-read when balances change and when the stream says a price moved.

  /** A stream price message: kept (bounded) and answered with a bounded re-read. */
  function notePrice(msg) {
    if (typeof msg.source !== "string" || typeof msg.pair !== "string") return;
    const key = `${msg.source}|${msg.pair}`;
    state.prices.delete(key);
    state.prices.set(key, msg);
    if (state.prices.size > MAX_PRICES) state.prices.delete(state.prices.keys().next().value);
    requestRevalue(PRICE_REVALUE_MS);
  }

  /** Half-even to 8 places, as the service rounds every holding's value. */
  function quantize8(d) {
    if (d.s <= 8) return d;
    const div = 10n ** BigInt(d.s - 8);
    let q = d.n / div;
    const r = d.n % div;
    const twice = (r < 0n ? -r : r) * 2n;
    if (twice > div || (twice === div && q % 2n !== 0n)) q += d.n < 0n ? -1n : 1n;
    return normDec({ n: q, s: 8 });
  }

  /** GET /v1/balances?quote= -> Map(record key -> that holding's valuation); null if absent. */
  function normaliseRecords(doc, quote) {
    if (!doc || !Array.isArray(doc.balances) || doc.quote !== quote) return null;
    const out = new Map();
    for (const r of doc.balances) {
      if (!validRecord(r) || !("value" in r)) continue;
      out.set(recKey(r.account, r.wallet, r.asset), {
        total: parseDec(String(r.total)),
        value: typeof r.value === "string" ? parseDec(r.value) : null,
        price: typeof r.price === "string" ? parseDec(r.price) : null,
        reason: typeof r.value_reason === "string" ? r.value_reason : null,
      });
    }
    return out;
  }

  /** GET /v1/totals -> {quote, rows: Map(symbol -> row), coverage, unpriced, ...} */
  function normaliseTotals(doc, quote) {
    if (!doc || !Array.isArray(doc.totals)) return null;
    const served = typeof doc.quote === "string" ? doc.quote : "USD"; // older servers: USD only
    if (served !== quote) return { quote, unsupported: true, rows: new Map(), unpriced: [] };
    const rows = new Map();
    for (const row of doc.totals) {
      if (!row || typeof row.symbol !== "string") continue;
      const total = parseDec(String(row.total));
      const raw = row.value !== undefined ? row.value : quote === "USD" ? row.usd : null;
      const value = raw === null || raw === undefined ? null : parseDec(String(raw));
      let price = typeof row.price === "string" ? parseDec(row.price) : null;
      if (price === null && value !== null && total !== null && total.n !== 0n) {
        price = divExact(value, total); // one price for every holding of the symbol
      }
      if (price !== null && value !== null && total !== null && cmpDec(mulDec(price, total), value) !== 0) {
        price = null; // several prices (paths) behind one symbol: not splittable by holding
      }
      rows.set(row.symbol, {
        total,
        value,
        price,
        shownPrice: typeof row.price === "string" ? parseDec(row.price) : price,
        path: typeof row.path === "string" ? row.path : null,
        source: typeof row.price_source === "string" ? row.price_source : null,
        ageS: typeof row.price_age_s === "number" ? row.price_age_s : null,
        stalePrice: row.stale_price === true || row.reason === "stale_price",
        reason: typeof row.reason === "string" ? row.reason : value === null ? "no_price" : null,
      });
    }
    const unpriced = [];
    for (const item of Array.isArray(doc.unpriced) ? doc.unpriced : []) {
      if (typeof item === "string") unpriced.push({ symbol: item, reason: "no_price" });
      else if (item && typeof item.symbol === "string") {
        unpriced.push({ symbol: item.symbol, reason: String(item.reason || "no_price") });
      }
    }
    const coverage = doc.coverage && typeof doc.coverage === "object" ? doc.coverage : null;
    const assumptions = Array.isArray(doc.assumptions)
      ? doc.assumptions.filter((a) => typeof a === "string")
      : [];
    const value = typeof doc.value === "string" ? parseDec(doc.value) : null;
    return {
      quote, unsupported: false, rows, unpriced, coverage, assumptions, value,
      records: null, fetchedAt: Date.now(),
    };
  }

  const REASONS = {
    no_price: "no price",
    stale_price: "price is stale",
    no_path: "no conversion path",
    pending: "being valued",
    unsupported: "quote not offered by this service",
    loading: "loading",
  };
  const reasonText = (reason) => REASONS[reason] || String(reason).replace(/_/g, " ");

  function isStable(rec) {
    if (MINT_VENUES.has(rec.venue)) return STABLE_MINTS.has(rec.asset);
    return STABLECOINS.has(String(rec.symbol || rec.asset).toUpperCase());
  }

  /** The value of a symbol's live total: {value, price, reason} (value null when unknown). */
  function symbolValue(symbol, total) {
    const v = state.valuation;
    if (!v) return { value: null, price: null, reason: "loading" };
    if (v.unsupported) return { value: null, price: null, reason: "unsupported" };
    const row = v.rows.get(symbol);
    if (total.n === 0n) return { value: ZERO, price: row ? row.price : null, reason: null };
    if (row && row.total && cmpDec(row.total, total) === 0) {
      return { value: row.value, price: row.price, reason: row.value === null ? row.reason : null };
    }
    if (row && row.price) return { value: mulDec(row.price, total), price: row.price, reason: null };
    const keys = state.bySymbol.get(symbol) || new Set();
    if (v.quote === "USD" && [...keys].every((k) => !state.records.get(k) || isStable(state.records.get(k)))) {
      return { value: total, price: { n: 1n, s: 0 }, reason: null };
    }
    if (row && row.value === null) return { value: null, price: null, reason: row.reason };
    return { value: null, price: null, reason: "pending" }; // a fresh valuation is on its way
  }

  const REASON_ORDER = ["no_price", "no_path", "stale_price", "pending"];

  /** One holding's value from the service's per-record valuation: {value, reason}. */
  function recordValue(key, rec, amount) {
    const v = state.valuation;
    const served = v.records.get(key);
    if (amount.n === 0n) return { value: ZERO, reason: null };
    if (served && served.total && cmpDec(served.total, amount) === 0) {
      return { value: served.value, reason: served.value === null ? served.reason || "no_price" : null };
    }
    if (served && served.price && served.value !== null) {
      return { value: quantize8(mulDec(served.price, amount)), reason: null }; // until the re-read
    }
    if (v.quote === "USD" && isStable(rec)) return { value: amount, reason: null };
    return { value: null, reason: "pending" }; // a fresh valuation is on its way
  }

  /** A symbol valued holding by holding: the exact sum, or null with the first reason. */
  function symbolFromRecords(symbol, keys, perAccount, recValues) {
    let value = ZERO;
    const reasons = new Set();
    const parts = [];
    for (const k of keys) {
      const rec = state.records.get(k);
      const amount = rec ? parseDec(rec.total) : null;
      if (!rec || amount === null) continue;
      const rv = recordValue(k, rec, amount);
      recValues.set(k, rv);
      if (rv.value === null) reasons.add(rv.reason);
      else {
        value = addDec(value, rv.value);
        parts.push([rec.account, rv.value]);
      }
    }
    const row = state.valuation.rows.get(symbol);
    const price = row ? row.shownPrice : null;
    if (reasons.size) return { value: null, price, reason: REASON_ORDER.find((r) => reasons.has(r)) || [...reasons][0] };
    for (const [account, v] of parts) perAccount.set(account, addDec(perAccount.get(account) || ZERO, v));
    return { value, price, reason: null };
  }

  /** Everything the overview shows, recomputed from the live records. */
  function computeOverview() {
    const v = state.valuation;
    const byRecord = Boolean(v && !v.unsupported && v.records);
    const recValues = new Map(); // record key -> {value, reason}, when valued by record
    const symbols = [];
    let total = ZERO;
    let holdings = 0;
    let priced = 0;
    const perAccount = new Map(); // account -> exact value of its attributable holdings
    let unattributed = ZERO;
    const unpriced = [];
    for (const [symbol, keys] of state.bySymbol) {
      const recs = [...keys].map((k) => state.records.get(k)).filter(Boolean);
      if (recs.length === 0) continue;
      const sum = sumDec(recs.map((r) => r.total));
      if (sum === null) continue;
      const val = byRecord ? symbolFromRecords(symbol, keys, perAccount, recValues) : symbolValue(symbol, sum);
      symbols.push({ symbol, total: sum, ...val, recs });
      if (sum.n === 0n) continue;
      holdings += 1;
      if (val.value === null) {
        unpriced.push({ symbol, reason: val.reason || "no_price" });
        continue;
      }
      priced += 1;
      total = addDec(total, val.value);
      if (byRecord) {
        // attributed holding by holding in symbolFromRecords
      } else if (val.price) {
        for (const r of recs) {
          const amount = parseDec(r.total);
          if (amount === null) continue;
          perAccount.set(r.account, addDec(perAccount.get(r.account) || ZERO, mulDec(val.price, amount)));
        }
      } else {
        unattributed = addDec(unattributed, val.value);
      }
    }
    return { symbols, total, holdings, priced, perAccount, unattributed, unpriced, recValues, byRecord };
  }

  // ---------------------------------------------------------------------------------
  // DOM

  const $ = (id) => document.getElementById(id);
  const els = {};
  const cards = new Map(); // account -> card parts
  const rows = new Map(); // record key -> row parts
  const totalRows = new Map(); // symbol -> row parts
  // The SVG namespace, taken from markup the HTML parser put there (the page names no URLs).
  let svgNs = "";

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs = {}) {
    if (!svgNs) svgNs = $("svg-ns").content.firstElementChild.namespaceURI;
    const node = document.createElementNS(svgNs, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function flash(node) {
    node.classList.remove("flash");
    void node.offsetWidth; // restart the animation
    node.classList.add("flash");
    node.dataset.changed = String((parseInt(node.dataset.changed || "0", 10) || 0) + 1);
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

  /** Put an exact amount string into a cell: grouped, every decimal kept, split at the point. */
  function setAmount(cell, text) {
    if (cell.dataset.value === text && cell.firstChild) return false;
    const parts = splitAmount(text);
    if (parts) {
      cell.replaceChildren(el("span", "int", parts.int), el("span", "frac", parts.frac));
    } else {
      cell.replaceChildren(el("span", "int", text || "?"));
    }
    cell.dataset.value = text;
    cell.title = text;
    return true;
  }

  function formatValue(d) {
    return state.exact ? formatExact(d) : formatMoney(d);
  }

  function setValueCell(cell, value, reason) {
    const text = value === null ? "—" : formatValue(value);
    if (cell.textContent !== text) cell.textContent = text;
    cell.dataset.value = value === null ? "" : decToString(value);
    cell.title = value === null ? reasonText(reason || "no_price") : `${decToString(value)} ${state.quote}`;
    cell.classList.toggle("unknown", value === null);
  }

  function ageText(secs) {
    if (secs < 120) return `${secs} s`;
    if (secs < 7200) return `${Math.floor(secs / 60)} min`;
    if (secs < 172800) return `${Math.floor(secs / 3600)} h`;
    return `${Math.floor(secs / 86400)} d`;
  }

  function secondsSince(t) {
    return Number.isFinite(t) ? Math.max(0, Math.floor((Date.now() - t) / 1000)) : null;
  }

  // --- account cards ----------------------------------------------------------------

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
      staleNote: q("[data-stale-note]"),
      value: q("[data-account-value]"),
      age: q("[data-age]"),
      reconnects: q("[data-reconnects]"),
      owner: q("[data-owner]"),
      error: q("[data-error]"),
      table: q("table"),
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
    alignCard(card);
    renderAge(account, card);
  }

  /** Align a card's amounts on the point: every fraction gets the widest one's width. */
  function alignCard(card) {
    let widest = 0;
    for (const frac of card.tbody.querySelectorAll(".frac")) {
      widest = Math.max(widest, frac.textContent.length);
    }
    card.table.style.setProperty("--frac", `${widest}ch`);
  }

  function renderAge(account, card) {
    const seen = state.seen.get(account);
    const s = accountState(account);
    const live = s === "live";
    if (seen === undefined) {
      card.age.textContent = "never";
      card.age.dataset.age = "";
    } else {
      const secs = secondsSince(seen);
      card.age.dataset.age = String(secs);
      card.age.title = new Date(seen).toISOString();
      card.age.textContent = `${ageText(secs)} ago`;
    }
    const since = secondsSince(seen);
    const note = live
      ? ""
      : s === "unknown"
        ? "⚠ Not confirmed by the venue yet"
        : `⚠ Not confirmed for ${since === null ? "an unknown time" : ageText(since)}: last known balances`;
    card.staleNote.textContent = note;
    card.staleNote.hidden = !note;
    card.root.dataset.staleFor = live || since === null ? "" : String(since);
    for (const parts of rows.values()) {
      if (parts.card === account && parts.age) {
        parts.age.textContent = live || since === null ? "" : ageText(since);
      }
    }
  }

  function createRow(key, rec) {
    const card = ensureCard(rec.account);
    const tr = el("tr");
    const id = `${rec.account}|${rec.wallet}|${rec.asset}`;
    tr.dataset.row = id;
    const holding = el("td", "holding");
    holding.dataset.label = "Asset";
    const symbol = el("span", "sym");
    symbol.dataset.cell = `${id}|symbol`;
    const asset = el("span", "sub id");
    asset.dataset.cell = `${id}|asset`;
    asset.title = rec.asset;
    const wallet = el("span", rec.wallet ? "sub id" : "sub", rec.wallet ? shorten(rec.wallet) : "exchange");
    wallet.title = rec.wallet || "exchange account";
    wallet.dataset.cell = `${id}|wallet`;
    holding.append(symbol, asset, wallet);
    const mark = el("td", "mark");
    mark.dataset.label = "Status";
    const parts = { tr, card: rec.account, symbol, asset, cells: {}, mark, age: null };
    tr.appendChild(holding);
    for (const f of [...FIELDS, "value"]) {
      const td = el("td", "num");
      td.dataset.cell = `${id}|${f}`;
      td.dataset.label = f === "value" ? "Value" : f[0].toUpperCase() + f.slice(1);
      parts.cells[f] = td;
      tr.appendChild(td);
    }
    tr.appendChild(mark);
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
    const learnt = !rec.symbol ? state.knownSymbols.get(rec.asset) : undefined;
    const sym = rec.symbol || learnt || (looksLikeMint(rec.asset) ? shorten(rec.asset, 4) : rec.asset);
    parts.symbol.textContent = sym;
    parts.symbol.title = rec.symbol
      ? `${rec.symbol} (${rec.asset})`
      : learnt
        ? `${learnt}: symbol from earlier data (${rec.asset})`
        : `no symbol known (${rec.asset})`;
    parts.symbol.classList.toggle("unknown", !rec.symbol);
    const showAsset = rec.asset !== sym && !(rec.symbol && rec.asset.toUpperCase() === rec.symbol.toUpperCase());
    parts.asset.textContent = showAsset ? shorten(rec.asset, 6) : "";
    parts.asset.hidden = !showAsset;
    for (const f of FIELDS) {
      const text = typeof rec[f] === "string" ? rec[f] : String(rec[f] ?? "");
      setAmount(parts.cells[f], text);
    }
    const stale = isStale(rec);
    parts.tr.dataset.stale = String(stale);
    if (stale && !parts.mark.firstChild) {
      parts.age = el("span", "age");
      parts.mark.append(el("span", "tag", "stale"), parts.age);
    } else if (!stale && parts.mark.firstChild) {
      parts.mark.replaceChildren();
      parts.age = null;
    }
    if (changed) {
      for (const f of changed) {
        if (f === "symbol") flash(parts.symbol);
        else if (parts.cells[f]) flash(parts.cells[f]);
      }
    }
  }

  // --- totals by symbol -------------------------------------------------------------

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
      parts.name = el("td", "sym");
      parts.name.dataset.label = "Symbol";
      tr.appendChild(parts.name);
      for (const f of [...FIELDS, "price", "value", "accounts"]) {
        const td = el("td", "num");
        td.dataset.totalCell = `${symbol}|${f}`;
        td.dataset.label = f[0].toUpperCase() + f.slice(1);
        parts.cells[f] = td;
        tr.appendChild(td);
      }
      sortKeys.set(tr, symbol);
      insertSorted(els.totalsBody, tr, symbol, sortOf);
      totalRows.set(symbol, parts);
    }
    parts.name.textContent = displaySymbol(symbol);
    parts.name.title = symbol;
    for (const f of FIELDS) {
      const sum = sumDec(recs.map((r) => r[f]));
      const text = sum === null ? "?" : decToString(sum);
      const cell = parts.cells[f];
      const before = cell.dataset.value;
      if (setAmount(cell, text) && before !== undefined) flash(cell);
    }
    parts.cells.accounts.textContent = String(new Set(recs.map((r) => r.account)).size);
    parts.tr.dataset.stale = String(recs.length > 0 && recs.every(isStale));
  }

  function alignTotals() {
    let widest = 0;
    for (const frac of els.totalsBody.querySelectorAll(".frac")) {
      widest = Math.max(widest, frac.textContent.length);
    }
    els.totals.style.setProperty("--frac", `${widest}ch`);
  }

  // --- overview: headline and allocation pictures ----------------------------------

  /** The biggest slices first; past MAX_SLICES the rest is one "other" slice (exact sum). */
  function topSlices(slices) {
    const sorted = slices.filter((s) => s.value.n !== 0n).sort((a, b) => cmpDec(b.value, a.value));
    if (sorted.length <= MAX_SLICES) return sorted;
    const head = sorted.slice(0, MAX_SLICES - 1);
    const rest = sorted.slice(MAX_SLICES - 1);
    let sum = ZERO;
    for (const s of rest) sum = addDec(sum, s.value);
    head.push({
      key: "",
      label: `${rest.length} others`,
      detail: rest.map((s) => s.label).join(", "),
      value: sum,
      other: true,
    });
    return head;
  }

  function renderPicture(fig, kind, slices, total) {
    const shown = topSlices(slices);
    const width = 1000;
    const bar = svg("svg", {
      viewBox: `0 0 ${width} 40`,
      preserveAspectRatio: "none",
      class: "alloc-bar",
      role: "img",
      "aria-label": `${kind === "symbol" ? "Value by asset" : "Value by account"}: ${shown
        .map((s) => `${s.label} ${percentText(share(s.value, total), s.value.n !== 0n)}`)
        .join(", ")}`,
    });
    const legend = el("ul", "legend");
    let cum = ZERO;
    shown.forEach((s, i) => {
      const start = share(cum, total);
      cum = addDec(cum, s.value);
      const end = share(cum, total);
      const x = Number(start) / 1000; // geometry only: millionths of the bar -> viewBox units
      const w = Math.max(0, Number(end - start) / 1000);
      const exact = `${s.label}: ${formatExact(s.value)} ${state.quote} (${percentText(share(s.value, total), s.value.n !== 0n)})`;
      const rect = svg("rect", {
        x, y: 0, width: w, height: 40,
        class: `slice c${s.other ? "x" : i}`,
        "data-slice": s.key,
        "data-value": decToString(s.value),
      });
      const title = svg("title");
      title.textContent = s.detail ? `${exact}: ${s.detail}` : exact;
      rect.appendChild(title);
      if (!s.other) {
        rect.addEventListener("click", () => toggleFilter(kind, s.key, s.label));
        rect.classList.add("clickable");
      }
      const active = state.filter && state.filter.kind === kind && state.filter.key === s.key;
      if (active) rect.classList.add("active");
      bar.appendChild(rect);

      const li = el("li");
      const item = el(s.other ? "span" : "button", "legend-item");
      if (!s.other) {
        item.type = "button";
        item.setAttribute("aria-pressed", String(Boolean(active)));
        item.addEventListener("click", () => toggleFilter(kind, s.key, s.label));
      }
      item.dataset.legend = s.key;
      item.title = title.textContent;
      const swatch = el("span", `swatch c${s.other ? "x" : i}`);
      swatch.setAttribute("aria-hidden", "true");
      const name = el("span", "legend-name", s.label);
      if (s.sub) name.appendChild(el("span", "legend-sub", s.sub));
      item.append(
        swatch,
        name,
        el("span", "legend-pct", percentText(share(s.value, total), s.value.n !== 0n)),
        el("span", "legend-value", formatValue(s.value)),
      );
      li.appendChild(item);
      legend.appendChild(li);
    });
    fig.dataset.total = decToString(total);
    fig.replaceChildren(bar, legend);
  }

  function renderOverview() {
    const o = computeOverview();
    const quote = state.quote;
    els.valueQuote.textContent = quote;
    const v = state.valuation;
    const known = v && !v.unsupported && (o.priced > 0 || o.holdings === 0);
    els.value.textContent = known ? formatValue(o.total) : "—";
    els.value.dataset.value = known ? decToString(o.total) : "";
    els.value.title = known ? `${decToString(o.total)} ${quote} (exact)` : "";
    if (!v) els.coverage.textContent = "Valuing…";
    else if (v.unsupported) els.coverage.textContent = `${quote} valuation is not offered by this service.`;
    else {
      let text = `${o.priced} of ${o.holdings} assets priced`;
      const cov = v.coverage;
      if (cov && "by_value" in cov) {
        const byValue = typeof cov.by_value === "string" ? parseDec(cov.by_value) : null;
        // by_value has 4 places (rounded down), so as a percentage it is exact
        text += byValue
          ? ` · ${decToString(mulDec(byValue, { n: 100n, s: 0 }))}% of value covered`
          : " · share of value covered unknown (an asset has no price)";
      }
      els.coverage.textContent = text;
    }
    const cov = v && v.coverage ? v.coverage : {};
    els.coverage.dataset.byCount = typeof cov.by_count === "string" ? cov.by_count : "";
    els.coverage.dataset.byValue = typeof cov.by_value === "string" ? cov.by_value : "";
    els.coverage.dataset.priced = String(o.priced);
    els.coverage.dataset.holdings = String(o.holdings);
    // unpriced assets, with the reason, in plain view
    const items = o.unpriced
      .sort((a, b) => (a.symbol < b.symbol ? -1 : 1))
      .map((u) => {
        const li = el("li");
        li.dataset.unpriced = u.symbol;
        li.dataset.reason = u.reason;
        li.append(el("b", "", displaySymbol(u.symbol)), document.createTextNode(`: ${reasonText(u.reason)}`));
        const row = v && v.rows ? v.rows.get(u.symbol) : null;
        if (u.reason === "stale_price" && row) {
          // the path and its age are still known: say which price is old, and how old
          const age = priceAge(row);
          li.appendChild(el("span", "muted", ` (${row.path || row.source || "price"}${age === null ? "" : `, ${ageText(age)} old`})`));
          li.dataset.age = age === null ? "" : String(age);
        }
        li.title = u.symbol;
        return li;
      });
    els.unpriced.replaceChildren(...items);
    els.unpricedBox.hidden = items.length === 0;
    els.unpricedCount.textContent = String(items.length);
    const assumptions = v && v.assumptions ? v.assumptions : [];
    els.assumptions.textContent = assumptions.length ? `Assumes ${assumptions.join(", ")}` : "";
    els.assumptions.hidden = assumptions.length === 0;

    const bySymbol = [];
    for (const s of o.symbols) {
      if (s.value !== null) bySymbol.push({ key: s.symbol, label: displaySymbol(s.symbol), value: s.value });
    }
    const byAccount = [];
    for (const [account, value] of o.perAccount) {
      const st = state.statuses.get(account);
      const venue = st && typeof st.venue === "string" ? st.venue : "";
      byAccount.push({ key: account, label: account, sub: venue, value });
    }
    if (o.unattributed.n !== 0n) {
      byAccount.push({ key: "", label: "not split by account", value: o.unattributed, other: true,
                       detail: "symbols valued at several prices" });
    }
    renderPicture(els.allocSymbol, "symbol", bySymbol, o.total);
    renderPicture(els.allocAccount, "account", byAccount, o.total);
    els.allocEmpty.hidden = bySymbol.length > 0;

    // per-holding values in the tables, from the same figures
    const prices = new Map(o.symbols.map((s) => [s.symbol, s]));
    for (const [symbol, parts] of totalRows) {
      const s = prices.get(symbol);
      setValueCell(parts.cells.value, s ? s.value : null, s ? s.reason : "pending");
      const row = v && v.rows ? v.rows.get(symbol) : null;
      renderPriceCell(parts.cells.price, s && s.price ? s.price : row ? row.shownPrice : null, row || null);
      parts.tr.dataset.priceStale = String(Boolean(row && row.stalePrice));
    }
    for (const [key, parts] of rows) {
      const rec = state.records.get(key);
      if (o.byRecord) {
        const rv = o.recValues.get(key);
        setValueCell(parts.cells.value, rv ? rv.value : null, rv ? rv.reason : "pending");
        continue;
      }
      const s = rec ? prices.get(symbolOf(rec)) : null;
      const amount = rec ? parseDec(rec.total) : null;
      const value = s && s.price && amount ? mulDec(s.price, amount) : null;
      setValueCell(parts.cells.value, value, s ? s.reason || (s.value !== null ? "several prices" : null) : null);
    }
    for (const [account, card] of cards) {
      const value = o.perAccount.get(account);
      card.value.textContent = value ? `${formatValue(value)} ${quote}` : "";
      card.value.dataset.value = value ? decToString(value) : "";
    }
    els.totalsHeadValue.textContent = `Value (${quote})`;
  }

  /** Seconds since the oldest price behind a valuation row was received, counted on. */
  function priceAge(row) {
    const v = state.valuation;
    if (!row || row.ageS === null || !v) return null;
    return Math.max(0, Math.floor(row.ageS + (Date.now() - v.fetchedAt) / 1000));
  }

  /** A unit price to read: up to 8 decimals (more for a tiny price), "≈" when rounded. */
  function formatPrice(d) {
    const text = decToString(d);
    const lead = /^-?0\.(0*)/.exec(text);
    const places = Math.max(8, lead ? lead[1].length + 6 : 0);
    if (d.s <= places) return formatExact(d);
    return `≈${formatMoney(d, places).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "")}`;
  }

  /** Price, its source and its age; a stale price says so in words, not only in colour. */
  function renderPriceCell(cell, price, row) {
    const age = priceAge(row);
    const stale = Boolean(row && row.stalePrice);
    const parts = [el("span", "price-num", price ? formatPrice(price) : "—")];
    if (row && (row.source || age !== null)) {
      const meta = [row.source, age === null ? null : `${ageText(age)} old`].filter(Boolean).join(" · ");
      parts.push(el("span", "price-meta", meta));
    }
    if (stale) parts.push(el("span", "tag stale-price", "stale price"));
    cell.replaceChildren(...parts);
    cell.dataset.value = price ? decToString(price) : "";
    cell.dataset.source = row && row.source ? row.source : "";
    cell.dataset.age = age === null ? "" : String(age);
    cell.dataset.stale = String(stale);
    const exact = price ? `${decToString(price)} ${state.quote}` : "";
    cell.title = [exact, row && row.path ? `${row.path}${stale ? " (stale: not valued)" : ""}` : ""]
      .filter(Boolean).join("\n");
    cell.classList.toggle("unknown", !price);
  }

  // --- filter -----------------------------------------------------------------------

  function toggleFilter(kind, key, label) {
    const same = state.filter && state.filter.kind === kind && state.filter.key === key;
    state.filter = same ? null : { kind, key, label };
    applyFilter();
    dirty.value = true;
    schedule();
    timeline.showSeries(kind, same ? null : key, label);
  }

  function applyFilter() {
    const f = state.filter;
    els.filterBar.hidden = !f;
    els.filterText.textContent = f ? `${f.kind === "symbol" ? "Asset" : "Account"}: ${f.label}` : "";
    for (const [key, parts] of rows) {
      const rec = state.records.get(key);
      parts.tr.hidden = Boolean(f && f.kind === "symbol" && rec && symbolOf(rec) !== f.key);
    }
    for (const [account, card] of cards) {
      let hide = false;
      if (f && f.kind === "account") hide = account !== f.key;
      else if (f && f.kind === "symbol") {
        hide = ![...card.tbody.children].some((tr) => !tr.hidden);
      }
      card.root.hidden = hide;
    }
    for (const [symbol, parts] of totalRows) {
      parts.tr.hidden = Boolean(f && f.kind === "symbol" && symbol !== f.key);
    }
  }

  // --- events as sentences ----------------------------------------------------------

  const str = (v) => (typeof v === "string" && v ? v : typeof v === "number" ? String(v) : "");

  /** An amount from an event, grouped with every decimal kept (or the text as sent). */
  function amountText(v) {
    const d = parseDec(str(v));
    return d === null ? str(v) : formatExact(d);
  }

  const nonZero = (v) => {
    const d = parseDec(str(v));
    return d !== null && d.n !== 0n;
  };

  const ORDER_STATUS = {
    closed: "filled",
    filled: "filled",
    done: "filled",
    open: "open",
    building: "placed",
    processing: "placed",
    cancelled: "cancelled",
    canceled: "cancelled",
    failed: "failed",
    partially_filled: "partly filled",
  };
  const QUOTE_SUFFIXES = ["USDM", "USDT", "USDC", "USD", "TWD", "BTC", "ETH"];

  function splitPair(symbol) {
    const s = str(symbol).toUpperCase();
    const sep = /[-_/]/.exec(s);
    if (sep) return [s.slice(0, sep.index), s.slice(sep.index + 1)];
    for (const q of QUOTE_SUFFIXES) if (s.length > q.length && s.endsWith(q)) return [s.slice(0, -q.length), q];
    return [s, ""];
  }

  function orderSentence(d) {
    const id = str(d.id) || str(d.order_id);
    const status = str(d.status).toLowerCase();
    const verb = ORDER_STATUS[status] || status || "updated";
    const [base] = splitPair(d.symbol || d.pair);
    const filled = nonZero(d.executed_base_qty) ? d.executed_base_qty : null;
    const qty = filled && verb !== "open" ? filled : d.base_qty ?? d.qty ?? d.quantity ?? d.amount;
    const price = nonZero(d.executed_price) ? d.executed_price : d.price;
    let text = `${str(d.side) ? `${str(d.side)} ` : ""}order${id ? ` ${shorten(id, 4).replace(/….*/, "…")}` : ""} ${verb}`;
    if (str(qty)) text += ` ${amountText(qty)}${base ? ` ${base}` : ""}`;
    if (nonZero(price)) text += ` @ ${amountText(price)}`;
    return text;
  }

  function swapSentence(d) {
    const side = (s) => (s && typeof s === "object" ? s : {});
    const from = side(d.from);
    const to = side(d.to);
    const name = (s) => str(s.symbol) || state.knownSymbols.get(s.address) || (str(s.address) ? shorten(s.address, 4) : "?");
    if (str(from.amount) || str(to.amount)) {
      return `swap ${amountText(from.amount) || "?"} ${name(from)} → ${amountText(to.amount) || "?"} ${name(to)}`;
    }
    const mint = str(d.mint);
    const sym = state.knownSymbols.get(mint) || (mint ? shorten(mint, 4) : "token");
    return `${str(d.type) || "swap"} ${amountText(d.amount)} ${sym}${nonZero(d.priceUsd) ? ` @ ${amountText(d.priceUsd)} USD` : ""}`;
  }

  function statusSentence(d) {
    const why = str(d.last_error) ? ` (${str(d.last_error)})` : "";
    if (d.state === "live") {
      const after = typeof d.down_s === "number" ? ` after ${ageText(d.down_s)}` : "";
      return `reconnected${after}${why}`;
    }
    const what = str(d.state).replace(/_/g, " ");
    return d.previous === "live"
      ? `connection lost, now ${what}${why}: showing last known balances`
      : `now ${what}${why}`;
  }

  function pointsSentence(d) {
    const delta = str(d.delta);
    const sign = delta && !delta.startsWith("-") ? "+" : "";
    return `${sign}${amountText(delta)} points${str(d.new_total) ? ` (total ${amountText(d.new_total)})` : ""}`;
  }

  /** "sfox-main: order 550e… filled 0.5 BTC @ 97,000" */
  function describeEvent(ev) {
    const d = ev.data && typeof ev.data === "object" ? ev.data : {};
    let text;
    try {
      if (ev.kind === "order") text = orderSentence(d);
      else if (ev.kind === "swap") text = swapSentence(d);
      else if (ev.kind === "status") text = statusSentence(d);
      else if (ev.kind === "points") text = pointsSentence(d);
    } catch {
      text = "";
    }
    return `${ev.account}: ${(text || `${ev.kind.replace(/_/g, " ")} event`).replace(/\s+/g, " ").trim()}`;
  }

  function renderEvents() {
    const items = state.events.map((ev) => {
      const li = el("li");
      li.dataset.event = String(ev.seq ?? "");
      li.dataset.kind = ev.kind;
      const head = el("div", "ev-head");
      const time = el("time", "ev-time", new Date(ev.at).toLocaleTimeString());
      time.dateTime = new Date(ev.at).toISOString();
      head.append(el("span", "ev-kind", ev.kind), time);
      const text = el("p", "ev-text", describeEvent(ev));
      let raw = "";
      try {
        raw = JSON.stringify(ev.data, null, 2) ?? "";
      } catch {
        raw = String(ev.data);
      }
      const details = el("details", "ev-raw");
      details.append(el("summary", "", "raw"), el("pre", "", raw.length > 4000 ? `${raw.slice(0, 3999)}…` : raw));
      li.append(head, text, details);
      return li;
    });
    els.events.replaceChildren(...items);
    els.eventsEmpty.hidden = items.length > 0;
  }

  // --- value over time --------------------------------------------------------------
  //
  // The portfolio value chart appears only when the service answers /v1/history/value;
  // the per-asset chart (an asset's summed amount, /v1/history/series) when an asset is
  // clicked and the service has history. Nothing is made up: a point history cannot know
  // (null) and every listed gap are breaks in the line, and a gap is shaded and labelled.

  const RANGES = { "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, all: null };
  const CHART_POINTS = 240;

  const isoOf = (secs) => new Date(secs * 1000).toISOString();

  const timeline = {
    range: "24h",
    start: null, // seconds of the first change history holds (for "all"), once known
    valueShown: false,
    series: null, // {asset, label} charted below the portfolio value
    asked: 0, // answers to older questions (another range, quote or asset) are dropped

    /** from, to and step for the chosen range; null when "all" has no history to show. */
    async window() {
      const to = Math.floor(Date.now() / 1000);
      let secs = RANGES[this.range];
      if (secs === null) {
        if (this.start === null) {
          const doc = await getJSON("v1/history?limit=1");
          const first = doc && Array.isArray(doc.changes) && doc.changes[0] ? Date.parse(doc.changes[0].time) : NaN;
          if (Number.isFinite(first)) this.start = Math.floor(first / 1000);
        }
        if (this.start === null) return null;
        secs = Math.max(60, to - this.start);
      }
      const step = Math.max(60, Math.ceil(secs / CHART_POINTS));
      return { from: to - secs, to, step };
    },

    params(w, extra) {
      const p = new URLSearchParams(extra);
      p.set("from", isoOf(w.from));
      p.set("to", isoOf(w.to));
      p.set("step", `${w.step}s`);
      return p;
    },

    async load() {
      const asked = ++this.asked;
      const w = await this.window();
      if (asked !== this.asked) return;
      const valueDoc = w ? await getJSON(`v1/history/value?${this.params(w, { quote: state.quote })}`) : null;
      if (asked !== this.asked) return;
      this.valueShown = Boolean(valueDoc && Array.isArray(valueDoc.points));
      els.valueBox.hidden = !this.valueShown;
      if (this.valueShown) {
        els.valueBoxQuote.textContent = state.quote;
        drawLine(els.historyChart, els.historyAxis, valueDoc.points.map((p) => ({ t: p.t ?? p.time, v: p.value })),
                 valueDoc.gaps, w, { unit: state.quote, money: true });
        exports.value = `v1/history/value?${this.params(w, { quote: state.quote, format: "csv" })}`;
      } else {
        exports.value = null;
      }
      await this.loadSeries(asked, w);
    },

    async loadSeries(asked, w) {
      const series = this.series;
      let doc = null;
      if (series && w) {
        doc = await getJSON(`v1/history/series?${this.params(w, { asset: series.asset })}`);
        if (asked !== this.asked) return;
      }
      const shown = Boolean(doc && Array.isArray(doc.points));
      els.seriesBox.hidden = !shown;
      exports.series = shown ? `v1/history/series?${this.params(w, { asset: series.asset, format: "csv" })}` : null;
      exports.seriesName = shown ? series.label : "";
      if (shown) {
        els.seriesTitle.textContent = `${series.label}: amount held over time (all accounts)`;
        drawLine(els.seriesChart, els.seriesAxis, doc.points.map((p) => ({ t: p.time ?? p.t, v: p.total })),
                 doc.gaps, w, { unit: series.label, money: false });
      }
      els.history.hidden = !(this.valueShown || shown);
      els.history.dataset.loaded = "true"; // the routes have answered (or refused)
      renderExports();
    },

    /** An asset was picked (or unpicked) in the pictures: chart its amount over time. */
    showSeries(kind, key, label) {
      this.series = kind === "symbol" && key ? { asset: key, label: label || key } : null;
      this.load();
    },
  };

  const toSeconds = (t) => (typeof t === "number" ? t : Date.parse(t) / 1000);

  /** A line of exact values over time; nulls and the listed gaps break it. */
  function drawLine(node, axis, points, gaps, w, { unit, money }) {
    const W = 1000;
    const H = 200;
    const pts = points
      .map((p) => ({ t: toSeconds(p.t), v: typeof p.v === "string" ? parseDec(p.v) : null }))
      .filter((p) => Number.isFinite(p.t))
      .sort((a, b) => a.t - b.t);
    const known = pts.filter((p) => p.v !== null);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "line-chart", role: "img" });
    const t0 = w.from;
    const t1 = Math.max(w.to, t0 + 1);
    const x = (t) => Math.min(W, Math.max(0, ((t - t0) / (t1 - t0)) * W));
    const gapList = (Array.isArray(gaps) ? gaps : [])
      .map((g) => [toSeconds(g.from), toSeconds(g.to)])
      .filter(([f, t]) => Number.isFinite(f) && Number.isFinite(t));
    for (const [f, t] of gapList) {
      const rect = svg("rect", { x: x(f), y: 0, width: Math.max(2, x(t) - x(f)), height: H, class: "gap" });
      const title = svg("title");
      title.textContent = `history gap: nothing known from ${new Date(f * 1000).toLocaleString()} to ${new Date(t * 1000).toLocaleString()}`;
      rect.appendChild(title);
      chart.appendChild(rect);
    }
    const show = (d) => (money ? formatMoney(d) : formatExact(d));
    node.dataset.points = String(known.length);
    node.dataset.gaps = String(gapList.length);
    if (known.length === 0) {
      node.dataset.runs = "0";
      node.dataset.low = node.dataset.high = "";
      chart.setAttribute("aria-label", "nothing known in this range");
      node.replaceChildren(chart);
      axis.textContent = "Nothing known in this range.";
      return;
    }
    let lo = known[0].v;
    let hi = known[0].v;
    for (const p of known) {
      if (cmpDec(p.v, lo) < 0) lo = p.v;
      if (cmpDec(p.v, hi) > 0) hi = p.v;
    }
    const span = subDec(hi, lo);
    const inGap = (a, b) => gapList.some(([f, t]) => a < t && b > f);
    // geometry only: a value's share of the span, in millionths, becomes a pixel height
    const y = (v) => H - 8 - (span.n === 0n ? 0.5 : Number(share(subDec(v, lo), span)) / 1e6) * (H - 16);
    let d = "";
    let runs = 0;
    let prev = null;
    for (const p of pts) {
      if (p.v === null) {
        prev = null;
        continue;
      }
      const start = prev === null || inGap(prev.t, p.t);
      if (start) runs += 1;
      d += `${start ? "M" : "L"}${x(p.t).toFixed(1)} ${y(p.v).toFixed(1)} `;
      prev = p;
    }
    const path = svg("path", { d: d.trim(), class: "line" });
    chart.appendChild(path);
    // a lone point (its neighbours unknown) is still drawn, as a dot
    for (let i = 0; i < pts.length; i += 1) {
      const p = pts[i];
      if (p.v === null) continue;
      const before = i > 0 && pts[i - 1].v !== null && !inGap(pts[i - 1].t, p.t);
      const after = i + 1 < pts.length && pts[i + 1].v !== null && !inGap(p.t, pts[i + 1].t);
      if (!before && !after) chart.appendChild(svg("circle", { cx: x(p.t), cy: y(p.v), r: 3, class: "dot" }));
    }
    node.dataset.runs = String(runs);
    node.dataset.low = decToString(lo);
    node.dataset.high = decToString(hi);
    chart.setAttribute("aria-label", `from ${show(lo)} to ${show(hi)} ${unit}`);
    node.replaceChildren(chart);
    const when = (t) => new Date(t * 1000).toLocaleString();
    axis.textContent = `${when(t0)} – ${when(w.to)} · low ${show(lo)} · high ${show(hi)} ${unit}` +
      (gapList.length ? ` · ${gapList.length} gap${gapList.length > 1 ? "s" : ""} (shaded)` : "");
  }

  // --- CSV export ---------------------------------------------------------------------
  //
  // Links to the service's own CSV (format=csv). A click fetches it with the token in the
  // Authorization header (a link alone could not carry it) and saves it; a service that
  // answers something other than CSV is said to offer no CSV there.

  const exports = { value: null, series: null, seriesName: "" };

  function renderExports() {
    const links = [
      ["balances", `v1/balances?${new URLSearchParams({ quote: state.quote, format: "csv" })}`, "balances.csv"],
      ["totals", `v1/totals?${new URLSearchParams({ quote: state.quote, format: "csv" })}`, "totals.csv"],
      ["history", "v1/history?format=csv", "history.csv"],
    ];
    if (exports.value) links.push(["value over time", exports.value, "value.csv"]);
    if (exports.series) links.push([`${exports.seriesName} over time`, exports.series, "series.csv"]);
    const items = links.map(([label, href, file]) => {
      const a = el("a", "export", label);
      a.href = href;
      a.download = file;
      a.dataset.export = file.replace(/\.csv$/, "");
      a.addEventListener("click", (ev) => {
        ev.preventDefault();
        saveCsv(href, file);
      });
      return a;
    });
    const parts = [];
    items.forEach((a, i) => {
      if (i) parts.push(document.createTextNode(" · "));
      parts.push(a);
    });
    els.exportLinks.replaceChildren(...parts);
  }

  async function saveCsv(href, file) {
    const status = els.exportStatus;
    status.textContent = `Exporting ${file}…`;
    status.dataset.file = file;
    status.dataset.state = "busy";
    let resp = null;
    try {
      resp = await fetch(new URL(href, document.baseURI), {
        headers: { Accept: "text/csv", ...authHeaders() },
        cache: "no-store",
      });
    } catch {
      resp = null;
    }
    const type = resp ? resp.headers.get("content-type") || "" : "";
    if (!resp || !resp.ok || !type.startsWith("text/csv")) {
      status.dataset.state = "refused";
      status.textContent = resp && resp.ok
        ? `${file}: CSV export is not offered by this service here.`
        : `${file}: export failed${resp ? ` (HTTP ${resp.status})` : ""}.`;
      return;
    }
    const text = await resp.text();
    const rowCount = Math.max(0, text.split("\n").filter((l) => l !== "").length - 1);
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const a = el("a");
    a.href = url;
    a.download = file;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    status.dataset.state = "saved";
    status.dataset.rows = String(rowCount);
    status.dataset.header = text.split("\n", 1)[0].replace(/\r$/, "");
    status.textContent = `Saved ${file} (${rowCount} row${rowCount === 1 ? "" : "s"}).`;
  }

  // --- render loop ------------------------------------------------------------------

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
      else accounts.add(key.split("\u0000")[0]);
    }
    for (const account of accounts) renderCard(account);
    const symbols = dirty.symbols;
    dirty.symbols = new Set();
    for (const symbol of symbols) renderTotal(symbol);
    if (symbols.size) alignTotals();
    if (recs.size || symbols.size || accounts.size || dirty.value) {
      dirty.value = false;
      renderOverview();
      if (state.filter) applyFilter();
    }
    if (dirty.events) {
      dirty.events = false;
      renderEvents();
    }
    els.seq.textContent = String(state.seq);
    els.seq.dataset.seq = String(state.seq);
    els.totalsEmpty.hidden = totalRows.size > 0;
    els.accountsEmpty.hidden = cards.size > 0;
    let live = 0;
    for (const id of cards.keys()) if (accountState(id) === "live") live += 1;
    els.accountsCount.textContent = cards.size ? `${cards.size} · ${live} live` : "";
  }

  function tick() {
    for (const [account, card] of cards) renderAge(account, card);
    const v = state.valuation;
    if (v && v.rows) {
      for (const [symbol, parts] of totalRows) {
        const row = v.rows.get(symbol);
        if (row && row.ageS !== null) {
          const price = parseDec(parts.cells.price.dataset.value || "");
          renderPriceCell(parts.cells.price, price, row);
        }
      }
    }
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
    const sentWith = token;
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
      // A refusal of the token this request carried, if it is still the one in use: an
      // answer to a request sent before a token was entered says nothing about it.
      if (!needToken && sentWith === token) {
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

  let revalueTimer = null;
  let revalueDue = 0;
  let revalueBusy = false;
  let revalueAgain = 0; // the delay wanted by a request made while one was in flight
  let revalueStarted = 0;

  /**
   * Re-read the valuation soon: at most one request in flight, requests coalesced. A
   * price message asks with a longer delay (counted from the last read), so a busy
   * price feed costs at most one read a second.
   */
  function requestRevalue(delay = REVALUE_DELAY_MS) {
    if (revalueBusy) {
      revalueAgain = revalueAgain ? Math.min(revalueAgain, delay) : delay;
      return;
    }
    const now = Date.now();
    const due = delay > REVALUE_DELAY_MS ? Math.max(now + REVALUE_DELAY_MS, revalueStarted + delay) : now + delay;
    if (revalueTimer !== null && revalueDue <= due) return;
    clearTimeout(revalueTimer);
    revalueDue = due;
    revalueTimer = setTimeout(fetchValuation, due - now);
  }

  async function fetchValuation() {
    clearTimeout(revalueTimer);
    revalueTimer = null;
    if (needToken || revalueBusy) return;
    revalueBusy = true;
    revalueAgain = 0;
    revalueStarted = Date.now();
    const quote = state.quote;
    try {
      const q = encodeURIComponent(quote);
      const [doc, recs] = await Promise.all([getJSON(`v1/totals?quote=${q}`), getJSON(`v1/balances?quote=${q}`)]);
      if (quote !== state.quote) return; // the user switched meanwhile
      // An older service answers only USD (422 for other quotes): say so, do not guess.
      const v = doc === null && quote !== "USD" && !needToken
        ? { quote, unsupported: true, rows: new Map(), unpriced: [] }
        : normaliseTotals(doc, quote);
      if (v && !v.unsupported) v.records = normaliseRecords(recs, quote);
      if (v) {
        state.valuation = v;
        dirty.value = true;
        schedule();
      }
    } finally {
      revalueBusy = false;
      if (revalueAgain) requestRevalue(revalueAgain);
    }
  }

  async function poll() {
    if (needToken) return;
    const [, accounts] = await Promise.all([fetchValuation(), getJSON("v1/accounts")]);
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
    url.searchParams.set("prices", "true"); // price messages re-read the valuation
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
          if (!needToken && ws === null) scheduleReconnect(); // unless a new socket is up
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

  function setQuote(quote) {
    if (!QUOTES.includes(quote)) return;
    state.quote = quote;
    state.valuation = null;
    try {
      localStorage.setItem(QUOTE_KEY, quote);
    } catch {
      // private mode: the choice lasts for this page only
    }
    els.quote.value = quote;
    dirty.value = true;
    schedule();
    fetchValuation();
    renderExports();
    timeline.load();
  }

  function start() {
    for (const id of [
      "conn", "conn-text", "seq", "quote", "value", "value-quote", "coverage", "unpriced",
      "unpriced-box", "unpriced-count", "assumptions", "exact", "alloc-symbol", "alloc-account",
      "alloc-empty", "filter-bar", "filter-text", "filter-clear", "history", "history-chart",
      "history-ranges", "series-box", "series-title", "series-chart", "totals", "totals-body",
      "value-box", "value-box-quote", "history-axis", "series-axis", "export-links", "export-status",
      "totals-empty", "totals-head-value", "accounts", "accounts-empty", "accounts-count",
      "events", "events-empty", "account-tpl", "token-form", "token-label", "token-input",
    ]) {
      els[id.replace(/-(\w)/g, (_m, c) => c.toUpperCase())] = $(id);
    }
    els.allocSymbol.dataset.kind = "symbol";
    els.allocAccount.dataset.kind = "account";

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
    els.quote.addEventListener("change", () => setQuote(els.quote.value));
    els.exact.addEventListener("click", () => {
      state.exact = !state.exact;
      els.exact.setAttribute("aria-pressed", String(state.exact));
      dirty.value = true;
      schedule();
    });
    els.filterClear.addEventListener("click", () => {
      if (state.filter) toggleFilter(state.filter.kind, state.filter.key, state.filter.label);
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && state.filter) {
        toggleFilter(state.filter.kind, state.filter.key, state.filter.label);
      }
    });
    for (const button of els.historyRanges.querySelectorAll("button[data-range]")) {
      button.addEventListener("click", () => {
        timeline.range = button.dataset.range;
        for (const b of els.historyRanges.querySelectorAll("button")) {
          b.setAttribute("aria-pressed", String(b === button));
        }
        timeline.load();
      });
    }

    let saved = "";
    try {
      saved = localStorage.getItem(QUOTE_KEY) || "";
    } catch {
      saved = "";
    }
    state.quote = QUOTES.includes(saved) ? saved : "USD";
    els.quote.value = state.quote;
    token = tokenFromPage();
    renderExports();
    connect();
    poll();
    timeline.load();
    setInterval(poll, POLL_MS);
    setInterval(() => timeline.load(), 60000);
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
    formatExact: (value) => {
      const d = parseDec(value);
      return d === null ? null : formatExact(d);
    },
    describeEvent: (ev) => describeEvent({ seq: 0, at: Date.now(), ...ev }),
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
