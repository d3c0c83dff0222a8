import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeys, promoteRelease, publishRelease, verifyPublished } from '../../builder/release.ts';
import { parseTrustRoot, pickRelease, validateManifest, verifyChannel, canonicalize, type Manifest } from '../../channels/manifest.ts';
import { Ajv2020 } from 'ajv/dist/2020.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'kiln-chrel-'));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const NOW = new Date('2030-01-01T00:00:00Z');

/** Fake build outputs (test fixtures, not images): out/build.json and its files. */
function fixtureBuild(dir: string, version: string) {
  const out = join(dir, `out-${version}`);
  mkdirSync(out, { recursive: true });
  const files: Record<string, { arch: string; kind: string; data: Buffer }> = {
    [`fixture-kiln-${version}-x86_64.root.squashfs`]: { arch: 'x86_64', kind: 'root', data: Buffer.from(`fixture root x86_64 ${version}\n`.repeat(500)) },
    [`fixture-kiln-${version}-x86_64.efi`]: { arch: 'x86_64', kind: 'uki', data: Buffer.from(`fixture uki x86_64 ${version}\n`) },
    [`fixture-kiln-${version}-arm64.root.squashfs`]: { arch: 'arm64', kind: 'root', data: Buffer.from(`fixture root arm64 ${version}\n`.repeat(300)) },
    [`fixture-kiln-${version}-x86_64.raw`]: { arch: 'x86_64', kind: 'raw', data: Buffer.from('fixture disk image, not published\n') },
  };
  const outputs = Object.entries(files).map(([file, f]) => {
    writeFileSync(join(out, file), f.data);
    return { file, arch: f.arch, kind: f.kind, size: f.data.length, sha256: sha(f.data) };
  });
  writeFileSync(join(out, 'build.json'), JSON.stringify({ version, outputs }, null, 2));
  return out;
}

function setup() {
  const dir = tmp();
  const keys = generateKeys(join(dir, 'keys'));
  return { dir, keys, pub: join(dir, 'pub') };
}

test('release: the Pi build of a version adds its arm64_rpi target to the published release; a published target cannot change', async () => {
  const { dir, keys, pub } = setup();
  await publishRelease({ channel: 'stable', from: fixtureBuild(dir, '1.0.0'), to: pub, key: keys.keyFile, now: NOW });
  const pi = join(dir, 'out-pi');
  mkdirSync(pi);
  const piFiles = { root: Buffer.from('fixture pi root\n'.repeat(100)), kernel: Buffer.from('fixture pi kernel\n'), initrd: Buffer.from('fixture pi initrd\n') };
  const writePi = () => writeFileSync(join(pi, 'build.json'), JSON.stringify({ version: '1.0.0', outputs: Object.entries(piFiles).map(([kind, data]) => {
    writeFileSync(join(pi, `pi.${kind}`), data);
    return { file: `pi.${kind}`, arch: 'arm64', target: 'arm64_rpi', kind, size: data.length, sha256: sha(data) };
  }) }));
  writePi();
  const r = await publishRelease({ channel: 'stable', from: pi, to: pub, key: keys.keyFile, now: NOW });
  const rel = r.manifest.releases.find((x) => x.version === '1.0.0')!;
  assert.equal(Object.keys(rel.artifacts).sort(), ['arm64', 'arm64_chunks', 'arm64_rpi', 'arm64_rpi_chunks', 'x86_64', 'x86_64_chunks']);
  assert.equal(Object.keys(rel.artifacts.arm64_rpi!).sort(), ['initrd', 'kernel', 'root']);
  assert.is(rel.artifacts.arm64_rpi!.kernel!.url, '1.0.0/arm64_rpi/pi.kernel');
  assert.ok(existsSync(join(pub, 'stable/1.0.0/arm64_rpi/pi.kernel')));
  piFiles.kernel = Buffer.from('another fixture pi kernel\n');
  writePi();
  let err: Error | undefined;
  try { await publishRelease({ channel: 'stable', from: pi, to: pub, key: keys.keyFile, now: NOW }); } catch (e) { err = e as Error; }
  assert.match(err?.message ?? 'no error', /(already on stable with other arm64_rpi artifacts|already exists with other content); a published version cannot change/, err?.message);
});

test('keys generate: private key 0600, trust root, no overwriting', () => {
  const { dir, keys } = setup();
  assert.is(statSync(keys.keyFile).mode & 0o777, 0o600);
  const root = parseTrustRoot(readFileSync(keys.trustFile));
  assert.is(root.keys[0]!.keyid, keys.keyid);
  assert.is(root.threshold, 1);
  const before = readFileSync(keys.keyFile);
  assert.throws(() => generateKeys(join(dir, 'keys')), /already exists/);
  assert.ok(readFileSync(keys.keyFile).equals(before));
});

