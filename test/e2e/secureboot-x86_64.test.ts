// Secure Boot with the owner's keys, in OVMF's Secure Boot firmware (SMM build). The image is
// signed with the db key from `kiln keys generate` and carries its PK, KEK and db for systemd-boot
// to enrol. Boot 1 starts in setup mode (no keys): systemd-boot enrols ours, the firmware resets
// and enforces them, and the node reaches ready with Secure Boot on and the root verified.
// Boot 2 keeps those firmware variables but changes one character of the signed UKI's command
// line (its root hash): the firmware refuses the UKI and stage 1 never starts.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { $ } from 'zx';
import { build, entryName, REPO } from '../../builder/build.ts';
import { createLogger } from '../../builder/log.ts';
import { Vm } from '../../builder/qemu.ts';
import { readPe } from '../../builder/uki.ts';
import { BOOT_TIMEOUT, K3S_STANDIN, READY, scratchCopy, TEST_VERSION } from './image.ts';
import { moduleSigned } from './helpers.ts';

const KEYS = join(REPO, 'out', 'test-secureboot-keys');
const OUT = join(REPO, 'out', 'test-secureboot');
const UKI_ON_ESP = `EFI/Linux/${entryName('a', 3)}`;
const mtools = $({ quiet: true, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });

/** Keys made once through the CLI (kept, so the signed image's build key stays the same across runs). */
async function keys() {
  if (!existsSync(join(KEYS, 'db.crt'))) await $({ quiet: true, cwd: REPO })`node bin/kiln.js keys generate --out ${KEYS}`;
  return { key: join(KEYS, 'db.key'), cert: join(KEYS, 'db.crt') };
}

async function signedImage() {
  const k = await keys();
  const rec = await build({
    arches: ['x86_64'], formats: ['raw'], out: OUT, version: TEST_VERSION, k3sBinary: K3S_STANDIN,
    secureBoot: { ...k, enroll: KEYS }, log: createLogger({ quiet: !process.env.KILN_VERBOSE }),
  });
  const file = (kind: string) => join(OUT, rec.outputs.find((o) => o.kind === kind)!.file);
  return { raw: file('raw'), uki: file('uki'), modules: join(OUT, '.work', 'x86_64', 'root', 'lib', 'modules', rec.kernel.x86_64!), ...k };
}

/** Changes the last character of the root hash on the ESP's UKI command line (a UKI pinning another root). */
async function tamperUki(disk: string) {
  const tmp = join(mkdtempSync(join(tmpdir(), 'kiln-sb-')), 'uki.efi');
  await mtools`mcopy -i ${`${disk}@@1M`} ${`::/${UKI_ON_ESP}`} ${tmp}`;
  const b = readFileSync(tmp);
  const s = readPe(b, tmp).sections.find((x) => x.name === '.cmdline')!;
  const cmdline = b.subarray(s.rawOffset, s.rawOffset + s.virtualSize).toString('latin1');
  const m = /kiln\.verity=\S*:([0-9a-f]{64})/.exec(cmdline);
  assert.ok(m, `no root hash on the UKI command line: ${cmdline}`);
  const at = s.rawOffset + m.index + m[0].length - 1;
  b[at] = b[at] === 0x30 ? 0x31 : 0x30;
  writeFileSync(tmp, b);
  await mtools`mcopy -o -i ${`${disk}@@1M`} ${tmp} ${`::/${UKI_ON_ESP}`}`;
}

let enrolledVars = '';

test('setup mode: systemd-boot enrols our keys, then the signed image boots with secure-boot=on root=verified', async () => {
  const img = await signedImage();
  // The UKI in out/ is the release artifact: it carries the signature as built.
  await $({ quiet: true })`sbverify --cert ${img.cert} ${img.uki}`;
  const vm = await Vm.start({ arch: 'x86_64', disk: await scratchCopy(img.raw), memMiB: 320, secureBoot: 'setup' });
  try {
    await vm.waitFor(/Enrolling secure boot keys from directory: \\loader\\keys\\auto/, BOOT_TIMEOUT);
    const chain = await vm.waitFor(/kiln: boot chain: secure-boot=(\S+) root=(\S+)[\r\n]/, BOOT_TIMEOUT);
    assert.is(chain[1], 'on', 'the firmware enforces Secure Boot after enrolment');
    assert.is(chain[2], 'verified');
    // Locked down by Secure Boot, the kernel loads only signed modules: the build kept Debian's.
    assert.ok(moduleSigned(img.modules, 'virtio_net'), 'an image signed for Secure Boot keeps its modules\' signatures');
    await vm.waitFor(READY, BOOT_TIMEOUT);
    enrolledVars = join(mkdtempSync(join(tmpdir(), 'kiln-sb-vars-')), 'efivars.fd');
    copyFileSync(join(vm.workDir, 'efivars.fd'), enrolledVars);
  } finally { await vm.kill(); }
});

test('the same firmware refuses the UKI with one byte of its command line changed: stage 1 never starts', async () => {
  assert.ok(enrolledVars, 'needs the variables boot 1 enrolled');
  const img = await signedImage();
  const disk = await scratchCopy(img.raw);
  await tamperUki(disk);
  const vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 256, secureBoot: 'setup', efiVars: enrolledVars });
  try {
    // systemd-boot itself is trusted and runs; the firmware's image check refuses the UKI.
    await vm.waitFor(/Error loading \\EFI\\Linux\\kiln-a[^\r\n]*: (Access Denied|Security Violation)/, BOOT_TIMEOUT);
    // Bounded: far longer than a trusted UKI takes from the loader to stage 1's first line.
    await new Promise((r) => setTimeout(r, 30_000));
    assert.not.match(vm.output, /kiln-stage1: started/);
  } finally { await vm.kill(); }
});

test.run();
