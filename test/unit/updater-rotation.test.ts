// Trust root rotation, end to end: `kiln keys rotate` publishes roots/2.json signed by the old
// and new keys; a node built with the old root verifies it, stores it on its data partition,
// trusts manifests by the new key from then on (also after a reboot), and refuses a rotation
// the rules do not allow, saying why.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { publishRelease, rotateKeys } from '../../builder/release.ts';
import { canonicalize, makeTrustRoot, signBytes } from '../../channels/manifest.ts';
import { fixtureBuild, NOW, world, type World } from './updater-harness.ts';

let w: World;
test.after.each(async () => { await w?.close(); });

const stored = () => join(w.stateBase, 'trust.json');

async function publishWith(key: string, version: string) {
  const { out } = fixtureBuild(w.dir, version);
  await publishRelease({ channel: 'stable', from: out, to: w.pub, key, now: NOW });
}

test('a rotated root signed by the old and new keys is stored and trusted from then on', async () => {
  w = await world();
  const r = rotateKeys({ key: w.keyFile, out: join(w.dir, 'keys-2'), to: w.pub });
  assert.is(r.version, 2);
  assert.ok(existsSync(join(w.pub, 'roots/2.json')) && existsSync(join(w.pub, 'roots/2.json.sig')));
  // The new key builds on what the old one published (the publisher's record moved with it).
  await publishWith(r.keyFile, '2.0.0');

  const u = w.updater(); // baked-in root: version 1, the old key only
  const c = await u.check();
  assert.is(c.action, 'install', JSON.stringify(c));
  assert.ok(readFileSync(stored()).equals(readFileSync(join(w.pub, 'roots/2.json'))), 'stored byte for byte');
  assert.ok(w.logs.some((l) => new RegExp(`^update: trust root rotated to version 2 \\(keys ${r.keyid.slice(0, 16)}, threshold 1\\); stored in ${stored()}$`).test(l)), w.logs.join('\n'));
  assert.ok(u.status().includes(`trust root: version 2 (rotated, ${stored()})`), u.status().join('\n'));

  // After a reboot, with the rotation no longer published, the stored root still applies.
  rmSync(join(w.pub, 'roots'), { recursive: true });
  const again = w.updater({ bootId: 'boot-2' });
  assert.ok(again.status().includes(`trust root: version 2 (rotated, ${stored()})`));
  assert.is((await again.check()).action, 'install');
});

test('the old key alone no longer signs manifests for a node that rotated', async () => {
  w = await world();
  const r = rotateKeys({ key: w.keyFile, out: join(w.dir, 'keys-2'), to: w.pub });
  await publishWith(r.keyFile, '2.0.0');
  assert.is((await w.updater().check()).action, 'install');
  // Someone still holding the retired key re-signs the channel with it.
  const mf = join(w.pub, 'stable/manifest.json');
  const m = JSON.parse(readFileSync(mf, 'utf8'));
  m.serial += 1;
  writeFileSync(mf, canonicalize(m));
  writeFileSync(`${mf}.sig`, signBytes(readFileSync(mf), [readFileSync(w.keyFile, 'utf8')]));
  const c = await w.updater().check();
  assert.is(c.action === 'refused' && c.reason, 'unknown-key', JSON.stringify(c));
});

test('a rotation the rules do not allow is refused and reported; the node keeps its root', async () => {
  w = await world();
  await w.publish('2.0.0');
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const bytes = Buffer.from(canonicalize(makeTrustRoot([publicKey], 1, 2)));
  const roots = join(w.pub, 'roots');
  mkdirSync(roots);
  // Signed only by the new key: it cannot authorise itself.
  writeFileSync(join(roots, '2.json'), bytes);
  writeFileSync(join(roots, '2.json.sig'), signBytes(bytes, [privateKey]));
  const u = w.updater();
  const c = await u.check();
  assert.is(c.action, 'install', 'manifests by the current root still work');
  assert.not.ok(existsSync(stored()));
  assert.ok(w.logs.some((l) => /^update: trust root version 1; rotation to version 2 refused \(unknown-key: new trust root not signed by the current one/.test(l)), w.logs.join('\n'));
  assert.ok(u.status().some((l) => /^trust root: version 1; rotation to version 2 refused/.test(l)), u.status().join('\n'));

  // Signed by old and new keys, but the file at roots/2.json says version 3.
  const v3 = Buffer.from(canonicalize(makeTrustRoot([publicKey], 1, 3)));
  writeFileSync(join(roots, '2.json'), v3);
  writeFileSync(join(roots, '2.json.sig'), signBytes(v3, [readFileSync(w.keyFile, 'utf8'), privateKey]));
  await w.updater().check();
  assert.ok(w.logs.some((l) => /rotation to version 2 refused \(.*roots\/2\.json holds version 3, not 2\)/.test(l)), w.logs.join('\n'));
  assert.not.ok(existsSync(stored()));
});

test.run();
