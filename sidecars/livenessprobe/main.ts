#!/usr/bin/env node
// tscsi-livenessprobe: /healthz answers 200 "ok" while the CSI driver's Identity Probe
// succeeds (within --probe-timeout), 500 with the reason otherwise; /metrics has the
// CSI call metrics. Meant as the target of the driver container's livenessProbe.
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { CsiClient } from '../common/csi-client.js';
import { CsiCallMetrics } from '../common/metrics.js';
import { serveHttp, healthz, metrics } from '../common/http.js';
import { parseDuration, probeDriver } from './probe.js';

const USAGE = `tscsi-livenessprobe: HTTP /healthz backed by the CSI driver's Probe

  --csi-address PATH        the driver's socket (default /csi/csi.sock)
  --http-endpoint HOST:PORT where to serve /healthz and /metrics (default 127.0.0.1:9808)
  --probe-timeout DURATION  how long one Probe may take (default 1s)
  --log-level LEVEL         pino level (default info)
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'csi-address': { type: 'string', default: '/csi/csi.sock' },
      'http-endpoint': { type: 'string', default: '127.0.0.1:9808' },
      'probe-timeout': { type: 'string', default: '1s' },
      'log-level': { type: 'string', default: process.env.LOG_LEVEL ?? 'info' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const log = pino({ level: values['log-level']!, base: { component: 'tscsi-livenessprobe' } }, pino.destination({ dest: 2, sync: true }));
  const address = values['csi-address']!.replace(/^unix:\/\//, '');
  const timeoutMs = parseDuration(values['probe-timeout']!);
  if (!(timeoutMs > 0)) throw new Error('--probe-timeout must be positive');
  const csiMetrics = new CsiCallMetrics();

  // the driver's name labels the metrics; learnt in the background, never blocks /healthz
  void (async () => {
    for (let i = 0; i < 60 && csiMetrics.driver === 'unknown'; i++) {
      const csi = csiMetrics.instrument(new CsiClient(address));
      try {
        const info = await csi.Identity.GetPluginInfo({}, Math.max(timeoutMs, 1000));
        csiMetrics.driver = String(info.name);
        log.info({ driver: csiMetrics.driver }, 'driver answered GetPluginInfo');
      } catch {
        await new Promise((r) => setTimeout(r, 2000));
      } finally {
        csi.close();
      }
    }
  })();

  let lastHealthy: boolean | undefined;
  const server = await serveHttp(
    values['http-endpoint']!,
    {
      '/healthz': healthz(async () => {
        const reason = await probeDriver(address, timeoutMs, csiMetrics);
        const healthy = reason === undefined;
        // one line per change of state, and every failure at debug
        if (healthy !== lastHealthy) (healthy ? log.info.bind(log) : log.warn.bind(log))({ healthy, reason }, 'health changed');
        else if (!healthy) log.debug({ reason }, 'health check failed');
        lastHealthy = healthy;
        return reason;
      }),
      '/metrics': metrics(),
    },
    log,
  );
  log.info({ csiAddress: address, probeTimeoutMs: timeoutMs, port: server.address.port }, 'livenessprobe started');
  const stop = (signal: string) => {
    log.info({ signal }, 'stopping');
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`${JSON.stringify({ level: 60, time: Date.now(), component: 'tscsi-livenessprobe', msg: `fatal: ${err instanceof Error ? err.message : String(err)}` })}\n`);
  process.exit(1);
});
