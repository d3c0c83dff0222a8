// Pieces the end-to-end tests share: a NoCloud CIDATA volume, a stand-in for GitHub's
// key service on loopback, an SSH client, free ports.
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as netServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';
import { buildGpt, randomGuid, readGpt } from '../../init/disk/gpt.ts';
import { layoutFor } from '../../init/disk/layout.ts';
import { indexModules, withoutSignature } from '../../builder/kmod.ts';

/** A FAT volume labelled CIDATA holding user-data and meta-data (what cloud-init's NoCloud reads). */
export async function cidataImage(userData: string, metaData = 'instance-id: e2e\n'): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-cidata-'));
  writeFileSync(join(dir, 'user-data'), userData);
  writeFileSync(join(dir, 'meta-data'), metaData);
  const img = join(dir, 'cidata.img');
  await $({ quiet: true })`mkfs.vfat -n CIDATA -C ${img} 2048`;
  await $({ quiet: true, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } })`mcopy -i ${img} ${join(dir, 'user-data')} ${join(dir, 'meta-data')} ::`;
  return img;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = netServer();
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as any).port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

/** Test double for GitHub's https://github.com/<user>.keys, on 127.0.0.1 (the guest reaches it as 10.0.2.2). */
export async function keyServiceStandIn(users: Record<string, string[]>): Promise<{ server: Server; port: number; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? '');
    const m = /^\/([^/]+)\.keys$/.exec(req.url ?? '');
    const keys = m ? users[m[1]] : undefined;
    if (!keys) { res.writeHead(404); res.end('Not Found'); return; }
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(keys.join('\n') + '\n');
  });
  await new Promise<void>((r) => server.listen(0, '0.0.0.0', () => r()));
  return { server, port: (server.address() as any).port, hits };
}

