// The "manufacturer's seal" on kiln's add-ons. Every HelmChart kiln ships carries the hash
// of the spec it shipped; at boot the live object is compared with its own seal to tell
// "still ours, safe to replace" from "the user changed it, leave it alone".
// Pure: bundled into PID 1, so only node: builtins.
import { createHash } from 'node:crypto';

export const SEAL = 'kiln.io/seal';
/** Per-top-level-field hashes of the sealed spec, so we can say *what* the user changed. */
export const SEAL_FIELDS = 'kiln.io/seal-fields';
export const VERSION = 'kiln.io/version';
export const BROKEN = 'broken';

export interface HelmChartSpec {
  chartContent?: string;
  targetNamespace?: string;
  version?: string;
  valuesContent?: string;
  [field: string]: unknown;
}

export interface HelmChartObject {
  apiVersion: 'helm.cattle.io/v1';
  kind: 'HelmChart';
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [field: string]: unknown;
  };
  spec: HelmChartSpec;
  [field: string]: unknown;
}

export type Action = 'install' | 'upgrade' | 'unchanged' | 'user-owned' | 'broken-seal';

export interface Decision {
  action: Action;
  name: string;
  /** One line for `kiln status`. */
  message: string;
  /** For user-owned: top-level spec fields that differ from what was sealed, when known. */
  changedFields?: string[];
  liveSeal?: string;
  shippedSeal: string;
  liveVersion?: string;
  shippedVersion?: string;
}

// Values the helm.cattle.io CRD defaults on the server. Dropping them keeps a seal valid
// whether or not the API server filled them in (and across k3s versions that add them).
const SPEC_DEFAULTS: Record<string, unknown> = { failurePolicy: 'reinstall', driver: 'secret' };

// Metadata the API server or controllers write; never part of what we compare.
const SERVER_METADATA = ['resourceVersion', 'uid', 'creationTimestamp', 'managedFields', 'generation', 'selfLink', 'finalizers', 'deletionTimestamp', 'deletionGracePeriodSeconds'];

/** JSON with object keys sorted at every level, no whitespace; null/undefined members dropped
 *  (structural CRDs prune nulls, so they cannot be part of an identity). */
