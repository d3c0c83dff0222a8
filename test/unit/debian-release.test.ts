import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import * as openpgp from 'openpgp';
import { checkRelease, parseRelease, readKeyring, verifyInRelease, DEBIAN_ARCHIVE_FINGERPRINTS } from '../../builder/debian/release.ts';
import { hostFile } from '../../builder/tools.ts';

const fixture = (n: string) => readFileSync(new URL(`../fixtures/debian/${n}`, import.meta.url), 'utf8');
const BOOKWORM = fixture('bookworm.InRelease');
const SECURITY = fixture('bookworm-security.InRelease');
// Fixed clock: the fixtures were saved on this day, and Valid-Until must not depend on today.
const SAVED = new Date('2026-11-24T12:00:00Z');

const debianKeys = () => readKeyring(hostFile('debianKeyring'));

test('a saved bookworm InRelease verifies against the pinned Debian keys', async () => {
  const r = await verifyInRelease(BOOKWORM, { keyring: await debianKeys(), file: 'bookworm/InRelease', date: SAVED });
  // archive (12/bookworm), archive (13/trixie) and the stable release key all signed it
  assert.equal(r.signers.sort(), [
    '04B54C3CDCA79751B16BC6B5225629DF75B188BD', '4D64FEC119C2029067D6E791F8D2585B8783D481', 'B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8',
  ]);
  assert.ok(r.text.startsWith('Origin: Debian\n'));
  assert.not.ok(r.text.includes('BEGIN PGP'));
});

test('changing one byte of the signed text makes verification fail', async () => {
  const keys = await debianKeys();
  const at = BOOKWORM.indexOf('main/binary-arm64/Packages.xz') - 20; // inside a checksum
  const c = BOOKWORM[at];
  const tampered = BOOKWORM.slice(0, at) + (c === '0' ? '1' : '0') + BOOKWORM.slice(at + 1);
  assert.is.not(tampered, BOOKWORM);
  try {
    await verifyInRelease(tampered, { keyring: keys, file: 'bookworm/InRelease', date: SAVED });
    assert.unreachable('a tampered InRelease must be refused');
  } catch (e) {
    assert.match((e as Error).message, /bookworm\/InRelease: no valid signature from a pinned Debian archive key/);
  }
});

test('security InRelease: signed by the bookworm security key; bullseye key is not pinned', async () => {
  const r = await verifyInRelease(SECURITY, { keyring: await debianKeys(), file: 'sec', date: SAVED });
  assert.equal(r.signers, ['05AB90340C0C5E797F44A8C8254CF3B5AEC0A8F0']);
  // Pinning only a key that did not sign it must fail, though the keyring holds the signer.
  try {
    await verifyInRelease(SECURITY, { keyring: await debianKeys(), file: 'sec', date: SAVED, fingerprints: ['B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8'] });
    assert.unreachable('must refuse');
  } catch (e) {
    assert.match((e as Error).message, /no valid signature from a pinned/);
  }
});

test('a valid signature from a key that is not pinned is refused', async () => {
  const { privateKey, publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'not debian' }], format: 'object' });
  const armored = await openpgp.sign({ message: await openpgp.createCleartextMessage({ text: 'Origin: Evil\nSuite: bookworm\n' }), signingKeys: privateKey });
  const fpr = publicKey.getFingerprint();
  // Sanity: the same file passes when its key is pinned, so the refusals below are about pinning.
  const ok = await verifyInRelease(armored, { keyring: [publicKey], fingerprints: [fpr], file: 'x' });
  assert.equal(ok.signers, [fpr.toUpperCase()]);
  // Present in the keyring next to Debian's keys, but not pinned: refused.
  const keys = [...await debianKeys(), publicKey];
  try {
    await verifyInRelease(armored, { keyring: keys, file: 'evil/InRelease' });
    assert.unreachable('must refuse');
  } catch (e) {
    assert.match((e as Error).message, /evil\/InRelease: no valid signature from a pinned/);
  }
  try {
    await verifyInRelease(armored, { keyring: [publicKey], file: 'evil/InRelease' });
    assert.unreachable('must refuse');
  } catch (e) {
    assert.match((e as Error).message, /none of the pinned Debian archive keys/);
  }
  try {
    await verifyInRelease('Origin: Debian\n', { keyring: keys, file: 'plain' });
    assert.unreachable('must refuse');
  } catch (e) {
    assert.match((e as Error).message, /plain: not a clearsigned/);
  }
});

test('pinned fingerprints are all in the host keyring', async () => {
  const have = new Set((await debianKeys()).map((k) => k.getFingerprint().toUpperCase()));
  for (const f of DEBIAN_ARCHIVE_FINGERPRINTS) assert.ok(have.has(f), f);
});

test('parseRelease reads the verified text', async () => {
  const { text } = await verifyInRelease(SECURITY, { keyring: await debianKeys(), file: 'sec', date: SAVED });
  const rel = parseRelease(text);
  assert.is(rel.codename, 'bookworm-security');
  assert.is(rel.suite, 'oldstable-security');
  assert.is(rel.date?.toISOString(), '2026-11-23T11:22:37.000Z');
  assert.is(rel.validUntil?.toISOString(), '2026-11-30T11:22:37.000Z');
  assert.ok(rel.acquireByHash);
  assert.ok(rel.architectures.includes('arm64'));
  assert.equal(rel.files.get('main/binary-arm64/Packages.xz'), {
    path: 'main/binary-arm64/Packages.xz', size: 377044, sha256: 'b7e9f86426c724d24188dd58ae4b4f20e74cc8de9491159827332fbbceb1f3c5',
  });
  const main = parseRelease((await verifyInRelease(BOOKWORM, { keyring: await debianKeys(), file: 'b', date: SAVED })).text);
  assert.is(main.validUntil, undefined);
  assert.is(main.files.get('main/binary-amd64/Packages.xz')?.size, 8790396);
});

test('checkRelease refuses an expired Valid-Until, a wrong suite and a future Date', () => {
  const rel = parseRelease(`Suite: oldstable-security\nCodename: bookworm-security\nDate: Mon, 23 Nov 2026 11:22:37 UTC\nValid-Until: Mon, 30 Nov 2026 11:22:37 UTC\nSHA256:\n ${'0'.repeat(64)} 1 main/x\n`);
  checkRelease(rel, { suite: 'bookworm-security', file: 'f', now: SAVED });
  checkRelease(rel, { suite: 'oldstable-security', file: 'f', now: SAVED });
  assert.throws(() => checkRelease(rel, { suite: 'bookworm-security', file: 'sec/InRelease', now: new Date('2026-12-01T00:00:00Z') }),
    /sec\/InRelease: expired: Valid-Until 2026-11-30T11:22:37.000Z/);
  assert.throws(() => checkRelease(rel, { suite: 'bookworm', file: 'f', now: SAVED }), /not 'bookworm'/);
  assert.throws(() => checkRelease(rel, { suite: 'bookworm-security', file: 'f', now: new Date('2026-01-01T00:00:00Z') }), /in the future/);
});

test('parseRelease rejects malformed input', () => {
  assert.throws(() => parseRelease('Suite: x\n'), /no SHA256/);
  assert.throws(() => parseRelease('Suite: x\nSHA256:\n abc 1 main/x\n'), /malformed SHA256/);
  assert.throws(() => parseRelease(`Date: someday\nSHA256:\n ${'0'.repeat(64)} 1 main/x\n`), /cannot read date/);
});

test.run();
