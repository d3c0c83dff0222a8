import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acceptManifest, channelSpace, emptyState, loadState, loadTrustRoot, recordBadVersion, rootFile, saveState, saveTrustRoot, stateFile } from '../../init/update/state.ts';
import { generateKeyPairSync } from 'node:crypto';
import { canonicalize, makeTrustRoot } from '../../channels/manifest.ts';
import type { Manifest } from '../../channels/manifest.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'kiln-chstate-'));
const man = (channel: Manifest['channel'], serial: number, issued = '2030-01-01T00:00:00Z'): Manifest => ({
  schema: 'kiln-channel/1', channel, serial, issued, expires: '2031-01-01T00:00:00Z', releases: [],
});

test('channel spaces: beta alone, rc shares stable', () => {
  assert.is(channelSpace('beta'), 'beta');
  assert.is(channelSpace('rc'), 'stable');
  assert.is(channelSpace('stable'), 'stable');
  assert.throws(() => channelSpace('nightly' as never), /unknown channel/);
  assert.is(stateFile('/var/lib/kiln', 'rc'), '/var/lib/kiln/stable/channel-state.json');
  assert.is(stateFile('/var/lib/kiln', 'beta'), '/var/lib/kiln/beta/channel-state.json');
});

test('a fresh node starts at serial 0; saved state round-trips', () => {
  const dir = tmp();
  assert.equal(loadState(dir, 'stable'), emptyState('stable'));
  let s = acceptManifest(loadState(dir, 'stable'), man('stable', 4, '2030-01-02T00:00:00Z'), 'd'.repeat(64));
  s = recordBadVersion(s, '1.3.0');
  saveState(dir, s);
  const back = loadState(dir, 'stable');
  assert.equal(back, { channel: 'stable', lastSerial: 4, lastIssued: '2030-01-02T00:00:00Z', lastDigest: 'd'.repeat(64), badVersions: ['1.3.0'] });
  assert.is(statSync(stateFile(dir, 'stable')).mode & 0o777, 0o600);
  assert.equal(readdirSync(join(dir, 'stable')), ['channel-state.json'], 'no temp file left behind');
});

test('beta state is separate; leaving beta returns to stable\'s state', () => {
  const dir = tmp();
  saveState(dir, recordBadVersion(acceptManifest(emptyState('stable'), man('stable', 3), 'a'.repeat(64)), '1.1.0'));
  saveState(dir, recordBadVersion(acceptManifest(emptyState('beta'), man('beta', 40), 'b'.repeat(64)), '2.0.0-beta.1'));
  assert.is(loadState(dir, 'beta').lastSerial, 40);
  assert.equal(loadState(dir, 'beta').badVersions, ['2.0.0-beta.1']);
  const st = loadState(dir, 'stable');
  assert.is(st.lastSerial, 3);
  assert.equal(st.badVersions, ['1.1.0']);
});

test('rc shares stable\'s space but keeps its own serial, so switching back cannot replay', () => {
  const dir = tmp();
  saveState(dir, acceptManifest(emptyState('rc'), man('rc', 12), 'c'.repeat(64)));
  saveState(dir, acceptManifest(loadState(dir, 'stable'), man('stable', 5), 'e'.repeat(64)));
  assert.is(loadState(dir, 'stable').lastSerial, 5);
  assert.is(loadState(dir, 'rc').lastSerial, 12);
  saveState(dir, recordBadVersion(loadState(dir, 'rc'), '1.4.0-rc.1'));
  assert.equal(loadState(dir, 'stable').badVersions, ['1.4.0-rc.1'], 'bad versions are shared within the space');
});

test('acceptManifest only moves floors forward', () => {
  const s = acceptManifest(emptyState('beta'), man('beta', 9, '2030-05-01T00:00:00Z'), 'f'.repeat(64));
  const older = acceptManifest(s, man('beta', 9, '2030-04-01T00:00:00Z'), 'f'.repeat(64));
  assert.is(older.lastIssued, '2030-05-01T00:00:00Z');
  assert.throws(() => acceptManifest(s, man('rc', 10), 'f'.repeat(64)), /rc/);
  // verifyChannel's raiseFloor: false (seen with an untrusted clock, dated far past the build)
  // takes the serial and digest but leaves the clock floor where it was.
  const later = acceptManifest(s, man('beta', 10, '2031-01-01T00:00:00Z'), 'e'.repeat(64), { raiseFloor: false });
  assert.equal([later.lastSerial, later.lastDigest, later.lastIssued], [10, 'e'.repeat(64), '2030-05-01T00:00:00Z']);
});

test('trust root: the stored rotated one applies only above the baked-in version; a damaged one is reported', () => {
  const dir = tmp();
  const key = () => generateKeyPairSync('ed25519').publicKey;
  const baked = makeTrustRoot([key()], 1, 1);
  assert.equal(loadTrustRoot(dir, baked), { root: baked, rotated: false });
  const v2 = makeTrustRoot([key()], 1, 2);
  saveTrustRoot(dir, Buffer.from(canonicalize(v2)), Buffer.from('{"signatures":[]}'));
  assert.equal(loadTrustRoot(dir, baked), { root: v2, rotated: true });
  assert.is(statSync(rootFile(dir)).mode & 0o777, 0o600);
  // A newer image that bakes in version 3 starts from that.
  const v3 = makeTrustRoot([key()], 1, 3);
  assert.equal(loadTrustRoot(dir, v3), { root: v3, rotated: false });
  writeFileSync(rootFile(dir), '{"schema":"kiln-root/1"');
  const bad = loadTrustRoot(dir, baked);
  assert.is(bad.root, baked);
  assert.match(bad.problem ?? '', /rotated trust root .*trust\.json is unusable/);
});

test('a damaged state file is reported, not silently reset', () => {
  const dir = tmp();
  saveState(dir, emptyState('stable'));
  writeFileSync(stateFile(dir, 'stable'), '{"half');
  assert.throws(() => loadState(dir, 'stable'), /not JSON/);
  saveState(dir, emptyState('stable'));
  assert.ok(JSON.parse(readFileSync(stateFile(dir, 'stable'), 'utf8')).serials);
});

test.run();
