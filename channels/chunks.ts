// Content-defined chunks of a root image, the index `kiln release` publishes next to it, and the
// plan a node makes from them: which chunks it already holds (in its booted slot, or in place in
// the slot it is about to overwrite) and which byte ranges of the full image it must fetch.
// Pure (no I/O): the workstation (`kiln release`, `kiln release plan`) and the node's updater
// share it, so the plan a publisher previews is the plan a node makes. Format and rules:
// channels/README.md ("Delta updates").
import { createHash, type Hash } from 'node:crypto';

/** The index format; a node refuses any other. */
export const INDEX_SCHEMA = 'kiln-chunks/1';
/** Largest index a node reads: about 90 bytes per chunk, so room for ~90 000 chunks (a 5 GiB image at 64 KiB). */
export const MAX_INDEX_BYTES = 8 << 20;

export interface ChunkParams { min: number; avg: number; max: number }
/** Measured on real roots (channels/README.md): smaller averages find a little more, but the index and the request count grow. */
export const DEFAULT_PARAMS: ChunkParams = { min: 16 << 10, avg: 64 << 10, max: 256 << 10 };

/**
 * The gear table: 256 fixed 32-bit values, the first four bytes of sha256("kiln/gear/1:<i>").
 * Derived, never random, so every machine cuts the same bytes at the same places; GEAR_ID
 * names the table in the index so a node never plans with boundaries it cannot reproduce.
 */
export const GEAR: Int32Array = (() => {
  const t = new Int32Array(256);
  for (let i = 0; i < 256; i++) t[i] = createHash('sha256').update(`kiln/gear/1:${i}`).digest().readInt32BE(0);
  return t;
})();
export const GEAR_ID = createHash('sha256').update(Buffer.from(GEAR.buffer, GEAR.byteOffset, GEAR.byteLength)).digest('hex');

export interface Chunk { offset: number; length: number; sha256: string }

function checkParams(p: ChunkParams): void {
  const pow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
  if (!pow2(p.avg) || !Number.isInteger(p.min) || !Number.isInteger(p.max) || p.min < 1024 || p.min > p.avg || p.avg > p.max || p.max > 16 << 20 || p.avg < 4096) {
    throw new Error(`chunk parameters ${JSON.stringify(p)}: need 1 KiB <= min <= avg <= max <= 16 MiB, avg a power of two of at least 4 KiB`);
  }
}

/**
 * A streaming FastCDC-style chunker: a gear rolling hash (h = 2h + GEAR[byte], 32 bits, so
 * each cut depends on the last 32 bytes only), no cut before `min`, a forced cut at `max`, and
 * normalised chunking: a mask with two more bits before `avg` and two fewer after it, which
 * pulls chunk sizes towards `avg`. The mask takes the hash's top bits, the ones that depend on
 * the whole 32-byte window. Feed it any split of the bytes: the chunks are the same.
 */
export class Chunker {
  private h = 0;
  private len = 0;
  private start = 0;
  private hash: Hash = createHash('sha256');
  private readonly maskS: number;
  private readonly maskL: number;
  constructor(readonly params: ChunkParams = DEFAULT_PARAMS) {
    checkParams(params);
    const bits = Math.log2(params.avg);
    const top = (n: number) => (((1 << n) - 1) << (32 - n)) | 0;
    this.maskS = top(Math.min(31, bits + 2));
    this.maskL = top(Math.max(1, bits - 2));
  }

  /** Feeds bytes; each chunk completed by them is appended to `out`. */
  push(buf: Uint8Array, out: Chunk[]): void {
    const { min, avg, max } = this.params;
    const n = buf.length;
    let i = 0, seg = 0;
    let h = this.h, len = this.len;
    while (i < n) {
      if (len < min) {
        // Bytes before the minimum are never a cut point: skip them without hashing.
        const take = Math.min(min - len, n - i);
        i += take; len += take;
        continue;
      }
      let cut = false;
      while (i < n) {
        h = ((h << 1) + GEAR[buf[i]!]!) | 0;
        i++; len++;
        if (len >= max || (h & (len < avg ? this.maskS : this.maskL)) === 0) { cut = true; break; }
      }
      if (cut) {
        this.hash.update(buf.subarray(seg, i));
        out.push({ offset: this.start, length: len, sha256: this.hash.digest('hex') });
        this.hash = createHash('sha256');
        this.start += len;
        seg = i; h = 0; len = 0;
      }
    }
    if (seg < n) this.hash.update(buf.subarray(seg, n));
    this.h = h; this.len = len;
  }

