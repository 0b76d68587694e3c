// JSON calls to the Skyloop API: the page's CSRF token, and its one error shape
// ({"error": {"code", "message"}}, labeler/api/errors.py) turned into an ApiError.

export class ApiError extends Error {
  constructor(message, { status = 0, code = "network" } = {}) {
    super(message);
    this.status = status; // 0: the server was not reached
    this.code = code;
  }

  // Worth retrying: no answer, a server error, or "slow down". A 4xx is the server's final word.
  get transient() {
    return this.status === 0 || this.status >= 500 || this.status === 408 || this.status === 429;
  }
}

function csrfToken() {
  return document.querySelector("[name=csrfmiddlewaretoken]")?.value ?? "";
}

export async function api(url, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json", "X-CSRFToken": csrfToken() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError("the server could not be reached");
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    // A proxy's HTML error page, or a reply cut short: judged by its status below.
  }
  if (!res.ok) {
    const message = data?.error?.message ?? `the server answered ${res.status} ${res.statusText}`.trim();
    throw new ApiError(message, { status: res.status, code: data?.error?.code ?? `http_${res.status}` });
  }
  if (data === null) throw new ApiError("the server's reply was cut short", { status: 502, code: "bad_reply" });
  return data;
}

// crypto.randomUUID exists only in secure contexts; plain-http deployments still need ids.
export function uuid4() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
