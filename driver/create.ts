// The one way to build a driver: from checked settings (config.ts) to backends, services and
// the gRPC server, in the order a restart needs (thaw what a crash left frozen, sweep
// temporary files, let backends finish half-done work) before the first call is served.
import path from 'node:path';
import type { Logger } from './log.js';
import { DriverContext } from './context.js';
import { CsiServer, type Services } from './server.js';
import { IdentityService } from './identity.js';
import { ControllerService } from './controller.js';
import { GroupControllerService } from './groupcontroller.js';
import { NodeService } from './node.js';
import { SnapshotMetadataService } from './snapshotmetadata.js';
import { NodeStateStore } from './nodestate.js';
import { LoopBackend } from './backends/loop/index.js';
import { LvmBackend } from './backends/lvm/index.js';
import { RbdBackend, loadConfig } from './backends/rbd/index.js';
import type { Backend } from './backends/backend.js';
import { ensureXfsPool, releaseXfsPool } from './host/pool.js';
import { sweepTemporaryFiles, driverTempLocations } from './sweep.js';
import { setMaxChildProcesses, observeChildProcesses } from './host/exec.js';
import { DriverMetrics } from './metrics.js';
import { serveHttp, metrics as metricsHandler, type HttpServer } from '../lib/http.js';
import { initFreezeJournal } from './host/freeze.js';
import type { DriverSettings } from './config.js';

/** How long a stop waits for long work a caller left running (a copy, a wipe) before exiting. */
export const BACKGROUND_GRACE_MS = 30_000;

export interface CreateOptions {
  log: Logger;
  /**
   * Tests: these backends instead of the ones the settings describe (a fake, a wrapped or
   * specially configured real one). They are used as given: the caller has run init().
   */
  backends?: Backend[];
}

export interface Driver {
  readonly settings: DriverSettings;
  readonly ctx: DriverContext;
  readonly server: CsiServer;
  /** The services the server serves (tests call them directly, without gRPC's error mapping). */
  readonly services: DriverServices;
  readonly nodeState: NodeStateStore;
  readonly backends: Map<string, Backend>;
  /** With --metrics-address: the metrics, and (once listening) their HTTP server. */
  readonly metrics?: DriverMetrics;
  readonly metricsServer?: HttpServer;
  /** Serves on settings.endpoint, or on endpoint when given (and /metrics on settings.metricsAddress). */
  listen(endpoint?: string): Promise<void>;
  /**
   * Graceful stop: in-flight calls finish (up to graceMs), background work gets its chance,
   * then the loop data pool is released when nothing holds it. Resolves to whether all of
   * that happened in time.
   */
  stop(graceMs?: number): Promise<boolean>;
}

async function buildLoop(cfg: NonNullable<DriverSettings['loop']>, s: DriverSettings, log: Logger): Promise<LoopBackend> {
  if (cfg.dataPoolBytes !== undefined) {
    const r = await ensureXfsPool(cfg.dataDir, cfg.dataPoolBytes);
    log.info({ dataDir: cfg.dataDir, ...r }, 'xfs pool for the loop backend');
  }
  const loop = new LoopBackend({ dataDir: cfg.dataDir, capacityBytes: cfg.capacityBytes, maxVolumeBytes: s.maxVolumeBytes, pool: cfg.dataPoolBytes !== undefined, log });
  await loop.init();
  log.info({ dataDir: cfg.dataDir, reflink: loop.reflink }, 'loop backend ready');
  return loop;
}

async function buildLvm(cfg: NonNullable<DriverSettings['lvm']>, s: DriverSettings, log: Logger): Promise<LvmBackend> {
  const lvm = new LvmBackend({ ...cfg, stateDir: s.nodeStateDir, maxVolumeBytes: s.maxVolumeBytes, log });
  await lvm.init();
  return lvm;
}

async function buildRbd(cfg: NonNullable<DriverSettings['rbd']>, s: DriverSettings, log: Logger): Promise<RbdBackend> {
  const rbd = new RbdBackend({
    config: await loadConfig(cfg.configFile, { mapper: cfg.mapper }),
    stateDir: path.join(s.nodeStateDir, 'rbd'),
    nodeId: s.nodeId,
    node: s.mode !== 'controller',
    controller: s.mode !== 'node',
    maxVolumeBytes: s.maxVolumeBytes,
    log,
  });
  await rbd.init();
  log.info({ mapper: rbd.mapper.name, clusters: rbd.config.clusters.map((c) => c.clusterID) }, 'rbd backend ready');
  return rbd;
}

/** The configured backends, each initialised (start-up reconcile) before any call is served. */
async function buildBackends(s: DriverSettings, log: Logger): Promise<Backend[]> {
  const out: Backend[] = [];
  if (s.loop) out.push(await buildLoop(s.loop, s, log));
  // After the loop backend's init (which may mount the pool) and before anything else writes.
  await sweepTemporaryFiles(driverTempLocations({ nodeStateDir: s.nodeStateDir, dataDir: s.loop?.dataDir }), log);
  if (s.lvm) out.push(await buildLvm(s.lvm, s, log));
  if (s.rbd) out.push(await buildRbd(s.rbd, s, log));
  return out;
}

export interface DriverServices extends Services {
  identity: IdentityService;
  controller?: ControllerService;
  groupController?: GroupControllerService;
  node?: NodeService;
  snapshotMetadata?: SnapshotMetadataService;
}

