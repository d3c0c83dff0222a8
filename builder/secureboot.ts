// UEFI Secure Boot with the owner's keys: `kiln keys generate` makes a PK, KEK and db (openssl)
// and systemd-boot's enrolment files (efitools); `kiln build --secure-boot-key/--secure-boot-cert`
// signs systemd-boot and every unified kernel image with Debian's sbsign. The PKCS#7 signature
// sbsign writes carries a signingTime taken from the clock: the builder pins that clock to
// SOURCE_DATE_EPOCH (Debian's faketime), and RSA PKCS#1 v1.5 signatures are deterministic, so a
// given key signs the same image to the same bytes. See docs/verified-boot.md, "Secure Boot".
import { createHash, createPrivateKey, randomUUID, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { $ } from 'zx';
import type { EspFile } from './esp.ts';
import { tool } from './tools.ts';

// ---------------------------------------------------------------------------------------------
// keys

/** The three keys, in the order the firmware's variables depend on each other. */
export const SB_KEYS = ['PK', 'KEK', 'db'] as const;
export type SbKeyName = (typeof SB_KEYS)[number];
/** Folder (under the keys folder, and on the ESP as loader/keys/<name>) of the enrolment files. */
export const SB_KEYS_NAME = 'kiln';
/** systemd-boot enrols loader/keys/auto by itself (secure-boot-enroll force) when in setup mode. */
export const SB_AUTO_NAME = 'auto';
export const SB_GUID_FILE = 'secure-boot.guid';
/** RSA 2048: the size UEFI requires every firmware to accept for PK, KEK and db (4096 is not universal). */
const RSA_BITS = 2048;
/** 20 years; firmware does not check db certificate dates, but tools that read them do. */
const VALID_DAYS = 7305;
const MAX_PEM = 64 * 1024;

export const sbSubject = (name: SbKeyName, tag: string) => `kiln Secure Boot ${name} (${tag})`;

/** The files `generateSecureBootKeys` writes, relative to its folder. */
export function secureBootKeyFiles(): string[] {
  return [
    ...SB_KEYS.flatMap((k) => [`${k}.key`, `${k}.crt`]),
    ...SB_KEYS.map((k) => `loader/keys/${SB_KEYS_NAME}/${k}.auth`),
    SB_GUID_FILE,
  ];
}

/**
 * Throws, naming the file, if any Secure Boot key file already exists in `outDir`, or naming
 * the package if a tool is missing: checked before `kiln keys generate` writes anything.
 */
export function checkNoSecureBootKeys(outDir: string): void {
  for (const t of ['openssl', 'cert-to-efi-sig-list', 'sign-efi-sig-list']) tool(t);
  for (const f of secureBootKeyFiles()) {
    const p = join(outDir, f);
    if (existsSync(p)) throw new Error(`${p} already exists; refusing to overwrite a Secure Boot key (machines that enrolled it would no longer boot new images): move it away first`);
  }
}

export interface SecureBootKeys {
  guid: string;
  key: Record<SbKeyName, string>;
  cert: Record<SbKeyName, string>;
  /** loader/keys/kiln/{PK,KEK,db}.auth */
  auth: Record<SbKeyName, string>;
  authDir: string;
}

/**
 * PK, KEK and db as unencrypted PEM keys (mode 0600) and self-signed X.509 certificates, and the
 * signed EFI signature lists systemd-boot (or efitools' efi-updatevar) enrols: PK signed by
 * itself, KEK by PK, db by KEK. One owner GUID for all three, kept in secure-boot.guid.
 */
export async function generateSecureBootKeys(outDir: string): Promise<SecureBootKeys> {
  checkNoSecureBootKeys(outDir);
  const openssl = tool('openssl'), toEsl = tool('cert-to-efi-sig-list'), signEsl = tool('sign-efi-sig-list');
  const guid = randomUUID();
  const tag = guid.slice(0, 8);
  const authDir = join(outDir, 'loader/keys', SB_KEYS_NAME);
  mkdirSync(authDir, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), 'kiln-sbkeys-'));
  const key = {} as Record<SbKeyName, string>, cert = {} as Record<SbKeyName, string>, auth = {} as Record<SbKeyName, string>;
  const sh = $({ quiet: true });
  try {
    for (const k of SB_KEYS) {
      key[k] = join(outDir, `${k}.key`);
      cert[k] = join(outDir, `${k}.crt`);
      auth[k] = join(authDir, `${k}.auth`);
      // The key is written to a private temp folder first, then moved: never world-readable, even briefly.
      const tmpKey = join(tmp, `${k}.key`);
      await sh`${openssl} req -new -x509 -newkey ${`rsa:${RSA_BITS}`} -noenc -sha256 -days ${VALID_DAYS} -subj ${`/CN=${sbSubject(k, tag)}/`} -keyout ${tmpKey} -out ${cert[k]}`;
      chmodSync(tmpKey, 0o600);
      renameSync(tmpKey, key[k]);
      await sh`${toEsl} -g ${guid} ${cert[k]} ${join(tmp, `${k}.esl`)}`;
    }
    const signer: Record<SbKeyName, SbKeyName> = { PK: 'PK', KEK: 'PK', db: 'KEK' };
    for (const k of SB_KEYS) {
      const s = signer[k];
      await sh`${signEsl} -g ${guid} -k ${key[s]} -c ${cert[s]} ${k} ${join(tmp, `${k}.esl`)} ${auth[k]}`;
      parseAuth2(readFileSync(auth[k]), auth[k]); // what efitools wrote is what the firmware will parse
    }
    writeFileSync(join(outDir, SB_GUID_FILE), `${guid}\n`, { flag: 'wx' });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { guid, key, cert, auth, authDir };
}