test('release -> verify round trip; flipping one artifact byte fails verification', async () => {
  const { dir, keys, pub } = setup();
  const out = fixtureBuild(dir, '1.0.0');
  const r = await publishRelease({ channel: 'beta', from: out, to: pub, key: keys.keyFile, now: NOW, rolloutHours: 24 });
  assert.is(r.manifest.serial, 1);
  const rel = r.manifest.releases[0]!;
  // Each root's chunk index is listed as a target of its own (<target>_chunks, only `root`).
  assert.equal(Object.keys(rel.artifacts).sort(), ['arm64', 'arm64_chunks', 'x86_64', 'x86_64_chunks']);
  assert.ok(rel.artifacts.x86_64!.uki && !rel.artifacts.arm64!.uki);
  assert.equal(Object.keys(rel.artifacts.x86_64_chunks!), ['root']);
  assert.is(rel.artifacts.x86_64_chunks!.root.url, '1.0.0/x86_64/fixture-kiln-1.0.0-x86_64.root.squashfs.chunks');
  const ix = readFileSync(join(pub, 'beta/1.0.0/x86_64/fixture-kiln-1.0.0-x86_64.root.squashfs.chunks'));
  assert.is(rel.artifacts.x86_64_chunks!.root.sha256, sha(ix));
  assert.is(JSON.parse(ix.toString()).sha256, rel.artifacts.x86_64!.root.sha256);
  assert.equal(rel.rollout, { start_value: 0, start_epoch: NOW.getTime() / 1000, duration_s: 86400 });
  assert.ok(existsSync(join(pub, 'beta/1.0.0/x86_64/fixture-kiln-1.0.0-x86_64.root.squashfs')));
  assert.not.ok(existsSync(join(pub, 'beta/1.0.0/x86_64/fixture-kiln-1.0.0-x86_64.raw')), 'disk images are not updates');

  const ok = await verifyPublished({ dir: pub, channel: 'beta', trust: keys.trustFile, now: NOW });
  assert.ok(ok.ok, ok.problems.join('\n'));
  assert.is(ok.checked, 5);

  // The node-side check on the very same bytes agrees.
  const node = verifyChannel({
    manifestBytes: readFileSync(join(pub, 'beta/manifest.json')), sigBytes: readFileSync(join(pub, 'beta/manifest.json.sig')),
    trust: parseTrustRoot(readFileSync(keys.trustFile)), channel: 'beta', state: { lastSerial: 0 }, now: NOW,
  });
  assert.ok(node.ok);

  const victim = join(pub, 'beta/1.0.0/arm64/fixture-kiln-1.0.0-arm64.root.squashfs');
  const bytes = readFileSync(victim);
  bytes[100] ^= 0x01;
  writeFileSync(victim, bytes);
  const bad = await verifyPublished({ dir: pub, channel: 'beta', trust: keys.trustFile, now: NOW });
  assert.is(bad.ok, false);
  assert.is(bad.problems.length, 1);
  assert.match(bad.problems[0]!, /1\.0\.0 arm64 root.*sha256/);
});

test('verify reports a bad signature, an expired manifest and a wrong trust root', async () => {
  const { dir, keys, pub } = setup();
  await publishRelease({ channel: 'stable', from: fixtureBuild(dir, '1.0.0'), to: pub, key: keys.keyFile, now: NOW, expiresDays: 10 });
  const late = await verifyPublished({ dir: pub, channel: 'stable', trust: keys.trustFile, now: new Date('2030-01-12T00:00:00Z') });
  assert.ok(!late.ok && /expired/.test(late.problems[0]!));
  const soon = await verifyPublished({ dir: pub, channel: 'stable', trust: keys.trustFile, now: new Date('2030-01-05T00:00:00Z') });
  assert.ok(soon.ok && soon.warnings.some((w) => /expires/.test(w)));

  const other = generateKeys(join(dir, 'other-keys'));
  const stranger = await verifyPublished({ dir: pub, channel: 'stable', trust: other.trustFile, now: NOW });
  assert.ok(!stranger.ok && /unknown-key/.test(stranger.problems[0]!));

  const mf = join(pub, 'stable/manifest.json');
  writeFileSync(mf, readFileSync(mf, 'utf8').replace('"serial":1', '"serial":2'));
  const tampered = await verifyPublished({ dir: pub, channel: 'stable', trust: keys.trustFile, now: NOW });
  assert.ok(!tampered.ok && /bad-signature/.test(tampered.problems[0]!));
});

