// runcmd runs once per instance (cloud-init's meaning); run_cmd at every boot (k3os's).
// The instance id comes from the data source, else the machine id; the decision and the
// record it leaves on the data partition are pure (init/config/instance.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decideRuncmd, instanceIdProblem, instanceOf, MAX_INSTANCES } from '../../init/config/instance.ts';
import { gatherSources } from '../../init/configure.ts';

const MID = '0123456789abcdef0123456789abcdef';
const decide = (o: Partial<Parameters<typeof decideRuncmd>[0]>) => decideRuncmd({ commands: 1, chosenOk: true, id: 'iid-1', origin: 'CIDATA:meta-data', done: '', ...o });

test('runcmd runs at the first boot of an instance, and the record names it before the commands start', () => {
  const d = decide({});
  assert.is(d.run, true);
  assert.is(d.run && d.record, 'iid-1\n');
  assert.match(d.why, /first boot of instance iid-1 \(from CIDATA:meta-data\)/);
});

test('runcmd does not run again for an instance in the record; a new instance id runs it again', () => {
  const again = decide({ done: 'iid-1\n' });
  assert.is(again.run, false);
  assert.match(again.why, /already ran for instance iid-1/);
  const moved = decide({ done: 'iid-1\n', id: 'iid-2' });
  assert.is(moved.run, true);
  assert.is(moved.run && moved.record, 'iid-1\niid-2\n');
  // an instance met before (moved back) is still done
  assert.is(decide({ done: 'iid-1\niid-2\n', id: 'iid-1' }).run, false);
});

test('without runcmd nothing is recorded; with a stand-in config (problems) runcmd waits and records nothing', () => {
  assert.equal(decide({ commands: 0 }), { run: false, why: 'no runcmd' });
  const waits = decide({ chosenOk: false });
  assert.is(waits.run, false);
  assert.match(waits.why, /waits for a config without problems/);
  // but an instance that already ran stays done whatever the config
  assert.match(decide({ chosenOk: false, done: 'iid-1\n' }).why, /already ran/);
});

test('the record keeps the newest MAX_INSTANCES ids', () => {
  const done = Array.from({ length: MAX_INSTANCES }, (_, i) => `i-${i}`).join('\n') + '\n';
  const d = decide({ done, id: 'new' });
  assert.ok(d.run);
  const ids = d.run ? d.record.trim().split('\n') : [];
  assert.is(ids.length, MAX_INSTANCES);
  assert.is(ids[0], 'i-1');
  assert.is(ids.at(-1), 'new');
});

test('the instance id: the data source\'s, else the machine id; a bad one is passed over', () => {
  assert.equal(instanceOf({ id: ' iid-1 ', origin: 'CIDATA:meta-data' }, MID), { id: 'iid-1', origin: 'CIDATA:meta-data' });
  assert.equal(instanceOf(undefined, MID).id, `machine:${MID}`);
  assert.equal(instanceOf({ id: 'a\nb', origin: 'x' }, MID).id, `machine:${MID}`);
  assert.is(instanceIdProblem('x'.repeat(257)), 'is longer than 256 characters');
  assert.is(instanceIdProblem('  '), 'is empty');
});

/** A root with a mounted-looking CIDATA volume and an optional config drive. */
function fakeRoot(o: { metaData?: string; driveMeta?: string }): string {
  const r = mkdtempSync(join(tmpdir(), 'kiln-iid-'));
  mkdirSync(join(r, 'run/kiln/cidata'), { recursive: true });
  writeFileSync(join(r, 'run/kiln/cidata/user-data'), '#cloud-config\nruncmd: [date]\n');
  if (o.metaData !== undefined) writeFileSync(join(r, 'run/kiln/cidata/meta-data'), o.metaData);
  if (o.driveMeta !== undefined) {
    mkdirSync(join(r, 'run/kiln/config-2/openstack/latest'), { recursive: true });
    writeFileSync(join(r, 'run/kiln/config-2/openstack/latest/meta_data.json'), o.driveMeta);
  }
  return r;
}

test('gatherSources takes the instance id from NoCloud meta-data, the config drive\'s uuid, and ds=nocloud;i= over both', async () => {
  const g = await gatherSources('local', 'quiet', [], { root: fakeRoot({ metaData: 'instance-id: iid-abc\nlocal-hostname: n1\n' }) });
  assert.equal(g.instance, { id: 'iid-abc', origin: 'CIDATA:meta-data' });
  const drive = await gatherSources('local', 'quiet', [], { root: fakeRoot({ driveMeta: '{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa"}' }) });
  assert.equal(drive.instance, { id: '83679162-1378-4288-a2d4-70e13ec132aa', origin: 'config-drive:meta_data.json' });
  const cmd = await gatherSources('local', 'quiet ds=nocloud;i=iid-cmdline', [], { root: fakeRoot({ metaData: 'instance-id: iid-abc\n' }) });
  assert.equal(cmd.instance, { id: 'iid-cmdline', origin: 'ds=nocloud;i=' });
  const none = await gatherSources('local', 'quiet', [], { root: fakeRoot({ metaData: 'local-hostname: n1\n' }) });
  assert.is(none.instance, undefined);
  const bad = await gatherSources('local', 'quiet', [], { root: fakeRoot({ metaData: 'instance-id: "a\\u0007b"\n' }) });
  assert.is(bad.instance, undefined);
  assert.ok(bad.notes.some((n) => n.includes('instance id holds a control character')), bad.notes.join('; '));
});

test('gatherSources takes EC2\'s instance-id from the metadata service', async () => {
  const seen: string[] = [];
  const fetchStub = (async (url: string | URL) => {
    const u = String(url);
    seen.push(u);
    if (u.endsWith('/api/token')) return new Response('tok');
    if (u.endsWith('/meta-data/instance-id')) return new Response('i-0abc123\n');
    if (u.endsWith('/user-data')) return new Response('#cloud-config\nruncmd: [date]\n');
    return new Response('', { status: 404 });
  }) as typeof fetch;
  const g = await gatherSources('network', 'quiet', ['ec2'], { root: fakeRoot({}), fetch: fetchStub });
  assert.equal(g.instance, { id: 'i-0abc123', origin: 'ec2:meta-data/instance-id' });
  assert.ok(seen.some((u) => u.endsWith('/latest/meta-data/instance-id')));
});

test.run();
