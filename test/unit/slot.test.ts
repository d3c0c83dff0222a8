import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { blessRename, cmdlineArg, parseEntry, slotFromCmdline } from '../../init/slot.ts';
import { hasPowerKeyPress } from '../../init/power.ts';

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
  const ev = (type: number, code: number, value: number) => { const b = Buffer.alloc(24); b.writeUInt16LE(type, 16); b.writeUInt16LE(code, 18); b.writeInt32LE(value, 20); return b; };
  assert.ok(hasPowerKeyPress(Buffer.concat([ev(0, 0, 0), ev(1, 116, 1), ev(0, 0, 0)])));
  assert.not.ok(hasPowerKeyPress(ev(1, 116, 0)));
  assert.not.ok(hasPowerKeyPress(ev(1, 30, 1)));
});

test.run();
