// Running programs from init: always with a timeout, never throwing, output captured.
import { spawn } from 'node:child_process';

export interface RunResult { code: number | null; signal: string | null; stdout: string; stderr: string; error?: string }

export function run(cmd: string, args: string[] = [], o: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    let stdout = '', stderr = '';
    let child;
    try {
      child = spawn(cmd, args, { env: o.env ?? process.env, cwd: o.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (e) {
      resolve({ code: null, signal: null, stdout, stderr, error: (e as Error).message });
      return;
    }
    const timer = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, o.timeoutMs ?? 30_000);
    child.stdout.on('data', (d) => { if (stdout.length < 1 << 20) stdout += d; });
    child.stderr.on('data', (d) => { if (stderr.length < 1 << 20) stderr += d; });
    child.on('error', (e) => { clearTimeout(timer); resolve({ code: null, signal: null, stdout, stderr, error: e.message }); });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
    child.stdin.on('error', () => { /* child did not read its input */ });
    child.stdin.end(o.input ?? '');
  });
}

/** Runs and reports failure as a short string (undefined on success). */
export async function runOk(cmd: string, args: string[], o?: Parameters<typeof run>[2]): Promise<string | undefined> {
  const r = await run(cmd, args, o);
  if (r.code === 0) return undefined;
  return r.error ?? `${[cmd, ...args].join(' ')}: ${r.signal ? `killed by ${r.signal}` : `exit ${r.code}`}${r.stderr.trim() ? `: ${r.stderr.trim().split('\n').slice(-2).join(' / ')}` : ''}`;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