/** What `kiln keys generate` prints about the Secure Boot keys. */
export function secureBootKeysSummary(k: SecureBootKeys): string {
  return `wrote Secure Boot keys ${SB_KEYS.map((n) => k.key[n]).join(', ')} (private, mode 0600: keep them offline) and their certificates (.crt)\n` +
    `wrote ${k.authDir}/{PK,KEK,db}.auth (signed lists for enrolment: kiln build --secure-boot-enroll, or efi-updatevar)\n` +
    `sign images with --secure-boot-key ${k.key.db} --secure-boot-cert ${k.cert.db}; owner GUID ${k.guid}`;
}

// ---------------------------------------------------------------------------------------------
// EFI_VARIABLE_AUTHENTICATION_2 (.auth) and EFI_SIGNATURE_LIST, UEFI 2.10 sections 8.2.2 and 32.4.1

export const EFI_CERT_TYPE_PKCS7_GUID = '4aafd29d-68df-49ee-8aa9-347d375665a7';
export const EFI_CERT_X509_GUID = 'a5c059a1-94e4-4aa7-87b5-ab155c2bf072';
const WIN_CERT_TYPE_EFI_GUID = 0x0ef1;
const WIN_CERT_REVISION = 0x0200;

/** A GUID from its mixed-endian on-disk form (three little-endian fields, then bytes). */
export function readGuid(b: Buffer, at: number): string {
  const h = (s: number, e: number) => b.subarray(at + s, at + e).toString('hex');
  const le = (s: number, e: number) => Buffer.from(b.subarray(at + s, at + e)).reverse().toString('hex');
  return `${le(0, 4)}-${le(4, 6)}-${le(6, 8)}-${h(8, 10)}-${h(10, 16)}`;
}

export interface EfiTime { year: number; month: number; day: number; hour: number; minute: number; second: number }
export interface SignatureList { type: string; entries: { owner: string; data: Buffer }[] }
export interface Auth2 { time: EfiTime; pkcs7: Buffer; lists: SignatureList[] }

/** Parses EFI signature lists (the payload of db, KEK, PK). */
export function parseSignatureLists(b: Buffer, what = 'signature list'): SignatureList[] {
  const lists: SignatureList[] = [];
  let at = 0;
  while (at < b.length) {
    if (at + 28 > b.length) throw new Error(`${what}: truncated EFI_SIGNATURE_LIST header at byte ${at}`);
    const listSize = b.readUInt32LE(at + 16), headerSize = b.readUInt32LE(at + 20), sigSize = b.readUInt32LE(at + 24);
    if (listSize < 28 + headerSize || at + listSize > b.length || sigSize < 16 || (listSize - 28 - headerSize) % sigSize) {
      throw new Error(`${what}: EFI_SIGNATURE_LIST at byte ${at} has inconsistent sizes (list ${listSize}, header ${headerSize}, signature ${sigSize})`);
    }
    const entries: SignatureList['entries'] = [];
    for (let s = at + 28 + headerSize; s < at + listSize; s += sigSize) entries.push({ owner: readGuid(b, s), data: b.subarray(s + 16, s + sigSize) });
    lists.push({ type: readGuid(b, at), entries });
    at += listSize;
  }
  return lists;
}

