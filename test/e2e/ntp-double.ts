// A test double for an NTP server (not a real one: no clock discipline, no peers): answers each
// client request (RFC 5905 mode 3) with a stratum-1 server reply (mode 4) carrying this host's
// clock. Bound to the host loopback's port 123, which QEMU's user network reaches at 10.0.2.2.
import { createSocket, type Socket } from 'node:dgram';

/** Seconds from the NTP epoch (1900) to the Unix epoch (1970). */
export const NTP_UNIX_OFFSET = 2_208_988_800;

/** Writes a Unix time in ms as a 64-bit NTP timestamp at `at`. */
export function writeNtpTime(b: Buffer, at: number, ms: number): void {
  const s = Math.floor(ms / 1000);
  b.writeUInt32BE(s + NTP_UNIX_OFFSET, at);
  b.writeUInt32BE(Math.floor(((ms - s * 1000) / 1000) * 2 ** 32) >>> 0, at + 4);
}

/** Reads a 64-bit NTP timestamp at `at` as Unix ms. */
export function readNtpTime(b: Buffer, at: number): number {
  return (b.readUInt32BE(at) - NTP_UNIX_OFFSET) * 1000 + (b.readUInt32BE(at + 4) / 2 ** 32) * 1000;
}

/**
 * The reply to a client request received at `rxMs`, sent at `txMs`; undefined for anything
 * that is not a 48-byte-or-longer mode 3 request.
 */
export function ntpReply(req: Buffer, rxMs: number, txMs: number): Buffer | undefined {
  if (req.length < 48 || (req[0]! & 7) !== 3) return undefined;
  const version = (req[0]! >> 3) & 7;
  const r = Buffer.alloc(48);
  r[0] = (0 << 6) | (version << 3) | 4; // leap 0, client's version, mode 4 (server)
  r[1] = 1; // stratum 1
  r[2] = req[2]!; // poll: as asked
  r[3] = 0xec; // precision 2^-20 s
  r.writeUInt32BE(0, 4); // root delay
  r.writeUInt32BE(0x10, 8); // root dispersion (about 0.25 ms)
  r.write('KILN', 12, 'ascii'); // reference id of a stratum-1 source
  writeNtpTime(r, 16, txMs - 1000); // reference time: set a second ago
  req.copy(r, 24, 40, 48); // origin = the client's transmit timestamp
  writeNtpTime(r, 32, rxMs);
  writeNtpTime(r, 40, txMs);
  return r;
}

export interface NtpDouble { socket: Socket; requests: number; close(): Promise<void> }

/** Serves on 127.0.0.1:123 (needs root), waiting up to waitMs for the port to be free. */
export async function ntpDouble(o: { port?: number; now?: () => number; waitMs?: number } = {}): Promise<NtpDouble> {
  const now = o.now ?? Date.now;
  const end = Date.now() + (o.waitMs ?? 120_000);
  for (;;) {
    const socket = createSocket('udp4');
    const d: NtpDouble = { socket, requests: 0, close: () => new Promise((r) => socket.close(() => r())) };
    socket.on('message', (msg, rinfo) => {
      const rx = now();
      const reply = ntpReply(msg, rx, now());
      if (!reply) return;
      d.requests++;
      socket.send(reply, rinfo.port, rinfo.address);
    });
    try {
      await new Promise<void>((resolve, reject) => { socket.once('error', reject); socket.bind(o.port ?? 123, '127.0.0.1', () => resolve()); });
      return d;
    } catch (e) {
      socket.close();
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}
