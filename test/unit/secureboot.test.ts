// Secure Boot keys and signing: certificates openssl parses with the right subjects, .auth files
// in the EFI_VARIABLE_AUTHENTICATION_2 layout the firmware reads, sbsign output sbverify accepts,
// the same bytes for the same key and SOURCE_DATE_EPOCH, and the checks on the signing inputs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';
import {
  authTrusts, EFI_CERT_X509_GUID, faketimeStamp, generateSecureBootKeys, parseAuth2, parseSignatureLists, readGuid,
  SB_KEYS, secureBootEsp, secureBootSigner, signEfi, type SecureBootKeys,
} from '../../builder/secureboot.ts';
import { readPe } from '../../builder/uki.ts';
import { qemuCommand, type VmOptions } from '../../builder/qemu.ts';
import { releaseCli } from '../../builder/release.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'kiln-sb-'));
const sh = $({ quiet: true, nothrow: true });

let memo: { dir: string; k: SecureBootKeys } | undefined;
/** One key set for the whole file: RSA key generation is the slow part. */
async function keys() {
  if (!memo) { const dir = tmp(); memo = { dir, k: await generateSecureBootKeys(dir) }; }
  return memo;
}

/** A small real EFI application (GRUB's core image, no modules) to sign. */
async function efiApp(dir: string): Promise<string> {
  const out = join(dir, 'app.efi');
  await $({ quiet: true })`grub-mkimage -d /usr/lib/grub/x86_64-efi -O x86_64-efi -p /boot/grub -o ${out}`;
  return out;
}

test('keys generate: RSA certificates openssl parses, with our subjects, keys 0600 and matching', async () => {
  const { dir, k } = await keys();
  const guid = readFileSync(join(dir, 'secure-boot.guid'), 'utf8').trim();
  assert.is(guid, k.guid);
  for (const n of SB_KEYS) {
    const r = await sh`openssl x509 -in ${k.cert[n]} -noout -subject -text`;
    assert.is(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`subject=CN = kiln Secure Boot ${n} \\(${guid.slice(0, 8)}\\)`));
    assert.match(r.stdout, /Public-Key: \(2048 bit\)/);
    assert.is(statSync(k.key[n]).mode & 0o777, 0o600, `${n}.key is private`);
    const cert = new X509Certificate(readFileSync(k.cert[n]));
    assert.ok(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(readFileSync(k.key[n]))));
    assert.ok(new Date(cert.validTo).getTime() - Date.now() > 15 * 365 * 86400_000, 'long validity');
    assert.not.match(readFileSync(k.key[n], 'latin1'), /ENCRYPTED/);
  }
  const again = await generateSecureBootKeys(dir).then(() => '', (e: Error) => e.message);
  assert.match(again, /PK\.key already exists; refusing to overwrite/);
});

test('kiln keys generate writes the release key and the Secure Boot keys, or nothing', async () => {
  const d = tmp();
  assert.is(await releaseCli('keys', ['generate'], { out: d }), 0);
  for (const f of ['kiln-release.key', 'trust.json', 'PK.key', 'KEK.crt', 'db.crt', 'loader/keys/kiln/PK.auth', 'loader/keys/kiln/KEK.auth', 'loader/keys/kiln/db.auth', 'secure-boot.guid']) assert.ok(existsSync(join(d, f)), f);
  // A folder with a Secure Boot key already there: refused before the release key is written.
  const e = tmp();
  writeFileSync(join(e, 'db.key'), 'old key');
  assert.is(await releaseCli('keys', ['generate'], { out: e }), 1);
  assert.not.ok(existsSync(join(e, 'kiln-release.key')));
  assert.is(readFileSync(join(e, 'db.key'), 'utf8'), 'old key');
});

test('.auth files: EFI_TIME, WIN_CERTIFICATE_UEFI_GUID (PKCS#7), then the certificate as an X.509 signature list', async () => {
  const { k } = await keys();
  const signer = { PK: 'PK', KEK: 'PK', db: 'KEK' } as const;
  for (const n of SB_KEYS) {
    const b = readFileSync(k.auth[n]);
    // EFI_TIME: this year, a valid month; then dwLength, wRevision 0x0200, wCertificateType 0x0EF1, EFI_CERT_TYPE_PKCS7_GUID.
    assert.is(b.readUInt16LE(0), new Date().getUTCFullYear());
    assert.ok(b[2]! >= 1 && b[2]! <= 12);
    assert.equal([...b.subarray(20, 24)], [0x00, 0x02, 0xf1, 0x0e]);
    assert.is(b.subarray(24, 40).toString('hex'), '9dd2af4adf68ee498aa9347d375665a7');
    assert.is(b[40], 0x30, 'PKCS#7 DER SEQUENCE right after the header');
    const a = parseAuth2(b, k.auth[n]);
    const der = new X509Certificate(readFileSync(k.cert[n])).raw;
    assert.is(a.lists.length, 1);
    assert.is(a.lists[0]!.type, EFI_CERT_X509_GUID);
    assert.is(a.lists[0]!.entries[0]!.owner, k.guid);
    assert.ok(authTrusts(a, der), `${n}.auth carries ${n}.crt`);
    // PK signs itself and KEK, KEK signs db: the signer's certificate is in the PKCS#7.
    assert.ok(a.pkcs7.includes(new X509Certificate(readFileSync(k.cert[signer[n]])).raw), `${n}.auth is signed by ${signer[n]}`);
  }
});

