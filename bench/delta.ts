// npm run bench:delta: the bytes a node running v1 fetches to install v2 through a delta update,
// as a share of the full root image, for the scenarios of channels/README.md ("Measured
// savings"). Prints figures; asserts nothing.
//
// - version bump: two real builds that differ only in their version (the update tests' builds,
//   out/update-1.0.0 and out/update-1.1.0, or --v1/--v2), root images as released.
// - the other scenarios change v1's root tree (left by the build in <v1>/.work/<arch>/root, or
//   --tree) the way the update would, and squash both trees with the builder's own options and
//   dm-verity tree (builder/rootimage.ts, builder/verity.ts). A rebuilt binary differs almost
//   everywhere, so "changed" files get a byte perturbed every 512 bytes.
// - --blocks 128K,1M repeats the tree scenarios for other squashfs block sizes (item 5).
//
// deltaTable() is the same measure for `npm run bench`, on the bench's own builds.
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdtempSync, openSync, readSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { REPO } from '../builder/build.ts';
import { buildRootImage, SQUASHFS_BLOCK } from '../builder/rootimage.ts';
import { appendVerity } from '../builder/verity.ts';
import { DEFAULT_PARAMS, localMap, planDelta, makeIndex, type ChunkParams } from '../channels/chunks.ts';
import { scanFile } from '../init/update/delta.ts';
import { sha256Hex } from '../channels/manifest.ts';

const kib = (p: ChunkParams) => `${p.min >> 10}/${p.avg >> 10}/${p.max >> 10} KiB`;
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/** The root image in a build folder. */
export function rootOf(dir: string, arch: string): string | undefined {
  if (!existsSync(dir)) return undefined;
  const f = readdirSync(dir).find((n) => n.endsWith(`-${arch}.root.squashfs`));
  return f ? join(dir, f) : undefined;
}

export interface DeltaMeasure { size: number; fetch: number; ranges: number; chunks: number }
async function measure(oldImg: string, newImg: string, params: ChunkParams): Promise<DeltaMeasure> {
  const size = statSync(newImg).size;
  const n = await scanFile(newImg, size, { params });
  const index = makeIndex(n.chunks, { size, sha256: '0'.repeat(64) }, params);
  const o = await scanFile(oldImg, statSync(oldImg).size, { params });
  const plan = planDelta(index, localMap([{ source: 'old', chunks: o.chunks }]));
  return { size, fetch: plan.fetchBytes, ranges: plan.ranges.length, chunks: n.chunks.length };
}

/** A rebuilt binary: deterministic changes spread over the whole file. */
function perturb(file: string, seed: number) {
  const b = readFileSync(file);
  for (let i = seed % 512; i < b.length; i += 512) b[i] = (b[i]! ^ (0x5a + seed)) & 0xff;
  writeFileSync(file, b);
}
const walk = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? walk(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []);

export const SCENARIOS: { name: string; change(root: string): void }[] = [
  {
    name: "init's code changed",
    change(root) {
      // A fix in the middle of the bundle: everything after it shifts.
      const f = join(root, 'usr/lib/kiln/init.js');
      const s = readFileSync(f, 'utf8');
      const at = s.indexOf('\n', s.length >> 1);
      writeFileSync(f, `${s.slice(0, at)}\n// a changed line of init, with a new message for the operator\n${s.slice(at)}`);
    },
  },
  {
    name: 'one Debian package (libc6) updated',
    change(root) {
      const dir = readdirSync(join(root, 'lib')).map((d) => join(root, 'lib', d)).find((d) => /-linux-gnu$/.test(d))!;
      const libc = readdirSync(dir).filter((n) => /^(libc\.so|ld-linux|libm\.so|libresolv|libpthread|libdl|librt|libutil|libanl|libnss_)/.test(n));
      for (const n of libc) if (statSync(join(dir, n)).isFile()) perturb(join(dir, n), 7);
    },
  },
  {
    name: 'kernel update (all modules)',
    change(root) {
      const mods = join(root, 'lib/modules');
      for (const v of readdirSync(mods)) {
        for (const f of walk(join(mods, v))) perturb(f, 11);
        renameSync(join(mods, v), join(mods, `${v}-next`));
      }
    },
  },
  { name: 'Node.js minor update', change(root) { perturb(join(root, 'usr/bin/node'), 13); } },
];

export interface DeltaRow extends DeltaMeasure { scenario: string; block: string; params: ChunkParams }
export interface DeltaOptions {
  /** Root images of two real builds differing only in their version (the version bump row). */
  v1Root?: string; v2Root?: string;
  /** v1's root tree, for the other scenarios. */
  tree?: string;
  /**
   * How the tree scenarios squash (buildRootImage's source date and identity): the build's own,
   * and then `v1Image`, the build's root image of `tree` (verity tree included), stands for v1
   * instead of squashing the tree again. Without: a fixed date and 'bench'.
   */
  squash?: { sde: number; label: string; v1Image?: string };
  blocks?: string[];
  paramSets?: ChunkParams[];
  /** Only the scenarios whose name contains this ('version' for the bump). */
  only?: string;
  /** Each row as it is measured, and notes. */
  print?: (line: string) => void;
}

