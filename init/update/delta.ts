// What a node (or `kiln release plan` on the workstation) knows about the bytes it already has:
// the content-defined chunks of a slot device or image file, and which chunks of a new image
// already sit in place in the slot about to be overwritten (a resumed or repeated update).
// The planning itself is channels/chunks.ts; this is its I/O edge. Format: channels/README.md.
import { createHash, type Hash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { Chunker, localMap, planDelta, type Chunk, type ChunkIndex, type ChunkParams, type DeltaPlan } from '../../channels/chunks.ts';

const BLOCK = 1 << 20;

/** Splits a stream at the index's boundaries and says which chunks hash as the index says. */
class InPlace {
  private i = 0;
  private filled = 0;
  private hash: Hash = createHash('sha256');
  readonly ok: boolean[];
  constructor(private readonly chunks: Chunk[]) { this.ok = new Array(chunks.length).fill(false); }
  push(buf: Uint8Array) {
    let pos = 0;
    while (pos < buf.length && this.i < this.chunks.length) {
      const c = this.chunks[this.i]!;
      const take = Math.min(c.length - this.filled, buf.length - pos);
      this.hash.update(buf.subarray(pos, pos + take));
      pos += take; this.filled += take;
      if (this.filled === c.length) {
        this.ok[this.i] = this.hash.digest('hex') === c.sha256;
        this.hash = createHash('sha256');
        this.i++; this.filled = 0;
      }
    }
  }
}

export interface Scan { chunks: Chunk[]; inPlace?: boolean[]; bytes: number }

/**
 * Reads up to `limit` bytes of an open file or block device (a block device's stat size is 0,
 * so it reads until `limit` or the end) and cuts them with the index's parameters. With
 * `against`, also reports which of its chunks are already at their offsets.
 */
export async function scanHandle(fh: FileHandle, limit: number, index: { params?: ChunkParams }, against?: ChunkIndex): Promise<Scan> {
  const chunker = new Chunker(index.params);
  const inPlace = against ? new InPlace(against.chunks) : undefined;
  const chunks: Chunk[] = [];
  const buf = Buffer.alloc(BLOCK);
  let pos = 0;
  while (pos < limit) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(BLOCK, limit - pos), pos);
    if (bytesRead === 0) break;
    const part = buf.subarray(0, bytesRead);
    chunker.push(part, chunks);
    inPlace?.push(part);
    pos += bytesRead;
  }
  chunker.end(chunks);
  return { chunks, inPlace: inPlace?.ok, bytes: pos };
}

export async function scanFile(path: string, limit: number, index: { params?: ChunkParams }, against?: ChunkIndex): Promise<Scan> {
  const fh = await open(path, 'r');
  try { return await scanHandle(fh, limit, index, against); } finally { await fh.close(); }
}

/**
 * How much of a slot to read for chunks: the old image is about as large as the new one, and
 * a slot partition is usually much larger; reading twice the new size (at least 64 MiB more)
 * finds an older image that grew or shrank, without hashing gigabytes of unused partition.
 */
export const scanLimit = (newSize: number) => 2 * newSize + (64 << 20);

/**
 * The length of the root image at the start of a slot, when it is a squashfs (the superblock's
 * bytes_used at offset 40) plus room for its dm-verity tree (1/128 of the data for sha256 over
 * 4 KiB blocks, its upper levels and superblock fit in the 1/64 + 1 MiB allowed); undefined
 * for anything else. Lets a node read its slots' images instead of whole partitions.
 */
export async function imageLength(fh: FileHandle): Promise<number | undefined> {
  const h = Buffer.alloc(48);
  const { bytesRead } = await fh.read(h, 0, 48, 0);
  if (bytesRead < 48 || h.toString('latin1', 0, 4) !== 'hsqs') return undefined;
  const used = Number(h.readBigUInt64LE(40));
  if (!Number.isSafeInteger(used) || used <= 0) return undefined;
  return Math.ceil(used / 4096) * 4096 + Math.ceil(used / 64) + (1 << 20);
}

/** The plan for a seed file (a booted slot's image) against an index: what `kiln release plan` prints. */
export async function planFromSeed(seed: string, index: ChunkIndex): Promise<DeltaPlan> {
  const fh = await open(seed, 'r');
  let s: Scan;
  try { s = await scanHandle(fh, Math.min(scanLimit(index.size), (await imageLength(fh)) ?? Infinity), index); } finally { await fh.close(); }
  return planDelta(index, localMap([{ source: 'seed', chunks: s.chunks }]));
}
