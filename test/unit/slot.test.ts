import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { blessRename, cmdlineArg, parseEntry, slotFromCmdline } from '../../init/slot.ts';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFile, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasPowerKeyPress, readEvents, watchPowerButton } from '../../init/power.ts';

/** One struct input_event (64-bit): a time stamp of `stamp` bytes, then type, code and value. */
const evdev = (type: number, code: number, value: number, stamp = 0) => {
  const b = Buffer.alloc(24, stamp); b.writeUInt16LE(type, 16); b.writeUInt16LE(code, 18); b.writeInt32LE(value, 20); return b;
};

test('boot entry names: counting and blessed forms', () => {
  assert.equal(parseEntry('kiln-a+3.efi'), { file: 'kiln-a+3.efi', slot: 'a', left: 3, done: undefined });
  assert.equal(parseEntry('kiln-b+0-3.efi'), { file: 'kiln-b+0-3.efi', slot: 'b', left: 0, done: 3 });
  assert.equal(parseEntry('kiln-a.efi'), { file: 'kiln-a.efi', slot: 'a', left: undefined, done: undefined });
  assert.is(parseEntry('kiln-c+1.efi'), undefined);
  assert.is(parseEntry('other.efi'), undefined);
});

test('blessing renames only the booted slot\'s counting entry', () => {
  assert.equal(blessRename(['kiln-a+2-1.efi', 'kiln-b+3.efi'], 'a'), { from: 'kiln-a+2-1.efi', to: 'kiln-a.efi' });
  assert.equal(blessRename(['kiln-a+0-3.efi', 'kiln-b+2-1.efi'], 'b'), { from: 'kiln-b+2-1.efi', to: 'kiln-b.efi' });
  assert.is(blessRename(['kiln-a.efi', 'kiln-b+3.efi'], 'a'), undefined);
});

test('kernel command line', () => {
  assert.is(slotFromCmdline('console=ttyS0 kiln.slot=b quiet'), 'b');
  assert.is(slotFromCmdline('console=ttyS0'), 'a');
  assert.is(cmdlineArg('a=1 kiln.config_url=http://x/y?z=1 b', 'kiln.config_url'), 'http://x/y?z=1');
  assert.is(cmdlineArg('a=1 kiln.debug b', 'kiln.debug'), '');
  assert.is(cmdlineArg('a=1', 'kiln.debug'), undefined);
});

test('evdev records: a power key press is recognised, release and other keys are not', () => {
  const ev = (type: number, code: number, value: number) => evdev(type, code, value);
  assert.ok(hasPowerKeyPress(Buffer.concat([ev(0, 0, 0), ev(1, 116, 1), ev(0, 0, 0)])));
  assert.not.ok(hasPowerKeyPress(ev(1, 116, 0)));
  assert.not.ok(hasPowerKeyPress(ev(1, 30, 1)));
});

test('the event reader: records split across reads, a press once, the end of the device', async () => {
  // A time stamp in every record, as the kernel writes: a reader that loses its place reads it as type and code.
  const ev = (type: number, code: number, value: number) => evdev(type, code, value, 0x74);
  // A FIFO stands in for /dev/input/eventN: an empty one has nothing to read, as the device.
  const fifo = join(mkdtempSync(join(tmpdir(), 'kiln-evdev-')), 'event0');
  execFileSync('mkfifo', [fifo]);
  let presses = 0;
  const ended = new Promise<string>((resolve) => readEvents(fifo, () => { presses++; }, resolve, 5));
  const w = openSync(fifo, 'w');
  const tick = () => new Promise((r) => setTimeout(r, 50));
  const stream = Buffer.concat([ev(1, 30, 1), ev(0, 0, 0), ev(1, 116, 1), ev(0, 0, 0), ev(1, 116, 0)]);
  writeSync(w, stream.subarray(0, 30)); await tick();
  assert.is(presses, 0, 'a record and a quarter: nothing yet');
  writeSync(w, stream.subarray(30, 68)); await tick();
  assert.is(presses, 0, 'the press is not whole yet: its type and code came, its value did not');
  writeSync(w, stream.subarray(68)); await tick();
  assert.is(presses, 1, 'the press, once its last byte came');
  writeSync(w, ev(1, 116, 1)); await tick();
  assert.is(presses, 2, 'and the next one');
  closeSync(w);
  assert.is(await ended, 'end of file');
});

