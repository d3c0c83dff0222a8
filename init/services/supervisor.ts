// Runs services: dependency order on start, reverse order on stop, restarts with
// exponential backoff, health checks, per-service logs with rotation and an in-memory
// tail for `kiln status` / `kiln logs`. Each service gets its own process group so a
// stop reaches everything it started.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { appendRotating } from '../log.ts';
import { DEFAULT_BACKOFF, type ServiceSpec } from './service.ts';

export type State = 'waiting' | 'starting' | 'running' | 'backoff' | 'stopping' | 'stopped' | 'finished' | 'failed' | 'skipped';

export interface ServiceStatus {
  id: string; description: string; state: State; pid?: number; restarts: number;
  since: number; healthy?: boolean; lastExit?: string; nextStartInMs?: number;
}

const TAIL_LINES = 200;

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
  constructor(readonly spec: ServiceSpec) {}
}

export interface SupervisorOptions {
  logDir: string;
  /** Line sink for state changes (init's console log). */
  say?: (msg: string) => void;
}

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
  constructor(readonly o: SupervisorOptions) { super(); }

  add(spec: ServiceSpec): void {
    if (this.services.has(spec.id)) throw new Error(`service ${spec.id} declared twice`);
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
    inst.tail.push(...lines);
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
    let child: ChildProcess;
    try {
      child = spawn(spec.cmd, spec.args, { cwd: spec.cwd ?? '/', env: { PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', ...spec.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
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
    void tick();
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
    return [...this.services.values()].map((i) => ({
      id: i.spec.id, description: i.spec.description, state: i.state, pid: i.child?.pid, restarts: i.restarts,
      since: i.since, healthy: i.healthy, lastExit: i.lastExit,
      nextStartInMs: i.nextStartAt ? Math.max(0, i.nextStartAt - Date.now()) : undefined,
    }));
  }

  logTail(id: string, lines = 50): string[] {
    return this.get(id).tail.slice(-lines);
  }
}
