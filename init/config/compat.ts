// Forms other systems' configs use, mapped onto kiln's keys before validation: k3os's
// strings where a list is meant, !!binary file contents, cloud-init keys with a kiln meaning,
// Kairos's k3s blocks. Each mapping or ignored key is a warning naming the canonical key, so a
// pasted config runs, and `kiln config validate --strict` shows what to rewrite. Pure: works
// on the plain value; positions come from the locator of the YAML text.
import type { ConfigProblem, Locator, Seg } from './parse.ts';
import { childSchema, CONFIG_SCHEMA, typesOf, type SchemaNode } from './schema.ts';

type Obj = Record<string, any>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);

/** Top-level cloud-init keys kiln accepts and ignores, with why (documented in docs/config.md). */
export const IGNORED_TOP: Record<string, string> = {
  timezone: 'kiln has no time zone setting and the node keeps UTC; give containers TZ in their own spec',
  manage_etc_hosts: 'kiln always writes the host name into /etc/hosts itself',
  growpart: 'kiln always grows its data partition to fill the disk at first boot',
  resize_rootfs: 'kiln always grows its data partition to fill the disk at first boot; the root is read-only and fixed in size',
  preserve_hostname: 'kiln sets the host name from hostname: at every boot',
  prefer_fqdn_over_hostname: 'kiln uses hostname: (or the first label of fqdn:) as the host name',
  disable_root: 'root logs in with kiln.password or ssh_authorized_keys; leave both empty to keep root out',
  ssh_deletekeys: 'the SSH host keys are made once, on first start, and kept on the data partition',
  ssh_genkeytypes: 'the SSH server (dropbear) makes its own host keys on first start',
  final_message: 'kiln reports boot progress on the console itself',
  locale: 'kiln has no locale setting or locale data',
};

/** Keys of a cloud-init users entry kiln accepts and ignores, with why. */
export const IGNORED_USER: Record<string, string> = {
  ssh_redirect_user: 'kiln has no login redirect; give the user no keys instead',
  plain_text_passwd: "kiln takes a user's password only as a crypt(3) hash; give passwd: '$6$...' (make one with: openssl passwd -6)",
  doas: 'the image has no doas and no setuid program, so no user but root can act as root',
  sudo: "the image has no sudo and no setuid program, so no user but root can act as root; give root's ssh_authorized_keys instead",
};

/** Printed by `kiln config validate` for a config with runcmd (output: keep it as it is). */
export const RUNCMD_NOTE = 'runcmd runs once per instance; run_cmd runs every boot';

/** Where each accepted cloud-init or Kairos key goes (docs/config.md lists this table). */
export const MAPPED: [string, string][] = [
  ['ntp: {servers, pools}', 'kiln.ntp_servers (servers, then pools), when kiln.ntp_servers is not set'],
  ['fqdn', "hostname: its first label, when hostname is not set (cloud-init's default); /etc/hosts gets that name"],
  ['ssh_pwauth', 'kiln.ssh.password_login, when that is not set'],
  ['chpasswd: {users: [{name: root, password}]} or {list}', "kiln.password for root; another user's password to users[].passwd when it is a crypt(3) hash ('$6$...'), otherwise a warning"],
  ['k3s: {enabled, args, env} (Kairos)', "kiln.k3s_args ['server', ...args]; env to kiln.environment"],
  ['k3s-agent: {enabled, args, env} (Kairos)', "kiln.k3s_args ['agent', ...args]; env to kiln.environment; give kiln.server_url and kiln.token (or --server/--token in args)"],
  ['write_files[].content: !!binary', 'decoded; with encoding gz (or gzip) the bytes are gzip data, with b64 or gz+b64 they are base64 text, otherwise the file content'],
  ['a string where a list is expected', "a one-element list (kiln.k3s_args: split at spaces, with a warning)"],
];

