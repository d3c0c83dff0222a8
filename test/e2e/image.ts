// Shared test images: built once per run (the builder's build key makes a repeat call a
// no-op), then copied per test so each boot starts from a pristine disk.
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { $ } from 'zx';
import { hostArch, type Arch } from '../../builder/arch.ts';
import { build, REPO } from '../../builder/build.ts';
import { createLogger } from '../../builder/log.ts';
import { Cache } from '../../builder/cache.ts';
import { readLock } from '../../builder/lock.ts';
import { loadProfile, METAL_PROFILE } from '../../builder/profile.ts';
import { kernelFromLock } from '../../builder/rootfs.ts';
import { tempDir } from './helpers.ts';
import { updateKeys } from './update-fixture.ts';

export const TEST_VERSION = '0.0.1-test';
/** TEST DOUBLE for k3s (real releases cannot be downloaded here): see its header. */
export const K3S_STANDIN = join(REPO, 'test/standins/k3s');

export async function testImage(arch: Arch) {
  const out = join(REPO, 'out', `test-${arch}`);
  const rec = await build({ arches: [arch], formats: ['raw'], out, version: TEST_VERSION, k3sBinary: K3S_STANDIN, config: join(REPO, 'test/e2e/image-config.yaml'), log: createLogger({ quiet: !process.env.KILN_VERBOSE }) });
  const raw = join(out, rec.outputs.find((o) => o.kind === 'raw')!.file);
  // Lets the QEMU runner check once whether KVM really starts this kernel (else TCG).
  if (!process.env.KILN_PROBE_KERNEL && arch === hostArch()) {
    const al = readLock(loadProfile())!.arches[arch]!;
    process.env.KILN_PROBE_KERNEL = (await kernelFromLock(al, new Cache())).vmlinuz;
  }
  return { out, raw, rec, work: join(out, '.work', arch) };
}

/**
 * The Raspberry Pi SD image (images/rpi.yaml: generic arm64 kernel), built once per run per
 * version, with the update tests' trust root so the same card also serves the update test.
 */
export async function testRpiImage(version = TEST_VERSION) {
  const out = join(REPO, 'out', version === TEST_VERSION ? 'test-rpi' : `test-rpi-${version}`);
  const rec = await build({ profile: join(REPO, 'images/rpi.yaml'), arches: ['arm64'], formats: ['rpi'], out, version, trust: updateKeys().trustFile, k3sBinary: K3S_STANDIN, log: createLogger({ quiet: !process.env.KILN_VERBOSE }) });
  const img = join(out, rec.outputs.find((o) => o.kind === 'rpi')!.file);
  return { out, img, rec, work: join(out, '.work', 'arm64') };
}

/** The live + installer ISO of an arch (out/test-iso for x86_64, out/test-iso-<arch> otherwise), built once per run. */
export async function testIso(arch: Arch) {
  const out = join(REPO, 'out', arch === 'x86_64' ? 'test-iso' : `test-iso-${arch}`);
  const rec = await build({ arches: [arch], formats: ['iso'], out, version: TEST_VERSION, k3sBinary: K3S_STANDIN, log: createLogger({ quiet: !process.env.KILN_VERBOSE }) });
  const o = rec.outputs.find((x) => x.kind === 'iso')!;
  return { out, iso: join(out, o.file), size: o.size, rec };
}

/** The hardware ISO of an arch (images/metal.yaml; out/test-metal for x86_64, out/test-metal-<arch> otherwise), built once per run. */
export async function testMetalIso(arch: Arch) {
  const out = join(REPO, 'out', arch === 'x86_64' ? 'test-metal' : `test-metal-${arch}`);
  const rec = await build({ profile: METAL_PROFILE, arches: [arch], formats: ['iso'], out, version: TEST_VERSION, k3sBinary: K3S_STANDIN, log: createLogger({ quiet: !process.env.KILN_VERBOSE }) });
  const o = rec.outputs.find((x) => x.kind === 'iso')!;
  return { out, iso: join(out, o.file), size: o.size, rec };
}

/** A private sparse copy of an image, so a test can write to it. */
export async function scratchCopy(image: string, name = 'disk.raw'): Promise<string> {
  const dest = join(tempDir('kiln-e2e-'), name);
  await $({ quiet: true })`cp --sparse=always ${image} ${dest}`;
  return dest;
}

/** Lists a folder of the ESP inside a disk image (mtools reads it at the partition's offset). */
export async function espList(disk: string, folder: string): Promise<string[]> {
  const r = await $({ quiet: true, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } })`mdir -b -i ${disk}@@1M ::/${folder}`;
  return r.stdout.split('\n').map((l) => l.trim().split('/').pop()!).filter(Boolean).sort();
}

// The trailing character makes a match wait for the whole line, not a chunk of it.
export const READY = /kiln: ready version=(\S+) slot=([ab]) arch=(\S+)[\r\n ]/;
/** Generous: TCG on a loaded 2-core machine; KVM is far faster. */
export const BOOT_TIMEOUT = 240_000;
export { existsSync, mkdirSync, copyFileSync };
