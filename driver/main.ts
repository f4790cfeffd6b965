#!/usr/bin/env node
// Flags and wiring: which services run, which backends are enabled, where state lives.
import { parseArgs } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { createLogger, runMain, stopOnSignals } from '../lib/process.js';
import { armedFailpoints } from './failpoints.js';
import { DriverContext, type DriverConfig } from './context.js';
import { CsiServer } from './server.js';
import { IdentityService } from './identity.js';
import { ControllerService } from './controller.js';
import { GroupControllerService } from './groupcontroller.js';
import { NodeService } from './node.js';
import { NodeStateStore } from './nodestate.js';
import { DEFAULT_PATH_ROOTS } from './host/paths.js';
import { LoopBackend } from './backends/loop/index.js';
import { LvmBackend } from './backends/lvm/index.js';
import { rbdBackendFromFlags } from './backends/rbd/index.js';
import type { Backend } from './backends/backend.js';
import { ensureXfsPool, releaseXfsPool } from './host/pool.js';
import { sweepTemporaryFiles, driverTempLocations } from './sweep.js';
import { parseSize } from '../lib/size.js';
import { setMaxChildProcesses } from './host/exec.js';
import { isSupportedFs, type FsType } from './host/fs.js';
import { initFreezeJournal } from './host/freeze.js';