test('the event reader: idle devices hold none of libuv\'s worker threads', async () => {
  // Six waiting devices, more than libuv's four threads: a blocking read on each would hold all
  // four, and the file read below would never end.
  const dir = mkdtempSync(join(tmpdir(), 'kiln-evdev-'));
  const ends: Promise<string>[] = [], writers: number[] = [];
  for (let i = 0; i < 6; i++) {
    const fifo = join(dir, `event${i}`);
    execFileSync('mkfifo', [fifo]);
    ends.push(new Promise<string>((resolve) => readEvents(fifo, () => {}, resolve, 5)));
    writers.push(openSync(fifo, 'w'));
  }
  await new Promise((r) => setTimeout(r, 50));
  writeFileSync(join(dir, 'file'), 'x');
  const read = new Promise<string>((resolve) => readFile(join(dir, 'file'), 'utf8', (e, s) => resolve(e ? e.message : `read ${s}`)));
  const verdict = await Promise.race([read, new Promise<string>((r) => setTimeout(() => r('stuck'), 3000))]);
  assert.is(verdict, 'read x', 'a file read ends while six devices wait');
  for (const w of writers) closeSync(w);
  assert.equal(await Promise.all(ends), Array(6).fill('end of file'));
  rmSync(dir, { recursive: true, force: true });
});

test('power keys: each device that has one is watched once, and one that comes later is taken on', async () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-input-'));
  const sys = join(root, 'sys'), dev = join(root, 'dev');
  mkdirSync(dev);
  const writers: number[] = [];
  // As the kernel lays out /sys/class/input/eventN/device; KEY_POWER (116) is bit 52 of the second word.
  const device = (ev: string, name: string, keys: string) => {
    mkdirSync(join(sys, ev, 'device', 'capabilities'), { recursive: true });
    writeFileSync(join(sys, ev, 'device', 'name'), `${name}\n`);
    writeFileSync(join(sys, ev, 'device', 'capabilities', 'key'), `${keys}\n`);
    execFileSync('mkfifo', [join(dev, ev)]);
  };
  device('event0', 'Power Button', '10000000000000 0');
  device('event1', 'Mouse', '1f0000 0 0 0 0');
  let presses = 0;
  const onPress = () => { presses++; };
  const first = watchPowerButton(onPress, sys, dev);
  writers.push(openSync(join(dev, 'event0'), 'w'));
  assert.equal(first, ['event0 (Power Button)']);
  assert.equal(watchPowerButton(onPress, sys, dev), [], 'a device already watched is not read twice');
  device('event2', 'USB Keyboard', 'feffffdfffcfffff fffffffffffffffe');
  const later = watchPowerButton(onPress, sys, dev);
  writers.push(openSync(join(dev, 'event2'), 'w'));
  assert.equal(later, ['event2 (USB Keyboard)']);
  writeSync(writers[1]!, evdev(1, 116, 1));
  for (let i = 0; i < 100 && presses === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.is(presses, 1, 'the later keyboard\'s power key');
  for (const w of writers) closeSync(w);
  await new Promise((r) => setTimeout(r, 600));
  rmSync(root, { recursive: true, force: true });
});

test('the event reader: a device that cannot be opened is reported, not thrown', async () => {
  const why = await new Promise<string>((resolve) => readEvents('/nonexistent/event9', () => assert.unreachable(), resolve));
  assert.match(why, /ENOENT/);
});

test.run();
