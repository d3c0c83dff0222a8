// The cost of dm-verity: boot time to `kiln: ready` with and without it, measured in the same
// run on the same image, and the size of the hash tree. The two variants differ only in what
// stage 1 is told: the image's own UKI is rebuilt twice from the same kernel, stub and stage 1,
// once as built and once with `kiln.verity=` dropped from its command line and stage 1's
// /etc/kiln/verity emptied (a second cpio archive in the same initrd overrides it), so stage 1
// mounts the same slot (tree still appended, ignored by squashfs) directly. Boots alternate
// between the variants so load on the machine falls on both alike.
//
// Called by bench/run.ts; alone: `node --import tsx bench/verity.ts [--arch x86_64] [--rounds N] [--dir OUT]`.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { $ } from 'zx';
import { ARCH, type Arch } from '../builder/arch.ts';
import { build, entryName, REPO, ukiOsRelease, type BuildRecord } from '../builder/build.ts';
import { Cache } from '../builder/cache.ts';
import { writeCpio } from '../builder/formats/cpio.ts';
import { readLock } from '../builder/lock.ts';
import { createLogger } from '../builder/log.ts';
import { loadProfile } from '../builder/profile.ts';
import { Vm } from '../builder/qemu.ts';
import { kernelFromLock, unpackedDeb } from '../builder/rootfs.ts';
import { tool } from '../builder/tools.ts';
import { buildUki, readPe } from '../builder/uki.ts';
import { parseVerityParam, VERITY_BLOCK } from '../init/disk/verity.ts';
import { median } from './report.ts';

export interface VerityFigures {
  /** Bytes of the appended hash area (superblock + tree), and the filesystem bytes it covers. */
  treeBytes: number;
  dataBytes: number;
  /** QEMU start -> `kiln: ready`, seconds, per boot. */
  withVerity: number[];
  withoutVerity: number[];
  /** `kiln-stage1: started` -> `kiln: ready`, seconds, per boot: the part verity can slow. */
  stage1WithVerity: number[];
  stage1WithoutVerity: number[];
  accel: string;
}

type Row = (k: string, v: string) => void;
const mtools = $({ quiet: true, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });

function section(uki: Buffer, name: string, what: string): Buffer {
  const s = readPe(uki, what).sections.find((x) => x.name === name);
  if (!s) throw new Error(`${what} has no ${name} section`);
  return uki.subarray(s.rawOffset, s.rawOffset + s.virtualSize);
}

/**
 * Measures the image built into `dir` (its build record `rec`): `rounds` boots of each variant.
 * `row` receives the printed figures (bench/run.ts's table); the figures are returned too.
 */
