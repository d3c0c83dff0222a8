// github:USER expansion against a local HTTP server standing in for GitHub.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expandAuthorizedKeys } from '../../init/config/keys.ts';

const ALICE = ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlice', 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQAlice'];
const PLAIN = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlain me@laptop';
let hits: string[] = [];
let flaky = 0;
const handler = (req: any, res: any) => {
  hits.push(req.url);
  if (req.url === '/alice.keys') { res.end(`${ALICE.join('\n')}\n`); return; }
  if (req.url === '/nokeys.keys') { res.end(''); return; }
  if (req.url === '/slow.keys') return; // never answers
  if (req.url === '/portal.keys') { res.end('<html>Please log in</html>'); return; }
  if (req.url === '/flaky.keys') { if (flaky++ < 1) { res.statusCode = 502; res.end(); return; } res.end(`${ALICE[0]}\n`); return; }
  if (req.url === '/gitlab/bob.keys') { res.end(`${ALICE[1]}\n`); return; }
  if (req.url === '/lp/~carol/+sshkeys') { res.end(`${ALICE[0]}\n`); return; }
  res.statusCode = 404; res.end('Not Found');
};
let server: Server;
let base = '';
const listen = async (port = 0) => {
  server = createServer(handler);
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as any).port}`;
};
const stop = () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); });
// The stand-in serves plain http: allowed here as an image's kiln.allow_insecure_http would.
const opts = (cacheDir: string) => ({ githubUrl: base, gitlabUrl: `${base}/gitlab`, launchpadUrl: `${base}/lp`, cacheDir, timeoutMs: 300, retries: 1, retryDelayMs: 10, allowInsecureHttp: true });

test.before(() => listen());
test.after(() => stop());

test('github:, gitlab:, launchpad: users are fetched; plain keys kept; duplicates dropped', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-keys-'));
  hits = [];
  const r = await expandAuthorizedKeys([PLAIN, 'github:alice', 'gitlab:bob', 'launchpad:carol', PLAIN], opts(dir));
  assert.equal(r.problems, []);
  assert.equal(r.keys, [PLAIN, ...ALICE]);
  assert.equal(hits, ['/alice.keys', '/gitlab/bob.keys', '/lp/~carol/+sshkeys']);
  assert.is(readFileSync(join(dir, 'github-alice.keys'), 'utf8'), `${ALICE.join('\n')}\n`);
  assert.equal(readdirSync(dir).sort(), ['github-alice.keys', 'gitlab-bob.keys', 'launchpad-carol.keys']); // no temp files left
});

test('the cache is replaced when the keys change, and left alone when they do not', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-keys-'));
  await expandAuthorizedKeys(['github:alice'], opts(dir));
  const first = statSync(join(dir, 'github-alice.keys'));
  await expandAuthorizedKeys(['github:alice'], opts(dir));
  const again = statSync(join(dir, 'github-alice.keys'));
  assert.is(again.ino, first.ino, 'unchanged keys: the file is not replaced');
  writeFileSync(join(dir, 'github-alice.keys'), `${ALICE[0]}\n`); // keys changed since
  await expandAuthorizedKeys(['github:alice'], opts(dir));
  assert.is(readFileSync(join(dir, 'github-alice.keys'), 'utf8'), `${ALICE.join('\n')}\n`);
  assert.equal(readdirSync(dir), ['github-alice.keys']); // no temp file left
});

test('a 404 user and a user without keys are reported, not fatal', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-keys-'));
  const r = await expandAuthorizedKeys(['github:ghost', 'github:nokeys', 'github:alice', 'github:../etc'], opts(dir));
  assert.equal(r.keys, ALICE);
  assert.equal(r.problems, [
    `github:ghost: ${base}/ghost.keys answered 404: no such user; no cached keys either`,
    'github:nokeys: the user has no public keys on github',
    "github:../etc: '../etc' is not a valid user name",
  ]);
  assert.not.ok(existsSync(join(dir, 'github-ghost.keys')));
});

test('a timeout falls back to the cache', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-keys-'));
  const t0 = Date.now();
  const r = await expandAuthorizedKeys(['github:slow'], opts(dir));
  assert.ok(Date.now() - t0 < 3000);
  assert.equal(r.keys, []);
  assert.equal(r.problems, [`github:slow: ${base}/slow.keys did not answer within 300 ms; no cached keys either`]);
});

test('an answer that is not a key list (captive portal) is not trusted', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-keys-'));
  const r = await expandAuthorizedKeys(['github:portal'], opts(dir));
  assert.equal(r.keys, []);
  assert.match(r.problems[0], /did not answer with a list of public keys/);
});

test('5xx answers are retried', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-keys-'));
  flaky = 0; hits = [];
  const r = await expandAuthorizedKeys(['github:flaky'], opts(dir));
  assert.equal(r.keys, [ALICE[0]]);
  assert.equal(hits, ['/flaky.keys', '/flaky.keys']);
});

test('with the server stopped, the cached keys are used and the failure reported', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-keys-'));
  const first = await expandAuthorizedKeys(['github:alice'], opts(dir));
  assert.equal(first.keys, ALICE);
  const port = (server.address() as any).port;
  await stop();
  const r = await expandAuthorizedKeys(['github:alice', 'github:never-cached'], opts(dir));
  assert.equal(r.keys, ALICE);
  assert.is(r.problems.length, 2);
  assert.match(r.problems[0], new RegExp(`^github:alice: cannot reach ${base}/alice.keys: .*ECONNREFUSED.*; using the 2 cached key\\(s\\)$`));
  assert.match(r.problems[1], /^github:never-cached: cannot reach .*; no cached keys either$/);
  await listen(port); // for test.after
});

test('plain http key services are refused without the opt-in: nothing fetched, the cache is used', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-keys-'));
  await expandAuthorizedKeys(['github:alice'], opts(dir)); // fills the cache
  hits = [];
  const r = await expandAuthorizedKeys(['github:alice', 'gitlab:bob'], { ...opts(dir), allowInsecureHttp: false });
  assert.equal(hits, []);
  assert.equal(r.keys, ALICE);
  assert.match(r.problems[0], /^github:alice: http:\/\/127\.0\.0\.1:\d+\/alice\.keys: plain http:\/\/ .*use https:\/\/, or set kiln\.allow_insecure_http: true in the image's own config.*; using the 2 cached key\(s\)$/);
  assert.match(r.problems[1], /^gitlab:bob: .*plain http.*; no cached keys either$/);
});

test('a key list larger than the limit is not read', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-keys-'));
  const big = `${ALICE[0]}\n`.repeat(20_000); // about 900 KiB
  const f = (async () => new Response(big)) as unknown as typeof fetch;
  const r = await expandAuthorizedKeys(['github:alice'], { cacheDir: dir, fetch: f, retries: 0 });
  assert.equal(r.keys, []);
  assert.match(r.problems[0], /more than the limit of 262144 bytes/);
});

test.run();
