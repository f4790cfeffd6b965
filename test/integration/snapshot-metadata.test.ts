// Changed-block tracking on real data: known blocks written into a raw block volume,
// snapshotted, other known blocks written, snapshotted again; the SnapshotMetadata service
// must answer exactly those ranges at the granularity each backend declares (loop: the
// filesystem block; RBD: whole RADOS objects), page them as asked, and refuse bad requests
// with the spec's codes; LVM, which keeps no block map, says so. One driver (loop, LVM on
// a throwaway VG, RBD) and one real Ceph cluster (test/lib/ceph) for the file; the RBD node
// side is the fuse mapper (rbd-fuse + a loop device).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { DriverHarness, blockCap, MiB, loopDevicesUnder } from '../lib/driver-harness.js';
import { startCeph, stopCeph, cleanupDriverDir, type CephEnv } from '../lib/ceph/cluster.js';
import { TestVg } from '../lib/lvm-vg.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';

let h: DriverHarness | undefined;
let c: CsiClient;
let root: string;
let ceph: CephEnv | undefined;
let vg: TestVg | undefined;
const published: Array<{ id: string; staging: string; target: string }> = [];

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-cbt-'));
  ceph = await startCeph(path.join(root, 'ceph'));
  const rbdConfig = path.join(root, 'rbd.json');
  await fs.writeFile(rbdConfig, JSON.stringify({ clusters: [{ clusterID: 'test', monitors: [ceph.mon], pools: [ceph.pool], user: ceph.user, keyFile: ceph.keyFile }], mapper: 'fuse' }));
  vg = await TestVg.create(path.join(root, 'vg'), 1);
  h = await DriverHarness.start({ driver: { rbdConfig, lvmVolumeGroups: vg.name, lvmDevices: vg.pv } });
  c = h.client!;
}, 600_000);

// Volumes are taken down through CSI first, so the driver's own stop releases its data
// pool; what a failure left is removed by the PIDs and paths under the driver's directory
// (rbd-fuse helpers before the harness removes it); the cluster goes last.
afterAll(async () => {
  for (const p of published.reverse()) {
    await c.Node.NodeUnpublishVolume({ volume_id: p.id, target_path: p.target }).catch(() => undefined);
    await c.Node.NodeUnstageVolume({ volume_id: p.id, staging_target_path: p.staging }).catch(() => undefined);
  }
  await h?.stopProcess();
  if (h) await cleanupDriverDir(h.dir);
  await h?.cleanup();
  await vg?.destroy();
  if (root) await stopCeph(path.join(root, 'ceph'));
  if (root) await fs.rm(root, { recursive: true, force: true });
  if (h) expect(await loopDevicesUnder(h.dir)).toEqual([]);
}, 180_000);

const KiB = 1024;
const CLI = path.join(import.meta.dirname, '..', '..', 'dist', 'cli', 'tscsi-cli.js');
const VOLUME_BYTES = 64 * MiB;

interface Tuple {
  byte_offset: string;
  size_bytes: string;
}
type Msg = { block_metadata_type: string; volume_capacity_bytes: string; block_metadata: Tuple[] };

const r = (offset: number, length: number) => ({ byte_offset: String(offset), size_bytes: String(length) });
const tuples = (msgs: Msg[]) => msgs.flatMap((m) => m.block_metadata);
const outcomeOf = (p: Promise<unknown>) => p.then(() => 'OK', (e) => codeName(e));

/** Writes `length` bytes of random data at `offset` straight to the device (O_DIRECT: no page cache in between). */
async function writeAt(device: string, offset: number, length: number) {
  await execa('dd', ['if=/dev/urandom', `of=${device}`, `bs=${4 * KiB}`, `seek=${offset / (4 * KiB)}`, `count=${length / (4 * KiB)}`, 'oflag=direct', 'conv=notrunc', 'status=none']);
}

async function publishedBlockVolume(name: string, parameters: Record<string, string> = {}) {
  const cap = blockCap();
  const v = (await c.Controller.CreateVolume({ name, parameters, capacity_range: { required_bytes: String(VOLUME_BYTES) }, volume_capabilities: [cap] })).volume;
  const staging = path.join(h!.dir, 'staging', name);
  const target = path.join(h!.dir, 'pods', name, 'dev');
  await fs.mkdir(staging, { recursive: true });
  await c.Node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: cap });
  await c.Node.NodePublishVolume({ volume_id: v.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap });
  published.push({ id: v.volume_id, staging, target });
  return { id: v.volume_id as string, device: target };
}

const snapshot = async (volumeId: string, name: string) => (await c.Controller.CreateSnapshot({ source_volume_id: volumeId, name })).snapshot.snapshot_id as string;

