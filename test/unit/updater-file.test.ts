// Updates from a channel tree on the node's own disk (file:///...): the same checks and
// resumable download as over HTTP, through channelFetch.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { channelFetch } from '../../init/update/fetch.ts';
import { world, type World } from './updater-harness.ts';

let w: World;
test.after.each(async () => { await w?.close(); });

test('file: fetch answers like a server: 200, 206 for a Range, 416 past the end, 404 when missing', async () => {
  w = await world();
  const f = join(w.dir, 'blob');
  writeFileSync(f, 'abcdefghij');
  const url = pathToFileURL(f).href;
  const whole = await channelFetch(url);
  assert.is(whole.status, 200);
  assert.is(await whole.text(), 'abcdefghij');
  const part = await channelFetch(url, { headers: { range: 'bytes=4-' } });
  assert.is(part.status, 206);
  assert.is(part.headers.get('content-range'), 'bytes 4-9/10');
  assert.is(await part.text(), 'efghij');
  assert.is((await channelFetch(url, { headers: { range: 'bytes=10-' } })).status, 416);
  assert.is((await channelFetch(pathToFileURL(join(w.dir, 'missing')).href)).status, 404);
});

test('file: fetch honours its abort signal mid-body, like fetch (deadlines and rate limits end it)', async () => {
  w = await world();
  const f = join(w.dir, 'big');
  writeFileSync(f, Buffer.alloc(4 << 20, 1));
  const ctrl = new AbortController();
  const res = await channelFetch(pathToFileURL(f).href, { signal: ctrl.signal });
  let got = 0, err: Error | undefined;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      got += chunk.length;
      ctrl.abort(new Error('fixture deadline'));
    }
  } catch (e) { err = e as Error; }
  assert.is(err?.message, 'fixture deadline');
  assert.ok(got < 4 << 20, `read ${got} bytes after the abort`);
});

test('v1 -> v2 from file:///: verified, written to slot b, staged; a tampered root is refused', async () => {
  w = await world();
  const v2 = await w.publish('2.0.0');
  const r = await w.updater({ channelUrl: pathToFileURL(w.pub).href }).apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(readFileSync(w.slots.b).subarray(0, v2.root.length).equals(v2.root));
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+3.efi']);
  assert.is(w.server.requests.length, 0, 'nothing went over HTTP');
  await w.close();

  w = await world();
  await w.publish('2.0.0');
  const root = join(w.pub, 'stable/2.0.0/x86_64/fixture-kiln-2.0.0-x86_64.root.squashfs');
  const b = readFileSync(root); b[100] ^= 1; writeFileSync(root, b);
  const bad = await w.updater({ channelUrl: pathToFileURL(w.pub).href }).apply();
  assert.not.ok(bad.ok);
  assert.is(!bad.ok && bad.stage, 'verify');
});

test.run();
