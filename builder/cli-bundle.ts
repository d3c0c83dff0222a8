// The workstation CLI as ES modules (bin/kiln.js makes them on first use and whenever a
// source changes), so `kiln` does not compile TypeScript at every start: cli.mjs, and a chunk
// for each command's modules, loaded when it runs. npm packages stay outside and load from
// node_modules as they do from the sources. Each module keeps its own
// import.meta.url (the source file's), so paths relative to a source resolve as before
// wherever the bundle is written. The schema validators go in compiled to code, as on the node.
import { build, type Plugin } from 'esbuild';
import { readFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { precompiledValidators } from './bundle.ts';

const REPO = resolve(new URL('..', import.meta.url).pathname);
export const WORKSTATION_CLI = resolve(REPO, 'builder/cli.ts');
/** The files that make the bundle besides its inputs: a change to one makes a new bundle. */
const MAKERS = ['builder/cli-bundle.ts', 'builder/bundle.ts', 'builder/validators.ts', 'package.json', 'package-lock.json'];

/** import.meta.url as the source file's own URL. */
function sourceUrls(): Plugin {
  return {
    name: 'kiln-source-urls',
    setup(b) {
      b.onLoad({ filter: /\.ts$/ }, (a) => {
        const text = readFileSync(a.path, 'utf8');
        if (!text.includes('import.meta.url')) return undefined;
        return { contents: text.replaceAll('import.meta.url', JSON.stringify(pathToFileURL(a.path).href)), loader: 'ts' };
      });
    },
  };
}

/** Writes the bundle (cli.mjs and its chunks) into `outdir`; returns the repo-relative files it depends on. */
export async function buildCliBundle(outdir: string): Promise<string[]> {
  const r = await build({
    entryPoints: [WORKSTATION_CLI], outdir, entryNames: 'cli', chunkNames: 'chunk-[hash]', outExtension: { '.js': '.mjs' },
    bundle: true, splitting: true, platform: 'node', format: 'esm', target: 'node20',
    packages: 'external', metafile: true, logLevel: 'silent', legalComments: 'none',
    // The validators' compiled code uses require(); an ES module has none of its own.
    banner: { js: "// kiln: generated from builder/ by bin/kiln.js; edit the sources, not this file.\nimport { createRequire as __kilnRequire } from 'node:module';\nconst require = __kilnRequire(import.meta.url);" },
    plugins: [sourceUrls(), precompiledValidators({ compiler: true })],
  });
  const inputs = Object.keys(r.metafile.inputs).filter((i) => !i.includes(':')).map((i) => relative(REPO, resolve(i)));
  return [...new Set([...inputs, ...MAKERS])].sort();
}
