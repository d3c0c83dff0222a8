// V8's compiled code for init, kept on /data (/var/cache is on the /var overlay) so a boot
// after the first skips most of parsing and compiling the bundle. Node keeps the cache and
// checks each entry against the source and its own version; the folder is named by the
// bundle's hash, so the caches of other builds (the other slot, older releases) are removed
// rather than kept. The folder is made and checked here first: Node 24 was seen to hang when
// it could not create its cache folder itself, so without a writable folder there is no cache.
import { accessSync, constants, mkdirSync, readdirSync, rmSync } from 'node:fs';
import module from 'node:module';
import { join } from 'node:path';

export const COMPILE_CACHE_ROOT = '/var/cache/kiln/compile';

type Enable = (dir: string) => { status: number; message?: string; directory?: string };

/** Turns the cache on for what is loaded after this; returns a line for init.log. */
export function enableCompileCache(root: string, key: string, enable: Enable | undefined = (module as { enableCompileCache?: Enable }).enableCompileCache): string {
  if (typeof enable !== 'function') return 'compile cache: not in this Node';
  if (!/^[0-9a-f]{8,64}$/.test(key)) return `compile cache: off (bad bundle key ${JSON.stringify(key).slice(0, 70)})`;
  const dir = join(root, key);
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
  } catch (e) {
    return `compile cache: off (cannot make ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
  }
  try { for (const n of readdirSync(root)) if (n !== key) rmSync(join(root, n), { recursive: true, force: true }); } catch { /* a leftover costs space only */ }
  try {
    const r = enable(dir);
    // module.constants.compileCacheStatus: FAILED is 0 in Node 22-24; ENABLED 1, ALREADY_ENABLED 2, DISABLED 3.
    const names: Record<number, string> = { 0: 'failed', 1: 'on', 2: 'on', 3: 'disabled by NODE_DISABLE_COMPILE_CACHE' };
    return `compile cache: ${names[r?.status] ?? `status ${r?.status}`} (${dir})${r?.message ? `: ${r.message}` : ''}`;
  } catch (e) {
    return `compile cache: off (${(e as Error).message})`;
  }
}

/** Writes what V8 compiled so far (boot's code, once ready) to the cache; a no-op without one. */
export function flushCompileCache(flush = (module as { flushCompileCache?: () => void }).flushCompileCache): void {
  try { flush?.(); } catch { /* the next boot compiles again */ }
}
