// unloadedModules: init loads only what stage 1 did not. A temp folder stands in for /sys/module.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unloadedModules } from '../../init/system.ts';

test('a module with a folder in /sys/module is loaded; a dash in its name is an underscore there', () => {
  const sys = mkdtempSync(join(tmpdir(), 'kiln-sysmodule-'));
  try {
    for (const m of ['virtio_net', 'br_netfilter', 'nf_conntrack']) mkdirSync(join(sys, m));
    assert.equal(unloadedModules(['virtio_net', 'br-netfilter', 'vxlan', 'nf_conntrack', 'overlay'], sys), ['vxlan', 'overlay']);
    assert.equal(unloadedModules(['virtio_net'], sys), []);
    assert.equal(unloadedModules([], sys), []);
  } finally { rmSync(sys, { recursive: true, force: true }); }
});

test('no /sys/module at all: every module is still to load', () => {
  assert.equal(unloadedModules(['vfat', 'evdev'], join(tmpdir(), 'kiln-no-such-sysmodule')), ['vfat', 'evdev']);
});

test.run();
