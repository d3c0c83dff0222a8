// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) as GPT headers and U-Boot
// environments use it: zlib's (Node 20.15 and later), else a table of our own for the older
// Node the workstation may run. The node's Node always has zlib's, which is many times faster
// on a slow board than any loop in JavaScript.
import * as zlib from 'node:zlib';

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** The table's CRC-32, for a Node without zlib.crc32 (and for the tests that hold both equal). */
export function crc32Table(data: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const native = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;

/** CRC-32 of `data`; pass a previous result as `crc` to continue over several buffers. */
export function crc32(data: Uint8Array, crc = 0): number {
  return native ? native(data, crc) >>> 0 : crc32Table(data, crc);
}
