// The control socket: `kiln status`, `kiln logs` and friends on the node talk to init
// through /run/kiln/control.sock, one JSON request and one JSON answer per connection.
// Root-only (mode 0600): it can reboot the node.
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname } from 'node:path';

export const CONTROL_SOCKET = '/run/kiln/control.sock';

export type Handler = (args: Record<string, unknown>) => unknown | Promise<unknown>;

export function serveControl(handlers: Record<string, Handler>, path = CONTROL_SOCKET): Server {
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { force: true });
  const server = createServer((sock) => {
    let buf = '';
    // Long enough for an upgrade to download and stage; a stuck client is dropped after that.
    sock.setTimeout(15 * 60_000, () => sock.destroy());
    sock.on('error', () => { /* client went away */ });
    sock.on('data', async (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) { if (buf.length > 65536) sock.destroy(); return; }
      let answer: unknown;
      try {
        const req = JSON.parse(buf.slice(0, nl)) as { cmd: string; args?: Record<string, unknown> };
        const h = handlers[req.cmd];
        answer = h ? { ok: true, result: await h(req.args ?? {}) } : { ok: false, error: `unknown command ${req.cmd} (known: ${Object.keys(handlers).join(', ')})` };
      } catch (e) { answer = { ok: false, error: (e as Error).message }; }
      sock.end(JSON.stringify(answer) + '\n');
    });
  });
  server.on('error', () => { /* keep init alive; the CLI reports the socket missing */ });
  server.once('listening', () => { try { chmodSync(path, 0o600); } catch { /* */ } });
  listenWithoutCluster(server, path);
  return server;
}

/**
 * Listens on a Unix socket as `server.listen(path)` does in a process that is not a cluster
 * worker. listen() first loads node:cluster (six modules) to ask whether this process is one,
 * and init never is; those modules stay in init's memory for as long as it runs (0.3 MiB of
 * RSS at ready in the bench's guest, 1.1 MiB natively). `_listen2` is the step listen() then
 * takes; Node keeps the name for code that wraps it. A Node without it gets listen().
 */
export function listenWithoutCluster(server: Server, path: string, backlog = 511): void {
  const direct = (server as Server & { _listen2?: (address: string, port: number, addressType: number, backlog: number) => void })._listen2;
  if (typeof direct === 'function') direct.call(server, path, -1, -1, backlog);
  else server.listen(path);
}

export function callControl(cmd: string, args: Record<string, unknown> = {}, path = CONTROL_SOCKET): Promise<any> {
  return new Promise((resolve, reject) => {
    import('node:net').then(({ connect }) => {
      const s = connect(path);
      let buf = '';
      s.on('connect', () => s.write(JSON.stringify({ cmd, args }) + '\n'));
      s.on('data', (d) => { buf += d; });
      s.on('end', () => {
        try {
          const a = JSON.parse(buf);
          if (a.ok) resolve(a.result); else reject(new Error(a.error));
        } catch (e) { reject(new Error(`bad answer from init: ${(e as Error).message}`)); }
      });
      s.on('error', (e) => reject(new Error(`cannot reach init at ${path} (${e.message}); is this a kiln node?`)));
    }, reject);
  });
}
