// After `ready`: the updater, judging this boot (an update's first boot, or blessing a
// healthy slot), uncordoning, add-ons, update polling and the hourly key refresh. Each is a
// step on its own: a step that throws is logged and noted, and the steps after it still run,
// so a bad updater setting cannot keep a healthy slot unblessed or revoked keys in place.
import { mkdirSync } from 'node:fs';
import { reconcileAddons, type AddonResult } from '../addons/apply.ts';
import { cmdlineArg } from '../boot.ts';
import { blessBooted, partitionBySpec, siblingPartition, ubootFellBackFrom } from '../bootctl/index.ts';
import type { KilnConfig } from '../config/schema.ts';
import { applySshKeys, selectedChannel } from '../configure.ts';
import { run } from '../exec.ts';
import { say } from '../log.ts';
import { isShuttingDown } from '../power.ts';
import { K3S, k3sCommand } from '../services/k3s.ts';
import type { Slot } from '../slot.ts';
import { partitionByLabel, read } from '../system.ts';
import { drainNode, uncordonIfDrained } from '../update/drain.ts';
import { clockSynced } from '../clock.ts';
import { fleetLockId, readSystemFacts, Updater, type AfterBootResult, type UpdaterOptions } from '../update/updater.ts';
import { leaseHolder, rebootLockFor } from '../update/rebootlock.ts';
import { chosenOk, k3sStatus, kubeNodeName, leaseIp, type BootContext, type NodeUpdater } from './context.ts';

export interface PostBootStep {
  name: string;
  /** Started and left running (a loop, a wait for k3s): later steps do not wait for it. */
  background?: boolean;
  run: () => unknown;
}

/** Runs the steps in order; a throw (or a rejected background step) is logged and noted, never passed on. */
export async function runPostBoot(ctx: Pick<BootContext, 'notes'>, steps: PostBootStep[]): Promise<void> {
  for (const step of steps) {
    const failed = (e: unknown) => {
      const error = (e as Error)?.message ?? String(e);
      say(`post-boot/${step.name} failed: ${error}`);
      ctx.notes.push(`post-boot step ${step.name} failed: ${error}`);
    };
    if (step.background) { void (async () => step.run())().catch(failed); continue; }
    try { await step.run(); } catch (e) { failed(e); }
  }
}

/** The side effects the steps reach; tests replace them. */
export interface PostBootEdges {
  newUpdater(o: UpdaterOptions): NodeUpdater;
  bless(slot: Slot): Promise<string>;
  /** U-Boot: the slot the boot loader fell back from, read before blessing. */
  fellBackFrom(slot: Slot): Slot | undefined;
  uncordon(ctx: BootContext): Promise<void>;
  addons(ctx: BootContext): Promise<void>;
  refreshKeys(c: KilnConfig, allowInsecureHttp?: boolean): Promise<unknown>;
  every(fn: () => void, ms: number): void;
  pause(ms: number): Promise<void>;
}

const EDGES: PostBootEdges = {
  newUpdater: (o) => new Updater(o),
  bless: (slot) => blessBooted(slot),
  fellBackFrom: (slot) => ubootFellBackFrom(slot),
  uncordon: uncordonWhenReady,
  addons: addonsLoop,
  refreshKeys: (c, allowInsecureHttp) => applySshKeys(c, { allowInsecureHttp }),
  every: (fn, ms) => { setInterval(fn, ms); },
  pause: (ms) => new Promise((r) => setTimeout(r, ms)),
};

const HEALTH_DEADLINE_MS = 10 * 60_000;

