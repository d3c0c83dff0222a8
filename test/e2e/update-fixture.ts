// Shared by the update tests: one release key pair (made once, kept under out/) and the
// images built with its trust root, so every update test reuses the same two builds; and the
// channel + user-data setup every update test starts from. The images are signed for Secure
// Boot with the key Debian's OVMF snakeoil variable store trusts: they boot the same in plain
// OVMF, and the update test boots them under Secure Boot without an extra build.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, REPO } from '../../builder/build.ts';
import { createLogger } from '../../builder/log.ts';
import { Vm } from '../../builder/qemu.ts';
import { generateKeys, KEY_FILE, publishRelease, TRUST_FILE } from '../../builder/release.ts';
import { hostFile } from '../../builder/tools.ts';
import { $ } from 'zx';
import { cidataImage, freePort, sshKeypair, staticServer } from './helpers.ts';
import { K3S_STANDIN, scratchCopy } from './image.ts';

const log = createLogger({ quiet: !process.env.KILN_VERBOSE });
const KEYS = join(REPO, 'out', 'update-keys');

export function updateKeys(): { keyFile: string; trustFile: string } {
  if (!existsSync(join(KEYS, TRUST_FILE))) {
    // Made aside and renamed into place: test files running side by side all end up with the
    // one pair that landed first.
    mkdirSync(join(REPO, 'out'), { recursive: true });
    const tmp = mkdtempSync(join(REPO, 'out', '.update-keys-'));
    generateKeys(tmp);
    try { renameSync(tmp, KEYS); } catch { rmSync(tmp, { recursive: true, force: true }); }
  }
  return { keyFile: join(KEYS, KEY_FILE), trustFile: join(KEYS, TRUST_FILE) };
}

/**
 * Debian's snakeoil db key (ovmf package), decrypted once under out/ because sbsign takes no
 * passphrase, and its certificate: what OVMF_VARS_4M.snakeoil.fd trusts (Vm secureBoot: 'snakeoil').
 */
export async function snakeoilSigner(): Promise<{ key: string; cert: string }> {
  const key = join(REPO, 'out', 'update-snakeoil-db.key');
  if (!existsSync(key)) {
    mkdirSync(join(REPO, 'out'), { recursive: true });
    const tmp = `${key}.${process.pid}`;
    await $({ quiet: true })`openssl pkey -in ${hostFile('ovmfSnakeoilKey')} -passin pass:snakeoil -out ${tmp}`;
    chmodSync(tmp, 0o600);
    renameSync(tmp, key);
  }
  return { key, cert: hostFile('ovmfSnakeoilCert') };
}

export const updateOut = (v: string) => join(REPO, 'out', `update-${v}`);

export async function updateImage(v: string) {
  return build({ arches: ['x86_64'], formats: ['raw'], out: updateOut(v), version: v, trust: updateKeys().trustFile, k3sBinary: K3S_STANDIN, secureBoot: await snakeoilSigner(), log });
}

export const readyRe = (v: string, slot: string, arch = 'x86_64') => new RegExp(`kiln: ready version=${v.replace(/[.]/g, '\\.')} slot=${slot} arch=${arch}[\\r\\n ]`);

/** Signs the build in `from` with the update key and publishes it on the stable channel of the tree `channels`. */
export function publishStable(from: string, channels: string) {
  return publishRelease({ channel: 'stable', from, to: channels, key: updateKeys().keyFile });
}

/** The user-data of a canary node (takes a release at once) following the channel tree at `url`, optionally with root's SSH key. */
export function followUserData(url: string, pollMinutes: number, sshPub?: string, updates = ''): string {
  return `#cloud-config\n${sshPub ? `ssh_authorized_keys: ['${sshPub}']\n` : ''}kiln:\n  updates: {url: '${url}', canary: true, poll_minutes: ${pollMinutes}${updates ? `, ${updates}` : ''}}\n`;
}

/**
 * Where the x86_64 update tests start: v1 (1.0.0) and v2 (1.1.0) built, v2 published on the
 * stable channel of a fresh tree served over HTTP (optionally throttled), an SSH key pair, a
 * CIDATA volume that makes the node follow that channel (polling rarely, so only `kiln
 * upgrade` moves it), and a scratch copy of v1's disk. `boot()` starts a VM on that disk, in
 * OVMF's Secure Boot firmware with the snakeoil keys enrolled when `secureBoot` is set.
 */
export async function x86UpdateSetup(name: string, serve: { bytesPerSecond?: number; ranges?: boolean } = {}, updates = '', secureBoot = false) {
  const work = mkdtempSync(join(tmpdir(), `kiln-${name}-`));
  const channels = join(work, 'channels');
  const v1 = await updateImage('1.0.0');
  await updateImage('1.1.0');
  await publishStable(updateOut('1.1.0'), channels);
  const http = await staticServer(channels, serve);
  const me = sshKeypair();
  const cidata = await cidataImage(followUserData(`http://10.0.2.2:${http.port}`, 600, me.pub, updates));
  const disk = await scratchCopy(join(updateOut('1.0.0'), v1.outputs.find((o) => o.kind === 'raw')!.file));
  const boot = async (): Promise<{ vm: Vm; port: number }> => {
    const port = await freePort();
    const vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 384, hostfwd: [[port, 22]], extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`], ...(secureBoot ? { secureBoot: 'snakeoil' as const } : {}) });
    return { vm, port };
  };
  return { work, channels, http, me, disk, cidata, boot };
}
