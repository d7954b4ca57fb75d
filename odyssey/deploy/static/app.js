// Shared helpers for the Odyssey UI: the API key (kept in localStorage), authenticated fetch,
// OpenAI-style streaming, models list and feedback. Plain JS, no build step, no dependencies.
const Ody = {
  key() { return localStorage.getItem("odyssey-key") || ""; },
  headers() { return { "Authorization": "Bearer " + Ody.key(), "Content-Type": "application/json" }; },
  async api(path, opts = {}) {
    const r = await fetch(path, { ...opts, headers: { ...Ody.headers(), ...(opts.headers || {}) } });
    const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
    if (!r.ok) throw new Error((body && body.error && body.error.message) || ("HTTP " + r.status));
    return body;
  },
  async models() { return (await Ody.api("/v1/models")).data.map(m => m.id); },
  // Stream a chat completion; onDelta(text) per piece; resolves to {id, text, finish_reason, usage}.
  async chat(body, onDelta) {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: Ody.headers(),
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }) });
    if (!r.ok) { const e = await r.json().catch(() => ({})); throw new Error(e.error ? e.error.message : "HTTP " + r.status); }
    const out = { id: r.headers.get("x-request-id"), text: "", finish_reason: null, usage: null };
    const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
    for (;;) {
      const { value, done } = await reader.read(); if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, i).trim(); buf = buf.slice(i + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim(); if (data === "[DONE]") continue;
        const ev = JSON.parse(data);
        if (ev.error) throw new Error(ev.error.message);
        if (ev.usage) out.usage = ev.usage;
        for (const c of ev.choices || []) {
          if (c.delta && c.delta.content) { out.text += c.delta.content; onDelta && onDelta(c.delta.content, out.text); }
          if (c.finish_reason) out.finish_reason = c.finish_reason;
        }
      }
    }
    return out;
  },
  feedback(body) { return Ody.api("/v1/feedback", { method: "POST", body: JSON.stringify(body) }); },
  el(tag, attrs = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) { if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v); }
    for (const k of kids) e.append(k);
    return e;
  },
  header(active) {
    const h = document.querySelector("header");
    const link = (href, id, text) => `<a href="${href}" class="${active === id ? "active" : ""}">${text}</a>`;
    h.innerHTML = `<a class="brand" href="/ui/index.html">Odyssey</a>
      <nav>${link("/ui/index.html", "play", "Playground")}${link("/ui/compare.html", "compare", "Compare")}${link("/ui/dashboard.html", "dash", "Dashboard")}</nav>
      <form class="key" id="keyform"><label for="apikey">API key</label><input id="apikey" type="password" placeholder="ody-..." autocomplete="off"><button id="savekey" type="submit" class="secondary">Use</button></form>`;
    const input = h.querySelector("#apikey"); input.value = Ody.key();
    h.querySelector("#keyform").addEventListener("submit", e => {
      e.preventDefault(); localStorage.setItem("odyssey-key", input.value.trim()); location.reload(); });
    if (!Ody.key()) Ody.keyNotice();
  },
  // A card at the top of the page saying why nothing is listed: no key yet, or the key was refused.
  keyNotice(problem) {
    let box = document.getElementById("keynotice");
    if (!box) { box = Ody.el("div", { id: "keynotice", class: "card notice", role: "status" }); document.querySelector("main").prepend(box); }
    box.innerHTML = `<strong>${problem ? "The API key was refused" : "An API key is needed"}</strong>
      ${problem ? `(${Ody.escape(problem)}).` : "to list the served models, chat, compare and see the board."}
      Create one where the server runs with <code>odyssey keys create --name me</code> (it is printed once),
      paste it into the <label for="apikey">API key</label> field above and press <em>Use</em>.`;
    return box;
  },
  // Show an API error: a refused key gets the key notice, anything else the caller's status line.
  apiError(e, status) {
    if (/key|unauthori[sz]ed|401|403/i.test(e.message)) Ody.keyNotice(e.message);
    if (status) status(e.message, true);
  },
  // Fill a <select> with the served models; with none (no key yet), one disabled line that says why.
  fillModels(select, models) {
    select.innerHTML = "";
    select.disabled = !models.length;
    if (!models.length) { select.append(Ody.el("option", { value: "" }, Ody.key() ? "(no model served)" : "(needs an API key)")); return; }
    for (const m of models) select.append(Ody.el("option", { value: m }, m));
  },
  // Text that may break after / : - _ . @ (names, model paths) instead of in the middle of a word.
  breakable(text) {
    const f = document.createDocumentFragment();
    for (const part of String(text).split(/(?<=[\/:_\-.@])/)) { if (f.childNodes.length) f.append(document.createElement("wbr")); f.append(part); }
    return f;
  },
  escape(s) { return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]); },
  // Numbers for people: 134515008 -> "134.5 M", 0.23456 -> "0.235", 1234.5 -> "1,235", integers stay integers.
  num(v) {
    if (v == null || v === "") return "–";
    if (typeof v !== "number" || !isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + " B";
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e8 ? 1 : 2) + " M";
    if (a >= 1000) return Math.round(v).toLocaleString("en-US");
    if (Number.isInteger(v)) return String(v);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 1) return v.toFixed(2);
    return v.toFixed(3);
  },
  // A parameter count: 134515008 -> "134.5 M", 4500000000 -> "4.5 B", 52000 -> "52 k".
  params(v) {
    if (typeof v !== "number" || !isFinite(v)) return Ody.num(v);
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + " B";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + " M";
    if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + " k";
    return String(Math.round(v));
  },
  metric(name, v) { return name === "n_params" || name.endsWith("_params") ? Ody.params(v) : Ody.num(v); },
  // Short column headings; the full metric name goes in the heading's tooltip.
  metricLabel(name) {
    return ({ n_params: "params", p95_latency_ms: "p95 ms", p50_latency_ms: "p50 ms", tokens_per_s: "tok/s",
              examples_per_s: "ex/s", memory_gb: "mem GB", mean_new_tokens: "new tok" })[name] || name;
  },
  // What a candidate is, for people: the store's stage "select" is a base model scored zero-shot
  // (or a model pretrained here); the store itself is left as it is.
  stageLabel(c) {
    if (c.stage !== "select") return c.stage;
    return (/^(pretrained|continued)-/.test(c.name) || (c.metrics && "val_loss" in c.metrics)) ? "pretrained" : "zero-shot";
  },
};