/** The steps after boot, in order. `stepsOk`: every boot task passed. */
export function postBootSteps(ctx: BootContext, stepsOk: boolean, edgesIn: Partial<PostBootEdges> = {}): PostBootStep[] {
  const edges = { ...EDGES, ...edgesIn };
  // Revoked keys disappear: refetch the key services' lists every hour.
  const keyRefresh: PostBootStep = { name: 'key refresh', run: () => edges.every(() => { if (chosenOk(ctx)) void edges.refreshKeys(ctx.cfg(), ctx.chosen?.allowInsecureHttp).catch(() => undefined); }, 3600_000) };
  const addons: PostBootStep = { name: 'add-ons', background: true, run: () => edges.addons(ctx) };
  if (ctx.live) {
    return [
      { name: 'live', run: () => say('live system: not blessing or updating (install it with kiln install)') },
      addons,
      keyRefresh,
    ];
  }
  /** What the updater made of this boot; an Error when it could not tell. */
  let verdict: AfterBootResult | Error | undefined;
  return [
    {
      name: 'updater', run: () => {
        try { ctx.updater = edges.newUpdater(updaterOptions(ctx)); } catch (e) { ctx.updaterProblem = (e as Error)?.message ?? String(e); throw e; }
      },
    },
    {
      // An update's first boot is judged by the updater: blessed, or marked bad and left.
      name: 'update verdict', run: async () => {
        if (!ctx.updater) return;
        try { verdict = await ctx.updater.afterBoot(async () => stepsOk && k3sHealthyNow(ctx), HEALTH_DEADLINE_MS); } catch (e) { verdict = e as Error; throw e; }
      },
    },
    { name: 'bless', run: () => blessWhenHealthy(ctx, verdict, stepsOk, edges) },
    { name: 'uncordon', background: true, run: () => edges.uncordon(ctx) },
    addons,
    {
      name: 'update polling', run: () => {
        const u = ctx.cfg().kiln.updates;
        if (u.url && ctx.updater) ctx.updater.startPolling(u.poll_minutes * 60_000, u.poll_minutes * 30_000);
      },
    },
    keyRefresh,
  ];
}

/**
 * Blesses the booted slot once the node is healthy, unless the updater already judged an
 * update's first boot. Without an updater (it could not be made) a healthy slot is still
 * blessed: the boot loader would otherwise roll back a good system when its tries run out.
 */
async function blessWhenHealthy(ctx: BootContext, verdict: AfterBootResult | Error | undefined, stepsOk: boolean, edges: PostBootEdges) {
  const health = async () => stepsOk && k3sHealthyNow(ctx);
  const slot = ctx.info.slot;
  if (verdict instanceof Error) { say(`not blessing slot ${slot}: the updater could not judge this boot`); return; }
  if (verdict && verdict.outcome !== 'none' && verdict.outcome !== 'not-rebooted' && verdict.outcome !== 'fell-back') return;
  if (verdict?.outcome === 'fell-back') ctx.notes.push(verdict.message);
  // No update was pending: a fresh image's first boots are blessed once healthy.
  const deadline = Date.now() + HEALTH_DEADLINE_MS;
  let ok = await health();
  while (!ok && Date.now() < deadline && !isShuttingDown()) { await edges.pause(5000); ok = await health(); }
  const fellBack = edges.fellBackFrom(slot);
  if (fellBack) ctx.notes.push(`the boot loader fell back from slot ${fellBack} (its tries were spent) to slot ${slot}`);
  if (ok) { try { say(await edges.bless(slot)); } catch (e) { say(`cannot bless slot ${slot}: ${(e as Error).message}`); } }
  else say(`not blessing slot ${slot}: the node is not healthy (boot steps ${stepsOk ? 'ok' : 'failed'}, k3s not ready)`);
}

/**
 * Healthy now: k3s (if the image runs it) is running and its last /readyz passed. A snapshot,
 * never a wait: callers poll it against a deadline, so a k3s that keeps crashing fails the
 * check in time instead of holding it open.
 */
function k3sHealthyNow(ctx: BootContext): boolean {
  const k3s = k3sStatus(ctx);
  return !k3s || k3s.state === 'skipped' || (k3s.state === 'running' && k3s.healthy === true);
}

