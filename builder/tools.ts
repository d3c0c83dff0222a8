// Host tools the builder calls, and the Debian package that provides each one.
// A missing tool is reported in one line naming the package to install.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export const TOOL_PACKAGES: Record<string, string> = {
  'mksquashfs': 'squashfs-tools',
  'mkfs.erofs': 'erofs-utils',
  'mkfs.vfat': 'dosfstools',
  'mmd': 'mtools',
  'mcopy': 'mtools',
  'mkfs.ext4': 'e2fsprogs',
  'objcopy': 'binutils',
  'strip': 'binutils',
  'readelf': 'binutils',
  'aarch64-linux-gnu-objcopy': 'binutils-aarch64-linux-gnu',
  'aarch64-linux-gnu-strip': 'binutils-aarch64-linux-gnu',
  'qemu-img': 'qemu-utils',
  'qemu-system-x86_64': 'qemu-system-x86',
  'qemu-system-aarch64': 'qemu-system-arm',
  'zstd': 'zstd',
  'xz': 'xz-utils',
  'tar': 'tar',
  'gpgv': 'gpgv',
  'veritysetup': 'cryptsetup-bin',
  // Node's ICU data cut to English (node-icu.ts).
  'icupkg': 'icu-devtools',
  'genrb': 'icu-devtools', // the tests' own ICU bundles
  'gendict': 'icu-devtools', // and dictionary
  // The ISO: GRUB's images (x86_64), xorriso, and mformat/mcopy for the El Torito EFI image.
  'grub-mkimage': 'grub-common',
  'xorriso': 'xorriso',
  'mformat': 'mtools',
  // Secure Boot: keys and certificates, EFI signature lists for enrolment, signing (the clock
  // pinned by faketime so a signature's signingTime is SOURCE_DATE_EPOCH).
  'openssl': 'openssl',
  'cert-to-efi-sig-list': 'efitools',
  'sign-efi-sig-list': 'efitools',
  'sbsign': 'sbsigntool',
  'sbverify': 'sbsigntool',
  'faketime': 'faketime',
};

export class MissingToolError extends Error {
  constructor(readonly tool: string, readonly pkg: string) {
    super(`missing host tool '${tool}': install it with 'apt-get install ${pkg}'`);
  }
}

const PATHS = () => [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin'];

/** Absolute path of a host tool, or undefined. /usr/sbin is searched even for non-root users. */
export function findTool(tool: string): string | undefined {
  for (const dir of PATHS()) {
    if (!dir) continue;
    const p = join(dir, tool);
    try { accessSync(p, constants.X_OK); return p; } catch { /* next */ }
  }
  return undefined;
}

/** Absolute path of a host tool; throws MissingToolError naming its Debian package. */
export function tool(name: string): string {
  const p = findTool(name);
  if (!p) throw new MissingToolError(name, TOOL_PACKAGES[name] ?? name);
  return p;
}

/** Files from host packages (firmware for QEMU and the like). */
export const HOST_FILES = {
  ovmfCode: { path: '/usr/share/OVMF/OVMF_CODE_4M.fd', alt: ['/usr/share/OVMF/OVMF_CODE.fd'], pkg: 'ovmf' },
  ovmfVars: { path: '/usr/share/OVMF/OVMF_VARS_4M.fd', alt: ['/usr/share/OVMF/OVMF_VARS.fd'], pkg: 'ovmf' },
  // Secure Boot: the SMM build (needs q35,smm=on) and Debian's test variable store whose PK, KEK
  // and db hold the snakeoil certificate shipped in the same package (PkKek-1-snakeoil.pem).
  ovmfCodeSecboot: { path: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd', alt: [], pkg: 'ovmf' },
  ovmfVarsSnakeoil: { path: '/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd', alt: [], pkg: 'ovmf' },
  // That certificate and its key (PEM, passphrase 'snakeoil'): a test signing key the store trusts.
  ovmfSnakeoilKey: { path: '/usr/share/ovmf/PkKek-1-snakeoil.key', alt: [], pkg: 'ovmf' },
  ovmfSnakeoilCert: { path: '/usr/share/ovmf/PkKek-1-snakeoil.pem', alt: [], pkg: 'ovmf' },
  aavmfCode: { path: '/usr/share/AAVMF/AAVMF_CODE.fd', alt: [], pkg: 'qemu-efi-aarch64' },
  aavmfVars: { path: '/usr/share/AAVMF/AAVMF_VARS.fd', alt: [], pkg: 'qemu-efi-aarch64' },
  // GRUB's platform folders for the x86_64 ISO: BIOS (El Torito, hybrid MBR) and UEFI.
  grubPc: { path: '/usr/lib/grub/i386-pc/boot_hybrid.img', alt: [], pkg: 'grub-pc-bin' },
  grubEfi: { path: '/usr/lib/grub/x86_64-efi/kernel.img', alt: [], pkg: 'grub-efi-amd64-bin' },
  seabios: { path: '/usr/share/seabios/bios-256k.bin', alt: ['/usr/share/qemu/bios-256k.bin'], pkg: 'seabios' },
  debianKeyring: { path: '/usr/share/keyrings/debian-archive-keyring.gpg', alt: [], pkg: 'debian-archive-keyring' },
} as const;

export function hostFile(key: keyof typeof HOST_FILES): string {
  const f = HOST_FILES[key];
  for (const p of [f.path, ...f.alt]) {
    try { accessSync(p, constants.R_OK); return p; } catch { /* next */ }
  }
  throw new Error(`missing host file '${f.path}': install it with 'apt-get install ${f.pkg}'`);
}