test('serials grow by one by default; explicit serials must grow; old releases stay listed', async () => {
  const { dir, keys, pub } = setup();
  await publishRelease({ channel: 'beta', from: fixtureBuild(dir, '1.0.0'), to: pub, key: keys.keyFile, now: NOW });
  const r2 = await publishRelease({ channel: 'beta', from: fixtureBuild(dir, '1.1.0'), to: pub, key: keys.keyFile, now: NOW, minFrom: '1.0.0' });
  assert.is(r2.manifest.serial, 2);
  assert.equal(r2.manifest.releases.map((r) => r.version), ['1.1.0', '1.0.0']);
  assert.is(r2.manifest.releases[0]!.min_from, '1.0.0');
  // Same version, same bytes: a re-sign (e.g. to extend expiry) with a new serial.
  const r3 = await publishRelease({ channel: 'beta', from: fixtureBuild(dir, '1.1.0'), to: pub, key: keys.keyFile, now: NOW, serial: 10 });
  assert.is(r3.manifest.serial, 10);
  try {
    await publishRelease({ channel: 'beta', from: fixtureBuild(dir, '1.2.0'), to: pub, key: keys.keyFile, now: NOW, serial: 10 });
    assert.unreachable('serial 10 again');
  } catch (e) { assert.match((e as Error).message, /not above the published 10/); }
  assert.ok((await verifyPublished({ dir: pub, channel: 'beta', trust: keys.trustFile, now: NOW, lastSerial: 9 })).ok);
  const replay = await verifyPublished({ dir: pub, channel: 'beta', trust: keys.trustFile, now: NOW, lastSerial: 11 });
  assert.ok(!replay.ok && /replay/.test(replay.problems[0]!));
});

test('a version cannot change its bytes, and downgrades need --downgrade', async () => {
  const { dir, keys, pub } = setup();
  await publishRelease({ channel: 'beta', from: fixtureBuild(dir, '1.1.0'), to: pub, key: keys.keyFile, now: NOW });
  const changed = fixtureBuild(join(dir, 'again'), '1.1.0');
  writeFileSync(join(changed, 'fixture-kiln-1.1.0-arm64.root.squashfs'), 'different fixture bytes');
  const b = JSON.parse(readFileSync(join(changed, 'build.json'), 'utf8'));
  const o = b.outputs.find((x: any) => x.arch === 'arm64');
  o.size = 23; o.sha256 = sha(Buffer.from('different fixture bytes'));
  writeFileSync(join(changed, 'build.json'), JSON.stringify(b));
  try { await publishRelease({ channel: 'beta', from: changed, to: pub, key: keys.keyFile, now: NOW }); assert.unreachable(); } catch (e) {
    assert.match((e as Error).message, /cannot change/);
  }
  try { await publishRelease({ channel: 'beta', from: fixtureBuild(dir, '1.0.0'), to: pub, key: keys.keyFile, now: NOW }); assert.unreachable(); } catch (e) {
    assert.match((e as Error).message, /--downgrade/);
  }
  const rb = await publishRelease({ channel: 'beta', from: fixtureBuild(dir, '1.0.0'), to: pub, key: keys.keyFile, now: NOW, downgrade: true });
  assert.equal(rb.dropped, ['1.1.0']);
  assert.equal(rb.manifest.releases.map((r) => [r.version, r.downgrade]), [['1.0.0', true]]);
});

test('a stale build.json (file changed after the build) is refused', async () => {
  const { dir, keys, pub } = setup();
  const out = fixtureBuild(dir, '1.0.0');
  writeFileSync(join(out, 'fixture-kiln-1.0.0-x86_64.efi'), 'rebuilt fixture uki with other bytes\n');
  try { await publishRelease({ channel: 'beta', from: out, to: pub, key: keys.keyFile, now: NOW }); assert.unreachable(); } catch (e) {
    assert.match((e as Error).message, /stale build\.json/);
  }
});

