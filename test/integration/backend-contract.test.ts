// The contract every backend keeps (driver/backends/backend.ts), checked the same way on each
// one against real storage: the loop backend on real loop devices, LVM without
// device-mapper on a throwaway volume group (test/lib/lvm-vg.ts), RBD on a real Ceph cluster
// (test/lib/ceph) through the fuse mapper. The CSI services rely on exactly these
// promises; a backend that breaks one fails here, whatever its own tests say.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { pino } from 'pino';
import { BackendError, type Backend, type SnapshotRecord, type VolumeRecord } from '../../driver/backends/backend.js';
import { LoopBackend } from '../../driver/backends/loop/index.js';
import { LvmBackend } from '../../driver/backends/lvm/index.js';
import { RbdBackend } from '../../driver/backends/rbd/index.js';
import { parseConfig } from '../../driver/backends/rbd/config.js';
import { deriveId } from '../../driver/ids.js';
import { TestVg } from '../lib/lvm-vg.js';
import { loopDevicesUnder } from '../lib/driver-harness.js';
import { startCeph, stopCeph, cleanupDriverDir, type CephEnv } from '../lib/ceph/cluster.js';

const MiB = 1n << 20n;
const log = pino({ level: 'silent' });

/** One backend under test: how to make it, its CreateVolume parameters, and how to take it all away. */
interface Subject {
  backend: Backend;
  params: Record<string, string>;
  cleanup(): Promise<void>;
}

async function loopSubject(dir: string): Promise<Subject> {
  const backend = new LoopBackend({ dataDir: path.join(dir, 'data'), log });
  await backend.init();
  return { backend, params: {}, cleanup: async () => undefined };
}

async function lvmSubject(dir: string): Promise<Subject> {
  const vg = await TestVg.create(path.join(dir, 'vg'), 1);
  const backend = new LvmBackend({ volumeGroups: [vg.name], devices: [vg.pv], mode: 'nodm', stateDir: path.join(dir, 'state'), log });
  await backend.init();
  return { backend, params: { volumeGroup: vg.name }, cleanup: () => vg.destroy() };
}

async function rbdSubject(dir: string): Promise<Subject> {
  let ceph: CephEnv | undefined;
  try {
    ceph = await startCeph(path.join(dir, 'ceph'));
    const config = parseConfig({ clusters: [{ clusterID: 'contract', monitors: [ceph.mon], pools: [ceph.pool], user: ceph.user, keyFile: ceph.keyFile }], mapper: 'fuse' });
    const backend = new RbdBackend({ config, stateDir: path.join(dir, 'state'), nodeId: 'contract-node', node: true, controller: true, log });
    await backend.init();
    return {
      backend,
      params: { clusterID: 'contract', pool: ceph.pool },
      cleanup: async () => {
        await cleanupDriverDir(dir);
        await stopCeph(path.join(dir, 'ceph'));
      },
    };
  } catch (err) {
    if (ceph) await stopCeph(path.join(dir, 'ceph'));
    throw err;
  }
}

const SUBJECTS: Array<[string, (dir: string) => Promise<Subject>]> = [
  ['loop', loopSubject],
  ['lvm (no device-mapper)', lvmSubject],
  ['rbd (fuse mapper)', rbdSubject],
];

function volume(s: Subject, name: string, bytes: bigint, extra: Partial<VolumeRecord> = {}): VolumeRecord {
  return {
    id: deriveId('vol', s.backend.name, name),
    name,
    backend: s.backend.name,
    capacityBytes: bytes,
    accessType: 'block',
    fsType: '',
    parameters: s.params,
    mutableParameters: {},
    topology: {},
    published: {},
    createdAt: new Date().toISOString(),
    ...extra,
  };
}

function snapshot(s: Subject, name: string, source: VolumeRecord, groupSnapshotId = ''): SnapshotRecord {
  return {
    id: deriveId('snap', s.backend.name, name),
    name,
    sourceVolumeId: source.id,
    sizeBytes: source.capacityBytes,
    createdAtSeconds: BigInt(Math.floor(Date.now() / 1000)),
    createdAtNanos: 0,
    groupSnapshotId,
    parameters: {},
  };
}

async function blockBytes(device: string): Promise<bigint> {
  return BigInt((await execa('blockdev', ['--getsize64', device])).stdout.trim());
}

async function writeMark(device: string, text: string): Promise<void> {
  await execa('dd', [`of=${device}`, 'bs=4096', 'conv=fsync', 'status=none'], { input: text.padEnd(4096, '\0') });
}

