// One build at a time per output folder: two `kiln build`s (or two test files) writing the
// same out/ would interleave their files. The lock is a directory (mkdir is atomic) holding
// the owner's pid; a lock whose owner is gone is taken over.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; } };

export async function withBuildLock<T>(out: string, fn: () => Promise<T>, o: { pollMs?: number; say?: (m: string) => void } = {}): Promise<T> {
  mkdirSync(out, { recursive: true });
  const dir = join(out, '.build.lock');
  let told = false;
  for (;;) {
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = Number(readFileSyncSafe(join(dir, 'pid')));
      // No pid yet: the owner is between mkdir and write; wait for it.
      if (owner && owner !== process.pid && !alive(owner)) { rmSync(dir, { recursive: true, force: true }); continue; }
      if (!told) { o.say?.(`waiting for another build of ${out} (pid ${owner || '?'})`); told = true; }
      await new Promise((r) => setTimeout(r, o.pollMs ?? 500));
    }
  }
  try { return await fn(); } finally { rmSync(dir, { recursive: true, force: true }); }
}

function readFileSyncSafe(f: string): string {
  try { return readFileSync(f, 'utf8'); } catch { return ''; }
}
