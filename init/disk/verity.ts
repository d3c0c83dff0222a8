// The kiln.verity= kernel parameter: what pins a root image to its dm-verity hash tree.
//   kiln.verity=sha256:<data blocks>:<salt hex>:<root hash hex>
// The tree starts one block (the verity superblock) after the data. The builder writes it on
// the UKI's command line (signed with the UKI under Secure Boot) and into stage 1's
// /etc/kiln/verity (the Pi's boot files, which U-Boot cannot sign); stage 1 turns it into a
// dm-verity table. Pure: shared by the builder and the node.

export const VERITY_BLOCK = 4096;

export interface VerityParams {
  algorithm: 'sha256';
  /** 4 KiB blocks of filesystem data before the hash area. */
  dataBlocks: number;
  salt: string;
  rootHash: string;
}

export function formatVerityParam(p: VerityParams): string {
  return `kiln.verity=${p.algorithm}:${p.dataBlocks}:${p.salt}:${p.rootHash}`;
}

/** Parses the value of kiln.verity= (without the name); undefined when it is not well formed. */
export function parseVerityParam(value: string | undefined): VerityParams | undefined {
  const m = /^(sha256):([1-9][0-9]{0,11}):([0-9a-f]{2,128}):([0-9a-f]{64})$/.exec(value ?? '');
  if (!m) return undefined;
  return { algorithm: 'sha256', dataBlocks: Number(m[2]), salt: m[3]!, rootHash: m[4]! };
}

/**
 * The device-mapper table stage 1 loads (it builds the same line in shell; this is the
 * reference the tests compare it with). restart_on_corruption: a bad block reboots the node,
 * so the boot loader's tries counter moves on to the other slot instead of running a root that
 * fails at random.
 */
export function verityTable(device: string, p: VerityParams): string {
  const sectors = p.dataBlocks * (VERITY_BLOCK / 512);
  return `0 ${sectors} verity 1 ${device} ${device} ${VERITY_BLOCK} ${VERITY_BLOCK} ${p.dataBlocks} ${p.dataBlocks + 1} ${p.algorithm} ${p.rootHash} ${p.salt} 1 restart_on_corruption`;
}
