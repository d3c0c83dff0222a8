// The publisher does not trust the tree it publishes into: `kiln release` and `promote` build
// on the published manifest only if it is what this publisher last signed there, or verifies
// as a node would. Otherwise a write to the served tree would be signed with the offline key.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeys, promoteRelease, publishRelease, publisherStateFile, rotateKeys } from '../../builder/release.ts';
import { canonicalize, keyIdOf, parseTrustRoot, verifyChannel, verifyRootRotation, type Manifest } from '../../channels/manifest.ts';
import { fixtureBuild, NOW, sha } from './updater-harness.ts';

function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-publisher-'));
  const keys = generateKeys(join(dir, 'keys'));
  const pub = join(dir, 'pub');
  const release = (version: string, o: { channel?: 'beta' | 'stable'; key?: string; flavour?: 'uefi' | 'uboot'; trust?: string } = {}) =>
    publishRelease({ channel: o.channel ?? 'stable', from: fixtureBuild(dir, version, 2000, o.flavour).out, to: pub, key: o.key ?? keys.keyFile, now: NOW, trust: o.trust });
  return { dir, keys, pub, release };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try { await p; } catch (e) { return (e as Error).message; }
  assert.unreachable('expected a refusal');
  return '';
}

/** What someone with write access to the served tree does: add an arm64_rpi target to 1.0.0. */
function addTarget(mf: string) {
  const m: Manifest = JSON.parse(readFileSync(mf, 'utf8'));
  const a = (name: string) => ({ url: `1.0.0/arm64_rpi/${name}`, size: 5, sha256: sha(Buffer.from(name)) });
  m.releases.find((r) => r.version === '1.0.0')!.artifacts.arm64_rpi = { root: a('root'), kernel: a('kernel'), initrd: a('initrd') };
  writeFileSync(mf, canonicalize(m));
}

test('a target added to a published release in the tree is refused, not re-signed', async () => {
  const { pub, release, keys } = setup();
  await release('1.0.0');
  const mf = join(pub, 'stable/manifest.json');
  addTarget(mf);
  const tampered = readFileSync(mf);
  const msg = await refusal(release('1.1.0'));
  assert.match(msg, /stable\/manifest\.json does not verify as a node would \(bad-signature: .*\); refusing to sign on top of it: it was changed after it was signed: restore/);
  assert.ok(readFileSync(mf).equals(tampered), 'nothing was written');
  const node = verifyChannel({ manifestBytes: readFileSync(mf), sigBytes: readFileSync(`${mf}.sig`), trust: parseTrustRoot(readFileSync(keys.trustFile)), channel: 'stable', state: { lastSerial: 0 }, now: NOW });
  assert.ok(!node.ok && node.reason === 'bad-signature', 'still unsigned for nodes');

  // Without the publisher's record (another workstation, a lost file) the signature still decides.
  rmSync(publisherStateFile(keys.keyFile));
  assert.match(await refusal(release('1.1.0')), /bad-signature/);
});

test('promote checks the target channel too', async () => {
  const { pub, release, keys } = setup();
  await release('1.0.0', { channel: 'beta' });
  await promoteRelease({ from: 'beta', to: 'stable', dir: pub, key: keys.keyFile, now: NOW });
  addTarget(join(pub, 'stable/manifest.json'));
  await release('1.1.0', { channel: 'beta' });
  const msg = await refusal(promoteRelease({ from: 'beta', to: 'stable', dir: pub, key: keys.keyFile, now: NOW }));
  assert.match(msg, /stable\/manifest\.json does not verify as a node would \(bad-signature/);
  assert.not.ok(existsSync(join(pub, 'stable/1.1.0')), 'nothing was copied');
});

test('an older signed manifest put back into the tree is refused by the publisher\'s record', async () => {
  const { dir, pub, release } = setup();
  await release('1.0.0');
  const old = join(dir, 'old');
  mkdirSync(old);
  for (const f of ['manifest.json', 'manifest.json.sig']) copyFileSync(join(pub, 'stable', f), join(old, f));
  await release('1.1.0'); // serial 2
  for (const f of ['manifest.json', 'manifest.json.sig']) copyFileSync(join(old, f), join(pub, 'stable', f));
  const msg = await refusal(release('1.2.0'));
  assert.match(msg, /\(replay: serial 1 is older than 2.*\).*this publisher last signed serial 2 there \(.*kiln-release-state\.json\): an older copy was put back/);
});

test('a newer manifest signed elsewhere with a trusted key is built upon; a missing one is refused', async () => {
  const { dir, pub, release, keys } = setup();
  await release('1.0.0');
  // A second workstation with the same key (and its own record) publishes serial 2.
  const other = join(dir, 'other-keys');
  cpSync(join(dir, 'keys'), other, { recursive: true });
  rmSync(publisherStateFile(join(other, 'kiln-release.key')), { force: true });
  await release('1.1.0', { key: join(other, 'kiln-release.key') });
  const r = await release('1.2.0');
  assert.is(r.manifest.serial, 3);
  assert.equal(r.manifest.releases.map((x) => x.version), ['1.2.0', '1.1.0', '1.0.0']);
  const st = JSON.parse(readFileSync(publisherStateFile(keys.keyFile), 'utf8'));
  assert.is(Object.values(st.trees as Record<string, { stable: { serial: number } }>)[0]!.stable.serial, 3);

  rmSync(join(pub, 'stable/manifest.json'));
  assert.match(await refusal(release('1.3.0')), /manifest\.json is missing, but serial 3 was signed there .*--serial 4/);
});

test('a manifest signed by a key outside the trust root is refused with the fix', async () => {
  const { dir, pub, release } = setup();
  const stranger = generateKeys(join(dir, 'stranger'));
  await release('1.0.0', { key: stranger.keyFile });
  const msg = await refusal(release('1.1.0'));
  assert.match(msg, /unknown-key: .*pass --trust with the trust root it was signed under/);
  // Told which root to use, it goes ahead.
  const r = await release('1.1.0', { trust: stranger.trustFile });
  assert.is(r.manifest.serial, 2);
});

test('keys rotate: a new key and root one version up, signed by both keys; the old root must name the old key', async () => {
  const { dir, keys, release, pub } = setup();
  await release('1.0.0');
  const r = rotateKeys({ key: keys.keyFile, out: join(dir, 'k2'), to: pub });
  const old = parseTrustRoot(readFileSync(keys.trustFile));
  const v = verifyRootRotation(old, readFileSync(r.trustFile), readFileSync(`${r.trustFile}.sig`));
  assert.ok(v.ok && v.root.version === 2 && v.root.keys[0]!.keyid === r.keyid);
  assert.ok(readFileSync(join(pub, 'roots/2.json')).equals(readFileSync(r.trustFile)));
  assert.ok(existsSync(publisherStateFile(r.keyFile)), 'the publisher record moved along');
  assert.throws(() => rotateKeys({ key: keys.keyFile, out: join(dir, 'k2') }), /already exists; refusing to overwrite/);
  assert.throws(() => rotateKeys({ key: keys.keyFile, out: join(dir, 'k3'), to: pub }), /roots\/2\.json already exists/);
  assert.not.ok(existsSync(join(dir, 'k3')), 'no key made for a rotation that cannot be published');
  const stranger = generateKeys(join(dir, 'stranger'));
  assert.throws(() => rotateKeys({ key: stranger.keyFile, trust: keys.trustFile, out: join(dir, 'k4') }), /is not one of the keys of/);
  assert.is(keyIdOf(readFileSync(r.keyFile, 'utf8')), r.keyid);
});

test.run();