// The story every case reads: s1 after the first writes, s2 after the second (which
// rewrites the middle of the 64 KiB range and adds one past it).
const FIRST = [r(4 * KiB, 4 * KiB), r(9 * MiB, 64 * KiB)];
const SECOND = [r(9 * MiB + 16 * KiB, 8 * KiB), r(48 * MiB, 12 * KiB)];

/** A block volume written with FIRST, snapshotted, written with SECOND, snapshotted again. */
async function story(name: string, parameters: Record<string, string> = {}) {
  const vol = await publishedBlockVolume(name, parameters);
  for (const t of FIRST) await writeAt(vol.device, Number(t.byte_offset), Number(t.size_bytes));
  const s1 = await snapshot(vol.id, `${name}-snap-1`);
  for (const t of SECOND) await writeAt(vol.device, Number(t.byte_offset), Number(t.size_bytes));
  const s2 = await snapshot(vol.id, `${name}-snap-2`);
  return { vol, s1, s2 };
}

let s1: string;
let s2: string;

describe('SnapshotMetadata on the loop backend', () => {
  beforeAll(async () => {
    ({ s1, s2 } = await story('pvc-cbt'));
  });

  it('is advertised as a plugin capability', async () => {
    const caps = (await c.Identity.GetPluginCapabilities({})).capabilities.map((x: { service?: { type: string } }) => x.service?.type);
    expect(caps).toContain('SNAPSHOT_METADATA_SERVICE');
  });

  it('GetMetadataAllocated answers exactly the written ranges of each snapshot', async () => {
    const first = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: s1 })) as Msg[];
    expect(first.every((m) => m.block_metadata_type === 'VARIABLE_LENGTH' && m.volume_capacity_bytes === String(VOLUME_BYTES))).toBe(true);
    expect(tuples(first)).toEqual(FIRST);
    // The second writes overwrote the middle of the 64 KiB range and added one past it.
    const second = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: s2 })) as Msg[];
    expect(tuples(second)).toEqual([...FIRST, SECOND[1]]);
  });

  it('GetMetadataDelta answers exactly the ranges written between the two snapshots', async () => {
    const delta = (await c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: s2 })) as Msg[];
    expect(delta.every((m) => m.block_metadata_type === 'VARIABLE_LENGTH' && m.volume_capacity_bytes === String(VOLUME_BYTES))).toBe(true);
    expect(tuples(delta)).toEqual(SECOND);
    // A snapshot against itself changed nothing: one message with the size and no ranges.
    const none = (await c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: s1 })) as Msg[];
    expect(none).toEqual([{ block_metadata_type: 'VARIABLE_LENGTH', volume_capacity_bytes: String(VOLUME_BYTES), block_metadata: [] }]);
  });

  it('tscsi-cli prints the allocated and the changed ranges of a snapshot pair', async () => {
    const cli = (...args: string[]) => execa(process.execPath, [CLI, '--endpoint', `unix://${h!.socket}`, ...args]);
    const lines = (out: string) => out.split('\n').filter((l) => l && !l.startsWith('#'));
    const row = (t: Tuple) => `${t.byte_offset}\t${t.size_bytes}\t${Number(t.byte_offset) + Number(t.size_bytes)}`;
    const delta = await cli('delta', s1, s2);
    expect(delta.stdout).toContain(`# volume ${VOLUME_BYTES} bytes, VARIABLE_LENGTH ranges: 2, ${20 * KiB} bytes`);
    expect(lines(delta.stdout)).toEqual(SECOND.map(row));
    expect(lines((await cli('allocated', s1)).stdout)).toEqual(FIRST.map(row));
    // A refusal reads as the sidecars write it, and fails the command.
    const bad = await execa(process.execPath, [CLI, '--endpoint', `unix://${h!.socket}`, 'delta', s2, s1], { reject: false });
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr).toMatch(/rpc error: code = INVALID_ARGUMENT desc = .*base must be the older/);
  });

  it('pages with max_results and resumes from starting_offset over the same ranges', async () => {
    const all = [...FIRST, SECOND[1]];
    const paged = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: s2, max_results: 1 })) as Msg[];
    expect(paged.map((m) => m.block_metadata.length)).toEqual([1, 1, 1]);
    expect(tuples(paged)).toEqual(all);
    // Resuming inside a range sends that range whole; right after it, the rest.
    const inside = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: s2, starting_offset: String(9 * MiB + 1) })) as Msg[];
    expect(tuples(inside)).toEqual(all.slice(1));
    const after = (await c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: s2, starting_offset: String(9 * MiB + 24 * KiB), max_results: 5 })) as Msg[];
    expect(tuples(after)).toEqual([SECOND[1]]);
    // The very end of the volume is a valid place to resume from: nothing is left.
    const end = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: s2, starting_offset: String(VOLUME_BYTES) })) as Msg[];
    expect(tuples(end)).toEqual([]);
  });

  it('refuses bad requests with the codes the spec gives', async () => {
    const other = await publishedBlockVolume('pvc-cbt-other');
    const otherSnap = await snapshot(other.id, 'snap-cbt-other');
    const unknown = 'snap-loop-' + '0'.repeat(32);
    const A = (req: object) => outcomeOf(c.SnapshotMetadata.GetMetadataAllocated(req));
    const D = (req: object) => outcomeOf(c.SnapshotMetadata.GetMetadataDelta(req));
    expect(await A({ snapshot_id: s1, starting_offset: '-1' })).toBe('OUT_OF_RANGE');
    expect(await A({ snapshot_id: s1, starting_offset: String(VOLUME_BYTES + 1) })).toBe('OUT_OF_RANGE');
    expect(await D({ base_snapshot_id: s1, target_snapshot_id: s2, starting_offset: '9223372036854775807' })).toBe('OUT_OF_RANGE');
    expect(await A({ snapshot_id: unknown })).toBe('NOT_FOUND');
    expect(await D({ base_snapshot_id: s1, target_snapshot_id: unknown })).toBe('NOT_FOUND');
    expect(await A({ snapshot_id: '' })).toBe('INVALID_ARGUMENT');
    expect(await A({ snapshot_id: '../../etc/passwd' })).toBe('INVALID_ARGUMENT');
    expect(await A({ snapshot_id: s1, max_results: -1 })).toBe('INVALID_ARGUMENT');
    expect(await D({ base_snapshot_id: s1, target_snapshot_id: otherSnap })).toBe('INVALID_ARGUMENT');
    expect(await D({ base_snapshot_id: s2, target_snapshot_id: s1 })).toBe('INVALID_ARGUMENT');
  });
});

