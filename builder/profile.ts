// Image profiles (images/<name>.yaml): what to build. The JSON Schema below is the one
// place each setting is declared (type, default, help); validation, defaults and
// `kiln build --help-profile` all derive from it.
import { Ajv } from 'ajv';
import { readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parse } from 'yaml';
import { ARCHES, type Arch } from './arch.ts';

export const FORMATS = ['raw', 'qcow2', 'raw.zst', 'iso', 'rpi'] as const;
export type Format = (typeof FORMATS)[number];

const source = {
  type: 'object', additionalProperties: false, required: ['mirror', 'suite'],
  properties: {
    mirror: { type: 'string', description: 'Archive base URL (plain HTTP is fine: the signed InRelease is the trust anchor)' },
    suite: { type: 'string', description: 'Suite, e.g. bookworm, bookworm-updates, bookworm-security' },
    components: { type: 'array', items: { type: 'string' }, default: ['main'], description: 'Archive components' },
  },
} as const;

export const PROFILE_SCHEMA = {
  type: 'object', additionalProperties: false, required: ['name'],
  properties: {
    name: { type: 'string', description: 'Profile name; the lock file is images/<name>.lock.json' },
    version: { type: 'string', default: '0.1.0', description: 'Image version when --version is not given' },
    arches: { type: 'array', items: { enum: ARCHES }, default: ['x86_64'], description: 'Target architectures' },
    formats: { type: 'array', items: { enum: FORMATS }, default: ['raw'], description: 'Output formats' },
    update_target: {
      type: 'string', pattern: '^[a-z0-9_]*\\{arch\\}[a-z0-9_]*$', default: '{arch}',
      description: "This image's name in channel manifests ({arch} becomes x86_64 or arm64). Nodes take only releases for their own target, so an image with another kernel or board needs its own, e.g. '{arch}_rpi'",
    },
    kernel: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        flavour: { enum: ['cloud', 'generic'], default: 'cloud', description: "Debian kernel flavour: 'cloud' (small, virtual machines) or 'generic' (all hardware)" },
        cmdline: { type: 'string', default: 'quiet panic=10 cryptomgr.notests=1', description: "Extra kernel command line (console and slot are added). cryptomgr.notests=1 skips the kernel's crypto self-tests at boot, as kernels built with the upstream default do (fips=1 runs them regardless)" },
        module_signatures: {
          enum: ['auto', 'keep'], default: 'auto',
          description: "Debian's signatures on the kernel modules. 'auto': kept when the image is signed for Secure Boot (--secure-boot-key) or the command line enforces them (module.sig_enforce=1, lockdown=), where the kernel refuses unsigned modules; otherwise removed, so the kernel does not check each module as it loads it (the verified root and the UKI already vouch for them; the kernel notes one unsigned module in its log and taint flags). 'keep': always kept",
        },
      },
    },
    modules: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        stage1: { type: 'array', items: { type: 'string' }, default: [], description: 'Modules the stage-1 initramfs loads to find and mount the root and data' },
        boot: { type: 'array', items: { type: 'string' }, default: [], description: 'Modules PID 1 loads at boot (dependencies are added)' },
        include: { type: 'array', items: { type: 'string' }, default: [], description: 'Extra modules shipped in the root but not loaded at boot' },
        coldplug_stage1: { type: 'array', items: { type: 'string', pattern: '^(kernel/)?[a-z0-9_./-]+$' }, default: [], description: "Module folders under the kernel's kernel/ (e.g. drivers/ata) carried in stage 1 and loaded by each device's modalias (USB, SATA, NVMe, SD host controllers)" },
        coldplug: { type: 'array', items: { type: 'string', pattern: '^(kernel/)?[a-z0-9_./-]+$' }, default: [], description: "Module folders shipped in the root and loaded by modalias by init, at boot and when devices appear later (e.g. drivers/net/ethernet)" },
      },
    },
    firmware: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        packages: { type: 'array', items: { type: 'string' }, default: [], description: "Debian firmware packages (non-free-firmware) to take files from: only the files the shipped modules name (modinfo firmware:) go into /lib/firmware" },
        max_mib: { type: 'integer', minimum: 1, default: 32, description: 'Refuse to build when the chosen firmware files add up to more than this' },
      },
    },
    root: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        filesystem: { enum: ['squashfs', 'erofs'], default: 'squashfs', description: 'Read-only root image format' },
      },
    },
    disk: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        esp_mib: { type: 'integer', minimum: 64, default: 192, description: 'EFI system partition size (holds one UKI per slot)' },
        root_mib: { type: 'integer', minimum: 64, default: 320, description: 'Size of each root slot partition' },
        data_mib: { type: 'integer', minimum: 32, default: 256, description: 'Initial data partition size' },
      },
    },
    debian: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        sources: { type: 'array', items: source, default: [], description: 'Where Debian parts come from' },
        packages: { type: 'array', items: { type: 'string' }, default: [], description: 'Debian packages unpacked for the image (the kernel is added from kernel.flavour)' },
      },
    },
    k3s: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        version: { type: 'string', default: 'v1.34.3+k3s1', description: "k3s release (upstream binary, pinned in the lock); 'none' builds an image without k3s" },
      },
    },
    node: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        version: { type: 'string', default: '^24', description: 'Node.js runtime semver range (npm node-linux-<arch>)' },
      },
    },
  },
} as const;

