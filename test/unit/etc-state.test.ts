// The /etc state: what persists of /etc, how it comes back each boot, and how a node from the
// old layout (all of /etc in an overlay upper on /data) hands it over once. A temp dir stands
// for /data and another for this boot's /etc.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { migrateOldEtc, oldOverlay, PERSISTENT_ETC, restoreEtcState, SEED_MARK, stateDir } from '../../init/etcstate.ts';
import { ensureMachineId } from '../../init/boot.ts';

const ID = '0123456789abcdef0123456789abcdef';

function dirs() {
  const t = mkdtempSync(join(tmpdir(), 'kiln-etc-'));
  const data = join(t, 'data');
  const etc = join(t, 'etc');
  mkdirSync(data); mkdirSync(etc);
  return { data, etc };
}
function put(file: string, text: string, mode = 0o644) {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text, { mode });
}
const text = (f: string) => readFileSync(f, 'utf8');

/** An /etc upper as the old layout left it: the node's identity and a few hand edits. */
function oldUpper(data: string) {
  const up = join(oldOverlay(data), 'upper');
  put(join(up, 'machine-id'), `${ID}\n`, 0o444);
  put(join(up, 'dropbear/dropbear_ed25519_host_key'), 'old host key', 0o600);
  put(join(up, 'rancher/node/password'), 'old node password', 0o600);
  put(join(up, 'os-release'), 'VERSION_ID=0.9\n');     // a copied-up root file: must not come back
  put(join(up, 'motd'), 'hand edit\n');
  mkdirSync(join(oldOverlay(data), 'work'));
  return up;
}

test('what persists of /etc: the machine id, the SSH host keys and the k3s node password, nothing else', () => {
  assert.equal(PERSISTENT_ETC.map((e) => `${e.kind} ${e.path}`), ['file machine-id', 'dir dropbear', 'dir rancher/node']);
});

test("docs/design.md's table lists exactly what persists", () => {
  const doc = readFileSync(join(import.meta.dirname, '../../docs/design.md'), 'utf8');
  const table = doc.slice(doc.indexOf('**What persists of `/etc`**'), doc.indexOf('**The old layout.**'));
  const rows = [...table.matchAll(/^\| `([^`]+)`[^|]*\| `([^`]+)` \|/gm)].map((m) => [m[1], m[2]]);
  assert.equal(rows, PERSISTENT_ETC.map((e) => [e.kind === 'dir' ? `${e.path}/` : e.path, e.kind === 'dir' ? `${e.path}/` : e.path]));
});

test('a fresh node: the state directories are made and /etc links to them; writes through /etc land on data', () => {
  const { data, etc } = dirs();
  assert.equal(migrateOldEtc(data), []);
  assert.equal(restoreEtcState({ etc, data }), []);
  const st = stateDir(data);
  assert.is(readlinkSync(join(etc, 'dropbear')), join(st, 'dropbear'));
  assert.is(readlinkSync(join(etc, 'rancher/node')), join(st, 'rancher/node'));
  assert.is(statSync(join(st, 'dropbear')).mode & 0o777, 0o700);
  assert.not.ok(existsSync(join(etc, 'machine-id')), 'no machine id is made up here');
  // dropbear -R and k3s write through the links.
  writeFileSync(join(etc, 'dropbear/dropbear_ed25519_host_key'), 'key');
  assert.is(text(join(st, 'dropbear/dropbear_ed25519_host_key')), 'key');
  // ensureMachineId saves a new id to the state and writes it to /etc.
  const id = ensureMachineId(join(etc, 'machine-id'), join(st, 'machine-id'));
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.is(text(join(st, 'machine-id')), `${id}\n`);
  assert.is(text(join(etc, 'machine-id')), `${id}\n`);
  assert.not.ok(existsSync(oldOverlay(data)), 'no old overlay is made for a node that never had one');
});

