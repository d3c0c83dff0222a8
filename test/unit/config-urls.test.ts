// Config fetched over the network is root on the node: https://, a #sha256= pin over plain
// http://, or kiln.allow_insecure_http in the image's own config. Anything else is refused
// with a message that names the three.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseConfig, parseCmdline, PATHS } from '../../init/config/merge.ts';
import { parseNoCloudCmdline } from '../../init/config/nocloud.ts';
import { formatProblem, parseConfig } from '../../init/config/parse.ts';
import { fetchLimited, urlRefusal } from '../../init/config/url.ts';
import { chooseAndReport, gatherSources } from '../../init/configure.ts';
import { fetchInstallConfig } from '../../init/install.ts';

const BODY = 'hostname: pinned-node\n';
const SHA = createHash('sha256').update(BODY).digest('hex');
const THREE = /use https:\/\/, or pin the file with #sha256=<its SHA-256 in hex> at the end of the URL, or set kiln\.allow_insecure_http: true in the image's own config/;

/** A fetch that serves `routes` and records what was asked. */
const fakeFetch = (routes: Record<string, { body: string; url?: string; status?: number }>, seen: string[] = []) => (async (input: string | URL) => {
  const u = String(input);
  seen.push(u);
  const r = routes[u];
  if (!r) return new Response('no', { status: 404 });
  const res = new Response(r.body, { status: r.status ?? 200 });
  Object.defineProperty(res, 'url', { value: r.url ?? u });
  return res;
}) as unknown as typeof fetch;

test('kiln.config_url=http:// is refused on the command line, with the three ways out', () => {
  const r = parseCmdline('quiet kiln.config_url=http://10.0.0.1/node.yaml');
  assert.is(r.configUrl, undefined);
  assert.is(r.problems.length, 1);
  assert.is(r.problems[0].col, 7);
  assert.match(formatProblem(r.problems[0]), THREE);
  assert.is(parseCmdline('kiln.config_url=https://h/n.yaml').configUrl, 'https://h/n.yaml');
  assert.is(parseCmdline(`kiln.config_url=http://h/n.yaml#sha256=${SHA}`).configUrl, `http://h/n.yaml#sha256=${SHA}`);
  assert.match(formatProblem(parseCmdline('kiln.config_url=http://h/n.yaml#sha256=abc').problems[0]), /'#sha256=abc' is not a pin/);
});

test('kiln.install.config_url: https, file, or pinned http; tftp is not supported', () => {
  const p = (u: string) => parseConfig(`kiln:\n  install:\n    config_url: ${u}\n`, 'c.yaml').problems.map(formatProblem);
  assert.equal(p('https://x/c.yaml'), []);
  assert.equal(p('file:///media/c.yaml'), []);
  assert.equal(p(`http://x/c.yaml#sha256=${SHA}`), []);
  assert.match(p('http://x/c.yaml')[0], /^c\.yaml:3:17 kiln\.install\.config_url: plain http:\/\/ lets anyone/);
  assert.match(p('http://x/c.yaml')[0], THREE);
  assert.match(p('tftp://x/c.yaml')[0], /^c\.yaml:3:17 kiln\.install\.config_url: 'tftp:\/\/x\/c\.yaml' is not valid here/);
});

