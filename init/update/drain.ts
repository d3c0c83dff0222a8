// Draining before an update's reboot, as kured does elsewhere: cordon the node and evict its
// pods, reboot, and uncordon once the node is healthy again. A marker on the data partition
// says kiln did the cordoning, so a node an operator cordoned by hand stays cordoned.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { run as runProcess } from '../exec.ts';

export const DRAIN_MARKER = '/var/lib/kiln/drained-by-kiln';
/** Written by k3s server only: an agent has no admin credentials to drain with. */
export const ADMIN_KUBECONFIG = '/etc/rancher/k3s/k3s.yaml';

export interface DrainOptions {
  k3s: string;
  node: string;
  timeoutS: number;
  marker?: string;
  kubeconfig?: string;
  run?: typeof runProcess;
}

/** The Kubernetes node name: k3s's --node-name (either spelling), else the host name, as k3s decides. */
export function nodeName(k3sArgs: readonly string[], hostname: string): string {
  for (let i = 0; i < k3sArgs.length; i++) {
    const a = k3sArgs[i]!;
    if (a === '--node-name' && k3sArgs[i + 1]) return k3sArgs[i + 1]!;
    if (a.startsWith('--node-name=')) return a.slice('--node-name='.length);
  }
  return hostname;
}

const lastLine = (r: { stderr: string; stdout: string; error?: string; code: number | null }) =>
  (r.stderr.trim() || r.stdout.trim()).split('\n').pop() || r.error || `exit ${r.code}`;

/** Cordons and drains; on failure uncordons again and throws (the reboot waits). */
export async function drainNode(o: DrainOptions): Promise<string> {
  const run = o.run ?? runProcess;
  if (!existsSync(o.kubeconfig ?? ADMIN_KUBECONFIG)) return `node ${o.node} not drained: no admin kubeconfig here (a k3s agent)`;
  const marker = o.marker ?? DRAIN_MARKER;
  // Before cordoning: a crash between the two still ends with the node uncordoned after boot.
  mkdirSync(dirname(marker), { recursive: true });
  writeFileSync(marker, `${o.node}\n`);
  const r = await run(o.k3s, ['kubectl', 'drain', o.node, '--ignore-daemonsets', '--delete-emptydir-data', '--force', `--timeout=${o.timeoutS}s`], { timeoutMs: (o.timeoutS + 30) * 1000 });
  if (r.code !== 0) {
    const undo = await uncordonIfDrained(o);
    throw new Error(`drain of node ${o.node} did not finish: ${lastLine(r)}${undo ? `; ${undo}` : ''}`);
  }
  return `drained node ${o.node}`;
}

/** Uncordons the node if kiln drained it; returns what it did, or undefined when there was nothing to do. */
export async function uncordonIfDrained(o: Omit<DrainOptions, 'timeoutS'>): Promise<string | undefined> {
  const run = o.run ?? runProcess;
  const marker = o.marker ?? DRAIN_MARKER;
  if (!existsSync(marker)) return undefined;
  const node = readFileSync(marker, 'utf8').trim() || o.node;
  const r = await run(o.k3s, ['kubectl', 'uncordon', node], { timeoutMs: 60_000 });
  if (r.code !== 0) return `uncordon of node ${node} failed (tried again at the next boot): ${lastLine(r)}`;
  rmSync(marker, { force: true });
  return `uncordoned node ${node}`;
}
