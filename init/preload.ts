// Run by Node before init (node --require /usr/lib/kiln/preload.js /usr/lib/kiln/init.js, from
// stage 1): turns on the compile cache for init's bundle. Kept apart from the bundle because
// a script cannot take its own compiled code from a cache once it is running.
import { COMPILE_CACHE_ROOT, enableCompileCache } from './compile-cache.ts';

/** The bundle's hash, set by the builder (builder/bundle.ts). */
declare const KILN_INIT_HASH: string;
(globalThis as { kilnCompileCache?: string }).kilnCompileCache = enableCompileCache(COMPILE_CACHE_ROOT, typeof KILN_INIT_HASH === 'string' ? KILN_INIT_HASH : '');
