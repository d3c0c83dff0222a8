// Boot runs as named phases, each a list of tasks run in order. A failing task is logged
// and boot goes on: a node that comes up degraded can still be reached and repaired,
// one that stops cannot.
import { debug, say } from './log.ts';

export interface Task { name: string; run: () => Promise<void | string> | void | string }
export interface Phase { name: string; tasks: Task[] }
export interface TaskResult { phase: string; task: string; ok: boolean; ms: number; error?: string; /** ms since init started, when the task ended */ at: number }

export async function runPhases(phases: Phase[]): Promise<TaskResult[]> {
  const results: TaskResult[] = [];
  for (const phase of phases) {
    const t0 = performance.now();
    debug(`phase ${phase.name}: start`);
    for (const task of phase.tasks) {
      const t = performance.now();
      try {
        const note = await task.run();
        results.push({ phase: phase.name, task: task.name, ok: true, ms: performance.now() - t, at: performance.now() });
        if (note) debug(`${phase.name}/${task.name}: ${note}`);
      } catch (e) {
        const error = (e as Error)?.message ?? String(e);
        results.push({ phase: phase.name, task: task.name, ok: false, ms: performance.now() - t, error, at: performance.now() });
        say(`${phase.name}/${task.name} failed: ${error}`);
      }
    }
    debug(`phase ${phase.name}: done in ${(performance.now() - t0).toFixed(0)} ms`);
  }
  return results;
}
