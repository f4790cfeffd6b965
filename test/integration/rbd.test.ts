// The RBD backend against a real Ceph cluster started by the test on 127.0.0.1 (one mon,
// one bluestore OSD, one mgr, cephx), the node side through the fuse mapper (rbd-fuse +
// a loop device): these VMs have neither the rbd nor the nbd kernel driver. The driver's
// services run in this process on a private socket and are called over gRPC.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { execa } from 'execa';
import { startCeph, stopCeph, adminRbd, cleanupDriverDir, type CephEnv } from '../lib/ceph/cluster.js';
import { CsiClient, codeName } from '../../sidecars/common/csi-client.js';
import { resolveSettings, type DriverOptions } from '../../driver/config.js';
import { createDriver, type Driver } from '../../driver/create.js';
import { CsiError, toCsiError } from '../../driver/errors.js';
import { deriveId, unlocated } from '../../driver/ids.js';
import { BackendError, type VolumeRecord } from '../../driver/backends/backend.js';
import { RbdBackend, parseConfig, volumeImage, snapshotImage, type RbdConfig } from '../../driver/backends/rbd/index.js';

const MiB = 1024 * 1024;
const NODE = 'rbd-node-1';
const OTHER_NODE = 'rbd-node-2';

let root: string;
let ceph: CephEnv | undefined;
let drv: InProcDriver | undefined;

function configFor(env: CephEnv, extra: Record<string, unknown> = {}, withDefaultUser = true): RbdConfig {
  return parseConfig({
    clusters: [{ clusterID: 'test', monitors: [env.mon], pools: [env.pool, `${env.pool}/ns1`], ...(withDefaultUser ? { user: env.user, keyFile: env.keyFile } : {}) }],
    mapper: 'fuse',
    maxCloneDepth: 2,
    nodes: [OTHER_NODE],
    ...extra,
  });
}

/** The driver's settings in these tests: rbd only, its state and the node's roots below root. */
function rbdOptions(stateDir: string): DriverOptions {
  return {
    nodeId: NODE,
    stateDir,
    maxVolumesPerNode: 16,
    defaultBackend: 'rbd',
    defaultVolumeSize: '64Mi',
    allowedPathRoot: [path.join(root, 'staging'), path.join(root, 'pods')],
  };
}

/** The driver built as main.ts builds it, in this process, over an rbd backend made from an in-memory config. */
class InProcDriver {
  client!: CsiClient;
  driver!: Driver;
  backend!: RbdBackend;
  readonly socket: string;
  readonly logFile: string;

  constructor(readonly dir: string) {
    this.socket = path.join(dir, 'csi.sock');
    this.logFile = path.join(dir, 'driver.log');
  }

  async start(config: RbdConfig): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    const log = pino({ level: 'debug', base: { component: 'tscsi-driver' } }, pino.destination({ dest: this.logFile, sync: true, append: true }));
    this.backend = new RbdBackend({ config, stateDir: path.join(this.dir, 'state', 'rbd'), nodeId: NODE, node: true, controller: true, log });
    await this.backend.init();
    const settings = resolveSettings({ ...rbdOptions(path.join(this.dir, 'state')), endpoint: `unix://${this.socket}` }, { backendNames: ['rbd'] });
    this.driver = await createDriver(settings, { log, backends: [this.backend] });
    await this.driver.listen();
    this.client = new CsiClient(this.socket);
  }

  async stop(): Promise<void> {
    this.client?.close();
    await this.driver?.server.shutdown(5_000);
  }
}

const mountCap = (fsType = 'ext4', mode = 'SINGLE_NODE_WRITER') => ({ mount: { fs_type: fsType, mount_flags: [] }, access_mode: { mode } });
const params = (extra: Record<string, string> = {}) => ({ backend: 'rbd', clusterID: 'test', pool: ceph!.pool, ...extra });
/** The ID the driver gives volume `name` in the test pool (cluster, pool and namespace in it). */
const volumeIdIn = (name: string, namespace = '') => deriveId('vol', 'rbd', name, ['test', ceph!.pool, namespace]);
const outcomeOf = (p: Promise<unknown>) => p.then(() => 'OK', (e) => codeName(e) ?? String(e));

async function imageMeta(spec: string): Promise<Record<string, string>> {
  return JSON.parse((await adminRbd(ceph!, ['image-meta', 'list', '--format', 'json', spec])) || '{}') as Record<string, string>;
}

async function rbdNames(poolSpec = ceph!.pool): Promise<string[]> {
  return JSON.parse((await adminRbd(ceph!, ['ls', '--format', 'json', poolSpec])) || '[]') as string[];
}

async function stage(volumeId: string, name: string, cap = mountCap()) {
  const staging = path.join(root, 'staging', name);
  const target = path.join(root, 'pods', name, 'mount');
  await fs.mkdir(staging, { recursive: true });
  await drv!.client.Node.NodeStageVolume({ volume_id: volumeId, staging_target_path: staging, volume_capability: cap });
  await drv!.client.Node.NodePublishVolume({ volume_id: volumeId, staging_target_path: staging, target_path: target, volume_capability: cap });
  return { staging, target };
}

async function unstage(volumeId: string, p: { staging: string; target: string }) {
  await drv!.client.Node.NodeUnpublishVolume({ volume_id: volumeId, target_path: p.target });
  await drv!.client.Node.NodeUnstageVolume({ volume_id: volumeId, staging_target_path: p.staging });
}

