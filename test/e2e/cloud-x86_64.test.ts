// Cloud images end to end. 1: the test image as qcow2 boots at its own size (nothing to
// grow), keeps a file on /data, is resized by 2 GiB and boots again: kiln-data fills the
// disk (GPT, kernel and ext4) and the file is still there. 2: an image whose built-in config
// enables the EC2 data source boots with no CIDATA and takes its host name, SSH key and
// run_cmd from a loopback stand-in for the EC2 metadata service at 169.254.169.254.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, mkdtempSync, openSync, readSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';
import { build, REPO } from '../../builder/build.ts';
import { readGpt } from '../../init/disk/gpt.ts';
import { createLogger } from '../../builder/log.ts';
import { Vm } from '../../builder/qemu.ts';
import { tool } from '../../builder/tools.ts';
import { cidataImage, freePort, ssh, sshKeypair, strangerDisk } from './helpers.ts';
import { BOOT_TIMEOUT, K3S_STANDIN, READY, TEST_VERSION, testImage } from './image.ts';

const MiB = 1024 * 1024;
const GROWN = /kiln: data partition grown to (\d+) MiB/;
const alice = sshKeypair();

async function powerOff(vm: Vm) {
  await vm.qmp('system_powerdown');
  await vm.waitFor(/kiln: power off/, 120_000);
  assert.ok(await vm.exited(60_000), 'QEMU should exit after the guest powers off');
}

test('a resized qcow2: kiln-data grows to the disk\'s end on boot and keeps its files', async () => {
  const img = await testImage('x86_64');
  const dir = mkdtempSync(join(tmpdir(), 'kiln-cloud-'));
  const disk = join(dir, 'disk.qcow2');
  await $({ quiet: true })`${tool('qemu-img')} convert -f raw -O qcow2 ${img.raw} ${disk}`;
  const head = Buffer.alloc(MiB);
  const fd = openSync(img.raw, 'r');
  try { readSync(fd, head, 0, MiB, 0); } finally { closeSync(fd); }
  const data = readGpt(head).partitions.find((p) => p.name === 'kiln-data')!;
  const rawBytes = statSync(img.raw).size;
  const cidata = await cidataImage(`#cloud-config\nssh_authorized_keys: ['${alice.pub}']\n`);
  const drives = [`file=${cidata},format=raw,if=virtio,readonly=on`];

  // Boot 1 at the image's own size: the data partition is already full.
  let port = await freePort();
  let vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 384, hostfwd: [[port, 22]], extraDrives: drives, allowReboot: false });
  try {
    await vm.waitFor(READY, BOOT_TIMEOUT);
    assert.not.match(vm.output, GROWN, 'nothing to grow on a disk of the image\'s own size');
    const before = await ssh(port, alice.key, 'echo kept across the resize > /data/before-resize.txt && sync && cat /sys/class/block/vda4/size');
    assert.is(Number(before.trim()), data.lastLba - data.firstLba + 1);
    await powerOff(vm);
    console.log(`  boot 1 (no growth): ready and off in ${vm.elapsed().toFixed(1)} s (${vm.accel})`);
  } finally { await vm.kill(); }

  await $({ quiet: true })`${tool('qemu-img')} resize -f qcow2 ${disk} +2G`;
  const diskBytes = rawBytes + 2048 * MiB;
  const wantSectors = diskBytes / 512 - 34 - data.firstLba + 1; // to the last usable LBA (backup GPT after it)

  // Boot 2 on the larger disk, with another kiln disk's labels beside it (vdc): the verified
  // root's own disk is the one whose data partition grows and whose ESP is mounted.
  port = await freePort();
  vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 384, hostfwd: [[port, 22]], extraDrives: [...drives, `file=${strangerDisk('x86_64')},format=raw,if=virtio`], allowReboot: false });
  try {
    const m = await vm.waitFor(GROWN, BOOT_TIMEOUT);
    const ready = await vm.waitFor(READY, BOOT_TIMEOUT);
    assert.not.match(ready[0] + vm.output, /degraded|data\/esp failed/, 'a second disk with kiln\'s labels must not hide this disk\'s ESP');
    assert.is(Number(m[1]), Math.floor((wantSectors * 512) / MiB));
    assert.is((await ssh(port, alice.key, "grep ' /efi ' /proc/mounts | cut -d' ' -f1")).trim(), '/dev/vda1');
    const out = (await ssh(port, alice.key, 'cat /data/before-resize.txt; cat /sys/class/block/vda/size /sys/class/block/vda4/size; df -k /data | tail -1; /sbin/dumpe2fs -h /dev/vda4 2>/dev/null | grep -E "^Block (count|size):"')).split('\n');
    assert.is(out[0], 'kept across the resize');
    assert.is(Number(out[1]), diskBytes / 512);
    assert.is(Number(out[2]), wantSectors, 'the kernel sees the grown partition');
    const dfTotalKiB = Number(out[3]!.trim().split(/\s+/)[1]);
    assert.ok(dfTotalKiB > 2200 * 1024, `df should show the grown filesystem: ${out[3]}`);
    // The filesystem fills the partition (so the next boot has nothing left to do).
    const blocks = Number(/Block count:\s+(\d+)/.exec(out.join('\n'))![1]) * Number(/Block size:\s+(\d+)/.exec(out.join('\n'))![1]);
    assert.ok(wantSectors * 512 - blocks < 8 * MiB, `ext4 is ${blocks} bytes, the partition ${wantSectors * 512}`);
    console.log(`  boot 2 (grown to ${m[1]} MiB): ready in ${vm.elapsed().toFixed(1)} s`);
  } finally { await vm.kill(); }
});