export interface DebianSource { mirror: string; suite: string; components: string[] }
export interface Profile {
  name: string;
  version: string;
  arches: Arch[];
  formats: Format[];
  update_target: string;
  kernel: { flavour: 'cloud' | 'generic'; cmdline: string; module_signatures: 'auto' | 'keep' };
  modules: { stage1: string[]; boot: string[]; include: string[]; coldplug_stage1: string[]; coldplug: string[] };
  firmware: { packages: string[]; max_mib: number };
  root: { filesystem: 'squashfs' | 'erofs' };
  disk: { esp_mib: number; root_mib: number; data_mib: number };
  debian: { sources: DebianSource[]; packages: string[] };
  k3s: { version: string };
  node: { version: string };
  /** Absolute path of the profile file and of its lock. */
  file: string;
  lockFile: string;
}

export class ProfileError extends Error {}

const ajv = new Ajv({ allErrors: true, useDefaults: true });
const validate = ajv.compile(PROFILE_SCHEMA);

export const DEFAULT_PROFILE = fileURLToRepo('images/default.yaml');
/** Physical machines (generic kernel): what `kiln build --format iso` builds when no --profile is given. */
export const METAL_PROFILE = fileURLToRepo('images/metal.yaml');

function fileURLToRepo(p: string) {
  return resolve(dirname(new URL(import.meta.url).pathname), '..', p);
}

export function loadProfile(file = DEFAULT_PROFILE): Profile {
  let text: string;
  try { text = readFileSync(file, 'utf8'); } catch {
    throw new ProfileError(`profile ${file} not found (the built-in one is ${DEFAULT_PROFILE})`);
  }
  let data: any;
  try { data = parse(text) ?? {}; } catch (e) {
    throw new ProfileError(`${file}: ${(e as Error).message}`);
  }
  if (!validate(data)) {
    const msgs = (validate.errors ?? []).map((err) => {
      const key = err.instancePath.replace(/^\//, '').replace(/\//g, '.') || '(top level)';
      if (err.keyword === 'additionalProperties') {
        const allowed = Object.keys(schemaAt(err.schemaPath) ?? {});
        return `${file}: ${key === '(top level)' ? '' : key + '.'}${err.params.additionalProperty}: unknown key (valid: ${allowed.join(', ')})`;
      }
      if (err.keyword === 'enum') return `${file}: ${key}: '${valueAt(data, err.instancePath)}' is not valid (valid: ${err.params.allowedValues.join(', ')})`;
      return `${file}: ${key}: ${err.message}`;
    });
    throw new ProfileError(msgs.join('\n'));
  }
  const dir = dirname(resolve(file));
  return { ...data, file: resolve(file), lockFile: join(dir, `${basename(file).replace(/\.ya?ml$/, '')}.lock.json`) } as Profile;
}

function schemaAt(schemaPath: string): Record<string, unknown> | undefined {
  // "#/properties/kernel/additionalProperties" -> the properties of that object
  let node: any = PROFILE_SCHEMA;
  for (const part of schemaPath.replace(/^#\//, '').split('/').slice(0, -1)) node = node?.[part];
  return node?.properties;
}

function valueAt(data: any, pointer: string) {
  return pointer.split('/').slice(1).reduce((o, k) => o?.[k], data);
}

/** The profile's settings as help text, derived from the schema. */
export function profileHelp(): string {
  const lines: string[] = [];
  const walk = (node: any, prefix: string) => {
    for (const [k, v] of Object.entries<any>(node.properties ?? {})) {
      const key = prefix + k;
      if (v.type === 'object' && v.properties) { walk(v, key + '.'); continue; }
      const type = v.enum ? v.enum.join('|') : v.type === 'array' ? `list of ${v.items.enum ? v.items.enum.join('|') : v.items.type ?? 'object'}` : v.type;
      lines.push(`  ${key.padEnd(22)} ${type}${v.default !== undefined ? ` (default ${JSON.stringify(v.default)})` : ''}\n      ${v.description ?? ''}`);
    }
  };
  walk(PROFILE_SCHEMA, '');
  return lines.join('\n');
}

/** The profile's update target for `arch` (the key of its artifacts in channel manifests). */
export function updateTarget(profile: Pick<Profile, 'update_target'>, arch: Arch): string {
  return profile.update_target.replace('{arch}', arch);
}

/**
 * The ISO is what people write to a USB stick for a real machine, so without --profile it is
 * built from the hardware profile (generic kernel, drivers by modalias); the cloud formats keep
 * the default profile's small kernel. Both at once would need two profiles: say so.
 */
export function profileFor(formats: string[], profile?: string): string | undefined {
  if (profile || !formats.includes('iso')) return profile;
  const others = formats.filter((f) => f !== 'iso');
  if (others.length) throw new Error(`--format iso is built from ${METAL_PROFILE} (Debian's generic kernel, for real machines) and ${others.join(', ')} from the default profile: run them as two builds, or pass --profile to build all of them from one profile`);
  return METAL_PROFILE;
}