test('key services: https, or the opt-in (a pin cannot cover a URL that serves every user)', () => {
  const p = (u: string) => parseConfig(`kiln:\n  key_services:\n    github: ${u}\n`, 'c.yaml').problems.map(formatProblem);
  assert.equal(p('https://ghe.example.com'), []);
  assert.match(p('http://ghe.example.com')[0], /^c\.yaml:3:13 kiln\.key_services\.github: plain http:\/\/ .*\(use https:\/\/, or set kiln\.allow_insecure_http: true/);
  assert.match(p(`http://ghe.example.com#sha256=${SHA}`)[0], /a pin \(#sha256=\) cannot apply here/);
});

test('kiln.allow_insecure_http counts only in the image config; anywhere else it is a problem', () => {
  const cmd = { file: '/proc/cmdline', text: 'kiln.config_url=http://10.0.0.1/n.yaml', kind: 'cmdline' as const };
  const withImage = chooseConfig({ sources: [{ file: PATHS.image, text: 'kiln: {allow_insecure_http: true}\n' }, { file: PATHS.data, text: 'kiln: {key_services: {github: "http://ghe"}}\n' }, cmd] });
  assert.equal(withImage.problems, []);
  assert.equal([withImage.ok, withImage.allowInsecureHttp, withImage.configUrl], [true, true, 'http://10.0.0.1/n.yaml']);
  assert.is(withImage.config.kiln.allow_insecure_http, true);
  const fromData = chooseConfig({ sources: [{ file: PATHS.data, text: 'kiln: {allow_insecure_http: true}\n' }, cmd] });
  assert.is(fromData.ok, false);
  assert.is(fromData.allowInsecureHttp, false);
  const [first, second] = fromData.problems.map(formatProblem);
  assert.is(first, `${PATHS.data}:1:8 kiln.allow_insecure_http: is only honoured in the image's own config (/usr/lib/kiln/config.yaml) (remove it here, and set it in the config given to kiln build if plain http is wanted)`);
  assert.match(second, THREE);
  // the same opt-in on the command line is not the image's either
  assert.is(chooseConfig({ sources: [{ file: '/proc/cmdline', text: 'kiln.allow_insecure_http', kind: 'cmdline' }] }).ok, false);
});

test('fetchLimited: the pin is checked over the body; https redirected to http is refused; size is capped', async () => {
  const f = fakeFetch({
    'http://h/n.yaml': { body: BODY },
    'http://h/evil.yaml': { body: 'ssh_authorized_keys: [evil]\n' },
    'https://h/redirect.yaml': { body: BODY, url: 'http://h/n.yaml' },
    'https://h/big.yaml': { body: 'x'.repeat((1 << 20) + 1) },
  });
  const o = { key: 'kiln.config_url', allowInsecureHttp: false, fetch: f };
  assert.equal((await fetchLimited(`http://h/n.yaml#sha256=${SHA}`, o)).body?.toString(), BODY);
  assert.match((await fetchLimited(`http://h/evil.yaml#sha256=${SHA}`, o)).problem!, /^its SHA-256 is [0-9a-f]{64}, not the pinned/);
  assert.match((await fetchLimited('http://h/n.yaml', o)).problem!, THREE);
  assert.match((await fetchLimited('https://h/redirect.yaml', o)).problem!, /^redirected to plain http/);
  assert.is((await fetchLimited('https://h/redirect.yaml', { ...o, allowInsecureHttp: true })).body?.toString(), BODY);
  assert.is((await fetchLimited('https://h/big.yaml', o)).problem, 'more than the limit of 1048576 bytes');
  assert.is((await fetchLimited('https://h/none.yaml', o)).missing, 'answered 404');
  assert.is(urlRefusal('ftp://h/x', 'k', { allowInsecureHttp: true }), "k: 'ftp://h/x' is not an https or http URL; use https://");
});

test('chooseAndReport fetches a pinned kiln.config_url and refuses one whose body does not match', async () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-url-'));
  const seen: string[] = [];
  const f = fakeFetch({ 'http://h/n.yaml': { body: BODY }, 'http://h/other.yaml': { body: 'hostname: evil\n' } }, seen);
  const good = await chooseAndReport({ sources: [{ file: '/proc/cmdline', text: `kiln.config_url=http://h/n.yaml#sha256=${SHA}`, kind: 'cmdline' }], scripts: [], notes: [] }, { fetchUrl: true, root, fetch: f });
  assert.equal([good.ok, good.config.hostname], [true, 'pinned-node']);
  assert.equal(seen, ['http://h/n.yaml']); // the pin is not sent
  const bad = await chooseAndReport({ sources: [{ file: '/proc/cmdline', text: `kiln.config_url=http://h/other.yaml#sha256=${SHA}`, kind: 'cmdline' }], scripts: [], notes: [] }, { fetchUrl: true, root, fetch: f });
  assert.is(bad.ok, false);
  assert.is(bad.used, 'last-good'); // the good run above stored it
  assert.is(bad.config.hostname, 'pinned-node');
  assert.match(formatProblem(bad.problems[0]), /^http:\/\/h\/other\.yaml:1:1 \(file\): its SHA-256 is [0-9a-f]{64}, not the pinned/);
});

test('a config URL that does not answer keeps the last good config; only the network pass stores one', async () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-down-'));
  const f = fakeFetch({ 'https://h/n.yaml': { body: BODY } });
  const cmd = (u: string) => ({ sources: [{ file: '/proc/cmdline', text: `kiln.config_url=${u}`, kind: 'cmdline' as const }], scripts: [], notes: [] });
  // the local pass (no URL fetched) chooses, but does not store its partial view
  const local = await chooseAndReport({ sources: [{ file: PATHS.data, text: 'hostname: local-only\n' }], scripts: [], notes: [] }, { fetchUrl: false, root, fetch: f });
  assert.equal([local.ok, local.config.hostname], [true, 'local-only']);
  assert.not.ok(existsSync(join(root, PATHS.lastGood)));
  const up = await chooseAndReport(cmd('https://h/n.yaml'), { fetchUrl: true, root, fetch: f });
  assert.equal([up.ok, up.config.hostname], [true, 'pinned-node']);
  assert.ok(existsSync(join(root, PATHS.lastGood)));
  const down = await chooseAndReport(cmd('https://h/gone.yaml'), { fetchUrl: true, root, fetch: f });
  assert.equal([down.ok, down.used, down.config.hostname], [false, 'last-good', 'pinned-node']);
  assert.is(formatProblem(down.problems[0]), 'https://h/gone.yaml:1:1 (file): answered 404 (check the server; the node keeps its last good config meanwhile)');
  // a NoCloud seed whose user-data does not answer, likewise
  const g = await gatherSources('network', 'ds=nocloud;s=https://h/seed/', [], { root, fetch: f });
  assert.equal(g.sources.map((x) => [x.file, x.error]), [['https://h/seed/user-data', 'answered 404'], ['/proc/cmdline', undefined]]);
  assert.ok(g.notes.some((n) => n.startsWith('NoCloud seed https://h/seed/meta-data: answered 404')));
});

test('NoCloud seed over plain http: refused unless pinned (then user-data only) or allowed by the image', async () => {
  assert.equal(parseNoCloudCmdline(`ds=nocloud;s=http://h/seed/#sha256=${SHA}`), { kind: 'nocloud', seedUrl: 'http://h/seed/', userDataSha256: SHA });
  const root = mkdtempSync(join(tmpdir(), 'kiln-seed-'));
  const seen: string[] = [];
  const f = fakeFetch({ 'http://h/seed/user-data': { body: `#cloud-config\n${BODY}` }, 'http://h/seed/meta-data': { body: 'local-hostname: md\n' } }, seen);
  const plain = await gatherSources('network', 'ds=nocloud;s=http://h/seed/', [], { root, fetch: f });
  assert.equal(seen, []);
  const c = chooseConfig({ sources: plain.sources });
  assert.is(c.ok, false);
  assert.match(formatProblem(c.problems[0]), /^http:\/\/h\/seed\/user-data:1:1 \(file\): plain http:\/\/ .*\(use https:\/\/, or pin user-data with #sha256=/);
  const userData = `#cloud-config\n${BODY}`;
  const pin = createHash('sha256').update(userData).digest('hex');
  const pinned = await gatherSources('network', `ds=nocloud;s=http://h/seed/#sha256=${pin}`, [], { root, fetch: f });
  assert.equal(seen, ['http://h/seed/user-data']); // meta-data is not fetched unpinned
  assert.equal(chooseConfig({ sources: pinned.sources }).config.hostname, 'pinned-node');
  mkdirSync(join(root, 'usr/lib/kiln'), { recursive: true });
  writeFileSync(join(root, PATHS.image), 'kiln: {allow_insecure_http: true}\n');
  seen.length = 0;
  const allowed = await gatherSources('network', 'ds=nocloud;s=http://h/seed/', [], { root, fetch: f });
  assert.equal(seen, ['http://h/seed/meta-data', 'http://h/seed/user-data']);
  assert.is(allowed.hostname, 'md');
  assert.is(chooseConfig({ sources: allowed.sources }).ok, true);
});

test('fetchInstallConfig: the install config URL follows the same rule', async () => {
  const f = fakeFetch({ 'http://h/n.yaml': { body: BODY } });
  assert.match((await fetchInstallConfig('http://h/n.yaml', { allowInsecureHttp: false, fetch: f })).problem!, /^kiln\.install\.config_url http:\/\/h\/n\.yaml: plain http:\/\/ .*\(use https:\/\/, or pin/);
  assert.is((await fetchInstallConfig(`http://h/n.yaml#sha256=${SHA}`, { allowInsecureHttp: false, fetch: f })).source?.text, BODY);
  assert.is((await fetchInstallConfig('http://h/n.yaml', { allowInsecureHttp: true, fetch: f })).source?.text, BODY);
  assert.match((await fetchInstallConfig('tftp://h/n.yaml', { allowInsecureHttp: true, fetch: f })).problem!, /is not an https, http or file URL/);
  const dir = mkdtempSync(join(tmpdir(), 'kiln-inst-'));
  writeFileSync(join(dir, 'c.yaml'), BODY);
  assert.equal((await fetchInstallConfig(`file://${dir}/c.yaml`, { allowInsecureHttp: false })).source, { file: `file://${dir}/c.yaml`, text: BODY });
});

test.run();
