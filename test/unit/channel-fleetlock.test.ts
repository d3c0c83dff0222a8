import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type IncomingMessage } from 'node:http';
import { FleetLockError, preReboot, steadyState } from '../../init/update/fleetlock.ts';

// A stand-in FleetLock server: one reboot slot per group, enough to exercise the client.
const holders = new Map<string, string>();
const seen: { url: string; header: string | undefined; body: any }[] = [];
let hang = false;
const server = createServer(async (req: IncomingMessage, res) => {
  let text = '';
  for await (const c of req) text += c;
  const body = JSON.parse(text || '{}');
  seen.push({ url: req.url!, header: req.headers['fleet-lock-protocol'] as string | undefined, body });
  if (hang) return; // never answer
  const reply = (status: number, obj?: object) => { res.statusCode = status; res.setHeader('content-type', 'application/json'); res.end(obj ? JSON.stringify(obj) : ''); };
  if (req.method !== 'POST' || req.headers['fleet-lock-protocol'] !== 'true') return reply(400, { kind: 'bad_request', value: 'missing fleet-lock-protocol header' });
  const { id, group } = body.client_params ?? {};
  if (req.url === '/lock/v1/pre-reboot') {
    const h = holders.get(group);
    if (h && h !== id) return reply(409, { kind: 'failed_lock', value: `semaphore held by ${h}` });
    holders.set(group, id);
    return reply(200);
  }
  if (req.url === '/lock/v1/steady-state') {
    if (holders.get(group) === id) holders.delete(group);
    return reply(200);
  }
  reply(404, { kind: 'not_found', value: req.url! });
});

test.before(async () => { await new Promise<void>((r) => server.listen(0, '127.0.0.1', r)); });
test.after(() => { server.closeAllConnections(); server.close(); });
const base = () => `http://127.0.0.1:${(server.address() as any).port}/lock`;

test('pre-reboot sends the protocol header and body, and takes the lock', async () => {
  seen.length = 0;
  await preReboot({ base: base(), id: 'node-a', group: 'workers' });
  assert.is(seen[0]!.url, '/lock/v1/pre-reboot');
  assert.is(seen[0]!.header, 'true');
  assert.equal(seen[0]!.body, { client_params: { id: 'node-a', group: 'workers' } });
  assert.is(holders.get('workers'), 'node-a');
});

test('a second node is refused with the server\'s reason until the first reaches steady state', async () => {
  try {
    await preReboot({ base: base() + '/', id: 'node-b', group: 'workers' });
    assert.unreachable('lock should be held');
  } catch (e) {
    assert.instance(e, FleetLockError);
    const err = e as FleetLockError;
    assert.is(err.code, 'refused');
    assert.is(err.status, 409);
    assert.is(err.kind, 'failed_lock');
    assert.match(err.message, /node-b.*workers.*409.*held by node-a/);
  }
  await steadyState({ base: base(), id: 'node-a', group: 'workers' });
  await preReboot({ base: base(), id: 'node-b', group: 'workers' });
  assert.is(holders.get('workers'), 'node-b');
  await steadyState({ base: base(), id: 'node-b', group: 'workers' });
});

test('the group defaults to "default"', async () => {
  seen.length = 0;
  await preReboot({ base: base(), id: 'node-c' });
  assert.is(seen[0]!.body.client_params.group, 'default');
  await steadyState({ base: base(), id: 'node-c' });
});

test('a silent server times out with a clear error', async () => {
  hang = true;
  const t = Date.now();
  try {
    await preReboot({ base: base(), id: 'node-d', timeoutMs: 200 });
    assert.unreachable('should time out');
  } catch (e) {
    assert.is((e as FleetLockError).code, 'timeout');
    assert.match((e as Error).message, /within 200 ms/);
  } finally { hang = false; }
  assert.ok(Date.now() - t < 3000);
});

test('unreachable servers and bad URLs are reported as such', async () => {
  const port = (server.address() as any).port;
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const deadPort = (closed.address() as any).port;
  await new Promise<void>((r) => closed.close(() => r()));
  try { await preReboot({ base: `http://127.0.0.1:${deadPort}`, id: 'x' }); assert.unreachable(); } catch (e) {
    assert.is((e as FleetLockError).code, 'network');
    assert.match((e as Error).message, /cannot reach/);
  }
  try { await preReboot({ base: 'ftp://127.0.0.1', id: 'x' }); assert.unreachable(); } catch (e) { assert.is((e as FleetLockError).code, 'bad-url'); }
  try { await preReboot({ base: `http://127.0.0.1:${port}/elsewhere`, id: 'x' }); assert.unreachable(); } catch (e) {
    assert.is((e as FleetLockError).status, 404);
  }
});

test.run();
