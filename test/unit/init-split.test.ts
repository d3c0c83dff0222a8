// Init's two files (builder/bundle.ts, bundleSplit): boot's file holds what boot imports
// statically, the later file what init reaches only through a dynamic import, and a module both
// use is one instance, boot's.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleSplit, INIT_ENTRY, INIT_LATER } from '../../builder/bundle.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-init-split-'));

test("init's post-boot code, updater, add-ons and installer are in the later file, and no module is in both", async () => {
  const split = await bundleSplit(INIT_ENTRY, join(dir, 'init', 'init.js'));
  for (const m of ['init/boot/post-boot.ts', 'init/update/updater.ts', 'init/addons/apply.ts', 'init/install.ts', 'channels/manifest.ts']) {
    assert.ok(split.later.includes(m), `${m} is in the later file`);
    assert.not.ok(split.boot.includes(m), `${m} is not in boot's file`);
  }
  for (const m of ['init/log.ts', 'init/exec.ts', 'init/boot/install-task.ts', 'init/config/parse.ts']) assert.ok(split.boot.includes(m), `${m} is in boot's file`);
  assert.equal(split.boot.filter((m) => split.later.includes(m)), [], 'modules in both files');
  assert.ok(split.shared.includes('init/log.ts') && split.shared.some((m) => m.startsWith('node_modules/yaml/')), split.shared.join(' '));
  assert.ok(split.shared.every((m) => split.boot.includes(m)), 'a shared module is one of boot\'s');
});

test('a module both files import is one instance; a later module runs when imported, and only then', async () => {
  const src = join(dir, 'src');
  const files: Record<string, string> = {
    'state.ts': 'export let count = 0;\nexport function bump(): number { return ++count; }\n',
    'late.ts': "import { bump, count } from './state.ts';\nconsole.log('late loaded');\nexport function go(): number { bump(); return count; }\n",
    'unused.ts': "console.log('unused loaded');\nexport const x = 1;\n",
    'entry.ts': [
      "import { bump, count } from './state.ts';",
      'bump();',
      "console.log('boot', count);",
      "if (process.env.KILN_NEVER) void import('./unused.ts');",
      "void import('./late.ts').then((m) => { console.log('late says', m.go()); console.log('boot sees', count); });",
      '',
    ].join('\n'),
  };
  mkdirSync(src, { recursive: true });
  for (const [n, t] of Object.entries(files)) writeFileSync(join(src, n), t);
  const out = join(dir, 'fixture', 'init.js');
  const split = await bundleSplit(join(src, 'entry.ts'), out);
  const name = (m: string) => m.split('/').pop();
  assert.equal(split.boot.map(name), ['entry.ts', 'state.ts']);
  assert.equal(split.later.map(name), ['late.ts', 'unused.ts']);
  assert.equal(split.shared.map(name), ['state.ts']);
  assert.not.ok(readFileSync(out, 'utf8').includes('late loaded'));
  assert.not.ok(readFileSync(join(dir, 'fixture', INIT_LATER), 'utf8').includes('++count'), "the later file carries no copy of boot's module");
  // Plain console output whatever runs the test (uvu's own runner forces colour).
  const run = execFileSync(process.execPath, [out], { encoding: 'utf8', env: { ...process.env, KILN_NEVER: '', FORCE_COLOR: '0' } });
  assert.equal(run.trim().split('\n'), ['boot 1', 'late loaded', 'late says 2', 'boot sees 2']);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