/** Parses an authenticated variable update: EFI_TIME, WIN_CERTIFICATE_UEFI_GUID (PKCS#7), then the signature lists. */
export function parseAuth2(b: Buffer, what = '.auth file'): Auth2 {
  if (b.length < 16 + 24) throw new Error(`${what}: ${b.length} bytes is too short for an EFI_VARIABLE_AUTHENTICATION_2 header`);
  const time: EfiTime = { year: b.readUInt16LE(0), month: b[2]!, day: b[3]!, hour: b[4]!, minute: b[5]!, second: b[6]! };
  const certLen = b.readUInt32LE(16);
  if (b.readUInt16LE(20) !== WIN_CERT_REVISION || b.readUInt16LE(22) !== WIN_CERT_TYPE_EFI_GUID) throw new Error(`${what}: no WIN_CERTIFICATE_UEFI_GUID after the timestamp (not a time-based authenticated variable)`);
  if (readGuid(b, 24) !== EFI_CERT_TYPE_PKCS7_GUID) throw new Error(`${what}: the certificate is not EFI_CERT_TYPE_PKCS7_GUID`);
  if (certLen < 24 || 16 + certLen > b.length) throw new Error(`${what}: certificate length ${certLen} runs past the end of the file`);
  return { time, pkcs7: b.subarray(40, 16 + certLen), lists: parseSignatureLists(b.subarray(16 + certLen), what) };
}

/** True when the .auth update carries this certificate (DER) as an X.509 signature. */
export function authTrusts(auth: Auth2, certDer: Buffer): boolean {
  return auth.lists.some((l) => l.type === EFI_CERT_X509_GUID && l.entries.some((e) => e.data.equals(certDer)));
}

// ---------------------------------------------------------------------------------------------
// signing

export interface SecureBootOptions {
  /** db signing key: unencrypted PEM (RSA). */
  key: string;
  /** Its X.509 certificate (PEM), enrolled in the firmware's db. */
  cert: string;
  /** A `kiln keys generate` folder (or its loader/keys/<name>): its .auth files go on the ESP for systemd-boot to enrol. */
  enroll?: string;
}

export interface SecureBootSigner {
  key: string;
  cert: string;
  /** Changes when the key, the certificate or the enrolment files change (part of the build key). */
  fingerprint: string;
  /** PK, KEK, db .auth files to place on the ESP at loader/keys/auto. */
  enroll?: Record<SbKeyName, string>;
}

function readLimited(file: string, flag: string, max = MAX_PEM): Buffer {
  if (!existsSync(file)) throw new Error(`${flag} ${file} does not exist (make one with 'kiln keys generate --out DIR': use its db.key and db.crt)`);
  const size = statSync(file).size;
  if (size > max) throw new Error(`${flag} ${file} is ${size} bytes; a PEM key or certificate is at most ${max}`);
  return readFileSync(file);
}

/** Checks the key, certificate and enrolment files before anything is built. */
export function secureBootSigner(o: SecureBootOptions): SecureBootSigner {
  const keyPem = readLimited(o.key, '--secure-boot-key');
  const certPem = readLimited(o.cert, '--secure-boot-cert');
  const text = keyPem.toString('latin1');
  if (/ENCRYPTED/.test(text)) throw new Error(`--secure-boot-key ${o.key} is passphrase-protected; sbsign needs an unencrypted PEM key: 'openssl pkey -in ${o.key} -out db-plain.key' (keep it somewhere private)`);
  let key;
  try { key = createPrivateKey(keyPem); } catch (e) { throw new Error(`--secure-boot-key ${o.key} is not a PEM private key (${(e as Error).message})`); }
  if (key.asymmetricKeyType !== 'rsa') throw new Error(`--secure-boot-key ${o.key} is a ${key.asymmetricKeyType} key; UEFI firmware verifies RSA signatures only`);
  let cert: X509Certificate;
  try { cert = new X509Certificate(certPem); } catch (e) { throw new Error(`--secure-boot-cert ${o.cert} is not a PEM X.509 certificate (${(e as Error).message})`); }
  if (!cert.checkPrivateKey(key)) throw new Error(`--secure-boot-cert ${o.cert} does not belong to --secure-boot-key ${o.key} (its public key differs)`);
  const h = createHash('sha256').update(keyPem).update(certPem);
  let enroll: SecureBootSigner['enroll'];
  if (o.enroll) {
    const dir = existsSync(join(o.enroll, 'loader/keys', SB_KEYS_NAME)) ? join(o.enroll, 'loader/keys', SB_KEYS_NAME) : o.enroll;
    enroll = {} as Record<SbKeyName, string>;
    for (const k of SB_KEYS) {
      const f = join(dir, `${k}.auth`);
      const buf = readLimited(f, '--secure-boot-enroll', 1024 * 1024);
      const auth = parseAuth2(buf, f);
      if (k === 'db' && !authTrusts(auth, cert.raw)) throw new Error(`--secure-boot-enroll ${f} does not hold --secure-boot-cert ${o.cert}: after enrolment the firmware would refuse this image; sign with the db.key/db.crt from the same 'kiln keys generate' folder`);
      enroll[k] = f;
      h.update(k).update(buf);
    }
  }
  return { key: o.key, cert: o.cert, fingerprint: h.digest('hex'), enroll };
}

