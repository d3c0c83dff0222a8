// The validators compiled to code for the node's bundle (builder/validators.ts) give the same
// verdicts, errors and filled-in defaults as the ones compiled at run time in a source
// checkout, over every key of the config schema with values of every kind, and over
// mutations of a valid channel manifest and trust root. The bundle carries no ajv compiler.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { build } from 'esbuild';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { CLI_ENTRY, INIT_ENTRY, precompiledValidators } from '../../builder/bundle.ts';
import { withoutAnnotations } from '../../builder/validators.ts';
import { MANIFEST_AJV_OPTIONS, MANIFEST_JSON_SCHEMA, ROOT_JSON_SCHEMA, makeTrustRoot } from '../../channels/manifest.ts';
import { configAjv } from '../../init/config/ajv.ts';
import { fillDefaults } from '../../init/config/defaults.ts';
import { childSchema, CONFIG_SCHEMA, type SchemaNode } from '../../init/config/schema.ts';
import { generateKeyPairSync } from 'node:crypto';

const REPO = new URL('../..', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'kiln-validators-'));

/** The compiled validators, bundled exactly as for the node and loaded back. */
async function bundled(): Promise<{ config: Record<string, ValidateFunction>; channels: Record<string, ValidateFunction>; source: string }> {
  const out = join(dir, 'validators.cjs');
  await build({
    stdin: { contents: "export { PRECOMPILED as config } from './init/config/precompiled.ts';\nexport { PRECOMPILED as channels } from './channels/precompiled.ts';\n", resolveDir: REPO, loader: 'ts' },
    outfile: out, bundle: true, platform: 'node', format: 'cjs', logLevel: 'silent', plugins: [precompiledValidators()],
  });
  return { ...createRequire(import.meta.url)(out), source: readFileSync(out, 'utf8') };
}

const CANDIDATES: unknown[] = [
  'x', '', 'a'.repeat(300), 0, 1, -1, 1.5, 65536, true, false, null, [], ['x'], [1], [['a', 'b']], {}, { a: 'b' }, { name: 'n' }, { path: '/p' },
  '10.0.0.1', '10.0.0.0/8', '10.0.0.1/33', 'fe80::1', '::/0', '300.1.1.1', 'https://a.example', 'http://a', 'Sat 02:00-04:00',
  '0644', 'github:alice', 'ssh-ed25519 AAAA x', 'eth0', 'f'.repeat(64), 'default', 'base64', 'lease', 'server',
];

/** Every path the config schema describes (declared keys, map entries, list items). */
function schemaPaths(node: SchemaNode | undefined, path: (string | number)[] = [], depth = 0): (string | number)[][] {
  if (!node || depth > 6) return [];
  const kids: (string | number)[] = [...Object.keys(node.properties ?? {}), ...(typeof node.additionalProperties === 'object' ? ['k1'] : []), ...(typeof node.items === 'object' ? [0] : [])];
  return kids.flatMap((k) => [[...path, k], ...schemaPaths(childSchema(node, k), [...path, k], depth + 1)]);
}
function setAt(path: (string | number)[], value: unknown): unknown {
  if (!path.length) return value;
  const [k, ...rest] = path;
  if (typeof k === 'number') return [setAt(rest, value)];
  return { [k]: setAt(rest, value) };
}
/** Each leaf replaced by each candidate, each key dropped, an unknown key added to each object. */
function mutations(base: unknown): unknown[] {
  const out: unknown[] = [];
  const walk = (v: unknown, replace: (x: unknown) => unknown) => {
    for (const c of CANDIDATES) out.push(replace(c));
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, (y) => replace(v.map((z, j) => (i === j ? y : z)))));
    else if (v && typeof v === 'object') {
      out.push(replace({ ...v, zz: 1 }));
      for (const k of Object.keys(v)) {
        const { [k]: _dropped, ...rest } = v as Record<string, unknown>;
        out.push(replace(rest));
        walk((v as Record<string, unknown>)[k], (y) => replace({ ...v, [k]: y }));
      }
    }
  };
  walk(base, (x) => x);
  return out;
}

/** What a validator says about a value: verdict, errors, and the value afterwards (defaults). */
function verdict(v: ValidateFunction, value: unknown, schemaPath = (p: string, _instancePath: string) => p) {
  const data = structuredClone(value);
  const ok = v(data);
  return { ok, errors: (v.errors ?? []).map((e) => ({ instancePath: e.instancePath, schemaPath: schemaPath(e.schemaPath, e.instancePath), keyword: e.keyword, params: e.params, message: e.message })), data };
}
/**
 * An error's schema path in perKeySchema's split config schema, as the same place in
 * CONFIG_SCHEMA. A key's function reports paths from its own schema, and the key is the first
 * segment of the data's path (the second under kiln:, whose own checks see the first only).
 */
