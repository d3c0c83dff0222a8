// One output format of `kiln build`: what it needs from the pipeline, what it writes and
// which arches it can be made for. builder/formats.ts lists them; build.ts runs them.
import type { Arch } from '../arch.ts';
import type { Logger } from '../log.ts';
import type { Format, Profile } from '../profile.ts';

/** What the pipeline has made for one arch before any format runs (host paths). */
export interface BootFiles {
  /** The read-only root image (squashfs or erofs). */
  rootImage: string;
  /** Debian's kernel image, and the stage-1 initramfs that mounts the root. */
  vmlinuz: string;
  initrd: string;
  /** The unified kernel image, and the command line inside it. */
  uki: string;
  cmdline: string;
  /** The ESP filesystem image (systemd-boot, loader.conf, the UKI as slot a). */
  esp: string;
  /** systemd-boot's EFI binary for this arch (from systemd-boot-efi). */
  systemdBoot: string;
  /** The UEFI A/B GPT disk: ESP, root a, empty root b, data. */
  disk: string;
}
export type Need = keyof BootFiles;

/** One file a format writes: `<out>/kiln-<version>-<arch><suffix>`, listed in build.json as `kind`. */
export interface Written { suffix: string; kind: string }

/** Everything about the build a format may use besides the boot files. */
export interface FormatJob {
  arch: Arch;
  version: string;
  profile: Profile;
  sourceDateEpoch: number;
  /** Output path prefix, `<out>/kiln-<version>-<arch>`; a format writes `base + suffix` for each of its `writes`. */
  base: string;
  /** Scratch folder of this arch. */
  work: string;
  /** --config-url (the ISO's boot entries pass it on). */
  configUrl?: string;
  /** The unpacked tree of a pinned Debian package (boot-only ones: raspi-firmware, u-boot-rpi...). */
  debTree(name: string): Promise<string>;
  log: Logger;
}

export interface OutputFormat<N extends Need = Need> {
  name: Format;
  /** One line for help and docs. */
  what: string;
  arches: readonly Arch[];
  /** Why the other arches cannot have it (shown when refused). */
  why?: string;
  needs: readonly N[];
  /** In the order build.json lists them; the build checks each exists after `make`. */
  writes: readonly Written[];
  /** Refuses a profile the format cannot be made from (throws, saying how to fix it). */
  checkProfile?(profile: Profile): void;
  /** Writes the files in `writes`; gets only the boot files it declared in `needs`. */
  make(job: FormatJob, files: Pick<BootFiles, N>): Promise<void>;
}

/** Declares a format; infers `N` from `needs`, so `make` cannot read a file it did not declare. */
export function defineFormat<N extends Need>(f: OutputFormat<N>): OutputFormat<N> {
  return f;
}

/** The subset of `files` a format declared: the only boot files `make` receives. */
export function pickNeeds<N extends Need>(files: BootFiles, needs: readonly N[]): Pick<BootFiles, N> {
  const out = {} as Pick<BootFiles, N>;
  for (const n of needs) out[n] = files[n];
  return out;
}
