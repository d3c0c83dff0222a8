import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { Arch } from '../../builder/arch.ts';
import { buildUki, peChecksum, readPe, ukiLayout, UKI_SECTIONS } from '../../builder/uki.ts';

// systemd's stubs come from Debian bookworm's systemd-boot-efi, fetched once and kept in
// os.tmpdir()/kiln-test-stubs so later runs need no network.
const STUBS = join(tmpdir(), 'kiln-test-stubs');
const DEB = { x86_64: { debian: 'amd64', stub: 'linuxx64.efi.stub', objdump: 'objdump' }, arm64: { debian: 'arm64', stub: 'linuxaa64.efi.stub', objdump: 'aarch64-linux-gnu-objdump' } } as const;

async function stubFor(arch: Arch): Promise<string> {
  const d = DEB[arch];
  const root = join(STUBS, d.debian);
  const stub = join(root, 'usr/lib/systemd/boot/efi', d.stub);
  if (existsSync(stub)) return stub;
  const mirror = 'http://deb.debian.org/debian';
  const res = await fetch(`${mirror}/dists/bookworm/main/binary-${d.debian}/Packages.gz`);
  if (!res.ok) throw new Error(`Packages.gz for ${d.debian}: HTTP ${res.status}`);
  const stanza = gunzipSync(Buffer.from(await res.arrayBuffer())).toString().split('\n\n').find((s) => s.startsWith('Package: systemd-boot-efi\n'));
  if (!stanza) throw new Error(`systemd-boot-efi not found in bookworm ${d.debian} Packages`);
  const field = (k: string) => new RegExp(`^${k}: (.+)$`, 'm').exec(stanza)?.[1];
  const deb = Buffer.from(await (await fetch(`${mirror}/${field('Filename')}`)).arrayBuffer());
  if (createHash('sha256').update(deb).digest('hex') !== field('SHA256')) throw new Error(`systemd-boot-efi ${field('Version')} ${d.debian}: sha256 mismatch`);
  const tmp = mkdtempSync(join(tmpdir(), 'kiln-stub-'));
  writeFileSync(join(tmp, 'p.deb'), deb);
  execFileSync('dpkg-deb', ['-x', join(tmp, 'p.deb'), join(tmp, 'x')]);
  mkdirSync(STUBS, { recursive: true });
  rmSync(root, { recursive: true, force: true });
  renameSync(join(tmp, 'x'), root); // whole tree at once, so a half extraction is never reused
  rmSync(tmp, { recursive: true, force: true });
  return stub;
}

type Hdr = { name: string; size: number; vma: number };
function objdumpSections(arch: Arch, file: string): Hdr[] {
  const out = execFileSync(DEB[arch].objdump, ['-h', file]).toString();
  return [...out.matchAll(/^\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+[0-9a-f]+/gm)]
    .map((m) => ({ name: m[1]!, size: parseInt(m[2]!, 16), vma: parseInt(m[3]!, 16) }));
}

const dir = mkdtempSync(join(tmpdir(), 'kiln-uki-test-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('ukiLayout places sections after the highest section end, each on SectionAlignment', () => {
  const stub = { imageBase: 0x10000000n, sectionAlignment: 0x1000, sections: [
    { name: '.text', rva: 0x1000, virtualSize: 0x2345, rawSize: 0, rawOffset: 0 },
    { name: '.data', rva: 0x5000, virtualSize: 0x10, rawSize: 0, rawOffset: 0 },
    { name: '.reloc', rva: 0x4000, virtualSize: 0x8, rawSize: 0, rawOffset: 0 },
  ] };
  const l = ukiLayout(stub, { '.osrel': 100, '.cmdline': 0x1000, '.linux': 0x123456, '.initrd': 7 });
  assert.equal(l.map((p) => [p.name, p.rva, p.size]), [
    ['.osrel', 0x6000, 100], ['.cmdline', 0x7000, 0x1000], ['.linux', 0x8000, 0x123456], ['.initrd', 0x12c000, 7],
  ]);
  assert.equal(l.map((p) => p.vma), [0x10006000n, 0x10007000n, 0x10008000n, 0x1012c000n]);
  assert.throws(() => ukiLayout(stub, { '.osrel': 0, '.cmdline': 1, '.linux': 1, '.initrd': 1 }), /\.osrel has size 0/);
  assert.throws(() => ukiLayout({ ...stub, sectionAlignment: 0x300 }, { '.osrel': 1, '.cmdline': 1, '.linux': 1, '.initrd': 1 }), /power of two/);
});

