// Delta updates against a real HTTP server (updater-harness.ts): the node assembles v2 from the
// chunks of its booted v1 and fetches only the rest by Range requests; it resumes after an
// interruption, and falls back to the full download (counted) when the index is missing, the
// server ignores Range, or a chunk does not verify.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DELTA_FILE } from '../../init/update/updater.ts';
import { releaseCli } from '../../builder/release.ts';
import { imageLength } from '../../init/update/delta.ts';
import { open } from 'node:fs/promises';
import { world, type World } from './updater-harness.ts';

let w: World;
test.after.each(async () => { await w?.close(); });

const ROOT = (v: string) => `/stable/${v}/x86_64/fixture-kiln-${v}-x86_64.root.squashfs`;

/** Incompressible, deterministic bytes (a squashfs image is compressed data too). */
function stream(n: number, seed: string): Buffer {
  const out = Buffer.alloc(n);
  for (let off = 0, i = 0; off < n; off += 32, i++) createHash('sha256').update(`${seed}:${i}`).digest().copy(out, off);
  return out;
}
const V1 = stream(3 << 20, 'root-v1');
/** v1 with two changed regions, an insertion that shifts everything after the middle, and a new tail. */
function v2Of(v1: Buffer): Buffer {
  const b = Buffer.from(v1);
  stream(3000, 'patch-a').copy(b, 200_000);
  stream(500, 'patch-b').copy(b, 2_500_000);
  return Buffer.concat([b.subarray(0, 1_500_000), stream(7000, 'inserted'), b.subarray(1_500_000), stream(40_000, 'new tail')]);
}
const V2 = v2Of(V1);
const rootBytes = (w: World, v: string) => w.server.requests.filter((q) => q.url === ROOT(v)).reduce((s, q) => s + q.sent, 0);
const slotB = (w: World, n: number) => readFileSync(w.slots.b).subarray(0, n);
const deltaRecord = (w: World) => JSON.parse(readFileSync(join(w.stateBase, 'stable', DELTA_FILE), 'utf8'));

test('v1 -> v2 by delta: only the changed chunks are fetched, by Range, and slot b holds v2', async () => {
  w = await world('uefi', V1);
  await w.publish('2.0.0', { root: V2 });
  const u = w.updater();
  const r = await u.apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(slotB(w, V2.length).equals(V2));
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+3.efi']);
  const sent = rootBytes(w, '2.0.0');
  assert.ok(sent > 0 && sent < 0.25 * V2.length, `${sent} of ${V2.length} bytes fetched`);
  const gets = w.server.requests.filter((q) => q.url === ROOT('2.0.0'));
  assert.ok(gets.every((q) => q.status === 206 && /^bytes=\d+-\d+$/.test(q.range ?? '')), JSON.stringify(gets));
  assert.ok(gets.length <= 5, `${gets.length} requests: adjacent chunks go in one`);
  const d = deltaRecord(w);
  assert.is(d.last.mode, 'delta');
  assert.is(d.last.fetched, sent);
  assert.equal(d.fallbacks, { 'no-index': 0, 'no-range': 0, 'bad-chunk': 0, 'bad-image': 0, local: 0 });
  assert.ok(u.status().some((l) => /^delta: last root 2\.0\.0 by delta: fetched \d+ of \d+ bytes/.test(l)), u.status().join('\n'));
});

test('the old content of the target slot counts too: chunks in place are kept, moved ones copied', async () => {
  w = await world('uefi', V1);
  await w.publish('2.0.0', { root: V2 });
  // Slot a (booted) holds something unrelated; slot b holds v1 from an earlier update.
  writeFileSync(w.slots.a, stream(1 << 20, 'unrelated'));
  writeFileSync(w.slots.b, V1);
  const r = await w.updater().apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(slotB(w, V2.length).equals(V2));
  assert.ok(rootBytes(w, '2.0.0') < 0.25 * V2.length, `${rootBytes(w, '2.0.0')} bytes fetched`);
});