async function readMark(device: string, length: number): Promise<string> {
  const r = await execa('dd', [`if=${device}`, 'bs=4096', 'count=1', 'iflag=direct', 'status=none'], { encoding: 'buffer' });
  return Buffer.from(r.stdout).subarray(0, length).toString();
}

async function reasonOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'OK',
    (err: unknown) => (err instanceof BackendError ? err.reason : `not a BackendError: ${String(err)}`),
  );
}

describe.each(SUBJECTS)('backend contract: %s', (_label, make) => {
  let dir = '';
  let s: Subject;
  const made: VolumeRecord[] = [];

  beforeAll(async () => {
    dir = await fs.mkdtemp('/tmp/tscsi-contract-');
    s = await make(dir);
  }, 600_000);

  afterAll(async () => {
    // Whatever failed: nothing attached, no volume, no loop device left behind.
    for (const v of made) await s?.backend.detach(v).catch(() => undefined);
    for (const snap of (await s?.backend.listSnapshots().catch(() => [])) ?? []) await s.backend.deleteSnapshot(snap.id).catch(() => undefined);
    for (const v of made) await s?.backend.deleteVolume(v.id).catch(() => undefined);
    await s?.cleanup();
    for (const d of await loopDevicesUnder(dir)) await execa('losetup', ['-d', d], { reject: false });
    await fs.rm(dir, { recursive: true, force: true });
  }, 180_000);

  it('looking up what does not exist answers undefined; deleting it succeeds (idempotent deletes)', async () => {
    const ghost = volume(s, 'pvc-ghost', 16n * MiB);
    expect(await s.backend.getVolume(ghost.id)).toBeUndefined();
    expect(await s.backend.getSnapshot(deriveId('snap', s.backend.name, 'ghost'))).toBeUndefined();
    expect(await s.backend.groupSnapshots!.getGroupSnapshot(deriveId('group', s.backend.name, 'ghost'))).toBeUndefined();
    await s.backend.deleteVolume(ghost.id);
    await s.backend.deleteSnapshot(deriveId('snap', s.backend.name, 'ghost'));
    await s.backend.groupSnapshots!.deleteGroupSnapshotRecord(deriveId('group', s.backend.name, 'ghost'));
  });

  it('a created volume is found and listed, attaches to one block device of its size (again: the same one), grows, and goes', async () => {
    const unit = await s.backend.granularity(s.params);
    const rec = volume(s, 'pvc-life', 16n * MiB > unit ? 16n * MiB : unit);
    made.push(rec);
    const created = await s.backend.createVolume(rec);
    expect(created.id).toBe(rec.id);
    expect((await s.backend.getVolume(rec.id))?.capacityBytes).toBe(rec.capacityBytes);
    expect((await s.backend.listVolumes()).map((v) => v.id)).toContain(rec.id);

    expect(await s.backend.attachedDevice(created)).toBeUndefined();
    const dev = await s.backend.attach(created);
    expect((await fs.stat(dev)).isBlockDevice()).toBe(true);
    expect(await blockBytes(dev)).toBe(rec.capacityBytes);
    expect(await s.backend.attach(created)).toBe(dev);
    expect(await s.backend.attachedDevice(created)).toBe(dev);

    const grown = await s.backend.expandVolume(created, rec.capacityBytes * 2n);
    expect(grown.capacityBytes).toBeGreaterThanOrEqual(rec.capacityBytes * 2n);
    expect((await s.backend.getVolume(rec.id))?.capacityBytes).toBe(grown.capacityBytes);
    const live = (await s.backend.attachedDevice(grown)) ?? dev;
    await s.backend.refreshDevice(grown, live);
    expect(await blockBytes(live)).toBe(grown.capacityBytes);

    await s.backend.detach(grown);
    expect(await s.backend.attachedDevice(grown)).toBeUndefined();
    await s.backend.detach(grown);
    await s.backend.deleteVolume(rec.id);
    expect(await s.backend.getVolume(rec.id)).toBeUndefined();
    expect((await s.backend.listVolumes()).map((v) => v.id)).not.toContain(rec.id);
    await s.backend.deleteVolume(rec.id);
    // A late publication record must not bring a deleted volume back.
    expect(await reasonOf(s.backend.saveVolume({ ...grown, published: { 'some-node': { readonly: false, accessMode: 'SINGLE_NODE_WRITER' } } }))).toBe('not-found');
    expect(await s.backend.getVolume(rec.id)).toBeUndefined();
  });

  it('a snapshot keeps the bytes of its moment, and a volume made from it starts with them', async () => {
    const unit = await s.backend.granularity(s.params);
    const src = volume(s, 'pvc-src', 16n * MiB > unit ? 16n * MiB : unit);
    made.push(src);
    await s.backend.createVolume(src);
    const dev = await s.backend.attach(src);
    await writeMark(dev, 'before the snapshot');
    await s.backend.detach(src);

    const [snap] = await s.backend.createSnapshots([snapshot(s, 'snap-src', src)]);
    expect((await s.backend.getSnapshot(snap.id))?.sourceVolumeId).toBe(src.id);
    expect((await s.backend.listSnapshots()).map((x) => x.id)).toContain(snap.id);

    await writeMark(await s.backend.attach(src), 'after the snapshot');
    await s.backend.detach(src);

    const restored = volume(s, 'pvc-restored', src.capacityBytes, { contentSource: { type: 'snapshot', id: snap.id } });
    made.push(restored);
    await s.backend.createVolume(restored);
    expect(await readMark(await s.backend.attach(restored), 19)).toBe('before the snapshot');
    await s.backend.detach(restored);
    await s.backend.deleteVolume(restored.id);

    await s.backend.deleteSnapshot(snap.id);
    expect(await s.backend.getSnapshot(snap.id)).toBeUndefined();
    await s.backend.deleteSnapshot(snap.id);
  });

  it('a group record is found by its ID; a missing member is not-found and records nothing; forgetting it leaves the members', async () => {
    const groups = s.backend.groupSnapshots!;
    const unit = await s.backend.granularity(s.params);
    const vol = volume(s, 'pvc-member', 16n * MiB > unit ? 16n * MiB : unit);
    made.push(vol);
    await s.backend.createVolume(vol);
    const groupId = deriveId('group', s.backend.name, 'group-1');
    const [member] = await s.backend.createSnapshots([snapshot(s, 'group-1/member', vol, groupId)]);
    const t = { createdAtSeconds: member.createdAtSeconds, createdAtNanos: 0, parameters: {} };

    const missing = deriveId('snap', s.backend.name, 'group-2/never-made');
    const broken = { id: deriveId('group', s.backend.name, 'group-2'), name: 'group-2', snapshotIds: [member.id, missing], ...t };
    expect(await reasonOf(groups.saveGroupSnapshot(broken))).toBe('not-found');
    expect(await groups.getGroupSnapshot(broken.id)).toBeUndefined();

    const group = { id: groupId, name: 'group-1', snapshotIds: [member.id], ...t };
    await groups.saveGroupSnapshot(group);
    await groups.saveGroupSnapshot(group);
    expect((await groups.getGroupSnapshot(groupId))?.snapshotIds).toEqual([member.id]);

    await groups.deleteGroupSnapshotRecord(groupId);
    expect(await groups.getGroupSnapshot(groupId)).toBeUndefined();
    expect((await s.backend.getSnapshot(member.id))?.sourceVolumeId).toBe(vol.id);
    await groups.deleteGroupSnapshotRecord(groupId);
    await s.backend.deleteSnapshot(member.id);
    await s.backend.deleteVolume(vol.id);
  });

  it('refuses what names something gone (not-found) and deleting an attached volume (precondition), and changes nothing', async () => {
    const unit = await s.backend.granularity(s.params);
    const bytes = 16n * MiB > unit ? 16n * MiB : unit;
    const gone = deriveId('snap', s.backend.name, 'never-made');
    const fromGone = volume(s, 'pvc-from-gone', bytes, { contentSource: { type: 'snapshot', id: gone } });
    made.push(fromGone);
    expect(await reasonOf(s.backend.createVolume(fromGone))).toBe('not-found');
    expect(await s.backend.getVolume(fromGone.id)).toBeUndefined();

    const noSource = volume(s, 'pvc-never-made', bytes);
    expect(await reasonOf(s.backend.createSnapshots([snapshot(s, 'snap-of-nothing', noSource)]))).toBe('not-found');
    expect(await s.backend.getSnapshot(deriveId('snap', s.backend.name, 'snap-of-nothing'))).toBeUndefined();

    const busy = volume(s, 'pvc-busy', bytes);
    made.push(busy);
    await s.backend.createVolume(busy);
    await s.backend.attach(busy);
    expect(await reasonOf(s.backend.deleteVolume(busy.id))).toBe('precondition');
    expect((await s.backend.getVolume(busy.id))?.id).toBe(busy.id);
    await s.backend.detach(busy);
    await s.backend.deleteVolume(busy.id);
  });
});
