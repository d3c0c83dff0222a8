// One direction of dependency: the builder may use the node's contracts (init/, channels/),
// the node never imports the builder, and the channel protocol imports neither. Walks every
// relative import of every TypeScript file, so a new reverse edge fails here.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO } from '../../builder/build.ts';

const walk = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
  e.isDirectory() ? (e.name === 'node_modules' ? [] : walk(join(dir, e.name))) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []);

/** Relative import specifiers of a file: static, type-only, re-exports and dynamic imports. */
export function importsOf(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(?\s*)['"](\.{1,2}\/[^'"]+)['"]/g;
  for (let m; (m = re.exec(text));) out.push(m[1]!);
  return out;
}

const top = (file: string) => relative(REPO, file).split('/')[0]!;

/** Which top-level folders each folder may import from (itself always allowed). */
const ALLOWED: Record<string, string[]> = {
  init: ['channels'],
  channels: [],
  builder: ['init', 'channels'],
};

function reverseEdges(): string[] {
  const bad: string[] = [];
  for (const folder of Object.keys(ALLOWED)) {
    for (const file of walk(join(REPO, folder))) {
      for (const spec of importsOf(readFileSync(file, 'utf8'))) {
        const target = top(resolve(dirname(file), spec));
        if (target !== folder && !ALLOWED[folder]!.includes(target)) bad.push(`${relative(REPO, file)} imports ${spec} (${folder} may not import ${target})`);
      }
    }
  }
  return bad;
}

test('the import scanner sees every form of relative import', () => {
  const text = [
    "import { a } from '../builder/x.ts';",
    "import type { B } from './y.ts';",
    "export { c } from '../../z.ts';",
    "const m = await import('../builder/dyn.ts');",
    "import 'node:fs';",
  ].join('\n');
  assert.equal(importsOf(text), ['../builder/x.ts', './y.ts', '../../z.ts', '../builder/dyn.ts']);
});

test('init never imports builder; channels imports neither half', () => {
  assert.equal(reverseEdges(), []);
});

test.run();
