// What the boot plan, the control socket and the post-boot steps share: the facts of this
// boot and the state boot builds up (machine id, chosen config, notes, updater, add-ons).
// One object, made once by main.ts, so every part reads the same state.
import type { AddonResult } from '../addons/apply.ts';
import type { BootInfo } from '../boot.ts';
import { applyDefaults } from '../config/parse.ts';
import type { KilnConfig } from '../config/schema.ts';
import type { Chosen } from '../configure.ts';
import { say } from '../log.ts';
import { ethernetLinks, lease } from '../network.ts';
import type { PowerAction } from '../power.ts';
import { k3sCommand } from '../services/k3s.ts';
import type { ServiceStatus, Supervisor } from '../services/supervisor.ts';
import { read } from '../system.ts';
import { nodeName } from '../update/drain.ts';
import type { Updater } from '../update/updater.ts';

/** The parts of the updater the rest of init uses. */
export type NodeUpdater = Pick<Updater, 'afterBoot' | 'startPolling' | 'status' | 'check' | 'apply' | 'rollback'>;

export interface BootContext {
  readonly info: BootInfo;
  /** Booted from the ISO: root image on the medium, data on tmpfs, no ESP, no slots to bless. */
  readonly live: boolean;
  readonly supervisor: Pick<Supervisor, 'add' | 'start' | 'status' | 'waitReady' | 'logTail'>;
  readonly power: (action: PowerAction, why: string) => void;
  machineId: string;
  chosen: Chosen | undefined;
  /** Problems worth an owner's attention, shown by `kiln status`. */
  readonly notes: string[];
  /** Set once post-boot has made it; undefined before, or when making it failed. */
  updater: NodeUpdater | undefined;
  /** Why the updater could not be made, for the control socket's answers. */
  updaterProblem: string | undefined;
  addonResults: AddonResult[];
  /** The config in force; if choosing failed outright, the defaults: a node that boots can be repaired. */
  cfg(): KilnConfig;
}

export function bootContext(o: Pick<BootContext, 'info' | 'live' | 'supervisor' | 'power'>): BootContext {
  const ctx: BootContext = {
    ...o, machineId: '', chosen: undefined, notes: [], updater: undefined, updaterProblem: undefined, addonResults: [],
    cfg: () => ctx.chosen?.config ?? applyDefaults({}),
  };
  return ctx;
}

/** Config problems found while applying: reported, never fatal. */
export const report = (problems: string[]) => { for (const p of problems) say(`config: ${p}`); };

/** The k3s service's status (undefined in an image without it). */
export const k3sStatus = (ctx: BootContext): ServiceStatus | undefined => ctx.supervisor.status().find((x) => x.id === 'k3s');

/** The Kubernetes node name k3s registers this node under. */
export const kubeNodeName = (ctx: BootContext) => nodeName(k3sCommand(ctx.cfg()).args, read('/proc/sys/kernel/hostname').trim());

/** The address DHCP gave the first link, for the URLs we print. */
export const leaseIp = () => lease(ethernetLinks()[0] ?? 'eth0')?.ip;

export const bootCount = () => Number(read('/var/lib/kiln/boot-count').trim()) || 0;
