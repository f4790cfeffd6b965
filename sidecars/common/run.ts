// What every controller-side sidecar's main does: flags, logger, the driver's name from the
// socket, /healthz and /metrics, leader election, and a clean stop on SIGTERM/SIGINT.
import { parseArgs } from 'node:util';
import { createLogger, runMain, stopOnSignals, type Logger } from '../../lib/process.js';
import { CsiClient } from './csi-client.js';
import { clients, loadKubeConfig, type Clients } from './kube.js';
import { serveHealthAndMetrics, type HttpServer } from './http.js';
import { CsiCallMetrics, defaultRegistry } from './metrics.js';
import { DEFAULT_LEASE_DURATION_MS, DEFAULT_RENEW_DEADLINE_MS, DEFAULT_RETRY_PERIOD_MS, LeaderElector, defaultIdentity, validateTimings } from './lease.js';
import { parseDuration } from './duration.js';
import { parseBackends, DEFAULT_BACKEND, type Scope } from './scope.js';
import { probeDriver, waitForDriverName } from './driver.js';

/** How long the driver may take to answer GetPluginInfo at start before the sidecar gives up (and restarts). */
const DRIVER_START_TIMEOUT_MS = 120_000;
/** How long the driver's Probe may take before /healthz calls it unhealthy. */
export const HEALTHZ_PROBE_TIMEOUT_MS = 3_000;

