// The service supervisor with real processes: order, restarts with backoff, health
// gating, stop with SIGTERM then SIGKILL, per-service logs, process-group cleanup.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startOrder, Supervisor } from '../../init/services/supervisor.ts';
import type { ServiceSpec } from '../../init/services/service.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// A zombie (state Z) counts as gone: reaping it is the job of whatever PID 1 the test runs under.
const alive = (pid: number) => { try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; } };
const sh = (script: string) => () => ({ cmd: '/bin/sh', args: ['-c', script] });
const fresh = () => { const logDir = mkdtempSync(join(tmpdir(), 'kiln-sup-')); const said: string[] = []; return { sup: new Supervisor({ logDir, say: (m) => said.push(m) }), logDir, said }; };

test('start order follows dependencies; cycles and unknown ids are reported', () => {
  const s = (id: string, depends: string[] = []): ServiceSpec => ({ id, description: id, depends, run: sh('true') });
  assert.equal(startOrder([s('k3s', ['net', 'ssh']), s('ssh', ['net']), s('net')]), ['net', 'ssh', 'k3s']);
  assert.throws(() => startOrder([s('a', ['b']), s('b', ['a'])]), /cycle: a -> b -> a/);
  assert.throws(() => startOrder([s('a', ['nope'])]), /a depends on unknown service nope/);
});

test('backoff doubles from the initial delay and is capped', () => {
  const b = { initialMs: 100, maxMs: 1000, resetAfterMs: 5000 };
  assert.equal([0, 1, 2, 3, 4, 5].map((n) => Supervisor.backoffDelay(n, b)), [100, 200, 400, 800, 1000, 1000]);
});

test('a crashing service is restarted with growing delays and its output is logged', async () => {
  const { sup, logDir } = fresh();
  const starts: number[] = [];
  sup.add({ id: 'crashy', description: 'exits 3', run: () => { starts.push(Date.now()); return { cmd: '/bin/sh', args: ['-c', 'echo try; exit 3'] }; }, backoff: { initialMs: 100, maxMs: 400, resetAfterMs: 60_000 } });
  await sup.startAll();
  await sleep(1600);
  await sup.stopAll();
  assert.ok(starts.length >= 4 && starts.length <= 6, `expected 4-6 starts in 1.6 s, got ${starts.length}`);
  const gaps = starts.slice(1).map((t, i) => t - starts[i]);
  assert.ok(gaps[0] >= 90 && gaps[0] < 300, `first gap ${gaps[0]}`);
  assert.ok(gaps[1] >= 190, `second gap ${gaps[1]} should be about 200`);
  assert.ok(gaps[2] >= 390, `third gap ${gaps[2]} should be about 400 (capped)`);
  const st = sup.status()[0];
  assert.ok(st.restarts >= 3);
  assert.match(st.lastExit!, /exited with code 3/);
  const log = readFileSync(join(logDir, 'crashy.log'), 'utf8');
  assert.ok((log.match(/^try$/gm) ?? []).length >= 4);
  assert.match(log, /crashy exited with code 3/);
});

test('dependants wait for a health check to pass; the tail is kept in memory', async () => {
  const { sup } = fresh();
  const flag = join(mkdtempSync(join(tmpdir(), 'kiln-flag-')), 'up');
  let depStartedAt = 0;
  sup.add({ id: 'db', description: 'becomes healthy after 300 ms', run: sh(`sleep 0.3; touch ${flag}; echo db up; exec sleep 30`), health: { check: async () => existsSync(flag), intervalMs: 50 } });
  sup.add({ id: 'app', description: 'needs db', depends: ['db'], run: () => { depStartedAt = Date.now(); return { cmd: '/bin/sh', args: ['-c', 'exec sleep 30'] }; } });
  const t0 = Date.now();
  await sup.startAll();
  assert.ok(depStartedAt - t0 >= 280, `app started ${depStartedAt - t0} ms after boot, before db was healthy`);
  assert.equal(sup.status().map((s) => [s.id, s.state]), [['db', 'running'], ['app', 'running']]);
  await sleep(100);
  assert.equal(sup.logTail('db'), ['db up']);
  await sup.stopAll();
  assert.equal(sup.status().map((s) => s.state), ['stopped', 'stopped']);
});

test('health is checked often until it passes, then at healthyIntervalMs; a failure is seen at that pace', async () => {
  const { sup, said } = fresh();
  let checks = 0, ok = false;
  sup.add({ id: 'api', description: 'probed', run: sh('exec sleep 30'), health: { check: async () => { checks++; return ok; }, intervalMs: 20, healthyIntervalMs: 400 } });
  await sup.start('api');
  await sleep(200);
  assert.ok(checks >= 5, `${checks} checks in 200 ms while unhealthy`);
  ok = true;
  await sleep(100);
  const atHealthy = checks;
  await sleep(250);
  assert.ok(checks - atHealthy <= 1, `${checks - atHealthy} checks in 250 ms once healthy (every 400 ms)`);
  ok = false;
  await sleep(500);
  assert.ok(said.includes('service api unhealthy'), said.join('\n'));
  await sup.stopAll();
});

test('a service ignoring SIGTERM is killed after its stop timeout, with everything in its group', async () => {
  const { sup, said } = fresh();
  const pidFile = join(mkdtempSync(join(tmpdir(), 'kiln-pid-')), 'child');
  sup.add({ id: 'stubborn', description: 'traps TERM', stopTimeoutMs: 400, run: sh(`trap '' TERM; sleep 60 & echo $! > ${pidFile}; while :; do sleep 0.05; done`) });
  await sup.startAll();
  await sleep(300);
  const grandchild = Number(readFileSync(pidFile, 'utf8'));
  assert.ok(alive(grandchild));
  const t0 = Date.now();
  await sup.stopAll();
  const took = Date.now() - t0;
  assert.ok(took >= 380 && took < 3000, `stop took ${took} ms`);
  assert.ok(said.some((m) => /stubborn did not stop within 0.4 s/.test(m)));
  await sleep(100);
  assert.not.ok(alive(grandchild), 'the service\'s background child must be gone too');
});

test('restart policy on-failure leaves a clean exit finished; a condition can skip a service', async () => {
  const { sup } = fresh();
  sup.add({ id: 'oneshot', description: 'exits 0', restart: 'on-failure', run: sh('exit 0') });
  sup.add({ id: 'off', description: 'not configured', condition: () => false, run: sh('exit 1') });
  sup.add({ id: 'after-off', description: 'depends on a skipped one', depends: ['off'], run: sh('sleep 5') });
  await sup.startAll();
  await sleep(200);
  assert.equal(sup.status().map((s) => [s.id, s.state]), [['oneshot', 'finished'], ['off', 'skipped'], ['after-off', 'skipped']]);
  await sup.stopAll();
});

test('a missing executable is a failure with backoff, not a crash', async () => {
  const { sup } = fresh();
  sup.add({ id: 'ghost', description: 'no such binary', run: () => ({ cmd: '/nonexistent/k3s', args: [] }), backoff: { initialMs: 50, maxMs: 100, resetAfterMs: 1000 } });
  await sup.startAll();
  await sleep(300);
  const st = sup.status()[0];
  assert.match(st.lastExit!, /ENOENT|cannot start/);
  await sup.stopAll();
});

test.run();