export async function verityBench(o: { arch: Arch; dir: string; rec: BuildRecord; rounds?: number; row?: Row; memMiB?: number }): Promise<VerityFigures> {
  const { arch, dir, rec } = o;
  const row: Row = o.row ?? ((k, v) => console.log(`${k.padEnd(48)} ${v}`));
  const out = (kind: string) => {
    const f = rec.outputs.find((x) => x.kind === kind && x.arch === arch);
    if (!f) throw new Error(`the build in ${dir} has no ${kind} output for ${arch} (build it with the raw format)`);
    return join(dir, f.file);
  };
  const raw = out('raw'), root = out('root'), uki = readFileSync(out('uki'));
  const cmdline = section(uki, '.cmdline', out('uki')).toString('latin1').replace(/\0+$/, '');
  const param = parseVerityParam(/(?:^| )kiln\.verity=(\S+)/.exec(cmdline)?.[1]);
  if (!param) throw new Error(`${out('uki')}: no kiln.verity= on its command line (${cmdline})`);
  const dataBytes = param.dataBlocks * VERITY_BLOCK;
  const treeBytes = statSync(root).size - dataBytes;

  const tmp = mkdtempSync(join(tmpdir(), 'kiln-bench-verity-'));
  try {
    // Both UKIs from the same parts: the lock's kernel and stub, the build's stage 1.
    const profile = loadProfile();
    const al = readLock(profile)!.arches[arch]!;
    const cache = new Cache();
    const kernel = await kernelFromLock(al, cache);
    const stub = join(await unpackedDeb(al.packages.find((p) => p.package === 'systemd-boot-efi')!, cache), 'usr/lib/systemd/boot/efi', ARCH[arch].stub);
    const stage1 = execFileSync(tool('zstd'), ['-q', '-d', '-c', join(dir, '.work', arch, 'stage1.cpio.zst')], { maxBuffer: 1 << 30 });
    const variant = async (name: string, verity: boolean) => {
      // Emptied, /etc/kiln/verity reads as no root hash (stage 1's fallback when the command line has none).
      const override = verity ? Buffer.alloc(0) : writeCpio([{ path: 'etc', type: 'dir' }, { path: 'etc/kiln', type: 'dir' }, { path: 'etc/kiln/verity', type: 'file', data: Buffer.alloc(0) }]);
      const cpio = join(tmp, `${name}.cpio`);
      writeFileSync(cpio, Buffer.concat([stage1, override]));
      await $({ quiet: true })`${tool('zstd')} -q -f -19 -T0 ${cpio} -o ${cpio}.zst`;
      const efi = join(tmp, `${name}.efi`);
      await buildUki({ arch, stub, kernel: kernel.vmlinuz, initrd: `${cpio}.zst`, osRelease: ukiOsRelease(rec.version), out: efi,
        cmdline: verity ? cmdline : cmdline.replace(/(^| )kiln\.verity=\S+/, '').trim() });
      const disk = join(tmp, `${name}.raw`);
      await $({ quiet: true })`cp --sparse=always ${raw} ${disk}`;
      await mtools`mcopy -o -i ${`${disk}@@1M`} ${efi} ${`::/EFI/Linux/${entryName('a', 3)}`}`;
      return disk;
    };
    const disks = { on: await variant('verity', true), off: await variant('plain', false) };

    const f: VerityFigures = { treeBytes, dataBytes, withVerity: [], withoutVerity: [], stage1WithVerity: [], stage1WithoutVerity: [], accel: '' };
    for (let i = 0; i < (o.rounds ?? 2); i++) {
      for (const v of ['on', 'off'] as const) {
        // A copy per boot: boot counting renames the entry, the data partition is formatted.
        const disk = join(tmp, 'boot.raw');
        await $({ quiet: true })`cp --sparse=always ${disks[v]} ${disk}`;
        const vm = await Vm.start({ arch, disk, memMiB: o.memMiB ?? 256, allowReboot: false });
        try {
          const s1 = await vm.waitFor(/kiln-stage1: started/, 300_000).then(() => vm.elapsed());
          const chain = await vm.waitFor(/kiln: boot chain: secure-boot=\S+ root=(\S+)[\r\n]/, 300_000);
          // The variant must be what it claims, or the comparison means nothing.
          if (chain[1] !== (v === 'on' ? 'verified' : 'unverified')) throw new Error(`the ${v === 'on' ? 'verity' : 'plain'} boot reported root=${chain[1]}`);
          await vm.waitFor(/kiln: ready /, 300_000);
          const ready = vm.elapsed();
          (v === 'on' ? f.withVerity : f.withoutVerity).push(ready);
          (v === 'on' ? f.stage1WithVerity : f.stage1WithoutVerity).push(ready - s1);
          f.accel = vm.accel;
        } finally { await vm.kill(); rmSync(disk, { force: true }); }
      }
    }
    const on = median(f.withVerity)!, off = median(f.withoutVerity)!;
    const s1on = median(f.stage1WithVerity)!, s1off = median(f.stage1WithoutVerity)!;
    const list = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(', ');
    row('verity: hash tree (superblock + tree)', `${treeBytes} bytes, ${(100 * treeBytes / dataBytes).toFixed(2)} % of the ${(dataBytes / 1048576).toFixed(1)} MiB root`);
    row(`verity: QEMU start -> ready, with / without (${f.accel}, median of ${f.withVerity.length})`, `${on.toFixed(1)} s / ${off.toFixed(1)} s = ${(on / off).toFixed(3)}x (boots: ${list(f.withVerity)} / ${list(f.withoutVerity)})`);
    row('verity: stage-1 start -> ready, with / without', `${s1on.toFixed(1)} s / ${s1off.toFixed(1)} s = ${(s1on / s1off).toFixed(3)}x (+${(s1on - s1off).toFixed(2)} s)`);
    return f;
  } finally { rmSync(tmp, { recursive: true, force: true }); }
}

// Alone: the image bench/run.ts measures (same options, so an existing build is reused), or
// the build already in --dir (a folder with build.json and its .work, e.g. out/update-1.1.0).
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({ options: { arch: { type: 'string', default: 'x86_64' }, rounds: { type: 'string', default: '2' }, dir: { type: 'string' } } });
  const arch = values.arch as Arch;
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) throw new Error(`--rounds ${values.rounds}: give a whole number of boots per variant, 1 to 20`);
  let dir = values.dir, rec: BuildRecord;
  if (dir) {
    const f = join(dir, 'build.json');
    if (!existsSync(f)) throw new Error(`--dir ${dir} has no build.json: give the folder a kiln build wrote (its --out)`);
    rec = JSON.parse(readFileSync(f, 'utf8')) as BuildRecord;
  } else {
    const { K3S_STANDIN } = await import('../test/e2e/image.ts');
    dir = join(REPO, 'out', `bench-${arch}`, 'a');
    rec = await build({ arches: [arch], out: dir, log: createLogger({ quiet: true }), k3sBinary: process.env.KILN_BENCH_REAL_K3S ? undefined : K3S_STANDIN });
  }
  await verityBench({ arch, dir, rec, rounds });
}
