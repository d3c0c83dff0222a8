// The boot plan: its needs are sound (each names an earlier task or fact), its phase and task
// names are the ones results, log lines and the timings line have always used, and the
// ready and timings lines keep their text.
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bootContext } from '../../init/boot/context.ts';
import { bootPlan, cpuLine, machineCpu, readyLine, rssSplit, TIMED, timingsLine } from '../../init/boot/plan.ts';
import { checkPlan, taskId, type TaskResult } from '../../init/sequencer.ts';

const ran: string[] = [];
const ctx = bootContext({
  info: { version: '1.2.3', arch: 'x86_64', slot: 'a', cmdline: '', kernel: '6.1', chain: { secureBoot: 'off', root: 'unverified' } },
  live: false,
  supervisor: new Proxy({} as any, { get: (_, k) => () => { ran.push(String(k)); } }),
  power: () => { ran.push('power'); },
});
const plan = bootPlan(ctx);

test('making the plan runs nothing', () => {
  assert.equal(ran, []);
});

test('every need names a task or fact earlier in the plan', () => {
  assert.equal(checkPlan(plan), []);
});

test('phase and task names are the ones boot has always reported, in the same order', () => {
  assert.equal(plan.map(taskId), [
    'mount/base filesystems', 'mount/protect init', 'mount/control socket',
    'modules/load', 'modules/k3s', 'modules/power button',
    'data/logs', 'data/grow', 'data/boot count', 'data/etc state', 'data/machine id', 'data/esp',
    'clock/floor',
    'config/devices', 'config/choose', 'config/apply', 'config/ssh keys (cached)', 'config/init_cmd', 'config/ssh',
    'network/loopback', 'network/wifi', 'network/links',
    'config-network/network sources', 'config-network/ssh keys', 'config-network/ntp', 'config-network/boot_cmd',
    'install/unattended',
    'k3s/start',
    'late/run_cmd', 'late/runcmd', 'late/user-data scripts',
  ]);
});

test('the documented command order is in the needs', () => {
  // init_cmd before the network, boot_cmd before k3s, run_cmd after it (docs/config.md).
  const needs = (id: string) => plan.find((t) => taskId(t) === id)!.needs;
  assert.ok(needs('network/links').includes('config/init_cmd'));
  assert.ok(needs('k3s/start').includes('config-network/boot_cmd'));
  assert.ok(needs('k3s/start').includes('install/unattended'));
  // k3s's modules: before k3s, and before kiln.sysctls, which may set their settings.
  assert.ok(needs('k3s/start').includes('k3s drivers'));
  assert.ok(needs('config/apply').includes('k3s drivers'));
  assert.ok(needs('late/run_cmd').includes('k3s/start'));
  // runcmd (once per instance) after run_cmd, the user-data scripts after both
  assert.ok(needs('late/runcmd').includes('late/run_cmd'));
  assert.ok(needs('late/user-data scripts').includes('late/runcmd'));
});

test('the clock floor comes before anything that checks a certificate', () => {
  const needs = (id: string) => plan.find((t) => taskId(t) === id)!.needs;
  for (const id of ['config-network/network sources', 'config-network/ssh keys', 'config-network/ntp', 'k3s/start']) assert.ok(needs(id).includes('clock floor'), id);
});

/** Everything a task waits for, directly or through other tasks and facts. */
function before(id: string): Set<string> {
  const giver = new Map(plan.flatMap((t) => [taskId(t), ...(t.gives ?? [])].map((n) => [n, taskId(t)] as const)));
  const seen = new Set<string>();
  const walk = (x: string) => { for (const n of plan.find((t) => taskId(t) === x)!.needs) { const g = giver.get(n)!; if (!seen.has(g)) { seen.add(g); walk(g); } } };
  walk(id);
  return seen;
}

test('tasks run in parallel only where that is safe: the needs list order used to hide', () => {
  // Services and user commands: in their cgroups, logging into a log directory made root's.
  for (const id of ['config/ssh', 'config/init_cmd', 'network/links', 'config-network/ntp', 'config-network/boot_cmd', 'k3s/start', 'late/run_cmd', 'late/runcmd', 'late/user-data scripts']) {
    for (const need of ['mount/base filesystems', 'mount/protect init', 'data/logs']) assert.ok(before(id).has(need), `${id} needs ${need}`);
  }
  // User commands see the system as configured: after every task that writes /etc or keys.
  for (const id of ['config/init_cmd', 'config-network/boot_cmd', 'late/run_cmd', 'late/runcmd']) assert.ok(before(id).has('config/ssh keys (cached)'), id);
  for (const id of ['config-network/boot_cmd', 'late/run_cmd', 'late/runcmd']) assert.ok(before(id).has('config-network/ssh keys') && before(id).has('config-network/network sources'), id);
  // The installer writes disks and may power off: after the data partition grew and after boot_cmd.
  assert.ok(before('install/unattended').has('data/grow') && before('install/unattended').has('config-network/boot_cmd'));
  // and every service has started before it, so a power-off stops them all.
  for (const id of ['config/ssh', 'network/links', 'config-network/ntp']) assert.ok(before('install/unattended').has(id), id);
  // SSH does not wait for init_cmd or the network: a hanging command must not lock the owner out.
  assert.not.ok(before('config/ssh').has('config/init_cmd'));
  assert.not.ok(before('config/ssh').has('network/links'));
  // And the network starts with local config, not after modules' slowest neighbour.
  assert.not.ok(before('network/links').has('data/grow'));
});

