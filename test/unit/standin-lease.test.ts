// The k3s stand-in (a TEST DOUBLE, see its header) keeps the reboot Lease the way the API
// server does: the node's real LeaseLock, driving the stand-in's kubectl, gets one holder at a
// time, a Conflict for a stale resourceVersion, and the Lease back after release.
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LeaseLock, RebootLockError, type Kubectl } from '../../init/update/rebootlock.ts';
import { run } from '../../init/exec.ts';
import { K3S_STANDIN } from '../e2e/image.ts';

const state = mkdtempSync(join(tmpdir(), 'kiln-standin-'));
mkdirSync(state, { recursive: true });
writeFileSync(join(state, 'ready'), String(Date.now()));
// The stand-in answers only while its server runs: this test process stands for it.
writeFileSync(join(state, 'pid'), String(process.pid));
// As a .cjs copy: inside this repository ("type": "module") Node would read it as ESM.
const standin = join(state, 'k3s.cjs');
copyFileSync(K3S_STANDIN, standin);
const kubectl: Kubectl = (args, input) => run(process.execPath, [standin, 'kubectl', ...args], { input, timeoutMs: 20_000, env: { ...process.env, K3S_STANDIN_STATE: state } });
const lock = (holder: string) => new LeaseLock({ kubectl, holder });

test('one node holds the Lease; the other is told it is busy until it is released', async () => {
  const a = lock('node-a');
  const b = lock('node-b');
  await a.acquire();
  const err = await b.acquire().then(() => undefined, (e) => e);
  assert.ok(err instanceof RebootLockError, String(err));
  assert.match(err.message, /held by node-a/);
  await a.release();
  await b.acquire();
});

test('a replace with a stale resourceVersion is a Conflict, as on the API server', async () => {
  const got = await kubectl(['get', 'lease', 'kiln-reboot', '-n', 'kiln-system', '-o', 'json']);
  const obj = JSON.parse(got.stdout);
  assert.is((await kubectl(['replace', '-f', '-', '-o', 'json'], JSON.stringify(obj))).code, 0);
  const stale = await kubectl(['replace', '-f', '-', '-o', 'json'], JSON.stringify(obj));
  assert.is(stale.code, 1);
  assert.match(stale.stderr, /\(Conflict\)/);
});

test.run();
