// A volume's whole life on real loop devices, XFS/ext4/btrfs and real mounts, through a
// real gRPC client: create, stage, publish, write, snapshot, clone, expand, stats, delete.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { type DriverHarness, mountCap, blockCap, MiB, loopDevicesUnder, mountsUnder } from '../lib/driver-harness.js';
import { driverPerFile } from '../lib/driver-per-file.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';
import { freePort } from '../lib/wait.js';
import { scrape, toolRunCount } from '../lib/prometheus.js';

let h: DriverHarness;
let c: CsiClient;
// The metrics count the host tools the driver runs: what a re-stage did is seen there.
const metricsUrl = `http://127.0.0.1:${await freePort()}/metrics`;
driverPerFile((driver, client) => ([h, c] = [driver, client]), { driver: { metricsAddress: new URL(metricsUrl).host } });

async function stageAndPublish(volumeId: string, cap: object, name: string) {
  const staging = path.join(h.dir, 'staging', name);
  const target = path.join(h.dir, 'pods', name, 'mount');
  await fs.mkdir(staging, { recursive: true });
  await c.Node.NodeStageVolume({ volume_id: volumeId, staging_target_path: staging, volume_capability: cap });
  await c.Node.NodePublishVolume({ volume_id: volumeId, staging_target_path: staging, target_path: target, volume_capability: cap });
  return { staging, target };
}

async function unpublishAndUnstage(volumeId: string, p: { staging: string; target: string }) {
  await c.Node.NodeUnpublishVolume({ volume_id: volumeId, target_path: p.target });
  await c.Node.NodeUnstageVolume({ volume_id: volumeId, staging_target_path: p.staging });
}

