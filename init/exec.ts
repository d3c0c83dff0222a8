// Running programs from init: always with a timeout, never throwing, output captured.
// Every command runs in its own process group so a timeout reaches what it started too
// (`daemon &` in a user command), and the result comes when the command itself exits, not
// when the last holder of its output pipe lets go.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

export interface RunResult {
  code: number | null; signal: string | null; stdout: string; stderr: string; error?: string;
  /** The timeout fired: the process group was sent SIGTERM, then SIGKILL. */
  timedOut?: boolean;
}

export interface RunOptions {
  timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string; cwd?: string;
  /** An open file descriptor for stdout and stderr instead of pipes (stdout/stderr in the result stay empty). */
  output?: number | 'ignore';
  /** After SIGTERM to the group on timeout, how long before SIGKILL. */
  killGraceMs?: number;
  /** How long to wait, after the command exits, for the rest of its piped output. */
  drainMs?: number;
  /**
   * Set before the program starts (through /bin/sh, which then execs it): its
   * oom_score_adj, and the cgroup.procs file of the group to run in. Deterministic, unlike
   * the reset after spawn, so for commands that may start daemons.
   */
  enter?: EnterOptions;
}

export interface EnterOptions { oomScoreAdj?: number; cgroupProcs?: string }

const OUTPUT_CAP = 1 << 20;

/**
 * The command line that first joins a cgroup and sets its OOM score, then execs cmd: the
 * settings are in place before the program's first instruction, so nothing it forks can
 * escape them. Failures to apply are reported on stderr and do not stop the program.
 */
export function entering(cmd: string, args: string[], e: EnterOptions): [string, string[]] {
  const steps: string[] = [];
  if (e.cgroupProcs) steps.push(`{ echo $$ > "$1"; } 2>/dev/null || echo "kiln: could not join the cgroup $1" >&2`);
  if (e.oomScoreAdj !== undefined) steps.push(`{ echo ${Math.trunc(e.oomScoreAdj)} > /proc/self/oom_score_adj; } 2>/dev/null || echo "kiln: could not set oom_score_adj ${Math.trunc(e.oomScoreAdj)}" >&2`);
  steps.push('shift; exec "$@"');
  return ['/bin/sh', ['-c', steps.join('\n'), 'kiln-enter', e.cgroupProcs ?? '', cmd, ...args]];
}

/** init's own oom_score_adj (0 where it cannot be read). */
export function ownOomScoreAdj(proc = '/proc'): number {
  try { return Number(readFileSync(`${proc}/self/oom_score_adj`, 'utf8').trim()) || 0; } catch { return 0; }
}

/**
 * Whether what init starts needs its oom_score_adj reset. Once init is protected it stays so,
 * and a reset where none was needed writes 0 over 0, so a non-zero answer is kept: one read
 * of /proc fewer per spawn.
 */
let protectedSeen = false;
const needsAdjReset = () => protectedSeen ||= ownOomScoreAdj() !== 0;

/** Sends a signal to a whole process group; false if the group is gone. */
export function killGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try { process.kill(-pgid, signal); return true; } catch { return false; }
}

export function run(cmd: string, args: string[] = [], o: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    let stdout = '', stderr = '';
    let child: ReturnType<typeof spawn>;
    const [file, argv] = o.enter ? entering(cmd, args, o.enter) : [cmd, args];
    try {
      const out = o.output ?? 'pipe';
      // No input: /dev/null (end of file at once, as an empty pipe gives) and one pipe fewer to set up.
      child = spawn(file, argv, { env: o.env ?? process.env, cwd: o.cwd, stdio: [o.input === undefined ? 'ignore' : 'pipe', out, out], detached: true });
    } catch (e) {
      resolve({ code: null, signal: null, stdout, stderr, error: (e as Error).message });
      return;
    }
    // Init protects itself from the OOM killer; what it runs must not inherit that.
    if (child.pid && !o.enter && needsAdjReset()) { try { writeFileSync(`/proc/${child.pid}/oom_score_adj`, '0'); } catch { /* gone already */ } }
    let timedOut = false;
    let settled = false;
    let swept: Promise<void> = Promise.resolve();
    let lastResort: NodeJS.Timeout | undefined;
    let drain: NodeJS.Timeout | undefined;
    const finish = (r: RunResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer); clearTimeout(lastResort); clearTimeout(drain);
      child.stdout?.destroy();
      child.stderr?.destroy();
      resolve(timedOut ? { ...r, timedOut } : r);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      const pgid = child.pid!;
      killGroup(pgid, 'SIGTERM');
      swept = (async () => {
        const t0 = Date.now();
        while (!settled && killGroup(pgid, 0) && Date.now() - t0 < (o.killGraceMs ?? 2000)) await sleep(50);
        killGroup(pgid, 'SIGKILL');
      })();
      // A process in uninterruptible sleep can outlive SIGKILL: the caller is not held past this.
      void swept.then(() => {
        if (!settled) lastResort = setTimeout(() => finish({ code: null, signal: null, stdout, stderr, error: `${cmd}: timed out after ${(o.timeoutMs ?? 30_000) / 1000} s and did not exit after SIGKILL` }), 5000);
      });
    }, o.timeoutMs ?? 30_000);
    child.stdout?.on('data', (d) => { if (stdout.length < OUTPUT_CAP) stdout += d; });
    child.stderr?.on('data', (d) => { if (stderr.length < OUTPUT_CAP) stderr += d; });
    const closed = new Promise<void>((r) => child.once('close', () => r()));
    child.on('error', (e) => finish({ code: null, signal: null, stdout, stderr, error: e.message }));
    child.on('exit', (code, signal) => {
      // What the command left running in the background is its business once it has exited.
      if (!timedOut) clearTimeout(timer);
      // Output written before the exit may still be in the pipes; a background process
      // holding them open must not keep the caller waiting, so the wait is bounded.
      const done = () => finish({ code, signal, stdout, stderr });
      void Promise.all([swept, Promise.race([closed, new Promise<void>((r) => { drain = setTimeout(r, o.drainMs ?? 500); })])]).then(done);
    });
    child.stdin?.on('error', () => { /* child did not read its input */ });
    child.stdin?.end(o.input);
  });
}

/** Runs and reports failure as a short string (undefined on success). */
export async function runOk(cmd: string, args: string[], o?: RunOptions): Promise<string | undefined> {
  const r = await run(cmd, args, o);
  if (r.code === 0) return undefined;
  const how = r.timedOut ? `timed out after ${(o?.timeoutMs ?? 30_000) / 1000} s` : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  return r.error ?? `${[cmd, ...args].join(' ')}: ${how}${r.stderr.trim() ? `: ${r.stderr.trim().split('\n').slice(-2).join(' / ')}` : ''}`;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
