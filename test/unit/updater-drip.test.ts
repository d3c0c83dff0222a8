// A server that drips an artifact a few bytes at a time never trips the stall timeout; the
// minimum rate and the overall download deadline end the attempt, keep what arrived, and the
// next poll resumes where it stopped. Small limits are injected; the defaults are minutes/hours.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { world, type World } from './updater-harness.ts';
import type { ApplyResult } from '../../init/update/updater.ts';

let w: World;
test.after.each(async () => { await w?.close(); });

/** Serves `file` (Range too), `bytes` every `everyMs` ms. */
function drip(file: string, bytes: number, everyMs: number) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const data = readFileSync(file);
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    res.writeHead(m ? 206 : 200, { 'content-length': data.length - start, ...(m ? { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}) });
    let at = start;
    const timer = setInterval(() => {
      if (res.destroyed) { clearInterval(timer); return; }
      res.write(data.subarray(at, at + bytes));
      at += bytes;
      if (at >= data.length) { clearInterval(timer); res.end(); }
    }, everyMs);
    res.on('close', () => clearInterval(timer));
  };
}

/** apply(), or a failure if it takes longer than `ms` (the old updater waited for every byte). */
function applyWithin(p: Promise<ApplyResult>, ms: number): Promise<ApplyResult> {
  return Promise.race([p, new Promise<ApplyResult>((_, rej) => setTimeout(() => rej(new Error(`apply() still running after ${ms} ms`)), ms).unref())]);
}

const ROOT = 'stable/2.0.0/x86_64/fixture-kiln-2.0.0-x86_64.root.squashfs';
const progress = () => JSON.parse(readFileSync(join(w.stateBase, 'stable/download.json'), 'utf8'));

test('below the minimum rate: each attempt is cut, the bytes are kept, and the next poll resumes', async () => {
  w = await world();
  const v2 = await w.publish('2.0.0', { rootSize: 40_000 });
  w.server.route(ROOT, drip(join(w.pub, ROOT), 20, 50)); // 400 bytes/s, forever under 2000
  const slow = w.updater({ minRateBytesPerSec: 2000, rateWindowMs: 400, downloadAttempts: 2 });
  const r = await applyWithin(slow.apply(), 8000);
  assert.is(!r.ok && r.stage, 'download', JSON.stringify(r));
  assert.match(!r.ok ? r.message : '', /slower than 2000 bytes\/s .*bytes kept; the next attempt resumes/);
  assert.ok(w.logs.some((l) => /download interrupted at byte \d+ \(slower than 2000 bytes\/s/.test(l)), w.logs.join('\n'));
  const kept = progress().written;
  assert.ok(kept > 0 && kept < 40_000, `kept ${kept}`);
  assert.equal(w.entries(), ['kiln-a.efi'], 'nothing staged');

  // The server recovers: the next poll asks for the rest only, and installs.
  w.server.route(ROOT, null);
  const before = w.server.requests.length;
  const ok = await w.updater().apply();
  assert.ok(ok.ok, JSON.stringify(ok));
  const rootReq = w.server.requests.slice(before).find((q) => q.url.endsWith('.root.squashfs'));
  assert.is(rootReq?.range, `bytes=${kept}-`);
  assert.is(rootReq?.status, 206);
  assert.ok(readFileSync(w.slots.b).subarray(0, v2.root.length).equals(v2.root));
  assert.not.ok(existsSync(join(w.stateBase, 'stable/download.json')));
});

test('the overall deadline ends a download that keeps a tolerated rate, without retrying', async () => {
  w = await world();
  await w.publish('2.0.0', { rootSize: 40_000 });
  w.server.route(ROOT, drip(join(w.pub, ROOT), 50, 20)); // 2500 bytes/s: would take 16 s
  // The full download (this drip server answers no chunk ranges; the delta path shares the deadline).
  const u = w.updater({ minRateBytesPerSec: 100, rateWindowMs: 300, downloadDeadlineMs: 1500, downloadAttempts: 5, delta: false });
  const t0 = Date.now();
  const r = await applyWithin(u.apply(), 8000);
  assert.is(!r.ok && r.stage, 'download', JSON.stringify(r));
  assert.match(!r.ok ? r.message : '', /download deadline of 2 s passed \(\d+ of 40000 bytes kept; the next attempt resumes\)/);
  assert.ok(Date.now() - t0 < 4000, 'no retries after the deadline');
  assert.is(w.server.requests.filter((q) => q.url.endsWith('.root.squashfs')).length, 1);
  assert.ok(progress().written > 0);
  assert.ok(u.status().some((l) => /^download: 2\.0\.0 \d+ of 40000 bytes in slot b \(resumes at the next attempt\)$/.test(l)), u.status().join('\n'));
});

test.run();
