// What every sidecar's main does: flags, logger, the driver's name from the socket, and a
// clean stop on SIGTERM/SIGINT.
import { pino, type Logger } from 'pino';
import { CsiClient } from './csi-client.js';
import { parseArgs } from 'node:util';
import { clients, loadKubeConfig, type Clients } from './kube.js';
import { serveHttp } from './http.js';
import { csiCallMetrics, renderMetrics, CONTENT_TYPE as METRICS_CONTENT_TYPE } from './metrics.js';
import { LeaderElector } from './lease.js';
import { parseBackends, DEFAULT_BACKEND } from './scope.js';

export function sidecarLogger(component: string): Logger {
  return pino({ level: process.env.LOG_LEVEL ?? 'info', base: { component } }, pino.destination(2));
}

/** Waits for the driver to answer GetPluginInfo and returns its name. */
export async function driverName(csi: CsiClient, log: Logger, timeoutMs = 120_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const info = await csi.Identity.GetPluginInfo({}, 5_000);
      return info.name as string;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      log.info({ err: String((err as Error).message ?? err) }, 'waiting for the driver');
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

export function onStop(log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err: String(err) }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => handler('SIGTERM'));
  process.on('SIGINT', () => handler('SIGINT'));
}

export function fatal(component: string) {
  return (err: unknown) => {
    process.stderr.write(`${component}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  };
}

export interface Controller {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface ControllerFlags {
  'leader-election'?: boolean;
  'leader-election-namespace'?: string;
  'http-endpoint'?: string;
}

/** Flags every controller-side sidecar shares. */
export const CONTROLLER_FLAG_OPTIONS = {
  'leader-election': { type: 'boolean', default: false },
  'leader-election-namespace': { type: 'string', default: process.env.POD_NAMESPACE ?? 'default' },
  'http-endpoint': { type: 'string' },
} as const;

/**
 * Runs a controller-side sidecar: CSI call metrics, /healthz (the driver's Probe) and
 * /metrics on --http-endpoint, and, with --leader-election, work only while holding the
 * Lease (losing it exits non-zero so the container restarts as a candidate).
 */
export async function runController(component: string, flags: ControllerFlags, csi: CsiClient, k: Clients, driver: string, controller: Controller, log: Logger): Promise<void> {
  csiCallMetrics(csi, { driver });
  const http = flags['http-endpoint']
    ? await serveHttp(
        flags['http-endpoint'],
        {
          '/healthz': async () => {
            const r = await csi.Identity.Probe({}, 3000).catch((e: unknown) => ({ error: String((e as Error).message ?? e) }));
            return 'error' in r || r.ready?.value === false ? { status: 500, body: `probe failed: ${'error' in r ? r.error : 'not ready'}\n` } : { status: 200, body: 'ok\n' };
          },
          '/metrics': () => ({ status: 200, body: renderMetrics(), contentType: METRICS_CONTENT_TYPE }),
        },
        log,
      )
    : undefined;
  let elector: LeaderElector | undefined;
  if (flags['leader-election']) {
    elector = new LeaderElector(k.coordination, {
      namespace: flags['leader-election-namespace'] ?? 'default',
      name: `${component}-${driver.replace(/[^a-z0-9-]/gi, '-')}`.toLowerCase(),
      log,
      onStartedLeading: async () => {
        log.info('leading: starting work');
        await controller.start();
      },
      onStoppedLeading: async () => {
        log.warn('lost leadership: stopping');
        await controller.stop();
        process.exit(1);
      },
    });
    elector.start();
  } else {
    await controller.start();
  }
  onStop(log, async () => {
    if (elector) await elector.stop();
    else await controller.stop();
    await http?.close();
    csi.close();
  });
}

export interface CommonControllerOptions {
  driverName: string;
  /** --node-name: a per-node sidecar, only that node's volumes. */
  nodeName?: string;
  /** --backends: the driver's backends this sidecar serves (undefined: all). */
  backends?: ReadonlySet<string>;
  /** --default-backend: a StorageClass's backend when it names none (the driver's --default-backend). */
  defaultBackend: string;
  workers: number;
  timeoutMs: number;
  log: Logger;
}

/**
 * The whole main() of a controller-side sidecar: the shared flags (plus `extra`), the
 * driver's name from its socket, the controller `make` builds, and runController.
 */
export function controllerMain(
  component: string,
  defaultTimeoutSeconds: number,
  make: (k: Clients, csi: CsiClient, opts: CommonControllerOptions) => Controller,
): void {
  (async () => {
    const { values } = parseArgs({
      options: {
        ...CONTROLLER_FLAG_OPTIONS,
        'csi-address': { type: 'string', default: '/run/tscsi/csi.sock' },
        kubeconfig: { type: 'string' },
        'worker-threads': { type: 'string', default: '10' },
        timeout: { type: 'string', default: String(defaultTimeoutSeconds) },
        'node-name': { type: 'string' },
        backends: { type: 'string' },
        'default-backend': { type: 'string', default: DEFAULT_BACKEND },
      },
    });
    const backends = parseBackends(values.backends as string | undefined);
    const log = sidecarLogger(component);
    const csi = new CsiClient(values['csi-address'] as string);
    const name = await driverName(csi, log);
    const k = clients(loadKubeConfig(values.kubeconfig as string | undefined));
    const opts: CommonControllerOptions = {
      driverName: name,
      nodeName: (values['node-name'] as string | undefined) || undefined,
      backends,
      defaultBackend: values['default-backend'] as string,
      workers: Number(values['worker-threads']),
      timeoutMs: Number(values.timeout) * 1000,
      log,
    };
    log.info({ node: opts.nodeName, backends: backends ? [...backends] : 'all' }, 'serving');
    await runController(component, values as ControllerFlags, csi, k, name, make(k, csi, opts), log);
  })().catch(fatal(component));
}
