// Unified kernel image: systemd's EFI stub with the os-release, kernel command line,
// kernel and initrd added as PE sections (.osrel, .cmdline, .linux, .initrd) by objcopy.
// The sections go after the stub's last section, each on the stub's SectionAlignment,
// so they never overlap the stub however large it grows.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';
import { ARCH, type Arch } from './arch.ts';
import { tool } from './tools.ts';

export interface PeSection {
  name: string;
  /** Relative virtual address. */
  rva: number;
  virtualSize: number;
  rawSize: number;
  rawOffset: number;
}

export interface PeInfo {
  machine: number;
  /** 0x10b PE32, 0x20b PE32+. */
  magic: number;
  imageBase: bigint;
  sectionAlignment: number;
  fileAlignment: number;
  sizeOfImage: number;
  timeDateStamp: number;
  checkSum: number;
  /** File offsets of the fields a reproducible build may rewrite. */
  offsets: { timeDateStamp: number; checkSum: number };
  sections: PeSection[];
}

/** Reads the headers of a PE/COFF image (EFI application). */
export function readPe(buf: Buffer, what = 'PE image'): PeInfo {
  const fail = (why: string): never => { throw new Error(`${what}: ${why}`); };
  if (buf.length < 0x40 || buf.toString('latin1', 0, 2) !== 'MZ') fail('no MZ header (not a PE file)');
  const pe = buf.readUInt32LE(0x3c);
  if (pe + 24 > buf.length || buf.toString('latin1', pe, pe + 4) !== 'PE\0\0') fail('no PE signature');
  const coff = pe + 4;
  const nsec = buf.readUInt16LE(coff + 2);
  const optSize = buf.readUInt16LE(coff + 16);
  const opt = coff + 20;
  const magic = buf.readUInt16LE(opt);
  if (magic !== 0x10b && magic !== 0x20b) fail(`unknown optional header magic 0x${magic.toString(16)}`);
  const plus = magic === 0x20b;
  const secTable = opt + optSize;
  if (secTable + nsec * 40 > buf.length) fail('section table runs past the end of the file');
  const sections: PeSection[] = [];
  for (let i = 0; i < nsec; i++) {
    const s = secTable + i * 40;
    sections.push({
      name: buf.toString('latin1', s, s + 8).replace(/\0+$/, ''),
      virtualSize: buf.readUInt32LE(s + 8),
      rva: buf.readUInt32LE(s + 12),
      rawSize: buf.readUInt32LE(s + 16),
      rawOffset: buf.readUInt32LE(s + 20),
    });
  }
  return {
    machine: buf.readUInt16LE(coff),
    magic,
    imageBase: plus ? buf.readBigUInt64LE(opt + 24) : BigInt(buf.readUInt32LE(opt + 28)),
    sectionAlignment: buf.readUInt32LE(opt + 32),
    fileAlignment: buf.readUInt32LE(opt + 36),
    sizeOfImage: buf.readUInt32LE(opt + 56),
    timeDateStamp: buf.readUInt32LE(coff + 4),
    checkSum: buf.readUInt32LE(opt + 64),
    offsets: { timeDateStamp: coff + 4, checkSum: opt + 64 },
    sections,
  };
}

export const UKI_SECTIONS = ['.osrel', '.cmdline', '.linux', '.initrd'] as const;
export type UkiSectionName = (typeof UKI_SECTIONS)[number];

