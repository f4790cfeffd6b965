// Changed-block tracking on real data: known blocks written into a raw block volume,
// snapshotted, other known blocks written, snapshotted again; the SnapshotMetadata service
// must answer exactly those ranges (at the filesystem block the loop backend declares),
// page them as asked, and refuse bad requests with the spec's codes.
import { describe, it, expect, beforeAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { type DriverHarness, blockCap, MiB } from '../lib/driver-harness.js';
import { driverPerFile } from '../lib/driver-per-file.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';

let h: DriverHarness;
let c: CsiClient;
driverPerFile((driver, client) => ([h, c] = [driver, client]));

const KiB = 1024;
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

async function publishedBlockVolume(name: string) {
  const cap = blockCap();
  const v = (await c.Controller.CreateVolume({ name, capacity_range: { required_bytes: String(VOLUME_BYTES) }, volume_capabilities: [cap] })).volume;
  const staging = path.join(h.dir, 'staging', name);
  const target = path.join(h.dir, 'pods', name, 'dev');
  await fs.mkdir(staging, { recursive: true });
  await c.Node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: cap });
  await c.Node.NodePublishVolume({ volume_id: v.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap });
  return { id: v.volume_id as string, device: target };
}

const snapshot = async (volumeId: string, name: string) => (await c.Controller.CreateSnapshot({ source_volume_id: volumeId, name })).snapshot.snapshot_id as string;

// The story every case reads: s1 after the first writes, s2 after the second.
const FIRST = [r(4 * KiB, 4 * KiB), r(MiB, 64 * KiB)];
const SECOND = [r(MiB + 16 * KiB, 8 * KiB), r(48 * MiB, 12 * KiB)];
let vol: { id: string; device: string };
let s1: string;
let s2: string;

beforeAll(async () => {
  vol = await publishedBlockVolume('pvc-cbt');
  for (const t of FIRST) await writeAt(vol.device, Number(t.byte_offset), Number(t.size_bytes));
  s1 = await snapshot(vol.id, 'snap-cbt-1');
  for (const t of SECOND) await writeAt(vol.device, Number(t.byte_offset), Number(t.size_bytes));
  s2 = await snapshot(vol.id, 'snap-cbt-2');
});

describe('SnapshotMetadata on the loop backend', () => {
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

  it('pages with max_results and resumes from starting_offset over the same ranges', async () => {
    const all = [...FIRST, SECOND[1]];
    const paged = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: s2, max_results: 1 })) as Msg[];
    expect(paged.map((m) => m.block_metadata.length)).toEqual([1, 1, 1]);
    expect(tuples(paged)).toEqual(all);
    // Resuming inside a range sends that range whole; right after it, the rest.
    const inside = (await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: s2, starting_offset: String(MiB + 1) })) as Msg[];
    expect(tuples(inside)).toEqual(all.slice(1));
    const after = (await c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: s2, starting_offset: String(MiB + 24 * KiB), max_results: 5 })) as Msg[];
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
