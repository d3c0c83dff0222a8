// What an update server can make the node read: manifest and signature bodies are capped while
// they stream (over HTTP and from file:///), the signature list costs at most one check per
// trusted key, and the text that ends up in logs and status stays short.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { world, type World } from './updater-harness.ts';
import { MAX_MANIFEST_BYTES, MAX_SIG_BYTES, canonicalize, signBytes } from '../../channels/manifest.ts';

let w: World;
test.after.each(async () => { await w?.close(); });

const mf = () => join(w.pub, 'stable/manifest.json');

test('an endless manifest body is cut at the limit, not buffered until the timeout', async () => {
  w = await world();
  let sent = 0;
  w.server.route('/stable/manifest.json', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }); // no content-length: chunked, forever
    const chunk = Buffer.alloc(64 << 10, 0x20);
    const pump = () => {
      while (!res.destroyed && sent < 64 * MAX_MANIFEST_BYTES) {
        sent += chunk.length;
        if (!res.write(chunk)) { res.once('drain', pump); return; }
      }
      res.end();
    };
    res.on('close', () => { sent = Infinity; });
    pump();
  });
  const t0 = performance.now();
  const c = await w.updater({ fetchTimeoutMs: 20_000 }).check();
  assert.is(c.action === 'refused' && c.reason, 'fetch', JSON.stringify(c));
  assert.match(c.message, new RegExp(`more than the ${MAX_MANIFEST_BYTES} allowed`));
  assert.ok(performance.now() - t0 < 10_000, 'refused as soon as the limit was passed');
});

test('a declared oversized body is refused from its Content-Length, before reading it', async () => {
  w = await world();
  w.server.route('/stable/manifest.json.sig', (_req, res) => {
    res.writeHead(200, { 'content-length': String(1 << 30) });
    res.write(Buffer.alloc(1024, 0x20)); // and then nothing: a client that waits for 1 GiB would hang
  });
  const c = await w.updater({ fetchTimeoutMs: 20_000 }).check();
  assert.is(c.action === 'refused' && c.reason, 'fetch', JSON.stringify(c));
  assert.match(c.message, new RegExp(`${1 << 30} bytes, more than the ${MAX_SIG_BYTES} allowed`));
});

test('a .sig file with 100,000 entries is refused at the size limit without checking any of them', async () => {
  w = await world();
  await w.publish('2.0.0');
  const good = JSON.parse(readFileSync(`${mf()}.sig`, 'utf8')).signatures[0];
  const bogus = { keyid: good.keyid, sig: Buffer.alloc(64, 7).toString('base64') };
  writeFileSync(`${mf()}.sig`, JSON.stringify({ signatures: [...Array(100_000).fill(bogus), good] }));
  const t0 = performance.now();
  const c = await w.updater().check();
  assert.is(c.action === 'refused' && c.reason, 'fetch', JSON.stringify(c).slice(0, 500));
  assert.match(c.message, new RegExp(`more than the ${MAX_SIG_BYTES} allowed`));
  assert.ok(performance.now() - t0 < 5_000);
});

test('file:/// channels go through the same limits', async () => {
  w = await world();
  await w.publish('2.0.0');
  writeFileSync(mf(), Buffer.alloc(2 * MAX_MANIFEST_BYTES, 0x20));
  const c = await w.updater({ channelUrl: pathToFileURL(w.pub).href }).check();
  assert.is(c.action === 'refused' && c.reason, 'fetch', JSON.stringify(c).slice(0, 500));
  assert.match(c.message, new RegExp(`more than the ${MAX_MANIFEST_BYTES} allowed`));
  assert.is(w.server.requests.length, 0);
});

test('server-chosen text in a refusal is clipped: a signed manifest with a 500 kB property name', async () => {
  w = await world();
  await w.publish('2.0.0');
  const m = JSON.parse(readFileSync(mf(), 'utf8'));
  for (let i = 0; i < 40; i++) m[`x${i}`.padEnd(12_000, 'y')] = 1;
  const bytes = Buffer.from(canonicalize(m));
  assert.ok(bytes.length > 400_000 && bytes.length < MAX_MANIFEST_BYTES);
  writeFileSync(mf(), bytes);
  // A key the node trusts signed it: the schema check is what refuses it.
  writeFileSync(`${mf()}.sig`, signBytes(bytes, [readFileSync(w.keyFile, 'utf8')]));
  const c = await w.updater().check();
  assert.is(c.action === 'refused' && c.reason, 'schema', JSON.stringify(c).slice(0, 500));
  assert.ok(c.message.length <= 1100, `message is ${c.message.length} characters`);
  assert.ok(w.logs.every((l) => l.length <= 1200), 'log lines stay short');
  assert.match(c.message, /additional properties/);
});

test.run();
