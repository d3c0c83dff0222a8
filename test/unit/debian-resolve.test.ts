import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as openpgp from 'openpgp';
import { Cache, ChecksumError } from '../../builder/cache.ts';
import { resolvePackages } from '../../builder/debian/index.ts';
import { findTool } from '../../builder/tools.ts';

// A tiny signed mirror on localhost: two suites, the newer kernel only in "sec".
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const stanza = (pkg: string, version: string, arch: string, extra = '') =>
  `Package: ${pkg}\nVersion: ${version}\nArchitecture: ${arch}\n${extra}Filename: pool/main/${pkg}_${version}_${arch}.deb\nSize: ${pkg.length}\nSHA256: ${sha(pkg + version)}\nDescription: ${pkg}\n long text\n`;
const MAIN = [
  stanza('linux-image-cloud-arm64', '6.1.119-1', 'arm64', 'Depends: linux-image-6.1.0-28-cloud-arm64 (= 6.1.119-1)\n'),
  stanza('linux-image-6.1.0-28-cloud-arm64', '6.1.119-1', 'arm64'),
  stanza('libc6', '2.36-9+deb12u9', 'arm64'),
  stanza('tzdata', '2024a-0+deb12u1', 'all'),
  stanza('only-amd64', '1.0', 'amd64'),
].join('\n');
const SEC = [
  stanza('linux-image-cloud-arm64', '6.1.129-1', 'arm64', 'Depends: linux-image-6.1.0-31-cloud-arm64 (= 6.1.129-1)\n'),
  stanza('linux-image-6.1.0-31-cloud-arm64', '6.1.129-1', 'arm64'),
  // a newer build of the same ABI than the meta package asks for: the exact Depends wins
  stanza('linux-image-6.1.0-31-cloud-arm64', '6.1.129-2', 'arm64'),
  stanza('libc6', '2.36-9+deb12u8', 'arm64'), // older than main's: main wins
].join('\n');

let key: { privateKey: openpgp.PrivateKey; publicKey: openpgp.PublicKey };
let keyring = '';
const files = new Map<string, Buffer | string>();
let hits: string[] = [];
let tamperIndex = false;

const server = createServer((req, res) => {
  hits.push(req.url!);
  let body = files.get(req.url!);
  if (body === undefined) { res.statusCode = 404; res.end(); return; }
  if (tamperIndex && req.url!.includes('Packages')) body = Buffer.concat([Buffer.from(body as Buffer), Buffer.from('x')]);
  res.end(body);
});
const base = () => `http://127.0.0.1:${(server.address() as any).port}`;

async function publish(suite: string, index: string, o: { byHash?: boolean; xz?: boolean; validUntil?: string; signer?: openpgp.PrivateKey } = {}) {
  const dir = `/debian/dists/${suite}/main/binary-arm64`;
  const useXz = o.xz && findTool('xz');
  const comp = useXz ? spawnSync('xz', ['-c'], { input: index }).stdout : gzipSync(index);
  const name = `Packages.${useXz ? 'xz' : 'gz'}`;
  files.set(o.byHash ? `${dir}/by-hash/SHA256/${sha(comp)}` : `${dir}/${name}`, comp);
  const release = [
    'Origin: Test', `Suite: ${suite}`, `Codename: ${suite}`, 'Date: Sat, 11 Jan 2025 10:00:00 UTC',
    ...(o.validUntil ? [`Valid-Until: ${o.validUntil}`] : []), ...(o.byHash ? ['Acquire-By-Hash: yes'] : []),
    'Architectures: amd64 arm64', 'Components: main', 'SHA256:',
    ` ${sha(index)} ${Buffer.byteLength(index)} main/binary-arm64/Packages`,
    ` ${sha(comp)} ${comp.length} main/binary-arm64/${name}`, '',
  ].join('\n');
  files.set(`/debian/dists/${suite}/InRelease`, await openpgp.sign({ message: await openpgp.createCleartextMessage({ text: release }), signingKeys: o.signer ?? key.privateKey }));
}

const dirs: string[] = [];
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'kiln-resolve-')); dirs.push(d); return d; };
const NOW = new Date('2025-01-12T00:00:00Z');
const sources = () => [
  { mirror: `${base()}/debian`, suite: 'main', components: ['main'] },
  { mirror: `${base()}/debian/`, suite: 'sec', components: ['main'] },
];
const resolve = (names: string[], cache = new Cache(tmp()), fingerprints = [key.publicKey.getFingerprint()]) =>
  resolvePackages({ sources: sources(), arch: 'arm64', names, cache, keyring, fingerprints, now: NOW });