export function applyCompat(value: unknown, file: string, loc: Locator): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  if (!isObj(value)) return out;
  const warn = (path: Seg[], atKey: boolean, message: string, fix: string) =>
    out.push({ file, ...loc.pos(path, atKey), key: spell(loc, path), message, fix, severity: 'warning' });
  const c = value;
  const kiln = (): Obj => (isObj(c.kiln) ? c.kiln : (c.kiln = {}));

  // ---- cloud-init top-level keys ----
  if ('ntp' in c) {
    const n = c.ntp;
    if (isObj(n)) {
      const servers = [...[].concat(n.servers ?? []), ...[].concat(n.pools ?? [])].filter((s) => typeof s === 'string');
      if (servers.length && kiln().ntp_servers === undefined) kiln().ntp_servers = servers;
      warn(['ntp'], true, `mapped to kiln.ntp_servers${servers.length ? ` (${servers.join(', ')})` : ''}${n.enabled === false ? '; enabled: false is ignored: chronyd always runs' : ''}`, 'write kiln: {ntp_servers: [...]} instead');
      delete c.ntp;
    }
  }
  if ('fqdn' in c && typeof c.fqdn === 'string') {
    const short = c.fqdn.split('.')[0];
    if (c.hostname === undefined) c.hostname = short;
    warn(['fqdn'], true, c.hostname === short ? `mapped to hostname: ${short}` : 'ignored: hostname is set', "write hostname: instead");
    delete c.fqdn;
  }
  if ('ssh_pwauth' in c && typeof c.ssh_pwauth === 'boolean') {
    const ssh = isObj(kiln().ssh) ? kiln().ssh : (kiln().ssh = {});
    if (ssh.password_login === undefined) ssh.password_login = c.ssh_pwauth;
    warn(['ssh_pwauth'], true, 'mapped to kiln.ssh.password_login', `write kiln: {ssh: {password_login: ${c.ssh_pwauth}}} instead`);
    delete c.ssh_pwauth;
  }
  else if ('ssh_pwauth' in c) { // cloud-init also takes 'unchanged' (leave sshd's setting as it is)
    warn(['ssh_pwauth'], true, `ignored: only true or false maps to kiln.ssh.password_login (off unless set)`, 'write kiln: {ssh: {password_login: true}} to allow passwords over SSH');
    delete c.ssh_pwauth;
  }
  if ('chpasswd' in c && isObj(c.chpasswd)) chpasswd(c, warn);
  for (const [k, why] of Object.entries(IGNORED_TOP)) {
    if (!(k in c)) continue;
    warn([k], true, `ignored: ${why}`, 'remove it');
    delete c[k];
  }
  if ('groups' in c) c.groups = groupsOf(c.groups);
  if (Array.isArray(c.users)) {
    c.users.forEach((u: unknown, i: number) => {
      if (!isObj(u)) return;
      for (const [k, why] of Object.entries(IGNORED_USER)) {
        if (!(k in u)) continue;
        // sudo: false (or null) asks for nothing that kiln leaves out
        if (k === 'sudo' && (u.sudo === false || u.sudo === null || (Array.isArray(u.sudo) && !u.sudo.length))) { delete u[k]; continue; }
        warn(['users', i, k], true, `ignored: ${why}`, 'remove it');
        delete u[k];
      }
    });
  }
  // ---- Kairos ----
  for (const [block, role] of [['k3s', 'server'], ['k3s-agent', 'agent']] as const) {
    const b = c[block];
    if (!isObj(b)) continue;
    const args = b.args === undefined ? [] : [].concat(b.args).map(String);
    if (b.enabled !== false) {
      if (kiln().k3s_args === undefined) kiln().k3s_args = [role, ...args];
      warn([block], true, `mapped to kiln.k3s_args: [${[role, ...args].join(', ')}]${isObj(b.env) ? ' and kiln.environment' : ''}`, `write kiln: {k3s_args: [${[role, ...args].join(', ')}]} instead${role === 'agent' ? ', with kiln.server_url and kiln.token' : ''}`);
    } else warn([block], true, `ignored: enabled is false${block === 'k3s' ? ' (kiln runs k3s on every node; a server unless kiln.server_url is set)' : ''}`, 'remove it');
    if (isObj(b.env) && b.enabled !== false) kiln().environment = { ...b.env, ...(isObj(kiln().environment) ? kiln().environment : {}) };
    for (const k of Object.keys(b)) if (!['args', 'env', 'enabled'].includes(k)) warn([block, k], true, `ignored: kiln has no '${k}' for k3s`, 'put k3s settings in kiln.k3s_args, or in a config file written with write_files to /etc/rancher/k3s/config.yaml');
    delete c[block];
  }
  // ---- !!binary contents ----
  if (Array.isArray(c.write_files)) {
    c.write_files.forEach((f: unknown, i: number) => {
      if (!isObj(f) || !(f.content instanceof Uint8Array)) return;
      const bytes = Buffer.from(f.content);
      const enc = f.encoding ?? 'text';
      if (['b64', 'base64'].includes(enc)) f.content = bytes.toString('latin1');
      else if (['gz+b64', 'gzip+b64', 'gz+base64', 'gzip+base64'].includes(enc)) f.content = bytes.toString('latin1');
      else if (['gz', 'gzip'].includes(enc)) { f.content = bytes.toString('base64'); f.encoding = 'gzip+base64'; }
      else { f.content = bytes.toString('base64'); f.encoding = 'base64'; }
    });
  }
  // ---- strings where a list is meant (k3os took either) ----
  lists(c, CONFIG_SCHEMA, [], warn);
  return out;
}

