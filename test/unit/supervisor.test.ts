// The service supervisor with real processes: order, restarts with backoff, health
// gating, stop with SIGTERM then SIGKILL, per-service logs, process-group cleanup.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CgroupTree } from '../../init/services/cgroups.ts';
import { MAX_PARTIAL, MAX_TAIL_LINE, serviceTable, startOrder, Supervisor } from '../../init/services/supervisor.ts';
import type { ServiceSpec } from '../../init/services/service.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// A zombie (state Z) counts as gone: reaping it is the job of whatever PID 1 the test runs under.
const alive = (pid: number) => { try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; } };
const sh = (script: string) => () => ({ cmd: '/bin/sh', args: ['-c', script] });
const fresh = (cgroups?: CgroupTree) => { const logDir = mkdtempSync(join(tmpdir(), 'kiln-sup-')); const said: string[] = []; return { sup: new Supervisor({ logDir, say: (m) => said.push(m), cgroups }), logDir, said }; };
const waitFor = async (cond: () => boolean, ms = 3000) => { const t0 = Date.now(); while (!cond() && Date.now() - t0 < ms) await sleep(20); return cond(); };
const setOwnAdj = (v: number) => writeFileSync('/proc/self/oom_score_adj', String(v));
/** Gives this process a non-zero OOM score as init has: -1000 with CAP_SYS_RESOURCE, else 500 (raising needs no privilege). */
const protectSelf = () => { try { setOwnAdj(-1000); return -1000; } catch { setOwnAdj(500); return 500; } };
const adjOf = (pid: number) => readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim();
/** A directory laid out like a cgroup2 root (plain files: the kernel's side is not simulated). */
const fakeCgroupRoot = (controllers = 'cpuset cpu io memory hugetlb pids rdma misc') => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-cg-'));
  writeFileSync(join(root, 'cgroup.controllers'), `${controllers}\n`);
  return root;
};

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
  // Four starts take 100 + 200 + 400 ms of backoff plus four short runs; a loaded machine may
  // take longer. Stopped in backoff, not mid-run, so the last exit is the service's own.
  assert.ok(await waitFor(() => starts.length >= 4 && sup.status()[0].state === 'backoff', 15_000), `4 starts, then backoff: ${starts.length}, ${sup.status()[0].state}`);
  await sup.stopAll();
  assert.ok(starts.length >= 4);
  const gaps = starts.slice(1).map((t, i) => t - starts[i]);
  assert.ok(gaps[0] >= 90 && gaps[0] < 1000, `first gap ${gaps[0]}`);
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

