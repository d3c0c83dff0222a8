// No failure while reading or parsing config may leave the node on bare defaults: each one is
// a problem with a position, and the last good config is used with ok: false.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { configCli } from '../../init/config/cli.ts';
import { chooseConfig, PATHS, readLocalSources, readSource } from '../../init/config/merge.ts';
import { parseMetaData, splitUserData } from '../../init/config/nocloud.ts';
import { installedConfig } from '../../init/install.ts';
import { formatProblem, MAX_PROBLEMS, parseConfig } from '../../init/config/parse.ts';
import { chooseAndReport, gatherSources } from '../../init/configure.ts';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHBvbGljeQ owner@laptop';
const LAST_GOOD = `# kiln: last good config\nssh_authorized_keys: ['${KEY}']\nkiln: {updates: {url: 'https://r.example.com/kiln'}, server_url: 'https://10.0.0.1:6443'}\n`;

/** An ordinary config that uses one anchor many times (yaml's own toJS stops at 100). */
const ALIASES_OK = `boot_cmd: [&cmd "echo hi"]\nrun_cmd:\n${Array.from({ length: 150 }, () => '  - *cmd\n').join('')}`;
// Each level repeats the one before ten times: 10^9 values once expanded.
const BOMB = ['run_cmd: &a0 [x, x, x, x, x, x, x, x, x, x]', ...Array.from({ length: 8 }, (_, i) => `k${i}: &a${i + 1} [${Array(10).fill(`*a${i}`).join(', ')}]`)].join('\n') + '\n';

test('a config with more than 100 alias uses is accepted', () => {
  const r = parseConfig(ALIASES_OK, 'many.yaml');
  assert.equal(r.problems, []);
  assert.is((r.config as any).run_cmd.length, 150);
  assert.equal((r.config as any).run_cmd[149], 'echo hi');
});

test('an alias bomb is a problem at the alias that blows up, not an exception', () => {
  const r = parseConfig(BOMB, 'bomb.yaml');
  assert.is(r.config, undefined);
  assert.is(r.problems.length, 1);
  const p = r.problems[0];
  assert.is(p.file, 'bomb.yaml');
  assert.ok(p.line > 1 && p.col > 1, formatProblem(p));
  assert.match(p.message, /takes the config past 200000 values once expanded/);
  // an alias without its anchor is located too
  assert.equal(parseConfig('run_cmd: [*nope]\n', 'a.yaml').problems.map((x) => `${x.line}:${x.col}`), ['1:11']);
});

test('kiln config validate: many aliases are ok, an alias bomb is FILE:LINE:COL, never a crash', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-validate-'));
  writeFileSync(join(dir, 'many.yaml'), ALIASES_OK);
  writeFileSync(join(dir, 'bomb.yaml'), BOMB);
  const out: string[] = [];
  const code = configCli(['validate', join(dir, 'many.yaml'), join(dir, 'bomb.yaml')], (s) => out.push(s), (s) => out.push(s));
  assert.is(code, 1);
  assert.is(out[0], `${join(dir, 'many.yaml')}: ok`);
  assert.match(out[1], new RegExp(`^${join(dir, 'bomb.yaml')}:\\d+:\\d+ \\(yaml\\): the alias \\*a\\d takes the config past`));
});

test('a source that makes parsing fail keeps the last good config (ok: false), with the problem located', () => {
  const c = chooseConfig({
    sources: [{ file: PATHS.data, text: `ssh_authorized_keys: ['${KEY}']\n` }, { file: 'CIDATA:user-data', text: BOMB }],
    lastGood: LAST_GOOD,
  });
  assert.is(c.used, 'last-good');
  assert.is(c.ok, false);
  assert.equal(c.config.ssh_authorized_keys, [KEY]);
  assert.is(c.config.kiln.updates.url, 'https://r.example.com/kiln');
  assert.is(c.config.kiln.server_url, 'https://10.0.0.1:6443');
  assert.is(c.problems.length, 1);
  assert.match(formatProblem(c.problems[0]), /^CIDATA:user-data:\d+:\d+ /);
  // all good: ok
  const good = chooseConfig({ sources: [{ file: PATHS.data, text: ALIASES_OK }], lastGood: LAST_GOOD });
  assert.equal([good.used, good.ok], ['new', true]);
});

