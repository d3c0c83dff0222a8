// Runs services: dependency order on start, reverse order on stop, restarts with
// exponential backoff, health checks, per-service logs with rotation and an in-memory
// tail for `kiln status` / `kiln logs`. Each service gets its own process group so a
// stop reaches everything it started, and (where init set up cgroups) its own cgroup with
// its declared limits, joined before the program runs; its oom_score_adj is reset from
// init's -1000 to 0 (or its declared value) the same way.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { EventEmitter } from 'node:events';
import { delimiter, join } from 'node:path';
import { entering } from '../exec.ts';
import { appendRotating } from '../log.ts';
import { activeCgroups, checkLimits, CPU_WEIGHT, groupMembers, rssOf, type CgroupTree } from './cgroups.ts';
import { DEFAULT_BACKOFF, type ServiceSpec } from './service.ts';

export type State = 'waiting' | 'starting' | 'running' | 'backoff' | 'stopping' | 'stopped' | 'finished' | 'failed' | 'skipped';

export interface ServiceStatus {
  id: string; description: string; state: State; pid?: number; restarts: number;
  since: number; healthy?: boolean; lastExit?: string; nextStartInMs?: number;
  /** The service's cgroup directory, when it has one. */
  cgroup?: string;
  /** memory.current of its cgroup, else the summed RSS of its process group; read when used. */
  memoryBytes?: number;
}

const TAIL_LINES = 200;
/** A service writing without newlines: its pending line is flushed once this long. */
export const MAX_PARTIAL = 64 << 10;
/** Lines kept in the in-memory tail are cut to this (the log file keeps them whole). */
export const MAX_TAIL_LINE = 8 << 10;
const SERVICE_PATH = '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin';

class Instance {
  state: State = 'waiting';
  child?: ChildProcess;
  restarts = 0;
  failures = 0;
  since = Date.now();
  startedAt = 0;
  healthy?: boolean;
  lastExit?: string;
  nextStartAt?: number;
  tail: string[] = [];
  partial = '';
  timer?: NodeJS.Timeout;
  healthTimer?: NodeJS.Timeout;
  stopping = false;
  cgroupDir?: string;
  constructor(readonly spec: ServiceSpec) {}
}

export interface SupervisorOptions {
  logDir: string;
  /** Line sink for state changes (init's console log). */
  say?: (msg: string) => void;
  /** Where service groups go: null for none; by default the tree init set up at boot, if any. */
  cgroups?: CgroupTree | null;
}

/** The file a command name resolves to through PATH, or undefined when none is executable. */
export function findExecutable(cmd: string, path = SERVICE_PATH): string | undefined {
  const ok = (f: string) => { try { accessSync(f, constants.X_OK); return true; } catch { return false; } };
  if (cmd.includes('/')) return ok(cmd) ? cmd : undefined;
  return path.split(delimiter).filter(Boolean).map((d) => join(d, cmd)).find(ok);
}

const cut = (line: string) => line.length > MAX_TAIL_LINE ? `${line.slice(0, MAX_TAIL_LINE)} [cut: ${line.length - MAX_TAIL_LINE} more characters]` : line;

/** Orders services so each comes after its dependencies; reports unknown ids and cycles. */
export function startOrder(specs: ServiceSpec[]): string[] {
  const byId = new Map(specs.map((s) => [s.id, s]));
  const order: string[] = [];
  const mark = new Map<string, 'temp' | 'done'>();
  const visit = (id: string, path: string[]) => {
    if (mark.get(id) === 'done') return;
    if (mark.get(id) === 'temp') throw new Error(`service dependency cycle: ${[...path, id].join(' -> ')}`);
    const s = byId.get(id);
    if (!s) throw new Error(`service ${path[path.length - 1]} depends on unknown service ${id}`);
    mark.set(id, 'temp');
    for (const d of s.depends ?? []) visit(d, [...path, id]);
    mark.set(id, 'done');
    order.push(id);
  };
  for (const s of specs) visit(s.id, []);
  return order;
}

export class Supervisor extends EventEmitter {
  private services = new Map<string, Instance>();
  private shuttingDown = false;
  private startupOver = false;
  constructor(readonly o: SupervisorOptions) { super(); }

  /** The services' cgroups: the tree given, else the one init set up at boot; none when null. */
  private cgroups(): CgroupTree | undefined {
    return this.o.cgroups === null ? undefined : this.o.cgroups ?? activeCgroups();
  }

