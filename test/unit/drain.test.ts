// Draining before an update's reboot: the kubectl calls made, the marker that says kiln
// cordoned the node, and what happens when a drain cannot finish. `run` is a recording test
// double here (no cluster); the e2e update test runs the same code against the k3s stand-in.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { drainNode, nodeName, uncordonIfDrained } from '../../init/update/drain.ts';
import type { RunResult } from '../../init/exec.ts';

function fixture(fail: string[] = []) {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-drain-'));
  const kubeconfig = join(dir, 'k3s.yaml');
  writeFileSync(kubeconfig, 'fixture kubeconfig\n');
  const calls: string[][] = [];
  const run = async (_cmd: string, args: string[] = []): Promise<RunResult> => {
    calls.push(args);
    const bad = fail.includes(args[1]!);
    return { code: bad ? 1 : 0, signal: null, stdout: '', stderr: bad ? 'error: cannot evict pod (disruption budget)\n' : '' };
  };
  return { dir, kubeconfig, marker: join(dir, 'state/drained-by-kiln'), calls, run };
}

test('node name: k3s --node-name in either spelling, else the host name', () => {
  assert.is(nodeName(['server', '--node-name', 'edge-1'], 'kiln-abc'), 'edge-1');
  assert.is(nodeName(['server', '--node-name=edge-2'], 'kiln-abc'), 'edge-2');
  assert.is(nodeName(['agent'], 'kiln-abc'), 'kiln-abc');
});

test('drain: marker first, then kubectl drain with a timeout; after boot, uncordon and drop the marker', async () => {
  const f = fixture();
  const m = await drainNode({ k3s: 'k3s', node: 'n1', timeoutS: 120, marker: f.marker, kubeconfig: f.kubeconfig, run: f.run });
  assert.is(m, 'drained node n1');
  assert.equal(f.calls, [['kubectl', 'drain', 'n1', '--ignore-daemonsets', '--delete-emptydir-data', '--force', '--timeout=120s']]);
  assert.is(readFileSync(f.marker, 'utf8'), 'n1\n');
  assert.is(await uncordonIfDrained({ k3s: 'k3s', node: 'n1', marker: f.marker, run: f.run }), 'uncordoned node n1');
  assert.equal(f.calls[1], ['kubectl', 'uncordon', 'n1']);
  assert.not.ok(existsSync(f.marker));
  assert.is(await uncordonIfDrained({ k3s: 'k3s', node: 'n1', marker: f.marker, run: f.run }), undefined, 'a node kiln did not cordon is left alone');
  assert.is(f.calls.length, 2);
});

test('a drain that cannot finish is undone and throws (the reboot waits); an agent is not drained', async () => {
  const f = fixture(['drain']);
  let err: Error | undefined;
  try { await drainNode({ k3s: 'k3s', node: 'n1', timeoutS: 10, marker: f.marker, kubeconfig: f.kubeconfig, run: f.run }); } catch (e) { err = e as Error; }
  assert.match(err?.message ?? '', /drain of node n1 did not finish: error: cannot evict pod .*; uncordoned node n1/);
  assert.not.ok(existsSync(f.marker));
  const g = fixture();
  assert.match(await drainNode({ k3s: 'k3s', node: 'n1', timeoutS: 10, marker: g.marker, kubeconfig: join(g.dir, 'none.yaml'), run: g.run }), /not drained: no admin kubeconfig/);
  assert.equal(g.calls, []);
});

test('a failed uncordon keeps the marker, so the next boot tries again', async () => {
  const f = fixture(['uncordon']);
  await drainNode({ k3s: 'k3s', node: 'n1', timeoutS: 10, marker: f.marker, kubeconfig: f.kubeconfig, run: f.run });
  assert.match((await uncordonIfDrained({ k3s: 'k3s', node: 'n1', marker: f.marker, run: f.run }))!, /uncordon of node n1 failed/);
  assert.ok(existsSync(f.marker));
});

test.run();
