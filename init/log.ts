// Init's log: every line goes to the console (the user's first view of a node) and to
// /var/log/kiln/init.log once /var is writable. Files rotate by size so a crash loop
// cannot fill the data partition. The logs are root's alone (directory 0700, files 0600):
// commands.log holds whole command lines and their output, the services' logs whatever
// k3s and the rest print, and no other local user has a reason to read them.
import { appendFileSync, chmodSync, existsSync, mkdirSync, readdirSync, renameSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

export const LOG_DIR = '/var/log/kiln';
export const LOG_DIR_MODE = 0o700;
export const LOG_FILE_MODE = 0o600;
const ROTATE_BYTES = 1 << 20;
const KEEP = 3;

let consoleWrite: (s: string) => void = (s) => { try { process.stdout.write(s); } catch { /* console gone */ } };
let fileReady = false;

/** Appends to a log file, rotating it (file.1 .. file.KEEP) once it passes ROTATE_BYTES. */
export function appendRotating(file: string, text: string, rotateBytes = ROTATE_BYTES, keep = KEEP): void {
  try {
    // One stat and one append for a log that exists (init's batches, every service line):
    // the folder is made only for a new file.
    const st = statSync(file, { throwIfNoEntry: false });
    if (st && st.size + text.length > rotateBytes) {
      for (let i = keep - 1; i >= 1; i--) if (existsSync(`${file}.${i}`)) renameSync(`${file}.${i}`, `${file}.${i + 1}`);
      renameSync(file, `${file}.1`);
    } else if (st && st.mode & 0o077) {
      // made readable to all by an earlier release
      chmodSync(file, LOG_FILE_MODE);
    }
    if (!st) mkdirSync(dirname(file), { recursive: true, mode: LOG_DIR_MODE });
    appendFileSync(file, text, { mode: LOG_FILE_MODE });
  } catch { /* a full or read-only disk must not stop init */ }
}

/** Makes a log directory (and the logs an earlier release left in it) root's alone. */
export function tightenLogDir(dir = LOG_DIR): void {
  try {
    mkdirSync(dir, { recursive: true, mode: LOG_DIR_MODE });
    chmodSync(dir, LOG_DIR_MODE);
    for (const f of readdirSync(dir)) {
      try { const st = statSync(`${dir}/${f}`); if (st.isFile() && st.mode & 0o077) chmodSync(`${dir}/${f}`, LOG_FILE_MODE); } catch { /* gone */ }
    }
  } catch { /* read-only or missing /var: nothing to protect */ }
}

function stamp(): string {
  let up = '';
  try { up = (process.uptime() + bootOffset).toFixed(2); } catch { /* */ }
  return `[${up.padStart(8)}]`;
}
let bootOffset = 0;
export function setBootOffset(s: number) { bootOffset = s; }

/**
 * init.log's lines are written in batches: one append every FLUSH_MS at most, not one per line
 * (each append is a stat, an open and a write: on a slow board, most of boot's logging cost).
 * Lines said before /var is writable wait here too. The console gets every line at once;
 * power.ts flushes before /var is unmounted.
 */
const FLUSH_MS = 200;
const pending: string[] = [];
let flushTimer: NodeJS.Timeout | undefined;
function toFile(line: string): void {
  pending.push(line);
  if (fileReady) flushTimer ??= setTimeout(flushLog, FLUSH_MS);
}
/** Writes what init.log has pending now. */
export function flushLog(): void {
  if (flushTimer) { clearTimeout(flushTimer); flushTimer = undefined; }
  if (fileReady && pending.length) appendRotating(`${LOG_DIR}/init.log`, pending.splice(0).join(''));
}

/** A line on the console and in init.log. Console lines keep the "kiln: " prefix tests and users grep for. */
export function say(msg: string): void {
  consoleWrite(`kiln: ${msg}\n`);
  toFile(`${stamp()} ${msg}\n`);
}

/** Detail for init.log only (and the console when `KILN_DEBUG=1` is on the command line: the kernel hands it to init's environment). */
export function debug(msg: string): void {
  if (process.env.KILN_DEBUG) consoleWrite(`kiln: (debug) ${msg}\n`);
  toFile(`${stamp()} ${msg}\n`);
}

/** Called once /var is mounted: flushes what was said before. */
export function enableFileLog(): void {
  tightenLogDir();
  fileReady = true;
  flushLog();
}

export function disableFileLog(): void { flushLog(); fileReady = false; }

export function setConsole(write: (s: string) => void) { consoleWrite = write; }