export function canonicalJSON(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJSON(v ?? null)).join(',')}]`;
  if (typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj).filter((k) => obj[k] !== null && obj[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJSON(obj[k])}`).join(',')}}`;
  }
  if (typeof value === 'number' && !Number.isFinite(value)) throw new TypeError('cannot seal a non-finite number');
  if (typeof value === 'bigint' || typeof value === 'function' || typeof value === 'symbol') throw new TypeError(`cannot seal a ${typeof value}`);
  return JSON.stringify(value);
}

/** The spec as it counts for the seal: server defaults and empty members removed. */
export function canonicalSpec(spec: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!spec || typeof spec !== 'object') return out;
  for (const [k, v] of Object.entries(spec as Record<string, unknown>)) {
    if (v === null || v === undefined) continue;
    if (k in SPEC_DEFAULTS && v === SPEC_DEFAULTS[k]) continue;
    out[k] = v;
  }
  return out;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** sha256 (hex) of the canonical JSON of a HelmChart spec. */
export function sealOf(spec: unknown): string {
  return sha256(canonicalJSON(canonicalSpec(spec)));
}

/** Short hash per top-level spec field (recorded next to the seal). */
export function fieldSeals(spec: unknown): Record<string, string> {
  const c = canonicalSpec(spec);
  const out: Record<string, string> = {};
  for (const k of Object.keys(c).sort()) out[k] = sha256(canonicalJSON(c[k])).slice(0, 16);
  return out;
}

/** The annotations that seal `spec`. */
export function sealAnnotations(spec: unknown): Record<string, string> {
  return { [SEAL]: sealOf(spec), [SEAL_FIELDS]: canonicalJSON(fieldSeals(spec)) };
}

/** A copy without what the server populates (status, resourceVersion, uid...). */
export function stripServerFields<T extends Record<string, any>>(obj: T): T {
  const copy: Record<string, any> = JSON.parse(JSON.stringify(obj));
  delete copy.status;
  if (copy.metadata) {
    for (const k of SERVER_METADATA) delete copy.metadata[k];
    if (copy.metadata.annotations) delete copy.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration'];
  }
  return copy as T;
}

/** Top-level fields whose hash differs from the recorded ones; undefined when nothing was recorded. */
function changedFields(live: HelmChartObject): string[] | undefined {
  const recorded = live.metadata.annotations?.[SEAL_FIELDS];
  if (!recorded) return undefined;
  let was: Record<string, string>;
  try {
    was = JSON.parse(recorded);
    if (!was || typeof was !== 'object' || Array.isArray(was)) return undefined;
  } catch { return undefined; }
  const now = fieldSeals(live.spec);
  return [...new Set([...Object.keys(was), ...Object.keys(now)])].filter((k) => was[k] !== now[k]).sort();
}

/** What to do with one add-on, given the live object (undefined when absent) and what this image ships. */
export function decide(live: object | undefined | null, shipped: HelmChartObject): Decision {
  const name = shipped.metadata.name;
  const shippedSeal = sealOf(shipped.spec);
  const claimed = shipped.metadata.annotations?.[SEAL];
  if (claimed !== undefined && claimed !== shippedSeal) {
    throw new Error(`add-on ${name}: shipped seal ${claimed} does not match its spec (${shippedSeal}); the image is inconsistent`);
  }
  const shippedVersion = shipped.metadata.annotations?.[VERSION];
  const base = { name, shippedSeal, shippedVersion };
  if (!live) {
    return { ...base, action: 'install', message: `${name}: not installed; installing${shippedVersion ? ` ${shippedVersion}` : ''}` };
  }
  const obj = live as HelmChartObject;
  const ann = obj.metadata?.annotations ?? {};
  const liveSeal = ann[SEAL];
  const liveVersion = ann[VERSION];
  const more = { ...base, liveSeal, liveVersion };
  const handBack = `run \`kiln addons reseal ${name}\` to hand it back to kiln`;
  if (liveSeal !== undefined && liveSeal.trim().toLowerCase() === BROKEN) {
    return { ...more, action: 'broken-seal', message: `${name}: seal broken by the user (${SEAL}: ${BROKEN}); kiln leaves it alone; ${handBack}` };
  }
  if (!liveSeal) {
    return { ...more, action: 'user-owned', message: `${name}: has no kiln seal (created or replaced outside kiln); left alone; ${handBack}` };
  }
  const actual = sealOf(obj.spec);
  if (actual !== liveSeal) {
    const fields = changedFields(obj);
    const what = fields?.length ? ` (spec.${fields.join(', spec.')})` : '';
    return {
      ...more, action: 'user-owned', changedFields: fields,
      message: `${name}: changed by the user${what}; left alone${shippedVersion && shippedVersion !== liveVersion ? `, not upgraded to ${shippedVersion}` : ''}; ${handBack}`,
    };
  }
  if (actual === shippedSeal) {
    return { ...more, action: 'unchanged', message: `${name}: up to date${liveVersion ? ` (${liveVersion})` : ''}` };
  }
  const from = liveVersion ?? 'previous', to = shippedVersion ?? 'new';
  return { ...more, action: 'upgrade', message: `${name}: sealed and unmodified; upgrading ${from === to ? `(${to}, new settings)` : `${from} -> ${to}`}` };
}

/** JSON merge patch that seals the live spec as it is now: kiln owns the add-on again and
 *  replaces it with what it ships at the next decision. */
export function resealPatch(live: object): { metadata: { annotations: Record<string, string> } } {
  const obj = live as HelmChartObject;
  if (!obj || typeof obj !== 'object' || !obj.metadata) throw new TypeError('resealPatch: not a Kubernetes object');
  return { metadata: { annotations: sealAnnotations(obj.spec) } };
}