  /**
   * Boot is done: every group started with a startup CPU weight gets the default, and so
   * does every later start. Idempotent.
   */
  endStartup(): void {
    if (this.startupOver) return;
    this.startupOver = true;
    const tree = this.cgroups();
    for (const inst of this.services.values()) {
      if (inst.spec.startupCpuWeight !== undefined && inst.cgroupDir) tree?.setCpuWeight(inst.cgroupDir, CPU_WEIGHT);
    }
  }

  add(spec: ServiceSpec): void {
    if (this.services.has(spec.id)) throw new Error(`service ${spec.id} declared twice`);
    const bad = checkLimits(spec.id, spec.limits, spec.oomScoreAdj, spec.startupCpuWeight);
    if (bad) throw new Error(bad);
    this.services.set(spec.id, new Instance(spec));
  }

  /** Starts every service once its dependencies are ready. Resolves when all have been started or skipped. */
  async startAll(): Promise<void> {
    const order = startOrder([...this.services.values()].map((i) => i.spec));
    await Promise.all(order.map((id) => this.start(id)));
  }

  async start(id: string): Promise<void> {
    const inst = this.get(id);
    for (const d of inst.spec.depends ?? []) {
      const ok = await this.waitReady(d);
      if (!ok) { this.setState(inst, 'skipped', `dependency ${d} is not available`); return; }
    }
    if (this.shuttingDown) return;
    try {
      if (inst.spec.condition && !(await inst.spec.condition())) { this.setState(inst, 'skipped', 'condition not met'); return; }
    } catch (e) { this.setState(inst, 'skipped', `condition failed: ${(e as Error).message}`); return; }
    await this.spawnOnce(inst);
    this.startHealth(inst);
  }

  /** True once the service runs (and is healthy, if it has a check); false if it will not. */
  waitReady(id: string): Promise<boolean> {
    const inst = this.get(id);
    const ready = () => inst.state === 'running' && (!inst.spec.health || inst.healthy === true) || inst.state === 'finished';
    const never = () => inst.state === 'skipped' || inst.state === 'stopped' || (inst.state === 'failed');
    if (ready()) return Promise.resolve(true);
    if (never()) return Promise.resolve(false);
    return new Promise((resolve) => {
      const on = (sid: string) => {
        if (sid !== id) return;
        if (ready()) { this.off('change', on); resolve(true); } else if (never()) { this.off('change', on); resolve(false); }
      };
      this.on('change', on);
    });
  }

  private get(id: string): Instance {
    const i = this.services.get(id);
    if (!i) throw new Error(`unknown service ${id}`);
    return i;
  }

  private setState(inst: Instance, state: State, why?: string) {
    if (inst.state === state && !why) return;
    inst.state = state;
    inst.since = Date.now();
    if (why || ['running', 'failed', 'skipped'].includes(state)) this.o.say?.(`service ${inst.spec.id} ${state}${why ? `: ${why}` : ''}`);
    this.emit('change', inst.spec.id, state);
  }

  private log(inst: Instance, text: string) {
    appendRotating(join(this.o.logDir, `${inst.spec.id}.log`), text);
    const lines = (inst.partial + text).split('\n');
    inst.partial = lines.pop() ?? '';
    // Output without newlines must not grow init's memory: flush it as a (cut) line.
    if (inst.partial.length > MAX_PARTIAL) { lines.push(inst.partial); inst.partial = ''; }
    inst.tail.push(...lines.map(cut));
    if (inst.tail.length > TAIL_LINES) inst.tail.splice(0, inst.tail.length - TAIL_LINES);
  }