describe('SnapshotMetadata on the RBD backend', () => {
  const OBJECT = 4 * MiB; // rbd's default object size: the granularity of rbd diff --whole-object
  let snaps: { s1: string; s2: string };
  beforeAll(async () => {
    snaps = await story('pvc-cbt-rbd', { backend: 'rbd', clusterID: 'test', pool: ceph!.pool });
  }, 300_000);

  it('GetMetadataAllocated answers the RADOS objects the written ranges lie in', async () => {
    const first = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: snaps.s1 })) as Msg[];
    expect(first.every((m) => m.block_metadata_type === 'VARIABLE_LENGTH' && m.volume_capacity_bytes === String(VOLUME_BYTES))).toBe(true);
    // 4 KiB at 4 KiB: object 0; 64 KiB at 9 MiB: object 2.
    expect(tuples(first)).toEqual([r(0, OBJECT), r(2 * OBJECT, OBJECT)]);
    const second = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: snaps.s2, max_results: 1 })) as Msg[];
    expect(second.map((m) => m.block_metadata.length)).toEqual([1, 1, 1]);
    expect(tuples(second)).toEqual([r(0, OBJECT), r(2 * OBJECT, OBJECT), r(12 * OBJECT, OBJECT)]);
    const resumed = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: snaps.s2, starting_offset: String(3 * OBJECT) })) as Msg[];
    expect(tuples(resumed)).toEqual([r(12 * OBJECT, OBJECT)]);
  });

  it('refuses a delta it cannot know exactly, and bad requests, with the spec codes', async () => {
    const err = await c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: snaps.s1, target_snapshot_id: snaps.s2 }).catch((e) => e);
    expect(codeName(err)).toBe('FAILED_PRECONDITION');
    expect(err.details).toMatch(/full backup/);
    expect(await outcomeOf(c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: 'snap-rbd-' + '0'.repeat(32) }))).toBe('NOT_FOUND');
    expect(await outcomeOf(c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: snaps.s1, starting_offset: String(VOLUME_BYTES + 1) }))).toBe('OUT_OF_RANGE');
    // A loop snapshot and an RBD one are never of the same volume.
    expect(await outcomeOf(c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: snaps.s2 }))).toBe('INVALID_ARGUMENT');
  });
});

describe('SnapshotMetadata on the LVM backend', () => {
  it('counts every byte as allocated (no block map) and refuses a delta, asking for a full backup', async () => {
    const { s1, s2 } = await story('pvc-cbt-lvm', { backend: 'lvm' });
    const all = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: s2 })) as Msg[];
    expect(all).toEqual([{ block_metadata_type: 'VARIABLE_LENGTH', volume_capacity_bytes: String(VOLUME_BYTES), block_metadata: [r(0, VOLUME_BYTES)] }]);
    const err = await c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: s2 }).catch((e) => e);
    expect(codeName(err)).toBe('FAILED_PRECONDITION');
    expect(err.details).toMatch(/full backup/);
  });
});
