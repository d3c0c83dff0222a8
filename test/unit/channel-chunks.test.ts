// The chunker, the chunk index format and the range planner (channels/chunks.ts): byte-exact,
// so a publisher and every node cut the same image at the same places.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import {
  Chunker, DEFAULT_PARAMS, GEAR, GEAR_ID, INDEX_SCHEMA, MAX_INDEX_BYTES, chunkBuffer, coalesceRanges, localMap, makeIndex, parseIndex,
  planDelta, planSummary, serializeIndex, type Chunk,
} from '../../channels/chunks.ts';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
/** Deterministic incompressible bytes: sha256("<seed>:<i>") blocks. */
function stream(n: number, seed: string): Buffer {
  const out = Buffer.alloc(n);
  for (let off = 0, i = 0; off < n; off += 32, i++) createHash('sha256').update(`${seed}:${i}`).digest().copy(out, off);
  return out;
}

test('the gear table is derived from sha256, not random: known values', () => {
  assert.is(GEAR.length, 256);
  assert.is(GEAR[0], 2075926102);
  assert.is(GEAR[255], -1080284368);
  assert.is(GEAR_ID, '4c2a698935026ccbcc9ca014f398cde7f9517b98e2cd888b17df05c667338caf');
});

test('known vector: 1 MiB of a fixed stream cuts at the same places on every machine', () => {
  const c = chunkBuffer(stream(1 << 20, 'kiln-test'));
  assert.equal(c.map((x) => x.length), [59993, 135859, 68230, 97334, 47996, 106350, 71016, 77096, 65536, 74766, 70792, 87342, 82609, 3657]);
  assert.is(c[0]!.sha256, '4fafa9605f3bee5229edc796bfa2b172d3479f968ad71dd186b774dca7464374');
  const small = chunkBuffer(stream(1 << 20, 'kiln-test'), { min: 1024, avg: 4096, max: 16384 });
  assert.is(small.length, 224);
  assert.equal(small.slice(0, 5).map((x) => x.length), [4907, 4381, 4706, 4572, 4857]);
});

test('chunks tile the input, respect min and max, and do not depend on how the bytes are fed', () => {
  const b = stream(3 << 20, 'tile');
  const whole = chunkBuffer(b);
  let at = 0;
  for (const [i, c] of whole.entries()) {
    assert.is(c.offset, at);
    assert.is(c.sha256, sha(b.subarray(c.offset, c.offset + c.length)));
    assert.ok(c.length <= DEFAULT_PARAMS.max);
    if (i < whole.length - 1) assert.ok(c.length >= DEFAULT_PARAMS.min, `chunk ${i} is ${c.length}`);
    at += c.length;
  }
  assert.is(at, b.length);
  const fed = (buf: Buffer, step: number) => {
    const out: Chunk[] = [];
    const ch = new Chunker();
    for (let o = 0; o < buf.length; o += step) ch.push(buf.subarray(o, o + step), out);
    ch.end(out);
    return out;
  };
  for (const step of [4095, 65536, 1_000_003]) assert.equal(fed(b, step), whole, `fed ${step} bytes at a time`);
  const head = b.subarray(0, 300 << 10);
  assert.equal(fed(head, 1), chunkBuffer(head), 'fed a byte at a time');
  // A run of zeros cannot produce a cut (the hash of zeros is constant): max applies.
  assert.equal(chunkBuffer(Buffer.alloc(600 << 10)).map((c) => c.length), [256 << 10, 256 << 10, 88 << 10]);
});

test('content-defined: an insertion shifts later bytes, but their chunks are found again', () => {
  const v1 = stream(4 << 20, 'v1');
  const v2 = Buffer.concat([v1.subarray(0, 2 << 20), Buffer.from('a new file in the middle'.repeat(100)), v1.subarray(2 << 20)]);
  const a = chunkBuffer(v1), b = chunkBuffer(v2);
  const have = new Set(a.map((c) => c.sha256));
  const missing = b.filter((c) => !have.has(c.sha256)).reduce((s, c) => s + c.length, 0);
  assert.ok(missing < 3 * DEFAULT_PARAMS.max, `${missing} bytes differ after a 2400-byte insertion`);
});

test('bad parameters are refused with the rule', () => {
  assert.throws(() => new Chunker({ min: 100, avg: 64 << 10, max: 256 << 10 }), /need 1 KiB <= min/);
  assert.throws(() => new Chunker({ min: 16 << 10, avg: 60000, max: 256 << 10 }), /power of two/);
});

// ---------------------------------------------------------------------------------------------
// index

const IMG = stream(1 << 20, 'img');
const IMAGE = { size: IMG.length, sha256: sha(IMG) };
const INDEX = makeIndex(chunkBuffer(IMG), IMAGE);

