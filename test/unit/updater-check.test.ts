import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { NOW, world, type World } from './updater-harness.ts';
import { signBytes } from '../../channels/manifest.ts';
import { readSystemFacts } from '../../init/update/updater.ts';

let w: World;
test.after.each(async () => { await w?.close(); });

const mf = () => join(w.pub, 'stable/manifest.json');

test('bad signature: refused with the reason, nothing persisted, nothing written', async () => {
  w = await world();
  await w.publish('2.0.0');
  const bytes = readFileSync(mf());
  // Same content, one byte of whitespace more: the signature no longer covers these bytes.
  writeFileSync(mf(), Buffer.concat([bytes, Buffer.from(' ')]));
  const u = w.updater();
  const c = await u.check();
  assert.is(c.action, 'refused');
  assert.is(c.action === 'refused' && c.reason, 'bad-signature');
  assert.not.ok(existsSync(w.stateFile()), 'no state saved from a refused manifest');
  const r = await u.apply();
  assert.is(!r.ok && r.stage, 'check');
  assert.equal(w.entries(), ['kiln-a.efi']);
  assert.is(w.reboots, 0);
  assert.ok(u.status().some((l) => /last check: .*refused \(bad-signature\)/.test(l)), u.status().join('\n'));
});

test('signed by a key the image does not trust: unknown-key', async () => {
  w = await world();
  await w.publish('2.0.0');
  const { privateKey } = generateKeyPairSync('ed25519');
  writeFileSync(`${mf()}.sig`, signBytes(readFileSync(mf()), [privateKey]));
  const c = await w.updater().check();
  assert.is(c.action === 'refused' && c.reason, 'unknown-key');
});

test('replayed manifest: an older serial after a newer one was seen is refused, state keeps the newer serial', async () => {
  w = await world();
  // serial 1 is 1.0.0 only; keep a copy of it to replay later.
  const old = join(w.dir, 'old');
  mkdirSync(old);
  copyFileSync(mf(), join(old, 'manifest.json'));
  copyFileSync(`${mf()}.sig`, join(old, 'manifest.json.sig'));
  await w.publish('2.0.0'); // serial 2
  const u = w.updater();
  assert.is((await u.check()).action, 'install');
  const state = JSON.parse(readFileSync(w.stateFile(), 'utf8'));
  assert.is(state.serials.stable.serial, 2);
  const before = readFileSync(w.stateFile());

  copyFileSync(join(old, 'manifest.json'), mf());
  copyFileSync(join(old, 'manifest.json.sig'), `${mf()}.sig`);
  const c = await u.check();
  assert.is(c.action === 'refused' && c.reason, 'replay');
  assert.match(c.message, /serial 1 is older than 2/);
  assert.ok(readFileSync(w.stateFile()).equals(before), 'state untouched by the replay');
});

test('expired manifest: refused even when the clock is behind, because of the build-time floor', async () => {
  w = await world();
  await w.publish('2.0.0', { expiresDays: 1 });
  const late = await w.updater({ now: () => new Date(NOW.getTime() + 2 * 86400_000) }).check();
  assert.is(late.action === 'refused' && late.reason, 'expired');
  // A board without RTC thinks it is 1970, but its image was built after the expiry.
  const rtcless = await w.updater({ now: () => new Date(0), buildTime: new Date(NOW.getTime() + 3 * 86400_000) }).check();
  assert.is(rtcless.action === 'refused' && rtcless.reason, 'expired');
  assert.not.ok(existsSync(w.stateFile()));
});

test('wrong channel: a beta manifest served at the stable URL is refused', async () => {
  w = await world();
  await w.publish('2.0.0');
  const c = await w.updater({ channel: 'beta' }).check(); // nothing published on beta: 404
  assert.is(c.action === 'refused' && c.reason, 'fetch');
  assert.match(c.message, /HTTP 404/);
  // Serve the stable manifest at the beta path.
  mkdirSync(join(w.pub, 'beta'), { recursive: true });
  copyFileSync(mf(), join(w.pub, 'beta/manifest.json'));
  copyFileSync(`${mf()}.sig`, join(w.pub, 'beta/manifest.json.sig'));
  const b = await w.updater({ channel: 'beta' }).check();
  assert.is(b.action === 'refused' && b.reason, 'wrong-channel');
});

test('rollout: a node outside the throttle waits; a canary (wariness 0) goes', async () => {
  w = await world();
  await w.publish('2.0.0', { rolloutHours: 48 });
  const late = await w.updater({ wariness: 0.99 }).check();
  assert.is(late.action === 'none' && late.reason, 'throttled');
  const canary = await w.updater({ wariness: 0 }).check();
  assert.is(canary.action, 'install');
});

test('no trust root: updates disabled, with a status line that says so', async () => {
  w = await world();
  await w.publish('2.0.0');
  const u = w.updater({ trust: null, trustProblem: 'this image has no trust root (/usr/lib/kiln/trust.json)' });
  const c = await u.check();
  assert.is(c.action, 'disabled');
  assert.is(w.server.requests.filter((r) => r.url.endsWith('manifest.json')).length, 0, 'does not even fetch');
  assert.ok(u.status().some((l) => /^updates disabled: this image has no trust root/.test(l)), u.status().join('\n'));
  await u.pollOnce();
  assert.is(w.reboots, 0);
});

test('readSystemFacts reads version, build time, machine id and trust from an image root', async () => {
  w = await world();
  const root = join(w.dir, 'img');
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'usr/lib/kiln'), { recursive: true });
  writeFileSync(join(root, 'etc/os-release'), 'NAME=kiln\nVERSION_ID="1.2.3"\nKILN_ARCH=x86_64\n');
  writeFileSync(join(root, 'etc/machine-id'), 'ab'.repeat(16) + '\n');
  writeFileSync(join(root, 'usr/lib/kiln/build.json'), JSON.stringify({ built: '2030-01-01T00:00:00Z' }));
  const none = readSystemFacts(root);
  assert.is(none.trust, null);
  assert.match(none.trustProblem ?? '', /no trust root/);
  copyFileSync(join(w.dir, 'keys/trust.json'), join(root, 'usr/lib/kiln/trust.json'));
  const f = readSystemFacts(root);
  assert.equal({ v: f.currentVersion, a: f.arch, b: f.buildTime, m: f.machineId }, { v: '1.2.3', a: 'x86_64', b: NOW.getTime(), m: 'ab'.repeat(16) });
  assert.is(f.trust?.keys.length, 1);
});

test.run();