/** The updater's settings from the config in force and this image's facts. */
export function updaterOptions(ctx: BootContext): UpdaterOptions {
  const c = ctx.cfg();
  const { info } = ctx;
  const facts = readSystemFacts('/');
  const mid = facts.machineId || ctx.machineId;
  return {
    channelUrl: c.kiln.updates.url || 'http://updates-not-configured.invalid', channel: selectedChannel() ?? c.kiln.channel, arch: facts.arch,
    trust: c.kiln.updates.url ? facts.trust : null, trustProblem: c.kiln.updates.url ? facts.trustProblem : 'no kiln.updates.url in the config',
    currentVersion: facts.currentVersion, bootedSlot: info.slot, buildTime: facts.buildTime, clockSynced, machineId: facts.machineId || ctx.machineId,
    wariness: c.kiln.updates.canary ? 0 : undefined,
    devices: { slotDevice: (slot: Slot) => { const d = partitionByLabel(`kiln-root-${slot}`) ?? piRootPartition(ctx, slot); if (!d) throw new Error(`no partition labelled kiln-root-${slot}`); return `/dev/${d}`; } },
    reboot: () => ctx.power('reboot', 'update'), log: say, window: c.kiln.updates.window || undefined,
    beforeReboot: async () => {
      const k3s = k3sStatus(ctx);
      if (!ctx.cfg().kiln.updates.drain || k3s?.state !== 'running') return;
      say(`update: ${await drainNode({ k3s: K3S, node: kubeNodeName(ctx), timeoutS: ctx.cfg().kiln.updates.drain_timeout_s })}`);
    },
    fleetlock: c.kiln.updates.fleetlock_url ? { base: c.kiln.updates.fleetlock_url, group: c.kiln.updates.fleetlock_group || 'default' } : undefined,
    rebootLock: rebootLockFor(c.kiln.updates, {
      fleetLockId: fleetLockId(mid), leaseHolder: leaseHolder(kubeNodeName(ctx), mid),
      clusterUp: () => { const k = k3sStatus(ctx); return k?.state === 'running' && k.healthy === true; },
    }),
    bootId: read('/proc/sys/kernel/random/boot_id').trim(),
  };
}

/** MBR (the Pi): root slots are partitions 2 and 3 of the disk that holds kiln.boot. */
function piRootPartition(ctx: BootContext, slot: Slot): string | undefined {
  const boot = partitionBySpec(cmdlineArg(ctx.info.cmdline, 'kiln.boot'));
  return boot ? siblingPartition(boot, slot === 'a' ? 2 : 3) : undefined;
}

/** A node drained for an update's reboot takes pods again once k3s is back. */
async function uncordonWhenReady(ctx: BootContext): Promise<void> {
  const k3s = k3sStatus(ctx);
  if (!k3s || k3s.state === 'skipped' || !(await ctx.supervisor.waitReady('k3s'))) return;
  const m = await uncordonIfDrained({ k3s: K3S, node: kubeNodeName(ctx) });
  if (m) say(m);
}

export const ADDON_MESSAGES: Record<string, string> = { install: 'installed', upgrade: 'upgraded', unchanged: 'up to date', 'user-owned': 'left alone (changed by you)', 'broken-seal': 'left alone (seal broken by you)' };

const addonLine = (r: AddonResult) => `addon ${r.name}: ${ADDON_MESSAGES[r.decision!.action]}${r.decision!.action === 'user-owned' && r.decision!.changedFields?.length ? ` (${r.decision!.changedFields.join(', ')})` : ''}`;

/** Add-ons after k3s is ready (never part of its start), then again every 30 minutes. */
async function addonsLoop(ctx: BootContext): Promise<void> {
  const k3s = k3sStatus(ctx);
  if (!k3s || k3s.state === 'skipped' || k3sCommand(ctx.cfg()).args[0] !== 'server') return;
  const pass = async (first: boolean) => {
    if (!(await ctx.supervisor.waitReady('k3s'))) return;
    ctx.addonResults = await reconcileAddons();
    for (const r of ctx.addonResults) {
      if (r.error) say(`addon ${r.name}: ${r.error}`);
      else if (first || r.decision!.action !== 'unchanged') say(addonLine(r));
    }
    if (ctx.cfg().kiln.manifests.auto_apply) {
      const dir = '/var/lib/kiln/manifests';
      mkdirSync(dir, { recursive: true });
      const r = await run('/usr/bin/k3s', ['kubectl', 'apply', '-f', dir], { timeoutMs: 120_000 });
      if (r.code !== 0) say(`manifests in ${dir}: ${r.stderr.trim().split('\n').pop()}`);
    }
  };
  await pass(true);
  const ip = leaseIp();
  if (ctx.addonResults.some((r) => r.name === 'headlamp' && !r.error)) say(`UI: https://${ip ?? '<node address>'}/headlamp/ (sign in: ssh root@${ip ?? '<node>'} kiln ui)`);
  // A later pass that throws is reported; the next one tries again.
  setInterval(() => { void pass(false).catch((e) => say(`addons: ${(e as Error)?.message ?? e}`)); }, 30 * 60_000);
}