test('the timed tasks are in the plan', () => {
  const ids = new Set(plan.map(taskId));
  for (const [phase, task] of Object.values(TIMED)) assert.ok(ids.has(`${phase}/${task}`), `${phase}/${task}`);
});

test('the ready and timings lines keep their text', () => {
  const r = (phase: string, task: string, at: number, ok = true): TaskResult => ({ phase, task, ok, ms: 1, start: at - 1, at, ...(ok ? {} : { error: 'x' }) });
  const results = [r('config', 'apply', 1234.5), r('network', 'links', 2500), r('config-network', 'boot_cmd', 3010, false), r('k3s', 'start', 4999)];
  assert.is(readyLine(ctx.info, []), 'ready version=1.2.3 slot=a arch=x86_64');
  assert.is(readyLine(ctx.info, results.filter((x) => !x.ok)), 'ready version=1.2.3 slot=a arch=x86_64 (degraded: config-network/boot_cmd)');
  assert.is(timingsLine(results, 5432.1, 1.234, 52 * 1048576),
    'timings: since init start (s): config applied 1.23, network 2.50, network config 3.01, k3s started 5.00, ready 5.43; init started 1.23 s after the kernel; rss 52.0 MiB');
  assert.is(timingsLine([], 1000, 0, 52 * 1048576, { anonMiB: 20, fileMiB: 32 }).endsWith('; rss 52.0 MiB (anon 20.0, file 32.0)'), true);
  assert.is(timingsLine([], 1000, 0, 0), 'timings: since init start (s): config applied NaN, network NaN, network config NaN, k3s started NaN, ready 1.00; init started 0.00 s after the kernel; rss 0.0 MiB');
});

test("RSS is split into anonymous and file pages from the kernel's status file", () => {
  const status = 'Name:\tnode\nVmRSS:\t   61440 kB\nRssAnon:\t   18944 kB\nRssFile:\t   42496 kB\nRssShmem:\t       0 kB\n';
  assert.equal(rssSplit(status), { anonMiB: 18.5, fileMiB: 41.5 });
  assert.is(rssSplit('VmRSS:\t 1 kB\n'), undefined);
  assert.is(rssSplit('RssAnon:\t lots kB\nRssFile:\t 1 kB\n'), undefined);
  // This process's own, which the kernel keeps as the sum.
  const own = readFileSync('/proc/self/status', 'utf8');
  const vm = Number(/^VmRSS:\s+(\d+)/m.exec(own)![1]) / 1024;
  const got = rssSplit(own)!;
  assert.ok(got.anonMiB > 1 && got.fileMiB > 1 && got.anonMiB + got.fileMiB <= vm + 1, own);
});

test('the cpu line: init\'s own time, its finished commands, and what all CPUs did from init\'s first code', () => {
  // A command name with spaces and a parenthesis, as /proc/PID/stat may hold.
  const self = '1234 (node (init) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 293 137 14 76 20 0 11 0 350 0 0';
  const start = 'cpu  100 0 300 20 5 0 1 0 0 0\ncpu0 100 0 300 20 5 0 1 0 0 0\n';
  const now = 'cpu  480 0 870 31 9 0 6 0 0 0\ncpu0 480 0 870 31 9 0 6 0 0 0\n';
  assert.equal(machineCpu(start), { busy: 401, idle: 25 });
  assert.is(cpuLine(self, start, now), "cpu at ready (s): init 4.30 (user 2.93, system 1.37), its finished commands 0.90; from init's first code, all CPUs busy 9.55, idle 0.15");
  assert.is(cpuLine(self, '', now), undefined, 'no /proc/stat at the start');
  assert.is(cpuLine('garbage', start, now), undefined);
  assert.is(machineCpu('cpu  1 2 x 4 5\n'), undefined);
  // This machine's own.
  assert.match(cpuLine(readFileSync('/proc/self/stat', 'utf8'), readFileSync('/proc/stat', 'utf8'), readFileSync('/proc/stat', 'utf8'))!, /^cpu at ready \(s\): init \d+\.\d\d /);
});

test.run();
