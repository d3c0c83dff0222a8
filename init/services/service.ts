// What a system service declares (Talos machined style): one small object per service.
import type { Limits } from './cgroups.ts';

export interface RunSpec { cmd: string; args: string[]; env?: Record<string, string>; cwd?: string }

export interface ServiceSpec {
  id: string;
  description: string;
  /** Services that must be running (and healthy, if they have a health check) first. */
  depends?: string[];
  /** Evaluated once at start: false marks the service "skipped" (e.g. no config for it). */
  condition?: () => boolean | Promise<boolean>;
  /** How it runs; computed at start so it can read the current config. */
  run: () => RunSpec | Promise<RunSpec>;
  restart?: 'always' | 'on-failure' | 'never';
  /** Exponential backoff between restarts, reset after a run that lasted resetAfterMs. */
  backoff?: { initialMs: number; maxMs: number; resetAfterMs: number };
  /**
   * intervalMs between checks until healthy (and while not); healthyIntervalMs once healthy
   * (default: the same). firstCheckAfterMs: how long after a start the first check comes
   * (default: at once), for a check that is costly and cannot pass that soon.
   */
  health?: { check: () => Promise<boolean>; intervalMs?: number; healthyIntervalMs?: number; firstCheckAfterMs?: number };
  /** SIGTERM (or stopSignal), then SIGKILL after this long. */
  stopTimeoutMs?: number;
  stopSignal?: NodeJS.Signals;
  /**
   * cpu.weight of the service's group until boot is done (systemd's StartupCPUWeight=), then
   * the default 100. For a service nothing on the way to ready waits for: on a busy CPU its
   * own start then yields to boot's tasks instead of sharing the CPU with them. Only a share
   * under contention: on an idle CPU the service runs at full speed.
   */
  startupCpuWeight?: number;
  /** memory.max / cpu.max of the service's own cgroup (none: unlimited). */
  limits?: Limits;
  /** The service's oom_score_adj (default 0: init's -1000 is not inherited). */
  oomScoreAdj?: number;
}

/** The startup CPU weight of the services boot does not wait for: a tenth of init's share. */
export const STARTUP_CPU_WEIGHT = 10;

export const DEFAULT_BACKOFF = { initialMs: 1000, maxMs: 60_000, resetAfterMs: 120_000 };
