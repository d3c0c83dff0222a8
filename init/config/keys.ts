// Expands github:USER / gitlab:USER / launchpad:USER entries into the public keys those
// services publish. Each user's keys are cached on the data partition, so a node that boots
// without network (or while the service is down) still lets its owners in.
import { readFile as readFileCb } from 'node:fs';
import { promisify } from 'node:util';
import { basename, dirname, join } from 'node:path';
import { closeDir, openDir, replaceFile, syncDir } from '../safefs.ts';
import { clip, fetchLimited, urlProblem } from './url.ts';

// node:fs's callbacks, not node:fs/promises: that module (and the readline it loads) would be
// loaded at boot for these reads alone.
const readFile = promisify(readFileCb);

export interface KeyOptions {
  githubUrl?: string;
  gitlabUrl?: string;
  launchpadUrl?: string;
  cacheDir: string;
  fetch?: typeof fetch;
  /** per request; default 10 s */
  timeoutMs?: number;
  /** extra attempts after a network error or a 5xx answer; default 2 */
  retries?: number;
  /** pause before each retry; default 1 s */
  retryDelayMs?: number;
  /** plain http:// service URLs are allowed (kiln.allow_insecure_http of the image's config);
   *  default false: the keys they serve are root logins, so https only */
  allowInsecureHttp?: boolean;
}

/** The largest key list read from a service. */
export const MAX_KEYS_BYTES = 256 * 1024;

const SERVICES = {
  github: (o: KeyOptions, u: string) => `${o.githubUrl ?? 'https://github.com'}/${u}.keys`,
  gitlab: (o: KeyOptions, u: string) => `${o.gitlabUrl ?? 'https://gitlab.com'}/${u}.keys`,
  launchpad: (o: KeyOptions, u: string) => `${o.launchpadUrl ?? 'https://launchpad.net'}/~${u}/+sshkeys`,
} as const;
type Service = keyof typeof SERVICES;

// A line that is a public key (what the services serve); anything else, e.g. a captive
// portal's HTML page, means the answer is not a key list.
const KEY_LINE = /^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3}( .*)?$/;
const USER = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

class Fatal extends Error {}

/** Plain keys are kept as they are; service users are fetched (or read from the cache). The
 *  result has no duplicates. Problems are readable one-line strings; none of them is fatal. */
export async function expandAuthorizedKeys(entries: string[], o: KeyOptions): Promise<{ keys: string[]; problems: string[] }> {
  const keys: string[] = [];
  const problems: string[] = [];
  const add = (k: string) => { if (!keys.includes(k)) keys.push(k); };
  for (const entry of entries) {
    const m = /^(github|gitlab|launchpad):(.*)$/.exec(entry.trim());
    if (!m) { if (entry.trim()) add(entry.trim()); continue; }
    const service = m[1] as Service;
    const user = m[2];
    if (!USER.test(user)) { problems.push(`${clip(entry)}: '${clip(user)}' is not a valid user name`); continue; }
    const url = SERVICES[service](o, user);
    const refused = urlProblem(url, { allowInsecureHttp: o.allowInsecureHttp ?? false, pinnable: false });
    const cacheFile = join(o.cacheDir, `${service}-${user}.keys`);
    let fetched: string[] | undefined;
    let failure: string;
    if (refused) failure = `${url}: ${refused.message} (${refused.fix})`;
    else {
      try {
        fetched = await fetchKeys(url, o);
        failure = '';
      } catch (e) {
        failure = (e as Error).message;
      }
    }
    if (fetched) {
      if (!fetched.length) problems.push(`${entry}: the user has no public keys on ${service}`);
      await store(cacheFile, fetched).catch((e) => problems.push(`${entry}: cannot cache the keys in ${cacheFile}: ${(e as Error).message}`));
      fetched.forEach(add);
      continue;
    }
    const cached = await readFile(cacheFile, 'utf8').then((t) => t.split('\n').filter(Boolean), () => undefined);
    if (cached) {
      problems.push(`${entry}: ${failure}; using the ${cached.length} cached key(s)`);
      cached.forEach(add);
    } else {
      problems.push(`${entry}: ${failure}; no cached keys either`);
    }
  }
  return { keys, problems };
}

async function fetchKeys(url: string, o: KeyOptions): Promise<string[]> {
  const timeoutMs = o.timeoutMs ?? 10_000;
  const retries = o.retries ?? 2;
  let last = '';
  for (let attempt = 0; attempt <= retries; attempt++) {
    if (attempt) await new Promise((r) => setTimeout(r, o.retryDelayMs ?? 1000));
    // fetchLimited: at most MAX_KEYS_BYTES, and no redirect from https to plain http
    const r = await fetchLimited(url, { key: 'key service', allowInsecureHttp: o.allowInsecureHttp ?? false, fetch: o.fetch, timeoutMs, maxBytes: MAX_KEYS_BYTES });
    if (r.problem) throw new Fatal(`${url}: ${r.problem}`);
    if (r.missing) {
      const status = /^answered (\d+)$/.exec(r.missing)?.[1];
      if (status && Number(status) < 500) throw new Fatal(status === '404' ? `${url} answered 404: no such user` : `${url} answered ${status}`);
      last = status ? `${url} answered ${status}` : r.missing === 'not reachable (timed out)' ? `${url} did not answer within ${timeoutMs} ms` : `cannot reach ${url}: ${r.missing.replace(/^not reachable \((.*)\)$/, '$1')}`;
      continue;
    }
    const lines = r.body!.toString('utf8').split('\n').map((l) => l.trim()).filter(Boolean);
    if (!lines.every((l) => KEY_LINE.test(l))) throw new Fatal(`${url} did not answer with a list of public keys`);
    return lines;
  }
  throw new Error(last);
}

// safefs's replace (temp file, synced, renamed) and the folder synced: once boot goes on, a
// power cut leaves the new copy (or, mid-write, the old one), never half of one. An unchanged
// cache is not written at all.
async function store(file: string, keys: string[]) {
  const text = keys.map((k) => `${k}\n`).join('');
  if (await readFile(file, 'utf8').then((t) => t === text, () => false)) return;
  const d = openDir(dirname(file), { mkdirs: true });
  try {
    replaceFile(d, basename(file), text, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mode: 0o644 });
    syncDir(d);
  } finally { closeDir(d); }
}
