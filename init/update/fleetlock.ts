// FleetLock client: before rebooting into a new slot a node takes a slot in its group's
// reboot semaphore (POST /v1/pre-reboot), and gives it back once it is healthy again
// (POST /v1/steady-state). The same protocol Zincati speaks, so existing servers (e.g.
// airlock) work. Every call has a deadline: a hung lock server must not hang the updater.

export const DEFAULT_GROUP = 'default';
export const DEFAULT_TIMEOUT_MS = 10_000;

export interface FleetLockOptions {
  /** Server base URL, e.g. http://lock.example:3333 (a path prefix is kept). */
  base: string;
  /** This node's id; a stable, app-specific id rather than the raw machine-id. */
  id: string;
  group?: string;
  timeoutMs?: number;
}

export type FleetLockErrorCode = 'bad-url' | 'timeout' | 'network' | 'refused';

export class FleetLockError extends Error {
  constructor(
    message: string,
    readonly code: FleetLockErrorCode,
    readonly status?: number,
    /** The server's error kind and value, when it sent the protocol's JSON error body. */
    readonly kind?: string,
    readonly value?: string,
  ) {
    super(message);
    this.name = 'FleetLockError';
  }
}

function endpoint(base: string, op: 'pre-reboot' | 'steady-state'): URL {
  let u: URL;
  try { u = new URL(base); } catch { throw new FleetLockError(`fleetlock: '${base}' is not a URL`, 'bad-url'); }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new FleetLockError(`fleetlock: '${base}' is not http(s)`, 'bad-url');
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return new URL(`v1/${op}`, u);
}

async function call(op: 'pre-reboot' | 'steady-state', opts: FleetLockOptions): Promise<void> {
  const url = endpoint(opts.base, op);
  const group = opts.group ?? DEFAULT_GROUP;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let res: Response;
  let text: string;
  try {
    // One deadline for the whole exchange: headers and body.
    const signal = AbortSignal.timeout(timeoutMs);
    res = await fetch(url, {
      method: 'POST',
      headers: { 'fleet-lock-protocol': 'true', 'content-type': 'application/json' },
      body: JSON.stringify({ client_params: { id: opts.id, group } }),
      signal,
      redirect: 'error',
    });
    text = await res.text();
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    if (err.name === 'TimeoutError' || err.name === 'AbortError') {
      throw new FleetLockError(`fleetlock ${op}: no answer from ${url.origin} within ${timeoutMs} ms`, 'timeout');
    }
    throw new FleetLockError(`fleetlock ${op}: cannot reach ${url.origin}: ${err.cause?.code ?? err.cause?.message ?? err.message}`, 'network');
  }
  if (res.status === 200) return;
  let kind: string | undefined, value: string | undefined;
  try {
    const body = JSON.parse(text);
    if (typeof body?.kind === 'string') kind = body.kind;
    if (typeof body?.value === 'string') value = body.value;
  } catch { /* not the protocol's error body; report the status and text */ }
  const detail = kind ? `${kind}${value ? `: ${value}` : ''}` : text.trim().slice(0, 200) || res.statusText;
  const what = op === 'pre-reboot' ? `lock not granted for ${opts.id} in group ${group}` : `lock not released for ${opts.id} in group ${group}`;
  throw new FleetLockError(`fleetlock ${op}: ${what} (HTTP ${res.status}: ${detail})`, 'refused', res.status, kind, value);
}

/** Takes this node's reboot slot; resolves when granted, throws FleetLockError otherwise (retry later). */
export function preReboot(opts: FleetLockOptions): Promise<void> { return call('pre-reboot', opts); }

/** Releases this node's reboot slot; safe to call when it holds none. */
export function steadyState(opts: FleetLockOptions): Promise<void> { return call('steady-state', opts); }
