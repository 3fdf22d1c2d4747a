// Talking to central: every call carries the bearer token the user typed
// in (kept in sessionStorage: gone when the tab closes). A token is opaque
// here, so a tenant-scoped token later logs in the same way; what it may
// see is central's decision, and a refusal shows as an error.

const TOKEN_KEY = "strata.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An API error with central's code and message. */
export class ApiError extends Error {
  constructor(status, code, message, fields) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields || [];
  }
}

/** Calls the API; resolves the parsed JSON body or throws an ApiError. */
export async function api(path, { method = "GET", body, type, signal } = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = type || "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined || body instanceof Blob || body instanceof ArrayBuffer || typeof body === "string"
        ? body : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "unreachable", "central did not answer (is it running?)");
  }
  let doc = null;
  try { doc = await resp.json(); } catch { /* not JSON: described below */ }
  if (!resp.ok) {
    const err = doc && doc.error;
    throw new ApiError(resp.status, err?.code || `http-${resp.status}`,
      err?.message || `central answered ${resp.status} ${resp.statusText}`, err?.fields);
  }
  return doc;
}

/** Parses a Server-Sent Events byte stream; calls onEvent(type, data). */
async function readSse(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let type = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (data.length) onEvent(type, data.join("\n"));
        type = "message";
        data = [];
      } else if (line.startsWith(":")) {
        // keep-alive comment
      } else {
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        let v = i < 0 ? "" : line.slice(i + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "event") type = v;
        else if (field === "data") data.push(v);
      }
    }
  }
}

/**
 * Subscribes to `GET /api/v1/stream` with the token in the Authorization
 * header (EventSource cannot send one, and a token in the URL would end up
 * in logs). Reconnects by itself with exponential backoff; `onStatus`
 * hears "connecting", "live", "reconnecting", "reconnected" and
 * "unauthorized" (a refused token: no retry). Returns a stop function.
 */
export function subscribe(onEvent, onStatus) {
  const ctl = new AbortController();
  let attempt = 0;
  let everLive = false;
  (async () => {
    while (!ctl.signal.aborted) {
      onStatus(everLive ? "reconnecting" : "connecting", attempt);
      try {
        const resp = await fetch("/api/v1/stream", {
          headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" },
          signal: ctl.signal,
          cache: "no-store",
        });
        if (resp.status === 401 || resp.status === 403) {
          let msg = `central refused the token (${resp.status})`;
          try { msg = (await resp.json()).error.message || msg; } catch { /* keep msg */ }
          onStatus("unauthorized", 0, msg);
          return;
        }
        if (!resp.ok || !resp.body) throw new Error(`stream answered ${resp.status}`);
        let first = true;
        await readSse(resp.body, (type, data) => {
          let doc;
          try { doc = JSON.parse(data); } catch { return; }
          if (first) {
            first = false;
            attempt = 0;
            onStatus(everLive ? "reconnected" : "live", 0);
            everLive = true;
          }
          onEvent(type, doc);
        });
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      if (ctl.signal.aborted) return;
      // 0.5 s, 1 s, 2 s … at most 10 s, with jitter so many consoles do
      // not reconnect in step after central restarts.
      attempt++;
      onStatus("reconnecting", attempt);
      const wait = Math.min(10_000, 500 * 2 ** (attempt - 1)) * (0.75 + Math.random() / 2);
      await new Promise((r) => setTimeout(r, wait));
    }
  })();
  return () => ctl.abort();
}
