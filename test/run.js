#!/usr/bin/env node
// Runs every test file in its own process (uvu prints a summary per file), two at a time
// (KILN_TEST_JOBS), and prints one final line "N passed, N failed". `--unit` skips the QEMU end-to-end tests;
// any other argument filters files by substring.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const filters = args.filter((a) => !a.startsWith('--'));

const walk = (dir) => readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
  e.isDirectory() ? walk(join(dir, e.name)) : /\.test\.ts$/.test(e.name) ? [join(dir, e.name)] : []);
let files = walk(join(root, 'test')).sort();
// unit tests first: they are fast and fail early; e2e share one image build.
files = [...files.filter((f) => !f.includes('/e2e/')), ...files.filter((f) => f.includes('/e2e/'))];
if (unitOnly) files = files.filter((f) => !f.includes('/e2e/'));
if (filters.length) files = files.filter((f) => filters.some((x) => f.includes(x)));

let passed = 0, failed = 0;

/** Runs one test file; its output is printed in one piece when it ends, so parallel files never interleave. */
function runFile(file) {
  const name = relative(root, file);
  return new Promise((resolve) => {
    let text = '';
    const child = spawn(process.execPath, ['--import', 'tsx', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } });
    child.stdout.on('data', (d) => { text += d; });
    child.stderr.on('data', (d) => { text += d; });
    child.on('close', (code) => resolve({ name, text, code }));
  });
}

function tally({ name, text, code }) {
  process.stdout.write(`\n# ${name}\n${text}`);
  const total = Number(/Total:\s+(\d+)/.exec(text)?.[1] ?? NaN);
  const ok = Number(/Passed:\s+(\d+)/.exec(text)?.[1] ?? NaN);
  if (Number.isNaN(total) || Number.isNaN(ok)) {
    // The file crashed before uvu could report: count it as one failure.
    failed += 1;
    process.stdout.write(`! ${name} exited with code ${code} before reporting\n`);
    return;
  }
  // uvu's Total counts the tests that ran: skipped ones are not in it.
  passed += ok;
  failed += total - ok;
  if (code !== 0 && total - ok === 0) { failed += 1; process.stdout.write(`! ${name} exited with code ${code}\n`); }
}

/** `jobs` files at a time, in list order. */
async function pool(list, jobs) {
  let next = 0;
  const worker = async () => { while (next < list.length) tally(await runFile(list[next++])); };
  await Promise.all(Array.from({ length: Math.min(jobs, list.length) }, worker));
}

// Unit tests are short processes: two at a time. An e2e file drives one single-vCPU TCG guest
// at a time, so two fit a 2-core machine; images are built once under the builder's lock.
const jobs = Number(process.env.KILN_TEST_JOBS) || 2;
await pool(files.filter((f) => !f.includes('/e2e/')), jobs);
await pool(files.filter((f) => f.includes('/e2e/')), jobs);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