/** Deletes, waiting out the OSD watch timeout (10 s here) of a helper that was killed. */
async function deleteVolumeEventually(id: string, timeoutMs = 60_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const code = await outcomeOf(drv!.client.Controller.DeleteVolume({ volume_id: id }));
    if (code === 'OK') return;
    if (code !== 'FAILED_PRECONDITION' || Date.now() > end) throw new Error(`DeleteVolume ${id}: ${code}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Records every Ceph tool call the backend makes from now on (the tool and its arguments after the connection ones). */
function watchCephCalls(b: RbdBackend): string[] {
  const calls: string[] = [];
  const real = b.cli.tool.bind(b.cli);
  b.cli.tool = (tool, cluster, creds, args, ...rest) => {
    calls.push([tool, ...args.filter((a) => a !== '--format' && a !== 'json')].join(' '));
    return real(tool, cluster, creds, args, ...rest);
  };
  return calls;
}

/** Collects every process's command line and environment while fn runs. */
async function watchProcesses<T>(fn: () => Promise<T>): Promise<{ result: T; seen: string[]; samples: number }> {
  const seen = new Set<string>();
  let running = true;
  let samples = 0;
  const sampler = (async () => {
    while (running) {
      for (const p of await fs.readdir('/proc').catch(() => [] as string[])) {
        if (!/^\d+$/.test(p)) continue;
        const cmd = await fs.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
        if (!/rbd|rados|ceph/.test(cmd)) continue;
        const env = await fs.readFile(`/proc/${p}/environ`, 'utf8').catch(() => '');
        seen.add(`${cmd.replace(/\0/g, ' ')} || ${env.replace(/\0/g, ' ')}`);
      }
      samples++;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  try {
    const result = await fn();
    return { result, seen: [...seen], samples };
  } finally {
    running = false;
    await sampler;
  }
}

beforeAll(async () => {
  root = await fs.mkdtemp('/tmp/tscsi-rbd-');
  // The node service mounts only below its allowed roots, which must exist.
  for (const d of ['staging', 'pods']) await fs.mkdir(path.join(root, d));
  ceph = await startCeph(path.join(root, 'ceph'));
  await adminRbd(ceph, ['namespace', 'create', `${ceph.pool}/ns1`]);
  drv = new InProcDriver(path.join(root, 'driver'));
  await drv.start(configFor(ceph));
}, 600_000);

afterAll(async () => {
  await drv?.stop().catch(() => undefined);
  if (root) await cleanupDriverDir(root);
  if (root) await stopCeph(path.join(root, 'ceph'));
  if (root) await fs.rm(root, { recursive: true, force: true });
}, 180_000);

describe('rbd backend on a real Ceph cluster (fuse mapper)', () => {
  it('refuses parameters it does not know or allow', async () => {
    const c = drv!.client;
    const bad = [
      params({ pool: 'not-allowed' }),
      params({ pool: '--help' }),
      params({ radosNamespace: '../x' }),
      params({ imageFeatures: 'layering,journaling' }),
      params({ imageFeatures: 'object-map' }),
      params({ clusterID: 'nope' }),
      params({ poool: 'rbd' }),
    ];
    for (const p of bad) {
      expect(await outcomeOf(c.Controller.CreateVolume({ name: 'pvc-bad', parameters: p, volume_capabilities: [mountCap()] }))).toBe('INVALID_ARGUMENT');
    }
  });

  it('refuses filesystem volumes written from several nodes (MULTI_NODE_MULTI_WRITER), allows it for raw block', async () => {
    const c = drv!.client;
    const before = await rbdNames();
    const refused = await c.Controller.CreateVolume({ name: 'pvc-mnmw-fs', parameters: params(), volume_capabilities: [mountCap('ext4', 'MULTI_NODE_MULTI_WRITER')] }).catch((e) => e);
    expect(codeName(refused)).toBe('INVALID_ARGUMENT');
    expect(refused.details).toMatch(/MULTI_NODE_MULTI_WRITER.*corrupts.*volumeMode: Block/);
    expect(await rbdNames()).toEqual(before); // nothing made

    const blockCap = { block: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } };
    const blk = (await c.Controller.CreateVolume({ name: 'pvc-mnmw-block', parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [blockCap] })).volume;
    const fsVol = (await c.Controller.CreateVolume({ name: 'pvc-rwo-fs', parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [mountCap()] })).volume;
    // An existing filesystem volume is not confirmed for, nor published with, multi-node writers.
    const vvc = await c.Controller.ValidateVolumeCapabilities({ volume_id: fsVol.volume_id, volume_capabilities: [mountCap('ext4', 'MULTI_NODE_MULTI_WRITER')] });
    expect(vvc.confirmed).toBeFalsy();
    expect(vvc.message).toMatch(/MULTI_NODE_MULTI_WRITER/);
    expect((await c.Controller.ValidateVolumeCapabilities({ volume_id: fsVol.volume_id, volume_capabilities: [mountCap()] })).confirmed).toBeTruthy();
    expect(await outcomeOf(c.Controller.ControllerPublishVolume({ volume_id: fsVol.volume_id, node_id: NODE, volume_capability: mountCap('ext4', 'MULTI_NODE_MULTI_WRITER') }))).toBe('INVALID_ARGUMENT');
    expect((await c.Controller.ValidateVolumeCapabilities({ volume_id: blk.volume_id, volume_capabilities: [blockCap] })).confirmed).toBeTruthy();
    await c.Controller.DeleteVolume({ volume_id: blk.volume_id });
    await c.Controller.DeleteVolume({ volume_id: fsVol.volume_id });
  });

  it('lives through create, publish, stage, write, snapshot, clone, data check, expand and delete', async () => {
    const c = drv!.client;
    const cap = mountCap('xfs');
    const v = (await c.Controller.CreateVolume({ name: 'pvc-rbd-1', parameters: params(), capacity_range: { required_bytes: String(320 * MiB) }, volume_capabilities: [cap] })).volume;
    expect(v.volume_id).toBe(volumeIdIn('pvc-rbd-1'));
    expect(v.accessible_topology).toEqual([]);
    const img = `${ceph!.pool}/${volumeImage(v.volume_id)}`;
    const info = JSON.parse(await adminRbd(ceph!, ['info', '--format', 'json', img]));
    expect(info.size).toBe(320 * MiB);
    expect(info.features).toEqual(expect.arrayContaining(['layering', 'deep-flatten']));
    expect(JSON.parse((await imageMeta(img))['tscsi.record']).record.name).toBe('pvc-rbd-1');
    // Idempotent: the same name finds the same image.
    expect((await c.Controller.CreateVolume({ name: 'pvc-rbd-1', parameters: params(), capacity_range: { required_bytes: String(320 * MiB) }, volume_capabilities: [cap] })).volume.volume_id).toBe(v.volume_id);

    // ControllerPublish: recorded in image metadata; a second node for an RWO volume is refused.
    expect(await outcomeOf(c.Controller.ControllerPublishVolume({ volume_id: v.volume_id, node_id: 'unknown-node', volume_capability: cap }))).toBe('NOT_FOUND');
    await c.Controller.ControllerPublishVolume({ volume_id: v.volume_id, node_id: NODE, volume_capability: cap });
    expect(JSON.parse((await imageMeta(img))['tscsi.record']).record.published).toHaveProperty(NODE);
    expect(await outcomeOf(c.Controller.ControllerPublishVolume({ volume_id: v.volume_id, node_id: OTHER_NODE, volume_capability: cap }))).toBe('FAILED_PRECONDITION');
    // And the other node's plugin will not map it either.
    const other = new RbdBackend({ config: configFor(ceph!), stateDir: path.join(root, 'driver', 'other-node'), nodeId: OTHER_NODE, log: pino({ level: 'silent' }) });
    const refused = await other.attach((await drv!.backend.getVolume(v.volume_id))!).catch((e) => e);
    expect(refused).toBeInstanceOf(BackendError);
    expect(refused.reason).toBe('precondition');
    expect(refused.message).toMatch(/published to node rbd-node-1 .*may not map it/);

    const p = await stage(v.volume_id, 'v1', cap);
    const payload = Buffer.alloc(3 * MiB, 'rbd-data-');
    await fs.writeFile(path.join(p.target, 'data'), payload);
    const st = JSON.parse(await adminRbd(ceph!, ['status', '--format', 'json', img]));
    expect(st.watchers.length).toBe(1); // mapped by rbd-fuse

    // Snapshot while staged (frozen around the cut), then a volume from it.
    const snap = (await c.Controller.CreateSnapshot({ name: 'snap-rbd-1', source_volume_id: v.volume_id })).snapshot;
    expect(snap.snapshot_id).toMatch(/^snap-rbd-/);
    expect(snap.accessible_topology).toEqual([]); // usable from every node
    expect((await rbdNames()).includes(snapshotImage(snap.snapshot_id))).toBe(true);
    const listed = (await c.Controller.ListSnapshots({ source_volume_id: v.volume_id })).entries.map((e: any) => e.snapshot.snapshot_id);
    expect(listed).toEqual([snap.snapshot_id]);
    await fs.writeFile(path.join(p.target, 'after-snapshot'), 'not in the snapshot');

    const restored = (await c.Controller.CreateVolume({ name: 'pvc-rbd-restore', parameters: params(), volume_capabilities: [cap], volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } })).volume;
    expect(restored.capacity_bytes).toBe(String(320 * MiB));
    const pr = await stage(restored.volume_id, 'restored', cap);
    expect((await fs.readFile(path.join(pr.target, 'data'))).equals(payload)).toBe(true);
    await expect(fs.stat(path.join(pr.target, 'after-snapshot'))).rejects.toThrow();

    // A clone of a volume (volume content source), larger than its source.
    const cloned = (await c.Controller.CreateVolume({ name: 'pvc-rbd-clone', parameters: params(), capacity_range: { required_bytes: String(400 * MiB) }, volume_capabilities: [cap], volume_content_source: { volume: { volume_id: v.volume_id } } })).volume;
    expect(cloned.capacity_bytes).toBe(String(400 * MiB));
    const pc = await stage(cloned.volume_id, 'cloned', cap);
    expect((await fs.readFile(path.join(pc.target, 'after-snapshot'), 'utf8'))).toBe('not in the snapshot');
    const statfs = await fs.statfs(pc.staging);
    const srcfs = await fs.statfs(p.staging);
    expect(statfs.blocks * statfs.bsize).toBeGreaterThan(srcfs.blocks * srcfs.bsize + 60 * MiB); // xfs grown to the clone's size at stage

    // Online expansion: rbd resize, then the loop device and xfs.
    const ex = await c.Controller.ControllerExpandVolume({ volume_id: v.volume_id, capacity_range: { required_bytes: String(480 * MiB) } });
    expect(ex.capacity_bytes).toBe(String(480 * MiB));
    expect(JSON.parse(await adminRbd(ceph!, ['info', '--format', 'json', img])).size).toBe(480 * MiB);
    const nx = await c.Node.NodeExpandVolume({ volume_id: v.volume_id, volume_path: p.target });
    expect(nx.capacity_bytes).toBe(String(480 * MiB));
    const grown = await fs.statfs(p.staging);
    expect(grown.blocks * grown.bsize).toBeGreaterThan(srcfs.blocks * srcfs.bsize + 140 * MiB);
    expect((await fs.readFile(path.join(p.target, 'data'))).equals(payload)).toBe(true);

    // Still mapped: DeleteVolume is refused with FAILED_PRECONDITION (published, then watched).
    expect(await outcomeOf(c.Controller.DeleteVolume({ volume_id: v.volume_id }))).toBe('FAILED_PRECONDITION');
    await c.Controller.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: NODE });
    const mapped = await c.Controller.DeleteVolume({ volume_id: v.volume_id }).catch((e) => e);
    expect(codeName(mapped)).toBe('FAILED_PRECONDITION');
    expect(mapped.details).toMatch(/still mapped/);

    const vols = (await c.Controller.ListVolumes({})).entries.map((e: any) => e.volume.volume_id);
    expect(vols).toEqual(expect.arrayContaining([v.volume_id, restored.volume_id, cloned.volume_id]));
    const cap0 = await c.Controller.GetCapacity({ parameters: params() });
    expect(BigInt(cap0.available_capacity)).toBeGreaterThan(1n << 30n);

    await unstage(v.volume_id, p);
    await unstage(restored.volume_id, pr);
    await unstage(cloned.volume_id, pc);
    // The snapshot outlives its source.
    await c.Controller.DeleteVolume({ volume_id: v.volume_id });
    expect(await c.Controller.DeleteVolume({ volume_id: v.volume_id })).toEqual({});
    expect((await c.Controller.ListSnapshots({ snapshot_id: snap.snapshot_id })).entries.length).toBe(1);
    const again = (await c.Controller.CreateVolume({ name: 'pvc-rbd-restore-2', parameters: params(), volume_capabilities: [cap], volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } })).volume;
    const pa = await stage(again.volume_id, 'again', cap);
    expect((await fs.readFile(path.join(pa.target, 'data'))).equals(payload)).toBe(true);
    await unstage(again.volume_id, pa);

    await c.Controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id });
    for (const id of [restored.volume_id, cloned.volume_id, again.volume_id]) await c.Controller.DeleteVolume({ volume_id: id });
    expect((await rbdNames()).filter((n) => n.startsWith('csi-'))).toEqual([]);
    // Nothing left in the trash either: parents parked there leave with their last clone.
    const trash = JSON.parse((await adminRbd(ceph!, ['trash', 'ls', '--format', 'json', ceph!.pool])) || '[]') as Array<{ name: string }>;
    expect(trash.filter((t) => t.name.startsWith('csi-'))).toEqual([]);
  });

  it('bounds clone depth by flattening, and works in a RADOS namespace', async () => {
    const c = drv!.client;
    const cap = mountCap('ext4');
    const p = params({ radosNamespace: 'ns1' });
    let src = (await c.Controller.CreateVolume({ name: 'pvc-depth-0', parameters: p, capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [cap] })).volume;
    const made = [src.volume_id];
    const snaps: string[] = [];
    for (let i = 1; i <= 3; i++) {
      const s = (await c.Controller.CreateSnapshot({ name: `snap-depth-${i}`, source_volume_id: src.volume_id })).snapshot;
      snaps.push(s.snapshot_id);
      src = (await c.Controller.CreateVolume({ name: `pvc-depth-${i}`, parameters: p, volume_capabilities: [cap], volume_content_source: { snapshot: { snapshot_id: s.snapshot_id } } })).volume;
      made.push(src.volume_id);
    }
    expect(await rbdNames(`${ceph!.pool}/ns1`)).toEqual(expect.arrayContaining(made.map(volumeImage)));
    // maxCloneDepth 2: no image has a chain of parents longer than 2.
    for (const name of await rbdNames(`${ceph!.pool}/ns1`)) {
      let depth = 0;
      let spec = `${ceph!.pool}/ns1/${name}`;
      for (;;) {
        const info = JSON.parse(await adminRbd(ceph!, ['info', '--format', 'json', spec]));
        if (!info.parent) break;
        depth++;
        if (info.parent.trash) break;
        spec = `${info.parent.pool}/${info.parent.pool_namespace ? `${info.parent.pool_namespace}/` : ''}${info.parent.image}`;
      }
      expect(depth, name).toBeLessThanOrEqual(2);
    }
    for (const s of snaps) await c.Controller.DeleteSnapshot({ snapshot_id: s });
    for (const id of made.reverse()) await c.Controller.DeleteVolume({ volume_id: id });
    expect(await rbdNames(`${ceph!.pool}/ns1`)).toEqual([]);
  });

  it('takes cephx credentials from CSI secrets through 0600 key files only: never on a command line, in an environment or a log', async () => {
    const env = ceph!;
    const log = pino({ level: 'debug' }, pino.destination({ dest: drv!.logFile, sync: true, append: true }));
    const stateDir = path.join(root, 'driver', 'secrets-state');
    const b = new RbdBackend({ config: configFor(env, {}, false), stateDir, nodeId: NODE, log });
    await b.init();
    const secrets = { userID: env.user, userKey: env.key };
    const rec: VolumeRecord = {
      id: 'vol-rbd-0123456789abcdef0123456789abcdef',
      name: 'pvc-secrets',
      backend: 'rbd',
      capacityBytes: 32n * 1024n * 1024n,
      accessType: 'block',
      fsType: '',
      parameters: { clusterID: 'test', pool: env.pool },
      mutableParameters: {},
      topology: {},
      published: {},
      createdAt: new Date().toISOString(),
    };
    // Without secrets and without a default user there are no credentials: a clear refusal.
    const none = await b.createVolume(rec).catch((e) => e);
    expect(none).toBeInstanceOf(BackendError);
    expect(none.reason).toBe('invalid');
    expect(none.message).toMatch(/userID\/userKey/);

    const { seen, samples } = await watchProcesses(async () => {
      await b.createVolume(rec, secrets);
      await b.expandVolume(rec, 48n * 1024n * 1024n, secrets);
      const dev = await b.attach(rec, secrets);
      expect(dev).toMatch(/^\/dev\/loop\d+$/);
      await execa('dd', ['if=/dev/zero', `of=${dev}`, 'bs=1M', 'count=1', 'oflag=direct', 'status=none']);
      await b.detach(rec);
      await b.deleteVolume(rec.id, secrets);
    });
    expect(samples).toBeGreaterThan(5);
    expect(seen.some((s) => s.includes('--keyfile'))).toBe(true); // the sampler did see our commands
    for (const s of seen) expect(s).not.toContain(env.key);
    expect(await fs.readdir(path.join(stateDir, 'keys'))).toEqual([]); // every key file removed
    expect(await fs.readFile(drv!.logFile, 'utf8')).not.toContain(env.key);
    expect(await rbdNames()).not.toContain(volumeImage(rec.id));
  });

  it('turns the missing krbd kernel driver into a clear FAILED_PRECONDITION', async () => {
    const log = pino({ level: 'silent' });
    const b = new RbdBackend({ config: configFor(ceph!, { mapper: 'krbd' }), stateDir: path.join(root, 'driver', 'krbd-state'), log });
    await b.init();
    const v = (await drv!.client.Controller.CreateVolume({ name: 'pvc-krbd', parameters: params(), capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [mountCap()] })).volume;
    const krbd = await createDriver(resolveSettings({ ...rbdOptions(path.join(root, 'driver', 'krbd-node')), mode: 'node' }, { backendNames: ['rbd'] }), { log, backends: [b] });
    const node = krbd.services.node!;
    const staging = path.join(root, 'staging', 'krbd');
    await fs.mkdir(staging, { recursive: true });
    // Called without the gRPC server, whose wrapper turns a BackendError into its status.
    const raw: unknown = await node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: mountCap() } as never).then(() => 'OK', (e: unknown) => e);
    const err = toCsiError(raw);
    expect(err, String(raw)).toBeInstanceOf(CsiError);
    expect(codeName(err)).toBe('FAILED_PRECONDITION');
    expect(err?.message).toMatch(/krbd mapper could not map .*no rbd driver.*--rbd-mapper fuse/);
    await drv!.client.Controller.DeleteVolume({ volume_id: v.volume_id });
  });

  it('re-maps staged volumes after a node plugin restart whose rbd-fuse helpers died', async () => {
    let c = drv!.client;
    const cap = mountCap('ext4');
    const v = (await c.Controller.CreateVolume({ name: 'pvc-restart', parameters: params(), capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume;
    const p = await stage(v.volume_id, 'restart', cap);
    const blk = (await c.Controller.CreateVolume({ name: 'pvc-restart-block', parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }] })).volume;
    const bcap = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
    const bstaging = path.join(root, 'staging', 'restart-block');
    const btarget = path.join(root, 'pods', 'restart-block', 'dev');
    await fs.mkdir(bstaging, { recursive: true });
    await c.Node.NodeStageVolume({ volume_id: blk.volume_id, staging_target_path: bstaging, volume_capability: bcap });
    await c.Node.NodePublishVolume({ volume_id: blk.volume_id, staging_target_path: bstaging, target_path: btarget, volume_capability: bcap });
    await fs.writeFile(path.join(p.target, 'before'), 'written before the crash');
    await execa('sync');
    const mappings = (await execa('find', [path.join(root, 'driver', 'state', 'rbd', 'fuse'), '-name', 'mapping.json'])).stdout.split('\n').filter(Boolean);
    expect(mappings.length).toBe(2);
    const before = await Promise.all(mappings.map(async (f) => JSON.parse(await fs.readFile(f, 'utf8')) as { pid: number; device: string }));

    // The plugin and its helpers die (as a container restart kills them all).
    await drv!.stop();
    for (const m of before) process.kill(m.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    await expect(fs.readFile(path.join(p.target, 'before'), 'utf8').then(() => execa('dd', [`if=${path.join(p.staging, 'before')}`, 'of=/dev/null', 'iflag=direct', 'status=none']))).rejects.toThrow();

    drv = new InProcDriver(path.join(root, 'driver'));
    await drv.start(configFor(ceph!));
    c = drv.client;
    const after = await Promise.all(mappings.map(async (f) => JSON.parse(await fs.readFile(f, 'utf8')) as { pid: number; device: string }));
    for (let i = 0; i < after.length; i++) expect(after[i].pid).not.toBe(before[i].pid);
    expect(await fs.readFile(path.join(p.target, 'before'), 'utf8')).toBe('written before the crash');
    await fs.writeFile(path.join(p.target, 'after'), 'written after the re-map');
    await execa('sync');
    expect(await fs.readFile(path.join(p.staging, 'after'), 'utf8')).toBe('written after the re-map');
    await execa('dd', ['if=/dev/zero', `of=${btarget}`, 'bs=1M', 'count=1', 'oflag=direct', 'status=none']);
    // Containers started before the restart hold the dead device, which no re-map reaches: the volume's health says so.
    for (const [id, at] of [[v.volume_id, p.target], [blk.volume_id, btarget]]) {
      const health = (await c.Node.NodeGetVolumeHealth({ volume_id: id, volume_publish_path: at })).volume_health;
      expect(health?.health_statuses).toEqual([{ status: 'DEGRADED', reason: 'MappedAgain', message: expect.stringMatching(/mapped again at .*restart the pods using this volume/) }]);
    }

    await unstage(v.volume_id, p);
    await c.Node.NodeUnpublishVolume({ volume_id: blk.volume_id, target_path: btarget });
    await c.Node.NodeUnstageVolume({ volume_id: blk.volume_id, staging_target_path: bstaging });
    // The killed helpers' watches last until the OSD times them out (10 s on this cluster).
    await deleteVolumeEventually(v.volume_id);
    await deleteVolumeEventually(blk.volume_id);
    expect((await rbdNames()).filter((n) => n.startsWith('csi-'))).toEqual([]);
  }, 240_000);

  it('finishes creates and deletes that a crash interrupted, on retry and at start-up', async () => {
    const pool = ceph!.pool;
    const cap = mountCap();
    const create = (name: string) => drv!.client.Controller.CreateVolume({ name, parameters: params(), capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [cap] });
    // A create that died after `rbd create`, before the record: not a volume, and the retry makes it afresh.
    const id = deriveId('vol', 'rbd', 'pvc-crash-create');
    await adminRbd(ceph!, ['create', '--size', '8M', `${pool}/${volumeImage(id)}`]);
    expect((await drv!.client.Controller.ListVolumes({})).entries.map((e: any) => e.volume.volume_id)).not.toContain(id);
    expect(await outcomeOf(drv!.client.Controller.ControllerGetVolume({ volume_id: id }))).toBe('NOT_FOUND');
    expect((await create('pvc-crash-create')).volume.volume_id).toBe(volumeIdIn('pvc-crash-create'));
    expect(JSON.parse(await adminRbd(ceph!, ['info', '--format', 'json', `${pool}/${volumeImage(id)}`])).size).toBe(32 * MiB);
    // A delete that died after marking the image: gone for the CO, finished by the retry.
    await adminRbd(ceph!, ['image-meta', 'set', `${pool}/${volumeImage(id)}`, 'tscsi.deleting', 'test']);
    expect(await outcomeOf(drv!.client.Controller.ControllerGetVolume({ volume_id: id }))).toBe('NOT_FOUND');
    await drv!.client.Controller.DeleteVolume({ volume_id: id });
    expect(await rbdNames()).not.toContain(volumeImage(id));
    // Both kinds of leftovers are also cleared when the controller starts.
    const half = deriveId('vol', 'rbd', 'pvc-crash-half');
    await adminRbd(ceph!, ['create', '--size', '8M', `${pool}/${volumeImage(half)}`]);
    const marked = (await create('pvc-crash-marked')).volume.volume_id;
    await adminRbd(ceph!, ['image-meta', 'set', `${pool}/${volumeImage(marked)}`, 'tscsi.deleting', 'test']);
    await drv!.stop();
    drv = new InProcDriver(path.join(root, 'driver'));
    await drv.start(configFor(ceph!));
    const names = await rbdNames();
    expect(names).not.toContain(volumeImage(half));
    expect(names).not.toContain(volumeImage(marked));
  });

  it('a clone a crash stopped before its own record is not taken for its source (rbd clone copies image-meta)', async () => {
    const c = drv!.client;
    const pool = ceph!.pool;
    const src = (await c.Controller.CreateVolume({ name: 'pvc-inherit-src', parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [mountCap()] })).volume;
    // What CreateVolume from a volume had done when the crash came: cut, clone, no record of its own yet.
    const id = deriveId('vol', 'rbd', 'pvc-inherit-clone');
    const cut = `${pool}/${volumeImage(src.volume_id)}@csi-tmp-${id.slice(id.lastIndexOf('-') + 1)}`;
    await adminRbd(ceph!, ['snap', 'create', cut]);
    await adminRbd(ceph!, ['clone', '--rbd-default-clone-format', '2', cut, `${pool}/${volumeImage(id)}`]);
    expect(JSON.parse((await imageMeta(`${pool}/${volumeImage(id)}`))['tscsi.record']).record.id, 'the clone inherited its source\'s record').toBe(src.volume_id);

    const listed = (await c.Controller.ListVolumes({})).entries.map((e: any) => e.volume.volume_id);
    expect(listed.filter((v: string) => v === src.volume_id), 'the source listed once').toHaveLength(1);
    expect(await outcomeOf(c.Controller.ControllerGetVolume({ volume_id: id }))).toBe('NOT_FOUND');
    const made = (await c.Controller.CreateVolume({ name: 'pvc-inherit-clone', parameters: params(), volume_capabilities: [mountCap()], volume_content_source: { volume: { volume_id: src.volume_id } } })).volume;
    expect(made.volume_id).toBe(volumeIdIn('pvc-inherit-clone'));
    expect(JSON.parse((await imageMeta(`${pool}/${volumeImage(id)}`))['tscsi.record']).record.name).toBe('pvc-inherit-clone');

    await c.Controller.DeleteVolume({ volume_id: id });
    await c.Controller.DeleteVolume({ volume_id: src.volume_id });
    expect((await rbdNames()).filter((n) => n.startsWith('csi-'))).toEqual([]);
  });

  it('QoS limits are mutable parameters librbd reads from the image: set at create, changed by ControllerModifyVolume, not inherited by a clone', async () => {
    const c = drv!.client;
    const pool = ceph!.pool;
    const qos = async (id: string, option: string) => (await adminRbd(ceph!, ['config', 'image', 'get', `${pool}/${volumeImage(id)}`, option])).trim();
    const vol = (await c.Controller.CreateVolume({ name: 'pvc-qos', parameters: params(), mutable_parameters: { qosIopsLimit: '100' }, capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [mountCap()] })).volume;
    expect(await qos(vol.volume_id, 'rbd_qos_iops_limit')).toBe('100');

    await c.Controller.ControllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { qosIopsLimit: '0', qosWriteBpsLimit: '1048576' } });
    expect(await qos(vol.volume_id, 'rbd_qos_iops_limit')).toBe('0');
    expect(await qos(vol.volume_id, 'rbd_qos_write_bps_limit')).toBe('1048576');
    const rec = JSON.parse((await imageMeta(`${pool}/${volumeImage(vol.volume_id)}`))['tscsi.record']).record;
    expect(rec.mutableParameters).toEqual({ qosIopsLimit: '0', qosWriteBpsLimit: '1048576' });
    // the same call again changes nothing and succeeds
    await c.Controller.ControllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { qosWriteBpsLimit: '1048576' } });

    for (const bad of [{ qosIopsLimit: '-1' }, { qosIopsLimit: '10k' }, { directIO: 'false' }]) {
      expect(await outcomeOf(c.Controller.ControllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: bad }))).toBe('INVALID_ARGUMENT');
    }
    expect(await qos(vol.volume_id, 'rbd_qos_write_bps_limit')).toBe('1048576');

    // rbd clone copies image-meta, limits included: a clone that asks for none gets none
    const clone = (await c.Controller.CreateVolume({ name: 'pvc-qos-clone', parameters: params(), volume_capabilities: [mountCap()], volume_content_source: { volume: { volume_id: vol.volume_id } } })).volume;
    const cloneMeta = await imageMeta(`${pool}/${volumeImage(clone.volume_id)}`);
    expect(Object.keys(cloneMeta).filter((k) => k.startsWith('conf_'))).toEqual([]);
    await c.Controller.DeleteVolume({ volume_id: clone.volume_id });
    await c.Controller.DeleteVolume({ volume_id: vol.volume_id });
  });

  it('volume and snapshot IDs say cluster, pool and namespace; the same name asked for in another pool is ALREADY_EXISTS', async () => {
    const c = drv!.client;
    const pool = ceph!.pool;
    const cap = mountCap();
    const create = (name: string, p: Record<string, string>) =>
      c.Controller.CreateVolume({ name, parameters: p, capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [cap] }).then((r) => r.volume);
    const v = await create('pvc-where', params({ radosNamespace: 'ns1' }));
    expect(v.volume_id).toBe(volumeIdIn('pvc-where', 'ns1'));
    const s = (await c.Controller.CreateSnapshot({ name: 'snap-where', source_volume_id: v.volume_id })).snapshot;
    expect(s.snapshot_id, 'a snapshot lives where its source does').toBe(deriveId('snap', 'rbd', 'snap-where', ['test', pool, 'ns1']));
    expect(await rbdNames(`${pool}/ns1`)).toEqual([volumeImage(v.volume_id), snapshotImage(s.snapshot_id)].sort());

    // The same names elsewhere (the pool's default namespace): taken, and nothing is made there.
    expect(await outcomeOf(create('pvc-where', params()))).toBe('ALREADY_EXISTS');
    const w = await create('pvc-where-2', params());
    expect(await outcomeOf(c.Controller.CreateSnapshot({ name: 'snap-where', source_volume_id: w.volume_id }))).toBe('ALREADY_EXISTS');
    expect((await rbdNames()).filter((n) => n === volumeImage(v.volume_id) || n === snapshotImage(s.snapshot_id))).toEqual([]);
    // The retry in the right place is the same volume.
    expect((await create('pvc-where', params({ radosNamespace: 'ns1' }))).volume_id).toBe(v.volume_id);

    for (const id of [s.snapshot_id, v.volume_id, w.volume_id]) expect(unlocated(id)).not.toBe(id);
    await c.Controller.DeleteSnapshot({ snapshot_id: s.snapshot_id });
    for (const x of [v, w]) await c.Controller.DeleteVolume({ volume_id: x.volume_id });
    const mine = [volumeImage(v.volume_id), volumeImage(w.volume_id), snapshotImage(s.snapshot_id)];
    expect([...(await rbdNames()), ...(await rbdNames(`${pool}/ns1`))].filter((n) => mine.includes(n))).toEqual([]);
  });

  it('a located ID reaches its pool alone; an ID without a location (older versions, the sidecars) is searched for and still works', async () => {
    const c = drv!.client;
    const pool = ceph!.pool;
    const v = (await c.Controller.CreateVolume({ name: 'pvc-probe', parameters: params({ radosNamespace: 'ns1' }), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [mountCap()] })).volume;
    // A controller that has seen nothing yet (a restart, another replica): what does one lookup run?
    const fresh = async () => {
      const b = new RbdBackend({ config: configFor(ceph!), stateDir: path.join(root, 'probe-state'), log: pino({ level: 'silent' }) });
      await b.init();
      const calls = watchCephCalls(b);
      return { b, calls };
    };
    const located = await fresh();
    expect((await located.b.getVolume(v.volume_id))?.name).toBe('pvc-probe');
    expect(located.calls).toEqual([`rbd image-meta list ${pool}/ns1/${volumeImage(v.volume_id)}`]);
    // Its health is checked where the ID says, with one call (beside the cluster's reachability).
    const health = await fresh();
    const probed = (await health.b.getVolume(v.volume_id))!;
    health.calls.length = 0;
    expect(await health.b.volumeHealth(probed)).toEqual([]);
    expect(health.calls.filter((x) => x.startsWith('rbd '))).toEqual([`rbd info ${pool}/ns1/${volumeImage(v.volume_id)}`]);
    const searched = await fresh();
    expect((await searched.b.getVolume(unlocated(v.volume_id)))?.id, 'found by searching, the record says its own ID').toBe(v.volume_id);
    expect(searched.calls[0], 'the search starts in the first pool').toBe(`rbd info ${pool}/${volumeImage(v.volume_id)}`);

    // A volume whose record an older version wrote: its ID has no location, and every call still finds it.
    const oldId = deriveId('vol', 'rbd', 'pvc-older');
    const rec: VolumeRecord = {
      id: oldId, name: 'pvc-older', backend: 'rbd', capacityBytes: BigInt(16 * MiB), accessType: 'mount', fsType: 'ext4',
      parameters: params(), mutableParameters: {}, topology: {}, published: {}, createdAt: new Date().toISOString(),
    };
    await drv!.backend.createVolume(rec);
    expect((await c.Controller.ControllerGetVolume({ volume_id: oldId })).volume.volume_id).toBe(oldId);
    const again = await c.Controller.CreateVolume({ name: 'pvc-older', parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [mountCap()] });
    expect(again.volume.volume_id, 'a retry answers the ID the volume was made with').toBe(oldId);
    const at = await stage(oldId, 'pvc-older');
    await fs.writeFile(path.join(at.target, 'x'), 'older');
    await unstage(oldId, at);
    await c.Controller.DeleteVolume({ volume_id: oldId });
    // The sidecars' derivation has no location either: DeleteVolume with it removes a located volume.
    await c.Controller.DeleteVolume({ volume_id: unlocated(v.volume_id) });
    expect(await outcomeOf(c.Controller.ControllerGetVolume({ volume_id: v.volume_id }))).toBe('NOT_FOUND');
    const mine = [volumeImage(v.volume_id), volumeImage(oldId)];
    expect([...(await rbdNames()), ...(await rbdNames(`${pool}/ns1`))].filter((n) => mine.includes(n))).toEqual([]);
  });

  it('an RPC reads the record of its ID once: later lookups under its lock, and the next RPC after it, reuse it until a write', async () => {
    const c = drv!.client;
    const pool = ceph!.pool;
    const calls = watchCephCalls(drv!.backend);
    // Each RPC's rbd calls (`ceph df` is GetCapacity's, cached for a while), flags with values and the record's JSON left out.
    const callsOf = async (rpc: Promise<unknown>) => {
      calls.length = 0;
      await rpc;
      return calls.filter((x) => x.startsWith('rbd ')).map((x) => x.replace(/ --(size|image-feature|rbd-default-clone-format) \S+| --no-progress/g, '').replace(/^(rbd image-meta set \S+ \S+) .*/, '$1'));
    };
    const name = 'pvc-calls';
    const vid = volumeIdIn(name);
    const vol = `${pool}/${volumeImage(vid)}`;
    const inNs = (image: string) => `${pool}/ns1/${image}`;
    expect(await callsOf(c.Controller.CreateVolume({ name, parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [mountCap()] }))).toEqual([
      `rbd image-meta list ${vol}`, // the ID's pool: not there
      `rbd info ${inNs(volumeImage(vid))}`, // the name in the other pool (ALREADY_EXISTS there)
      `rbd create ${vol}`,
      `rbd image-meta set ${vol} tscsi.record`,
    ]);
    const sid = deriveId('snap', 'rbd', 'snap-calls', ['test', pool, '']);
    const snapImage = snapshotImage(sid);
    const snap = `${pool}/${snapImage}`;
    expect(await callsOf(c.Controller.CreateSnapshot({ name: 'snap-calls', source_volume_id: vid }))).toEqual([
      `rbd image-meta list ${snap}`,
      `rbd info ${inNs(snapImage)}`,
      `rbd image-meta list ${vol}`, // the source, read once for the RPC
      `rbd snap create ${vol}@${snapImage}`,
      `rbd clone ${vol}@${snapImage} ${snap}`,
      `rbd snap rm ${vol}@${snapImage}`,
      `rbd snap create ${snap}@${snapImage}`,
      `rbd image-meta set ${snap} tscsi.record`,
    ]);
    const publish = await callsOf(c.Controller.ControllerPublishVolume({ volume_id: vid, node_id: OTHER_NODE, volume_capability: mountCap() }));
    // Found before the lock and listed for the attach limit (readers without the lock ask Ceph); under the
    // lock, what CreateSnapshot read of its source stands (nothing wrote it since); saved.
    expect(publish.filter((x) => x.endsWith(` ${vol}`) || x.includes(` ${vol} `))).toEqual([`rbd image-meta list ${vol}`, `rbd image-meta list ${vol}`, `rbd image-meta set ${vol} tscsi.record`]);
    expect(await callsOf(c.Controller.ControllerUnpublishVolume({ volume_id: vid, node_id: OTHER_NODE }))).toEqual([`rbd image-meta list ${vol}`, `rbd image-meta set ${vol} tscsi.record`]);
    const removed = (spec: string) => [`rbd status ${spec}`, `rbd image-meta set ${spec} tscsi.deleting`, `rbd snap ls ${spec}`];
    expect(await callsOf(c.Controller.DeleteSnapshot({ snapshot_id: sid }))).toEqual([
      `rbd image-meta list ${snap}`,
      ...removed(snap),
      `rbd snap rm ${snap}@${snapImage}`,
      `rbd rm ${snap}`,
      `rbd trash ls ${pool}`,
    ]);
    expect(await callsOf(c.Controller.DeleteVolume({ volume_id: vid }))).toEqual([`rbd image-meta list ${vol}`, ...removed(vol), `rbd rm ${vol}`, `rbd trash ls ${pool}`]);
    // The lookups of an RPC after the delete find nothing: the cache forgot the image with its removal.
    expect(await outcomeOf(c.Controller.ControllerGetVolume({ volume_id: vid }))).toBe('NOT_FOUND');
    expect(await callsOf(c.Controller.DeleteVolume({ volume_id: vid }))).toEqual([`rbd image-meta list ${vol}`]);
  });

  it('ListVolumes and ListSnapshots leave out (and log) an image whose record is corrupt, and list the others', async () => {
    const c = drv!.client;
    const mk = (name: string) => c.Controller.CreateVolume({ name, parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [mountCap()] }).then((r) => r.volume);
    const good = await mk('pvc-record-good');
    const bad = await mk('pvc-record-bad');
    const goodSnap = (await c.Controller.CreateSnapshot({ name: 'snap-record-good', source_volume_id: good.volume_id })).snapshot;
    const badSnap = (await c.Controller.CreateSnapshot({ name: 'snap-record-bad', source_volume_id: good.volume_id })).snapshot;
    const corrupt = [`${ceph!.pool}/${volumeImage(bad.volume_id)}`, `${ceph!.pool}/${snapshotImage(badSnap.snapshot_id)}`];
    const saved = await Promise.all(corrupt.map(async (spec) => (await imageMeta(spec))['tscsi.record']));
    // A record cut short (a torn write by another tool, a hand edit): not JSON any more.
    for (const [i, spec] of corrupt.entries()) await adminRbd(ceph!, ['image-meta', 'set', spec, 'tscsi.record', saved[i].slice(0, 20)]);
    try {
      const vols = (await c.Controller.ListVolumes({})).entries.map((e: any) => e.volume.volume_id);
      expect(vols).toContain(good.volume_id);
      expect(vols).not.toContain(bad.volume_id);
      const snaps = (await c.Controller.ListSnapshots({})).entries.map((e: any) => e.snapshot.snapshot_id);
      expect(snaps).toContain(goodSnap.snapshot_id);
      expect(snaps).not.toContain(badSnap.snapshot_id);
      const log = await fs.readFile(drv!.logFile, 'utf8');
      for (const spec of corrupt) expect(log).toMatch(new RegExp(`"image":"${spec}".*skipped an unreadable record`));
    } finally {
      for (const [i, spec] of corrupt.entries()) await adminRbd(ceph!, ['image-meta', 'set', spec, 'tscsi.record', saved[i]]);
    }
    for (const s of [goodSnap, badSnap]) await c.Controller.DeleteSnapshot({ snapshot_id: s.snapshot_id });
    for (const v of [good, bad]) await c.Controller.DeleteVolume({ volume_id: v.volume_id });
    expect((await rbdNames()).filter((n) => n.startsWith('csi-'))).toEqual([]);
  });

  it('registers its node in RADOS, which is what knowsNode answers from', async () => {
    await drv!.backend.nodeRegistered;
    expect(await drv!.backend.knowsNode(NODE)).toBe(true);
    expect(await drv!.backend.knowsNode(OTHER_NODE)).toBe(true); // from the config's list
    expect(await drv!.backend.knowsNode('never-registered')).toBe(false);
  });

  it('a default key file that is not there yet (an optional Secret kubelet fills later): start-up does not wait on Ceph, calls answer FAILED_PRECONDITION naming the file, and the node registers itself once the key arrives', { timeout: 5 * 60_000 }, async () => {
    // Without the file the Ceph tools drop cephx and hunt for a monitor until our two-minute
    // timeout: start-up hung on the registration, the liveness probe killed the plugin, and a
    // registration that failed was never tried again (ControllerPublish to the node: NOT_FOUND).
    const keyFile = path.join(root, 'late-key', 'userKey');
    const lateNode = 'rbd-node-late-key';
    const cfg = parseConfig({ clusters: [{ clusterID: 'test', monitors: [ceph!.mon], pools: [ceph!.pool], user: ceph!.user, keyFile }], mapper: 'fuse' });
    const b = new RbdBackend({ config: cfg, stateDir: path.join(root, 'late-key-state'), nodeId: lateNode, node: true, controller: false, log: pino({ level: 'silent' }) });
    const codeAndMessage = (p: Promise<unknown>) =>
      p.then(
        () => 'OK',
        (e: unknown) => {
          const c = toCsiError(e);
          return c ? `${codeName(c)}: ${c.message}` : String(e);
        },
      );
    await b.init();
    expect(await codeAndMessage(b.capacity({ clusterID: 'test', pool: ceph!.pool }))).toMatch(new RegExp(`^FAILED_PRECONDITION: the cephx key file ${keyFile} of user ${ceph!.user} is not usable \\(ENOENT\\)`));
    expect(await drv!.backend.knowsNode(lateNode)).toBe(false);
    await fs.mkdir(path.dirname(keyFile), { recursive: true });
    await fs.writeFile(keyFile, ''); // kubelet's atomic writer never shows an empty file, but an admin's mistake can
    expect(await codeAndMessage(b.capacity({ clusterID: 'test', pool: ceph!.pool }))).toMatch(/^FAILED_PRECONDITION: .* is not usable \(empty\)/);
    await fs.copyFile(ceph!.keyFile, keyFile);
    await b.nodeRegistered;
    expect(await drv!.backend.knowsNode(lateNode)).toBe(true);
    expect(BigInt((await b.capacity({ clusterID: 'test', pool: ceph!.pool })).availableBytes)).toBeGreaterThan(0n);
  });

  it('GetCapacity of a pool the mgr has not reported yet is UNAVAILABLE (ask again), of a pool the cluster lacks NOT_FOUND', async () => {
    // A paused mgr reports nothing, so a pool made meanwhile is in the OSD map but not in
    // `ceph df`: the state a cluster is in for a moment after any pool is made.
    const mgrPid = Number((await fs.readFile(path.join(ceph!.dir, 'run', 'mgr.x.pid'), 'utf8')).split(' ')[0]);
    const cfg = parseConfig({ clusters: [{ clusterID: 'test', monitors: [ceph!.mon], pools: [ceph!.pool, 'late', 'never'], user: ceph!.user, keyFile: ceph!.keyFile }], mapper: 'fuse' });
    const b = new RbdBackend({ config: cfg, stateDir: path.join(root, 'capacity-state'), log: pino({ level: 'silent' }) });
    await b.init();
    const codeOf = (p: Promise<unknown>) => p.then(() => 'OK', (e: unknown) => (toCsiError(e) ? codeName(toCsiError(e)) : String(e)));
    const admin = (args: string[]) => execa('ceph', ['-c', ceph!.conf, ...args], { env: { CEPH_ARGS: '' } });
    process.kill(mgrPid, 'SIGSTOP');
    try {
      await admin(['osd', 'pool', 'create', 'late', '8', '8', 'replicated']);
      expect(await codeOf(b.capacity({ clusterID: 'test', pool: 'late' }))).toBe('UNAVAILABLE');
      expect(await codeOf(b.capacity({ clusterID: 'test', pool: 'never' }))).toBe('NOT_FOUND');
    } finally {
      process.kill(mgrPid, 'SIGCONT');
      await admin(['osd', 'pool', 'rm', 'late', 'late', '--yes-i-really-really-mean-it']).catch(() => undefined);
    }
    expect(BigInt((await b.capacity({ clusterID: 'test', pool: ceph!.pool })).availableBytes)).toBeGreaterThan(0n);
  });
});
