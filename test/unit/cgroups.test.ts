// init's own protection at boot: OOM score -1000 for init and tini, init in a leaf group of
// its own, and the service groups that follow from it. A fake /proc and a fake cgroup root
// (plain directories): nothing here touches the real cgroupfs or PID 1.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { activeCgroups, CgroupTree, groupMembers, groupName, limitFiles, protectInit, rssOf } from '../../init/services/cgroups.ts';
import { Supervisor } from '../../init/services/supervisor.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const tmp = (p: string) => mkdtempSync(join(tmpdir(), p));

test('limit files: bytes for memory.max, quota and period for cpu.max, max where none is declared', () => {
  assert.equal(limitFiles({ memoryBytes: 512 << 20, cpus: 1.5 }), { 'memory.max': '536870912', 'cpu.max': '150000 100000' });
  assert.equal(limitFiles({}), { 'memory.max': 'max', 'cpu.max': 'max 100000' });
  assert.equal(limitFiles({ cpus: 0.001 })['cpu.max'], '1000 100000', 'the kernel\'s smallest quota');
});

test('a group is named by a plain service id; not init\'s, not a path', () => {
  assert.is(groupName('dhcp-eth0'), 'dhcp-eth0');
  assert.is(groupName('k3s'), 'k3s');
  for (const bad of ['init', '..', '.', 'a/b', '', 'x'.repeat(80)]) assert.is(groupName(bad), undefined, bad);
});

test('protectInit: -1000 for init and PID 1, init in kiln/init, service groups from then on', async () => {
  const proc = tmp('kiln-proc-');
  for (const p of ['4242', '1']) { mkdirSync(join(proc, p)); writeFileSync(join(proc, p, 'oom_score_adj'), '0'); }
  const root = tmp('kiln-cg-');
  writeFileSync(join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma misc\n');
  assert.is(activeCgroups(), undefined);
  const note = protectInit({ proc, pid: 4242, cgroups: new CgroupTree(root) });
  assert.is(note, 'init and tini protected from the OOM killer; cgroups: cpu cpuset io memory pids for services');
  assert.is(readFileSync(join(proc, '4242/oom_score_adj'), 'utf8'), '-1000');
  assert.is(readFileSync(join(proc, '1/oom_score_adj'), 'utf8'), '-1000');
  assert.is(readFileSync(join(root, 'kiln/init/cgroup.procs'), 'utf8'), '4242');
  assert.not.ok(existsSync(join(root, 'kiln/init/cgroup.subtree_control')), 'init\'s group is a leaf');
  assert.is(activeCgroups()?.root, root);
  // A supervisor made without a tree (as init's is) uses the one set up at boot.
  const sup = new Supervisor({ logDir: tmp('kiln-log-') });
  sup.add({ id: 'ssh', description: '', run: () => ({ cmd: '/bin/sh', args: ['-c', 'exec sleep 30'] }) });
  try {
    await sup.startAll();
    const procs = join(root, 'kiln/ssh/cgroup.procs');
    for (let i = 0; i < 100 && !(existsSync(procs) && readFileSync(procs, 'utf8').endsWith('\n')); i++) await sleep(20);
    assert.is(readFileSync(procs, 'utf8').trim(), String(sup.status()[0].pid));
  } finally { await sup.stopAll(); }
});

test('protectInit never throws: no cgroup2, no /proc entries', () => {
  const note = protectInit({ proc: join(tmp('kiln-proc-'), 'missing'), pid: 4242, cgroups: new CgroupTree(tmp('kiln-nocg-')) });
  assert.match(note, /^OOM protection failed for 4242 \(ENOENT.*\), 1 \(ENOENT.*\); no service cgroups: no cgroup2 filesystem at /);
});

test('process group members and their RSS from /proc', () => {
  const pgrp = Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ')[2]);
  assert.ok(groupMembers(pgrp).includes(process.pid));
  const rss = rssOf([process.pid])!;
  assert.ok(rss > 10 << 20 && rss < 4 * 2 ** 30, `node's RSS ${rss}`);
  assert.is(rssOf([]), undefined);
});

test.run();
