import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  BROKEN, SEAL, SEAL_FIELDS, canonicalJSON, decide, resealPatch, sealOf, stripServerFields, type HelmChartObject,
} from '../../init/addons/seal.ts';

// Recorded `kubectl get helmchart headlamp -n kube-system -o json` output (server fields,
// status, the CRD-defaulted failurePolicy) and what two kiln releases ship.
const fixture = (name: string): HelmChartObject =>
  JSON.parse(readFileSync(new URL(`../fixtures/addons/${name}.json`, import.meta.url), 'utf8'));
const shipped1 = fixture('shipped-0.1.0');
const shipped2 = fixture('shipped-0.2.0');
const liveSealed = fixture('live-sealed-0.1.0');
const liveUser = fixture('live-user-values');
const liveBroken = fixture('live-broken-seal');
const liveUnsealed = fixture('live-unsealed');

// A JSON merge patch (RFC 7386), as the API server applies it.
function mergePatch(target: any, patch: any): any {
  if (!patch || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k]; else out[k] = mergePatch(out[k], v);
  }
  return out;
}

test('canonical JSON: sorted keys at every level, no whitespace, nulls dropped', () => {
  const s = canonicalJSON({ b: 1, a: { d: [3, { z: 1, y: 'x' }], c: null }, e: undefined });
  assert.is(s, '{"a":{"d":[3,{"y":"x","z":1}]},"b":1}');
  // Pin the format: the seal is the sha256 of exactly this text.
  const spec = { version: '1.0.0', chartContent: 'AAAA', targetNamespace: 'kube-system' };
  const text = '{"chartContent":"AAAA","targetNamespace":"kube-system","version":"1.0.0"}';
  assert.is(sealOf(spec), createHash('sha256').update(text).digest('hex'));
  assert.is(sealOf({ ...spec, failurePolicy: 'reinstall' }), sealOf(spec), 'CRD default does not count');
  assert.is.not(sealOf({ ...spec, failurePolicy: 'abort' }), sealOf(spec));
});

test('fixtures are coherent: shipped seals match their specs, server fields are stripped', () => {
  for (const s of [shipped1, shipped2]) assert.is(s.metadata.annotations![SEAL], sealOf(s.spec));
  const stripped = stripServerFields(liveSealed);
  for (const k of ['resourceVersion', 'uid', 'creationTimestamp', 'managedFields', 'generation']) {
    assert.ok(k in liveSealed.metadata, `fixture has ${k}`);
    assert.not.ok(k in stripped.metadata, `${k} stripped`);
  }
  assert.ok('status' in liveSealed);
  assert.not.ok('status' in stripped);
  assert.is(stripped.metadata.annotations![SEAL], liveSealed.metadata.annotations![SEAL]);
  // The server-populated object still carries the seal of its spec.
  assert.is(sealOf(liveSealed.spec), liveSealed.metadata.annotations![SEAL]);
});

test('install: nothing live', () => {
  const d = decide(undefined, shipped1);
  assert.is(d.action, 'install');
  assert.match(d.message, /installing 0\.1\.0/);
});

test('unchanged: live seal equals the shipped one, despite server fields and defaults', () => {
  const d = decide(liveSealed, shipped1);
  assert.is(d.action, 'unchanged');
  assert.is(d.liveSeal, d.shippedSeal);
});

test('upgrade: live still matches its seal, kiln ships something else', () => {
  const d = decide(liveSealed, shipped2);
  assert.is(d.action, 'upgrade');
  assert.is(d.liveVersion, '0.1.0');
  assert.is(d.shippedVersion, '0.2.0');
  assert.match(d.message, /0\.1\.0 -> 0\.2\.0/);
});

test('user-owned: values changed by the user, the changed field is named', () => {
  for (const s of [shipped1, shipped2]) {
    const d = decide(liveUser, s);
    assert.is(d.action, 'user-owned');
    assert.equal(d.changedFields, ['valuesContent']);
    assert.match(d.message, /spec\.valuesContent/);
    assert.match(d.message, /kiln addons reseal headlamp/);
  }
  assert.match(decide(liveUser, shipped2).message, /not upgraded to 0\.2\.0/);
});

test('user-owned: a HelmChart kiln never sealed (e.g. from the upstream repo)', () => {
  const d = decide(liveUnsealed, shipped2);
  assert.is(d.action, 'user-owned');
  assert.match(d.message, /no kiln seal/);
});

test('user-owned: fields added or removed are reported too', () => {
  const live = JSON.parse(JSON.stringify(liveSealed));
  live.spec.timeout = '10m';
  delete live.spec.valuesContent;
  assert.equal(decide(live, shipped2).changedFields, ['timeout', 'valuesContent']);
  // Without the per-field record the decision holds, only the detail is missing.
  delete live.metadata.annotations[SEAL_FIELDS];
  const d = decide(live, shipped2);
  assert.is(d.action, 'user-owned');
  assert.is(d.changedFields, undefined);
});

test('broken-seal: the user set kiln.io/seal: broken', () => {
  assert.is(liveBroken.metadata.annotations![SEAL], BROKEN);
  const d = decide(liveBroken, shipped2);
  assert.is(d.action, 'broken-seal');
  assert.match(d.message, /seal broken by the user/);
  // Even a spec identical to what we ship stays the user's while the seal is broken.
  const same = { ...JSON.parse(JSON.stringify(liveBroken)), spec: shipped2.spec };
  assert.is(decide(same, shipped2).action, 'broken-seal');
});

test('reseal hands a customised add-on back: upgraded to what kiln ships', () => {
  for (const live of [liveUser, liveBroken, liveUnsealed]) {
    const patch = resealPatch(live);
    assert.equal(Object.keys(patch.metadata.annotations).sort(), [SEAL, SEAL_FIELDS]);
    const after = mergePatch(live, patch);
    assert.is(after.metadata.annotations[SEAL], sealOf(live.spec));
    assert.is(after.metadata.resourceVersion, live.metadata.resourceVersion, 'patch leaves other metadata alone');
    assert.is(decide(after, shipped2).action, 'upgrade');
    // And if what kiln ships happens to equal the user's spec, nothing needs doing.
    const matching = { ...shipped2, metadata: { ...shipped2.metadata, annotations: { ...shipped2.metadata.annotations, [SEAL]: sealOf(live.spec) } }, spec: live.spec };
    assert.is(decide(after, matching).action, 'unchanged');
  }
});

test('a shipped object whose seal does not match its spec is a build bug', () => {
  const bad = JSON.parse(JSON.stringify(shipped2));
  bad.spec.valuesContent = 'x: 1\n';
  assert.throws(() => decide(liveSealed, bad), /does not match its spec/);
});

test.run();