test("the next boot's /etc (fresh from the root) gets the same machine id and host keys back", () => {
  const { data, etc } = dirs();
  restoreEtcState({ etc, data });
  const id = ensureMachineId(join(etc, 'machine-id'), join(stateDir(data), 'machine-id'));
  writeFileSync(join(etc, 'dropbear/dropbear_ed25519_host_key'), 'key');
  // Reboot: a new, empty /etc.
  const etc2 = join(dirname(etc), 'etc2');
  mkdirSync(etc2);
  const saved = join(stateDir(data), 'machine-id');
  chmodSync(saved, 0o444);
  utimesSync(saved, new Date('2031-05-06T07:08:09Z'), new Date('2030-01-02T03:04:05Z'));
  assert.equal(restoreEtcState({ etc: etc2, data }), []);
  assert.is(text(join(etc2, 'machine-id')), `${id}\n`);
  // Copied with its mode and times, as cp -p would.
  assert.is(statSync(join(etc2, 'machine-id')).mode & 0o777, 0o444);
  assert.is(statSync(join(etc2, 'machine-id')).mtime.toISOString(), '2030-01-02T03:04:05.000Z');
  assert.is(statSync(join(etc2, 'machine-id')).atime.toISOString(), '2031-05-06T07:08:09.000Z');
  assert.is(ensureMachineId(join(etc2, 'machine-id'), join(stateDir(data), 'machine-id')), id);
  assert.is(text(join(etc2, 'dropbear/dropbear_ed25519_host_key')), 'key');
  // Restoring twice in one boot changes nothing.
  assert.equal(restoreEtcState({ etc: etc2, data }), []);
  assert.is(readlinkSync(join(etc2, 'dropbear')), join(stateDir(data), 'dropbear'));
});

test('a directory the root image ships where state belongs is replaced by the link', () => {
  const { data, etc } = dirs();
  put(join(etc, 'dropbear/dropbear_rsa_host_key'), 'baked into the image');
  assert.equal(restoreEtcState({ etc, data }), []);
  assert.ok(lstatSync(join(etc, 'dropbear')).isSymbolicLink());
  assert.not.ok(existsSync(join(etc, 'dropbear/dropbear_rsa_host_key')));
});

test('an item that cannot be restored is reported and the others still are', () => {
  const { data, etc } = dirs();
  put(join(stateDir(data), 'rancher'), 'a file where a directory belongs');
  const problems = restoreEtcState({ etc, data });
  assert.is(problems.length, 1);
  assert.match(problems[0]!, /^\/etc\/rancher\/node: /);
  assert.ok(lstatSync(join(etc, 'dropbear')).isSymbolicLink());
});

test("the old layout's upper: its named state is taken over, the rest retired, and the old /etc never comes back", () => {
  const { data, etc } = dirs();
  oldUpper(data);
  const lines = migrateOldEtc(data);
  assert.equal(lines, [
    '/etc/machine-id kept from the old /etc overlay',
    '/etc/dropbear kept from the old /etc overlay',
    '/etc/rancher/node kept from the old /etc overlay',
    `old /etc overlay moved to ${oldOverlay(data)}.retired: edits made there are not carried over`,
  ]);
  const st = stateDir(data);
  assert.is(text(join(st, 'dropbear/dropbear_ed25519_host_key')), 'old host key');
  assert.is(statSync(join(st, 'dropbear/dropbear_ed25519_host_key')).mode & 0o777, 0o600);
  assert.is(text(join(st, 'rancher/node/password')), 'old node password');
  // Kept aside, whole, for the owner to look at.
  assert.is(text(join(`${oldOverlay(data)}.retired`, 'upper/motd')), 'hand edit\n');
  // This boot's /etc: the old identity, and none of the old edits.
  assert.equal(restoreEtcState({ etc, data }), []);
  assert.is(ensureMachineId(join(etc, 'machine-id'), join(st, 'machine-id')), ID);
  assert.is(text(join(etc, 'dropbear/dropbear_ed25519_host_key')), 'old host key');
  assert.not.ok(existsSync(join(etc, 'os-release')));
  assert.not.ok(existsSync(join(etc, 'motd')));
  // The seed left for a fallback into an older release: the named state only.
  const seed = join(oldOverlay(data), 'upper');
  assert.ok(existsSync(join(seed, SEED_MARK)));
  assert.is(text(join(seed, 'machine-id')), `${ID}\n`);
  assert.is(text(join(seed, 'dropbear/dropbear_ed25519_host_key')), 'old host key');
  assert.not.ok(existsSync(join(seed, 'os-release')));
  assert.not.ok(existsSync(join(seed, 'motd')));
  assert.ok(existsSync(join(oldOverlay(data), 'work')));
  // The next boot: nothing more to do.
  assert.equal(migrateOldEtc(data), []);
});

