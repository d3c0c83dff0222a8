// settleDevices: boot waits for block devices only while one is new. Temp folders stand in for
// /sys/class/block, /sys/bus/virtio/devices, /sys/bus/usb/drivers/usb-storage and /dev
// (devtmpfs, whose node birth times say when each device appeared).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SETTLE_MS, settleDevices } from '../../init/system.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function fake() {
  const root = mkdtempSync(join(tmpdir(), 'kiln-settle-'));
  const dirs = { blockDir: join(root, 'block'), virtioDir: join(root, 'virtio'), devDir: join(root, 'dev'), usbStorageDir: join(root, 'usb-storage') };
  for (const d of Object.values(dirs)) mkdirSync(d);
  const add = (name: string, o: { node?: boolean } = {}) => {
    mkdirSync(join(dirs.blockDir, name));
    if (o.node !== false) writeFileSync(join(dirs.devDir, name), '');
  };
  return { root, dirs, add };
}
const timed = async (f: () => Promise<unknown>) => { const t0 = Date.now(); await f(); return Date.now() - t0; };

test('devices that appeared before the wait: settled at once', async () => {
  const { root, dirs, add } = fake();
  add('vda'); add('vda1'); add('vdb');
  mkdirSync(join(dirs.virtioDir, 'virtio0', 'driver'), { recursive: true });
  await sleep(SETTLE_MS + 50);
  const ms = await timed(() => settleDevices(5000, dirs));
  assert.ok(ms < SETTLE_MS, `returned after ${ms} ms`);
  rmSync(root, { recursive: true });
});

test('a device written through its node is not new: only its birth counts', async () => {
  const { root, dirs, add } = fake();
  add('vda');
  await sleep(SETTLE_MS + 50);
  // What growing the data partition does to the boot disk's node: a write sets its ctime.
  writeFileSync(join(dirs.devDir, 'vda'), 'a new GPT');
  const st = statSync(join(dirs.devDir, 'vda'));
  const ms = await timed(() => settleDevices(5000, dirs));
  if (st.birthtimeMs) assert.ok(ms < SETTLE_MS, `waited ${ms} ms for a device written to, not added`);
  // A filesystem without birth times: the ctime stands in, and the write reads as new.
  else assert.ok(ms >= SETTLE_MS, `no birth time here: the ctime counts (${ms} ms)`);
  rmSync(root, { recursive: true });
});

test('a device that has just appeared, or has no /dev node yet, is waited for', async () => {
  const { root, dirs, add } = fake();
  add('vda');
  assert.ok(await timed(() => settleDevices(5000, dirs)) >= SETTLE_MS, 'a new device: the full wait');
  await sleep(SETTLE_MS + 50);
  add('sr0', { node: false });
  const ms = await timed(() => settleDevices(5000, dirs));
  assert.ok(ms >= SETTLE_MS, `a device without a node yet counts as new (${ms} ms)`);
  rmSync(root, { recursive: true });
});

test('a device arriving during the wait, and a virtio device with no driver, extend it', async () => {
  const { root, dirs, add } = fake();
  add('vda');
  await sleep(SETTLE_MS + 50);
  mkdirSync(join(dirs.virtioDir, 'virtio1'));
  // A virtio disk's driver, once bound, has added the disk: both at once here.
  setTimeout(() => { add('vdb'); mkdirSync(join(dirs.virtioDir, 'virtio1', 'driver')); }, 200);
  const ms = await timed(() => settleDevices(5000, dirs));
  assert.ok(ms >= 200 + SETTLE_MS, `waited ${ms} ms`);
  rmSync(root, { recursive: true });
});

test('a USB stick usb-storage has taken but not yet scanned (its delay_use) is waited for, and named if it never is', async () => {
  const { root, dirs, add } = fake();
  add('vda');
  // The driver's folder also holds bind, unbind, module and the like: only interfaces count.
  writeFileSync(join(dirs.usbStorageDir, 'bind'), '');
  mkdirSync(join(dirs.usbStorageDir, '1-1:1.0', 'host0'), { recursive: true });
  mkdirSync(join(dirs.usbStorageDir, '2-1:1.0', 'host1', 'target1:0:0'), { recursive: true });
  await sleep(SETTLE_MS + 50);
  // The scan 500 ms on: a target, then the disk.
  setTimeout(() => { mkdirSync(join(dirs.usbStorageDir, '1-1:1.0', 'host0', 'target0:0:0')); add('sda'); add('sda1'); }, 500);
  const ms = await timed(() => settleDevices(5000, dirs));
  assert.ok(ms >= 500 + SETTLE_MS, `waited ${ms} ms for the stick's disk`);

  mkdirSync(join(dirs.usbStorageDir, '3-1:1.0', 'host2'), { recursive: true });
  const said = await settleDevices(600, dirs);
  assert.match(said, /no disk yet behind USB storage 3-1:1\.0\)$/);
  rmSync(root, { recursive: true });
});

test.run();
