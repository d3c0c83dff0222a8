import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StanzaParser, parseDepends, parsePackages } from '../../builder/debian/packages.ts';

const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);
const INDEX = `Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.119+1)
Version: 6.1.119-1
Installed-Size: 13
Depends: linux-image-6.1.0-28-cloud-amd64 (= 6.1.119-1)
Description: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel
 .
 and modules for use on cloud platforms.
Architecture: amd64
Filename: pool/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.119-1_amd64.deb
Size: 1484
SHA256: ${SHA_A}

Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all
Pre-Depends: debconf (>= 0.5) | debconf-2.0
Filename: pool/main/t/tzdata/tzdata_2024a-0+deb12u1_all.deb
Size: 257476
SHA256: ${SHA_B}
Tag: role::data
`;

test('parses stanzas, keeps the needed fields, skips descriptions', () => {
  const e = parsePackages(INDEX);
  assert.is(e.length, 2);
  assert.equal(e[0], {
    package: 'linux-image-cloud-amd64', version: '6.1.119-1', architecture: 'amd64',
    filename: 'pool/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.119-1_amd64.deb',
    size: 1484, sha256: SHA_A, depends: 'linux-image-6.1.0-28-cloud-amd64 (= 6.1.119-1)', source: 'linux-signed-amd64 (6.1.119+1)',
  });
  assert.is(e[1].architecture, 'all');
  assert.is(e[1].size, 257476);
  assert.is(e[1].depends, undefined);
});

test('chunk boundaries do not matter (streamed input)', () => {
  const whole = JSON.stringify(parsePackages(INDEX));
  for (const step of [1, 3, 7, 64]) {
    const got: unknown[] = [];
    const p = new StanzaParser((f) => got.push(f));
    for (let i = 0; i < INDEX.length; i += step) p.push(INDEX.slice(i, i + step));
    assert.is(p.end(), 2);
    const again: unknown[] = [];
    const q = new StanzaParser((f) => again.push(f));
    q.push(INDEX); q.end();
    assert.equal(got, again, `step ${step}`);
  }
  assert.is(JSON.stringify(parsePackages(INDEX.replace(/\n/g, '\r\n'))), whole, 'CRLF input');
  assert.is(parsePackages(INDEX + '\n\n\n').length, 2, 'trailing blank lines');
});

test('a stanza missing a needed field or with a bad checksum is an error naming the package', () => {
  assert.throws(() => parsePackages('Package: foo\nVersion: 1\nArchitecture: amd64\nSize: 1\nSHA256: ' + SHA_A + '\n'), /'foo' has no filename/);
  assert.throws(() => parsePackages(INDEX.replace(SHA_B, 'xyz')), /'tzdata' has a bad SHA256/);
  assert.throws(() => parsePackages(INDEX.replace('Size: 1484', 'Size: -4')), /bad Size/);
  assert.throws(() => parsePackages('no colon here\n'), /malformed/);
});

test('parseDepends reads groups, alternatives, relations and arch qualifiers', () => {
  assert.equal(parseDepends('libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, python3:any, foo [amd64]'), [
    [{ name: 'libc6', op: '>=', version: '2.34' }],
    [{ name: 'debconf', op: '>=', version: '0.5' }, { name: 'debconf-2.0' }],
    [{ name: 'python3', arch: 'any' }],
    [{ name: 'foo' }],
  ]);
  assert.equal(parseDepends('linux-image-6.1.0-28-cloud-amd64 (= 6.1.119-1)'), [[{ name: 'linux-image-6.1.0-28-cloud-amd64', op: '=', version: '6.1.119-1' }]]);
  assert.throws(() => parseDepends('Bad Name'), /cannot parse/);
});

test.run();
