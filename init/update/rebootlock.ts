// The reboot lock: before rebooting into an update a node takes the fleet's one reboot slot,
// and gives it back once it is healthy again. Two kinds:
//   lease:     a coordination.k8s.io/v1 Lease (kiln-system/kiln-reboot) through k3s kubectl.
//              Taken with optimistic concurrency: the API server accepts a replace only with
//              the resourceVersion that was read, and a create only when none exists, so of
//              two nodes racing for a free Lease exactly one wins. A holder that never comes
//              back loses it after leaseDurationSeconds.
//   fleetlock: an external FleetLock server (fleetlock.ts).
// kiln.updates.reboot_lock picks one (rebootLockFor); docs/security.md has the reasons.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { run } from '../exec.ts';
import { ADMIN_KUBECONFIG } from './drain.ts';
import { FleetLockError, preReboot, steadyState } from './fleetlock.ts';

export type RebootLockMode = 'auto' | 'lease' | 'fleetlock' | 'none';
export const REBOOT_LOCK_MODES: readonly RebootLockMode[] = ['auto', 'lease', 'fleetlock', 'none'];

export interface RebootLock {
  /** How messages name it: "the reboot lease", "the fleet lock". */
  readonly name: string;
  /** Resolves once this node holds the lock; throws (RebootLockError) when it must wait. */
  acquire(): Promise<void>;
  /** Gives it back if this node holds it; safe to call when it does not. */
  release(): Promise<void>;
}

/** busy: another node holds it; unavailable: the lock cannot be asked now (retried later). */
export class RebootLockError extends Error {
  override name = 'RebootLockError';
  constructor(message: string, readonly code: 'busy' | 'unavailable') { super(message); }
}

/** `k3s kubectl ARGS` with `input` on stdin. */
export type Kubectl = (args: string[], input?: string) => Promise<{ code: number | null; stdout: string; stderr: string; error?: string }>;

export const K3S = '/usr/bin/k3s';
export const kubectlVia = (k3s = K3S): Kubectl => (args, input) => run(k3s, ['kubectl', ...args], { input, timeoutMs: 30_000 });

export const LEASE_NAMESPACE = 'kiln-system';
export const LEASE_NAME = 'kiln-reboot';
/**
 * How long a holder keeps the Lease without coming back: a drain (kiln.updates.drain_timeout_s,
 * 300 s by default), the reboot and the post-boot health check (up to 10 minutes) fit in it.
 */
export const LEASE_SECONDS = 1800;

/** The Lease holder: the Kubernetes node name, and a short hash of the machine id for nodes that share a name. */
export function leaseHolder(nodeName: string, machineId: string): string {
  const h = createHash('sha256').update(`kiln/reboot-lease/1:${machineId.trim().toLowerCase()}`).digest('hex').slice(0, 12);
  return `${nodeName}/${h}`;
}

/** metav1.MicroTime: RFC 3339 with exactly six fractional digits. */
export function microTime(d: Date): string { return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z'); }

interface LeaseObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; resourceVersion?: string; [k: string]: unknown };
  spec?: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

const lastLine = (r: { stdout: string; stderr: string; error?: string; code: number | null }) =>
  (r.stderr.trim() || r.stdout.trim()).split('\n').pop() || r.error || `exit ${r.code}`;

export interface LeaseLockOptions {
  kubectl: Kubectl;
  holder: string;
  namespace?: string;
  name?: string;
  durationS?: number;
  now?: () => Date;
  /**
   * A file on the data partition that says this node took the Lease: release() asks the API
   * server only then, so an ordinary boot (k3s not up yet) makes no call and logs nothing.
   */
  marker?: string;
}

/** Where a node notes that it holds the reboot Lease (on the data partition: it outlives the reboot). */
export const LEASE_MARKER = '/var/lib/kiln/reboot-lease';

export class LeaseLock implements RebootLock {
  readonly name = 'the reboot lease';
  private readonly ns: string;
  private readonly lease: string;
  constructor(private readonly o: LeaseLockOptions) {
    this.ns = o.namespace ?? LEASE_NAMESPACE;
    this.lease = o.name ?? LEASE_NAME;
  }

  private now() { return this.o.now ? this.o.now() : new Date(); }
  private get where() { return `Lease ${this.ns}/${this.lease}`; }