test('an interrupted delta resumes: the chunks written are found in place, only the rest is fetched', async () => {
  w = await world('uefi', stream(3 << 20, 'other'));
  await w.publish('2.0.0', { root: V2 });
  w.server.cutNext(ROOT('2.0.0'), 1_600_000);
  const first = await w.updater({ downloadAttempts: 1 }).apply();
  assert.is(first.ok, false);
  assert.is(!first.ok && first.stage, 'download');
  assert.equal(w.entries(), ['kiln-a.efi']);
  assert.match(!first.ok ? first.message : '', /the next attempt resumes/);
  const before = w.server.requests.length;
  // A new updater process, as after a power cut.
  const second = await w.updater().apply();
  assert.ok(second.ok, JSON.stringify(second));
  assert.ok(slotB(w, V2.length).equals(V2));
  const again = w.server.requests.slice(before).filter((q) => q.url === ROOT('2.0.0'));
  const refetched = again.reduce((s, q) => s + q.sent, 0);
  assert.ok(refetched <= V2.length - 1_600_000 + (256 << 10), `${refetched} bytes fetched after the cut`);
  assert.ok(Number(/^bytes=(\d+)-/.exec(again[0]!.range!)![1]) > 1_000_000, `resumed at ${again[0]!.range}`);
  assert.is(deltaRecord(w).last.mode, 'delta');
});

test('a server that ignores Range (200): falls back to the full download, counted, and succeeds', async () => {
  w = await world('uefi', V1);
  await w.publish('2.0.0', { root: V2 });
  w.server.ignoreRange = true;
  const u = w.updater();
  const r = await u.apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(slotB(w, V2.length).equals(V2));
  const d = deltaRecord(w);
  assert.is(d.fallbacks['no-range'], 1);
  assert.is(d.last.mode, 'full');
  assert.is(d.last.fallback, 'no-range');
  assert.ok(w.logs.some((l) => /falls back to the full download \(no-range\)/.test(l)));
  assert.ok(u.status().some((l) => /by full download \(delta fell back: no-range\); fallbacks no-index 0, no-range 1/.test(l)), u.status().join('\n'));
});

test('a tampered chunk is refused before it is written: fallback to the full download, counted', async () => {
  w = await world('uefi', V1);
  await w.publish('2.0.0', { root: V2 });
  const file = join(w.pub, ROOT('2.0.0'));
  // Range answers carry a flipped byte; the whole file is served intact.
  w.server.route(ROOT('2.0.0'), (req, res) => {
    const data = readFileSync(file);
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!m) { res.setHeader('content-length', data.length); res.end(data); return; }
    const body = Buffer.from(data.subarray(Number(m[1]), Number(m[2]) + 1));
    body[body.length >> 1] ^= 1;
    res.statusCode = 206;
    res.setHeader('content-range', `bytes ${m[1]}-${m[2]}/${data.length}`);
    res.setHeader('content-length', body.length);
    res.end(body);
  });
  const r = await w.updater().apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(slotB(w, V2.length).equals(V2));
  assert.is(deltaRecord(w).fallbacks['bad-chunk'], 1);
  assert.ok(w.logs.some((l) => /\(bad-chunk\): chunk at byte \d+ .* hashes to/.test(l)));
});

test('no index (deleted from the tree): fallback to the full download, counted', async () => {
  w = await world('uefi', V1);
  await w.publish('2.0.0', { root: V2 });
  rmSync(join(w.pub, `${ROOT('2.0.0')}.chunks`));
  const r = await w.updater().apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(slotB(w, V2.length).equals(V2));
  assert.is(deltaRecord(w).fallbacks['no-index'], 1);
  assert.is(rootBytes(w, '2.0.0'), V2.length);
});

test('an index that is not what the manifest signed is never used', async () => {
  w = await world('uefi', V1);
  await w.publish('2.0.0', { root: V2 });
  const f = join(w.pub, `${ROOT('2.0.0')}.chunks`);
  writeFileSync(f, readFileSync(f, 'utf8').replace(/"[0-9a-f]{64}"\]/, `"${'0'.repeat(64)}"]`));
  const r = await w.updater().apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.is(deltaRecord(w).fallbacks['no-index'], 1);
  assert.ok(w.logs.some((l) => /but the signed manifest says/.test(l)));
});

