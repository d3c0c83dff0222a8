// The Lease reboot lock against a fake `k3s kubectl`: an in-memory API server that keeps a
// resourceVersion and answers get/create/replace with kubectl's exit codes and messages.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LEASE_SECONDS, LeaseLock, leaseHolder, microTime, rebootLockFor, RebootLockError, type Kubectl } from '../../init/update/rebootlock.ts';
import { world, type World } from './updater-harness.ts';

const T0 = new Date('2030-01-01T00:00:00Z');
const PATH = 'leases.coordination.k8s.io "kiln-reboot"';

/** One API server; `holdGets` makes every get wait until that many have arrived (a race). */
function apiServer(o: { namespace?: boolean } = {}) {
  const api = {
    lease: undefined as any,
    rv: 100,
    calls: [] as string[],
    holdGets: 0,
    down: false,
  };
  let waiting: (() => void)[] = [];
  const kubectl: Kubectl = async (args, input) => {
    api.calls.push(args[0]!);
    if (api.down) return { code: 1, stdout: '', stderr: 'The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?' };
    const ok = (obj: unknown) => ({ code: 0, stdout: JSON.stringify(obj), stderr: '' });
    const err = (kind: string, text: string) => ({ code: 1, stdout: '', stderr: `Error from server (${kind}): ${text}` });
    switch (args[0]) {
      case 'get': {
        assert.equal(args, ['get', 'lease', 'kiln-reboot', '-n', 'kiln-system', '-o', 'json']);
        const snapshot = api.lease && structuredClone(api.lease);
        if (api.holdGets > 1) {
          await new Promise<void>((r) => { waiting.push(r); if (waiting.length >= api.holdGets) { const w = waiting; waiting = []; api.holdGets = 0; w.forEach((f) => f()); } });
        }
        return snapshot ? ok(snapshot) : err('NotFound', `${PATH} not found`);
      }
      case 'create': {
        const obj = JSON.parse(input!);
        if (o.namespace === false) return err('NotFound', 'error when creating "STDIN": namespaces "kiln-system" not found');
        if (api.lease) return err('AlreadyExists', `error when creating "STDIN": ${PATH} already exists`);
        assert.is(obj.metadata.resourceVersion, undefined);
        api.lease = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(++api.rv) } };
        return ok(api.lease);
      }
      case 'replace': {
        const obj = JSON.parse(input!);
        if (!api.lease) return err('NotFound', `error when replacing "STDIN": ${PATH} not found`);
        if (obj.metadata.resourceVersion !== api.lease.metadata.resourceVersion) {
          return err('Conflict', `error when replacing "STDIN": Operation cannot be fulfilled on ${PATH}: the object has been modified; please apply your changes to the latest version and try again`);
        }
        api.lease = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(++api.rv) } };
        return ok(api.lease);
      }
    }
    throw new Error(`unexpected kubectl ${args.join(' ')}`);
  };
  return { api, kubectl };
}

const clock = { now: T0 };
const lock = (kubectl: Kubectl, node: string) => new LeaseLock({ kubectl, holder: leaseHolder(node, `${node}-machine-id`), now: () => clock.now });
test.before.each(() => { clock.now = T0; });

test('free: created with this node as holder, duration and MicroTime stamps', async () => {
  const { api, kubectl } = apiServer();
  await lock(kubectl, 'n1').acquire();
  assert.is(api.lease.spec.holderIdentity, leaseHolder('n1', 'n1-machine-id'));
  assert.match(api.lease.spec.holderIdentity, /^n1\/[0-9a-f]{12}$/);
  assert.not.match(api.lease.spec.holderIdentity, /n1-machine-id/, 'the raw machine id is not published');
  assert.is(api.lease.spec.leaseDurationSeconds, LEASE_SECONDS);
  assert.is(api.lease.spec.renewTime, '2030-01-01T00:00:00.000000Z');
  assert.is(microTime(new Date('2030-01-01T01:02:03.456Z')), '2030-01-01T01:02:03.456000Z');
  assert.equal([api.lease.apiVersion, api.lease.kind, api.lease.metadata.namespace], ['coordination.k8s.io/v1', 'Lease', 'kiln-system']);
});

