import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cache, ChecksumError, FetchError } from '../../builder/cache.ts';

const body = Buffer.from('kiln cache test payload\n'.repeat(1000));
const sha = createHash('sha256').update(body).digest('hex');
let hits = 0;
const server = createServer((req, res) => {
  hits++;
  if (req.url === '/blob') { res.end(body); return; }
  if (req.url === '/tampered') { res.end(Buffer.concat([body, Buffer.from('x')])); return; }
  res.statusCode = 404; res.end();
});

test.before(async () => { await new Promise<void>((r) => server.listen(0, '127.0.0.1', r)); });
test.after(() => { server.close(); });
const base = () => `http://127.0.0.1:${(server.address() as any).port}`;

test('downloads once, then serves from the content-addressed cache', async () => {
  const cache = new Cache(mkdtempSync(join(tmpdir(), 'kiln-cache-')));
  hits = 0;
  const p1 = await cache.fetch({ name: 'blob', url: `${base()}/blob`, sha256: sha, size: body.length });
  const p2 = await cache.fetch({ name: 'blob', url: `${base()}/blob`, sha256: sha });
  assert.is(p1, p2);
  assert.is(hits, 1);
  assert.ok(readFileSync(p1).equals(body));
  assert.ok(p1.endsWith(join('sha256', sha.slice(0, 2), sha)));
});

test('refuses a tampered download and keeps the cache clean', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-cache-'));
  const cache = new Cache(dir);
  try {
    await cache.fetch({ name: 'blob', url: `${base()}/tampered`, sha256: sha });
    assert.unreachable('should refuse');
  } catch (e) {
    assert.instance(e, ChecksumError);
    assert.match((e as Error).message, /sha256 of .*tampered.* the lock says/);
  }
  assert.not.ok(cache.has(sha));
  const leftovers = readdirSync(join(dir, 'sha256', sha.slice(0, 2)));
  assert.equal(leftovers, []);
});

test('HTTP errors name the URL and suggest --artifacts', async () => {
  const cache = new Cache(mkdtempSync(join(tmpdir(), 'kiln-cache-')));
  try {
    await cache.fetch({ name: 'missing', url: `${base()}/nope`, sha256: sha });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, FetchError);
    assert.match((e as Error).message, /\/nope answered HTTP 404.*--artifacts/);
  }
});

test('an artifacts folder supplies inputs offline, still verified', async () => {
  const arts = mkdtempSync(join(tmpdir(), 'kiln-arts-'));
  writeFileSync(join(arts, 'thing.deb'), body);
  const cache = new Cache(mkdtempSync(join(tmpdir(), 'kiln-cache-')), arts);
  hits = 0;
  const p = await cache.fetch({ name: 'thing', url: 'http://unreachable.invalid/pool/thing.deb', sha256: sha });
  assert.is(hits, 0);
  assert.ok(existsSync(p));
  writeFileSync(join(arts, 'bad.deb'), 'not it');
  try {
    await cache.fetch({ name: 'bad', url: 'http://unreachable.invalid/bad.deb', sha256: 'ab'.repeat(32) });
    assert.unreachable();
  } catch (e) { assert.instance(e, ChecksumError); }
});

test.run();
