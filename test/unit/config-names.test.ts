// Names from users and data sources: map keys that would reach Object.prototype, and host
// names that end up in /etc/hosts, /etc/hostname and the kernel.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostnameProblem } from '../../init/config/hostname.ts';
import { chooseConfig, mergeConfigs, parseCmdline } from '../../init/config/merge.ts';
import { parseMetaData, parseNoCloudCmdline } from '../../init/config/nocloud.ts';
import { formatProblem, parseConfig } from '../../init/config/parse.ts';
import { applyHostname, chooseHostname, gatherSources } from '../../init/configure.ts';

test('__proto__ on the kernel command line is refused and pollutes nothing', () => {
  const r = parseCmdline('quiet kiln.network.interfaces.__proto__.dhcp=true kiln.environment.constructor=x kiln.labels.prototype=y');
  assert.is(({} as any).dhcp, undefined);
  assert.is(r.config, undefined);
  assert.equal(r.problems.map(formatProblem), [
    "/proc/cmdline:1:7 network.interfaces.__proto__.dhcp: '__proto__' is not allowed as a name (rename this key)",
    "/proc/cmdline:1:51 environment.constructor: 'constructor' is not allowed as a name (rename this key)",
    "/proc/cmdline:1:82 labels.prototype: 'prototype' is not allowed as a name (rename this key)",
  ]);
});

test('__proto__, constructor and prototype as map keys in YAML are refused at their position', () => {
  const r = parseConfig('kiln:\n  network:\n    interfaces:\n      __proto__: {dhcp: true}\n  environment:\n    constructor: x\n', 'c.yaml');
  assert.is(({} as any).dhcp, undefined);
  assert.equal(r.problems.map(formatProblem), [
    "c.yaml:4:7 kiln.network.interfaces.__proto__: '__proto__' is not allowed as a name (rename this key)",
    "c.yaml:6:5 kiln.environment.constructor: 'constructor' is not allowed as a name (rename this key)",
  ]);
  // merging never writes through a prototype, whatever reaches it
  const evil = JSON.parse('{"kiln": {"labels": {"__proto__": {"polluted": "yes"}}}}');
  const m = mergeConfigs([{ kiln: { labels: { a: 'b' } } }, evil]) as any;
  assert.equal(Object.keys(m.kiln.labels), ['a']);
  assert.is(Object.getPrototypeOf(m.kiln.labels), Object.prototype);
  assert.is(({} as any).polluted, undefined);
});

test('host names: RFC 1123, at most 64 characters', () => {
  for (const ok of ['node-1', 'a', 'n1.example.com', `${'a'.repeat(63)}`]) assert.is(hostnameProblem(ok), undefined, ok);
  for (const bad of ['', '-a', 'a-', 'a_b', 'a..b', 'node\n127.0.0.1 evil', 'a b', `${'a'.repeat(64)}.b`, 'a'.repeat(64) + 'a']) assert.ok(hostnameProblem(bad), JSON.stringify(bad));
  assert.match(formatProblem(parseConfig(`hostname: ${'a'.repeat(40)}.${'b'.repeat(30)}\n`, 'c.yaml').problems[0]), /^c\.yaml:1:11 hostname: .* is not valid here/);
});

test('a host name with a line break from meta-data or ds=...;h= is refused and reported', () => {
  const m = parseMetaData('local-hostname: "node\\n10.0.0.66 github.com"\ninstance-id: i-1\n');
  assert.is(m.localHostname, undefined);
  assert.is(m.instanceId, 'i-1');
  assert.equal(m.problems, ["meta-data local-hostname: 'node\\n10.0.0.66 github.com' is not a valid host name (letters, digits and '-', labels of 1 to 63 characters separated by dots, not starting or ending with '-'); keeping the host name from elsewhere"]);
  const s = parseNoCloudCmdline('"ds=nocloud;s=https://h/seed/;h=bad host"');
  assert.is(s?.hostname, undefined);
  assert.match(s!.problems![0], /^ds=nocloud;h=: 'bad host' is not a valid host name/);
});

test('IMDS local-hostname is checked too', async () => {
  const f = (async (u: string) => {
    if (String(u).endsWith('/api/token')) return new Response('tok');
    if (String(u).endsWith('/local-hostname')) return new Response('evil\n10.0.0.66 github.com');
    return new Response('', { status: 404 });
  }) as unknown as typeof fetch;
  const root = mkdtempSync(join(tmpdir(), 'kiln-imds-'));
  const g = await gatherSources('network', 'quiet', ['ec2'], { root, fetch: f });
  // 'evil\n10...' trimmed and cut at the first dot is 'evil\n10': refused
  assert.is(g.hostname, undefined);
  assert.ok(g.notes.some((n) => /^ec2 local-hostname: .* is not a valid host name/.test(n)), g.notes.join('\n'));
});

test('chooseHostname passes over an invalid name; applyHostname writes nothing for one', () => {
  const c = chooseConfig({ sources: [] }).config;
  assert.is(chooseHostname(c, { sources: [], scripts: [], notes: [], hostname: 'x\ny' }, 'abcdef0123'), 'kiln-abcdef');
  assert.is(chooseHostname(c, { sources: [], scripts: [], notes: [], hostname: 'md-name' }, 'abcdef0123'), 'md-name');
  const root = mkdtempSync(join(tmpdir(), 'kiln-host-'));
  mkdirSync(join(root, 'etc'));
  mkdirSync(join(root, 'proc/sys/kernel'), { recursive: true });
  writeFileSync(join(root, 'etc/hostname'), 'old\n');
  writeFileSync(join(root, 'etc/hosts'), '127.0.0.1\tlocalhost\n127.0.1.1\told\n');
  assert.match(applyHostname('new\n10.0.0.66 github.com', { root })!, /is not a valid host name/);
  assert.is(readFileSync(join(root, 'etc/hostname'), 'utf8'), 'old\n');
  assert.is(readFileSync(join(root, 'etc/hosts'), 'utf8'), '127.0.0.1\tlocalhost\n127.0.1.1\told\n');
  assert.not.ok(existsSync(join(root, 'proc/sys/kernel/hostname')));
  assert.is(applyHostname('new-1', { root }), undefined);
  assert.is(readFileSync(join(root, 'etc/hostname'), 'utf8'), 'new-1\n');
  assert.is(readFileSync(join(root, 'etc/hosts'), 'utf8'), '127.0.0.1\tlocalhost\n127.0.1.1\told\n127.0.1.1\tnew-1\n');
  assert.is(readFileSync(join(root, 'proc/sys/kernel/hostname'), 'utf8'), 'new-1');
});

test.run();
