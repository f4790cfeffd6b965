#!/usr/bin/env node
// tscsi-registrar: registers the CSI node plugin with kubelet (kubelet's plugin watcher
// finds <plugin-registration-dir>/<driver>-reg.sock and calls GetInfo on it).
import { createLogger, parseFlags, runMain, stopOnSignals } from '../../lib/process.js';
import { unixSocketPath } from '../../lib/socket.js';
import { CsiCallMetrics } from '../common/metrics.js';
import { serveHealthAndMetrics, type HttpServer } from '../common/http.js';
import { waitForDriverName } from '../common/driver.js';
import { Registrar } from './registrar.js';

const USAGE = `tscsi-registrar: registers a CSI node plugin with kubelet

  --csi-address PATH                 the driver's socket as this process sees it (default /csi/csi.sock)
  --kubelet-registration-path PATH   the driver's socket as kubelet sees it (required)
  --plugin-registration-dir DIR      kubelet's plugin registry (default /var/lib/kubelet/plugins_registry)
  --health-port N                    serve /healthz and /metrics on this port (default: off)
  --health-host HOST                 address for --health-port (default 0.0.0.0)
  --log-level LEVEL                  pino level (default info)
`;

async function main(): Promise<void> {
  const flags = parseFlags(USAGE, {
    'csi-address': { type: 'string', default: '/csi/csi.sock' },
    'kubelet-registration-path': { type: 'string' },
    'plugin-registration-dir': { type: 'string', default: '/var/lib/kubelet/plugins_registry' },
    'health-port': { type: 'string' },
    'health-host': { type: 'string', default: '0.0.0.0' },
  });
  if (!flags) return;
  const { values } = flags;
  const kubeletPath = values['kubelet-registration-path'];
  if (!kubeletPath) throw new Error('--kubelet-registration-path is required');
  const log = createLogger('tscsi-registrar', values['log-level']!);
  const csiAddress = unixSocketPath(values['csi-address']!);

  let registrar: Registrar | undefined;
  let http: HttpServer | undefined;
  const stopper = stopOnSignals(log, async () => {
    await registrar?.stop();
    await http?.close();
  });

  if (values['health-port']) {
    const host = values['health-host']!;
    http = await serveHealthAndMetrics(`${host.includes(':') ? `[${host}]` : host}:${values['health-port']}`, async () => (registrar ? registrar.problem() : 'waiting for the driver'), log);
  }

  const name = await waitForDriverName(csiAddress, { log, metrics: new CsiCallMetrics(), stopped: () => stopper.stopping });
  if (stopper.stopping) return;
  registrar = new Registrar({
    driverName: name,
    kubeletRegistrationPath: kubeletPath,
    pluginRegistrationDir: values['plugin-registration-dir']!,
    log,
    onRegistrationFailed: (error) => stopper.stop(`kubelet failed to register the plugin: ${error}`, 1),
  });
  await registrar.start();
}

runMain('tscsi-registrar', main);