test('parseAuth2 / parseSignatureLists refuse malformed input', () => {
  assert.throws(() => parseAuth2(Buffer.alloc(20)), /too short/);
  const b = Buffer.alloc(80);
  b.writeUInt32LE(24, 16);
  assert.throws(() => parseAuth2(b), /no WIN_CERTIFICATE_UEFI_GUID/);
  b.writeUInt16LE(0x0200, 20); b.writeUInt16LE(0x0ef1, 22);
  assert.throws(() => parseAuth2(b), /not EFI_CERT_TYPE_PKCS7_GUID/);
  Buffer.from('9dd2af4adf68ee498aa9347d375665a7', 'hex').copy(b, 24);
  b.writeUInt32LE(1000, 16);
  assert.throws(() => parseAuth2(b), /runs past the end/);
  const esl = Buffer.alloc(28 + 16 + 4);
  esl.writeUInt32LE(esl.length, 16); esl.writeUInt32LE(0, 20); esl.writeUInt32LE(20, 24);
  assert.is(parseSignatureLists(esl)[0]!.entries.length, 1);
  esl.writeUInt32LE(19, 24);
  assert.throws(() => parseSignatureLists(esl), /inconsistent sizes/);
  assert.throws(() => parseSignatureLists(Buffer.alloc(10)), /truncated/);
  assert.is(readGuid(Buffer.from('9dd2af4adf68ee498aa9347d375665a7', 'hex'), 0), '4aafd29d-68df-49ee-8aa9-347d375665a7');
});

test('sbsign output verifies with sbverify --cert, against our db certificate only', async () => {
  const { k } = await keys();
  const d = tmp();
  const app = await efiApp(d);
  const signed = await signEfi({ key: k.key.db, cert: k.cert.db }, app, { out: join(d, 'signed.efi'), sourceDateEpoch: 1_700_000_000 });
  assert.is((await sh`sbverify --cert ${k.cert.db} ${signed}`).exitCode, 0);
  assert.is.not((await sh`sbverify --cert ${k.cert.KEK} ${signed}`).exitCode, 0, 'another certificate does not verify it');
  assert.is.not((await sh`sbverify --cert ${k.cert.db} ${app}`).exitCode, 0, 'the input was not signed');
  // One byte changed in a section after signing: the signature no longer verifies.
  const b = readFileSync(signed);
  const text = readPe(b).sections[0]!;
  b[text.rawOffset + 16] ^= 0xff;
  writeFileSync(join(d, 'bad.efi'), b);
  assert.is.not((await sh`sbverify --cert ${k.cert.db} ${join(d, 'bad.efi')}`).exitCode, 0);
});

test('signing is reproducible: the same key and SOURCE_DATE_EPOCH give the same bytes, whatever the clock says', async () => {
  const { k } = await keys();
  const d = tmp();
  const app = await efiApp(d);
  const s = { key: k.key.db, cert: k.cert.db };
  const a = await signEfi(s, app, { out: join(d, 'a.efi'), sourceDateEpoch: 1_700_000_000 });
  await new Promise((r) => setTimeout(r, 1100)); // sbsign's signingTime has one-second resolution
  const b = await signEfi(s, app, { out: join(d, 'b.efi'), sourceDateEpoch: 1_700_000_000 });
  assert.equal(readFileSync(a), readFileSync(b));
  const c = await signEfi(s, app, { out: join(d, 'c.efi'), sourceDateEpoch: 1_600_000_000 });
  assert.not.equal(readFileSync(a), readFileSync(c), 'the signing time is SOURCE_DATE_EPOCH (it is in the signature)');
  await $({ quiet: true })`sbattach --detach ${join(d, 'a.p7')} ${a}`;
  const p7 = await $({ quiet: true })`openssl pkcs7 -inform DER -in ${join(d, 'a.p7')} -print`;
  assert.match(p7.stdout, /UTCTIME:Nov 14 22:13:20 2023 GMT/);
  // In place (the UKI in out/ is signed where it lies).
  const inPlace = join(d, 'inplace.efi');
  copyFileSync(app, inPlace);
  await signEfi(s, inPlace, { sourceDateEpoch: 1_700_000_000 });
  assert.equal(readFileSync(inPlace), readFileSync(a));
  assert.is(faketimeStamp(0), '1970-01-01 00:00:00');
  assert.throws(() => faketimeStamp(-1), /not a usable signing time/);
});