  /** The last, possibly short, chunk. */
  end(out: Chunk[]): void {
    if (this.len > 0) out.push({ offset: this.start, length: this.len, sha256: this.hash.digest('hex') });
    this.len = 0; this.h = 0; this.hash = createHash('sha256');
  }
}

export function chunkBuffer(buf: Uint8Array, params: ChunkParams = DEFAULT_PARAMS): Chunk[] {
  const out: Chunk[] = [];
  const c = new Chunker(params);
  c.push(buf, out);
  c.end(out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The index: JSON, like the manifest, so it is read with the same tools (jq) and parsed without
// a format of our own; chunks as [offset, length, sha256] triples, which keeps it near 90 bytes a
// chunk (~70 KiB for a 50 MiB root, under 0.2% of what it saves). It names the image it
// describes (size, sha256) and how it was cut (params, gear), and is itself listed with its size
// and sha256 in the signed manifest, so a node trusts it exactly as far as it trusts the manifest.

export interface ChunkIndex {
  schema: typeof INDEX_SCHEMA;
  size: number;
  sha256: string;
  params: ChunkParams;
  gear: string;
  chunks: Chunk[];
}

export function makeIndex(chunks: Chunk[], image: { size: number; sha256: string }, params: ChunkParams = DEFAULT_PARAMS): ChunkIndex {
  return { schema: INDEX_SCHEMA, size: image.size, sha256: image.sha256, params, gear: GEAR_ID, chunks };
}

export function serializeIndex(ix: ChunkIndex): Buffer {
  const head = JSON.stringify({ schema: ix.schema, size: ix.size, sha256: ix.sha256, params: ix.params, gear: ix.gear });
  const rows = ix.chunks.map((c) => `[${c.offset},${c.length},"${c.sha256}"]`).join(',\n');
  return Buffer.from(`${head.slice(0, -1)},"chunks":[\n${rows}\n]}\n`);
}

/**
 * Parses an index and checks everything a plan relies on: the format, that it describes
 * `image` (the signed root artifact), that it was cut with this gear table and sane
 * parameters, and that its chunks tile the image exactly. Throws with the first problem.
 */
export function parseIndex(bytes: Uint8Array, image: { size: number; sha256: string }): ChunkIndex {
  if (bytes.length > MAX_INDEX_BYTES) throw new Error(`chunk index is ${bytes.length} bytes, more than the ${MAX_INDEX_BYTES} allowed`);
  let o: Record<string, unknown>;
  try { o = JSON.parse(Buffer.from(bytes).toString('utf8')); } catch (e) { throw new Error(`chunk index is not JSON: ${(e as Error).message}`); }
  if (!o || typeof o !== 'object') throw new Error('chunk index is not a JSON object');
  if (o.schema !== INDEX_SCHEMA) throw new Error(`chunk index schema is ${JSON.stringify(o.schema)?.slice(0, 60)}, this node reads ${INDEX_SCHEMA}`);
  if (o.size !== image.size || o.sha256 !== image.sha256) throw new Error(`chunk index describes ${String(o.size).slice(0, 20)} bytes with sha256 ${String(o.sha256).slice(0, 64)}, not the signed root (${image.size} bytes, ${image.sha256})`);
  if (o.gear !== GEAR_ID) throw new Error(`chunk index was cut with another gear table (${String(o.gear).slice(0, 64)})`);
  const p = o.params as ChunkParams;
  if (!p || typeof p !== 'object') throw new Error('chunk index has no params');
  checkParams({ min: p.min, avg: p.avg, max: p.max });
  if (!Array.isArray(o.chunks)) throw new Error('chunk index has no chunks[]');
  const chunks: Chunk[] = [];
  let at = 0;
  for (const [i, c] of (o.chunks as unknown[]).entries()) {
    if (!Array.isArray(c) || c.length !== 3) throw new Error(`chunk index: chunks[${i}] is not [offset, length, sha256]`);
    const [offset, length, sha] = c as [unknown, unknown, unknown];
    if (offset !== at) throw new Error(`chunk index: chunks[${i}] starts at ${String(offset).slice(0, 20)}, expected ${at} (chunks must tile the image)`);
    if (!Number.isSafeInteger(length) || (length as number) < 1 || (length as number) > p.max) throw new Error(`chunk index: chunks[${i}] length ${String(length).slice(0, 20)} is not 1..${p.max}`);
    if (typeof sha !== 'string' || !/^[0-9a-f]{64}$/.test(sha)) throw new Error(`chunk index: chunks[${i}] sha256 is not 64 hex digits`);
    chunks.push({ offset: at, length: length as number, sha256: sha });
    at += length as number;
  }
  if (at !== image.size) throw new Error(`chunk index: chunks cover ${at} bytes, the image has ${image.size}`);
  return { schema: INDEX_SCHEMA, size: image.size, sha256: image.sha256, params: { min: p.min, avg: p.avg, max: p.max }, gear: GEAR_ID, chunks };
}

// ---------------------------------------------------------------------------------------------
// Planning

/** Where a chunk's bytes can be read locally: a source (a slot device) and an offset in it. */
export interface LocalChunk { source: string; offset: number }
export interface Copy { source: string; from: number; to: number; length: number; sha256: string }
/** A byte range [start, end) of the full artifact to fetch, and the index chunks it carries. */
export interface FetchRange { start: number; end: number; chunks: number[] }
export interface DeltaPlan {
  /** Index chunks already in place in the target (a resumed or repeated update): nothing to do. */
  inPlace: number[];
  copies: Copy[];
  ranges: FetchRange[];
  fetchBytes: number;
  localBytes: number;
  totalBytes: number;
}

/**
 * Merges byte ranges that overlap, touch, or lie at most `maxGap` bytes apart (the gap is then
 * fetched too: one request instead of two). Sorted by start.
 */
export function coalesceRanges(ranges: FetchRange[], maxGap = 0): FetchRange[] {
  const sorted = [...ranges].filter((r) => r.end > r.start).sort((a, b) => a.start - b.start || a.end - b.end);
  const out: FetchRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end + maxGap) {
      last.end = Math.max(last.end, r.end);
      for (const c of r.chunks) if (!last.chunks.includes(c)) last.chunks.push(c);
    } else out.push({ start: r.start, end: r.end, chunks: [...r.chunks] });
  }
  return out;
}