  private async spawnOnce(inst: Instance): Promise<void> {
    if (this.shuttingDown || inst.stopping) return;
    this.setState(inst, 'starting');
    let spec;
    try { spec = await inst.spec.run(); } catch (e) {
      inst.lastExit = `could not prepare: ${(e as Error).message}`;
      this.setState(inst, 'failed', inst.lastExit);
      this.scheduleRestart(inst, false);
      return;
    }
    const env = { PATH: SERVICE_PATH, ...spec.env };
    let child: ChildProcess;
    try {
      // The program starts through a shell that joins the group and sets the OOM score, then
      // execs it; so check here that it exists, for the same "cannot start" as a direct spawn.
      if (!findExecutable(spec.cmd, env.PATH)) throw Object.assign(new Error(`spawn ${spec.cmd} ENOENT`), { code: 'ENOENT' });
      const group = this.placeGroup(inst);
      const [file, argv] = entering(spec.cmd, spec.args, { cgroupProcs: group, oomScoreAdj: inst.spec.oomScoreAdj ?? 0 });
      child = spawn(file, argv, { cwd: spec.cwd ?? '/', env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    } catch (e) {
      inst.lastExit = `cannot start ${spec.cmd}: ${(e as Error).message}`;
      this.setState(inst, 'failed', inst.lastExit);
      this.scheduleRestart(inst, false);
      return;
    }
    inst.child = child;
    inst.startedAt = Date.now();
    inst.healthy = undefined;
    child.stdout?.on('data', (d: Buffer) => this.log(inst, d.toString()));
    child.stderr?.on('data', (d: Buffer) => this.log(inst, d.toString()));
    let spawnError: string | undefined;
    let ended = false;
    const onEnd = (code: number | null, signal: NodeJS.Signals | null) => {
      if (ended) return;
      ended = true;
      inst.child = undefined;
      const ran = Date.now() - inst.startedAt;
      inst.lastExit = spawnError ? `cannot start ${spec.cmd}: ${spawnError}` : signal ? `killed by ${signal}` : `exited with code ${code}`;
      this.log(inst, `[kiln] ${inst.spec.id} ${inst.lastExit} after ${(ran / 1000).toFixed(1)} s\n`);
      // Kill what the service left behind in its group, so nothing outlives it unsupervised.
      if (child.pid) { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* group already empty */ } }
      if (inst.stopping || this.shuttingDown) { this.setState(inst, 'stopped'); return; }
      const clean = code === 0 && !signal && !spawnError;
      const policy = inst.spec.restart ?? 'always';
      if (policy === 'never' || (policy === 'on-failure' && clean)) {
        this.setState(inst, clean ? 'finished' : 'failed', inst.lastExit);
        return;
      }
      const backoff = inst.spec.backoff ?? DEFAULT_BACKOFF;
      if (ran >= backoff.resetAfterMs) inst.failures = 0;
      this.scheduleRestart(inst, true);
    };
    // A program that cannot be started emits 'error' and may never emit 'exit'.
    child.on('error', (e) => { spawnError = e.message; if (!child.pid) onEnd(null, null); });
    child.on('exit', onEnd);
    await new Promise<void>((resolve) => {
      child.once('spawn', () => resolve());
      child.once('error', () => resolve());
    });
    if (inst.child === child && !spawnError) { this.setState(inst, 'running', undefined); }
  }

  /** Makes the service's cgroup (with its limits) and returns its cgroup.procs, or undefined without cgroups. */
  private placeGroup(inst: Instance): string | undefined {
    const tree = this.cgroups();
    if (!tree) return undefined;
    try {
      const weight = !this.startupOver && inst.spec.startupCpuWeight !== undefined ? inst.spec.startupCpuWeight : CPU_WEIGHT;
      const g = tree.prepare(inst.spec.id, inst.spec.limits, weight);
      if (!g) { this.o.say?.(`service ${inst.spec.id}: the id cannot name a cgroup; it runs in init's`); return undefined; }
      for (const p of g.problems) this.o.say?.(`service ${inst.spec.id}: ${p}`);
      inst.cgroupDir = g.dir;
      return g.procs;
    } catch (e) {
      this.o.say?.(`service ${inst.spec.id}: no cgroup (${(e as Error).message}); it runs in init's`);
      return undefined;
    }
  }

  /** Memory of a running service: its group's memory.current, else its process group's RSS. */
  private memoryOf(inst: Instance): number | undefined {
    const pid = inst.child?.pid;
    if (!pid) return undefined;
    const tree = this.cgroups();
    if (inst.cgroupDir && tree) {
      const m = tree.memoryCurrent(inst.cgroupDir);
      if (m !== undefined) return m;
      const procs = tree.procs(inst.cgroupDir);
      if (procs.length) return rssOf(procs);
    }
    return rssOf(groupMembers(pid));
  }

  /** Delay before the next start: initial * 2^failures, capped. */
  static backoffDelay(failures: number, b = DEFAULT_BACKOFF): number {
    return Math.min(b.maxMs, b.initialMs * 2 ** Math.max(0, failures));
  }

  private scheduleRestart(inst: Instance, ranOnce: boolean) {
    const delay = Supervisor.backoffDelay(inst.failures, inst.spec.backoff ?? DEFAULT_BACKOFF);
    inst.failures++;
    inst.nextStartAt = Date.now() + delay;
    this.setState(inst, 'backoff', `${inst.lastExit}; restart in ${(delay / 1000).toFixed(1)} s`);
    inst.timer = setTimeout(() => {
      inst.timer = undefined;
      inst.nextStartAt = undefined;
      if (ranOnce) inst.restarts++;
      void this.spawnOnce(inst);
    }, delay);
  }

  private startHealth(inst: Instance) {
    const h = inst.spec.health;
    if (!h) return;
    const tick = async () => {
      if (inst.stopping || this.shuttingDown) return;
      let ok = false;
      if (inst.state === 'running') { try { ok = await h.check(); } catch { ok = false; } }
      if (ok !== inst.healthy && inst.state === 'running') {
        const first = inst.healthy === undefined;
        inst.healthy = ok;
        // Not yet healthy after a start is expected; only report a change.
        if (first && !ok) return void (inst.healthTimer = setTimeout(tick, h.intervalMs ?? 2000));
        this.o.say?.(`service ${inst.spec.id} ${ok ? 'healthy' : 'unhealthy'}`);
        this.emit('change', inst.spec.id, inst.state);
      }
      inst.healthTimer = setTimeout(tick, (ok && h.healthyIntervalMs) || (h.intervalMs ?? 2000));
    };
    if (h.firstCheckAfterMs) inst.healthTimer = setTimeout(tick, h.firstCheckAfterMs);
    else void tick();
  }

  /** Stops one service: stop signal to its process group, SIGKILL after its timeout. */
  async stop(id: string): Promise<void> {
    const inst = this.get(id);
    inst.stopping = true;
    if (inst.timer) { clearTimeout(inst.timer); inst.timer = undefined; }
    if (inst.healthTimer) { clearTimeout(inst.healthTimer); inst.healthTimer = undefined; }
    const child = inst.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      if (!['skipped', 'finished', 'failed'].includes(inst.state)) this.setState(inst, 'stopped');
      return;
    }
    this.setState(inst, 'stopping');
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    try { process.kill(-child.pid!, inst.spec.stopSignal ?? 'SIGTERM'); } catch { /* gone */ }
    const timeout = inst.spec.stopTimeoutMs ?? 10_000;
    let t: NodeJS.Timeout | undefined;
    const killed = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => { t = setTimeout(() => r(true), timeout); })]);
    clearTimeout(t);
    if (killed) {
      this.o.say?.(`service ${id} did not stop within ${timeout / 1000} s: killing it`);
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
      await exited;
    }
    this.o.say?.(`service ${id} stopped (${inst.lastExit})`);
  }

  /** Stops everything in reverse start order. */
  async stopAll(): Promise<void> {
    this.shuttingDown = true;
    const order = startOrder([...this.services.values()].map((i) => i.spec)).reverse();
    for (const id of order) await this.stop(id);
  }

  status(): ServiceStatus[] {
    return [...this.services.values()].map((i) => {
      const s: ServiceStatus = {
        id: i.spec.id, description: i.spec.description, state: i.state, pid: i.child?.pid, restarts: i.restarts,
        since: i.since, healthy: i.healthy, lastExit: i.lastExit,
        nextStartInMs: i.nextStartAt ? Math.max(0, i.nextStartAt - Date.now()) : undefined,
        cgroup: i.cgroupDir,
      };
      // Read only when used (JSON.stringify for `kiln status` reads it): status() is also polled
      // for the state alone, and the RSS fallback scans /proc.
      Object.defineProperty(s, 'memoryBytes', { enumerable: true, get: () => this.memoryOf(i) });
      return s;
    });
  }

  logTail(id: string, lines = 50): string[] {
    return this.get(id).tail.slice(-lines);
  }
}

