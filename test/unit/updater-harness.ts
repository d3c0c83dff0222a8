// Shared fixture for the updater tests (not a test file itself): a channel published with
// builder/release.ts from fake build outputs, served by a real node:http server on 127.0.0.1
// (with Range support and fault injection), plus a fake node: a temp ESP, two plain files as
// slot devices, and a state folder.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { encodeUbootEnv } from '../../init/bootctl/ubootenv.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeys, publishRelease } from '../../builder/release.ts';
import { parseTrustRoot, type TrustRoot } from '../../channels/manifest.ts';
import { Updater, type UpdaterOptions } from '../../init/update/updater.ts';
import type { Slot } from '../../init/slot.ts';

export const NOW = new Date('2030-01-01T00:00:00Z');
export const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export interface Served { url: string; range?: string; status: number; sent: number }

export interface ChannelServer {
  base: string;
  requests: Served[];
  /** Cut the next response for a path ending in `suffix` after `bytes` bytes of body. */
  cutNext(suffix: string, bytes: number): void;
  /** Answer Range requests with the whole file (200), like a server without Range support. */
  ignoreRange: boolean;
  /** Answer every request for a path ending in `suffix` with `handler` instead of the file; null serves the file again. */
  route(suffix: string, handler: ((req: IncomingMessage, res: ServerResponse) => void) | null): void;
  close(): Promise<void>;
}

