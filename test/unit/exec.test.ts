// Commands run by init: a timeout bounds the whole process group, the result comes when the
// command exits even if a background process holds its output, user commands log to a file
// and start with oom_score_adj 0. Real processes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { entering, run, runOk } from '../../init/exec.ts';
import { runCommands, runScripts } from '../../init/configure.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// A zombie (state Z) counts as gone: reaping it is the job of whatever PID 1 the test runs under.
const alive = (pid: number) => { try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; } };
const tmp = () => mkdtempSync(join(tmpdir(), 'kiln-exec-'));
/** Fails instead of hanging when a promise takes longer than ms (the old behaviour hung). */
const within = <T>(ms: number, p: Promise<T>, what: string): Promise<T> => {
  let t: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { t = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms); });
  return Promise.race([p, late]).finally(() => clearTimeout(t));
};
const leftovers: number[] = [];
const pidIn = (f: string) => { const p = Number(readFileSync(f, 'utf8').trim()); leftovers.push(p); return p; };
const setOwnAdj = (v: number) => writeFileSync('/proc/self/oom_score_adj', String(v));
/** Gives this process a non-zero OOM score as init has: -1000 with CAP_SYS_RESOURCE, else 500 (raising needs no privilege). */
const protectSelf = () => { try { setOwnAdj(-1000); return -1000; } catch { setOwnAdj(500); return 500; } };

test.after(() => { for (const p of leftovers) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } } });

test('a command that leaves a process in the background returns when it exits, with its output', async () => {
  const f = join(tmp(), 'bg');
  const t0 = Date.now();
  const r = await within(5000, run('/bin/sh', ['-c', `sleep 30 & echo $! > ${f}; echo hi`]), 'sh -c "sleep 30 & echo hi"');
  assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
  assert.is(r.code, 0);
  assert.is(r.stdout, 'hi\n');
  assert.ok(alive(pidIn(f)), 'a background process of a command that succeeded is left alone');
});

test('a timeout kills the whole process group: SIGTERM, then SIGKILL for what ignores it', async () => {
  const d = tmp();
  const t0 = Date.now();
  const r = await within(8000, run('/bin/sh', ['-c', `sleep 60 & echo $! > ${d}/plain; (trap '' TERM; exec sleep 60) & echo $! > ${d}/stubborn; sleep 60`], { timeoutMs: 300, killGraceMs: 400 }), 'a timed-out command');
  const took = Date.now() - t0;
  assert.ok(r.timedOut, 'reported as timed out');
  assert.ok(took >= 290 && took < 4000, `took ${took} ms`);
  await sleep(100);
  const plain = pidIn(`${d}/plain`), stubborn = pidIn(`${d}/stubborn`);
  assert.not.ok(alive(plain), 'the background sleep must be gone');
  assert.not.ok(alive(stubborn), 'the background sleep that ignores SIGTERM must be gone (SIGKILL)');
  assert.match((await runOk('/bin/sh', ['-c', 'sleep 5'], { timeoutMs: 200, killGraceMs: 200 }))!, /timed out after 0.2 s/);
});

test('output to a file descriptor: a background holder of it cannot hold the caller', async () => {
  const d = tmp();
  const fd = openSync(join(d, 'out.log'), 'a');
  try {
    const t0 = Date.now();
    const r = await within(5000, run('/bin/sh', ['-c', `sleep 30 & echo $! > ${d}/pid; echo to-the-file; echo err >&2`], { output: fd }), 'output to a file');
    assert.ok(Date.now() - t0 < 3000);
    assert.is(r.code, 0);
    assert.is(r.stdout, '');
    pidIn(`${d}/pid`);
  } finally { closeSync(fd); }
  assert.is(readFileSync(join(d, 'out.log'), 'utf8'), 'to-the-file\nerr\n');
});

test('a missing program is an error, not a throw', async () => {
  const r = await run('/nonexistent/prog', []);
  assert.is(r.code, null);
  assert.match(r.error!, /ENOENT/);
});

