import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderDocs } from '../../init/config/docs.ts';
import { CONFIG_SCHEMA, type SchemaNode } from '../../init/config/schema.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const kiln = join(root, 'bin/kiln.js');

test('docs/config.md is up to date (regenerate: npx kiln config docs > docs/config.md)', () => {
  const committed = readFileSync(join(root, 'docs/config.md'), 'utf8');
  assert.ok(committed === `${renderDocs().trimEnd()}\n`, 'docs/config.md differs from the schema; run: npx kiln config docs > docs/config.md');
});

test('every key has a description and a default, and is in the docs', () => {
  const docs = renderDocs();
  const missing: string[] = [];
  const walk = (n: SchemaNode, p: string, inMapOrItem: boolean) => {
    for (const [k, c] of Object.entries<SchemaNode>(n.properties ?? {})) {
      const key = `${p}${k}`;
      // defaults cannot apply to required keys (they must be given)
      if (!c.description || (c.default === undefined && !(n.required ?? []).includes(k))) missing.push(key);
      if (!docs.includes(`### \`${key}\``)) missing.push(`${key} (docs)`);
      walk(c, `${key}.`, inMapOrItem);
      if (c.items) walk(c.items, `${key}[].`, true);
      if (typeof c.additionalProperties === 'object') walk(c.additionalProperties, `${key}.<name>.`, true);
    }
  };
  walk(CONFIG_SCHEMA, '', false);
  assert.equal(missing, []);
});

test('kiln config validate prints problems and exits 1, or prints ok', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-cfg-cli-'));
  const good = join(dir, 'good.yaml');
  const bad = join(dir, 'bad.yaml');
  writeFileSync(good, '#cloud-config\nhostname: node-1\nk3os:\n  sysctl: {vm.swappiness: 10}\n');
  writeFileSync(bad, 'hostname: node-1\nkiln:\n  chanel: beta\n  modules: 3\n');
  const ok = spawnSync(process.execPath, [kiln, 'config', 'validate', good], { encoding: 'utf8' });
  assert.is(ok.status, 0);
  assert.is(ok.stdout, `${good}: ok\n`);
  const r = spawnSync(process.execPath, [kiln, 'config', 'validate', good, bad], { encoding: 'utf8' });
  assert.is(r.status, 1);
  assert.is(r.stdout, `${good}: ok\n${bad}:3:3 kiln.chanel: unknown key 'chanel' (did you mean 'channel'?)\n${bad}:4:12 kiln.modules: expected a list, got number 3 (make it a list: [3])\n`);
  const none = spawnSync(process.execPath, [kiln, 'config', 'validate'], { encoding: 'utf8' });
  assert.is(none.status, 2);
  const docs = execFileSync(process.execPath, [kiln, 'config', 'docs'], { encoding: 'utf8' });
  assert.is(docs, `${renderDocs().trimEnd()}\n`);
});

test.run();
