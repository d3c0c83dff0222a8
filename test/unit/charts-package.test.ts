import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { ChartError, chartsForImage, helmChartResource, packageChart, readChartMeta } from '../../builder/charts.ts';
import { SEAL, VERSION, decide, sealOf } from '../../init/addons/seal.ts';

const CHARTS = new URL('../../charts/', import.meta.url).pathname;
const SDE = 1767225600; // 2026-01-01T00:00:00Z

const copyChart = (name: string) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'kiln-chart-')), name);
  cpSync(join(CHARTS, name), dir, { recursive: true });
  return dir;
};

test('packaging is byte-identical across runs and folder copies', async () => {
  for (const name of ['headlamp', 'kiln-system']) {
    const a = await packageChart(join(CHARTS, name), SDE);
    const b = await packageChart(join(CHARTS, name), SDE);
    assert.ok(a.equals(b), `${name}: two runs`);
    // A fresh copy has other inode times and may have other modes on directories.
    const c = await packageChart(copyChart(name), SDE);
    assert.ok(a.equals(c), `${name}: a copy`);
  }
});

test('packaging changes when a file, a new file or the epoch changes', async () => {
  const dir = copyChart('headlamp');
  const base = await packageChart(dir, SDE);
  assert.not.ok(base.equals(await packageChart(dir, SDE + 1)), 'epoch');
  const values = join(dir, 'values.yaml');
  writeFileSync(values, readFileSync(values, 'utf8') + '# one more line\n');
  const edited = await packageChart(dir, SDE);
  assert.not.ok(base.equals(edited), 'edited file');
  writeFileSync(join(dir, 'templates', 'extra.yaml'), '# nothing\n');
  assert.not.ok(edited.equals(await packageChart(dir, SDE)), 'new file');
});

test('gzip header is fixed: no name, mtime 0, Unix OS byte', async () => {
  const tgz = await packageChart(join(CHARTS, 'headlamp'), SDE);
  assert.is(tgz[0], 0x1f); assert.is(tgz[1], 0x8b); assert.is(tgz[2], 8);
  assert.is(tgz[3], 0, 'FLG: no FNAME/FEXTRA/FCOMMENT');
  assert.is(tgz.readUInt32LE(4), 0, 'MTIME');
  assert.is(tgz[9], 3, 'OS');
});

test('host tar lists the package with <chart>/ paths, fixed owner, mode and mtime', async () => {
  const dir = copyChart('kiln-system');
  writeFileSync(join(dir, 'hook.sh'), '#!/bin/sh\n');
  chmodSync(join(dir, 'hook.sh'), 0o775);
  writeFileSync(join(dir, '.DS_Store'), 'junk');
  writeFileSync(join(dir, 'values.yaml~'), 'junk');
  const tgz = await packageChart(dir, SDE);
  const file = join(mkdtempSync(join(tmpdir(), 'kiln-tgz-')), 'kiln-system-0.1.0.tgz');
  writeFileSync(file, tgz);
  const names = execFileSync('tar', ['-tzf', file], { encoding: 'utf8' }).trim().split('\n');
  assert.equal(names, [
    'kiln-system/Chart.yaml', 'kiln-system/hook.sh', 'kiln-system/templates/_helpers.tpl',
    'kiln-system/templates/agent.yaml', 'kiln-system/templates/namespace.yaml',
    'kiln-system/values.schema.json', 'kiln-system/values.yaml',
  ]);
  const long = execFileSync('tar', ['--numeric-owner', '--utc', '-tvzf', file], { encoding: 'utf8', env: { ...process.env, TZ: 'UTC' } }).trim().split('\n');
  for (const line of long) {
    assert.match(line, /^-rw(-r--r--|xr-xr-x) 0\/0 /, line);
    assert.match(line, /2026-01-01 00:00/, line);
  }
  assert.match(long.find((l) => l.endsWith('hook.sh'))!, /^-rwxr-xr-x/);
  // The tar stream itself: ustar with uname/gname root.
  const raw = gunzipSync(tgz);
  assert.is(raw.subarray(257, 262).toString(), 'ustar');
  assert.is(raw.subarray(265, 269).toString(), 'root');
});

const expectChartError = async (dir: string, key: string | undefined, re: RegExp) => {
  try {
    await packageChart(dir, SDE);
    assert.unreachable(`should reject: ${re}`);
  } catch (e) {
    if (!(e instanceof ChartError)) throw e;
    assert.is(e.key, key);
    assert.ok(e.message.includes(join(dir, 'Chart.yaml')), `names the file: ${e.message}`);
    assert.match(e.message, re);
  }
};

