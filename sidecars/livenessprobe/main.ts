#!/usr/bin/env node
// tscsi-livenessprobe: /healthz answers 200 "ok" while the CSI driver's Identity Probe
// succeeds (within --probe-timeout), 500 with the reason otherwise; /metrics has the
// CSI call metrics. Meant as the target of the driver container's livenessProbe.
import { createLogger, parseFlags, runMain, stopOnSignals } from '../../lib/process.js';
import { unixSocketPath } from '../../lib/socket.js';
import { CsiCallMetrics } from '../common/metrics.js';
import { serveHealthAndMetrics } from '../common/http.js';
import { probeDriver, waitForDriverName } from '../common/driver.js';
import { parseDuration } from '../common/duration.js';

const USAGE = `tscsi-livenessprobe: HTTP /healthz backed by the CSI driver's Probe

  --csi-address PATH        the driver's socket (default /csi/csi.sock)
  --http-endpoint HOST:PORT where to serve /healthz and /metrics (default 127.0.0.1:9808)
  --probe-timeout DURATION  how long one Probe may take (default 1s)
  --log-level LEVEL         pino level (default info)
`;

/** How long the name of the driver is asked for, in the background, before the metrics stay unlabelled. */
const DRIVER_NAME_TIMEOUT_MS = 120_000;

async function main(): Promise<void> {
  const flags = parseFlags(USAGE, {
    'csi-address': { type: 'string', default: '/csi/csi.sock' },
    'http-endpoint': { type: 'string', default: '127.0.0.1:9808' },
    'probe-timeout': { type: 'string', default: '1s' },
  });
  if (!flags) return;
  const { values } = flags;
  const log = createLogger('tscsi-livenessprobe', values['log-level']!);
  const address = unixSocketPath(values['csi-address']!);
  const timeoutMs = parseDuration(values['probe-timeout']!);
  if (!(timeoutMs > 0)) throw new Error('--probe-timeout must be positive');
  const csiMetrics = new CsiCallMetrics();

  // the driver's name labels the metrics; learnt in the background, never blocks /healthz
  waitForDriverName(address, { log, metrics: csiMetrics, timeoutMs: DRIVER_NAME_TIMEOUT_MS }).catch((err: unknown) =>
    log.warn({ err: String(err) }, 'the driver never told its name; metrics say driver="unknown"'),
  );

  let lastHealthy: boolean | undefined;
  const server = await serveHealthAndMetrics(
    values['http-endpoint']!,
    async () => {
      const reason = await probeDriver(address, timeoutMs, csiMetrics);
      const healthy = reason === undefined;
      // one line per change of state, and every failure at debug
      if (healthy !== lastHealthy) (healthy ? log.info.bind(log) : log.warn.bind(log))({ healthy, reason }, 'health changed');
      else if (!healthy) log.debug({ reason }, 'health check failed');
      lastHealthy = healthy;
      return reason;
    },
    log,
  );
  log.info({ csiAddress: address, probeTimeoutMs: timeoutMs, port: server.address.port }, 'livenessprobe started');
  stopOnSignals(log, () => server.close());
}

runMain('tscsi-livenessprobe', main);