export interface UkiPlacement {
  name: UkiSectionName;
  /** Relative virtual address. */
  rva: number;
  /** Absolute address as objcopy's --change-section-vma takes it (ImageBase + RVA). */
  vma: bigint;
  size: number;
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/** Places the UKI sections in order after the end of the stub's highest section. */
export function ukiLayout(stub: Pick<PeInfo, 'imageBase' | 'sectionAlignment' | 'sections'>, sizes: Record<UkiSectionName, number>): UkiPlacement[] {
  const align = stub.sectionAlignment;
  if (!align || align & (align - 1)) throw new Error(`stub SectionAlignment ${align} is not a power of two`);
  let cursor = Math.max(0, ...stub.sections.map((s) => s.rva + s.virtualSize));
  return UKI_SECTIONS.map((name) => {
    const size = sizes[name];
    if (!Number.isSafeInteger(size) || size <= 0) throw new Error(`UKI section ${name} has size ${size}; it must not be empty`);
    const rva = alignUp(cursor, align);
    cursor = rva + size;
    if (cursor > 0xffffffff) throw new Error(`UKI section ${name} ends beyond the 4 GiB a PE image can address`);
    return { name, rva, vma: stub.imageBase + BigInt(rva), size };
  });
}

/** The PE checksum (the Windows/EFI image checksum: 16-bit folded sum plus file length), with the field itself taken as 0. */
export function peChecksum(buf: Buffer, checkSumOffset: number): number {
  let sum = 0;
  const n = buf.length & ~1;
  for (let i = 0; i < n; i += 2) {
    if (i === checkSumOffset || i === checkSumOffset + 2) continue;
    sum += buf.readUInt16LE(i);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (buf.length & 1) { sum += buf[buf.length - 1]!; sum = (sum & 0xffff) + (sum >>> 16); }
  sum = (sum & 0xffff) + (sum >>> 16);
  return (sum + buf.length) >>> 0;
}

export interface UkiSpec {
  arch: Arch;
  /** linuxx64.efi.stub / linuxaa64.efi.stub from Debian's systemd-boot-efi. */
  stub: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  osRelease: string;
  out: string;
  /** TimeDateStamp written into the PE header; defaults to $SOURCE_DATE_EPOCH, else 0. */
  sourceDateEpoch?: number;
}

/** Builds the UKI at spec.out and returns its path. */
export async function buildUki(spec: UkiSpec): Promise<string> {
  const stubBuf = readFileSync(spec.stub);
  const stub = readPe(stubBuf, spec.stub);
  const tmp = mkdtempSync(join(tmpdir(), 'kiln-uki-'));
  try {
    const files: Record<UkiSectionName, string> = {
      '.osrel': join(tmp, 'osrel'),
      '.cmdline': join(tmp, 'cmdline'),
      '.linux': spec.kernel,
      '.initrd': spec.initrd,
    };
    writeFileSync(files['.osrel'], spec.osRelease);
    writeFileSync(files['.cmdline'], spec.cmdline);
    const size = (f: string) => { try { return statSync(f).size; } catch { throw new Error(`UKI input ${f} is missing`); } };
    const layout = ukiLayout(stub, {
      '.osrel': size(files['.osrel']), '.cmdline': size(files['.cmdline']), '.linux': size(files['.linux']), '.initrd': size(files['.initrd']),
    });
    const args = layout.flatMap((p) => [
      '--add-section', `${p.name}=${files[p.name]}`,
      '--set-section-flags', `${p.name}=data,readonly`,
      '--change-section-vma', `${p.name}=0x${p.vma.toString(16)}`,
    ]);
    rmSync(spec.out, { force: true });
    const objcopy = tool(ARCH[spec.arch].objcopy);
    await $({ quiet: true })`${objcopy} ${args} ${spec.stub} ${spec.out}`;
    normalisePeHeader(spec.out, spec.sourceDateEpoch ?? Number(process.env.SOURCE_DATE_EPOCH ?? 0));
    return spec.out;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * objcopy (binutils 2.40) stamps the PE header with the current time and ignores
 * SOURCE_DATE_EPOCH, so the stamp is set here explicitly and the checksum objcopy
 * computed is recomputed over the final bytes.
 */
export function normalisePeHeader(file: string, timestamp: number) {
  const buf = readFileSync(file);
  const pe = readPe(buf, file);
  buf.writeUInt32LE(timestamp >>> 0, pe.offsets.timeDateStamp);
  buf.writeUInt32LE(0, pe.offsets.checkSum);
  buf.writeUInt32LE(peChecksum(buf, pe.offsets.checkSum), pe.offsets.checkSum);
  writeFileSync(file, buf);
}