test('Chart.yaml errors name the file, the key and the line', async () => {
  const dir = copyChart('headlamp');
  const chart = join(dir, 'Chart.yaml');
  const good = readFileSync(chart, 'utf8');
  const set = (from: RegExp, to: string) => writeFileSync(chart, good.replace(from, to));

  set(/^apiVersion: v2$/m, 'apiVersion: v1');
  await expectChartError(dir, 'apiVersion', /Chart\.yaml:1:13: key "apiVersion" must be "v2", got "v1"/);
  set(/^apiVersion: v2\n/m, '');
  await expectChartError(dir, 'apiVersion', /key "apiVersion" is missing/);
  set(/^version: .*$/m, 'version: 1.0');
  await expectChartError(dir, 'version', /key "version" must be a non-empty string, got 1 \(quote it\)/);
  set(/^version: .*$/m, 'version: "v1.0.0"');
  await expectChartError(dir, 'version', /:\d+:\d+: key "version" "v1\.0\.0" is not a SemVer 2 version/);
  set(/^version: .*$/m, 'version: "1.0"');
  await expectChartError(dir, 'version', /"1\.0" is not a SemVer 2 version/);
  set(/^version: .*\n/m, '');
  await expectChartError(dir, 'version', /key "version" is missing/);
  set(/^name: .*$/m, 'name: Headlamp');
  await expectChartError(dir, 'name', /"Headlamp" is not a valid chart name/);
  set(/^name: .*$/m, 'name: other');
  await expectChartError(dir, 'name', /"other" but the folder is "headlamp"/);
  set(/^name: .*$/m, 'name: [headlamp');
  await expectChartError(dir, undefined, /Chart\.yaml:\d+:\d+: not valid YAML/);
  writeFileSync(chart, '- a list\n');
  await expectChartError(dir, undefined, /must be a YAML mapping/);
  writeFileSync(chart, good);
  assert.equal(await readChartMeta(dir), { name: 'headlamp', version: '0.1.0', appVersion: '0.40.1' });
});

test('chartsForImage packages every chart and seals its HelmChart', async () => {
  const charts = await chartsForImage(CHARTS, SDE);
  assert.equal(charts.map((c) => [c.name, c.version]), [['headlamp', '0.1.0'], ['kiln-system', '0.1.0']]);
  for (const c of charts) {
    const r = c.resource;
    assert.is(r.apiVersion, 'helm.cattle.io/v1');
    assert.is(r.kind, 'HelmChart');
    assert.is(r.metadata.namespace, 'kube-system');
    assert.is(r.spec.targetNamespace, 'kube-system');
    assert.ok(Buffer.from(r.spec.chartContent!, 'base64').equals(c.tgz));
    assert.is(r.metadata.annotations![SEAL], sealOf(r.spec));
    assert.is(r.metadata.annotations![VERSION], c.version);
    assert.is(decide(undefined, r).action, 'install');
  }
  const again = await chartsForImage(CHARTS, SDE);
  assert.equal(again.map((c) => c.resource), charts.map((c) => c.resource), 'resources are reproducible too');
});

test('helmChartResource: values become sorted valuesContent and change the seal', async () => {
  const tgz = await packageChart(join(CHARTS, 'headlamp'), SDE);
  const plain = helmChartResource({ name: 'headlamp', tgz, version: '0.1.0' });
  assert.is(plain.spec.valuesContent, undefined);
  const a = helmChartResource({ name: 'headlamp', tgz, version: '0.1.0', values: { ingress: { enabled: false }, admin: { create: false } } });
  const b = helmChartResource({ name: 'headlamp', tgz, version: '0.1.0', values: { admin: { create: false }, ingress: { enabled: false } } });
  assert.is(a.spec.valuesContent, 'admin:\n  create: false\ningress:\n  enabled: false\n');
  assert.equal(a, b, 'key order of values does not matter');
  assert.is.not(a.metadata.annotations![SEAL], plain.metadata.annotations![SEAL]);
  const other = helmChartResource({ name: 'x', namespace: 'kube-system', targetNamespace: 'apps', tgz, version: '0.1.0' });
  assert.is(other.spec.targetNamespace, 'apps');
});

test.run();