test('held by another node: busy, naming the holder and when it runs out; ours again: renewed', async () => {
  const { api, kubectl } = apiServer();
  const a = lock(kubectl, 'n1'), b = lock(kubectl, 'n2');
  await a.acquire();
  clock.now = new Date(T0.getTime() + 60_000);
  const e = await b.acquire().then(() => undefined, (x) => x);
  assert.instance(e, RebootLockError);
  assert.is(e.code, 'busy');
  assert.match(e.message, /Lease kiln-system\/kiln-reboot is held by n1\/[0-9a-f]{12} until 2030-01-01T00:30:00\.000Z/);
  await a.acquire(); // a postponed reboot retried: the holder renews
  assert.is(api.lease.spec.renewTime, microTime(clock.now));
  assert.is(api.lease.spec.acquireTime, microTime(T0));
});

test('two nodes race for a free Lease: exactly one wins (create, then replace)', async () => {
  for (const existing of [false, true]) {
    const { api, kubectl } = apiServer();
    if (existing) { await lock(kubectl, 'old').acquire(); await lock(kubectl, 'old').release(); }
    api.holdGets = 2; // both read the same state before either writes
    const results = await Promise.allSettled([lock(kubectl, 'n1').acquire(), lock(kubectl, 'n2').acquire()]);
    const won = results.filter((r) => r.status === 'fulfilled').length;
    assert.is(won, 1, `${existing ? 'replace' : 'create'} race: ${JSON.stringify(results)}`);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.is(lost.reason.code, 'busy');
    assert.match(lost.reason.message, existing ? /changed by another node while taking it/ : /taken by another node a moment ago/);
    const winner = results[0]!.status === 'fulfilled' ? 'n1' : 'n2';
    assert.is(api.lease.spec.holderIdentity, leaseHolder(winner, `${winner}-machine-id`));
  }
});

test('a holder that never came back expires after leaseDurationSeconds', async () => {
  const { api, kubectl } = apiServer();
  await lock(kubectl, 'gone').acquire();
  clock.now = new Date(T0.getTime() + LEASE_SECONDS * 1000 - 1000);
  assert.ok(await lock(kubectl, 'n2').acquire().then(() => false, () => true), 'still held a second before it runs out');
  clock.now = new Date(T0.getTime() + LEASE_SECONDS * 1000 + 1000);
  await lock(kubectl, 'n2').acquire();
  assert.is(api.lease.spec.holderIdentity, leaseHolder('n2', 'n2-machine-id'));
  assert.is(api.lease.spec.leaseTransitions, 1);
});

test('release: only by the holder; then another node can take it', async () => {
  const { api, kubectl } = apiServer();
  const a = lock(kubectl, 'n1'), b = lock(kubectl, 'n2');
  await b.release(); // nothing there: nothing to do
  await a.acquire();
  await b.release();
  assert.is(api.lease.spec.holderIdentity, leaseHolder('n1', 'n1-machine-id'), 'a node cannot release what it does not hold');
  await a.release();
  assert.is(api.lease.spec.holderIdentity, undefined);
  await b.acquire();
  assert.is(api.lease.spec.holderIdentity, leaseHolder('n2', 'n2-machine-id'));
});

test('API server down or namespace missing: unavailable, with the reason', async () => {
  const { api, kubectl } = apiServer();
  api.down = true;
  const e = await lock(kubectl, 'n1').acquire().then(() => undefined, (x) => x);
  assert.is(e.code, 'unavailable');
  assert.match(e.message, /cannot read Lease kiln-system\/kiln-reboot: The connection to the server .* was refused/);
  const ns = apiServer({ namespace: false });
  const f = await lock(ns.kubectl, 'n1').acquire().then(() => undefined, (x) => x);
  assert.match(f.message, /namespace kiln-system does not exist \(the kiln-system add-on makes it\)/);
});

