// Volume and storage health of the LVM backend on real lvm2 (nodm mode: these VMs have no
// device-mapper, so thin pools cannot be made here; their checks are in test/unit/lvm-dm.test.ts).
// Volumes are made abnormal the way it happens in life: a disk (PV) of the volume group goes
// away, an admin removes the LV behind a staged volume, the volume group fills up, every
// disk of the group goes. Each time the four health RPCs must say what is wrong, then
// nothing once it is put right.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { DriverHarness, mountCap, MiB } from '../lib/driver-harness.js';
import { TestVg } from '../lib/lvm-vg.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';

let h: DriverHarness;
let vg: TestVg;
let c: CsiClient;

// A small first PV and a larger second one: a volume too big for the first lands on the second.
const PV_SIZES_MIB = [32, 512];

beforeAll(async () => {
  vg = await TestVg.create(await fs.mkdtemp('/tmp/tscsi-health-lvm-'), 0, PV_SIZES_MIB);
  h = await DriverHarness.start({ driver: { lvmVolumeGroups: vg.name, lvmDevices: vg.pvs.join(','), defaultBackend: 'lvm' } });
  c = h.client!;
});

afterAll(async () => {
  await h?.cleanup();
  await vg?.remove();
});

const params = () => vg.params();

async function createStaged(name: string, bytes: number): Promise<{ id: string; staging: string }> {
  const cap = mountCap('ext4');
  const id = (await c.Controller.CreateVolume({ name, parameters: params(), capacity_range: { required_bytes: String(bytes) }, volume_capabilities: [cap] })).volume.volume_id;
  const staging = path.join(h.dir, 'staging', name);
  await fs.mkdir(staging, { recursive: true });
  await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
  return { id, staging };
}

/** Which PV an LV's extents are on, as lvm reports it. */
async function pvOf(lv: string): Promise<string> {
  const r = await vg.lvm(['lvs', '--segments', '--reportformat', 'json', '-o', 'seg_pe_ranges', `${vg.name}/${lv}`]);
  return (JSON.parse(r.stdout) as { report: Array<{ seg: Array<{ seg_pe_ranges: string }> }> }).report[0].seg[0].seg_pe_ranges.split(':')[0];
}

interface Entry {
  status: string;
  reason: string;
  message: string;
}

const statuses = (hs: Entry[] | undefined) => (hs ?? []).map((x) => `${x.status}/${x.reason}`);

/** The LVM entries of NodeGetStorageHealth (the node's loop data pool answers there too). */
async function lvmStorage() {
  return ((await c.Node.NodeGetStorageHealth({})).backend_health ?? []).filter((b: Entry) => b.message.startsWith('lvm: '));
}

async function health(id: string, staging: string) {
  const ctrl = (await c.Controller.ControllerGetVolumeHealth({ volume_id: id })).volume_health;
  const node = (await c.Node.NodeGetVolumeHealth({ volume_id: id, staging_target_path: staging })).volume_health;
  const listed = (await c.Controller.ControllerListVolumeHealth({})).entries.find((e: { volume_id: string }) => e.volume_id === id);
  return { ctrl, node, listed };
}

/** Detaches a PV's loop device (the disk going away) and returns how to bring it back on the same device name. */
async function unplug(pv: string): Promise<() => Promise<void>> {
  const file = (await execa('losetup', ['-n', '-O', 'BACK-FILE', pv])).stdout.trim();
  await execa('losetup', ['-d', pv]);
  return async () => {
    // Another process may take the freed device meanwhile; the driver accepts only its own PV names.
    const r = await execa('losetup', [pv, file], { reject: false });
    if (r.exitCode !== 0) throw new Error(`could not put ${file} back on ${pv} (${r.stderr}): another process took the device`);
  };
}

