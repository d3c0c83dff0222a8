// bin/kiln.js runs the workstation CLI from a bundle it makes on first use and again when a
// file the bundle was made from changes; the bundle prints what the sources print.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const REPO = new URL('../..', import.meta.url).pathname;
// Inside the checkout, as the real one: the bundle finds its npm packages in node_modules.
const cache = join(REPO, '.cache', `kiln-cli-test-${process.pid}`);
mkdirSync(cache, { recursive: true });
const kiln = (args: string[], env: Record<string, string> = {}) => {
  const r = spawnSync(process.execPath, [join(REPO, 'bin/kiln.js'), ...args], { encoding: 'utf8', env: { ...process.env, KILN_CLI_CACHE: cache, ...env }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
const stamp = () => JSON.parse(readFileSync(join(cache, 'stamp.json'), 'utf8')) as { key: string; inputs: string[] };

test('the first run makes the bundle; the next runs use it unchanged', () => {
  assert.is(kiln(['--version']).code, 0);
  const { key, inputs } = stamp();
  assert.ok(inputs.includes('builder/cli.ts') && inputs.includes('init/config/schema.ts') && inputs.includes('package-lock.json'), inputs.join(' '));
  const made = statSync(join(cache, key, 'cli.mjs')).mtimeMs;
  assert.is(kiln(['--help']).code, 0);
  assert.is(stamp().key, key);
  assert.is(statSync(join(cache, key, 'cli.mjs')).mtimeMs, made);
});

test('a bundle whose sources changed is made again, and the old one dropped', () => {
  const { key, inputs } = stamp();
  // As if a source had changed since: the recorded hash no longer matches the files.
  writeFileSync(join(cache, 'stamp.json'), JSON.stringify({ key: 'f'.repeat(32), inputs }));
  assert.is(kiln(['--version']).code, 0);
  assert.is(stamp().key, key);
  assert.equal(readdirSync(cache).filter((f) => f !== 'stamp.json'), [key]);
});

test('the bundle prints what the sources print (tsx), exit codes included', () => {
  const bad = join(cache, 'bad.yaml');
  writeFileSync(bad, 'hostname: n1\nkiln:\n  dns_nameservers: [300.1.1.1]\n');
  for (const args of [['--help'], ['build', '--help'], ['config', 'validate', bad], ['config', 'docs'], ['run'], ['keys', '--help'], ['build', '--help-profile'], ['nonsense']]) {
    const a = kiln(args), b = kiln(args, { KILN_TSX: '1' });
    assert.equal(a, b, args.join(' '));
  }
  assert.is(kiln(['config', 'validate', bad]).code, 1);
});

test.after(() => rmSync(cache, { recursive: true, force: true }));
test.run();