/**
 * TEST DOUBLE for the EC2 instance metadata service: IMDSv2 (a PUT for a token, then GETs
 * carrying it) with v1 still allowed, as on EC2 by default; a wrong token is refused.
 */
async function ec2MetadataStandIn(userData: string, hostname: string): Promise<{ server: Server; port: number; hits: string[] }> {
  const token = 'e2e-imds-token';
  const hits: string[] = [];
  const server = createServer((req, res) => {
    const given = req.headers['x-aws-ec2-metadata-token'];
    hits.push(`${req.method} ${req.url}${given ? ' +token' : ''}`);
    if (req.method === 'PUT' && req.url === '/latest/api/token' && req.headers['x-aws-ec2-metadata-token-ttl-seconds']) { res.end(token); return; }
    if (req.method !== 'GET') { res.writeHead(405); res.end(); return; }
    if (given !== undefined && given !== token) { res.writeHead(401); res.end(); return; }
    if (req.url === '/latest/user-data') { res.end(userData); return; }
    if (req.url === '/latest/meta-data/local-hostname') { res.end(hostname); return; }
    res.writeHead(404); res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as any).port, hits };
}

test('EC2-style metadata (kiln.data_sources: [ec2] built in): host name, SSH key and run_cmd applied', async () => {
  const rec = await build({
    arches: ['x86_64'], formats: ['qcow2'], out: join(REPO, 'out', 'test-ec2'), version: TEST_VERSION, k3sBinary: K3S_STANDIN,
    config: join(REPO, 'test/fixtures/ec2-config.yaml'), log: createLogger({ quiet: !process.env.KILN_VERBOSE }),
  });
  const qcow2 = join(REPO, 'out', 'test-ec2', rec.outputs.find((o) => o.kind === 'qcow2')!.file);
  const imds = await ec2MetadataStandIn(`#cloud-config\nssh_authorized_keys: ['${alice.pub}']\nrun_cmd:\n  - echo "from ec2 user-data" > /var/tmp/ec2.out\n`, 'ip-172-31-9-42.eu-west-1.compute.internal');
  // QEMU forwards guest connections to 169.254.169.254:80 by running this per connection;
  // guestfwd only serves addresses inside the user network, hence net=169.254.0.0/16.
  const pipe = join(mkdtempSync(join(tmpdir(), 'kiln-imds-')), 'pipe.mjs');
  writeFileSync(pipe, "import { connect } from 'node:net';\nconst s = connect(Number(process.argv[2]), '127.0.0.1');\nprocess.stdin.pipe(s); s.pipe(process.stdout);\ns.on('close', () => process.exit(0)); s.on('error', () => process.exit(1));\n");
  const port = await freePort();
  const vm = await Vm.start({
    arch: 'x86_64', disk: qcow2, snapshot: true, memMiB: 384, hostfwd: [[port, 22]], allowReboot: false,
    netdevExtra: `net=169.254.0.0/16,guestfwd=tcp:169.254.169.254:80-cmd:${process.execPath} ${pipe} ${imds.port}`,
  });
  try {
    await vm.waitFor(READY, BOOT_TIMEOUT);
    // The token is asked for first; under a slow emulator its 3 s timeout may pass and v1 is used.
    assert.is(imds.hits[0], 'PUT /latest/api/token', `requests: ${imds.hits.join(', ')}`);
    assert.ok(imds.hits.some((h) => h.startsWith('GET /latest/user-data')), `requests: ${imds.hits.join(', ')}`);
    const out = (await ssh(port, alice.key, 'hostname; cat /var/tmp/ec2.out')).split('\n');
    assert.is(out[0], 'ip-172-31-9-42');
    assert.is(out[1], 'from ec2 user-data');
    assert.not.match(vm.output, /kiln: config: .*(problem|not reachable|no user-data)/);
    console.log(`  EC2 boot: ready in ${vm.elapsed().toFixed(1)} s; metadata requests: ${imds.hits.join(', ')}`);
  } finally { await vm.kill(); imds.server.close(); }
});

test.run();