test('index: serialised, parsed back exactly; bound to its image', () => {
  const bytes = serializeIndex(INDEX);
  assert.ok(bytes.length < 100 * INDEX.chunks.length + 400, `${bytes.length} bytes for ${INDEX.chunks.length} chunks`);
  const back = parseIndex(bytes, IMAGE);
  assert.equal(back, INDEX);
  assert.is(back.schema, INDEX_SCHEMA);
  assert.throws(() => parseIndex(bytes, { ...IMAGE, sha256: '0'.repeat(64) }), /not the signed root/);
});

test('index: refused when it does not tile the image, names another gear, is malformed or too large', () => {
  const edit = (f: (o: Record<string, any>) => void) => { const o = JSON.parse(serializeIndex(INDEX).toString()); f(o); return Buffer.from(JSON.stringify(o)); };
  assert.throws(() => parseIndex(edit((o) => { o.chunks[1][0] += 1; }), IMAGE), /chunks\[1\] starts at/);
  assert.throws(() => parseIndex(edit((o) => { o.chunks.pop(); }), IMAGE), /cover \d+ bytes, the image has/);
  assert.throws(() => parseIndex(edit((o) => { o.chunks[0][2] = 'x'; }), IMAGE), /sha256 is not 64 hex/);
  assert.throws(() => parseIndex(edit((o) => { o.chunks[0][1] = 1 << 30; }), IMAGE), /length .* is not 1\.\./);
  assert.throws(() => parseIndex(edit((o) => { o.gear = 'f'.repeat(64); }), IMAGE), /another gear table/);
  assert.throws(() => parseIndex(edit((o) => { o.schema = 'kiln-chunks/2'; }), IMAGE), /this node reads kiln-chunks\/1/);
  assert.throws(() => parseIndex(Buffer.from('{'), IMAGE), /not JSON/);
  assert.throws(() => parseIndex(Buffer.alloc(MAX_INDEX_BYTES + 1, 0x20), IMAGE), /more than the \d+ allowed/);
});

// ---------------------------------------------------------------------------------------------
// planning

test('ranges: adjacent and overlapping ones merge, a gap keeps them apart unless maxGap covers it', () => {
  const r = (start: number, end: number, ...chunks: number[]) => ({ start, end, chunks });
  assert.equal(coalesceRanges([r(10, 20, 1), r(0, 10, 0)]), [r(0, 20, 0, 1)], 'adjacent');
  assert.equal(coalesceRanges([r(0, 15, 0), r(10, 20, 1), r(12, 14, 1)]), [r(0, 20, 0, 1)], 'overlapping and contained');
  assert.equal(coalesceRanges([r(0, 10, 0), r(11, 20, 2)]), [r(0, 10, 0), r(11, 20, 2)], 'a one-byte gap');
  assert.equal(coalesceRanges([r(0, 10, 0), r(11, 20, 2)], 1), [r(0, 20, 0, 2)], 'a gap within maxGap');
  assert.equal(coalesceRanges([r(5, 5, 0)]), [], 'empty ranges dropped');
  assert.equal(coalesceRanges([]), []);
});

test('plan: in place, copied from a local source, and the missing chunks coalesced into ranges', () => {
  const ch = INDEX.chunks;
  assert.ok(ch.length >= 8);
  // The local source holds chunks 0, 1 and 5 (elsewhere); chunk 3 is already in place.
  const seedChunks: Chunk[] = [ch[5]!, ch[0]!, ch[1]!].map((c, i) => ({ ...c, offset: 1000 * i }));
  const inPlace: boolean[] = []; inPlace[3] = true;
  const plan = planDelta(INDEX, localMap([{ source: 'booted', chunks: seedChunks }]), inPlace);
  assert.equal(plan.inPlace, [3]);
  assert.equal(plan.copies.map((c) => [c.source, c.from, c.to]), [['booted', 1000, ch[0]!.offset], ['booted', 2000, ch[1]!.offset], ['booted', 0, ch[5]!.offset]]);
  const end = (i: number) => ch[i]!.offset + ch[i]!.length;
  assert.equal(plan.ranges, [
    { start: ch[2]!.offset, end: end(2), chunks: [2] },
    { start: ch[4]!.offset, end: end(4), chunks: [4] },
    { start: ch[6]!.offset, end: IMAGE.size, chunks: ch.slice(6).map((_, i) => 6 + i) },
  ]);
  assert.is(plan.fetchBytes + plan.localBytes, IMAGE.size);
  assert.is(planSummary(plan), `would download ${plan.fetchBytes} of ${IMAGE.size} bytes (${(100 * plan.fetchBytes / IMAGE.size).toFixed(1)}%)`);
  // Nothing local: the whole image in one range.
  const none = planDelta(INDEX, new Map());
  assert.equal(none.ranges.map((r) => [r.start, r.end]), [[0, IMAGE.size]]);
  assert.is(planSummary(none), `would download ${IMAGE.size} of ${IMAGE.size} bytes (100.0%)`);
});

test.run();
