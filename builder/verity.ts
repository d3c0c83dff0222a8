// dm-verity for root images: the hash tree is appended to the image itself (superblock at the
// 4 KiB-aligned end of the filesystem, tree after it), so a slot, a release artifact and the
// ISO's root.img each carry their own tree and the updater writes them as one file. Built by
// Debian's veritysetup with a salt and UUID derived from the image's content: the same image
// always gets the same tree and root hash.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, statSync, truncateSync } from 'node:fs';
import { $ } from 'zx';
import { hashFile } from './cache.ts';
import { tool } from './tools.ts';
import { formatVerityParam, VERITY_BLOCK, type VerityParams } from '../init/disk/verity.ts';

export interface VerityInfo extends VerityParams {
  /** Bytes of the hash area (superblock + tree) appended to the image. */
  treeBytes: number;
  /** The kernel command-line parameter (kiln.verity=…) that pins this root. */
  param: string;
}

/** Appends a hash tree to `image` (in place) and returns what pins it. */
export async function appendVerity(image: string): Promise<VerityInfo> {
  const dataBytes = Math.ceil(statSync(image).size / VERITY_BLOCK) * VERITY_BLOCK;
  truncateSync(image, dataBytes);
  const digest = await hashFile(image);
  const salt = createHash('sha256').update(`kiln verity salt:${digest}`).digest('hex');
  const u = createHash('sha256').update(`kiln verity uuid:${digest}`).digest('hex');
  const uuid = `${u.slice(0, 8)}-${u.slice(8, 12)}-4${u.slice(13, 16)}-8${u.slice(17, 20)}-${u.slice(20, 32)}`;
  const r = await $({ quiet: true })`${tool('veritysetup')} format --hash=sha256 --data-block-size=${VERITY_BLOCK} --hash-block-size=${VERITY_BLOCK} --data-blocks=${dataBytes / VERITY_BLOCK} --salt=${salt} --uuid=${uuid} --hash-offset=${dataBytes} ${image} ${image}`;
  const rootHash = /Root hash:\s*([0-9a-f]{64})/.exec(r.stdout)?.[1];
  if (!rootHash) throw new Error(`veritysetup printed no root hash for ${image}:\n${r.stdout}${r.stderr}`);
  const params: VerityParams = { algorithm: 'sha256', dataBlocks: dataBytes / VERITY_BLOCK, salt, rootHash };
  return { ...params, treeBytes: statSync(image).size - dataBytes, param: formatVerityParam(params) };
}

/** Checks the appended tree with veritysetup (the same check the kernel does block by block). */
export async function verifyVerity(image: string, p: VerityParams): Promise<boolean> {
  const r = await $({ quiet: true, nothrow: true })`${tool('veritysetup')} verify --data-blocks=${p.dataBlocks} --hash-offset=${p.dataBlocks * VERITY_BLOCK} ${image} ${image} ${p.rootHash}`;
  return r.exitCode === 0;
}

/** True when the image has a verity superblock where its parameters say the tree starts. */
export function hasVeritySuperblock(image: string, p: VerityParams): boolean {
  const b = Buffer.alloc(8);
  const fd = openSync(image, 'r');
  try { readSync(fd, b, 0, 8, p.dataBlocks * VERITY_BLOCK); } finally { closeSync(fd); }
  return b.toString('latin1') === 'verity\0\0';
}
