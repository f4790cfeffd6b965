// Changed-block tracking on real data: known blocks written into a raw block volume,
// snapshotted, other known blocks written, snapshotted again; the SnapshotMetadata service
// must answer exactly those ranges at the granularity each backend declares (loop: the
// filesystem block; RBD allocated: whole RADOS objects; RBD and LVM deltas, computed by
// reading both snapshots: 64 KiB blocks, FIXED_LENGTH), page them as asked, and refuse bad
// requests with the spec's codes. One driver (loop, LVM on a throwaway VG, RBD) and one
// real Ceph cluster (test/lib/ceph) for the file; the RBD node side is the fuse mapper
// (rbd-fuse + a loop device).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { DriverHarness, blockCap, MiB, loopDevicesUnder } from '../lib/driver-harness.js';
import { startCeph, stopCeph, cleanupDriverDir, type CephEnv } from '../lib/ceph/cluster.js';
import { TestVg } from '../lib/lvm-vg.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';
import { waitFor } from '../lib/wait.js';

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

/** Writes back the bytes already at `offset`: a write that changes nothing a reader can see. */
async function rewriteSame(device: string, offset: number, length: number) {
  const copy = path.join(root, `same-${offset}`);
  const at = [`bs=${4 * KiB}`, `count=${length / (4 * KiB)}`, 'status=none'];
  await execa('dd', [`if=${device}`, `of=${copy}`, `skip=${offset / (4 * KiB)}`, 'iflag=direct', ...at]);
  await execa('dd', [`if=${copy}`, `of=${device}`, `seek=${offset / (4 * KiB)}`, 'oflag=direct', 'conv=notrunc', ...at]);
  await fs.rm(copy);
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

/**
 * A block volume written with FIRST, snapshotted, written with SECOND, snapshotted again.
 * sameRewrite: FIRST[0] is also written again with the bytes it holds (a backend that
 * compares bytes must call its block unchanged; loop's extent maps would see a new block).
 */
async function story(name: string, parameters: Record<string, string> = {}, sameRewrite = false) {
  const vol = await publishedBlockVolume(name, parameters);
  for (const t of FIRST) await writeAt(vol.device, Number(t.byte_offset), Number(t.size_bytes));
  const s1 = await snapshot(vol.id, `${name}-snap-1`);
  for (const t of SECOND) await writeAt(vol.device, Number(t.byte_offset), Number(t.size_bytes));
  if (sameRewrite) await rewriteSame(vol.device, Number(FIRST[0].byte_offset), Number(FIRST[0].size_bytes));
  const s2 = await snapshot(vol.id, `${name}-snap-2`);
  return { vol, s1, s2 };
}

// What a computed delta (RBD, LVM) must answer for the sameRewrite story, block by block:
// the 8 KiB rewrite inside the 64 KiB at 9 MiB (a block both snapshots have) and the 12 KiB
// at 48 MiB; not block 0, written again with its own bytes.
const BLOCK = 64 * KiB;
const CHANGED_BLOCKS = [r(9 * MiB, BLOCK), r(48 * MiB, BLOCK)];

/** The delta of a sameRewrite story from a backend that compares bytes: exact, paged, resumed. */
async function expectComputedDelta(s1: string, s2: string) {
  const D = async (req: object) => (await c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: s2, ...req })) as Msg[];
  const delta = await D({});
  expect(delta.every((m) => m.block_metadata_type === 'FIXED_LENGTH' && m.volume_capacity_bytes === String(VOLUME_BYTES))).toBe(true);
  expect(tuples(delta)).toEqual(CHANGED_BLOCKS);
  const paged = await D({ max_results: 1 });
  expect(paged.map((m) => m.block_metadata.length)).toEqual([1, 1]);
  expect(tuples(paged)).toEqual(CHANGED_BLOCKS);
  // Resuming inside a block sends it whole; right after it, the rest.
  expect(tuples(await D({ starting_offset: String(9 * MiB + 1) }))).toEqual(CHANGED_BLOCKS);
  expect(tuples(await D({ starting_offset: String(9 * MiB + BLOCK) }))).toEqual([CHANGED_BLOCKS[1]]);
  const none = (await c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: s2, target_snapshot_id: s2 })) as Msg[];
  expect(none).toEqual([{ block_metadata_type: 'FIXED_LENGTH', volume_capacity_bytes: String(VOLUME_BYTES), block_metadata: [] }]);
}

/** PIDs of processes whose arguments are exactly argv0 and contain every one of words. */
async function pidsOf(argv0: string, words: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const n of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    const args = (await fs.readFile(`/proc/${n}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (args[0] === argv0 && words.every((w) => args.includes(w))) out.push(Number(n));
  }
  return out;
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
    snaps = await story('pvc-cbt-rbd', { backend: 'rbd', clusterID: 'test', pool: ceph!.pool }, true);
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

  it('GetMetadataDelta compares the two snapshots: exactly the blocks whose bytes changed', async () => {
    await expectComputedDelta(snaps.s1, snaps.s2);
  });

  it('refuses bad requests with the spec codes', async () => {
    expect(await outcomeOf(c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: 'snap-rbd-' + '0'.repeat(32) }))).toBe('NOT_FOUND');
    expect(await outcomeOf(c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: snaps.s1, starting_offset: String(VOLUME_BYTES + 1) }))).toBe('OUT_OF_RANGE');
    // A loop snapshot and an RBD one are never of the same volume.
    expect(await outcomeOf(c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: snaps.s2 }))).toBe('INVALID_ARGUMENT');
  });

  it('a delta whose caller gives up mid-read leaves no rbd export running', async () => {
    // An empty 1 GiB volume: rbd export streams all of it, so the read is there to be caught.
    const params = { backend: 'rbd', clusterID: 'test', pool: ceph!.pool };
    const v = (await c.Controller.CreateVolume({ name: 'pvc-cbt-rbd-big', parameters: params, capacity_range: { required_bytes: String(1024 * MiB) }, volume_capabilities: [blockCap()] })).volume;
    const [a, b] = [await snapshot(v.volume_id, 'pvc-cbt-rbd-big-1'), await snapshot(v.volume_id, 'pvc-cbt-rbd-big-2')];
    const call = c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: a, target_snapshot_id: b }, 20_000).catch((e: unknown) => e);
    const pid = await waitFor('an rbd export to start', async () => (await pidsOf('rbd', ['export']))[0], { everyMs: 10, timeoutMs: 20_000 });
    // Stopped, it can never finish: only the deadline ends the call, and must end the tool.
    process.kill(pid, 'SIGSTOP');
    expect(codeName(await call)).toBe('DEADLINE_EXCEEDED');
    await waitFor('every rbd export to be gone', async () => (await pidsOf('rbd', ['export'])).length === 0, { everyMs: 50, timeoutMs: 20_000 });
  }, 120_000);
});

describe('SnapshotMetadata on the LVM backend', () => {
  it('counts every byte as allocated (no block map) and computes a delta by comparing the two snapshot LVs', async () => {
    const { s1, s2 } = await story('pvc-cbt-lvm', { backend: 'lvm' }, true);
    const all = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: s2 })) as Msg[];
    expect(all).toEqual([{ block_metadata_type: 'VARIABLE_LENGTH', volume_capacity_bytes: String(VOLUME_BYTES), block_metadata: [r(0, VOLUME_BYTES)] }]);
    const devices = await loopDevicesUnder(vg!.dir);
    await expectComputedDelta(s1, s2);
    // The snapshot LVs were attached for the read only.
    expect(await loopDevicesUnder(vg!.dir)).toEqual(devices);
  });
});
