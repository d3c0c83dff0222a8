// The control socket: one JSON request and one JSON answer per connection, root's alone.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, statSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callControl, serveControl } from '../../init/control.ts';

/** The message a promise is rejected with (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<string> {
  try { await p; } catch (e) { return (e as Error).message; }
  assert.unreachable('expected a rejection');
  return '';
}

test('a request gets its handler\'s answer; an unknown command and a failing handler get errors', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'kiln-ctl-')), 'run/control.sock');
  const server = serveControl({
    echo: (args) => ({ got: args }),
    later: async () => { await new Promise((r) => setTimeout(r, 20)); return 'done'; },
    fails: () => { throw new Error('no such thing'); },
  }, path);
  try {
    await once(server, 'listening');
    assert.is(statSync(path).mode & 0o777, 0o600);
    assert.equal(await callControl('echo', { a: 1 }, path), { got: { a: 1 } });
    assert.is(await callControl('later', {}, path), 'done');
    assert.match(await rejection(callControl('fails', {}, path)), /no such thing/);
    assert.match(await rejection(callControl('nope', {}, path)), /unknown command nope \(known: echo, later, fails\)/);
  } finally { server.close(); }
});

test('a socket that cannot be made is an error event, not a throw', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-ctl-'));
  // No socket can be made in /proc.
  const server = serveControl({}, '/proc/kiln-control-test.sock');
  const [err] = await once(server, 'error') as [NodeJS.ErrnoException];
  assert.ok(err.code, String(err));
  assert.match(await rejection(callControl('status', {}, join(dir, 'absent.sock'))), /cannot reach init/);
});

test('serving loads no node:cluster (listen() would, to ask whether this is a cluster worker)', () => {
  const path = join(mkdtempSync(join(tmpdir(), 'kiln-ctl-')), 'control.sock');
  const script = `import { callControl, serveControl } from ${JSON.stringify(new URL('../../init/control.ts', import.meta.url).pathname)};
const server = serveControl({ ping: () => 'pong' }, ${JSON.stringify(path)});
server.on('listening', async () => {
  const answer = await callControl('ping', {}, ${JSON.stringify(path)});
  console.log(JSON.stringify({ answer, cluster: process.moduleLoadList.filter((m) => m.includes('cluster')) }));
  server.close();
});`;
  const out = JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' }));
  assert.equal(out, { answer: 'pong', cluster: [] });
});

test.run();
