// Installs and upgrades the image's add-ons once k3s is ready, through k3s's helm-controller
// (one HelmChart per add-on). The seal decides: only an add-on still exactly as we shipped
// it is replaced; one the user changed, or marked kiln.io/seal: broken, is left alone.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { run } from '../exec.ts';
import { decide, resealPatch, type Decision, type HelmChartObject } from './seal.ts';

export const ADDONS_DIR = '/usr/lib/kiln/addons';
const KUBECTL = ['/usr/bin/k3s', 'kubectl'];

export function shippedAddons(dir = ADDONS_DIR): HelmChartObject[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.json')).sort().map((f) => JSON.parse(readFileSync(`${dir}/${f}`, 'utf8')));
}

async function kubectl(args: string[], input?: string) {
  return run(KUBECTL[0], [...KUBECTL.slice(1), ...args], { timeoutMs: 60_000, input });
}

export async function liveAddon(name: string, ns: string): Promise<object | undefined> {
  const r = await kubectl(['get', 'helmchart.helm.cattle.io', name, '-n', ns, '-o', 'json']);
  if (r.code === 0) return JSON.parse(r.stdout);
  if (/NotFound/.test(r.stderr)) return undefined;
  throw new Error(`cannot read HelmChart ${ns}/${name}: ${r.stderr.trim() || r.error}`);
}

export interface AddonResult { name: string; decision?: Decision; error?: string }

/** One pass over the shipped add-ons; returns what was decided for each. */
export async function reconcileAddons(shipped = shippedAddons()): Promise<AddonResult[]> {
  const out: AddonResult[] = [];
  for (const obj of shipped) {
    const name = obj.metadata.name;
    const ns = obj.metadata.namespace ?? 'kube-system';
    try {
      const d = decide(await liveAddon(name, ns), obj);
      if (d.action === 'install' || d.action === 'upgrade') {
        const r = await kubectl(['apply', '-f', '-'], JSON.stringify(obj));
        if (r.code !== 0) throw new Error(`kubectl apply: ${r.stderr.trim() || r.error}`);
      }
      out.push({ name, decision: d });
    } catch (e) { out.push({ name, error: (e as Error).message }); }
  }
  return out;
}

/** Returns an add-on to kiln's care: seals its live state, so the next reconcile upgrades it. */
export async function resealAddon(name: string, ns = 'kube-system'): Promise<string> {
  const live = await liveAddon(name, ns);
  if (!live) throw new Error(`no HelmChart ${ns}/${name} in the cluster`);
  const r = await kubectl(['patch', 'helmchart.helm.cattle.io', name, '-n', ns, '--type', 'merge', '-p', JSON.stringify(resealPatch(live))]);
  if (r.code !== 0) throw new Error(`kubectl patch: ${r.stderr.trim() || r.error}`);
  return `${name}: resealed; kiln maintains it again`;
}