/** A duration as `kiln status` shows it: 45s, 12m, 3h. */
export function ago(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

/** Memory as `kiln status` shows it: 1024-based, one decimal below 10 (812K, 9.5M, 1.2G); - when unknown. */
export function formatBytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n) || n < 0) return '-';
  const units = ['B', 'K', 'M', 'G', 'T'];
  let v = n, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${u && v < 10 ? v.toFixed(1) : Math.round(v)}${units[u]}`;
}

/** The service table of `kiln status` (MEMORY before LAST EXIT, so the columns before it keep their places). */
export function serviceTable(services: ServiceStatus[], now = Date.now()): string[] {
  const lines = ['SERVICE'.padEnd(18) + 'STATE'.padEnd(10) + 'HEALTH'.padEnd(10) + 'RESTARTS'.padEnd(10) + 'SINCE'.padEnd(8) + 'MEMORY'.padEnd(9) + 'LAST EXIT'];
  for (const s of services) {
    const health = s.healthy === undefined ? '-' : s.healthy ? 'ok' : 'failing';
    lines.push(s.id.padEnd(18) + s.state.padEnd(10) + health.padEnd(10) + String(s.restarts).padEnd(10) + ago(now - s.since).padEnd(8) + formatBytes(s.memoryBytes).padEnd(9) + (s.lastExit ?? ''));
  }
  return lines;
}
