// Progress output for long steps: stage names with elapsed time, download bytes.
// `quiet` keeps only warnings and errors (for CI logs).
export interface Logger {
  stage<T>(name: string, fn: () => Promise<T>): Promise<T>;
  info(msg: string): void;
  warn(msg: string): void;
  progress(label: string, done: number, total?: number): void;
}

const mib = (n: number) => (n / 1048576).toFixed(1);

export function createLogger(opts: { quiet?: boolean; stream?: NodeJS.WriteStream } = {}): Logger {
  const out = opts.stream ?? process.stderr;
  const quiet = !!opts.quiet;
  const tty = !!out.isTTY;
  let lastProgress = 0;
  return {
    async stage(name, fn) {
      const t0 = performance.now();
      if (!quiet) out.write(`==> ${name}\n`);
      try {
        const r = await fn();
        if (!quiet) out.write(`    ${name}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
        return r;
      } catch (e) {
        out.write(`    ${name}: failed after ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
        throw e;
      }
    },
    info(msg) { if (!quiet) out.write(`    ${msg}\n`); },
    warn(msg) { out.write(`warning: ${msg}\n`); },
    progress(label, done, total) {
      if (quiet) return;
      const now = Date.now();
      const finished = total !== undefined && done >= total;
      if (!finished && now - lastProgress < (tty ? 200 : 5000)) return;
      lastProgress = now;
      const text = `    ${label}: ${mib(done)}${total ? ` / ${mib(total)}` : ''} MiB`;
      if (tty) out.write(`\r${text}${finished ? '\n' : ''}`);
      else out.write(`${text}\n`);
    },
  };
}

export const silentLogger: Logger = createLogger({ quiet: true });
