// The pure parts of cloud-init's NoCloud data source: the `ds=` kernel parameter, meta-data,
// and user-data (plain cloud-config, a script, gzip, or a minimal MIME multipart).
import { nodeZlib } from '../lazy.ts';
import { parse } from 'yaml';
import { hostnameProblem } from './hostname.ts';
import { tokenizeCmdline } from './merge.ts';
import { yamlTooLarge } from './parse.ts';
import { clip, MAX_SOURCE_BYTES, splitPin } from './url.ts';

export interface NoCloudSeed {
  /** 'nocloud' reads a local seed (or `s=file://...`); 'nocloud-net' a network one */
  kind: 'nocloud' | 'nocloud-net';
  /** base URL; meta-data and user-data are fetched from `${seedUrl}meta-data` etc. */
  seedUrl?: string;
  hostname?: string;
  instanceId?: string;
  /** `#sha256=HEX` after the seed URL: the SHA-256 user-data must have */
  userDataSha256?: string;
  /** fields that were refused (a bad host name, a bad pin) */
  problems?: string[];
}

/** Reads `ds=nocloud;s=URL` (also `ds=nocloud-net;seedfrom=URL;h=HOST;i=ID`) from a command line. */
export function parseNoCloudCmdline(cmdline: string): NoCloudSeed | undefined {
  const tok = tokenizeCmdline(cmdline).find((t) => /^ds=nocloud(-net)?(;|$)/.test(t.text));
  if (!tok) return undefined;
  const [kind, ...fields] = tok.text.slice(3).split(';');
  const seed: NoCloudSeed = { kind: kind as NoCloudSeed['kind'] };
  for (const f of fields) {
    const eq = f.indexOf('=');
    if (eq < 0) continue;
    const k = f.slice(0, eq);
    const v = f.slice(eq + 1);
    const refuse = (p: string) => (seed.problems ??= []).push(p);
    if (k === 's' || k === 'seedfrom') {
      // a pin covers user-data (the config); it goes after the URL: s=http://host/seed/#sha256=HEX
      const p = splitPin(v);
      if (p.bad !== undefined) { refuse(`ds=${kind};s=: '#${p.bad}' is not a pin (write #sha256= and 64 hex digits)`); continue; }
      seed.seedUrl = p.url && !p.url.endsWith('/') ? `${p.url}/` : p.url;
      if (p.sha256) seed.userDataSha256 = p.sha256;
    } else if (k === 'h' || k === 'local-hostname') {
      const bad = hostnameProblem(v);
      if (bad) refuse(`ds=${kind};h=: ${bad}; keeping the host name from elsewhere`); else seed.hostname = v;
    } else if (k === 'i' || k === 'instance-id') seed.instanceId = v;
  }
  return seed;
}

export interface MetaData { instanceId?: string; localHostname?: string; raw: Record<string, unknown>; problems: string[] }

/** meta-data is YAML (JSON is YAML too). */
export function parseMetaData(text: string): MetaData {
  const big = yamlTooLarge(text);
  if (big) return { raw: {}, problems: [`meta-data is too large: ${big}`] };
  let raw: unknown;
  // uniqueKeys off: yaml's check compares every key with every other
  try { raw = parse(text, { uniqueKeys: false }) ?? {}; } catch (e) {
    return { raw: {}, problems: [`meta-data is neither YAML nor JSON: ${(e as Error).message.split('\n')[0]}`] };
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return { raw: {}, problems: ['meta-data is not a map of keys'] };
  const r = raw as Record<string, unknown>;
  const str = (...keys: string[]) => { for (const k of keys) if (typeof r[k] === 'string' || typeof r[k] === 'number') return String(r[k]); return undefined; };
  const problems: string[] = [];
  let localHostname = str('local-hostname', 'local_hostname', 'hostname');
  const bad = localHostname === undefined ? undefined : hostnameProblem(localHostname);
  if (bad) { problems.push(`meta-data local-hostname: ${bad}; keeping the host name from elsewhere`); localHostname = undefined; }
  return { instanceId: str('instance-id', 'instance_id'), localHostname, raw: r, problems };
}

export interface UserData {
  /** cloud-config documents, in order (merge them like config.d files) */
  cloudConfigs: string[];
  /** `#!` scripts, run once the system is up */
  scripts: { name: string; text: string }[];
  problems: string[];
  /** set when the user-data could not be read at all (too large, broken gzip): the config it
   *  may hold is missing, so the caller must not run as if there were none */
  error?: string;
}

/** Splits user-data into cloud-config documents and scripts. */
export function splitUserData(data: Buffer | string): UserData {
  const out: UserData = { cloudConfigs: [], scripts: [], problems: [] };
  let buf = typeof data === 'string' ? Buffer.from(data) : data;
  const tooBig = `user-data is more than the limit of ${MAX_SOURCE_BYTES} bytes`;
  const fail = (why: string) => { out.problems.push(why); out.error = why; return out; };
  if (buf.length > MAX_SOURCE_BYTES) return fail(tooBig);
  if (buf[0] === 0x1f && buf[1] === 0x8b) {
    try { buf = nodeZlib().gunzipSync(buf, { maxOutputLength: MAX_SOURCE_BYTES }); } catch (e) {
      return fail((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? `${tooBig} once decompressed` : `user-data looks gzip'd but does not decompress: ${clip((e as Error).message, 200)}`);
    }
  }
  part(buf.toString('utf8'), 'user-data', undefined, out);
  return out;
}

function part(text: string, name: string, contentType: string | undefined, out: UserData) {
  const first = text.split('\n', 1)[0].trim();
  const boundary = /^content-type:\s*multipart\/[a-z]+;.*?boundary="?([^";\r\n]+)"?/im.exec(text.slice(0, 2000));
  if (boundary && (contentType === undefined || contentType.startsWith('multipart/')) && /^(mime-version|content-type):/i.test(first)) {
    multipart(text, boundary[1], out);
  } else if (contentType === 'text/cloud-config' || first.startsWith('#cloud-config')) {
    out.cloudConfigs.push(text);
  } else if (contentType === 'text/x-shellscript' || first.startsWith('#!')) {
    out.scripts.push({ name, text });
  } else if (text.trim() === '') {
    // empty user-data is normal
  } else {
    out.problems.push(`${name}: unsupported user-data (first line '${clip(first, 40)}'); kiln reads #cloud-config, #! scripts, gzip and multipart`);
  }
}

function multipart(text: string, boundary: string, out: UserData) {
  const chunks = text.split(new RegExp(`^--${boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?:--)?\\s*$`, 'm')).slice(1, -1);
  chunks.forEach((chunk, i) => {
    const body = chunk.replace(/^\r?\n/, '');
    const split = /\r?\n\r?\n/.exec(body);
    const head = split ? body.slice(0, split.index) : '';
    let content = split ? body.slice(split.index + split[0].length) : body;
    const header = (h: string) => new RegExp(`^${h}:\\s*([^;\\r\\n]+)`, 'im').exec(head)?.[1].trim().toLowerCase();
    const file = /filename="?([^";\r\n]+)"?/i.exec(head)?.[1] ?? `part-${i + 1}`;
    content = content.replace(/\r?\n$/, ''); // the line break before a boundary belongs to it
    if (header('content-transfer-encoding') === 'base64') content = Buffer.from(content.replace(/\s+/g, ''), 'base64').toString('utf8');
    content = content.replace(/\r\n/g, '\n');
    part(content, file, header('content-type'), out);
  });
}