/**
 * cloud-init's top-level groups to kiln's list of {name, members}: a comma-separated string,
 * a list of names and {NAME: MEMBERS} maps, or one such map; MEMBERS a list or a
 * comma-separated string. kiln's own form passes through; anything else is left for the
 * schema to report.
 */
export function groupsOf(v: unknown): unknown {
  const names = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
  const members = (m: unknown) => (m === null || m === undefined ? [] : typeof m === 'string' ? names(m) : m);
  const fromMap = (o: Obj) => Object.entries(o).map(([name, m]) => ({ name, members: members(m) }));
  if (typeof v === 'string') return names(v).map((name) => ({ name }));
  if (isObj(v)) return typeof v.name === 'string' ? [v] : fromMap(v);
  if (!Array.isArray(v)) return v;
  return v.flatMap((g) => (typeof g === 'string' ? names(g).map((name) => ({ name })) : isObj(g) && typeof g.name !== 'string' ? fromMap(g) : [g]));
}

function chpasswd(c: Obj, warn: (p: Seg[], atKey: boolean, m: string, f: string) => void) {
  const cp = c.chpasswd;
  const entries: { name: string; password: string; at: Seg[] }[] = [];
  if (typeof cp.list === 'string' || Array.isArray(cp.list)) {
    const lines = typeof cp.list === 'string' ? cp.list.split('\n') : cp.list.map(String);
    for (const l of lines) { const m = /^([^:]+):(.*)$/.exec(l.trim()); if (m) entries.push({ name: m[1], password: m[2], at: ['chpasswd', 'list'] }); }
  }
  if (Array.isArray(cp.users)) cp.users.forEach((u: unknown, i: number) => { if (isObj(u) && typeof u.name === 'string' && typeof u.password === 'string') entries.push({ name: u.name, password: u.password, at: ['chpasswd', 'users', i] }); });
  for (const e of entries) {
    const hashed = /^\$[0-9a-z]+\$/.test(e.password);
    if (e.name === 'root') {
      if (c.kiln?.password === undefined) (isObj(c.kiln) ? c.kiln : (c.kiln = {})).password = e.password;
      warn(e.at, false, 'root: mapped to kiln.password', 'write kiln: {password: ...} instead');
      continue;
    }
    const u = Array.isArray(c.users) ? c.users.find((x: unknown) => isObj(x) && x.name === e.name) : undefined;
    if (u && hashed && u.passwd === undefined) { u.passwd = e.password; warn(e.at, false, `${e.name}: mapped to users[].passwd`, 'write passwd: under that user instead'); }
    else warn(e.at, false, `${e.name}: ignored: ${!u ? 'that user is not in users:' : !hashed ? 'kiln takes only a crypt(3) hash for a user\'s password' : 'the user has a passwd already'}`, "give the user passwd: '$6$...' (make one with: openssl passwd -6)");
  }
  if ('expire' in cp) warn(['chpasswd', 'expire'], true, 'ignored: kiln has no password expiry', 'remove it');
  delete c.chpasswd;
}

/** Wraps a string into a list where the schema wants a list of strings (k3s_args: split). */
function lists(v: unknown, schema: SchemaNode | undefined, path: Seg[], warn: (p: Seg[], atKey: boolean, m: string, f: string) => void) {
  if (!schema) return;
  if (isObj(v)) {
    for (const k of Object.keys(v)) {
      const s = childSchema(schema, k);
      if (!s) continue;
      const t = typesOf(s);
      if (typeof v[k] === 'string' && t.length === 1 && t[0] === 'array' && typesOf(s.items).includes('string') || (typeof v[k] === 'string' && t[0] === 'array' && s.items?.enum)) {
        if (k === 'k3s_args') {
          const parts = v[k].trim().split(/\s+/).filter(Boolean);
          warn([...path, k], false, `one string: read as the list [${parts.join(', ')}]`, `write it as a list: [${parts.join(', ')}]`);
          v[k] = parts;
        } else v[k] = [v[k]];
      } else lists(v[k], s, [...path, k], warn);
    }
  } else if (Array.isArray(v)) v.forEach((x, i) => lists(x, childSchema(schema, i), [...path, i], warn));
}

function spell(loc: Locator, path: Seg[]): string {
  let out = '';
  for (const s of loc.spelling(path)) out += typeof s === 'number' ? `[${s}]` : out ? `.${s}` : s;
  return out;
}