/**
 * The bytes a v1 node fetches for v2 per scenario, as planned by the node's own scan and planner.
 * Rows for what is missing are left out (and said through `print`).
 */
export async function deltaTable(o: DeltaOptions): Promise<DeltaRow[]> {
  const print = o.print ?? (() => {});
  const paramSets = o.paramSets ?? [DEFAULT_PARAMS];
  const rows: DeltaRow[] = [];
  const row = (scenario: string, block: string, params: ChunkParams, m: DeltaMeasure) => {
    rows.push({ scenario, block, params, ...m });
    print([scenario, block, kib(params), mib(m.size), mib(m.fetch), `${((100 * m.fetch) / m.size).toFixed(1)}%`, String(m.ranges), String(m.chunks)].join('  |  '));
  };
  const a = o.v1Root, b = o.v2Root;
  if (a && b && (!o.only || 'version'.includes(o.only))) {
    for (const p of paramSets) row('version bump only (real builds)', `${SQUASHFS_BLOCK} (built)`, p, await measure(a, b, p));
    // Builds from before roots carried their dm-verity tree: add it, as a release has it now.
    const squashEnd = (f: string) => { const h = Buffer.alloc(48); const fd = openSync(f, 'r'); readSync(fd, h, 0, 48, 0); closeSync(fd); return Math.ceil(Number(h.readBigUInt64LE(40)) / 4096) * 4096; };
    if (statSync(a).size <= squashEnd(a)) {
      const tmp = mkdtempSync(join(tmpdir(), 'kiln-bench-verity-'));
      try {
        const va = join(tmp, 'a'), vb = join(tmp, 'b');
        copyFileSync(a, va); copyFileSync(b, vb);
        await appendVerity(va); await appendVerity(vb);
        for (const p of paramSets) row('version bump, verity tree appended', `${SQUASHFS_BLOCK} (built)`, p, await measure(va, vb, p));
      } finally { rmSync(tmp, { recursive: true, force: true }); }
    }
  } else if (!a || !b) print('(version bump: no two builds to compare)');

  const tree = o.tree;
  if (!tree || !existsSync(tree)) {
    print(`(tree scenarios: no root tree${tree ? ` at ${tree}` : ''}; build once, or pass --tree)`);
    return rows;
  }
  const sde = o.squash?.sde ?? 1700000000, label = o.squash?.label ?? 'bench';
  const work = mkdtempSync(join(tmpdir(), 'kiln-bench-delta-'));
  try {
    for (const block of o.blocks ?? [SQUASHFS_BLOCK]) {
      const squash = async (dir: string, out: string) => { await buildRootImage(dir, out, 'squashfs', sde, label, { block }); await appendVerity(out); return out; };
      const built = o.squash?.v1Image && block === SQUASHFS_BLOCK;
      const base = built ? o.squash!.v1Image! : await squash(tree, join(work, `base-${block}.img`));
      print(`(${block} blocks: v1 root ${mib(statSync(base).size)}, sha256 ${sha256Hex(readFileSync(base)).slice(0, 12)})`);
      for (const s of SCENARIOS) {
        if (o.only && !s.name.includes(o.only)) continue;
        const t = join(work, 'tree');
        rmSync(t, { recursive: true, force: true });
        execFileSync('cp', ['-a', tree, t]);
        s.change(t);
        const img = await squash(t, join(work, `next-${block}.img`));
        for (const p of paramSets) row(s.name, block, p, await measure(base, img, p));
        rmSync(img, { force: true });
      }
      if (!built) rmSync(base, { force: true });
    }
  } finally { rmSync(work, { recursive: true, force: true }); }
  return rows;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      v1: { type: 'string' }, v2: { type: 'string' }, tree: { type: 'string' }, arch: { type: 'string', default: 'x86_64' },
      blocks: { type: 'string', default: SQUASHFS_BLOCK }, params: { type: 'string' },
      only: { type: 'string' },
    },
  });
  const arch = values.arch!;
  const v1Dir = values.v1 ?? join(REPO, 'out', 'update-1.0.0');
  const v2Dir = values.v2 ?? join(REPO, 'out', 'update-1.1.0');
  const paramSets: ChunkParams[] | undefined = values.params
    ? values.params.split(',').map((t) => { const [min, avg, max] = t.split('/').map((k) => Number(k) * 1024); return { min: min!, avg: avg!, max: max! }; })
    : undefined;
  console.log(['scenario', 'squashfs block', 'chunks min/avg/max', 'root', 'fetched', 'share', 'ranges', 'chunks'].join('  |  '));
  const v1Root = rootOf(v1Dir, arch), v2Root = rootOf(v2Dir, arch);
  if (!v1Root || !v2Root) console.log(`(version bump: no builds in ${v1Dir} and ${v2Dir}; make them with test/e2e/update-fixture.ts updateImage)`);
  await deltaTable({
    v1Root, v2Root, tree: values.tree ?? join(v1Dir, '.work', arch, 'root'), blocks: values.blocks!.split(','), paramSets, only: values.only,
    print: (l) => { if (!l.startsWith('(version bump:')) console.log(l); },
  });
}