test('a source that cannot be read is a problem, not a missing source', async () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-eio-'));
  mkdirSync(join(root, PATHS.data), { recursive: true }); // a folder where the file should be: EISDIR, like EIO
  const s = await readLocalSources(root);
  assert.equal(s.map((x) => [x.file, x.error !== undefined]), [[PATHS.data, true]]);
  const c = chooseConfig({ sources: s, lastGood: LAST_GOOD });
  assert.equal([c.used, c.ok, c.config.ssh_authorized_keys], ['last-good', false, [KEY]]);
  assert.match(formatProblem(c.problems[0]), /^\/var\/lib\/kiln\/config\.yaml:1:1 \(file\): cannot be read: EISDIR/);
});

test('gatherSources and chooseAndReport: an unreadable user-data gives the last good config, ok false', async () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-gather-'));
  mkdirSync(join(root, 'run/kiln/cidata/user-data'), { recursive: true }); // unreadable (EISDIR)
  mkdirSync(join(root, 'run/kiln/config-2/openstack'), { recursive: true });
  mkdirSync(join(root, 'var/lib/kiln/state'), { recursive: true });
  writeFileSync(join(root, PATHS.lastGood), LAST_GOOD);
  writeFileSync(join(root, PATHS.data), 'hostname: node-1\n');
  const g = await gatherSources('local', 'quiet', [], { root });
  assert.equal(g.sources.map((x) => x.file), [PATHS.data, 'CIDATA:user-data', '/proc/cmdline']);
  const c = await chooseAndReport(g, { fetchUrl: false, root });
  assert.equal([c.used, c.ok], ['last-good', false]);
  assert.equal(c.config.ssh_authorized_keys, [KEY]);
  assert.match(formatProblem(c.problems[0]), /^CIDATA:user-data:1:1 \(file\): cannot be read/);
  assert.is(readFileSync(join(root, PATHS.lastGood), 'utf8'), LAST_GOOD); // not replaced
  assert.ok(existsSync(join(root, 'var/log/kiln/config.log')));
});

test('chooseAndReport never throws, even when the sources are not what it expects', async () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-choose-'));
  const c = await chooseAndReport({ sources: [{ file: 'x', text: null as unknown as string }], scripts: [], notes: [] }, { fetchUrl: false, root });
  assert.is(c.ok, false);
  assert.ok(c.problems.length >= 1);
  assert.is(c.config.kiln.channel, 'stable');
});

test('sources larger than 1 MiB are refused before parsing, wherever they come from', async () => {
  const big = `run_cmd:\n${'  - echo 0123456789012345678901234567890123456789\n'.repeat(25_000)}`;
  const t0 = Date.now();
  const r = parseConfig(big, 'big.yaml');
  assert.ok(Date.now() - t0 < 2000);
  assert.equal(r.problems.map(formatProblem), [`big.yaml:1:1 (file): ${Buffer.byteLength(big)} bytes, more than the limit of 1048576 (split it into several files in config.d, or fetch large file contents with a command instead of write_files)`]);
  const root = mkdtempSync(join(tmpdir(), 'kiln-big-'));
  mkdirSync(join(root, 'var/lib/kiln'), { recursive: true });
  writeFileSync(join(root, PATHS.data), big);
  const s = await readLocalSources(root);
  assert.equal(s.map((x) => [x.text, x.error]), [['', 'more than the limit of 1048576 bytes (1 MiB)']]);
  // gzip'd user-data is limited once decompressed (a small file can expand to gigabytes)
  const u = splitUserData(gzipSync(Buffer.alloc(8 << 20, 0x20)));
  assert.equal(u.cloudConfigs, []);
  assert.is(u.error, 'user-data is more than the limit of 1048576 bytes once decompressed');
});

