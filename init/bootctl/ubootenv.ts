// U-Boot's environment file (uboot.env on the Pi's FAT partition; Debian's rpi U-Boot:
// CONFIG_ENV_IS_IN_FAT, CONFIG_ENV_SIZE 0x4000, not redundant). Layout: CRC32 (little-endian)
// of bytes 4..end, then "key=value\0" entries, an empty entry ("\0") and zero padding.
// U-Boot throws away the WHOLE file when the CRC is wrong, so writers replace it atomically.
// Pure functions: the builder writes the first one, the node rewrites it to bless a slot.
import { crc32 } from '../disk/crc32.ts';

export const UBOOT_ENV_SIZE = 16384;

export function encodeUbootEnv(vars: Record<string, string>, size = UBOOT_ENV_SIZE): Buffer {
  const keys = Object.keys(vars).sort(); // U-Boot writes them sorted; same input, same bytes
  for (const k of keys) {
    if (!k || /[=\0]/.test(k) || vars[k]!.includes('\0')) throw new Error(`U-Boot variable ${JSON.stringify(k)} has '=' or NUL in its name or a NUL in its value`);
  }
  const body = Buffer.from(keys.filter((k) => vars[k] !== '').map((k) => `${k}=${vars[k]}\0`).join('') + '\0', 'latin1');
  if (body.length > size - 4) throw new Error(`U-Boot environment needs ${body.length + 4} bytes; the file holds ${size}`);
  const out = Buffer.alloc(size);
  body.copy(out, 4);
  out.writeUInt32LE(crc32(out.subarray(4)), 0);
  return out;
}

/** The variables, or an error saying why U-Boot would ignore the file. */
export function decodeUbootEnv(buf: Buffer): Record<string, string> {
  if (buf.length < 8) throw new Error(`U-Boot environment is ${buf.length} bytes, too short`);
  const stored = buf.readUInt32LE(0), actual = crc32(buf.subarray(4));
  if (stored !== actual) throw new Error(`U-Boot environment CRC is ${stored.toString(16)}, contents give ${actual.toString(16)} (U-Boot would use its defaults)`);
  const vars: Record<string, string> = {};
  for (let i = 4; i < buf.length && buf[i] !== 0;) {
    let end = buf.indexOf(0, i);
    if (end < 0) end = buf.length;
    const kv = buf.toString('latin1', i, end);
    const eq = kv.indexOf('=');
    if (eq > 0) vars[kv.slice(0, eq)] = kv.slice(eq + 1);
    i = end + 1;
  }
  return vars;
}