test('state on data wins over the old upper; after a fallback that used the seed, only what the state lacks is taken', () => {
  const { data } = dirs();
  put(join(stateDir(data), 'machine-id'), 'ffffffffffffffffffffffffffffffff\n');
  oldUpper(data);
  migrateOldEtc(data);
  assert.is(text(join(stateDir(data), 'machine-id')), 'ffffffffffffffffffffffffffffffff\n');
  assert.is(text(join(stateDir(data), 'dropbear/dropbear_ed25519_host_key')), 'old host key');
  // The older release ran on the seed: it wrote edits, and k3s made a new file in rancher/node.
  const seed = join(oldOverlay(data), 'upper');
  put(join(seed, 'motd'), 'edit under the older release\n');
  put(join(seed, 'rancher/node/password'), 'changed under the older release');
  assert.equal(migrateOldEtc(data), []);
  assert.is(text(join(stateDir(data), 'rancher/node/password')), 'old node password');
  assert.ok(existsSync(join(seed, 'motd')), 'the seed is the older release\'s /etc: it is left alone');
  assert.not.ok(existsSync(`${oldOverlay(data)}.retired.1`));
});

test('a second old-style upper (an older release that made its own) is retired beside the first', () => {
  const { data } = dirs();
  oldUpper(data);
  migrateOldEtc(data);
  // An older release's stage 1 found no upper and made an empty one (no seed mark).
  const up = join(oldOverlay(data), 'upper');
  rmSync(up, { recursive: true });
  put(join(up, 'machine-id'), 'ffffffffffffffffffffffffffffffff\n');
  const lines = migrateOldEtc(data);
  assert.equal(lines, [`old /etc overlay moved to ${oldOverlay(data)}.retired.1: edits made there are not carried over`]);
  assert.is(text(join(stateDir(data), 'machine-id')), `${ID}\n`, 'the state already had a machine id');
  assert.is(text(join(oldOverlay(data), 'upper/machine-id')), `${ID}\n`);
});

test('a link or a whiteout in the old upper is not state', () => {
  const { data } = dirs();
  const up = join(oldOverlay(data), 'upper');
  mkdirSync(up, { recursive: true });
  mkdirSync(join(data, 'elsewhere'));
  symlinkSync(join(data, 'elsewhere'), join(up, 'dropbear'));
  put(join(up, 'rancher/node'), 'a file, not the directory k3s keeps');
  migrateOldEtc(data);
  assert.not.ok(existsSync(join(stateDir(data), 'dropbear')));
  assert.not.ok(existsSync(join(stateDir(data), 'rancher/node')));
});

test("restoring at boot loads none of Node's cp, fs/promises or readline (they would stay in init's memory)", () => {
  const { data, etc } = dirs();
  put(join(stateDir(data), 'machine-id'), `${ID}\n`);
  // A process of its own: what this one has loaded already would hide a module's first load.
  const script = `import { restoreEtcState } from ${JSON.stringify(new URL('../../init/etcstate.ts', import.meta.url).pathname)};
const before = new Set(process.moduleLoadList);
const problems = restoreEtcState({ etc: ${JSON.stringify(etc)}, data: ${JSON.stringify(data)} });
console.log(JSON.stringify({ problems, loaded: process.moduleLoadList.filter((m) => !before.has(m)) }));`;
  const out = JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' }));
  assert.equal(out.problems, []);
  assert.is(text(join(etc, 'machine-id')), `${ID}\n`);
  assert.equal(out.loaded.filter((m: string) => /cp|promises|readline|watchers/.test(m)), []);
});

test.run();
