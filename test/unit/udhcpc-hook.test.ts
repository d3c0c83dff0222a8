// The udhcpc hook (overlay/usr/lib/kiln/udhcpc.script) under the image's own shell, busybox
// ash, with `ip` replaced by a shell function that records its arguments (a test double: the
// real one would change the host's network). Each `ip` is a process on the node, so the
// hook runs as few as it can: a first lease is one address and one route, a renewal of the
// same lease none.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const HOOK = new URL('../../overlay/usr/lib/kiln/udhcpc.script', import.meta.url).pathname;
const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find(existsSync);

/** Runs the hook for one udhcpc event; returns the `ip` commands it ran. */
function hook(dir: string, event: string, lease: Record<string, string> = {}): string[] {
  const log = join(dir, 'ip.log');
  writeFileSync(log, '');
  // A function wins over busybox's applets and PATH alike; the hook is sourced so it sees it.
  const script = `ip() { echo "ip $*" >> "${log}"; }\n. "${HOOK}"`;
  execFileSync(BUSYBOX!, ['sh', '-c', script, 'udhcpc.script', event], {
    env: { PATH: '/usr/bin:/bin', interface: 'eth0', KILN_NET_DIR: join(dir, 'net'), KILN_RESOLV_CONF: join(dir, 'resolv.conf'), ...lease },
  });
  return readFileSync(log, 'utf8').split('\n').filter(Boolean);
}

const LEASE = { ip: '10.0.2.15', mask: '24', router: '10.0.2.2', dns: '10.0.2.3', lease: '86400' };

test('busybox-static is on the host (the image runs the hook with its ash)', () => {
  assert.ok(BUSYBOX, 'install busybox-static');
});

test('a first start: the link up, then one address and one route; the lease and DNS recorded', () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-udhcpc-'));
  assert.equal(hook(d, 'deconfig'), ['ip link set eth0 up']);
  assert.equal(hook(d, 'bound', LEASE), ['ip addr add 10.0.2.15/24 dev eth0', 'ip route add default via 10.0.2.2 dev eth0']);
  assert.is(readFileSync(join(d, 'net/eth0'), 'utf8'), 'ip=10.0.2.15\nmask=24\nrouter=10.0.2.2\ndns=10.0.2.3\nlease=86400\nntpsrv=\n');
  assert.is(readFileSync(join(d, 'resolv.conf'), 'utf8'), 'nameserver 10.0.2.3\n');
});

test('a renewal of the same lease changes nothing on the link', () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-udhcpc-'));
  hook(d, 'deconfig');
  hook(d, 'bound', LEASE);
  assert.equal(hook(d, 'renew', LEASE), []);
  assert.ok(existsSync(join(d, 'net/eth0')));
});

test('a new address replaces the old one and its route; a new router alone replaces the route', () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-udhcpc-'));
  hook(d, 'deconfig');
  hook(d, 'bound', LEASE);
  assert.equal(hook(d, 'renew', { ...LEASE, ip: '10.0.2.16' }), [
    'ip -4 addr flush dev eth0', 'ip addr add 10.0.2.16/24 dev eth0', 'ip route add default via 10.0.2.2 dev eth0',
  ]);
  assert.equal(hook(d, 'renew', { ...LEASE, ip: '10.0.2.16', router: '10.0.2.1' }), [
    'ip route del default dev eth0', 'ip route add default via 10.0.2.1 dev eth0',
  ]);
  assert.match(readFileSync(join(d, 'net/eth0'), 'utf8'), /^ip=10\.0\.2\.16\n.*router=10\.0\.2\.1\n/s);
});

test('deconfig after a lease flushes the address and forgets the lease', () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-udhcpc-'));
  hook(d, 'deconfig');
  hook(d, 'bound', LEASE);
  assert.equal(hook(d, 'deconfig'), ['ip -4 addr flush dev eth0', 'ip link set eth0 up']);
  assert.not.ok(existsSync(join(d, 'net/eth0')));
  // The next lease starts from nothing again.
  assert.equal(hook(d, 'bound', LEASE), ['ip addr add 10.0.2.15/24 dev eth0', 'ip route add default via 10.0.2.2 dev eth0']);
});

test.run();