  /** The Lease, or undefined when there is none. */
  private async get(): Promise<LeaseObject | undefined> {
    const r = await this.o.kubectl(['get', 'lease', this.lease, '-n', this.ns, '-o', 'json']);
    if (r.code === 0) {
      try {
        const obj = JSON.parse(r.stdout) as LeaseObject;
        if (obj?.kind !== 'Lease' || !obj.metadata?.resourceVersion) throw new Error('not a Lease with a resourceVersion');
        return obj;
      } catch (e) { throw new RebootLockError(`${this.where}: kubectl printed something else: ${(e as Error).message}`, 'unavailable'); }
    }
    if (/\(NotFound\)/.test(r.stderr)) return undefined;
    throw new RebootLockError(`cannot read ${this.where}: ${lastLine(r)}`, 'unavailable');
  }

  /** When a holder's claim runs out (ms), from its renewTime (or acquireTime) and duration. */
  private expiry(spec: NonNullable<LeaseObject['spec']>): number {
    const t = Date.parse(spec.renewTime ?? spec.acquireTime ?? '');
    const d = spec.leaseDurationSeconds;
    return Number.isNaN(t) || !Number.isFinite(d) ? 0 : t + d! * 1000;
  }

  async acquire(): Promise<void> {
    const me = this.o.holder;
    const now = this.now();
    const cur = await this.get();
    const spec = { holderIdentity: me, leaseDurationSeconds: this.o.durationS ?? LEASE_SECONDS, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 };
    if (!cur) {
      const body: LeaseObject = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.lease, namespace: this.ns }, spec };
      const r = await this.o.kubectl(['create', '-f', '-', '-o', 'json'], JSON.stringify(body));
      if (r.code === 0) return this.mark(true);
      if (/\(AlreadyExists\)/.test(r.stderr)) throw new RebootLockError(`${this.where} was taken by another node a moment ago`, 'busy');
      if (/\(NotFound\)/.test(r.stderr) && /namespaces?\b/.test(r.stderr)) throw new RebootLockError(`cannot create ${this.where}: namespace ${this.ns} does not exist (the kiln-system add-on makes it)`, 'unavailable');
      throw new RebootLockError(`cannot create ${this.where}: ${lastLine(r)}`, 'unavailable');
    }
    const held = cur.spec ?? {};
    const holder = held.holderIdentity;
    const until = this.expiry(held);
    if (holder && holder !== me && until > now.getTime()) {
      throw new RebootLockError(`${this.where} is held by ${holder} until ${new Date(until).toISOString()}`, 'busy');
    }
    // Free, expired or ours already (a postponed reboot retried): take it with the
    // resourceVersion we read, so a node that changed it in between makes this replace fail.
    const next: LeaseObject = {
      ...cur,
      spec: {
        ...held, ...spec,
        acquireTime: holder === me && held.acquireTime ? held.acquireTime : spec.acquireTime,
        leaseTransitions: (held.leaseTransitions ?? 0) + (holder && holder !== me ? 1 : 0),
      },
    };
    const r = await this.o.kubectl(['replace', '-f', '-', '-o', 'json'], JSON.stringify(next));
    if (r.code === 0) return this.mark(true);
    if (/\(Conflict\)/.test(r.stderr)) throw new RebootLockError(`${this.where} was changed by another node while taking it${holder && holder !== me ? ` (its holder ${holder} had expired)` : ''}`, 'busy');
    throw new RebootLockError(`cannot take ${this.where}: ${lastLine(r)}`, 'unavailable');
  }

  private mark(held: boolean) {
    const m = this.o.marker;
    if (!m) return;
    // Best effort: a note that could not be written means release() skips the call, and the
    // Lease runs out after leaseDurationSeconds instead.
    try { if (held) { mkdirSync(dirname(m), { recursive: true }); writeFileSync(m, `${this.o.holder}\n`); } else rmSync(m, { force: true }); } catch { /* see above */ }
  }

  async release(): Promise<void> {
    if (this.o.marker && !existsSync(this.o.marker)) return;
    const cur = await this.get();
    if (!cur || cur.spec?.holderIdentity !== this.o.holder) return this.mark(false);
    const { holderIdentity: _mine, acquireTime: _a, ...rest } = cur.spec;
    const next: LeaseObject = { ...cur, spec: { ...rest, renewTime: microTime(this.now()) } };
    const r = await this.o.kubectl(['replace', '-f', '-', '-o', 'json'], JSON.stringify(next));
    // Conflict: someone changed it since we read it, so it is no longer ours to clear.
    if (r.code !== 0 && !/\(Conflict\)/.test(r.stderr)) throw new RebootLockError(`cannot release ${this.where}: ${lastLine(r)}`, 'unavailable');
    this.mark(false);
  }
}