test('what init runs does not inherit its OOM score', async () => {
  const own = protectSelf();
  try {
    assert.is(readFileSync('/proc/self/oom_score_adj', 'utf8').trim(), String(own));
    const r = await run('/bin/sh', ['-c', 'sleep 0.3; cat /proc/$$/oom_score_adj']);
    assert.is(r.stdout.trim(), '0', 'a command started by a protected init runs at 0');
    // Set before the program starts: even what it forks at once gets it.
    const [cmd, args] = entering('/bin/sh', ['-c', 'sleep 5 & cat /proc/$!/oom_score_adj; kill $!'], { oomScoreAdj: 0 });
    const e = await run(cmd, args);
    assert.is(e.stdout.trim(), '0');
    const s = await run('/bin/sh', ['-c', 'cat /proc/self/oom_score_adj'], { enter: { oomScoreAdj: 250 } });
    assert.is(s.stdout.trim(), '250');
  } finally { setOwnAdj(0); }
});

test('run_cmd "mydaemon &" does not hold boot; its output goes to the commands log', async () => {
  const d = tmp();
  const log = join(d, 'commands.log');
  const t0 = Date.now();
  const problems = await within(5000, runCommands('run_cmd', [`sleep 30 & echo $! > ${d}/pid; echo daemon started`, ['/bin/sh', '-c', 'echo failing >&2; exit 4']], {}, 300_000, log), 'runCommands');
  assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
  assert.ok(alive(pidIn(`${d}/pid`)));
  assert.equal(problems, ['run_cmd[1] ["/bin/sh","-c","echo failing >&2; exit 4"]: exit 4: failing']);
  const text = readFileSync(log, 'utf8');
  assert.match(text, /run_cmd\[0\] "sleep 30 & .*" started\ndaemon started\n.* run_cmd\[0\] "sleep 30 & .*" -> exit 0\n/);
  assert.match(text, /failing\n.* run_cmd\[1\] .* -> exit 4\n/);
});

test('a run_cmd entry past its timeout is killed with its group and reported', async () => {
  const d = tmp();
  const problems = await within(8000, runCommands('boot_cmd', [`sleep 60 & echo $! > ${d}/pid; sleep 60`], {}, 300, join(d, 'commands.log')), 'runCommands with a timeout');
  assert.equal(problems.length, 1);
  assert.match(problems[0], /^boot_cmd\[0\] .*: timed out after 0.3 s \(its process group was killed\)/);
  await sleep(100);
  assert.not.ok(alive(pidIn(`${d}/pid`)));
});

test('user-data scripts run like run_cmd entries: logged, bounded', async () => {
  const d = tmp();
  const log = join(d, 'commands.log');
  const problems = await within(5000, runScripts([
    { name: 'part-001', text: `#!/bin/sh\nsleep 30 &\necho $! > ${d}/pid\necho script ran\n` },
    { name: 'part-002', text: '#!/bin/sh\necho broken >&2\nexit 2\n' },
  ], {}, { dir: join(d, 'scripts'), logFile: log }), 'runScripts');
  pidIn(`${d}/pid`);
  assert.equal(problems, [`part-002: ${d}/scripts/1: exit 2: broken`]);
  assert.match(readFileSync(log, 'utf8'), /script ran\n.* user-data script part-001 -> exit 0\n/);
});

test("what stage 1 sets for init's own process is gone before init runs anything", async () => {
  // Stage 1's exec of init: every VAR=value before it is init's alone, so own-env.ts lists it.
  const sh = readFileSync(new URL('../../builder/stage1/init.sh', import.meta.url), 'utf8').replace(/\\\n\s*/g, '');
  const line = sh.split('\n').find((l) => l.includes('/usr/lib/kiln/init.js') && /\bexec switch_root\b/.test(l));
  assert.ok(line, 'stage 1 execs init');
  const set = [...line!.matchAll(/(?:^|\s)([A-Z_]+)=\S+(?=\s)/g)].map((m) => m[1]);
  assert.equal(set, ['GLIBC_TUNABLES']);
  assert.match(line!, /GLIBC_TUNABLES=glibc\.malloc\.mmap_threshold=131072:glibc\.malloc\.trim_threshold=131072:glibc\.malloc\.arena_max=1 exec /);
  process.env.GLIBC_TUNABLES = 'glibc.malloc.trim_threshold=131072';
  const { OWN_ENV } = await import('../../init/own-env.ts');
  assert.equal([...OWN_ENV], set);
  assert.is(process.env.GLIBC_TUNABLES, undefined);
  const r = await run('/bin/sh', ['-c', 'echo "${GLIBC_TUNABLES-unset}"']);
  assert.is(r.stdout, 'unset\n');
});

test.run();
