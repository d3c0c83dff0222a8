// U-Boot's legacy image format, for boot.scr (what `mkimage -T script` makes), without
// needing u-boot-tools on the build host. Layout (include/image.h): a 64-byte big-endian
// header with a CRC32 of the header and of the data; a script's data is a table of lengths
// ended by 0 (one script: [len, 0]) and then the script itself.
import { crc32 } from 'node:zlib';

export const UIMAGE_MAGIC = 0x27051956;
export const IH = { osLinux: 5, archArm64: 22, typeScript: 6, compNone: 0 } as const;

export function scriptImage(script: string | Buffer, o: { name: string; time: number }): Buffer {
  const text = Buffer.isBuffer(script) ? script : Buffer.from(script, 'utf8');
  const data = Buffer.alloc(8 + text.length);
  data.writeUInt32BE(text.length, 0); // lengths table: one entry, then the 0 terminator
  text.copy(data, 8);
  const name = Buffer.from(o.name, 'latin1');
  if (name.length > 31) throw new Error(`U-Boot image name '${o.name}' is longer than 31 bytes`);
  const h = Buffer.alloc(64);
  h.writeUInt32BE(UIMAGE_MAGIC, 0);
  h.writeUInt32BE(o.time >>> 0, 8);
  h.writeUInt32BE(data.length, 12);
  // load address and entry point (16, 20) stay 0: a script is not loaded anywhere
  h.writeUInt32BE(crc32(data), 24);
  h[28] = IH.osLinux; h[29] = IH.archArm64; h[30] = IH.typeScript; h[31] = IH.compNone;
  name.copy(h, 32);
  h.writeUInt32BE(crc32(h), 4); // computed with its own field still 0
  return Buffer.concat([h, data]);
}
