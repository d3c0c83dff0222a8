import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type IncomingMessage } from 'node:http';
import { world, type World } from './updater-harness.ts';
import { fleetLockId } from '../../init/update/updater.ts';

// A stand-in FleetLock server: one reboot slot per group.
const holders = new Map<string, string>();
const calls: { op: string; id: string; group: string }[] = [];
const lock = createServer(async (req: IncomingMessage, res) => {
  let text = '';
  for await (const c of req) text += c;
  const { id, group } = JSON.parse(text || '{}').client_params ?? {};
  const reply = (status: number, obj?: object) => { res.statusCode = status; res.setHeader('content-type', 'application/json'); res.end(obj ? JSON.stringify(obj) : ''); };
  if (req.headers['fleet-lock-protocol'] !== 'true') return reply(400, { kind: 'bad_request', value: 'header' });
  calls.push({ op: req.url!, id, group });
  if (req.url === '/v1/pre-reboot') {
    const h = holders.get(group);
    if (h && h !== id) return reply(409, { kind: 'failed_lock', value: `semaphore held by ${h}` });
    holders.set(group, id);
    return reply(200);
  }
  if (req.url === '/v1/steady-state') { if (holders.get(group) === id) holders.delete(group); return reply(200); }
  reply(404, { kind: 'not_found', value: req.url! });
});
const lockBase = () => `http://127.0.0.1:${(lock.address() as { port: number }).port}`;

test.before(async () => { await new Promise<void>((r) => lock.listen(0, '127.0.0.1', r)); });
test.after(() => { lock.closeAllConnections(); lock.close(); });

let w: World;
test.after.each(async () => { await w?.close(); holders.clear(); calls.length = 0; });

const MID = '0123456789abcdef0123456789abcdef';

test('lock held by another node: staged but no reboot; a later poll retries and reboots; steady-state after blessing', async () => {
  w = await world();
  await w.publish('2.0.0');
  holders.set('workers', 'other-node');
  const fl = { base: lockBase(), group: 'workers' };
  const u = w.updater({ fleetlock: fl });

  const r = await u.apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.is(r.ok && r.reboot.rebooted, false);
  assert.is(r.ok && r.reboot.waiting, 'lock');
  assert.match(r.ok ? r.reboot.message : '', /held by other-node/);
  assert.is(w.reboots, 0);
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+3.efi'], 'staged anyway, so the reboot is quick once allowed');
  assert.ok(u.status().some((l) => /pending: 2\.0\.0 staged in slot b .*waiting to reboot/.test(l)), u.status().join('\n'));
  const rootGets = () => w.server.requests.filter((q) => q.url.endsWith('.root.squashfs')).length;
  const before = rootGets();

  await u.pollOnce(); // still held
  assert.is(w.reboots, 0);
  assert.is(rootGets(), before, 'a retry does not download again');

  holders.delete('workers'); // the other node reached steady state
  await u.pollOnce();
  assert.is(w.reboots, 1);
  assert.is(holders.get('workers'), fleetLockId(MID), 'we hold the lock across the reboot');
  assert.ok(calls.filter((c) => c.op === '/v1/pre-reboot').every((c) => c.id === fleetLockId(MID) && c.group === 'workers'));
  assert.is.not(fleetLockId(MID), MID, 'the raw machine-id is not sent');

  // After the reboot: healthy -> bless -> steady-state releases the lock.
  const after = w.updater({ fleetlock: fl, bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' });
  const b = await after.afterBoot(async () => true, 100);
  assert.is(b.outcome, 'blessed');
  assert.is(holders.get('workers'), undefined);
  assert.is(calls.at(-1)!.op, '/v1/steady-state');
});

test('lock server down: no reboot, reported, node keeps running', async () => {
  w = await world();
  await w.publish('2.0.0');
  const u = w.updater({ fleetlock: { base: 'http://127.0.0.1:1', timeoutMs: 500 } });
  const r = await u.apply();
  assert.ok(r.ok);
  assert.is(r.ok && r.reboot.waiting, 'lock');
  assert.is(w.reboots, 0);
});

test('a failed health check reboots without asking for the lock again (it is still held)', async () => {
  w = await world();
  await w.publish('2.0.0');
  const fl = { base: lockBase(), group: 'g' };
  await w.updater({ fleetlock: fl }).apply();
  assert.is(w.reboots, 1);
  const n = calls.length;
  const r = await w.updater({ fleetlock: fl, bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' }).afterBoot(async () => false, 10);
  assert.is(r.outcome, 'failed');
  assert.is(w.reboots, 2);
  assert.is(calls.length, n, 'no lock calls');
  assert.is(holders.get('g'), fleetLockId(MID));
  // Back on slot a (fallback path is not taken: pending was cleared), afterBoot releases the lock.
  await w.updater({ fleetlock: fl, bootId: 'boot-3' }).afterBoot(async () => true, 10);
  assert.is(holders.get('g'), undefined);
});

test('drain hook failing postpones the reboot', async () => {
  w = await world();
  await w.publish('2.0.0');
  const r = await w.updater({ beforeReboot: () => { throw new Error('drain timed out'); } }).apply();
  assert.is(r.ok && r.reboot.waiting, 'drain');
  assert.is(w.reboots, 0);
});

test.run();