test('signing inputs: encrypted, mismatched or foreign keys are refused with the fix', async () => {
  const { dir, k } = await keys();
  const d = tmp();
  const enc = join(d, 'enc.key');
  await $({ quiet: true })`openssl pkey -in ${k.key.db} -aes256 -passout pass:secret -out ${enc}`;
  assert.throws(() => secureBootSigner({ key: enc, cert: k.cert.db }), /passphrase-protected; sbsign needs an unencrypted PEM key: 'openssl pkey/);
  assert.throws(() => secureBootSigner({ key: k.key.db, cert: k.cert.KEK }), /does not belong to --secure-boot-key/);
  assert.throws(() => secureBootSigner({ key: join(d, 'none.key'), cert: k.cert.db }), /does not exist \(make one with 'kiln keys generate/);
  writeFileSync(join(d, 'big.crt'), Buffer.alloc(70_000, 0x41));
  assert.throws(() => secureBootSigner({ key: k.key.db, cert: join(d, 'big.crt') }), /is 70000 bytes/);
  await $({ quiet: true })`openssl genpkey -algorithm ed25519 -out ${join(d, 'ed.key')}`;
  assert.throws(() => secureBootSigner({ key: join(d, 'ed.key'), cert: k.cert.db }), /ed25519 key; UEFI firmware verifies RSA/);
  // Enrolment files whose db is not the signing certificate: the image would not boot after enrolment.
  assert.throws(() => secureBootSigner({ key: k.key.KEK, cert: k.cert.KEK, enroll: dir }), /does not hold --secure-boot-cert/);
  const good = secureBootSigner({ key: k.key.db, cert: k.cert.db, enroll: dir });
  assert.equal(good.enroll, k.auth);
  assert.is.not(good.fingerprint, secureBootSigner({ key: k.key.db, cert: k.cert.db }).fingerprint, 'the enrolment files are part of the build key');
});

test('the ESP: systemd-boot replaced by a signed copy; enrolment keys at loader/keys/auto with secure-boot-enroll force', async () => {
  const { dir, k } = await keys();
  const d = tmp();
  const app = await efiApp(d);
  const files = [
    { path: 'EFI/BOOT/BOOTX64.EFI', src: app },
    { path: 'loader/loader.conf', data: Buffer.from('timeout 0\n') },
    { path: 'EFI/Linux/kiln-a+3.efi', src: app },
  ];
  assert.is(await secureBootEsp(undefined, files, d), files, 'no signer: unchanged');
  const plain = await secureBootEsp(secureBootSigner({ key: k.key.db, cert: k.cert.db }), files, join(d, 'w1'), 1_700_000_000);
  assert.is(plain.length, 3);
  assert.is(plain[0]!.src, join(d, 'w1', 'signed-BOOTX64.EFI'));
  assert.is((await sh`sbverify --cert ${k.cert.db} ${plain[0]!.src}`).exitCode, 0);
  assert.equal(plain[1], files[1], 'loader.conf untouched without enrolment');
  assert.equal(plain[2], files[2]);
  const withKeys = await secureBootEsp(secureBootSigner({ key: k.key.db, cert: k.cert.db, enroll: dir }), files, join(d, 'w2'), 1_700_000_000);
  assert.is(withKeys[1]!.data!.toString(), 'timeout 0\nsecure-boot-enroll force\n');
  assert.equal(withKeys.slice(3).map((f) => [f.path, f.src]), SB_KEYS.map((n) => [`loader/keys/auto/${n}.auth`, k.auth[n]]));
  assert.ok(!existsSync(join(d, 'w2', 'signed-BOOTX64.EFI.signing')), 'no temp file left behind');
});

test('QEMU Secure Boot firmware: OVMF SMM build on q35 with SMM, secure flash, the chosen variable store', async () => {
  process.env.KILN_ACCEL = 'tcg';
  const argsFor = async (o: Partial<VmOptions>) => {
    const w = tmp();
    const r = await qemuCommand({ arch: 'x86_64', disk: '/dev/null', ...o }, w);
    return { args: r.args.join(' '), vars: readFileSync(join(w, 'efivars.fd')) };
  };
  const plain = await argsFor({});
  assert.not.match(plain.args, /smm=on|secboot|property=secure/);
  assert.match(plain.args, /-device virtio-rng-pci/);
  assert.not.match((await argsFor({ rng: false })).args, /virtio-rng/, 'rng: false leaves the entropy device out');
  const snake = await argsFor({ secureBoot: 'snakeoil' });
  assert.match(snake.args, /-machine q35,smm=on /);
  assert.match(snake.args, /readonly=on,file=\/usr\/share\/OVMF\/OVMF_CODE_4M\.secboot\.fd/);
  assert.match(snake.args, /-global driver=cfi\.pflash01,property=secure,value=on/);
  assert.equal(snake.vars, readFileSync('/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd'));
  assert.equal((await argsFor({ secureBoot: 'setup' })).vars, readFileSync('/usr/share/OVMF/OVMF_VARS_4M.fd'), 'setup mode: the empty store');
  const saved = join(tmp(), 'enrolled.fd');
  writeFileSync(saved, 'enrolled variables');
  assert.is((await argsFor({ secureBoot: 'setup', efiVars: saved })).vars.toString(), 'enrolled variables');
  const arm = await qemuCommand({ arch: 'arm64', disk: '/dev/null', secureBoot: 'setup' }, tmp()).then(() => '', (e: Error) => e.message);
  assert.match(arm, /x86_64 UEFI \(OVMF\) only/);
});

test.run();