describe('lvm volume and storage health (nodm)', () => {
  it('a missing PV makes the volumes on it inaccessible and the volume group degraded, until the disk is back', async () => {
    const v = await createStaged('health-pv', 256 * MiB);
    expect(await pvOf(v.id)).toBe(vg.pvs[1]);
    const before = await health(v.id, v.staging);
    expect(statuses(before.ctrl.health_statuses)).toEqual([]);
    expect(statuses(before.node.health_statuses)).toEqual([]);
    expect(before.listed).toBeUndefined();
    expect(await lvmStorage()).toEqual([]);

    const plugBack = await unplug(vg.pvs[1]);
    try {
      const sick = await health(v.id, v.staging);
      for (const hs of [sick.ctrl.health_statuses, sick.node.health_statuses, sick.listed?.health_statuses]) {
        expect(statuses(hs)).toEqual(['INACCESSIBLE/PhysicalVolumeMissing']);
        expect(hs![0].message).toContain(`${vg.name}/${v.id} is partial`);
      }
      const storage = await lvmStorage();
      expect(storage.map((s: Entry) => `${s.status}/${s.reason}`)).toEqual(['STORAGE_DEGRADED/PhysicalVolumeMissing']);
      expect(storage[0].message).toContain(`volume group ${vg.name} is missing 1 physical volume(s) (last seen as ${vg.pvs[1]})`);
    } finally {
      await plugBack();
    }
    const after = await health(v.id, v.staging);
    expect(statuses(after.ctrl.health_statuses)).toEqual([]);
    expect(statuses(after.node.health_statuses)).toEqual([]);
    expect(after.listed).toBeUndefined();
    expect(await lvmStorage()).toEqual([]);
    await c.Node.NodeUnstageVolume({ volume_id: v.id, staging_target_path: v.staging });
    await c.Controller.DeleteVolume({ volume_id: v.id });
  });

  it('every PV gone: the volume group is unreachable from this node', async () => {
    const plugBack: Array<() => Promise<void>> = [];
    try {
      for (const pv of vg.pvs) plugBack.push(await unplug(pv));
      const storage = await lvmStorage();
      expect(storage.map((s: Entry) => `${s.status}/${s.reason}`)).toEqual(['STORAGE_UNREACHABLE/VolumeGroupMissing']);
      expect(storage[0].message).toContain(`volume group ${vg.name} is not found`);
    } finally {
      for (const p of plugBack) await p();
    }
    expect(await lvmStorage()).toEqual([]);
  });

  it('a volume group nearly full is reported with its numbers, and clears when space is freed', async () => {
    const cap = (await c.Controller.GetCapacity({ parameters: params() }));
    const largest = Number(cap.maximum_volume_size?.value ?? cap.available_capacity);
    const v = await c.Controller.CreateVolume({ name: 'health-full', parameters: params(), capacity_range: { required_bytes: String(largest) }, volume_capabilities: [mountCap('ext4')] });
    try {
      const storage = await lvmStorage();
      expect(storage.map((s: Entry) => `${s.status}/${s.reason}`)).toEqual(['STORAGE_DEGRADED/VolumeGroupNearlyFull']);
      expect(storage[0].message).toMatch(new RegExp(`volume group ${vg.name} has \\d+ of \\d+ bytes free \\(under 10%\\)`));
    } finally {
      await c.Controller.DeleteVolume({ volume_id: v.volume.volume_id });
    }
    expect(await lvmStorage()).toEqual([]);
  });

  // Last: the removed LV's extents are free again while its filesystem stays mounted, and a
  // volume made after would be written over them.
  it('an LV removed behind a staged volume: the controller no longer knows it, the node that has it staged reports the data lost', async () => {
    const v = await createStaged('health-gone', 64 * MiB);
    await fs.writeFile(path.join(v.staging, 'data'), 'written before the LV went');
    await vg.lvm(['lvremove', '-y', `${vg.name}/${v.id}`]);

    // Its record lived in the LV's tags: for the controller the volume does not exist.
    const ctrl = await c.Controller.ControllerGetVolumeHealth({ volume_id: v.id }).catch((e) => e);
    expect(codeName(ctrl)).toBe('NOT_FOUND');
    expect((await c.Controller.ControllerListVolumeHealth({})).entries.map((e: { volume_id: string }) => e.volume_id)).not.toContain(v.id);
    const node = (await c.Node.NodeGetVolumeHealth({ volume_id: v.id, staging_target_path: v.staging })).volume_health;
    expect(statuses(node.health_statuses)).toEqual(['DATA_LOSS/LogicalVolumeMissing']);
    expect(node.health_statuses[0].message).toContain(`the logical volume ${v.id} is in none of the volume groups this driver serves (${vg.name})`);
    // A volume neither known nor staged here is still NOT_FOUND on the node.
    const other = await c.Node.NodeGetVolumeHealth({ volume_id: v.id.replace(/.$/, (x) => (x === '0' ? '1' : '0')) }).catch((e) => e);
    expect(codeName(other)).toBe('NOT_FOUND');
  });
});
