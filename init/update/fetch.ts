// What the updater fetches with: Node's fetch for http(s), and the same contract for file:
// URLs, so a channel tree copied onto the node (an air-gapped site, a USB stick) updates it
// exactly as a web server would, Range requests (resume) included.
import { createReadStream, statSync } from 'node:fs';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

export async function channelFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
  if (url.protocol !== 'file:') return fetch(input, init);
  let path: string, size: number;
  try {
    path = fileURLToPath(url);
    const st = statSync(path);
    if (!st.isFile()) throw new Error('not a file');
    size = st.size;
  } catch {
    return new Response(`${url.href}: no such file`, { status: 404 });
  }
  // bytes=N- (resume) and bytes=N-M (a delta's missing chunks); anything else is ignored, as a
  // server without Range support would (200, the whole file).
  const range = /^bytes=(\d+)-(\d*)$/.exec(new Headers(init?.headers).get('range') ?? '');
  const start = range ? Number(range[1]) : 0;
  if (start > size || (range && start >= size && size > 0)) return new Response(null, { status: 416, headers: { 'content-range': `bytes */${size}` } });
  const end = range && range[2] ? Math.min(Number(range[2]), size - 1) : size - 1; // inclusive
  if (range && range[2] && end < start) return new Response(null, { status: 416, headers: { 'content-range': `bytes */${size}` } });
  let body: ReadableStream<Uint8Array> | null = null;
  if (end - start + 1 > 0) {
    const stream = createReadStream(path, { start, end });
    // Like fetch: an abort (a deadline, a size limit) ends the body with the abort's reason.
    const signal = init?.signal;
    if (signal?.aborted) stream.destroy(signal.reason);
    else signal?.addEventListener('abort', () => stream.destroy(signal.reason), { once: true });
    body = Readable.toWeb(stream) as ReadableStream<Uint8Array>;
  }
  const headers: Record<string, string> = { 'content-length': String(Math.max(0, end - start + 1)) };
  if (range) headers['content-range'] = `bytes ${start}-${end}/${size}`;
  return new Response(body, { status: range ? 206 : 200, headers });
}
