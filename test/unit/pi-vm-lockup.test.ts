// PiVm's power cycle after a guest kernel lockup (test/e2e/pi-vm.ts): a CPU that stays stuck
// gets the card powered on once more and the wait starts again; a second lockup fails the wait;
// one report that is not repeated (a host too busy to run the vCPU) is left alone.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PiVm } from '../e2e/pi-vm.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-pi-lockup-'));

/**
 * TEST DOUBLE for qemu-system-aarch64 (no guest is needed to test the harness): it writes the
 * lines of run N (its runs counted in a file) to the first -serial file, then waits to be killed.
 */
function fakeQemu(name: string, runs: string[][]): string[] {
  const script = join(dir, name), count = join(dir, `${name}.runs`);
  const cases = runs.map((lines, i) => `  ${i}) printf '%s\\n' ${lines.map((l) => `'${l}'`).join(' ')} >> "$u0" ;;`).join('\n');
  writeFileSync(script, `#!/bin/sh
u0=; for a; do case $a in file:*) [ -z "$u0" ] && u0=\${a#file:} ;; esac; done
n=$(cat '${count}' 2>/dev/null || echo 0); echo $((n + 1)) > '${count}'
case $n in
${cases}
esac
exec sleep 600
`);
  chmodSync(script, 0o755);
  return [script];
}

const start = (argv: string[]) => {
  const d = mkdtempSync(join(dir, 'vm-'));
  // The constructor is private: PiVm.start wants a card; the double needs none.
  return new (PiVm as unknown as new (argv: string[], dir: string) => PiVm)(argv, d);
};

const stuck = (s: number) => `[ ${s + 30}.0] watchdog: BUG: soft lockup - CPU#1 stuck for ${s}s! [MainThread:269]`;

test('a CPU stuck for 45 s or more: the card is powered on again, the report printed, the wait restarted', async () => {
  const vm = start(fakeQemu('once', [[stuck(22), 'Call trace:', stuck(49)], ['kiln: ready']]));
  const logged: string[] = [];
  const log = console.log;
  console.log = (s: string) => logged.push(s);
  try {
    await vm.waitFor(/kiln: ready/, 20_000);
  } finally { console.log = log; await vm.kill(); }
  assert.is(vm.lockups, 1);
  assert.is(vm.resets, 0, 'a power cycle is not a reset the guest asked for');
  assert.match(logged.join('\n'), /locked up \(a CPU stuck for 49 s\).*\n.*\| .*stuck for 22s.*\n.*\| Call trace:/);
});

test('a second lockup after the power cycle fails the wait, with the report', async () => {
  const vm = start(fakeQemu('twice', [[stuck(50)], [stuck(46)]]));
  const log = console.log;
  console.log = () => {};
  try {
    const err = await vm.waitFor(/kiln: ready/, 30_000).then(() => undefined, (e: Error) => e);
    assert.ok(err, 'the wait failed');
    assert.match(err!.message, /locked up again after the card was powered on again:\n.*stuck for 46s/);
  } finally { console.log = log; await vm.kill(); }
  assert.is(vm.lockups, 1);
});

test('one report that is not repeated is left alone', async () => {
  const vm = start(fakeQemu('single', [[stuck(23), 'kiln: ready']]));
  try {
    await vm.waitFor(/kiln: ready/, 10_000);
    await new Promise((r) => setTimeout(r, 600));
  } finally { await vm.kill(); }
  assert.is(vm.lockups, 0);
});

test.run();