/** 'YYYY-MM-DD hh:mm:ss' in UTC, as faketime takes a frozen clock. */
export function faketimeStamp(epoch: number): string {
  const d = new Date(epoch * 1000);
  if (!Number.isFinite(d.getTime()) || epoch < 0) throw new Error(`SOURCE_DATE_EPOCH ${epoch} is not a usable signing time`);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, '');
}

/**
 * Signs a PE image (EFI application, UKI) with sbsign, writing `out` (default: in place), and
 * checks the result with sbverify. The signing time is `sourceDateEpoch`.
 */
export async function signEfi(s: Pick<SecureBootSigner, 'key' | 'cert'>, file: string, o: { out?: string; sourceDateEpoch?: number } = {}): Promise<string> {
  const out = o.out ?? file;
  const sde = o.sourceDateEpoch ?? Number(process.env.SOURCE_DATE_EPOCH ?? 0);
  const tmp = `${out}.signing`;
  rmSync(tmp, { force: true });
  const env = { ...process.env, TZ: 'UTC' };
  try {
    const r = await $({ quiet: true, nothrow: true, env })`${tool('faketime')} -f ${faketimeStamp(sde)} ${tool('sbsign')} --key ${s.key} --cert ${s.cert} --output ${tmp} ${file}`;
    if (r.exitCode !== 0 || !existsSync(tmp)) throw new Error(`sbsign could not sign ${file}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' / ')}`);
    const v = await $({ quiet: true, nothrow: true })`${tool('sbverify')} --cert ${s.cert} ${tmp}`;
    if (v.exitCode !== 0) throw new Error(`${basename(file)} signed by sbsign does not verify against ${s.cert}: ${(v.stderr || v.stdout).trim()}`);
    renameSync(tmp, out);
  } finally {
    rmSync(tmp, { force: true });
  }
  return out;
}

const BOOT_LOADER = /^EFI\/BOOT\/BOOT(X64|AA64)\.EFI$/i;

/**
 * The ESP's files with Secure Boot applied: the boot loader (EFI/BOOT/BOOT*.EFI) replaced by a
 * signed copy in `work`, and, with enrolment files, those at loader/keys/auto plus
 * `secure-boot-enroll force` in loader.conf (systemd-boot enrols them in setup mode, then
 * resets). UKIs are expected to be signed already (they are release artifacts too).
 */
export async function secureBootEsp(s: SecureBootSigner | undefined, files: EspFile[], work: string, sourceDateEpoch?: number): Promise<EspFile[]> {
  if (!s) return files;
  mkdirSync(work, { recursive: true });
  const out: EspFile[] = [];
  for (const f of files) {
    if (BOOT_LOADER.test(f.path)) {
      if (!f.src) throw new Error(`ESP boot loader ${f.path} has no source file to sign`);
      out.push({ ...f, src: await signEfi(s, f.src, { out: join(work, `signed-${basename(f.path)}`), sourceDateEpoch }) });
    } else if (s.enroll && f.path === 'loader/loader.conf') {
      out.push({ path: f.path, data: Buffer.concat([f.data ?? readFileSync(f.src!), Buffer.from('secure-boot-enroll force\n')]) });
    } else out.push(f);
  }
  if (s.enroll) for (const k of SB_KEYS) out.push({ path: `loader/keys/${SB_AUTO_NAME}/${k}.auth`, src: s.enroll[k] });
  return out;
}
