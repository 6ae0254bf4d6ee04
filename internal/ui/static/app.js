// signpost's web console: reads the registry through the /v1 API and follows
// /v1/watch, so that the page changes as the registry does, without reload.
//
// Every registry string reaches the page through textContent or an
// attribute, never as markup (the server's Content-Security-Policy makes
// the browser refuse innerHTML strings outright). The page only reads.
"use strict";

(() => {
  // MAX_ROWS bounds the instance rows drawn per service; the filter narrows.
  const MAX_ROWS = 200;
  // EXPAND_UP_TO: when more instances than this are shown, cards start
  // folded (counts and dig lines, no rows) and open one by one, so that a
  // large registry does not become a page of 100,000 rows.
  const EXPAND_UP_TO = 500;
  // STALL_MS: the server sends a keepalive after 15 idle seconds; a stream
  // silent for this long is taken as dead and reopened.
  const STALL_MS = 45000;
  // MAX_EVENT_CHARS bounds one server-sent event (a whole service's list).
  const MAX_EVENT_CHARS = 128 << 20;
  // NODES_EVERY_MS: leases are renewed without registry changes, so the
  // node list is read again on this period.
  const NODES_EVERY_MS = 5000;
  const TOKEN_KEY = "signpost-read-token";
  const STATUSES = ["passing", "critical", "pending"];

  const $ = (id) => document.getElementById(id);

  const state = {
    config: { zone: "", dns_host: "", dns_port: 53, ttl_seconds: 0 },
    services: new Map(), // name -> Map(id -> instance)
    leases: new Map(), // node -> lease
    leasesLoaded: false,
    skew: 0, // server clock minus this browser's clock, in ms
    rev: 0,
    filter: [],
    cards: new Map(), // name -> card element
    dirty: new Set(), // services whose card must be drawn again
    everything: true, // draw every card again (filter change, resync)
    expanded: true, // cards are open unless toggled (see EXPAND_UP_TO)
    toggled: new Map(), // name -> open, where the user chose
  };

  // ---- small DOM helpers: text only ----

  // el builds an element with a class and children (strings become text).
  function el(tag, cls, ...children) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  function td(label, ...children) {
    const c = el("td", null, ...children);
    c.dataset.label = label;
    return c;
  }

  function pill(status, text) {
    return el("span", "pill " + (STATUSES.includes(status) ? status : "pending"), text || status);
  }

  // ---- time ----

  function serverNow() { return Date.now() + state.skew; }

  function ago(ms) {
    const s = Math.round(ms / 1000);
    if (s < 1) return "just now";
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d";
  }

  // rel is an element whose text says how long ago (or until) a time is,
  // kept current by the ticker.
  function rel(iso, mode) {
    const e = el("span", "rel");
    const t = Date.parse(iso);
    if (!iso || isNaN(t) || t <= 0) return el("span", "none", "never");
    e.dataset.at = String(t);
    e.dataset.mode = mode;
    e.title = new Date(t).toLocaleString();
    setRel(e);
    return e;
  }

  function setRel(e) {
    const d = Number(e.dataset.at) - serverNow();
    let text;
    if (e.dataset.mode === "until") {
      text = d > 0 ? "expires in " + ago(d) : "expired " + ago(-d) + " ago";
    } else {
      text = d > -1000 ? "just now" : ago(-d) + " ago";
    }
    if (e.textContent !== text) e.textContent = text;
  }

  // ---- API ----

  class AuthError extends Error {}

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
  }

  async function api(path, signal) {
    const headers = { Accept: "application/json" };
    const tok = token();
    if (tok) headers.Authorization = "Bearer " + tok;
    const resp = await fetch(path, { headers, signal, cache: "no-store", credentials: "same-origin" });
    if (resp.status === 401 || resp.status === 403) {
      throw new AuthError(tok ? "the server refused the token" : "the server needs a token to read");
    }
    if (!resp.ok) {
      let msg = "HTTP " + resp.status;
      try { const b = await resp.json(); if (b && b.error) msg += ": " + b.error; } catch { /* not JSON */ }
      throw new Error(path + ": " + msg);
    }
    const date = Date.parse(resp.headers.get("Date") || "");
    if (!isNaN(date)) state.skew = date - Date.now();
    return resp;
  }

  // ---- the registry in memory ----

  function setService(name, list) {
    if (!list || list.length === 0) {
      state.services.delete(name);
    } else {
      const m = new Map();
      for (const inst of list) m.set(inst.id, inst);
      state.services.set(name, m);
    }
    state.dirty.add(name);
  }

  async function loadAll(signal) {
    const resp = await api("/v1/instances", signal);
    const rev = Number(resp.headers.get("X-Signpost-Index") || "0");
    const list = await resp.json();
    const by = new Map();
    for (const inst of list || []) {
      if (!by.has(inst.service)) by.set(inst.service, []);
      by.get(inst.service).push(inst);
    }
    for (const name of state.services.keys()) if (!by.has(name)) setService(name, []);
    for (const [name, insts] of by) setService(name, insts);
    state.rev = rev;
    state.everything = true;
    schedule();
  }

  let nodesTimer = 0;
  async function loadNodes() {
    clearTimeout(nodesTimer);
    try {
      const resp = await api("/v1/nodes");
      const leases = await resp.json();
      state.leases = new Map((leases || []).map((l) => [l.node, l]));
      state.leasesLoaded = true;
      drawNodes();
    } catch (e) {
      if (e instanceof AuthError) needToken(e.message);
    }
    nodesTimer = setTimeout(loadNodes, NODES_EVERY_MS);
  }

  let nodesSoon = 0;
  function nodesChanged() {
    clearTimeout(nodesSoon);
    nodesSoon = setTimeout(loadNodes, 300);
  }

  // ---- the watch stream ----

  // follow reads the server-sent events of /v1/watch from rev until the
  // stream ends or stalls; it returns nothing and throws when it stops.
  async function follow(rev, ctl) {
    const resp = await api("/v1/watch?index=" + encodeURIComponent(rev), ctl.signal);
    setConn("live", "live");
    connectedAt = Date.now();
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let stall = setTimeout(() => ctl.abort(), STALL_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error("the server closed the watch stream");
        clearTimeout(stall);
        stall = setTimeout(() => ctl.abort(), STALL_MS);
        const from = Math.max(0, buf.length - 1);
        buf += value.replace(/\r\n?/g, "\n");
        let i = buf.indexOf("\n\n", from);
        while (i >= 0) {
          handleEvent(buf.slice(0, i));
          buf = buf.slice(i + 2);
          i = buf.indexOf("\n\n");
        }
        if (buf.length > MAX_EVENT_CHARS) throw new Error("a watch event larger than " + MAX_EVENT_CHARS + " characters");
      }
    } finally {
      clearTimeout(stall);
    }
  }

  function handleEvent(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue; // keepalive comment
      const c = line.indexOf(":");
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? "" : line.slice(c + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if ((event !== "service" && event !== "reset") || data.length === 0) return;
    let ev;
    try { ev = JSON.parse(data.join("\n")); } catch { return; }
    if (event === "reset") {
      // The server no longer knows every removal since our revision and
      // sends the whole state again: a service it does not name is gone.
      if (!ev || !Array.isArray(ev.services)) return;
      const live = new Set(ev.services);
      for (const name of [...state.services.keys()]) if (!live.has(name)) setService(name, []);
      if (typeof ev.index === "number" && ev.index > state.rev) state.rev = ev.index;
      schedule();
      nodesChanged();
      return;
    }
    if (!ev || typeof ev.service !== "string") return;
    setService(ev.service, ev.instances);
    if (typeof ev.index === "number" && ev.index > state.rev) state.rev = ev.index;
    schedule();
    nodesChanged();
  }

  let connectedAt = 0;
  let current = null; // the AbortController of the running connection

  // run lists everything, then follows the watch from that revision; when
  // the stream drops it waits (1 s, doubling up to 15 s) and starts over,
  // so that what changed meanwhile, removals included, is seen.
  async function run() {
    let backoff = 1000;
    for (;;) {
      const ctl = new AbortController();
      current = ctl;
      try {
        await loadConfig(ctl.signal);
        await loadAll(ctl.signal);
        hideBanner();
        loadNodes();
        await follow(state.rev, ctl);
      } catch (e) {
        if (e instanceof AuthError) {
          needToken(e.message);
          return; // the token form starts run again
        }
        if (current !== ctl) return; // replaced by a newer run
        if (connectedAt && Date.now() - connectedAt > 30000) backoff = 1000;
        connectedAt = 0;
        const wait = backoff + Math.floor(Math.random() * 250);
        backoff = Math.min(backoff * 2, 15000);
        setConn("reconnecting", "reconnecting in " + Math.ceil(wait / 1000) + "s");
        if (e && e.name !== "AbortError") showBanner("Lost the server: " + (e.message || e) + ". Reconnecting…");
        await new Promise((r) => setTimeout(r, wait));
        if (current !== ctl) return;
        setConn("connecting", "connecting…");
      } finally {
        ctl.abort();
      }
    }
  }

  function restart() {
    if (current) current.abort();
    current = null;
    run();
  }

  // ---- status and token ----

  function setConn(s, text) {
    const c = $("conn");
    c.dataset.state = s;
    $("conn-text").textContent = text;
  }

  function showBanner(msg) { const b = $("banner"); b.textContent = msg; b.hidden = false; }
  function hideBanner() { $("banner").hidden = true; }

  function needToken(msg) {
    setConn("token", "token needed");
    // The form says a token is needed; the banner says only that the one
    // given was refused.
    if (token()) showBanner(msg + ".");
    else hideBanner();
    $("token-form").hidden = false;
    $("token-input").focus();
  }

  function setupToken() {
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = $("token-input").value.trim();
      if (!v) return;
      try { sessionStorage.setItem(TOKEN_KEY, v); } catch { /* storage off: nothing to keep */ }
      $("token-input").value = "";
      $("token-form").hidden = true;
      $("forget-token").hidden = false;
      hideBanner();
      setConn("connecting", "connecting…");
      restart();
    });
    $("forget-token").hidden = !token();
    $("forget-token").addEventListener("click", () => {
      try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing kept */ }
      $("forget-token").hidden = true;
      restart();
    });
  }

  // ---- filter ----

  function setupFilter() {
    const f = $("filter");
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("q") || "";
    f.value = fromHash;
    state.filter = words(fromHash);
    f.addEventListener("input", () => {
      state.filter = words(f.value);
      const h = f.value ? "#q=" + encodeURIComponent(f.value) : " ";
      history.replaceState(null, "", h === " " ? location.pathname : h);
      state.everything = true;
      schedule();
    });
  }

  function words(s) { return s.toLowerCase().split(/\s+/).filter(Boolean); }

  function matches(hay) {
    return state.filter.every((w) => hay.includes(w));
  }

  function instanceHay(inst) {
    const parts = [inst.id, inst.service, addrPort(inst), inst.node || "by hand", inst.container || "", inst.protocol,
      (inst.health && inst.health.status) || "", (inst.health && inst.health.output) || ""];
    for (const t of inst.tags || []) parts.push(t);
    for (const [k, v] of Object.entries(inst.meta || {})) parts.push(k + "=" + v);
    return parts.join("\n").toLowerCase();
  }

  // ---- drawing ----

  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    setTimeout(() => { scheduled = false; draw(); }, 30);
  }

  function addrPort(inst) {
    const a = String(inst.address || "");
    return (a.includes(":") ? "[" + a + "]" : a) + ":" + inst.port;
  }

  function status(inst) {
    const s = inst.health && inst.health.status;
    return STATUSES.includes(s) ? s : "pending";
  }

  function sortedServices() {
    return [...state.services.keys()].sort();
  }

  function draw() {
    const names = sortedServices();
    const list = $("services");
    // Drop the cards of services that are gone.
    for (const [name, card] of state.cards) {
      if (!state.services.has(name)) { card.remove(); state.cards.delete(name); }
    }
    let shownInst = 0, allInst = 0, shownSvc = 0;
    let prev = null;
    for (const name of names) {
      let card = state.cards.get(name);
      if (!card || state.everything || state.dirty.has(name)) {
        const fresh = drawService(name);
        if (card) card.replaceWith(fresh); else list.append(fresh);
        card = fresh;
        state.cards.set(name, card);
      }
      // Keep the cards in name order.
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== card) list.insertBefore(card, want);
      prev = card;
      const n = Number(card.dataset.shown || "0");
      shownInst += n;
      allInst += state.services.get(name).size;
      if (!card.hidden) shownSvc++;
    }
    state.dirty.clear();
    state.everything = false;
    const expand = shownInst <= EXPAND_UP_TO;
    if (expand !== state.expanded) {
      state.expanded = expand;
      state.everything = true;
      draw();
      return;
    }

    const empty = $("services-empty");
    if (names.length === 0) {
      empty.textContent = "No services registered yet. Start a container with SERVICE_<port>_NAME=name, or run signpost register.";
      empty.hidden = false;
    } else if (shownSvc === 0) {
      empty.textContent = "Nothing matches the filter.";
      empty.hidden = false;
    } else {
      empty.hidden = true;
    }
    $("matches").textContent = state.filter.length
      ? shownInst + " of " + allInst + " instances in " + shownSvc + " of " + names.length + " services"
      : "";
    drawSummary();
    drawNodes();
  }

  function drawSummary() {
    const c = { passing: 0, critical: 0, pending: 0 };
    let n = 0;
    for (const m of state.services.values()) {
      for (const inst of m.values()) { c[status(inst)]++; n++; }
    }
    $("n-services").textContent = state.services.size;
    $("n-instances").textContent = n;
    for (const s of STATUSES) $("n-" + s).textContent = c[s];
    $("n-nodes").textContent = nodeRows().filter((r) => r.node !== "").length;
    document.title = (c.critical ? "(" + c.critical + " critical) " : "") + "signpost";
  }

  function drawService(name) {
    const insts = [...state.services.get(name).values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const counts = { passing: 0, critical: 0, pending: 0 };
    const protos = new Set();
    let v6 = false, v4 = false;
    for (const inst of insts) {
      counts[status(inst)]++;
      protos.add(inst.protocol || "tcp");
      if (String(inst.address).includes(":")) v6 = true; else v4 = true;
    }
    const card = el("article", "svc");
    card.dataset.service = name;
    card.dataset.health = counts.passing === insts.length ? "passing" : counts.passing === 0 ? "critical" : "degraded";

    const nameMatches = matches(name.toLowerCase());
    const shown = nameMatches ? insts : insts.filter((i) => matches(instanceHay(i)));
    card.hidden = shown.length === 0;
    card.dataset.shown = String(shown.length);
    const open = state.toggled.has(name) ? state.toggled.get(name) : state.expanded;
    card.dataset.open = String(open);

    const fold = el("button", "fold", open ? "▾" : "▸");
    fold.type = "button";
    fold.setAttribute("aria-expanded", String(open));
    fold.setAttribute("aria-label", (open ? "hide " : "show ") + "the instances of " + name);
    const toggle = () => {
      state.toggled.set(name, !open);
      state.dirty.add(name);
      schedule();
    };
    fold.addEventListener("click", toggle);
    const title = el("h3", "svc-name", name);
    title.addEventListener("click", toggle);
    const head = el("header", "svc-head", fold, title);
    for (const p of [...protos].sort()) head.append(el("span", "proto", p));
    const cs = el("div", "counts", el("span", "total", insts.length + (insts.length === 1 ? " instance" : " instances")));
    for (const s of STATUSES) {
      const p = pill(s, counts[s] + " " + s);
      p.dataset.count = s;
      if (!counts[s]) p.classList.add("zero");
      cs.append(p);
    }
    head.append(cs);
    card.append(head);

    const bar = el("div", "bar");
    for (const s of STATUSES) {
      if (!counts[s]) continue;
      const seg = el("span", s);
      seg.style.flexGrow = String(counts[s]);
      bar.append(seg);
    }
    card.append(bar);

    if (!open) {
      // Folded: the header and the bar; the dig lines and rows when opened.
      fold.title = shown.length === insts.length ? "show the instances" : "show the " + shown.length + " matching instances";
      return card;
    }
    const dig = el("div", "dig");
    for (const p of [...protos].sort()) dig.append(digLine("_" + name + "._" + p + "." + zone(), "SRV"));
    if (v4) dig.append(digLine(name + "." + zone(), "A"));
    if (v6) dig.append(digLine(name + "." + zone(), "AAAA"));
    card.append(dig);

    const wrap = el("div", "table-wrap");
    const table = el("table", "instances");
    table.append(el("thead", null, el("tr", null,
      el("th", null, "Health"), el("th", null, "Instance"), el("th", null, "Address"),
      el("th", null, "Node / container"), el("th", null, "Tags & metadata"), el("th", null, "Last check"))));
    const body = el("tbody");
    for (const inst of shown.slice(0, MAX_ROWS)) body.append(drawInstance(inst));
    table.append(body);
    wrap.append(table);
    card.append(wrap);
    if (shown.length > MAX_ROWS) {
      card.append(el("div", "more", "Showing " + MAX_ROWS + " of " + shown.length + " instances: type in the filter to narrow."));
    }
    return card;
  }

  function drawInstance(inst) {
    const s = status(inst);
    const tr = el("tr", "inst");
    tr.dataset.id = inst.id;
    tr.dataset.status = s;
    const h = inst.health || {};

    tr.append(td("Health", pill(s)));

    const idCell = td("Instance", el("div", "id", inst.id));
    const w = [];
    if (inst.weight !== undefined && inst.weight !== 1) w.push("weight " + inst.weight);
    if (inst.priority) w.push("priority " + inst.priority);
    if (w.length) idCell.append(el("div", "sub", w.join(" · ")));
    tr.append(idCell);

    tr.append(td("Address", el("div", "addr", addrPort(inst)), el("div", "sub", inst.protocol || "tcp")));

    const meta = inst.meta || {};
    const nodeCell = td("Node", el("div", "node", inst.node || "by hand"));
    // container: the container's name, as the agent gives it (older
    // servers: none); the id only reaches backends that keep it.
    const cname = inst.container || meta["signpost.container-name"];
    const cid = meta["signpost.container-id"];
    if (cname) nodeCell.append(el("div", "sub", "container " + cname));
    if (cid) {
      const c = el("div", "sub mono", "id " + cid.slice(0, 12));
      c.title = cid;
      nodeCell.append(c);
    }
    tr.append(nodeCell);

    const chips = el("div", "chips");
    for (const t of inst.tags || []) chips.append(el("span", "chip tag", t));
    for (const k of Object.keys(meta).sort()) {
      if (k === "signpost.container-id" || k === "signpost.container-name") continue;
      chips.append(el("span", k.startsWith("signpost.") ? "chip internal" : "chip", k + "=" + meta[k]));
    }
    tr.append(td("Tags", chips.childNodes.length ? chips : el("span", "none", "—")));

    const check = td("Check");
    check.append(h.checked_at ? rel(h.checked_at, "ago") : el("span", "none", "no check reported"));
    if (h.output) {
      const o = el("div", "output", h.output);
      o.title = h.output;
      check.append(o);
    }
    tr.append(check);
    return tr;
  }

  // ---- DNS lines ----

  function zone() { return state.config.zone || "servicediscovery.internal"; }

  function dnsServer() {
    let host = state.config.dns_host;
    if (!host) host = location.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1";
    const port = Number(state.config.dns_port) || 53;
    return "@" + host + (port === 53 ? "" : " -p " + port);
  }

  function digLine(name, type) {
    const text = "dig " + dnsServer() + " " + name + " " + type;
    const code = el("code", "dig-cmd", text);
    const btn = el("button", "copy", "Copy");
    btn.type = "button";
    btn.setAttribute("aria-label", "copy: " + text);
    btn.addEventListener("click", () => copy(text, code, btn));
    return el("div", "dig-line", code, btn);
  }

  async function copy(text, code, btn) {
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        ok = true;
      }
    } catch { /* fall back to selecting */ }
    if (!ok) {
      const r = document.createRange();
      r.selectNodeContents(code);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(r);
    }
    btn.textContent = ok ? "Copied" : "Selected: press Ctrl+C";
    setTimeout(() => { btn.textContent = "Copy"; }, 1500);
  }

  // ---- nodes ----

  // nodeRows joins the leases with the nodes instances name, so that a node
  // whose instances outlive its lease shows, and hand registrations too.
  function nodeRows() {
    const rows = new Map();
    const row = (node) => {
      if (!rows.has(node)) rows.set(node, { node, lease: state.leases.get(node), counts: { passing: 0, critical: 0, pending: 0 }, services: new Set() });
      return rows.get(node);
    };
    for (const node of state.leases.keys()) row(node);
    for (const [name, m] of state.services) {
      for (const inst of m.values()) {
        const r = row(inst.node || "");
        r.counts[status(inst)]++;
        r.services.add(name);
      }
    }
    return [...rows.values()].sort((a, b) => (a.node === "" ? 1 : b.node === "" ? -1 : a.node < b.node ? -1 : 1));
  }

  function drawNodes() {
    const body = $("nodes-body");
    const rows = nodeRows().filter((r) => matches([r.node || "by hand", ...r.services,
      ...STATUSES.filter((s) => r.counts[s])].join("\n").toLowerCase()));
    const trs = rows.map((r) => {
      const tr = el("tr");
      tr.dataset.node = r.node;
      const name = td("Node", r.node || "registered by hand");
      name.className = "id";
      tr.append(name);
      const lease = td("Lease");
      if (r.node === "") {
        lease.append(el("span", "lease hand", "no lease: stays until deregistered"));
      } else if (r.lease) {
        const expires = Date.parse(r.lease.expires);
        const live = expires > serverNow();
        lease.append(el("span", "lease " + (live ? "live" : "expired"), live ? "live" : "expired"), " ");
        lease.append(el("span", "sub", rel(r.lease.expires, "until"),
          r.lease.ttl ? " · ttl " + Math.round(r.lease.ttl / 1e9) + "s" : ""));
        tr.dataset.lease = live ? "live" : "expired";
      } else if (state.leasesLoaded) {
        lease.append(el("span", "lease missing", "no live lease"));
        tr.dataset.lease = "missing";
      } else {
        lease.append(el("span", "none", "…"));
      }
      tr.append(lease);
      const counts = td("Instances");
      counts.className = "chips";
      let any = false;
      for (const s of STATUSES) {
        if (r.counts[s]) { counts.append(pill(s, r.counts[s] + " " + s)); any = true; }
      }
      if (!any) counts.append(el("span", "none", "none"));
      tr.append(counts);
      const svcs = td("Services", [...r.services].sort().join(", ") || "—");
      svcs.className = "sub";
      tr.append(svcs);
      return tr;
    });
    body.replaceChildren(...trs);
    $("nodes-empty").hidden = rows.length !== 0;
    $("nodes").hidden = rows.length === 0;
  }

  // ---- start ----

  function tick() {
    for (const e of document.querySelectorAll(".rel[data-at]")) setRel(e);
  }

  let configured = false;

  // loadConfig reads config.json (zone and DNS address) once.
  async function loadConfig(signal) {
    if (configured) return;
    const resp = await api("config.json", signal);
    const c = await resp.json();
    if (c && typeof c === "object") Object.assign(state.config, c);
    configured = true;
    $("zone").textContent = zone();
    const all = $("dns-all");
    all.append(digLine("_services._dns-sd._udp." + zone(), "PTR"));
    all.hidden = false;
  }

  function start() {
    setupToken();
    setupFilter();
    setInterval(tick, 1000);
    run();
  }

  start();
})();