function unsplit(p: string, instancePath: string): string {
  const [top, key] = instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (top === undefined) return p;
  return p.replace(/^#/, top === 'kiln' && key !== undefined ? `#/properties/kiln/properties/${key}` : `#/properties/${top}`);
}
function same(name: string, compiled: ValidateFunction, runtime: ValidateFunction, values: unknown[], schemaPath?: (p: string, instancePath: string) => string): { valid: number; invalid: number } {
  let valid = 0, invalid = 0;
  for (const value of values) {
    const a = verdict(compiled, value, schemaPath), b = verdict(runtime, value);
    assert.equal(a, b, `${name}: ${JSON.stringify(value)}`);
    if (a.ok) valid++; else invalid++;
  }
  return { valid, invalid };
}

const compiled = await bundled();

test('the compiled config validators agree with the runtime ones on every key and value kind', () => {
  const configs: unknown[] = [
    {}, parse(readFileSync(join(REPO, 'test/fixtures/ec2-config.yaml'), 'utf8')),
    parse('hostname: n1\nusers: [default, {name: bob, groups: [wheel], sudo: ALL}]\nwrite_files: [{path: /etc/motd, content: hi}]\nkiln:\n  dns_nameservers: [1.1.1.1]\n  network: {interfaces: {eth0: {addresses: [10.0.0.2/24], gateway: 10.0.0.1}}}\n  sysctls: {net.ipv4.ip_forward: "1"}\n'),
  ];
  for (const path of schemaPaths(CONFIG_SCHEMA)) for (const c of CANDIDATES) configs.push(setAt(path, c));
  const check = same('check', compiled.config.check, configAjv(false).compile(CONFIG_SCHEMA), configs, unsplit);
  // Both verdicts were exercised, many times.
  assert.ok(check.valid > 100 && check.invalid > 1000, JSON.stringify(check));
});

test("fillDefaults gives what ajv's useDefaults gives, key order included, on every key and value kind", () => {
  const configs: unknown[] = [{}, parse(readFileSync(join(REPO, 'test/fixtures/ec2-config.yaml'), 'utf8')),
    parse('users: [default, {name: bob}]\nwrite_files: [{path: /etc/motd}]\nkiln:\n  network: {interfaces: {eth0: {addresses: [10.0.0.2/24]}}}\n  k3s: {}\n')];
  for (const path of schemaPaths(CONFIG_SCHEMA)) for (const c of [...CANDIDATES, {}]) configs.push(setAt(path, c));
  const ajvFill = configAjv(true).compile(CONFIG_SCHEMA);
  let compared = 0;
  for (const value of configs) {
    const byAjv = structuredClone(value);
    if (!ajvFill(byAjv)) continue; // defaults are filled only into valid configs
    const ours = structuredClone(value);
    fillDefaults(CONFIG_SCHEMA, ours);
    assert.is(JSON.stringify(ours), JSON.stringify(byAjv), JSON.stringify(value));
    compared++;
  }
  assert.ok(compared > 100, `${compared} valid configs compared`);
});

test('the config schema keeps to what fillDefaults reads: no keyword that would hide or condition a default', () => {
  const FILLS = new Set(['properties', 'additionalProperties', 'items', 'default']);
  const IGNORED = new Set(['$schema', '$id', 'title', 'required', 'type', 'description', 'pattern', 'format', 'minimum', 'maximum', 'minLength', 'maxLength', 'minItems', 'maxItems', 'maxProperties',
    'enum', 'const', 'propertyNames', 'uniqueItems', 'x-aliases', 'x-warn-aliases', 'x-merge', 'x-merge-key', 'x-hint', 'x-string', 'examples', 'deprecated']);
  const unknown = new Set<string>();
  const walk = (n: SchemaNode) => {
    for (const k of Object.keys(n)) if (!FILLS.has(k) && !IGNORED.has(k)) unknown.add(k);
    for (const s of Object.values(n.properties ?? {})) walk(s as SchemaNode);
    if (typeof n.additionalProperties === 'object') walk(n.additionalProperties);
    if (typeof n.items === 'object' && !Array.isArray(n.items)) walk(n.items);
  };
  walk(CONFIG_SCHEMA);
  assert.equal([...unknown], [], 'a keyword here may change where ajv applies defaults: teach init/config/defaults.ts about it, or list it as ignored');
});

test('the compiled config checks are made from the schema without its annotations, and only the annotations go', () => {
  const node = {
    type: 'object', description: 'd', default: {}, 'x-hint': 'h', additionalProperties: false, required: ['default'],
    properties: {
      default: { type: 'string', description: 'a key named default', enum: ['a', 'b'], examples: ['a'] },
      description: { type: 'array', items: { type: 'string', pattern: '^x', 'x-hint': 'h' }, 'x-merge': 'append' },
      map: { type: 'object', propertyNames: { pattern: '^[a-z]+$', 'x-hint': 'h' }, additionalProperties: { type: 'integer', minimum: 1, title: 't' } },
    },
    $defs: { one: { type: 'boolean', deprecated: true } },
  };
  assert.equal(withoutAnnotations(node), {
    type: 'object', additionalProperties: false, required: ['default'],
    properties: {
      default: { type: 'string', enum: ['a', 'b'] },
      description: { type: 'array', items: { type: 'string', pattern: '^x' } },
      map: { type: 'object', propertyNames: { pattern: '^[a-z]+$' }, additionalProperties: { type: 'integer', minimum: 1 } },
    },
    $defs: { one: { type: 'boolean' } },
  });
  // What the bundle carries: no description or hint of the schema's left in the config checks.
  assert.not.ok(compiled.source.includes(CONFIG_SCHEMA.properties.hostname.description), 'a description is in the compiled checks');
  assert.not.ok(compiled.source.includes(CONFIG_SCHEMA.properties.hostname['x-hint']), 'a hint is in the compiled checks');
});

test('the compiled manifest and trust root validators agree with the runtime ones', () => {
  const ajv = new Ajv2020(MANIFEST_AJV_OPTIONS);
  const manifest = {
    schema: 'kiln-channel/1', channel: 'beta', serial: 7, issued: '2030-01-01T00:00:00Z', expires: '2030-02-01T00:00:00Z',
    releases: [{ version: '1.2.0', artifacts: { x86_64: { root: { url: '1.2.0/x86_64/root.img', size: 10, sha256: 'a'.repeat(64) } } } }],
  };
  const m = same('manifest', compiled.channels.manifest, ajv.compile(MANIFEST_JSON_SCHEMA), mutations(manifest));
  const root = makeTrustRoot([generateKeyPairSync('ed25519').publicKey]);
  const r = same('root', compiled.channels.root, ajv.compile(ROOT_JSON_SCHEMA), mutations(root));
  assert.ok(m.valid > 5 && m.invalid > 100 && r.valid > 1 && r.invalid > 20, JSON.stringify({ m, r }));
});

test('the node bundles carry the compiled validators and no schema compiler', async () => {
  for (const entry of [INIT_ENTRY, CLI_ENTRY]) {
    const r = await build({ entryPoints: [entry], write: false, metafile: true, bundle: true, platform: 'node', format: 'cjs', logLevel: 'silent', plugins: [precompiledValidators()] });
    const inputs = Object.keys(r.metafile!.inputs);
    assert.ok(inputs.includes('kiln-compiled:config-check'), entry);
    assert.equal(inputs.filter((i) => /node_modules\/ajv\//.test(i) && !/\/ajv\/dist\/runtime\//.test(i)), [], entry);
  }
});

test('config parsing in a bundle uses the compiled validators: same problems, same defaults', async () => {
  const out = join(dir, 'parse.cjs');
  await build({ entryPoints: [join(REPO, 'init/config/parse.ts')], outfile: out, bundle: true, platform: 'node', format: 'cjs', logLevel: 'silent', plugins: [precompiledValidators()] });
  const b = createRequire(import.meta.url)(out) as typeof import('../../init/config/parse.ts');
  const src = await import('../../init/config/parse.ts');
  for (const text of ['hostname: n1\nkiln:\n  dns_nameservers: [300.1.1.1]\n  bogus: 1\n', 'hostname: n1\nusers: [default]\n', 'kiln: [1]\n']) {
    assert.equal(b.parseConfig(text, 'c.yaml'), src.parseConfig(text, 'c.yaml'), text);
  }
  assert.equal(b.applyDefaults({}), src.applyDefaults({}));
  assert.ok(b.parseConfig('kiln:\n  dns_nameservers: [300.1.1.1]\n', 'c.yaml').problems.length === 1);
});

test('a module that would compile a schema on the node fails the build, naming itself', async () => {
  const probe = join(dir, 'probe.ts');
  writeFileSync(probe, "import { Ajv } from 'ajv';\nexport const a = new Ajv();\n");
  const e = await build({ entryPoints: [probe], write: false, bundle: true, platform: 'node', logLevel: 'silent', plugins: [precompiledValidators()] }).then(() => undefined, (x: Error) => x);
  assert.match(String(e?.message), /probe\.ts imports ajv: the node carries no schema compiler; compile the schema to code in builder\/validators\.ts/);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
