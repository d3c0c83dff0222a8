#!/usr/bin/env node
// Workstation entry point. Runs the CLI from a bundle (builder/cli-bundle.ts) kept in .cache/,
// made on first use and again whenever a file it was made from changes (a hash of their
// contents names it), so a run does not compile TypeScript. KILN_TSX=1, or a bundle that
// cannot be made (a read-only checkout), runs the sources through tsx's loader as before.
// KILN_CLI_CACHE names another folder for the bundles (the tests use one of their own); it
// must be inside the checkout, where the bundle finds its npm packages in node_modules.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const DIR = process.env.KILN_CLI_CACHE || `${REPO}.cache/kiln-cli`;

/**
 * One hash of the files' names and contents, of Node's major version, and of where the checkout
 * is (the bundle holds its sources' paths: a moved checkout makes a new one).
 */
function sourceKey(files) {
  const h = createHash('sha256').update(`${process.versions.node.split('.')[0]}\0${REPO}\0`);
  for (const f of files) h.update(`${f}\0`).update(readFileSync(`${REPO}${f}`)).update('\0');
  return h.digest('hex').slice(0, 32);
}

/** The bundle made from the sources as they are now, or undefined. */
function current() {
  try {
    const stamp = JSON.parse(readFileSync(`${DIR}/stamp.json`, 'utf8'));
    return sourceKey(stamp.inputs) === stamp.key ? `${DIR}/${stamp.key}/cli.mjs` : undefined;
  } catch { return undefined; }
}

/**
 * Makes the bundle in a folder named by the hash (made under a temporary name, then renamed,
 * so runs at the same time do not collide) and points stamp.json at it; drops older ones.
 */
async function rebuild() {
  const { buildCliBundle } = await import('../builder/cli-bundle.ts');
  const tmp = `${DIR}/tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const inputs = await buildCliBundle(tmp);
    const key = sourceKey(inputs);
    if (!existsSync(`${DIR}/${key}/cli.mjs`)) { rmSync(`${DIR}/${key}`, { recursive: true, force: true }); renameSync(tmp, `${DIR}/${key}`); }
    writeFileSync(`${DIR}/stamp-${process.pid}.json`, JSON.stringify({ key, inputs }));
    renameSync(`${DIR}/stamp-${process.pid}.json`, `${DIR}/stamp.json`);
    for (const f of readdirSync(DIR)) if (/^[0-9a-f]{32}$/.test(f) && f !== key) rmSync(`${DIR}/${f}`, { recursive: true, force: true });
    return `${DIR}/${key}/cli.mjs`;
  } finally { rmSync(tmp, { recursive: true, force: true }); }
}

let bundle = process.env.KILN_TSX ? undefined : current();
if (!bundle) {
  const { register } = await import('tsx/esm/api');
  const unregister = register();
  if (!process.env.KILN_TSX) {
    try { bundle = await rebuild(); } catch (e) {
      if (process.env.KILN_DEBUG) console.error(`kiln: running from the sources: the CLI bundle was not made: ${e?.message ?? e}`);
    }
  }
  if (bundle) unregister();
}
if (bundle) await import(pathToFileURL(bundle).href);
else await import('../builder/cli.ts');
