// The small HTTP side of the driver and the sidecars: /healthz and /metrics on a host:port,
// nothing else.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { CONTENT_TYPE, type Registry } from './metrics.js';

export interface Reply {
  status: number;
  body: string;
  contentType?: string;
}

export type Handler = (req: http.IncomingMessage) => Reply | Promise<Reply>;

/**
 * Parses an HTTP listen endpoint: "host:port", "[v6]:port", ":port" (all interfaces) or
 * "port". Port 0 asks the kernel for a free one.
 */
export function parseHostPort(endpoint: string): { host: string | undefined; port: number } {
  const s = endpoint.trim();
  let host: string | undefined;
  let port: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(s);
  if (v6) {
    host = v6[1];
    port = v6[2]!;
  } else if (/^\d+$/.test(s)) {
    port = s;
  } else {
    const i = s.lastIndexOf(':');
    if (i < 0) throw new Error(`not a host:port endpoint: ${JSON.stringify(endpoint)}`);
    host = s.slice(0, i) || undefined;
    port = s.slice(i + 1);
    if (host?.includes(':')) throw new Error(`an IPv6 host must be in brackets: ${JSON.stringify(endpoint)}`);
  }
  const n = Number(port);
  if (!/^\d+$/.test(port) || !Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`bad port in ${JSON.stringify(endpoint)}`);
  return { host, port: n };
}

export interface HttpServer {
  readonly server: http.Server;
  /** Where it listens (the real port when 0 was asked for). */
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/**
 * Serves GET/HEAD on the given paths. A handler that throws answers 500 with the message;
 * unknown paths 404, other methods 405. Resolves once listening.
 */
export async function serveHttp(endpoint: string, routes: Record<string, Handler>, log?: Logger): Promise<HttpServer> {
  const { host, port } = parseHostPort(endpoint);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const send = (r: Reply) => {
      const body = req.method === 'HEAD' ? '' : r.body;
      res.writeHead(r.status, {
        'Content-Type': r.contentType ?? 'text/plain; charset=utf-8',
        'Content-Length': Buffer.byteLength(r.body),
        'Cache-Control': 'no-store',
      });
      res.end(body);
    };
    const handler = routes[path];
    if (!handler) return send({ status: 404, body: 'not found\n' });
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return send({ status: 405, body: 'method not allowed\n' });
    }
    Promise.resolve()
      .then(() => handler(req))
      .then(send, (err: unknown) => {
        log?.warn({ path, err: String((err as Error)?.message ?? err) }, 'http handler failed');
        send({ status: 500, body: `${(err as Error)?.message ?? String(err)}\n` });
      })
      .catch(() => res.destroy());
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log?.error({ err: String(err) }, 'http server error'));
  const a = server.address() as AddressInfo;
  const address = { host: a.address, port: a.port };
  log?.info({ endpoint: `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`, paths: Object.keys(routes) }, 'http listening');
  return {
    server,
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * A /healthz handler: the check resolves when healthy (200 "ok") and throws or returns a
 * reason string when not (500 with that reason).
 */
export function healthz(check: () => Promise<string | void> | string | void): Handler {
  return async () => {
    try {
      const reason = await check();
      if (typeof reason === 'string' && reason !== '') return { status: 500, body: `${reason}\n` };
      return { status: 200, body: 'ok' };
    } catch (err) {
      return { status: 500, body: `${(err as Error)?.message ?? String(err)}\n` };
    }
  };
}

/**
 * A /metrics handler rendering the registry in the Prometheus text format; `refresh` runs
 * first (gauges read at scrape time), and its failure is the scrape's (500).
 */
export function metrics(registry: Registry, refresh?: () => Promise<void>): Handler {
  return async () => {
    if (refresh) await refresh();
    return { status: 200, body: registry.render(), contentType: CONTENT_TYPE };
  };
}
