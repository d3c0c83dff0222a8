// Config that arrives over the network may set keys, users and commands: root on the node.
// So a config URL must be https://, or plain http:// with a pin (`#sha256=<64 hex>`, checked
// over the body), or plain http:// allowed by kiln.allow_insecure_http in the image's own
// config. Bodies are read up to a size limit. The policy is pure; fetchLimited does the I/O.
import { nodeCrypto } from '../lazy.ts';

/** The largest config source kiln reads (a file, user-data, a fetched config). */
export const MAX_SOURCE_BYTES = 1 << 20;

export interface PinnedUrl {
  /** the URL without the pin (what is fetched) */
  url: string;
  /** lower-case hex SHA-256 of the body, if the URL carries `#sha256=` */
  sha256?: string;
}

/** Splits `URL#sha256=HEX` into the URL and the pin. A malformed pin is kept in `bad`. */
export function splitPin(url: string): PinnedUrl & { bad?: string } {
  const i = url.indexOf('#');
  if (i < 0) return { url };
  const frag = url.slice(i + 1);
  const m = /^sha256=([0-9a-fA-F]{64})$/.exec(frag);
  if (!m) return { url: url.slice(0, i), bad: frag.slice(0, 80) };
  return { url: url.slice(0, i), sha256: m[1].toLowerCase() };
}

/**
 * Why `url` may not be used to fetch config (a message and its fix), or undefined when it may.
 * `pinnable` is false where one URL serves many bodies (key services); `fileOk` allows file://.
 */
export function urlProblem(url: string, o: { allowInsecureHttp: boolean; pinnable?: boolean; fileOk?: boolean }): { message: string; fix: string } | undefined {
  const pinnable = o.pinnable ?? true;
  const p = splitPin(url);
  if (p.bad !== undefined) return { message: `'#${p.bad}' is not a pin`, fix: "write #sha256= and the 64 hex digits of the file's SHA-256" };
  if (p.sha256 && !pinnable) return { message: 'a pin (#sha256=) cannot apply here: the URL serves many files', fix: 'use https://' };
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(p.url)?.[1]?.toLowerCase();
  if (scheme === 'https') return undefined;
  if (scheme === 'file' && o.fileOk) return undefined;
  if (scheme === 'http') {
    if (p.sha256 || o.allowInsecureHttp) return undefined;
    return {
      message: 'plain http:// lets anyone on the network path give this node its config (root access)',
      fix: `use https://, ${pinnable ? 'or pin the file with #sha256=<its SHA-256 in hex> at the end of the URL, ' : ''}or set kiln.allow_insecure_http: true in the image's own config (/usr/lib/kiln/config.yaml, baked in by kiln build)`,
    };
  }
  return { message: `'${clip(url, 80)}' is not ${o.fileOk ? 'an https, http or file' : 'an https or http'} URL`, fix: `use https://${o.fileOk ? ' or file://' : ''}` };
}

/** urlProblem as one line, starting with `key`. */
export function urlRefusal(url: string, key: string, o: { allowInsecureHttp: boolean; pinnable?: boolean; fileOk?: boolean }): string | undefined {
  const p = urlProblem(url, o);
  return p && `${key}: ${p.message}; ${p.fix}`;
}

/** A value for a message: at most `max` characters, one line. */
export function clip(s: string, max = 80): string {
  const one = s.replace(/[\r\n\t]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : '\\t'));
  return one.length > max ? `${one.slice(0, max)}... (${s.length} characters)` : one;
}

export function sha256Hex(b: Uint8Array): string {
  return nodeCrypto().createHash('sha256').update(b).digest('hex');
}

export interface FetchOptions {
  allowInsecureHttp: boolean;
  /** the key named in messages, e.g. kiln.config_url */
  key: string;
  timeoutMs?: number;
  maxBytes?: number;
  headers?: Record<string, string>;
  fetch?: typeof fetch;
}

/**
 * Fetches a config URL under the policy above: refuses what urlProblem refuses, refuses a
 * redirect to plain http that the policy would not allow, stops reading past maxBytes, and
 * checks the pin. `missing` is set when the server is unreachable or answers non-2xx (the
 * caller decides whether that matters); `problem` for what must not be used. Both are
 * messages without the URL.
 */
export async function fetchLimited(url: string, o: FetchOptions): Promise<{ body?: Buffer; problem?: string; missing?: string }> {
  const refused = urlProblem(url, { allowInsecureHttp: o.allowInsecureHttp });
  if (refused) return { problem: `${refused.message}; ${refused.fix}` };
  const { url: plain, sha256 } = splitPin(url);
  const max = o.maxBytes ?? MAX_SOURCE_BYTES;
  const f = o.fetch ?? fetch;
  let res: Response;
  try {
    res = await f(plain, { signal: AbortSignal.timeout(o.timeoutMs ?? 10_000), headers: o.headers, redirect: 'follow' });
  } catch (e) {
    const err = e as Error;
    return { missing: err.name === 'TimeoutError' ? 'not reachable (timed out)' : `not reachable (${clip(String((err.cause as Error)?.message ?? err.message), 120)})` };
  }
  const cancel = () => res.body?.cancel().catch(() => undefined);
  // https:// redirected to http:// would undo the check above; a pinned body is checked anyway.
  if (!sha256 && !o.allowInsecureHttp && res.url && /^http:/i.test(res.url)) { await cancel(); return { problem: `redirected to plain http (${clip(res.url)}); refused` }; }
  if (!res.ok) { await cancel(); return { missing: `answered ${res.status}` }; }
  const tooBig = `more than the limit of ${max} bytes`;
  if (Number(res.headers.get('content-length')) > max) { await cancel(); return { problem: tooBig }; }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    if (res.body) {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        size += chunk.length;
        if (size > max) { await cancel(); return { problem: tooBig }; }
        chunks.push(Buffer.from(chunk));
      }
    }
  } catch (e) {
    return { missing: `the transfer failed (${clip((e as Error).message, 120)})` };
  }
  const body = Buffer.concat(chunks);
  if (sha256 && sha256Hex(body) !== sha256) return { problem: `its SHA-256 is ${sha256Hex(body)}, not the pinned ${sha256}; give the file's SHA-256 in the pin, or fix the file` };
  return { body };
}
