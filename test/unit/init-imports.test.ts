// What init loads of Node's own modules when it starts. Each module loaded stays in init's
// memory for as long as the node runs, so the ones boot does not need (crypto, zlib, http, …)
// are imported where first used: dynamic imports of post-boot code, or init/lazy.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { build, type Metafile } from 'esbuild';
import { INIT_ENTRY, precompiledValidators } from '../../builder/bundle.ts';

/** Node's modules (and where each is first imported) reached from `entry`, by static imports alone unless `dynamic`. */
function builtinsFrom(meta: Metafile, entry: string, dynamic = false): Map<string, string> {
  const seen = new Set<string>(), found = new Map<string, string>();
  const walk = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const i of meta.inputs[file]?.imports ?? []) {
      if (i.kind === 'dynamic-import' && !dynamic) continue;
      if (i.external) { if (!found.has(i.path)) found.set(i.path, file); } else walk(i.path);
    }
  };
  walk(entry);
  return found;
}

const STARTUP = ['node:fs', 'node:path', 'node:child_process', 'node:net', 'node:util', 'node:events', 'process', 'buffer'];

test("init's start loads only the Node modules boot needs", async () => {
  const r = await build({ entryPoints: [INIT_ENTRY], write: false, metafile: true, bundle: true, platform: 'node', format: 'cjs', logLevel: 'silent', plugins: [precompiledValidators()] });
  // main.ts, and the boot task every boot imports (an install only when one is asked for).
  for (const entry of ['init/main.ts', 'init/boot/install-task.ts']) {
    const extra = [...builtinsFrom(r.metafile, entry)].filter(([m]) => !STARTUP.includes(m));
    assert.equal(extra.map(([m, from]) => `${m} (imported by ${from})`), [], `${entry}: load these where they are used (init/lazy.ts, or a dynamic import)`);
  }
  // What keeps the rest out is the dynamic imports: through them, the installer's zlib is reached.
  assert.ok(builtinsFrom(r.metafile, 'init/main.ts', true).has('node:zlib'));
});

test.run();