test('rebootLockFor: auto prefers a configured FleetLock, else the Lease when the cluster is up, else none', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-lock-'));
  const kubeconfig = join(dir, 'k3s.yaml');
  const { api, kubectl } = apiServer();
  let up = false;
  const leaseMarker = join(dir, 'var/lib/kiln/reboot-lease');
  const env = { fleetLockId: 'f', leaseHolder: 'n1/abc', clusterUp: () => up, kubectl, kubeconfig, leaseMarker };
  assert.is(rebootLockFor({ reboot_lock: 'none', fleetlock_url: 'http://x', fleetlock_group: '' }, env), undefined);
  assert.is(rebootLockFor({ reboot_lock: 'auto', fleetlock_url: 'http://x', fleetlock_group: '' }, env)!.name, 'the fleet lock');
  const auto = rebootLockFor({ reboot_lock: 'auto', fleetlock_url: '', fleetlock_group: '' }, env)!;
  await auto.acquire(); // no kubeconfig, cluster down: no lock to take
  assert.equal(api.calls, []);
  writeFileSync(kubeconfig, 'admin');
  up = true;
  await auto.release(); // never took it: not even a call to the API server
  assert.equal(api.calls, []);
  await auto.acquire();
  assert.is(api.lease.spec.holderIdentity, 'n1/abc');
  assert.ok(existsSync(leaseMarker), 'the node notes on its data partition that it holds the Lease');
  await auto.release();
  assert.is(api.lease.spec.holderIdentity, undefined);
  assert.not.ok(existsSync(leaseMarker));
  // lease: waits rather than rebooting unlocked.
  const strict = rebootLockFor({ reboot_lock: 'lease', fleetlock_url: '', fleetlock_group: '' }, env)!;
  up = false;
  assert.match((await strict.acquire().then(() => undefined, (x) => x)).message, /k3s is not ready on this node/);
  const noUrl = rebootLockFor({ reboot_lock: 'fleetlock', fleetlock_url: '', fleetlock_group: '' }, env)!;
  assert.match((await noUrl.acquire().then(() => undefined, (x) => x)).message, /reboot_lock is fleetlock but kiln\.updates\.fleetlock_url is empty/);
});

let w: World;
test('updater: the reboot waits for the Lease, reboots once it is free, releases it after blessing', async () => {
  w = await world();
  await w.publish('2.0.0');
  const { api, kubectl } = apiServer();
  await lock(kubectl, 'other').acquire();
  const mine = () => new LeaseLock({ kubectl, holder: 'me/1', now: () => clock.now });
  const u = w.updater({ rebootLock: mine() });
  const r = await u.apply();
  assert.ok(r.ok && !r.reboot.rebooted && r.reboot.waiting === 'lock', JSON.stringify(r));
  assert.match(r.ok ? r.reboot.message : '', /waits for the reboot lease: Lease kiln-system\/kiln-reboot is held by other\//);
  assert.is(w.reboots, 0);
  await lock(kubectl, 'other').release();
  await u.pollOnce();
  assert.is(w.reboots, 1);
  assert.is(api.lease.spec.holderIdentity, 'me/1', 'held across the reboot');
  // After the reboot the API server is not up yet: the release is owed and retried.
  api.down = true;
  const after = w.updater({ rebootLock: mine(), bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' });
  assert.is((await after.afterBoot(async () => true, 100)).outcome, 'blessed');
  assert.is(api.lease.spec.holderIdentity, 'me/1');
  assert.ok(w.logs.some((l) => /could not release the reboot lease \(retried at the next poll\)/.test(l)), w.logs.join('\n'));
  api.down = false;
  await after.pollOnce();
  assert.is(api.lease.spec.holderIdentity, undefined, 'released at the next poll');
  await w.close();
});

test.run();
