// Connection troubles in words: is the server reachable, does it accept this page, why a session
// closed, and when to try again (exponential backoff).

// A failure to show; `retry`: reconnecting later may help (the server may come back).
export class ConnectError extends Error {
  constructor(message, retry = false) {
    super(message);
    this.retry = retry;
  }
}

// What a server's /healthz says to this page: {status: "ok", health} | {status: "token"} |
// {status: "origin"} | {status: "unreachable"}. A server that answers but not to a CORS request
// from this page refuses its Origin (it refuses the WebSocket with HTTP 403 too, which a page
// cannot read): an opaque no-cors request tells that apart from a server that is down.
export async function probeServer(healthUrl) {
  try {
    const health = await (await fetch(healthUrl, { cache: "no-store" })).json();
    return health.pipelines ? { status: "ok", health } : { status: "token", health };
  } catch (err) {
    try {
      await fetch(healthUrl, { mode: "no-cors", cache: "no-store" });
      return { status: "origin" };
    } catch (err2) {
      return { status: "unreachable" };
    }
  }
}

// The words for a probe that did not say "ok".
export function probeProblem(status, serverUrl, hasToken) {
  const origin = location.origin;
  if (status === "origin") {
    return new ConnectError(`The server at ${serverUrl} refused this page's origin (${origin}). Start it with ` +
      `\`voice serve --allow-origin ${origin}\`, or open the page that server itself serves.`);
  }
  if (status === "token") {
    return new ConnectError(hasToken
      ? `The server at ${serverUrl} refused the token in this page's address.`
      : `The server at ${serverUrl} needs a token: open this page as ${location.pathname}?token=YOUR_TOKEN.`);
  }
  return new ConnectError(`Cannot reach the server at ${serverUrl}: is \`voice serve\` running?`, true);
}

// Why a live session closed, in words; `retry`: worth reconnecting by itself.
export function closeProblem(code, reason) {
  switch (code) {
    case 1001: return { text: "The server shut down.", retry: true };
    case 1006: return { text: "The connection to the server was lost.", retry: true };
    case 1011: return { text: "The server hit an internal error and ended the session.", retry: true };
    case 1013: return { text: "The server is busy (full or overloaded).", retry: true };
    case 1008:
      if (reason === "session_too_long") return { text: "The session reached the server's time limit.", retry: true };
      return { text: `The server ended the session (${reason || "policy"}).`, retry: false };
    case 1002: case 1007:
      return { text: `The server refused what this page sent (${reason || "protocol error"}).`, retry: false };
    default: return { text: "The connection closed unexpectedly.", retry: true };
  }
}

// Delays before reconnect attempts: 1 s, 2 s, 4 s, ... at most `maxMs`.
export class Backoff {
  constructor(firstMs = 1000, maxMs = 15000) {
    this.firstMs = firstMs;
    this.maxMs = maxMs;
    this.reset();
  }

  reset() { this.attempt = 0; }

  next() {
    const ms = Math.min(this.maxMs, this.firstMs * 2 ** this.attempt);
    this.attempt += 1;
    return ms;
  }
}
