// The sidecars' HTTP side: what every sidecar serves (lib/http.ts holds the server).
import type { Logger } from 'pino';
import { defaultRegistry } from './metrics.js';
import { serveHttp, healthz, metrics, type HttpServer } from '../../lib/http.js';

export * from '../../lib/http.js';

/**
 * What every sidecar serves on its --http-endpoint (or --health-port): /healthz backed by
 * `check` (see healthz) and /metrics from the default registry.
 */
export function serveHealthAndMetrics(endpoint: string, check: () => Promise<string | void> | string | void, log: Logger): Promise<HttpServer> {
  return serveHttp(endpoint, { '/healthz': healthz(check), '/metrics': metrics(defaultRegistry) }, log);
}