describe('volume lifecycle on the loop backend', () => {
  it('keeps data through snapshot -> clone, grows online, reports stats, and leaves nothing behind', async () => {
    const cap = mountCap('xfs');
    const created = await c.Controller.CreateVolume({ name: 'pvc-lifecycle', capacity_range: { required_bytes: String(512 * MiB) }, volume_capabilities: [cap] });
    const vol = created.volume;
    expect(vol.capacity_bytes).toBe(String(512 * MiB));
    expect(vol.accessible_topology[0].segments).toEqual({ 'topology.tscsi.dev/node': h.nodeId });

    const p = await stageAndPublish(vol.volume_id, cap, 'src');
    const fsType = await execa('findmnt', ['-n', '-o', 'FSTYPE', '--mountpoint', p.staging]);
    expect(fsType.stdout.trim()).toBe('xfs');
    await fs.writeFile(path.join(p.target, 'hello.txt'), 'data that must survive');

    // Snapshot while published: the filesystem is frozen around the clone, so the write is in it.
    const snap = (await c.Controller.CreateSnapshot({ name: 'snap-lifecycle', source_volume_id: vol.volume_id })).snapshot;
    expect(snap.ready_to_use).toBe(true);
    expect(snap.source_volume_id).toBe(vol.volume_id);
    expect(snap.size_bytes).toBe(String(512 * MiB));
    // Loop snapshots live on this node, and say so; a snapshot wanted elsewhere cannot be made.
    const here = { segments: { 'topology.tscsi.dev/node': h.nodeId } };
    expect(snap.accessible_topology).toEqual([here]);
    expect((await c.Controller.ListSnapshots({ snapshot_id: snap.snapshot_id })).entries[0].snapshot.accessible_topology).toEqual([here]);
    const same = await c.Controller.CreateSnapshot({ name: 'snap-lifecycle', source_volume_id: vol.volume_id, accessibility_requirements: { requisite: [here] } });
    expect(same.snapshot.snapshot_id).toBe(snap.snapshot_id);
    const elsewhere = await c.Controller.CreateSnapshot({
      name: 'snap-elsewhere',
      source_volume_id: vol.volume_id,
      accessibility_requirements: { requisite: [{ segments: { 'topology.tscsi.dev/node': 'another-node' } }] },
    }).catch((e: unknown) => e);
    expect(codeName(elsewhere)).toBe('RESOURCE_EXHAUSTED');
    expect((elsewhere as Error).message).toMatch(/snapshot cannot be provisioned in the requested topology/);
    await unpublishAndUnstage(vol.volume_id, p);
    await expect(fs.stat(p.target)).rejects.toThrow(); // NodeUnpublish removes the target

    const clone = (
      await c.Controller.CreateVolume({
        name: 'pvc-from-snap',
        volume_capabilities: [cap],
        volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } },
      })
    ).volume;
    expect(clone.content_source.snapshot.snapshot_id).toBe(snap.snapshot_id);
    expect(BigInt(clone.capacity_bytes)).toBeGreaterThanOrEqual(512n * BigInt(MiB));

    // Source and clone staged together: same XFS UUID, and both must mount.
    const p1 = await stageAndPublish(vol.volume_id, cap, 'src2');
    const p2 = await stageAndPublish(clone.volume_id, cap, 'clone');
    expect(await fs.readFile(path.join(p2.target, 'hello.txt'), 'utf8')).toBe('data that must survive');
    await fs.writeFile(path.join(p2.target, 'only-in-clone'), 'x');
    await expect(fs.stat(path.join(p1.target, 'only-in-clone'))).rejects.toThrow();

    // Online expansion of the published clone.
    const before = await c.Node.NodeGetVolumeStats({ volume_id: clone.volume_id, volume_path: p2.target });
    const exp = await c.Controller.ControllerExpandVolume({ volume_id: clone.volume_id, capacity_range: { required_bytes: String(1024 * MiB) } });
    expect(exp.capacity_bytes).toBe(String(1024 * MiB));
    expect(exp.node_expansion_required).toBe(true);
    const nexp = await c.Node.NodeExpandVolume({ volume_id: clone.volume_id, volume_path: p2.target, capacity_range: { required_bytes: String(1024 * MiB) } });
    expect(nexp.capacity_bytes).toBe(String(1024 * MiB));
    const after = await c.Node.NodeGetVolumeStats({ volume_id: clone.volume_id, volume_path: p2.target });
    const total = (s: any) => BigInt(s.usage.find((u: any) => u.unit === 'BYTES').total);
    expect(total(after)).toBeGreaterThan(total(before) + 400n * BigInt(MiB));
    expect(after.usage.find((u: any) => u.unit === 'INODES')).toBeDefined();
    const health = await c.Node.NodeGetVolumeHealth({ volume_id: clone.volume_id });
    expect(health.volume_health).toEqual({ volume_id: clone.volume_id, health_statuses: [] });
    expect(await fs.readFile(path.join(p2.target, 'hello.txt'), 'utf8')).toBe('data that must survive');

    await unpublishAndUnstage(vol.volume_id, p1);
    await unpublishAndUnstage(clone.volume_id, p2);
    await c.Controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id });
    await c.Controller.DeleteVolume({ volume_id: clone.volume_id });
    await c.Controller.DeleteVolume({ volume_id: vol.volume_id });

    expect((await c.Controller.ListVolumes({})).entries).toHaveLength(0);
    expect((await c.Controller.ListSnapshots({})).entries).toHaveLength(0);
    expect(await loopDevicesUnder(h.dataDir)).toEqual([]);
    expect(await mountsUnder(path.join(h.dir, 'staging'))).toEqual([]);
    expect((await fs.readdir(path.join(h.dataDir, 'volumes'))).length).toBe(0);
  });

  it('clones a volume directly and takes a group snapshot of two volumes', async () => {
    const cap = mountCap('ext4');
    const a = (await c.Controller.CreateVolume({ name: 'pvc-a', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume;
    const b = (await c.Controller.CreateVolume({ name: 'pvc-b', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume;
    const pa = await stageAndPublish(a.volume_id, cap, 'a');
    const pb = await stageAndPublish(b.volume_id, cap, 'b');
    await fs.writeFile(path.join(pa.target, 'f'), 'A');
    await fs.writeFile(path.join(pb.target, 'f'), 'B');

    // A group snapshot class's parameter no backend takes is refused, as CreateSnapshot refuses it.
    const typo = await c.GroupController.CreateVolumeGroupSnapshot({ name: 'group-typo', source_volume_ids: [a.volume_id, b.volume_id], parameters: { bogus: 'x' } }).catch((e) => e);
    expect(codeName(typo)).toBe('INVALID_ARGUMENT');
    expect(typo.details).toContain('"bogus" is not supported');
    const group = (await c.GroupController.CreateVolumeGroupSnapshot({ name: 'group-1', source_volume_ids: [a.volume_id, b.volume_id] })).group_snapshot;
    expect(group.snapshots).toHaveLength(2);
    expect(group.snapshots.every((s: any) => s.group_snapshot_id === group.group_snapshot_id)).toBe(true);
    // A member cannot be deleted on its own (the spec's INVALID_ARGUMENT).
    const err = await c.Controller.DeleteSnapshot({ snapshot_id: group.snapshots[0].snapshot_id }).catch((e) => e);
    expect(codeName(err)).toBe('INVALID_ARGUMENT');

    const direct = (await c.Controller.CreateVolume({ name: 'pvc-a-clone', volume_capabilities: [cap], volume_content_source: { volume: { volume_id: a.volume_id } } })).volume;
    const pd = await stageAndPublish(direct.volume_id, cap, 'direct');
    expect(await fs.readFile(path.join(pd.target, 'f'), 'utf8')).toBe('A');

    for (const s of group.snapshots) {
      const v = (await c.Controller.CreateVolume({ name: `restore-${s.source_volume_id}`, volume_capabilities: [cap], volume_content_source: { snapshot: { snapshot_id: s.snapshot_id } } })).volume;
      const pv = await stageAndPublish(v.volume_id, cap, `restore-${v.volume_id}`);
      expect(await fs.readFile(path.join(pv.target, 'f'), 'utf8')).toBe(s.source_volume_id === a.volume_id ? 'A' : 'B');
      await unpublishAndUnstage(v.volume_id, pv);
      await c.Controller.DeleteVolume({ volume_id: v.volume_id });
    }
    await c.GroupController.DeleteVolumeGroupSnapshot({ group_snapshot_id: group.group_snapshot_id });
    await expect(c.GroupController.GetVolumeGroupSnapshot({ group_snapshot_id: group.group_snapshot_id })).rejects.toMatchObject({ code: 5 });
    for (const [v, p] of [[a, pa], [b, pb], [direct, pd]] as const) {
      await unpublishAndUnstage(v.volume_id, p);
      await c.Controller.DeleteVolume({ volume_id: v.volume_id });
    }
    expect((await c.Controller.ListSnapshots({})).entries.map((e: any) => e.snapshot)).toEqual([]);
  });

  it('refuses a mutable parameter the backend lacks, also one named like an Object member, with INVALID_ARGUMENT', async () => {
    const cap = mountCap('ext4');
    for (const key of ['bogus', 'valueOf', 'constructor']) {
      const err = await c.Controller.CreateVolume({ name: `pvc-mut-${key}`, capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap], mutable_parameters: { [key]: 'x' } }).catch((e) => e);
      expect([key, codeName(err)]).toEqual([key, 'INVALID_ARGUMENT']);
      expect(err.details).toContain(`mutable parameter "${key}" is not supported`);
    }
    expect((await c.Controller.ListVolumes({})).entries).toEqual([]);
  });

  it('serves raw block volumes: bytes written through the published file read back', async () => {
    const cap = blockCap();
    const v = (await c.Controller.CreateVolume({ name: 'pvc-block', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [cap] })).volume;
    const staging = path.join(h.dir, 'staging', 'blk');
    const target = path.join(h.dir, 'pods', 'blk', 'dev');
    await fs.mkdir(staging, { recursive: true });
    await c.Node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: cap });
    await c.Node.NodePublishVolume({ volume_id: v.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap });
    expect((await fs.stat(target)).isBlockDevice()).toBe(true);
    const payload = Buffer.alloc(4096, 0x5a);
    const fh = await fs.open(target, 'r+');
    await fh.write(payload, 0, 4096, 8192);
    await fh.sync();
    const back = Buffer.alloc(4096);
    await fh.read(back, 0, 4096, 8192);
    await fh.close();
    expect(back.equals(payload)).toBe(true);
    const stats = await c.Node.NodeGetVolumeStats({ volume_id: v.volume_id, volume_path: target });
    expect(stats.usage[0].total).toBe(String(32 * MiB));
    // A mount capability on a block volume is refused.
    const err = await c.Node.NodePublishVolume({ volume_id: v.volume_id, staging_target_path: staging, target_path: target + '2', volume_capability: mountCap() }).catch((e) => e);
    expect(codeName(err)).toBe('FAILED_PRECONDITION');
    await c.Node.NodeUnpublishVolume({ volume_id: v.volume_id, target_path: target });
    await expect(fs.stat(target)).rejects.toThrow();
    await c.Node.NodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: staging });
    await c.Controller.DeleteVolume({ volume_id: v.volume_id });
  });

  it('ext4 grows online where the host allows it, and otherwise says why and grows at the next stage', async () => {
    const cap = mountCap('ext4');
    const v = (await c.Controller.CreateVolume({ name: 'pvc-ext4-grow', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume;
    let p = await stageAndPublish(v.volume_id, cap, 'ext4');
    await fs.writeFile(path.join(p.target, 'keep'), 'kept');
    await c.Controller.ControllerExpandVolume({ volume_id: v.volume_id, capacity_range: { required_bytes: String(128 * MiB) } });
    const status = await fs.readFile('/proc/self/status', 'utf8');
    const capEff = BigInt('0x' + /CapEff:\s+([0-9a-f]+)/.exec(status)![1]);
    const hasSysResource = (capEff & (1n << 24n)) !== 0n;
    const res = await c.Node.NodeExpandVolume({ volume_id: v.volume_id, volume_path: p.target }).catch((e) => e);
    if (hasSysResource) {
      expect(res.capacity_bytes).toBe(String(128 * MiB));
    } else {
      expect(codeName(res)).toBe('FAILED_PRECONDITION');
      expect(res.details).toMatch(/CAP_SYS_RESOURCE/);
      await unpublishAndUnstage(v.volume_id, p);
      p = await stageAndPublish(v.volume_id, cap, 'ext4-again');
    }
    const s = await c.Node.NodeGetVolumeStats({ volume_id: v.volume_id, volume_path: p.target });
    expect(BigInt(s.usage.find((u: any) => u.unit === 'BYTES').total)).toBeGreaterThan(100n * BigInt(MiB));
    expect(await fs.readFile(path.join(p.target, 'keep'), 'utf8')).toBe('kept');
    await unpublishAndUnstage(v.volume_id, p);
    await c.Controller.DeleteVolume({ volume_id: v.volume_id });
  });
  it('xfs and btrfs grown while unstaged fill their device at the next stage, and keep their data', async () => {
    for (const fsType of ['xfs', 'btrfs']) {
      const cap = mountCap(fsType);
      const v = (await c.Controller.CreateVolume({ name: `pvc-${fsType}-restage`, capacity_range: { required_bytes: String(320 * MiB) }, volume_capabilities: [cap] })).volume;
      let p = await stageAndPublish(v.volume_id, cap, `${fsType}-1`);
      await fs.writeFile(path.join(p.target, 'keep'), 'kept');
      const total = async () => BigInt((await c.Node.NodeGetVolumeStats({ volume_id: v.volume_id, volume_path: p.target })).usage.find((u: any) => u.unit === 'BYTES').total);
      const growTool = fsType === 'xfs' ? 'xfs_growfs' : 'btrfs';
      const growRuns = async () => toolRunCount(await scrape(metricsUrl), growTool);
      const before = await total();
      await unpublishAndUnstage(v.volume_id, p);
      await c.Controller.ControllerExpandVolume({ volume_id: v.volume_id, capacity_range: { required_bytes: String(640 * MiB) } });
      const growsBefore = await growRuns();
      p = await stageAndPublish(v.volume_id, cap, `${fsType}-2`);
      expect(await total()).toBeGreaterThan(before + 256n * BigInt(MiB));
      expect(await growRuns()).toBe(growsBefore + 1);
      // Staged again at the same size: the filesystem already fills its device, so nothing grows it.
      const grown = await total();
      await unpublishAndUnstage(v.volume_id, p);
      p = await stageAndPublish(v.volume_id, cap, `${fsType}-3`);
      expect(await growRuns()).toBe(growsBefore + 1);
      expect(await total()).toBe(grown);
      expect(await fs.readFile(path.join(p.target, 'keep'), 'utf8')).toBe('kept');
      await unpublishAndUnstage(v.volume_id, p);
      await c.Controller.DeleteVolume({ volume_id: v.volume_id });
    }
  });
});