test('readSource reads to the limit whatever the file says its size is, and not a byte past it', async () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-read-'));
  const f = join(root, 'c.yaml');
  for (const size of [0, 1, 4095, 4096, 4097, 100_000]) {
    writeFileSync(f, Buffer.alloc(size, 0x61));
    assert.is((await readSource(f, 100_000))?.data?.length, size);
  }
  writeFileSync(f, Buffer.alloc(100_001, 0x61));
  assert.equal(await readSource(f, 100_000), { error: 'more than the limit of 100000 bytes' });
  assert.equal(await readSource(f, 32 << 20), { data: readFileSync(f) });
  assert.equal(await readSource(f, 0), { error: 'more than the limit of 0 bytes' });
  // /proc says 0 bytes: the buffer grows as the text comes.
  const status = (await readSource('/proc/self/status'))?.data?.toString() ?? '';
  assert.match(status, /^Name:.*\n(.*\n)*VmRSS:.*\n(.*\n)*$/);
  assert.is(await readSource(join(root, 'missing.yaml')), undefined);
});

test('a small text with very many values is refused quickly and without a large heap', () => {
  const t0 = Date.now();
  const r = parseConfig(`run_cmd: [${'a,'.repeat(500_000)}a]\n`, 'flow.yaml');
  assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0} ms`);
  assert.equal(r.problems.map(formatProblem), ['flow.yaml:1:1 (file): more than 100000 YAML tokens (keys, values and punctuation) (split it into several files in config.d)']);
});

test('write_files content is limited once decoded; a gzip bomb is not "ok"', () => {
  const gz = gzipSync(Buffer.alloc(32 << 20)).toString('base64');
  const r = parseConfig(`write_files:\n  - path: /var/big\n    encoding: gz+b64\n    content: ${gz}\n`, 'wf.yaml');
  assert.equal(r.problems.map(formatProblem), ['wf.yaml:4:14 write_files[0].content: content is more than 16 MiB once decoded (the limit for one file) (write large files with a command (run_cmd) instead)']);
  // many entries that are each under the limit: the total is limited too
  const gz8 = gzipSync(Buffer.alloc(15 << 20)).toString('base64');
  const many = parseConfig(`write_files:\n${Array.from({ length: 6 }, (_, i) => `  - {path: /var/f${i}, encoding: gz+b64, content: ${gz8}}\n`).join('')}`, 'wf.yaml');
  assert.match(formatProblem(many.problems[0]), /^wf\.yaml:6:\d+ write_files\[4\]\.content: write_files of this config decode to more than 64 MiB together/);
});

test('values echoed in problems are clipped', () => {
  const long = 'x'.repeat(100_000);
  const key = 'y'.repeat(1000); // YAML keys are at most 1024 characters
  const p = parseConfig(`hostname: ${long}\nkiln:\n  environment: {-${key}: a}\n  channel: "${long}"\n${key}: 1\n`, 'c.yaml').problems.map(formatProblem);
  assert.is(p.length, 4, p.join('\n').slice(0, 2000));
  for (const line of p) assert.ok(line.length < 1000, line.slice(0, 200));
  assert.match(p[0], /'x{80}\.\.\. \(100000 characters\)'/);
});

test('the number of problems per source is bounded', () => {
  const r = parseConfig(`run_cmd: [${'[],'.repeat(2000)}[]]\n`, 'many.yaml');
  assert.is(r.problems.length, MAX_PROBLEMS + 1);
  assert.match(r.problems[MAX_PROBLEMS].message, /more problems follow/);
});

test('meta-data is bounded like config', () => {
  const t0 = Date.now();
  const m = parseMetaData(`x: [${'a,'.repeat(500_000)}a]\n`);
  assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0} ms`);
  assert.equal(m.problems, ['meta-data is too large: more than 100000 YAML tokens (keys, values and punctuation)']);
});

test('kiln install does not write a config that lacks a source which failed', () => {
  const r = installedConfig([{ file: PATHS.data, text: '', error: 'cannot be read: EIO: i/o error, read' }, { file: 'x.yaml', text: 'hostname: n\n' }]);
  assert.equal(r.problems, [`${PATHS.data}: cannot be read: EIO: i/o error, read`]);
});

test('merging long lists takes linear time', async () => {
  const { mergeConfigs } = await import('../../init/config/merge.ts');
  const list = Array.from({ length: 40_000 }, (_, i) => `echo ${i}`);
  const t0 = Date.now();
  const m = mergeConfigs([{ run_cmd: list }, { run_cmd: list }]);
  assert.is(m.run_cmd!.length, 40_000);
  assert.ok(Date.now() - t0 < 3000, `${Date.now() - t0} ms`);
});

test.run();