test.before(async () => {
  key = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'test archive' }], format: 'object' }) as any;
  keyring = join(tmp(), 'keyring.gpg');
  writeFileSync(keyring, key.publicKey.write());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  await publish('main', MAIN);
  await publish('sec', SEC, { byHash: true, xz: true, validUntil: 'Sat, 18 Jan 2025 10:00:00 UTC' });
});
test.after(() => { server.close(); for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

test('meta kernel resolves to the image it depends on, highest version across suites', async () => {
  const pins = await resolve(['linux-image-cloud-arm64', 'libc6', 'tzdata']);
  assert.equal(pins.map((p) => [p.package, p.version, p.arch, p.suite]), [
    ['linux-image-6.1.0-31-cloud-arm64', '6.1.129-1', 'arm64', 'sec'],
    ['libc6', '2.36-9+deb12u9', 'arm64', 'main'],
    ['tzdata', '2024a-0+deb12u1', 'all', 'main'],
  ]);
  const k = pins[0];
  assert.is(k.url, `${base()}/debian/pool/main/linux-image-6.1.0-31-cloud-arm64_6.1.129-1_arm64.deb`);
  assert.is(k.sha256, sha('linux-image-6.1.0-31-cloud-arm64' + '6.1.129-1'));
  assert.is(k.size, 'linux-image-6.1.0-31-cloud-arm64'.length);
  assert.is(k.name, 'linux-image-6.1.0-31-cloud-arm64 6.1.129-1 (arm64)');
  assert.ok(hits.some((h) => h.includes('/by-hash/SHA256/')), 'by-hash used when the Release offers it');
});

test('indexes are cached by checksum: a second resolve only fetches InRelease', async () => {
  const cache = new Cache(tmp());
  await resolve(['libc6'], cache);
  hits = [];
  await resolve(['libc6'], cache);
  assert.equal(hits.sort(), ['/debian/dists/main/InRelease', '/debian/dists/sec/InRelease']);
});

test('an unknown package names the package, arch, suites and the fix', async () => {
  try { await resolve(['no-such-pkg']); assert.unreachable(); } catch (e) {
    assert.match((e as Error).message, /'no-such-pkg' not found for arm64 in main \(main\), sec \(main\).*debian\.packages/);
  }
  try { await resolve(['only-amd64']); assert.unreachable(); } catch (e) { assert.match((e as Error).message, /'only-amd64' not found for arm64/); }
});

test('an index that does not match the signed Release is refused', async () => {
  tamperIndex = true;
  try { await resolve(['libc6']); assert.unreachable(); } catch (e) {
    assert.instance(e, ChecksumError);
  } finally { tamperIndex = false; }
});

test('an InRelease signed by another key is refused, naming the URL', async () => {
  try { await resolve(['libc6'], new Cache(tmp()), ['0'.repeat(40)]); assert.unreachable(); } catch (e) {
    assert.match((e as Error).message, /none of the pinned/);
  }
  const other = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'x' }], format: 'object' });
  const saved = files.get('/debian/dists/sec/InRelease');
  await publish('sec', SEC, { byHash: true, signer: other.privateKey });
  try { await resolve(['libc6']); assert.unreachable(); } catch (e) {
    assert.match((e as Error).message, /\/debian\/dists\/sec\/InRelease: no valid signature from a pinned/);
  } finally { files.set('/debian/dists/sec/InRelease', saved!); }
});

test('an expired Release and a network failure give clear errors', async () => {
  try {
    await resolvePackages({ sources: sources(), arch: 'arm64', names: ['libc6'], cache: new Cache(tmp()), keyring, fingerprints: [key.publicKey.getFingerprint()], now: new Date('2025-02-01T00:00:00Z') });
    assert.unreachable();
  } catch (e) { assert.match((e as Error).message, /sec\/InRelease: expired: Valid-Until/); }
  try {
    await resolvePackages({ sources: [{ mirror: 'http://127.0.0.1:9/debian', suite: 'main', components: ['main'] }], arch: 'arm64', names: ['libc6'], cache: new Cache(tmp()), keyring });
    assert.unreachable();
  } catch (e) { assert.match((e as Error).message, /cannot download http:\/\/127\.0\.0\.1:9\/debian\/dists\/main\/InRelease.*KILN_OFFLINE/); }
});

test.run();
