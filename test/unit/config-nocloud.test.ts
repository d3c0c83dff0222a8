import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gzipSync } from 'node:zlib';
import { parseMetaData, parseNoCloudCmdline, splitUserData } from '../../init/config/nocloud.ts';
import { parseConfig } from '../../init/config/parse.ts';

test('ds=nocloud and ds=nocloud-net seeds are read from the command line', () => {
  assert.equal(parseNoCloudCmdline('quiet ds=nocloud;s=http://10.0.0.2:8000/node1/ console=ttyS0'), { kind: 'nocloud', seedUrl: 'http://10.0.0.2:8000/node1/' });
  assert.equal(parseNoCloudCmdline('"ds=nocloud-net;seedfrom=http://x/seed;h=node-1;i=iid-1"'), { kind: 'nocloud-net', seedUrl: 'http://x/seed/', hostname: 'node-1', instanceId: 'iid-1' });
  assert.equal(parseNoCloudCmdline('ds=nocloud'), { kind: 'nocloud' });
  assert.is(parseNoCloudCmdline('ds=ec2 root=/dev/sda'), undefined);
  assert.is(parseNoCloudCmdline('ds=nocloudy'), undefined);
});

test('meta-data in YAML or JSON', () => {
  const y = parseMetaData('instance-id: iid-123\nlocal-hostname: node-1\n');
  assert.equal([y.instanceId, y.localHostname, y.problems], ['iid-123', 'node-1', []]);
  const j = parseMetaData('{"instance-id": "i-9", "local-hostname": "n9", "extra": 1}');
  assert.equal([j.instanceId, j.localHostname, j.raw.extra], ['i-9', 'n9', 1]);
  assert.equal(parseMetaData('').problems, []);
  assert.equal(parseMetaData('[1]').problems, ['meta-data is not a map of keys']);
  assert.match(parseMetaData('a: [').problems[0], /^meta-data is neither YAML nor JSON/);
});

test('user-data: cloud-config, script, gzip', () => {
  const cc = '#cloud-config\nhostname: n1\n';
  assert.equal(splitUserData(cc), { cloudConfigs: [cc], scripts: [], problems: [] });
  assert.equal(splitUserData('#!/bin/sh\necho hi\n'), { cloudConfigs: [], scripts: [{ name: 'user-data', text: '#!/bin/sh\necho hi\n' }], problems: [] });
  assert.equal(splitUserData(gzipSync(Buffer.from(cc))).cloudConfigs, [cc]);
  assert.equal(splitUserData(''), { cloudConfigs: [], scripts: [], problems: [] });
  assert.match(splitUserData('#include http://x\n').problems[0], /unsupported user-data/);
  assert.match(splitUserData(Buffer.from([0x1f, 0x8b, 1, 2])).problems[0], /does not decompress/);
});

test('user-data: MIME multipart with cloud-config and script parts', () => {
  const mime = [
    'Content-Type: multipart/mixed; boundary="==BOUNDARY=="',
    'MIME-Version: 1.0',
    '',
    '--==BOUNDARY==',
    'Content-Type: text/cloud-config; charset="us-ascii"',
    '',
    'hostname: from-mime',
    '',
    '--==BOUNDARY==',
    'Content-Type: text/x-shellscript',
    'Content-Disposition: attachment; filename="setup.sh"',
    'Content-Transfer-Encoding: base64',
    '',
    Buffer.from('#!/bin/sh\necho set up\n').toString('base64'),
    '--==BOUNDARY==--',
    '',
  ].join('\r\n');
  const u = splitUserData(mime);
  assert.equal(u.problems, []);
  assert.equal(u.cloudConfigs, ['hostname: from-mime\n']);
  assert.equal(u.scripts, [{ name: 'setup.sh', text: '#!/bin/sh\necho set up\n' }]);
  assert.is(parseConfig(u.cloudConfigs[0], 'user-data').config?.hostname, 'from-mime');
});


test('blkid output: label -> device; PARTLABEL is not a filesystem label; the first device wins', async () => {
  const { parseBlkid } = await import('../../init/configure.ts');
  const m = parseBlkid([
    '/dev/vda1: LABEL_FATBOOT="ESP" LABEL="ESP" UUID="1234-ABCD" BLOCK_SIZE="512" TYPE="vfat" PARTLABEL="esp" PARTUUID="aa"',
    '/dev/vda2: TYPE="squashfs" PARTLABEL="kiln-root-a" PARTUUID="bb"',
    '/dev/vdb: SEC_TYPE="msdos" LABEL="cidata" UUID="0C0D-0E0F" TYPE="vfat"',
    '/dev/sr0: BLOCK_SIZE="2048" UUID="2026-11-24-00-00-00-00" LABEL="cidata" TYPE="iso9660"',
    '',
  ].join('\n'));
  assert.equal([...m], [['ESP', '/dev/vda1'], ['cidata', '/dev/vdb']]);
});

test('the network pass reuses the local pass\'s blkid while the block devices are the same', async () => {
  const { blockLabels } = await import('../../init/configure.ts');
  const { mkdtempSync, mkdirSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const sys = mkdtempSync(join(tmpdir(), 'kiln-sys-'));
  const sysBlock = join(sys, 'class/block');
  for (const d of ['vda', 'vda1']) mkdirSync(join(sysBlock, d), { recursive: true });
  let runs = 0, code = 0;
  const asked: string[][] = [];
  const blkid = async (devs: string[]) => { runs++; asked.push(devs); return { code, signal: null, stdout: `/dev/vda1: LABEL="ESP" TYPE="vfat"\n/dev/sda: LABEL="cidata" TYPE="vfat"\n`.slice(0, runs > 1 ? undefined : 35), stderr: '' }; };
  // No boot disk known (no mountinfo): every device is a candidate.
  assert.equal([...await blockLabels({ sys, mountinfo: '', blkid })], [['ESP', '/dev/vda1']]);
  assert.equal([...await blockLabels({ sys, mountinfo: '', blkid })], [['ESP', '/dev/vda1']]);
  assert.is(runs, 1, 'same devices: probed once');
  assert.equal(asked[0], ['/dev/vda', '/dev/vda1']);
  mkdirSync(join(sysBlock, 'sda'));
  assert.equal([...await blockLabels({ sys, mountinfo: '', blkid })], [['ESP', '/dev/vda1'], ['cidata', '/dev/sda']], 'a device that came late is probed');
  assert.is(runs, 2);
  code = 1;
  mkdirSync(join(sysBlock, 'sdb'));
  await blockLabels({ sys, mountinfo: '', blkid });
  await blockLabels({ sys, mountinfo: '', blkid });
  assert.is(runs, 4, 'a failed probe is not kept');
  // Only device-mapper, loop and RAM devices: nothing to probe, and no blkid at all.
  const bare = mkdtempSync(join(tmpdir(), 'kiln-sys-'));
  for (const d of ['dm-0', 'loop0', 'loop1', 'ram0', 'zram0']) mkdirSync(join(bare, 'class/block', d), { recursive: true });
  assert.equal([...await blockLabels({ sys: bare, mountinfo: '', blkid })], []);
  assert.equal([...await blockLabels({ sys: bare, mountinfo: '', blkid })], []);
  assert.is(runs, 4, 'no candidate: blkid is not run');
});

test.run();
