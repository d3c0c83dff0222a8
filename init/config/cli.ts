// `kiln config validate FILE...` and `kiln config docs`, for the workstation CLI.
import { readFileSync } from 'node:fs';
import { RUNCMD_NOTE } from './compat.ts';
import { renderDocs } from './docs.ts';
import { formatProblem, isError, parseConfig } from './parse.ts';

export const CONFIG_USAGE = 'kiln config validate [--strict] FILE...\n       kiln config docs > docs/config.md';

/** Returns the exit code: 0 all good (warnings allowed, unless --strict), 1 a file has
 *  problems, 2 usage error. */
export function configCli(args: string[], out: (s: string) => void = console.log, err: (s: string) => void = console.error): number {
  const [sub, ...rest] = args;
  const strict = sub === 'validate' && rest.includes('--strict');
  const files = sub === 'validate' ? rest.filter((a) => a !== '--strict') : rest;
  if (sub === 'docs' && !files.length) { out(renderDocs().trimEnd()); return 0; }
  if (sub === 'validate' && files.length) {
    let bad = 0;
    for (const f of files) {
      let text: string;
      try { text = readFileSync(f, 'utf8'); } catch (e) {
        out(`${f}:1:1 (file): cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
        bad++;
        continue;
      }
      if (text.startsWith('#!')) {
        // user-data may be a script (nocloud.ts): the node runs it, it is not config
        out(`${f}: ok (a #! script, not YAML: as user-data the node runs it at every boot, after run_cmd; its contents are not checked)`);
        continue;
      }
      const { config, problems } = parseConfig(text, f);
      for (const p of problems) out(formatProblem(p));
      // Not a problem: cloud-init's meaning, said because k3os's run_cmd differs.
      if (config?.runcmd?.length) out(`${f}: note: ${RUNCMD_NOTE}`);
      const errors = problems.filter(isError).length;
      if (errors || (strict && problems.length)) bad++;
      else out(problems.length ? `${f}: ok (${problems.length} warning${problems.length === 1 ? '' : 's'})` : `${f}: ok`);
    }
    return bad ? 1 : 0;
  }
  err(`kiln config: ${sub === undefined ? 'which subcommand?' : sub === 'validate' ? 'which file(s)?' : `unknown subcommand '${sub}'`}\n\n${CONFIG_USAGE}`);
  return 2;
}