test('a costly health check waits firstCheckAfterMs after the start, then keeps its interval', async () => {
  const { sup } = fresh();
  const at: number[] = [];
  sup.add({ id: 'slow', description: 'probed late', run: sh('exec sleep 30'), health: { check: async () => { at.push(Date.now()); return false; }, intervalMs: 50, firstCheckAfterMs: 300 } });
  const t0 = Date.now();
  await sup.start('slow');
  await sleep(200);
  assert.equal(at, [], 'no check before firstCheckAfterMs');
  assert.ok(await waitFor(() => at.length >= 3, 2000), `${at.length} checks`);
  assert.ok(at[0]! - t0 >= 290, `first check ${at[0]! - t0} ms after the start`);
  await sup.stopAll();
  const n = at.length;
  await sleep(150);
  assert.is(at.length, n, 'no check after the service stopped');
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

test('output without newlines is flushed as a cut line, not buffered without limit', async () => {
  const { sup, logDir } = fresh();
  sup.add({ id: 'chatty', description: 'one megabyte, no newline', run: sh(`head -c 1000000 /dev/zero | tr '\\0' x; exec sleep 30`) });
  try {
    await sup.startAll();
    const logged = () => { try { return readFileSync(join(logDir, 'chatty.log'), 'utf8').length; } catch { return 0; } };
    assert.ok(await waitFor(() => logged() >= 1_000_000), 'the log file gets everything');
    await sleep(100);
    const inst = (sup as any).services.get('chatty');
    assert.ok(inst.partial.length <= MAX_PARTIAL, `pending line is ${inst.partial.length} characters`);
    const tail = sup.logTail('chatty', 200);
    assert.ok(tail.length >= 1000000 / (2 * MAX_PARTIAL), `${tail.length} lines flushed`);
    for (const l of tail) assert.ok(l.length <= MAX_TAIL_LINE + 60, `a tail line of ${l.length} characters`);
    assert.match(tail[0], /^x+ \[cut: \d+ more characters\]$/);
  } finally { await sup.stopAll(); }
});

test('services start with oom_score_adj 0 (or their own), not init\'s; so does what they fork at once', async () => {
  const { sup } = fresh();
  const d = mkdtempSync(join(tmpdir(), 'kiln-oom-'));
  const own = protectSelf();
  try {
    sup.add({ id: 'plain', description: 'default score', run: sh(`sleep 60 & echo $! > ${d}/child; exec sleep 60`) });
    sup.add({ id: 'expendable', description: 'declares 300', oomScoreAdj: 300, run: sh('exec sleep 60') });
    await sup.startAll();
    assert.ok(await waitFor(() => existsSync(`${d}/child`) && readFileSync(`${d}/child`, 'utf8').endsWith('\n')));
    const [plain, expendable] = sup.status();
    assert.is(adjOf(plain.pid!), '0', `init runs at ${own}; its service must not`);
    assert.is(adjOf(Number(readFileSync(`${d}/child`, 'utf8'))), '0', 'the service\'s first child too');
    // Set by the starting shell just before it execs the service.
    await waitFor(() => adjOf(expendable.pid!) === '300');
    assert.is(adjOf(expendable.pid!), '300');
  } finally { setOwnAdj(0); await sup.stopAll(); }
});

test('declared limits are checked when the service is added', () => {
  const { sup } = fresh();
  assert.throws(() => sup.add({ id: 'x', description: '', run: sh('true'), limits: { memoryBytes: 1000 } }), /service x: limits.memoryBytes must be a whole number of bytes, at least 4 MiB/);
  assert.throws(() => sup.add({ id: 'y', description: '', run: sh('true'), limits: { cpus: 0 } }), /service y: limits.cpus must be/);
  assert.throws(() => sup.add({ id: 'z', description: '', run: sh('true'), oomScoreAdj: -1001 }), /service z: oomScoreAdj must be a whole number from -1000 to 1000/);
  assert.throws(() => sup.add({ id: 'w', description: '', run: sh('true'), startupCpuWeight: 0 }), /service w: startupCpuWeight must be a whole number from 1 to 10000 \(got 0\)/);
});

test('a startup CPU weight holds until boot is done; then that group and every later start get the default', async () => {
  const root = fakeCgroupRoot();
  const tree = new CgroupTree(root);
  tree.setup();
  const { sup } = fresh(tree);
  sup.add({ id: 'ssh', description: 'nothing waits for it', startupCpuWeight: 10, run: sh('exec sleep 60') });
  sup.add({ id: 'dhcp', description: 'boot waits for it', run: sh('exec sleep 60') });
  sup.add({ id: 'late', description: 'started after boot', startupCpuWeight: 10, run: sh('exec sleep 60') });
  const weight = (id: string) => readFileSync(join(root, 'kiln', id, 'cpu.weight'), 'utf8');
  try {
    await sup.start('ssh');
    await sup.start('dhcp');
    assert.is(weight('ssh'), '10');
    assert.is(weight('dhcp'), '100', 'the default, written so a group left from before is reset');
    sup.endStartup();
    assert.is(weight('ssh'), '100');
    await sup.start('late');
    assert.is(weight('late'), '100');
    sup.endStartup();
    assert.is(weight('ssh'), '100');
  } finally { await sup.stopAll(); }
});

test('no cpu controller: a startup weight is not written, and the service runs', async () => {
  const root = fakeCgroupRoot('memory pids');
  const tree = new CgroupTree(root);
  tree.setup();
  const { sup } = fresh(tree);
  sup.add({ id: 'ssh', description: '', startupCpuWeight: 10, run: sh('exec sleep 60') });
  try {
    await sup.start('ssh');
    assert.not.ok(existsSync(join(root, 'kiln/ssh/cpu.weight')));
    sup.endStartup();
    assert.is(sup.status()[0].state, 'running');
  } finally { await sup.stopAll(); }
});

test('each service gets its own group with its limits, joined before its program runs (fake cgroup root)', async () => {
  const root = fakeCgroupRoot();
  const tree = new CgroupTree(root);
  assert.match(tree.setup(), /cgroups: cpu cpuset io memory pids for services/);
  assert.is(readFileSync(join(root, 'cgroup.subtree_control'), 'utf8'), '+cpu +cpuset +io +memory +pids');
  assert.is(readFileSync(join(root, 'kiln/cgroup.subtree_control'), 'utf8'), '+cpu +cpuset +io +memory +pids');
  const { sup } = fresh(tree);
  sup.add({ id: 'db', description: 'limited', limits: { memoryBytes: 256 << 20, cpus: 0.5 }, run: sh('exec sleep 60') });
  sup.add({ id: 'free', description: 'no limits', run: sh('exec sleep 60') });
  try {
    await sup.startAll();
    const dir = join(root, 'kiln/db');
    const [db] = sup.status();
    assert.ok(await waitFor(() => existsSync(join(dir, 'cgroup.procs')) && readFileSync(join(dir, 'cgroup.procs'), 'utf8').endsWith('\n')));
    assert.is(db.cgroup, dir);
    assert.is(readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim(), String(db.pid), 'the wrapper wrote its own pid, which became the service');
    assert.is(readFileSync(join(dir, 'memory.max'), 'utf8'), String(256 << 20));
    assert.is(readFileSync(join(dir, 'cpu.max'), 'utf8'), '50000 100000');
    assert.is(readFileSync(join(root, 'kiln/free/memory.max'), 'utf8'), 'max');
    assert.is(readFileSync(join(root, 'kiln/free/cpu.max'), 'utf8'), 'max 100000');
    writeFileSync(join(dir, 'memory.current'), '12345678\n');
    const st = JSON.parse(JSON.stringify(sup.status()));
    assert.is(st[0].memoryBytes, 12345678, 'memory.current of its group, read when status is serialised');
  } finally { await sup.stopAll(); }
});

test('a limit that cannot be applied (no memory controller) is said, and the service still runs', async () => {
  const tree = new CgroupTree(fakeCgroupRoot('cpu pids'));
  tree.setup();
  const { sup, said } = fresh(tree);
  sup.add({ id: 'db', description: '', limits: { memoryBytes: 64 << 20 }, run: sh('exec sleep 60') });
  try {
    await sup.startAll();
    assert.ok(said.includes('service db: memory.max not set: the memory controller is not available'), said.join('\n'));
    assert.is(sup.status()[0].state, 'running');
  } finally { await sup.stopAll(); }
});

test('without a cgroup, memory is the RSS of the service\'s process group; kiln status shows it', async () => {
  const { sup } = fresh(null as any);
  sup.add({ id: 'app', description: '', run: sh('sleep 60 & exec sleep 60') });
  await sup.startAll();
  await sleep(100);
  const [app] = JSON.parse(JSON.stringify(sup.status()));
  await sup.stopAll();
  assert.is(app.cgroup, undefined);
  assert.ok(app.memoryBytes > 100_000 && app.memoryBytes < 100 << 20, `memory ${app.memoryBytes}`);
  const table = serviceTable([{ ...app, healthy: true, restarts: 1, memoryBytes: 9.5 * 2 ** 20 }, { id: 'k3s', description: '', state: 'backoff', restarts: 0, since: Date.now(), lastExit: 'exited with code 1' }]);
  assert.is(table[0], 'SERVICE           STATE     HEALTH    RESTARTS  SINCE   MEMORY   LAST EXIT');
  assert.match(table[1], /^app\s+running\s+ok\s+1\s+\d+s\s+9\.5M\s*$/);
  assert.match(table[2], /^k3s\s+backoff\s+-\s+0\s+0s\s+-\s+exited with code 1$/);
  assert.is(JSON.parse(JSON.stringify(sup.status()))[0].memoryBytes, undefined, 'nothing for a stopped service');
});

// Real cgroupfs: runs where a writable cgroup2 hierarchy exists (the pure v2 mount, or the
// "unified" one of a hybrid setup), in a throwaway group beneath it; skipped elsewhere.
const realCgroup2 = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].find((d) => existsSync(join(d, 'cgroup.procs')) && existsSync(join(d, 'cgroup.controllers')));
test('real cgroupfs: the service and what it forks at once are in its group', async () => {
  if (!realCgroup2) { console.log('  (skipped: no cgroup2 hierarchy here)'); return; }
  const root = join(realCgroup2, `kiln-test-${process.pid}`);
  try { mkdirSync(root); } catch (e) { console.log(`  (skipped: cannot make a cgroup: ${(e as Error).message})`); return; }
  const d = mkdtempSync(join(tmpdir(), 'kiln-cgr-'));
  const tree = new CgroupTree(root);
  const { sup } = fresh(tree);
  try {
    tree.setup();
    sup.add({ id: 'svc', description: '', startupCpuWeight: 10, run: sh(`sleep 60 & echo $! > ${d}/child; exec sleep 60`) });
    await sup.startAll();
    if (tree.enabled.includes('cpu')) {
      const weight = () => readFileSync(join(root, 'kiln/svc/cpu.weight'), 'utf8').trim();
      assert.is(weight(), '10', 'the kernel took the startup weight');
      sup.endStartup();
      assert.is(weight(), '100');
    } else console.log('  (cpu.weight not checked: no cpu controller here)');
    assert.ok(await waitFor(() => existsSync(`${d}/child`) && readFileSync(`${d}/child`, 'utf8').endsWith('\n')));
    const rel = root.slice(realCgroup2.length);
    const cg = (pid: number) => readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
    assert.is(cg(sup.status()[0].pid!), `0::${rel}/kiln/svc`);
    assert.is(cg(Number(readFileSync(`${d}/child`, 'utf8'))), `0::${rel}/kiln/svc`);
    assert.equal(tree.procs(join(root, 'kiln/svc')).length, 2);
  } finally {
    await sup.stopAll();
    await waitFor(() => !tree.procs(join(root, 'kiln/svc')).length);
    for (const g of ['kiln/svc', 'kiln', '']) { try { rmdirSync(join(root, g)); } catch { /* */ } }
  }
});

test.run();