/**
 * The node's plan: for each chunk of the new image, in place already (`inPlace[i]` true), else
 * copied from the first local source that has a chunk with its sha256, else fetched. Fetched
 * chunks are coalesced into ranges of adjacent (or `maxGap`-close) bytes.
 */
export function planDelta(index: ChunkIndex, local: Map<string, LocalChunk>, inPlace: readonly boolean[] = [], maxGap = 0): DeltaPlan {
  const plan: DeltaPlan = { inPlace: [], copies: [], ranges: [], fetchBytes: 0, localBytes: 0, totalBytes: index.size };
  const want: FetchRange[] = [];
  index.chunks.forEach((c, i) => {
    if (inPlace[i]) { plan.inPlace.push(i); plan.localBytes += c.length; return; }
    const l = local.get(c.sha256);
    if (l) { plan.copies.push({ source: l.source, from: l.offset, to: c.offset, length: c.length, sha256: c.sha256 }); plan.localBytes += c.length; return; }
    want.push({ start: c.offset, end: c.offset + c.length, chunks: [i] });
  });
  plan.ranges = coalesceRanges(want, maxGap);
  plan.fetchBytes = plan.ranges.reduce((s, r) => s + r.end - r.start, 0);
  return plan;
}

/** Local chunks by sha256 from any number of sources, earlier sources first. */
export function localMap(sources: { source: string; chunks: Chunk[] }[]): Map<string, LocalChunk> {
  const m = new Map<string, LocalChunk>();
  for (const s of sources) for (const c of s.chunks) if (!m.has(c.sha256)) m.set(c.sha256, { source: s.source, offset: c.offset });
  return m;
}

/** `would download N of M bytes (P%)`: the line `kiln release plan` ends with. */
export function planSummary(plan: DeltaPlan): string {
  const pct = plan.totalBytes ? (100 * plan.fetchBytes) / plan.totalBytes : 0;
  return `would download ${plan.fetchBytes} of ${plan.totalBytes} bytes (${pct.toFixed(1)}%)`;
}
