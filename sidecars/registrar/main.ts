#!/usr/bin/env node
// tscsi-registrar: registers the CSI node plugin with kubelet (kubelet's plugin watcher
// finds <plugin-registration-dir>/<driver>-reg.sock and calls GetInfo on it).
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { CsiClient } from '../common/csi-client.js';
import { csiCallMetrics, type CsiCallMetrics } from '../common/metrics.js';
import { serveHttp, healthz, metrics, type HttpServer } from '../common/http.js';
import { Registrar } from './registrar.js';

const USAGE = `tscsi-registrar: registers a CSI node plugin with kubelet

  --csi-address PATH                 the driver's socket as this process sees it (default /csi/csi.sock)
  --kubelet-registration-path PATH   the driver's socket as kubelet sees it (required)
  --plugin-registration-dir DIR      kubelet's plugin registry (default /var/lib/kubelet/plugins_registry)
  --health-port N                    serve /healthz and /metrics on this port (default: off)
  --health-host HOST                 address for --health-port (default 0.0.0.0)
  --log-level LEVEL                  pino level (default info)
`;

function logger(level: string): Logger {
  return pino({ level, base: { component: 'tscsi-registrar' } }, pino.destination({ dest: 2, sync: true }));
}

/** Calls GetPluginInfo until the driver answers; a fresh connection per attempt (no gRPC back-off in the way). */
async function waitForDriver(address: string, log: Logger, metricsFor: (c: CsiClient) => CsiCallMetrics, stopped: () => boolean): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const csi = new CsiClient(address);
    metricsFor(csi);
    try {
      const info = await csi.Identity.GetPluginInfo({}, 5_000);
      const name = String(info?.name ?? '');
      if (!name) throw new Error('GetPluginInfo returned an empty name');
      log.info({ driver: name, version: info.vendor_version, attempt }, 'driver answered GetPluginInfo');
      return name;
    } catch (err) {
      if (stopped()) throw new Error('stopped while waiting for the driver', { cause: err });
      log.warn({ csiAddress: address, attempt, err: String((err as Error)?.message ?? err) }, 'driver not answering GetPluginInfo yet; retrying');
      await new Promise((r) => setTimeout(r, Math.min(1000 * attempt, 5000)));
    } finally {
      csi.close();
    }
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'csi-address': { type: 'string', default: '/csi/csi.sock' },
      'kubelet-registration-path': { type: 'string' },
      'plugin-registration-dir': { type: 'string', default: '/var/lib/kubelet/plugins_registry' },
      'health-port': { type: 'string' },
      'health-host': { type: 'string', default: '0.0.0.0' },
      'log-level': { type: 'string', default: process.env.LOG_LEVEL ?? 'info' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const kubeletPath = values['kubelet-registration-path'];
  if (!kubeletPath) throw new Error('--kubelet-registration-path is required');
  const log = logger(values['log-level']!);
  const csiAddress = values['csi-address']!.replace(/^unix:\/\//, '');

  let stopping = false;
  let registrar: Registrar | undefined;
  let http: HttpServer | undefined;
  const csiMetrics: CsiCallMetrics[] = [];
  const stop = async (code: number, why: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason: why }, 'stopping');
    await registrar?.stop().catch((err: unknown) => log.error({ err: String(err) }, 'stop failed'));
    await http?.close();
    log.info({ exitCode: code }, 'stopped');
    process.exit(code);
  };
  process.on('SIGTERM', () => void stop(0, 'SIGTERM'));
  process.on('SIGINT', () => void stop(0, 'SIGINT'));

  if (values['health-port']) {
    http = await serveHttp(
      `${values['health-host']!.includes(':') ? `[${values['health-host']}]` : values['health-host']}:${values['health-port']}`,
      {
        '/healthz': healthz(async () => (registrar ? registrar.problem() : 'waiting for the driver')),
        '/metrics': metrics(),
      },
      log,
    );
  }

  const name = await waitForDriver(
    csiAddress,
    log,
    (c) => {
      const m = csiCallMetrics(c);
      csiMetrics.push(m);
      return m;
    },
    () => stopping,
  );
  for (const m of csiMetrics) m.driver = name;
  if (stopping) return;
  registrar = new Registrar({
    driverName: name,
    kubeletRegistrationPath: kubeletPath,
    pluginRegistrationDir: values['plugin-registration-dir']!,
    log,
    onRegistrationFailed: (error) => void stop(1, `kubelet failed to register the plugin: ${error}`),
  });
  await registrar.start();
}

main().catch((err: unknown) => {
  process.stderr.write(`${JSON.stringify({ level: 60, time: Date.now(), component: 'tscsi-registrar', msg: `fatal: ${err instanceof Error ? err.message : String(err)}` })}\n`);
  process.exit(1);
});
