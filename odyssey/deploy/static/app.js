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
    h.innerHTML = `<span class="brand">Odyssey</span>
      <a href="/ui/index.html" class="${active === "play" ? "active" : ""}">Playground</a>
      <a href="/ui/compare.html" class="${active === "compare" ? "active" : ""}">Compare</a>
      <a href="/ui/dashboard.html" class="${active === "dash" ? "active" : ""}">Dashboard</a>
      <span class="key"><label for="apikey">API key</label><input id="apikey" type="password" placeholder="ody-..."><button id="savekey" class="secondary">Use</button></span>`;
    const input = h.querySelector("#apikey"); input.value = Ody.key();
    h.querySelector("#savekey").addEventListener("click", () => { localStorage.setItem("odyssey-key", input.value.trim()); location.reload(); });
  },
};