for (const arch of ['x86_64', 'arm64'] as Arch[]) {
  test(`${arch}: the PE reader agrees with objdump on the real stub`, async () => {
    const stub = await stubFor(arch);
    const buf = readFileSync(stub);
    const pe = readPe(buf, stub);
    const od = objdumpSections(arch, stub);
    assert.equal(pe.sections.map((s) => ({ name: s.name, size: s.virtualSize, vma: Number(pe.imageBase) + s.rva })), od);
    const x = execFileSync(DEB[arch].objdump, ['-x', stub]).toString();
    const hex = (k: string) => parseInt(new RegExp(`^${k}\\s+([0-9a-f]+)`, 'm').exec(x)![1]!, 16);
    assert.is(pe.sectionAlignment, hex('SectionAlignment'));
    assert.is(Number(pe.imageBase), hex('ImageBase'));
    assert.is(pe.checkSum, hex('CheckSum'));
    if (pe.checkSum) assert.is(peChecksum(buf, pe.offsets.checkSum), pe.checkSum, 'checksum algorithm must reproduce the stub\'s own');
  });

  test(`${arch}: a UKI built from the real stub has every section at its computed VMA with exact contents, reproducibly`, async () => {
    const stub = await stubFor(arch);
    const pe = readPe(readFileSync(stub));
    const kernel = join(dir, `${arch}.kernel`), initrd = join(dir, `${arch}.initrd`);
    writeFileSync(kernel, randomBytes(1_000_003));
    writeFileSync(initrd, randomBytes(54_321));
    const cmdline = `console=${arch === 'arm64' ? 'ttyAMA0' : 'ttyS0'} kiln.slot=a quiet`;
    const osRelease = 'NAME=kiln\nID=kiln\nVERSION_ID=1.2.3\n';
    const spec = { arch, stub, kernel, initrd, cmdline, osRelease, sourceDateEpoch: 1700000000 };
    const a = await buildUki({ ...spec, out: join(dir, `${arch}-a.efi`) });
    const b = await buildUki({ ...spec, out: join(dir, `${arch}-b.efi`) });
    assert.ok(readFileSync(a).equals(readFileSync(b)), 'two builds must be byte-identical');

    const expected = ukiLayout(pe, { '.osrel': Buffer.byteLength(osRelease), '.cmdline': Buffer.byteLength(cmdline), '.linux': 1_000_003, '.initrd': 54_321 });
    const lastEnd = Math.max(...pe.sections.map((s) => s.rva + s.virtualSize));
    assert.ok(expected[0]!.rva >= lastEnd && expected[0]!.rva - lastEnd < pe.sectionAlignment);
    const od = objdumpSections(arch, a);
    for (const p of expected) {
      const s = od.find((x) => x.name === p.name);
      assert.ok(s, `${p.name} missing from objdump -h`);
      assert.is(s!.vma, Number(p.vma), `${p.name} VMA`);
      assert.is(s!.size, p.size, `${p.name} size`);
      assert.is(s!.vma % pe.sectionAlignment, 0);
    }
    assert.equal(od.slice(0, pe.sections.length).map((s) => s.name), pe.sections.map((s) => s.name), 'stub sections kept in place');
    assert.equal(od.slice(pe.sections.length).map((s) => s.name), [...UKI_SECTIONS]);

    const dump = (sec: string) => {
      const f = join(dir, `${arch}${sec}`);
      execFileSync(arch === 'arm64' ? 'aarch64-linux-gnu-objcopy' : 'objcopy', [`--dump-section`, `${sec}=${f}`, a, join(dir, 'scratch.efi')]);
      return readFileSync(f);
    };
    assert.is(dump('.cmdline').toString(), cmdline);
    assert.is(dump('.osrel').toString(), osRelease);
    assert.ok(dump('.linux').equals(readFileSync(kernel)));
    assert.ok(dump('.initrd').equals(readFileSync(initrd)));

    const out = readPe(readFileSync(a));
    assert.is(out.timeDateStamp, 1700000000);
    assert.is(out.checkSum, peChecksum(readFileSync(a), out.offsets.checkSum));
    assert.ok(out.checkSum !== 0);
  });
}

test.run();
