// kiln.install.device: auto (init/install.ts chooseAutoDisk): the one disk that is neither
// removable nor the boot medium, else a refusal that lists what was seen.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseConfig } from '../../init/config/parse.ts';
import { chooseAutoDisk, type DiskFacts } from '../../init/install.ts';

const MiB = 1024 * 1024;
const MIN = 1090 * MiB;
const disk = (name: string, o: Partial<DiskFacts> = {}): DiskFacts => ({ name, sizeBytes: 8192 * MiB, readOnly: false, partitions: [], inUse: [], isMedium: false, removable: false, ...o });

const table: [string, DiskFacts[], string | RegExp][] = [
  ['the only fixed disk', [disk('sda')], 'sda'],
  ['the USB stick booted from is skipped', [disk('sda', { isMedium: true }), disk('sdb')], 'sdb'],
  ['removable card readers and sticks are skipped', [disk('sda'), disk('sdb', { removable: true }), disk('mmcblk0', { removable: true })], 'sda'],
  ['NVMe next to the medium', [disk('sda', { isMedium: true, removable: true }), disk('nvme0n1')], 'nvme0n1'],
  ['a too-small or read-only disk is not a candidate', [disk('sda', { sizeBytes: 512 * MiB }), disk('sdb', { readOnly: true }), disk('vda')], 'vda'],
  ['two fixed disks: refused, both listed with size and model',
    [disk('sda', { model: 'Samsung SSD' }), disk('nvme0n1', { sizeBytes: 256000 * MiB }), disk('sdc', { isMedium: true })],
    /auto: 2 disks could be the target: \/dev\/sda \(8192 MiB, Samsung SSD\), \/dev\/nvme0n1 \(256000 MiB\); set kiln.install.device to one of them/],
  ['none: refused, each disk with the reason', [disk('sda', { isMedium: true }), disk('sdb', { removable: true }), disk('sdc', { sizeBytes: 100 * MiB })],
    /no disk to install to \(\/dev\/sda \(8192 MiB\): the boot medium; \/dev\/sdb \(8192 MiB\): removable; \/dev\/sdc \(100 MiB\): smaller than 1090 MiB\)/],
  ['no disks at all: the driver hint', [], /no disks found: is the disk controller's driver in the image\?/],
];

for (const [what, disks, want] of table) {
  test(`auto: ${what}`, () => {
    if (typeof want === 'string') assert.is(chooseAutoDisk(disks, MIN), want);
    else assert.throws(() => chooseAutoDisk(disks, MIN), want);
  });
}

test('config: device accepts auto and /dev paths, and names the key for anything else', () => {
  for (const d of ['auto', '/dev/sda', '/dev/nvme0n1']) assert.equal(parseConfig(`kiln:\n  install:\n    device: ${d}\n`, 'c.yaml').problems, [], d);
  const r = parseConfig('kiln:\n  install:\n    device: sda\n', 'c.yaml');
  assert.ok(r.problems.length === 1 && /install.device/.test(JSON.stringify(r.problems[0])), JSON.stringify(r.problems));
});

test.run();
