// The LVM backend in device-mapper mode on a real kernel (inside test/guest/run): what the
// host tier cannot run at all. A volume is activated for NodeStage and deactivated by
// NodeUnstage, as a user's node does, and the device it stages on is the one the kernel
// shows. The VG's name has a '-' in it: device-mapper names double it (vg--name-lv).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { DriverHarness, mountCap, blockCap, MiB } from '../lib/driver-harness.js';
import { TestVg } from '../lib/lvm-vg.js';
import type { CsiClient } from '../../sidecars/common/csi-client.js';

let h: DriverHarness;
let vg: TestVg;
let c: CsiClient;

beforeAll(async () => {
  if (!/\bdevice-mapper\b/.test(await fs.readFile('/proc/misc', 'utf8'))) throw new Error('no device-mapper: run this file in the guest (test/guest/run)');
  vg = await TestVg.create(await fs.mkdtemp('/tmp/tscsi-lvm-dm-'), 2, undefined, { deviceMapper: true });
  await vg.lvm(['lvcreate', '-q', '-y', '--type', 'thin-pool', '-L', '512M', '--zero', 'y', '-n', 'pool', vg.name]);
  h = await DriverHarness.start({ driver: { lvmVolumeGroups: vg.name, lvmDevices: vg.pv, lvmMode: 'dm', defaultBackend: 'lvm' } });
  c = h.client!;
});

afterAll(async () => {
  await h?.cleanup();
  await vg?.remove();
});

/** The LV's attributes (lv_attr), straight from lvm2: position 4 is 'a' while it is active. */
async function attr(lv: string): Promise<string> {
  const r = await vg.lvm(['lvs', '--noheadings', '-o', 'lv_attr', `${vg.name}/${lv}`]);
  return r.stdout.trim();
}

/** What the kernel calls an LV's device-mapper device: /dev/mapper/<vg>-<lv>, '-' doubled inside each. */
const mapperName = (lv: string) => `/dev/mapper/${vg.name.replace(/-/g, '--')}-${lv.replace(/-/g, '--')}`;

/** The device number of the block device mounted at p (findmnt's MAJ:MIN), and of the mapper node. */
async function mountedDevno(p: string): Promise<string> {
  return (await execa('findmnt', ['-n', '-o', 'MAJ:MIN', '--mountpoint', p])).stdout.trim();
}
async function devnoOf(dev: string): Promise<string> {
  return (await execa('stat', ['-L', '-c', '%Hr:%Lr', dev])).stdout.trim();
}

for (const type of ['linear', 'thin'] as const) {
  describe(`lvm ${type} volume in device-mapper mode`, () => {
    it('stages on its activated device-mapper device, keeps its data across unstage and stage, and deactivates on unstage', async () => {
      const params = { ...vg.params(), type, ...(type === 'thin' ? { thinPool: 'pool' } : {}) };
      const cap = mountCap('ext4');
      const v = (await c.Controller.CreateVolume({ name: `pvc-dm-${type}`, parameters: params, capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume;
      const id = v.volume_id;
      expect((await attr(id))[4]).not.toBe('a');
      const staging = path.join(h.dir, 'staging', type);
      await fs.mkdir(staging);
      await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
      expect((await attr(id))[4]).toBe('a');
      expect(await mountedDevno(staging)).toBe(await devnoOf(mapperName(id)));
      await fs.writeFile(path.join(staging, 'kept'), `${type} bytes`);

      await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
      expect(await mountedDevno(staging).catch(() => '')).toBe('');
      expect((await attr(id))[4]).not.toBe('a');
      await expect(fs.stat(mapperName(id))).rejects.toThrow(/ENOENT/);

      // A retry of the unstage (kubelet repeats it) finds nothing to do.
      await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
      await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
      expect(await fs.readFile(path.join(staging, 'kept'), 'utf8')).toBe(`${type} bytes`);
      await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
      await c.Controller.DeleteVolume({ volume_id: id });
      expect((await vg.lvs()).has(id)).toBe(false);
    });

    it('stages a block volume and publishes the device the kernel shows', async () => {
      const params = { ...vg.params(), type, ...(type === 'thin' ? { thinPool: 'pool' } : {}) };
      const cap = blockCap();
      const v = (await c.Controller.CreateVolume({ name: `pvc-dm-${type}-block`, parameters: params, capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume;
      const id = v.volume_id;
      const staging = path.join(h.dir, 'staging', `${type}-block`);
      const target = path.join(h.dir, 'pods', `${type}-block`);
      await fs.mkdir(staging);
      await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
      await c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap });
      expect(await devnoOf(target)).toBe(await devnoOf(mapperName(id)));
      await c.Node.NodeUnpublishVolume({ volume_id: id, target_path: target });
      await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
      expect((await attr(id))[4]).not.toBe('a');
      await c.Controller.DeleteVolume({ volume_id: id });
      expect((await vg.lvs()).has(id)).toBe(false);
    });
  });
}