export interface Controller {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface ControllerFlags {
  'leader-election'?: boolean;
  'leader-election-namespace'?: string;
  'leader-election-lease-duration'?: string;
  'leader-election-renew-deadline'?: string;
  'leader-election-retry-period'?: string;
  'http-endpoint'?: string;
}

const seconds = (ms: number) => `${ms / 1000}s`;

/** Flags every controller-side sidecar shares (the leader-election ones named as kubernetes-csi's sidecars name them). */
export const CONTROLLER_FLAG_OPTIONS = {
  'leader-election': { type: 'boolean', default: false },
  'leader-election-namespace': { type: 'string', default: process.env.POD_NAMESPACE ?? 'default' },
  'leader-election-lease-duration': { type: 'string', default: seconds(DEFAULT_LEASE_DURATION_MS) },
  'leader-election-renew-deadline': { type: 'string', default: seconds(DEFAULT_RENEW_DEADLINE_MS) },
  'leader-election-retry-period': { type: 'string', default: seconds(DEFAULT_RETRY_PERIOD_MS) },
  'http-endpoint': { type: 'string' },
} as const;

export interface LeaderElectionTimings {
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
}

/**
 * The candidate's identity and timings from the flags, checked as client-go checks them.
 * The identity is the pod's name where the manifest gives it (POD_NAME): the default
 * `<hostname>_<pid>` is the same for two replicas with hostNetwork on one node (the node's
 * hostname, and a sidecar is often PID 1 of its container), which would let both lead.
 */
export function leaderElectionTimings(flags: ControllerFlags, env: NodeJS.ProcessEnv = process.env): LeaderElectionTimings {
  const ms = (flag: keyof ControllerFlags, dflt: number) => {
    const v = flags[flag];
    if (typeof v !== 'string') return dflt;
    try {
      return parseDuration(v);
    } catch (err) {
      throw new Error(`--${flag} must be a duration such as 15s or 1m; got ${JSON.stringify(v)}`, { cause: err });
    }
  };
  const t = {
    identity: env.POD_NAME || defaultIdentity(),
    leaseDurationMs: ms('leader-election-lease-duration', DEFAULT_LEASE_DURATION_MS),
    renewDeadlineMs: ms('leader-election-renew-deadline', DEFAULT_RENEW_DEADLINE_MS),
    retryPeriodMs: ms('leader-election-retry-period', DEFAULT_RETRY_PERIOD_MS),
  };
  try {
    validateTimings(t.leaseDurationMs, t.renewDeadlineMs, t.retryPeriodMs);
  } catch (err) {
    throw new Error(`leader election flags: ${(err as Error).message} (--leader-election-lease-duration > --leader-election-renew-deadline > 1.2 × --leader-election-retry-period)`, { cause: err });
  }
  return t;
}

/**
 * /healthz and /metrics of a controller-side sidecar. /healthz is the driver's Probe over a
 * fresh connection each time, as the liveness probe does (see driver.ts): the sidecar's own
 * channel could report a restarted driver as gone, or a gone one as up for a while.
 */
export function serveControllerHttp(endpoint: string, csiAddress: string, metrics: CsiCallMetrics, log: Logger): Promise<HttpServer> {
  return serveHealthAndMetrics(endpoint, () => probeDriver(csiAddress, HEALTHZ_PROBE_TIMEOUT_MS, metrics), log);
}

/** The Lease a controller sidecar of a driver holds: "<sidecar>-<driver>", in a name Kubernetes accepts. */
export const leaseName = (component: string, driver: string) => `${component}-${driver.replace(/[^a-z0-9-]/gi, '-')}`.toLowerCase();

interface RunContext {
  component: string;
  flags: ControllerFlags;
  csiAddress: string;
  csi: CsiClient;
  metrics: CsiCallMetrics;
  k: Clients;
  driver: string;
  /** Set with --leader-election. */
  election?: LeaderElectionTimings;
  log: Logger;
}

/**
 * Runs a controller-side sidecar: CSI call metrics, /healthz and /metrics on
 * --http-endpoint, and, with --leader-election, work only while holding the Lease (losing
 * it exits non-zero so the container restarts as a candidate).
 */
async function runController(rc: RunContext, controller: Controller): Promise<void> {
  const { flags, log } = rc;
  rc.metrics.instrument(rc.csi);
  const http = flags['http-endpoint'] ? await serveControllerHttp(flags['http-endpoint'], rc.csiAddress, rc.metrics, log) : undefined;
  let elector: LeaderElector | undefined;
  if (rc.election) {
    const name = leaseName(rc.component, rc.driver);
    // client-go's leader_election_master_status: 1 while this candidate leads; summed over
    // the candidates, 0 means nobody does the sidecar's work (deploy/monitoring alerts on it).
    const leading = defaultRegistry.gauge('tscsi_leader_election_master_status', 'Whether this candidate holds the Lease (1) or not (0), by Lease name.', ['name']);
    leading.set({ name }, 0);
    elector = new LeaderElector(rc.k.coordination, {
      ...rc.election,
      namespace: flags['leader-election-namespace'] ?? 'default',
      name,
      log,
      onStartedLeading: async () => {
        log.info('leading: starting work');
        leading.set({ name }, 1);
        await controller.start();
      },
      onStoppedLeading: async () => {
        leading.set({ name }, 0);
        log.warn('lost leadership: stopping');
        await controller.stop();
        process.exit(1);
      },
    });
    elector.start();
  } else {
    await controller.start();
  }
  stopOnSignals(log, async () => {
    if (elector) await elector.stop();
    else await controller.stop();
    await http?.close();
    rc.csi.close();
  });
}

/** What every controller sidecar is built with: its scope (driver, --node-name, --backends, --default-backend) and its work limits. */
export interface CommonControllerOptions extends Scope {
  /** --worker-threads: objects worked on at once. */
  workers: number;
  /** --timeout: how long one CSI call may take. */
  timeoutMs: number;
  log: Logger;
}

/** Flags a sidecar adds to the shared ones, parsed by the sidecar (a boolean flag given arrives as 'true'). */
export type ExtraFlags = Record<string, { type: 'string'; default?: string } | { type: 'boolean'; default?: boolean }>;

const extraValue = (v: unknown): string | undefined => (typeof v === 'boolean' ? (v ? 'true' : undefined) : (v as string | undefined));

/**
 * The whole main() of a controller-side sidecar: the shared flags (and `extra`, whose values
 * `make` gets), the driver's name from its socket, the controller `make` builds, and
 * runController.
 */
export function controllerMain(
  component: string,
  defaultTimeoutSeconds: number,
  make: (k: Clients, csi: CsiClient, opts: CommonControllerOptions, extra: Record<string, string | undefined>) => Controller,
  extra: ExtraFlags = {},
): void {
  runMain(component, async () => {
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
        ...extra,
      },
    });
    const backends = parseBackends(values.backends as string | undefined);
    // checked before the wait for the driver: a wrong flag fails at once
    const election = values['leader-election'] ? leaderElectionTimings(values as ControllerFlags) : undefined;
    const log = createLogger(component);
    const csiAddress = values['csi-address'] as string;
    const metrics = new CsiCallMetrics();
    const driver = await waitForDriverName(csiAddress, { log, metrics, timeoutMs: DRIVER_START_TIMEOUT_MS });
    const csi = new CsiClient(csiAddress);
    const k = clients(loadKubeConfig(values.kubeconfig as string | undefined));
    const opts: CommonControllerOptions = {
      driverName: driver,
      nodeName: (values['node-name'] as string | undefined) || undefined,
      backends,
      defaultBackend: values['default-backend'] as string,
      workers: Number(values['worker-threads']),
      timeoutMs: Number(values.timeout) * 1000,
      log,
    };
    log.info({ node: opts.nodeName, backends: backends ? [...backends] : 'all' }, 'serving');
    await runController({ component, flags: values as ControllerFlags, csiAddress, csi, metrics, k, driver, election, log }, make(k, csi, opts, Object.fromEntries(Object.keys(extra).map((f) => [f, extraValue((values as Record<string, unknown>)[f])]))));
  });
}
