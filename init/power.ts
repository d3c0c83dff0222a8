// Shutdown: triggered by the ACPI power button, by signals (busybox `poweroff` sends
// SIGUSR2, `halt` SIGUSR1, `reboot` SIGTERM to PID 1, which forwards them to init;
// Ctrl-Alt-Del arrives as SIGINT), or by init itself (an update, a failed health check).
import { close, constants, open, read as readFd, readdirSync } from 'node:fs';
import { run } from './exec.ts';
import { debug, disableFileLog, say } from './log.ts';
import { isMounted, read, sync, zombies } from './system.ts';

export type PowerAction = 'poweroff' | 'reboot';

const EV_KEY = 1;
const KEY_POWER = 116;
/** struct input_event on 64-bit kernels: timeval (16) + type (2) + code (2) + value (4). */
const EVENT_SIZE = 24;

/** Parses evdev records; true if any is a power-key press. */
export function hasPowerKeyPress(buf: Buffer): boolean {
  for (let off = 0; off + EVENT_SIZE <= buf.length; off += EVENT_SIZE) {
    if (buf.readUInt16LE(off + 16) === EV_KEY && buf.readUInt16LE(off + 18) === KEY_POWER && buf.readInt32LE(off + 20) === 1) return true;
  }
  return false;
}

/**
 * How long an input device with nothing to read waits before it is read again. Its reads do not
 * block: a blocking read holds one of libuv's four worker threads until the kernel has an event,
 * and a machine with a power button and a few keyboards would hold them all, leaving none for
 * init's file system calls.
 */
const EVENT_POLL_MS = 250;

/**
 * Reads evdev records from `path` for as long as it stays open. A plain read loop on node:fs's
 * callbacks: a read stream would load Node's fs streams, promises and readline on the way to
 * ready. Node cannot wait on a character device's readiness, so an empty device is read again
 * every `pollMs`; a press is seen within that.
 */
export function readEvents(path: string, onPress: () => void, fail: (message: string) => void, pollMs = EVENT_POLL_MS): void {
  open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY, (err, fd) => {
    if (err) { fail(err.message); return; }
    const buf = Buffer.alloc(EVENT_SIZE * 16);
    let have = 0;
    const stop = (why: string) => { close(fd, () => { /* nothing left to read */ }); fail(why); };
    const next = () => readFd(fd, buf, have, buf.length - have, null, (e, n) => {
      if (e && (e.code === 'EAGAIN' || e.code === 'EWOULDBLOCK')) { setTimeout(next, pollMs); return; }
      if (e) { stop(e.message); return; }
      if (n === 0) { stop('end of file'); return; }
      have += n;
      const whole = have - (have % EVENT_SIZE);
      if (hasPowerKeyPress(buf.subarray(0, whole))) onPress();
      // A partial record (evdev returns whole ones, but a read may not) moves to the front.
      buf.copy(buf, 0, whole, have);
      have -= whole;
      next();
    });
    next();
  });
}

/** Input devices already watched (their /dev paths), and what a press does once boot has set it. */
const watchedEvents = new Set<string>();
let onPowerPress: (() => void) | undefined;

/**
 * Watches every input device that has a power key (the ACPI "Power Button", gpio-keys, most
 * keyboards) and is not watched yet; returns the ones it took on. A device that goes away is
 * dropped, so one plugged in again is watched again.
 */
export function watchPowerButton(onPress: () => void, sys = '/sys/class/input', dev = '/dev/input'): string[] {
  onPowerPress = onPress;
  const watched: string[] = [];
  let entries: string[] = [];
  try { entries = readdirSync(sys).filter((e) => e.startsWith('event')); } catch { return watched; }
  for (const ev of entries) {
    const path = `${dev}/${ev}`;
    if (watchedEvents.has(path)) continue;
    // capabilities/key is a hex bitmap, most significant word first; KEY_POWER is bit 116.
    const words = read(`${sys}/${ev}/device/capabilities/key`).trim().split(/\s+/).reverse();
    const word = words[Math.floor(KEY_POWER / 64)] ?? '0';
    const bits = /^[0-9a-f]{1,16}$/i.test(word) ? BigInt(`0x${word}`) : 0n;
    if (!(bits & (1n << BigInt(KEY_POWER % 64)))) continue;
    watchedEvents.add(path);
    readEvents(path, () => onPowerPress?.(), (m) => { watchedEvents.delete(path); debug(`power button ${ev}: ${m}`); });
    watched.push(`${ev} (${read(`${sys}/${ev}/device/name`).trim()})`);
  }
  return watched;
}

/** Input devices that arrived after boot's scan (hotplug), once boot has set what a press does. */
export function watchNewPowerButtons(): string[] {
  return onPowerPress ? watchPowerButton(onPowerPress) : [];
}

export interface ShutdownHooks { stopServices: () => Promise<void> }

let shuttingDown = false;
export function isShuttingDown() { return shuttingDown; }

/** Stops services, ends every other process, syncs and unmounts, then powers off or reboots. */
export async function shutdown(action: PowerAction, why: string, hooks: ShutdownHooks): Promise<void> {
  if (shuttingDown) return;
  shuttingDown = true;
  say(`shutting down (${why})`);
  const guard = setTimeout(() => { void finalAct(action); }, 90_000);
  try { await hooks.stopServices(); } catch (e) { say(`stopping services: ${(e as Error).message}`); }
  // A process that just exited is a zombie until tini collects it: give the reaper a moment.
  let z = zombies();
  for (let i = 0; i < 20 && z.length; i++) { await new Promise((r) => setTimeout(r, 100)); z = zombies(); }
  say(`zombies ${z.length}${z.length ? ` (${z.map((x) => `${x.comm}[${x.pid}]`).join(' ')})` : ''}`);
  // Everything not a service (shells, leftover children): TERM, a moment, then KILL.
  try { process.kill(-1, 'SIGTERM'); } catch { /* none */ }
  await new Promise((r) => setTimeout(r, 1500));
  try { process.kill(-1, 'SIGKILL'); } catch { /* none */ }
  disableFileLog();
  await sync();
  for (const m of ['/efi', '/var', '/etc']) {
    if (isMounted(m)) {
      const r = await run('umount', [m], { timeoutMs: 10_000 });
      if (r.code !== 0) await run('mount', ['-o', 'remount,ro', m], { timeoutMs: 10_000 });
    }
  }
  if (isMounted('/data')) {
    await run('mount', ['-o', 'remount,ro', '/data'], { timeoutMs: 10_000 });
    const r = await run('umount', ['/data'], { timeoutMs: 10_000 });
    debug(`umount /data: ${r.code}`);
  }
  await sync();
  clearTimeout(guard);
  await finalAct(action);
}

async function finalAct(action: PowerAction) {
  say(action === 'poweroff' ? 'power off' : 'reboot');
  await run(action, ['-f'], { timeoutMs: 10_000 });
  // Still here: ask the kernel directly.
  try { (await import('node:fs')).writeFileSync('/proc/sysrq-trigger', action === 'poweroff' ? 'o' : 'b'); } catch { /* */ }
}
