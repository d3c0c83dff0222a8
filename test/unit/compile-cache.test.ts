// init's compile cache (init/compile-cache.ts): only a folder that could be made and written is
// handed to Node (Node 24 hung making one itself), and other bundles' caches are removed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { enableCompileCache, flushCompileCache } from '../../init/compile-cache.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'kiln-cc-'));

test('a writable folder named by the bundle hash is handed to Node; other bundles\' go', () => {
  const root = tmp();
  mkdirSync(join(root, '0123456789abcdef'), { recursive: true });
  writeFileSync(join(root, '0123456789abcdef', 'x'), 'old');
  const given: string[] = [];
  const line = enableCompileCache(root, 'fedcba9876543210', (d) => { given.push(d); return { status: 1 }; });
  assert.equal(given, [join(root, 'fedcba9876543210')]);
  assert.equal(readdirSync(root), ['fedcba9876543210']);
  assert.match(line, /^compile cache: on /);
  rmSync(root, { recursive: true, force: true });
});

test('no folder, no cache: Node is never asked to make one', () => {
  const root = tmp();
  writeFileSync(join(root, 'file'), 'not a folder');
  let called = false;
  const line = enableCompileCache(join(root, 'file'), 'fedcba9876543210', () => { called = true; return { status: 1 }; });
  assert.is(called, false);
  assert.match(line, /^compile cache: off \(cannot make .*ENOTDIR/);
  assert.ok(existsSync(join(root, 'file')));
  rmSync(root, { recursive: true, force: true });
});

test('a Node without the API, a bad key, a failure or a throw leave init running without a cache', () => {
  const root = tmp();
  assert.is(enableCompileCache(root, 'fedcba9876543210', undefined), 'compile cache: not in this Node');
  assert.match(enableCompileCache(root, '../etc', () => ({ status: 1 })), /bad bundle key/);
  assert.match(enableCompileCache(root, 'fedcba9876543210', () => ({ status: 0, message: 'disk full' })), /compile cache: failed .*: disk full/);
  assert.match(enableCompileCache(root, 'fedcba9876543210', () => { throw new Error('boom'); }), /compile cache: off \(boom\)/);
  flushCompileCache(() => { throw new Error('boom'); });
  flushCompileCache(undefined);
  rmSync(root, { recursive: true, force: true });
});

test.run();