export class FleetLockLock implements RebootLock {
  readonly name = 'the fleet lock';
  constructor(private readonly o: { base: string; id: string; group?: string; timeoutMs?: number }) {}
  async acquire() {
    try { await preReboot(this.o); } catch (e) {
      throw new RebootLockError((e as Error).message, e instanceof FleetLockError && e.code === 'refused' ? 'busy' : 'unavailable');
    }
  }
  async release() { await steadyState(this.o); }
}

export interface RebootLockConfig {
  reboot_lock: RebootLockMode;
  fleetlock_url: string;
  fleetlock_group: string;
}

export interface RebootLockEnv {
  /** FleetLock id (fleetLockId(machine id)). */
  fleetLockId: string;
  /** Lease holder (leaseHolder(node name, machine id)). */
  leaseHolder: string;
  /** k3s runs on this node and answered its last readiness probe. */
  clusterUp: () => boolean;
  kubectl?: Kubectl;
  /** Credentials that may write Leases: a k3s server's admin kubeconfig. */
  kubeconfig?: string;
  /** Default LEASE_MARKER. */
  leaseMarker?: string;
}

/**
 * The lock kiln.updates.reboot_lock asks for:
 *   none:      no lock.
 *   fleetlock: the FleetLock server at fleetlock_url (an empty URL: the reboot waits, saying so).
 *   lease:     the Lease; while k3s is down or the node has no admin kubeconfig (an agent) the
 *              reboot waits.
 *   auto:      FleetLock when fleetlock_url is set (it serves every node, agents included, so
 *              the whole fleet shares one lock); otherwise the Lease when the cluster is up
 *              here and this node may write it; otherwise no lock.
 * Undefined means no lock. For auto the choice is made at each acquire and release.
 */
export function rebootLockFor(cfg: RebootLockConfig, env: RebootLockEnv): RebootLock | undefined {
  const fleet = cfg.fleetlock_url ? new FleetLockLock({ base: cfg.fleetlock_url, id: env.fleetLockId, group: cfg.fleetlock_group || undefined }) : undefined;
  const kubeconfig = env.kubeconfig ?? ADMIN_KUBECONFIG;
  const lease = new LeaseLock({ kubectl: env.kubectl ?? kubectlVia(), holder: env.leaseHolder, marker: env.leaseMarker ?? LEASE_MARKER });
  const leaseUsable = () => env.clusterUp() && existsSync(kubeconfig);
  switch (cfg.reboot_lock) {
    case 'none': return undefined;
    case 'fleetlock':
      return fleet ?? {
        name: 'the fleet lock',
        acquire: async () => { throw new RebootLockError('kiln.updates.reboot_lock is fleetlock but kiln.updates.fleetlock_url is empty; set it, or choose auto, lease or none', 'unavailable'); },
        release: async () => {},
      };
    case 'lease':
      return {
        name: lease.name,
        acquire: async () => {
          if (!existsSync(kubeconfig)) throw new RebootLockError(`no admin kubeconfig (${kubeconfig}) on this node to take the reboot Lease with (a k3s agent); use reboot_lock auto with a fleetlock_url for agents`, 'unavailable');
          if (!env.clusterUp()) throw new RebootLockError('k3s is not ready on this node, so the reboot Lease cannot be taken', 'unavailable');
          await lease.acquire();
        },
        release: async () => { if (existsSync(kubeconfig)) await lease.release(); },
      };
    case 'auto':
    default:
      if (fleet) return fleet;
      return {
        name: 'the reboot lock',
        acquire: async () => { if (leaseUsable()) await lease.acquire(); },
        // Whatever the cluster's state when the lock was taken: give back a Lease we hold.
        release: async () => { if (existsSync(kubeconfig)) await lease.release(); },
      };
  }
}