/** The services the mode asks for: a controller-only driver has no node service, and the reverse. */
function buildServices(s: DriverSettings, ctx: DriverContext, nodeState: NodeStateStore): DriverServices {
  const probeDirs = [...(s.loop ? [s.loop.dataDir] : []), s.nodeStateDir];
  return {
    identity: new IdentityService(ctx, probeDirs, { controller: s.mode !== 'node' }),
    controller: s.mode !== 'node' ? new ControllerService(ctx) : undefined,
    groupController: s.mode !== 'node' ? new GroupControllerService(ctx) : undefined,
    // Beside the controller: snapshots are controller objects, and a node-only driver has none to answer for.
    snapshotMetadata: s.mode !== 'node' ? new SnapshotMetadataService(ctx) : undefined,
    node: s.mode !== 'controller' ? new NodeService(ctx, nodeState, s.allowedPathRoots) : undefined,
  };
}

export async function createDriver(s: DriverSettings, opts: CreateOptions): Promise<Driver> {
  const { log } = opts;
  // Process-wide: one driver per process outside tests, and tests use the default.
  setMaxChildProcesses(s.maxChildProcesses);
  // First: a previous run killed mid-snapshot may have left applications' filesystems frozen.
  await initFreezeJournal(path.join(s.nodeStateDir, 'freezes'), log);
  const list = opts.backends ?? (await buildBackends(s, log));
  const backends = new Map(list.map((b) => [b.name, b]));
  if (!backends.has(s.defaultBackend)) throw new Error(`the default backend ${s.defaultBackend} is not enabled; enabled: ${[...backends.keys()].join(', ')}`);
  const ctx = new DriverContext(s, backends, log);
  const nodeState = new NodeStateStore(s.nodeStateDir);
  await nodeState.init();
  const services = buildServices(s, ctx, nodeState);
  const metrics = s.metricsAddress === undefined ? undefined : buildMetrics(s, backends, nodeState, log);
  const server = new CsiServer(services, log, { maxConcurrentRpcs: s.maxConcurrentRpcs }, metrics);
  const driver: Driver & { metricsServer?: HttpServer } = {
    settings: s,
    ctx,
    server,
    services,
    nodeState,
    backends,
    metrics,
    listen: async (endpoint = s.endpoint) => {
      await server.listen(endpoint);
      if (metrics && s.metricsAddress !== undefined && !driver.metricsServer) {
        // Metrics are optional: a taken port (another pod on the host network) or an address
        // this host lacks must not keep the node plugin from serving volumes.
        driver.metricsServer = await serveHttp(s.metricsAddress, { '/metrics': metricsHandler(metrics.registry, () => metrics.refresh()) }, log).catch((err: unknown) => {
          log.error({ metricsAddress: s.metricsAddress, err: err instanceof Error ? err.message : String(err) }, 'cannot serve /metrics there; serving CSI without metrics');
          return undefined;
        });
      }
    },
    stop: async (graceMs = BACKGROUND_GRACE_MS) => {
      const ok = await stopDriver(s, ctx, server, graceMs, log);
      await driver.metricsServer?.close();
      if (metrics) observeChildProcesses(undefined);
      return ok;
    },
  };
  return driver;
}

function buildMetrics(s: DriverSettings, backends: Map<string, Backend>, nodeState: NodeStateStore, log: Logger): DriverMetrics {
  const metrics = new DriverMetrics({
    driverName: s.driverName,
    defaultBackend: s.defaultBackend,
    backends,
    sharedBackends: s.metricsSharedBackends,
    nodeState: s.mode !== 'controller' ? nodeState : undefined,
    log,
  });
  // Process-wide, as the child process cap: one driver per process outside tests.
  observeChildProcesses(metrics.childExited);
  return metrics;
}

async function stopDriver(s: DriverSettings, ctx: DriverContext, server: CsiServer, graceMs: number, log: Logger): Promise<boolean> {
  const graceful = await server.shutdown(graceMs);
  // Long work a caller left running (a copy, a wipe) gets its chance to finish; if it
  // does not, it is cut off here and its retry after the restart completes it.
  const idle = await ctx.background.idle(BACKGROUND_GRACE_MS);
  if (!idle) log.warn({ running: ctx.background.size }, 'background work still running at exit; it is retried after the restart');
  // After a forced shutdown a call may still be writing into the pool: leave it mounted.
  const loop = ctx.backends.get('loop');
  if (s.loop?.dataPoolBytes !== undefined && loop instanceof LoopBackend && graceful && idle) await releasePoolIfIdle(loop, s.loop.dataDir, log);
  return graceful && idle;
}

/**
 * On a graceful stop the data pool is unmounted and its loop device detached, so the
 * uninstall steps can remove the data directory; but not while a volume in it is still
 * attached (staged or published): unmounting would fail (EBUSY) or, lazily, hide the files
 * under running pods. Then it stays, and the log says which volumes hold it.
 */
async function releasePoolIfIdle(loop: LoopBackend, dataDir: string, log: Logger): Promise<void> {
  try {
    const attached: string[] = [];
    for (const v of await loop.listVolumes()) if (await loop.attachedDevice(v)) attached.push(v.id);
    if (attached.length > 0) {
      log.warn({ dataDir, attached }, 'leaving the data pool mounted: these volumes are still attached on this node');
      return;
    }
    await releaseXfsPool(dataDir);
    log.info({ dataDir }, 'data pool unmounted and its loop device detached');
  } catch (err) {
    log.error({ dataDir, err: err instanceof Error ? err.message : String(err) }, 'could not release the data pool; it stays mounted');
  }
}