test('file:// channels take the same delta path', async () => {
  w = await world('uefi', V1);
  await w.publish('2.0.0', { root: V2 });
  const r = await w.updater({ channelUrl: pathToFileURL(w.pub).href }).apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(slotB(w, V2.length).equals(V2));
  assert.is(w.server.requests.length, 0);
  const d = deltaRecord(w);
  assert.is(d.last.mode, 'delta');
  assert.ok(d.last.fetched < 0.25 * V2.length, `${d.last.fetched} bytes read from the tree`);
});

test('kiln release plan runs the node\'s planning: its last line is the bytes the node then fetches', async () => {
  w = await world('uefi', V1);
  await w.publish('2.0.0', { root: V2 });
  const seed = join(w.dir, 'seed.root.squashfs');
  writeFileSync(seed, V1);
  const out: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => { out.push(a.join(' ')); };
  let code: number;
  try { code = await releaseCli('release', ['plan'], { seed, site: w.pub, channel: 'stable' }); } finally { console.log = log; }
  assert.is(code, 0, out.join('\n'));
  const m = /^would download (\d+) of (\d+) bytes \((\d+\.\d)%\)$/.exec(out.at(-1)!);
  assert.ok(m, out.join('\n'));
  assert.is(Number(m![2]), V2.length);
  const r = await w.updater().apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.is(Number(m![1]), rootBytes(w, '2.0.0'), 'the node fetched exactly what the plan said');
  assert.is(m![3], (100 * Number(m![1]) / V2.length).toFixed(1));
});

test('a dripping server: the download deadline ends the delta without a fallback; the next poll resumes it', async () => {
  w = await world('uefi', stream(3 << 20, 'other'));
  await w.publish('2.0.0', { root: V2 });
  const file = join(w.pub, ROOT('2.0.0'));
  w.server.route(ROOT('2.0.0'), (req, res) => {
    const data = readFileSync(file);
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')!;
    const body = data.subarray(Number(m[1]), Number(m[2]) + 1);
    res.writeHead(206, { 'content-length': body.length, 'content-range': `bytes ${m[1]}-${m[2]}/${data.length}` });
    let at = 0;
    const timer = setInterval(() => { if (res.destroyed || at >= body.length) { clearInterval(timer); res.end(); return; } res.write(body.subarray(at, at += 20_000)); }, 50);
    res.on('close', () => clearInterval(timer));
  });
  const r = await w.updater({ downloadDeadlineMs: 4000, downloadAttempts: 5 }).apply();
  assert.is(!r.ok && r.stage, 'download', JSON.stringify(r));
  assert.match(!r.ok ? r.message : '', /download deadline of 4 s passed \(delta: \d+ bytes of this range still missing; the chunks written are kept/);
  assert.not.ok(w.logs.some((l) => /falls back/.test(l)), 'a slow network is no reason for the full download');
  w.server.route(ROOT('2.0.0'), null);
  const before = w.server.requests.length;
  const ok = await w.updater().apply();
  assert.ok(ok.ok, JSON.stringify(ok));
  assert.ok(slotB(w, V2.length).equals(V2));
  const after = w.server.requests.slice(before).filter((q) => q.url === ROOT('2.0.0')).reduce((s, q) => s + q.sent, 0);
  assert.ok(after < V2.length, `${after} bytes fetched after the deadline: what arrived before it was kept`);
});

test('a slot is read as far as its squashfs and verity tree reach, not the whole partition', async () => {
  w = await world('uefi', V1);
  const f = join(w.dir, 'slot');
  const sb = Buffer.alloc(8 << 20);
  sb.write('hsqs', 0, 'latin1');
  sb.writeBigUInt64LE(1_000_000n, 40);
  writeFileSync(f, sb);
  const fh = await open(f, 'r');
  try { assert.is(await imageLength(fh), 1_003_520 + 15_625 + (1 << 20)); } finally { await fh.close(); }
  writeFileSync(f, V1);
  const fh2 = await open(f, 'r');
  try { assert.is(await imageLength(fh2), undefined); } finally { await fh2.close(); }
});

test('delta: false always downloads the whole image', async () => {
  w = await world('uefi', V1);
  await w.publish('2.0.0', { root: V2 });
  const r = await w.updater({ delta: false }).apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.is(rootBytes(w, '2.0.0'), V2.length);
});

test.run();
