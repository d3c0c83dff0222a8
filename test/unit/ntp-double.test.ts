// The NTP test double the time e2e test serves to the guest: a mode 4 reply to a mode 3
// request, the client's transmit time echoed as origin, this host's time in the timestamps.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSocket } from 'node:dgram';
import { ntpDouble, ntpReply, readNtpTime, writeNtpTime } from '../e2e/ntp-double.ts';

const request = (txMs: number) => {
  const b = Buffer.alloc(48);
  b[0] = (4 << 3) | 3; // version 4, mode 3 (client)
  b[2] = 6;
  writeNtpTime(b, 40, txMs);
  return b;
};

test('timestamps round-trip (to the microsecond)', () => {
  const b = Buffer.alloc(8);
  writeNtpTime(b, 0, 1_780_000_000_123.5);
  assert.ok(Math.abs(readNtpTime(b, 0) - 1_780_000_000_123.5) < 0.001);
});

test('a request gets a stratum-1 server reply with its transmit time as origin; anything else none', () => {
  const req = request(978_307_200_000); // a client in 2001
  const r = ntpReply(req, 1_780_000_000_000, 1_780_000_000_002)!;
  assert.is(r.length, 48);
  assert.is(r[0]! & 7, 4);
  assert.is((r[0]! >> 3) & 7, 4);
  assert.is(r[0]! >> 6, 0);
  assert.is(r[1], 1);
  assert.is(r.subarray(12, 16).toString(), 'KILN');
  assert.equal(r.subarray(24, 32), req.subarray(40, 48));
  assert.is(Math.round(readNtpTime(r, 32)), 1_780_000_000_000);
  assert.is(Math.round(readNtpTime(r, 40)), 1_780_000_000_002);
  assert.is(ntpReply(Buffer.alloc(47), 0, 0), undefined);
  const server = Buffer.from(req); server[0] = (4 << 3) | 4;
  assert.is(ntpReply(server, 0, 0), undefined);
});

test('it answers over UDP', async () => {
  const d = await ntpDouble({ port: 0, now: () => 1_780_000_000_000 });
  const port = (d.socket.address() as { port: number }).port;
  const c = createSocket('udp4');
  try {
    const got = await new Promise<Buffer>((resolve) => { c.once('message', resolve); c.send(request(1000), port, '127.0.0.1'); });
    assert.is(Math.round(readNtpTime(got, 40)), 1_780_000_000_000);
    assert.is(d.requests, 1);
  } finally { c.close(); await d.close(); }
});

test.run();