test('promote re-signs the same release bytes for another channel', async () => {
  const { dir, keys, pub } = setup();
  const beta = await publishRelease({ channel: 'beta', from: fixtureBuild(dir, '1.0.0'), to: pub, key: keys.keyFile, now: NOW, rolloutHours: 2 });
  const later = new Date(NOW.getTime() + 86400_000);
  const rc = await promoteRelease({ from: 'beta', to: 'rc', dir: pub, key: keys.keyFile, now: later });
  assert.is(rc.manifest.channel, 'rc');
  assert.is(rc.manifest.serial, 1);
  assert.is(canonicalize(rc.manifest.releases[0]), canonicalize(beta.manifest.releases[0]));
  const v = await verifyPublished({ dir: pub, channel: 'rc', trust: keys.trustFile, now: later });
  assert.ok(v.ok, v.problems.join('\n'));
  assert.is(v.checked, 5);
  // The beta manifest still only verifies as beta.
  const swapped = verifyChannel({
    manifestBytes: readFileSync(join(pub, 'beta/manifest.json')), sigBytes: readFileSync(join(pub, 'beta/manifest.json.sig')),
    trust: parseTrustRoot(readFileSync(keys.trustFile)), channel: 'rc', state: { lastSerial: 0 }, now: later,
  });
  assert.ok(!swapped.ok && swapped.reason === 'wrong-channel');
  // A fresh rollout on stable changes only the rollout.
  const st = await promoteRelease({ from: 'rc', to: 'stable', dir: pub, key: keys.keyFile, now: later, rolloutHours: 48 });
  const m: Manifest = st.manifest;
  assert.equal(m.releases[0]!.rollout, { start_value: 0, start_epoch: later.getTime() / 1000, duration_s: 48 * 3600 });
  assert.is(canonicalize(m.releases[0]!.artifacts), canonicalize(beta.manifest.releases[0]!.artifacts));
});

test('promote refuses a source manifest that does not verify', async () => {
  const { dir, keys, pub } = setup();
  await publishRelease({ channel: 'beta', from: fixtureBuild(dir, '1.0.0'), to: pub, key: keys.keyFile, now: NOW });
  const mf = join(pub, 'beta/manifest.json');
  writeFileSync(mf, readFileSync(mf, 'utf8').replace('"serial":1', '"serial":5'));
  try { await promoteRelease({ from: 'beta', to: 'rc', dir: pub, key: keys.keyFile, now: NOW }); assert.unreachable(); } catch (e) {
    assert.match((e as Error).message, /does not match the signed bytes/);
  }
  assert.not.ok(existsSync(join(pub, 'rc/manifest.json')));
});

test('chunk indexes: a node that predates them accepts the manifest and never looks at them; new nodes check their shape', async () => {
  const { dir, keys, pub } = setup();
  const r = await publishRelease({ channel: 'stable', from: fixtureBuild(dir, '1.0.0'), to: pub, key: keys.keyFile, now: NOW });
  const m: any = JSON.parse(readFileSync(join(pub, 'stable/manifest.json'), 'utf8'));
  // The schema as it was before chunk indexes: the same file without their two additions.
  const old = JSON.parse(readFileSync(new URL('../../channels/manifest.schema.json', import.meta.url), 'utf8'));
  delete old.$defs.chunkIndex;
  delete old.$defs.release.properties.artifacts.patternProperties;
  const validateOld = new Ajv2020({ allErrors: true, strict: true }).compile(old);
  assert.ok(validateOld(m), JSON.stringify(validateOld.errors));
  const pick = pickRelease(r.manifest, { current: '0.9.0', arch: 'x86_64', wariness: 0, now: NOW });
  assert.ok(pick.ok && !('x86_64_chunks' in pick.artifacts) && pick.artifacts.root.url.endsWith('.root.squashfs'));
  assert.is(pickRelease(r.manifest, { current: '0.9.0', arch: 'x86_64_chunks', wariness: 0, now: NOW }).ok, false);
  // New nodes: an index target holds only root, and only next to the target it indexes.
  const withUki: any = structuredClone(m); withUki.releases[0].artifacts.x86_64_chunks.uki = withUki.releases[0].artifacts.x86_64.uki;
  assert.match(JSON.stringify(validateManifest(withUki)), /x86_64_chunks must NOT have additional properties \(uki\)/);
  const orphan: any = structuredClone(m); delete orphan.releases[0].artifacts.x86_64;
  assert.match(JSON.stringify(validateManifest(orphan)), /x86_64_chunks is a chunk index for target x86_64, which this release does not list/);
});

test('a build target ending in _chunks is refused: the suffix names chunk indexes', async () => {
  const { dir, keys, pub } = setup();
  const out = fixtureBuild(dir, '1.0.0');
  const b = JSON.parse(readFileSync(join(out, 'build.json'), 'utf8'));
  b.outputs[0].target = 'x86_64_chunks';
  writeFileSync(join(out, 'build.json'), JSON.stringify(b));
  let err: Error | undefined;
  try { await publishRelease({ channel: 'stable', from: out, to: pub, key: keys.keyFile, now: NOW }); } catch (e) { err = e as Error; }
  assert.match(err?.message ?? 'no error', /target 'x86_64_chunks' is not a valid name .*not ending in _chunks/);
});

test.run();
