// Shared by the update tests: one release key pair (made once, kept under out/) and the
// images built with its trust root, so every update test reuses the same two builds.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { build, REPO } from '../../builder/build.ts';
import { createLogger } from '../../builder/log.ts';
import { generateKeys, KEY_FILE, TRUST_FILE } from '../../builder/release.ts';
import { K3S_STANDIN } from './image.ts';

const log = createLogger({ quiet: !process.env.KILN_VERBOSE });
const KEYS = join(REPO, 'out', 'update-keys');

export function updateKeys(): { keyFile: string; trustFile: string } {
  if (!existsSync(join(KEYS, TRUST_FILE))) return generateKeys(KEYS);
  return { keyFile: join(KEYS, KEY_FILE), trustFile: join(KEYS, TRUST_FILE) };
}

export const updateOut = (v: string) => join(REPO, 'out', `update-${v}`);

export function updateImage(v: string) {
  return build({ arches: ['x86_64'], formats: ['raw'], out: updateOut(v), version: v, trust: updateKeys().trustFile, k3sBinary: K3S_STANDIN, log });
}

export const readyRe = (v: string, slot: string) => new RegExp(`kiln: ready version=${v.replace(/[.]/g, '\\.')} slot=${slot} arch=x86_64[\\r\\n ]`);