export function sshKeypair(): { key: string; pub: string } {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-ssh-'));
  const key = join(dir, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice@e2e', '-f', key]);
  return { key, pub: readFileSync(`${key}.pub`, 'utf8').trim() };
}

/** One ssh run of a command on the guest (through QEMU's hostfwd) as `user`. */
function sshOnce(port: number, key: string, command: string, user: string, timeout: '60s' | '600s') {
  return $({ quiet: true, nothrow: true, timeout })`ssh -i ${key} -p ${port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 -o BatchMode=yes -o LogLevel=ERROR ${user}@127.0.0.1 ${command}`;
}

/** Runs a command on the guest over SSH as `user`, retrying while sshd comes up. */
export async function ssh(port: number, key: string, command: string, tries = 30, user = 'root'): Promise<string> {
  let last = '';
  for (let i = 0; i < tries; i++) {
    const r = await sshOnce(port, key, command, user, '60s');
    if (r.exitCode === 0) return r.stdout;
    last = `${r.stderr.trim()} (exit ${r.exitCode})`;
    await new Promise((res) => setTimeout(res, 3000));
  }
  throw new Error(`ssh ${command}: ${last}`);
}

/**
 * Runs a command that reboots the guest (`kiln upgrade`), once SSH answers. The reboot may close
 * the connection before ssh has the command's exit status (exit 255): the command ran, and the
 * caller waits on the console for what it did. Retried then, it would run a second time, or
 * knock for minutes on a guest that is down or paused. A command that ran and failed (the
 * updater not started yet) is tried again.
 */
export async function sshRebooting(port: number, key: string, command: string, tries = 10, user = 'root'): Promise<string> {
  let last = '';
  for (let i = 0; i < tries; i++) {
    await ssh(port, key, 'true', 30, user);
    const r = await sshOnce(port, key, command, user, '600s');
    if (r.exitCode === 0 || r.exitCode === 255) return r.stdout;
    last = `${r.stderr.trim()} (exit ${r.exitCode})`;
    await new Promise((res) => setTimeout(res, 3000));
  }
  throw new Error(`ssh ${command}: ${last}`);
}

/**
 * Serves a folder over HTTP on all interfaces (the guest reaches it as 10.0.2.2), with Range
 * support: `bytes=N-` always, `bytes=N-M` (a delta's chunks) only with `ranges: true` — without
 * it such requests get the whole file (200), as from a server that ignores them. The options
 * are read per request, so a test may change them while the server runs.
 */
export async function staticServer(dir: string, o: { bytesPerSecond?: number; ranges?: boolean } = {}): Promise<{ server: Server; port: number; hits: string[]; sent: () => number; sentFor: (suffix: string) => number }> {
  const { Transform } = await import('node:stream');
  let sent = 0;
  const perPath = new Map<string, number>();
  // Optional throttle, so a test can cut the power in the middle of a download.
  const throttle = (path: string) => new Transform({
    transform(chunk: Buffer, _e, cb) {
      sent += chunk.length;
      perPath.set(path, (perPath.get(path) ?? 0) + chunk.length);
      if (!o.bytesPerSecond) return cb(null, chunk);
      setTimeout(() => cb(null, chunk), (chunk.length / o.bytesPerSecond) * 1000);
    },
  });
  const { createReadStream, existsSync, statSync } = await import('node:fs');
  const hits: string[] = [];
  const server = createServer((req, res) => {
    const path = join(dir, decodeURIComponent((req.url ?? '/').split('?')[0]));
    hits.push(`${req.method} ${req.url}${req.headers.range ? ` ${req.headers.range}` : ''}`);
    if (!path.startsWith(dir) || !existsSync(path) || !statSync(path).isFile()) { res.writeHead(404); res.end(); return; }
    const size = statSync(path).size;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m && Number(m[1]) < size && (!m[2] || (o.ranges && Number(m[2]) >= Number(m[1])))) {
      const start = Number(m[1]), end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}` });
      createReadStream(path, { start, end, highWaterMark: 64 * 1024 }).pipe(throttle(path)).pipe(res);
      return;
    }
    res.writeHead(200, { 'content-length': size });
    createReadStream(path, { highWaterMark: 64 * 1024 }).pipe(throttle(path)).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '0.0.0.0', () => r()));
  const sentFor = (suffix: string) => [...perPath].filter(([p]) => p.endsWith(suffix)).reduce((s, [, n]) => s + n, 0);
  return { server, port: (server.address() as any).port, hits, sent: () => sent, sentFor };
}

const temps: string[] = [];
/**
 * A folder under the system's temp folder, removed when the test process exits: disk copies
 * are hundreds of MiB each, and a machine that runs the suite again and again must not fill up.
 */
export function tempDir(prefix: string): string {
  if (!temps.length) process.on('exit', () => { for (const d of temps) rmSync(d, { recursive: true, force: true }); });
  const d = mkdtempSync(join(tmpdir(), prefix));
  temps.push(d);
  return d;
}

/** A sparse, empty raw disk of `mib` MiB (an installer's target). */
export function blankDisk(mib: number): string {
  const f = join(tempDir('kiln-disk-'), 'disk.raw');
  const fd = openSync(f, 'w');
  ftruncateSync(fd, mib * 1048576);
  closeSync(fd);
  return f;
}

/**
 * A second disk with kiln's partition table and labels but other GUIDs and nothing in its
 * partitions: another kiln disk left in the machine, whose partitions the node must never take
 * for its own.
 */
export function strangerDisk(arch: 'x86_64' | 'arm64', mib = 64): string {
  const f = blankDisk(mib);
  const size = mib * 1048576;
  const g = buildGpt({ diskSizeBytes: size, diskGuid: randomGuid(), partitions: layoutFor(arch, size, 8, 8).map((p) => ({ ...p, guid: randomGuid() })) });
  const fd = openSync(f, 'r+');
  try { writeSync(fd, g.primary, 0, g.primary.length, 0); writeSync(fd, g.backup, 0, g.backup.length, g.backupOffset); } finally { closeSync(fd); }
  return f;
}

/** A file from a disk image's data partition (the fourth; ext4), read with debugfs: `path` is inside that filesystem. */
export async function dataPartitionFile(disk: string, path: string): Promise<string> {
  const part = diskGpt(disk).partitions[3]!;
  const img = join(tempDir('kiln-data-'), 'data.img');
  await $({ quiet: true })`dd if=${disk} of=${img} bs=1M skip=${(part.firstLba * 512) / 1048576} conv=sparse status=none`;
  const out = (await $({ quiet: true })`debugfs -R ${`cat ${path}`} ${img}`).stdout;
  rmSync(img, { force: true });
  return out;
}

/** A disk image's GPT, read from its first MiB. */
function diskGpt(disk: string): ReturnType<typeof readGpt> {
  const fd = openSync(disk, 'r');
  const b = Buffer.alloc(1048576);
  readSync(fd, b, 0, b.length, 0);
  closeSync(fd);
  return readGpt(b);
}

/** The GPT partition names of a disk image, in table order. */
export function gptNames(disk: string): string[] {
  return diskGpt(disk).partitions.map((p) => p.name);
}

/** Whether module `name` in an image's module folder still carries sign-file's trailer. */
export function moduleSigned(modulesDir: string, name: string): boolean {
  const rel = indexModules(modulesDir).byName.get(name);
  if (!rel) throw new Error(`no module ${name} under ${modulesDir}`);
  const ko = readFileSync(join(modulesDir, rel));
  return withoutSignature(ko, rel).length !== ko.length;
}
