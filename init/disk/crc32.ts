// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as GPT headers and U-Boot
// environments use it. Not zlib's: loading `node:zlib` (its module and binding) for a few
// tens of KiB a boot costs init about half a MiB of memory for as long as it runs. Eight
// tables, so the loop takes eight bytes a turn (the slicing-by-8 method): a 16 KiB GPT entry
// array is about half a millisecond natively on V8's interpreter.

const TABLES = (() => {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  // Table k is the CRC of a byte followed by k zero bytes.
  for (let k = 1; k < 8; k++) {
    for (let n = 0; n < 256; n++) { const p = t[(k - 1) * 256 + n]!; t[k * 256 + n] = (p >>> 8) ^ t[p & 0xff]!; }
  }
  return t;
})();

/** CRC-32 of `data`; pass a previous result as `crc` to continue over several buffers. */
export function crc32(data: Uint8Array, crc = 0): number {
  const t = TABLES;
  let c = ~crc, i = 0;
  const whole = data.length - (data.length & 7);
  for (; i < whole; i += 8) {
    const a = c ^ (data[i]! | data[i + 1]! << 8 | data[i + 2]! << 16 | data[i + 3]! << 24);
    c = t[1792 + (a & 0xff)]! ^ t[1536 + ((a >>> 8) & 0xff)]! ^ t[1280 + ((a >>> 16) & 0xff)]! ^ t[1024 + (a >>> 24)]!
      ^ t[768 + data[i + 4]!]! ^ t[512 + data[i + 5]!]! ^ t[256 + data[i + 6]!]! ^ t[data[i + 7]!]!;
  }
  for (; i < data.length; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}