export async function serve(dir: string): Promise<ChannelServer> {
  const requests: Served[] = [];
  const cuts: { suffix: string; bytes: number }[] = [];
  const state = { ignoreRange: false };
  const routes: { suffix: string; handler: (req: IncomingMessage, res: ServerResponse) => void }[] = [];
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
    const file = join(dir, path);
    const rec: Served = { url: path, range: req.headers.range, status: 0, sent: 0 };
    requests.push(rec);
    const route = routes.find((r) => path.endsWith(r.suffix));
    if (route) { res.on('error', () => undefined); route.handler(req, res); return; }
    if (!file.startsWith(dir) || !existsSync(file) || !statSync(file).isFile()) { rec.status = 404; res.statusCode = 404; res.end('not found'); return; }
    const data = readFileSync(file);
    let body = data;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m && !state.ignoreRange) {
      const start = Number(m[1]);
      const end = m[2] ? Math.min(Number(m[2]), data.length - 1) : data.length - 1;
      if (start >= data.length || end < start) { rec.status = 416; res.statusCode = 416; res.end(); return; }
      body = data.subarray(start, end + 1);
      res.statusCode = 206;
      res.setHeader('content-range', `bytes ${start}-${end}/${data.length}`);
    } else res.statusCode = 200;
    rec.status = res.statusCode;
    res.setHeader('content-length', body.length);
    res.setHeader('accept-ranges', 'bytes');
    const ci = cuts.findIndex((c) => path.endsWith(c.suffix));
    if (ci >= 0) {
      const { bytes } = cuts.splice(ci, 1)[0]!;
      rec.sent = bytes;
      // Send part of the body, then drop the connection as a flaky network would.
      res.write(body.subarray(0, bytes), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    rec.sent = body.length;
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    base: `http://127.0.0.1:${port}`,
    requests,
    cutNext: (suffix, bytes) => { cuts.push({ suffix, bytes }); },
    route: (suffix, handler) => {
      for (let i = routes.length - 1; i >= 0; i--) if (routes[i]!.suffix === suffix) routes.splice(i, 1);
      if (handler) routes.push({ suffix, handler });
    },
    get ignoreRange() { return state.ignoreRange; },
    set ignoreRange(v: boolean) { state.ignoreRange = v; },
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

export interface Release { version: string; root: Buffer; uki: Buffer; kernel: Buffer; initrd: Buffer }

/** A node booting through systemd-boot (a UKI per slot) or U-Boot (the Pi: kernel + initrd per slot, uboot.env). */
export type Flavour = 'uefi' | 'uboot';

/**
 * Fake build outputs (test fixtures, not images): a random "root image" and fake boot files,
 * a "UKI" for x86_64, a "kernel" and "initrd" for the Pi's arm64_rpi target.
 */
export function fixtureBuild(dir: string, version: string, rootSize = 300_000, flavour: Flavour = 'uefi', rootBytes?: Buffer): { out: string; rel: Release } {
  const out = join(dir, `out-${version}-${flavour}`);
  mkdirSync(out, { recursive: true });
  const [arch, target] = flavour === 'uefi' ? ['x86_64', 'x86_64'] : ['arm64', 'arm64_rpi'];
  const root = rootBytes ?? randomBytes(rootSize);
  const uki = Buffer.from(`fixture uki for kiln ${version}\n`.repeat(50));
  const kernel = Buffer.from(`fixture kernel for kiln ${version}\n`.repeat(80));
  const initrd = Buffer.from(`fixture initrd for kiln ${version}\n`.repeat(40));
  const files = [
    { file: `fixture-kiln-${version}-${arch}.root.squashfs`, kind: 'root', data: root },
    ...(flavour === 'uefi' ? [{ file: `fixture-kiln-${version}-${arch}.efi`, kind: 'uki', data: uki }]
      : [{ file: `fixture-kiln-${version}-${arch}.vmlinuz`, kind: 'kernel', data: kernel }, { file: `fixture-kiln-${version}-${arch}.initrd`, kind: 'initrd', data: initrd }]),
  ];
  for (const f of files) writeFileSync(join(out, f.file), f.data);
  writeFileSync(join(out, 'build.json'), JSON.stringify({ version, outputs: files.map((f) => ({ file: f.file, arch, target, kind: f.kind, size: f.data.length, sha256: sha(f.data) })) }));
  return { out, rel: { version, root, uki, kernel, initrd } };
}

export interface World {
  dir: string;
  pub: string;
  keyFile: string;
  trust: TrustRoot;
  server: ChannelServer;
  esp: string;
  slots: Record<Slot, string>;
  stateBase: string;
  reboots: number;
  logs: string[];
  releases: Record<string, Release>;
  publish(version: string, opts?: { now?: Date; expiresDays?: number; rootSize?: number; rolloutHours?: number; flavour?: Flavour; root?: Buffer }): Promise<Release>;
  updater(over?: Partial<UpdaterOptions>): Updater;
  entries(): string[];
  stateFile(): string;
  close(): Promise<void>;
}

/**
 * A node running 1.0.0 from slot a (entry kiln-a.efi blessed; or for 'uboot', a/vmlinuz and
 * a/initrd with slot a blessed in uboot.env), channel 'stable' with 1.0.0 and whatever the
 * test publishes next.
 */
export async function world(flavour: Flavour = 'uefi', v1Root?: Buffer): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-updater-'));
  const keys = generateKeys(join(dir, 'keys'));
  const pub = join(dir, 'pub');
  const esp = join(dir, 'esp');
  mkdirSync(join(esp, 'EFI/Linux'), { recursive: true });
  const slots = { a: join(dir, 'dev-root-a'), b: join(dir, 'dev-root-b') };
  const stateBase = join(dir, 'var-lib-kiln');
  const releases: Record<string, Release> = {};
  const w: World = {
    dir, pub, keyFile: keys.keyFile, trust: parseTrustRoot(readFileSync(keys.trustFile)),
    server: await serve(pub), esp, slots, stateBase, reboots: 0, logs: [], releases,
    async publish(version, o = {}) {
      const { out, rel } = fixtureBuild(dir, version, o.rootSize, o.flavour ?? flavour, o.root);
      await publishRelease({ channel: 'stable', from: out, to: pub, key: keys.keyFile, now: o.now ?? NOW, expiresDays: o.expiresDays, rolloutHours: o.rolloutHours });
      releases[version] = rel;
      return rel;
    },
    updater(over = {}) {
      return new Updater({
        channelUrl: w.server.base, channel: 'stable', arch: flavour === 'uefi' ? 'x86_64' : 'arm64_rpi', stateBase, trust: w.trust,
        currentVersion: '1.0.0', bootedSlot: 'a', buildTime: new Date('2029-12-01T00:00:00Z'), machineId: '0123456789abcdef0123456789abcdef',
        devices: { slotDevice: (s) => slots[s] }, esp, now: () => new Date(NOW.getTime() + 3600_000),
        reboot: () => { w.reboots++; }, log: (l) => { w.logs.push(l); }, bootId: 'boot-1', sync: async () => {},
        progressEveryBytes: 16 * 1024, healthIntervalMs: 5,
        ...over,
      });
    },
    entries: () => readdirSync(join(esp, 'EFI/Linux')).sort(),
    stateFile: () => join(stateBase, 'stable', 'channel-state.json'),
    close: () => w.server.close(),
  };
  const v1 = await w.publish('1.0.0', { root: v1Root });
  // The installed node: slot a holds 1.0.0 (blessed), slot b an old image of the same size class.
  writeFileSync(slots.a, v1.root);
  writeFileSync(slots.b, Buffer.alloc(4096, 0x5a));
  if (flavour === 'uefi') writeFileSync(join(esp, 'EFI/Linux/kiln-a.efi'), v1.uki);
  else {
    rmSync(join(esp, 'EFI'), { recursive: true });
    mkdirSync(join(esp, 'a'));
    writeFileSync(join(esp, 'a/vmlinuz'), v1.kernel);
    writeFileSync(join(esp, 'a/initrd'), v1.initrd);
    writeFileSync(join(esp, 'boot.scr'), 'fixture boot script');
    // As U-Boot saves it after a few boots of a blessed slot a (with board facts the node drops).
    writeFileSync(join(esp, 'uboot.env'), encodeUbootEnv({ bootcmd: 'run distro_bootcmd', BOOT_ORDER: 'a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '0', ethaddr: 'b8:27:eb:00:00:01' }));
  }
  return w;
}
