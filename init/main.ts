// kiln's init. The kernel's PID 1 is tini, which only reaps orphans and forwards
// signals; this process is the init proper: boot phases, config, services, health,
// shutdown. Nothing here may end the process: tini would exit and the kernel would panic.
//
// This file only wires the parts together: the boot plan (boot/plan.ts) runs, then the
// post-boot steps (boot/post-boot.ts); the control socket's answers are in boot/control-api.ts.
import { CODE_START_S } from './started.ts'; // first: Node's start ends here
import './own-env.ts'; // before init starts any program
import { existsSync } from 'node:fs';
import { bootChainLine, bootInfo, cmdlineArg } from './boot.ts';
import { bootContext } from './boot/context.ts';
import { bootPlan, cpuLine, readyLine, rssSplit, startLine, timingsLine } from './boot/plan.ts';
import { saveClockQuietly } from './boot/tasks.ts';
import { debug, flushLog, LOG_DIR, say, setBootOffset } from './log.ts';
import { isShuttingDown, shutdown, type PowerAction } from './power.ts';
import { runPlan, sinceStartMs, taskTimesLine } from './sequencer.ts';
import { Supervisor } from './services/supervisor.ts';
import { read } from './system.ts';

/** Seconds from this process's start to every module of boot's having run its top level. */
const MODULES_LOADED_S = process.uptime();
process.on('uncaughtException', (e) => { try { say(`internal error (contained): ${e?.stack ?? e}`); } catch { /* */ } });
process.on('unhandledRejection', (e) => { try { say(`internal error (contained): ${(e as Error)?.stack ?? e}`); } catch { /* */ } });
// Keep the event loop alive whatever else ends.
setInterval(() => { /* idle */ }, 1 << 30);
/** Seconds from the kernel's start to this process's. */
const initStartS = () => Number(read('/proc/uptime').split(' ')[0]) - process.uptime();
/** The machine's CPU times when init started (near enough: its first line of code). */
const procStatAtStart = read('/proc/stat');
setBootOffset(initStartS());

const info = bootInfo();
const supervisor = new Supervisor({ logDir: LOG_DIR, say });
// The clock is saved once services are down and before /data is unmounted: the next boot's floor.
const power = (action: PowerAction, why: string) => { void shutdown(action, why, { stopServices: async () => { await supervisor.stopAll(); saveClockQuietly(); } }); };
for (const [sig, action] of [['SIGUSR2', 'poweroff'], ['SIGUSR1', 'poweroff'], ['SIGTERM', 'reboot'], ['SIGINT', 'reboot']] as const) {
  process.on(sig, () => power(action, `${sig}`));
}
process.on('SIGHUP', () => debug('SIGHUP ignored'));

// A boot that never reaches ready (a task hung) still gives the services their share back.
setTimeout(() => supervisor.endStartup(), 300_000);

const ctx = bootContext({ info, live: cmdlineArg(info.cmdline, 'kiln.live') !== undefined, supervisor, power });

async function boot() {
  say(`init started: kiln ${info.version} slot ${info.slot} (${info.arch}, kernel ${info.kernel}, node ${process.version})`);
  say(bootChainLine(info.chain));
  const results = await runPlan(bootPlan(ctx));
  if (isShuttingDown()) return;
  const failed = results.filter((r) => !r.ok);
  for (const f of failed) ctx.notes.push(`boot step ${f.phase}/${f.task} failed: ${f.error}`);
  say(readyLine(info, failed));
  // The services boot did not wait for had a small share of the CPU until now (startupCpuWeight).
  supervisor.endStartup();
  say(timingsLine(results, sinceStartMs(), initStartS(), process.memoryUsage().rss, rssSplit(read('/proc/self/status'))));
  say(taskTimesLine(results));
  const cpu = cpuLine(read('/proc/self/stat'), procStatAtStart, read('/proc/stat'));
  if (cpu) say(cpu);
  say(startLine(CODE_START_S, MODULES_LOADED_S));
  // Whatever reads init.log once ready is on the console finds boot's lines there: the
  // post-boot steps below may keep the event loop (and the batch timer) busy for a while.
  flushLog();
  // The updater, add-ons and blessing are loaded only now: nothing before ready needs them.
  const { postBootSteps, runPostBoot } = await import('./boot/post-boot.ts');
  await runPostBoot(ctx, postBootSteps(ctx, failed.length === 0));
}

if (!existsSync('/proc/1')) say('warning: /proc is not mounted');
void boot();
