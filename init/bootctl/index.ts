// Which boot loader keeps this node's slot state, and blessing through it:
//   systemd-boot: counting entries on the ESP (EFI/Linux/kiln-<slot>+N.efi), see boot.ts/slot.ts
//   uboot:        BOOT_ORDER / BOOT_<slot>_LEFT in uboot.env on the Pi's FAT boot partition
// Both partitions are mounted at /efi by init (boot.ts mountEsp).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { blessSlot, ESP_MOUNT } from '../boot.ts';
import { run } from '../exec.ts';
import type { Slot } from '../slot.ts';
import { blessUboot, fellBackFrom, readUbootEnv, UBOOT_ENV_FILE } from './uboot.ts';

export type BootLoader = 'systemd-boot' | 'uboot';

export function detectBootLoader(esp = ESP_MOUNT): BootLoader | undefined {
  if (existsSync(join(esp, 'EFI/Linux'))) return 'systemd-boot';
  if (existsSync(join(esp, UBOOT_ENV_FILE)) || existsSync(join(esp, 'boot.scr'))) return 'uboot';
  return undefined;
}

/** Blesses the booted slot with whichever boot loader is in charge (systemd-boot: as before). */
export async function blessBooted(slot: Slot, esp = ESP_MOUNT): Promise<string> {
  if (detectBootLoader(esp) === 'uboot') { const m = blessUboot(esp, slot); await run('sync', [], { timeoutMs: 20_000 }); return m; }
  return blessSlot(slot, esp);
}

/** U-Boot only: the slot the boot loader fell back from this boot, if any (read before blessing). */
export function ubootFellBackFrom(slot: Slot, esp = ESP_MOUNT): Slot | undefined {
  if (detectBootLoader(esp) !== 'uboot') return undefined;
  try { return fellBackFrom(readUbootEnv(esp), slot); } catch { return undefined; }
}

export { partitionBySpec, siblingPartition } from './devices.ts';