const USAGE = `tscsi-driver: a CSI driver (spec v1.12) with loop, LVM and Ceph RBD backends

  --endpoint unix:///path        socket to serve on (default unix:///run/tscsi/csi.sock)
  --mode all|controller|node     which services to serve (default all)
  --driver-name NAME             CSI driver name (default csi.tscsi.dev)
  --node-id ID                   this node's ID (default: the host name)
  --topology-key KEY             topology segment key (default topology.tscsi.dev/node)
  --data-dir DIR                 loop backend: volume files (default /var/lib/tscsi/loop)
  --data-pool-size SIZE          loop backend: keep DIR on an XFS image of SIZE (reflink snapshots on ext4 hosts)
  --capacity SIZE                loop backend: most it provisions in all (default: DIR's filesystem size)
  --max-volume-size SIZE         largest single volume (default 16Ti)
  --state-dir DIR                node state (default /var/lib/tscsi/node)
  --max-volumes-per-node N       attach limit reported by NodeGetInfo (default 256; 0 = none)
  --allowed-path-root DIR        node service: stage and publish only below DIR (repeatable; default /var/lib/kubelet)
  --lvm-volume-groups VG[,VG]    enable the lvm backend on these volume groups (the only ones it touches)
  --lvm-devices DEV[,DEV]        their physical volumes (default: found by one scan at start)
  --lvm-mode auto|dm|nodm        device-mapper or loop windows over the PVs (default auto: /proc/misc)
  --lvm-thin-overprovision N     thin pools may promise N x their size (default 10)
  --rbd-config FILE              enable the rbd backend: Ceph clusters, allowed pools, default cephx user (JSON)
  --rbd-mapper krbd|rbd-nbd|fuse how node plugins map RBD images (default: the config's, else krbd)
  --default-backend NAME         backend when a StorageClass does not say (default loop)
  --default-fs-type TYPE         ext4 (default), xfs or btrfs
  --default-volume-size SIZE     when CreateVolume gives no capacity (default 1Gi)
  --max-concurrent-rpcs N        Controller/Node calls served at once; more get RESOURCE_EXHAUSTED (default 64; 0 = no cap)
  --max-child-processes N        host tools (mkfs, cp, rbd, ...) run at once; more wait their turn (default 16)
  --log-level LEVEL              pino level (default info)
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      endpoint: { type: 'string', default: 'unix:///run/tscsi/csi.sock' },
      mode: { type: 'string', default: 'all' },
      'driver-name': { type: 'string', default: 'csi.tscsi.dev' },
      'node-id': { type: 'string', default: os.hostname() },
      'topology-key': { type: 'string', default: 'topology.tscsi.dev/node' },
      'data-dir': { type: 'string', default: '/var/lib/tscsi/loop' },
      'data-pool-size': { type: 'string' },
      capacity: { type: 'string' },
      'max-volume-size': { type: 'string', default: '16Ti' },
      'state-dir': { type: 'string', default: '/var/lib/tscsi/node' },
      'max-volumes-per-node': { type: 'string', default: '256' },
      'allowed-path-root': { type: 'string', multiple: true },
      'lvm-volume-groups': { type: 'string' },
      'lvm-devices': { type: 'string' },
      'lvm-mode': { type: 'string', default: 'auto' },
      'lvm-thin-overprovision': { type: 'string', default: '10' },
      'rbd-config': { type: 'string' },
      'rbd-mapper': { type: 'string' },
      'default-backend': { type: 'string', default: 'loop' },
      'default-fs-type': { type: 'string', default: 'ext4' },
      'default-volume-size': { type: 'string', default: '1Gi' },
      'max-concurrent-rpcs': { type: 'string', default: '64' },
      'max-child-processes': { type: 'string', default: '16' },
      'log-level': { type: 'string', default: process.env.LOG_LEVEL ?? 'info' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const log = createLogger('tscsi-driver', values['log-level']);
  if (armedFailpoints().length) log.warn({ failpoints: armedFailpoints() }, 'fail points armed (TSCSI_FAILPOINTS): the driver kills itself at these steps');
  const mode = values.mode!;
  if (!['all', 'controller', 'node'].includes(mode)) throw new Error(`--mode must be all, controller or node`);
  const fsType = values['default-fs-type']!;
  if (!isSupportedFs(fsType)) throw new Error(`--default-fs-type ${fsType} is not supported`);
  const maxPerNode = Number(values['max-volumes-per-node']);
  if (!Number.isInteger(maxPerNode) || maxPerNode < 0) throw new Error('--max-volumes-per-node must be a whole number');
  const maxRpcs = Number(values['max-concurrent-rpcs']);
  if (!Number.isInteger(maxRpcs) || maxRpcs < 0) throw new Error('--max-concurrent-rpcs must be a whole number');
  const maxChildren = Number(values['max-child-processes']);
  if (!Number.isInteger(maxChildren) || maxChildren < 1) throw new Error('--max-child-processes must be a whole number of at least 1');
  setMaxChildProcesses(maxChildren);

  const pathRoots = values['allowed-path-root'] ?? DEFAULT_PATH_ROOTS;
  for (const r of pathRoots) {
    if (!path.isAbsolute(r) || path.normalize(r) === '/') throw new Error(`--allowed-path-root ${r} must be an absolute directory other than /`);
  }

  const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };
  const config: DriverConfig = {
    driverName: values['driver-name']!,
    version: pkg.version,
    nodeId: values['node-id']!,
    topologyKey: values['topology-key']!,
    maxVolumesPerNode: maxPerNode,
    defaultFsType: fsType as FsType,
    defaultBackend: values['default-backend']!,
    nodeStateDir: values['state-dir']!,
    defaultVolumeBytes: parseSize(values['default-volume-size']!),
  };

  // First: a previous run killed mid-snapshot may have left applications' filesystems frozen.
  await initFreezeJournal(path.join(values['state-dir']!, 'freezes'), log);

  const dataDir = values['data-dir']!;
  if (values['data-pool-size']) {
    const r = await ensureXfsPool(dataDir, parseSize(values['data-pool-size']));
    log.info({ dataDir, ...r }, 'xfs pool for the loop backend');
  }
  const loop = new LoopBackend({
    dataDir,
    capacityBytes: values.capacity ? parseSize(values.capacity) : undefined,
    maxVolumeBytes: parseSize(values['max-volume-size']!),
    log,
  });
  await loop.init();
  log.info({ dataDir, reflink: loop.reflink }, 'loop backend ready');
  await sweepTemporaryFiles(driverTempLocations({ nodeStateDir: config.nodeStateDir, dataDir }), log);
  const backends = new Map<string, Backend>([[loop.kind, loop]]);
  if (values['lvm-volume-groups']) {
    const mode = values['lvm-mode']!;
    if (mode !== 'auto' && mode !== 'dm' && mode !== 'nodm') throw new Error('--lvm-mode must be auto, dm or nodm');
    const lvm = new LvmBackend({
      volumeGroups: values['lvm-volume-groups'].split(',').filter(Boolean),
      devices: values['lvm-devices']?.split(',').filter(Boolean),
      mode,
      thinOverprovisionRatio: Number(values['lvm-thin-overprovision']),
      stateDir: values['state-dir']!,
      maxVolumeBytes: parseSize(values['max-volume-size']!),
      log,
    });
    await lvm.init();
    backends.set(lvm.kind, lvm);
  }
  const rbd = await rbdBackendFromFlags(values, log);
  if (rbd) {
    await rbd.init();
    backends.set(rbd.kind, rbd);
    log.info({ mapper: rbd.mapper.kind, clusters: rbd.config.clusters.map((c) => c.clusterID) }, 'rbd backend ready');
  }
  if (!backends.has(config.defaultBackend)) throw new Error(`--default-backend ${config.defaultBackend} is not enabled`);

  const ctx = new DriverContext(config, backends, log);
  const nodeState = new NodeStateStore(config.nodeStateDir);
  await nodeState.init();

  const server = new CsiServer(
    {
      identity: new IdentityService(ctx, [dataDir, config.nodeStateDir]),
      controller: mode !== 'node' ? new ControllerService(ctx) : undefined,
      groupController: mode !== 'node' ? new GroupControllerService(ctx) : undefined,
      node: mode !== 'controller' ? new NodeService(ctx, nodeState, pathRoots) : undefined,
    },
    log,
    { maxConcurrentRpcs: maxRpcs },
  );
  await server.listen(values.endpoint!);
  log.info({ driver: config.driverName, version: config.version, nodeId: config.nodeId, mode, pathRoots }, 'driver started');

  stopOnSignals(log, async () => {
    log.info('shutting down: letting in-flight calls finish');
    const graceful = await server.shutdown();
    // Long work a caller left running (a copy, a wipe) gets its chance to finish; if it
    // does not, it is cut off here and its retry after the restart completes it.
    const idle = await ctx.background.idle(30_000);
    if (!idle) log.warn({ running: ctx.background.size }, 'background work still running at exit; it is retried after the restart');
    // After a forced shutdown a call may still be writing into the pool: leave it mounted.
    if (values['data-pool-size'] && graceful && idle) await releasePoolIfIdle(loop, dataDir, log);
  });
}

/**
 * On a graceful stop the data pool is unmounted and its loop device detached, so the
 * uninstall steps can remove the data directory; but not while a volume in it is still
 * attached (staged or published): unmounting would fail (EBUSY) or, lazily, hide the files
 * under running pods. Then it stays, and the log says which volumes hold it.
 */
async function releasePoolIfIdle(loop: LoopBackend, dataDir: string, log: ReturnType<typeof createLogger>): Promise<void> {
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

runMain('tscsi-driver', main);
