// LVM system IDs (lvmsystemid(7)), for disks several nodes see: a VG made with a node's
// system ID is served by the driver started with that ID (--lvm-system-id), found by its
// start-up scan; a driver with another ID, or none, refuses to start and says whose VG it is
// and which flag to set (lvm alone would only call the VG "not found"). #15
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import { DriverHarness, mountCap } from '../lib/driver-harness.js';
import { TestVg } from '../lib/lvm-vg.js';

const ID = 'node-a';
let vg: TestVg | undefined;

beforeAll(async () => {
  vg = await TestVg.create(await fs.mkdtemp('/tmp/tscsi-lvm-sysid-'), 0, [128], { systemId: ID });
});

afterAll(async () => {
  await vg?.remove();
});

/** A controller-only driver on the VG, no --lvm-devices: its PVs come from the start-up scan. */
const start = (lvmSystemId?: string) =>
  DriverHarness.start({ loop: false, driver: { mode: 'controller', defaultBackend: 'lvm', lvmVolumeGroups: vg!.name, ...(lvmSystemId ? { lvmSystemId } : {}) } });

describe('lvm system IDs (--lvm-system-id)', () => {
  it('the driver with the VG\'s system ID finds it by its scan and makes, reports and removes volumes in it', async () => {
    const h = await start(ID);
    try {
      const c = h.client!.Controller;
      const v = await c.CreateVolume({ name: 'pvc-sysid', capacity_range: { required_bytes: String(16 << 20) }, volume_capabilities: [mountCap('ext4')] });
      const id = v.volume.volume_id as string;
      expect([...(await vg!.lvs()).keys()]).toEqual([id]);
      expect(BigInt((await c.GetCapacity({ parameters: {} })).available_capacity)).toBe(await vg!.freeBytes());
      await c.DeleteVolume({ volume_id: id });
      expect([...(await vg!.lvs()).keys()]).toEqual([]);
    } finally {
      await h.cleanup();
    }
  });

  it.each([
    [undefined, 'none'],
    ['node-b', '"node-b"'],
  ])('a driver with system ID %s refuses to start, naming the VG\'s system ID and the flag', async (other, shown) => {
    const err = await start(other).then(
      async (h) => {
        await h.cleanup();
        return undefined;
      },
      (e: Error) => e,
    );
    expect(err?.message).toContain(
      `volume group(s) of --lvm-volume-groups belong to another host: ${vg!.name} has lvm system ID "${ID}", and this driver's is ${shown} (--lvm-system-id): ` +
        'serve each VG from the node whose ID it carries (start that node\'s driver with --lvm-system-id=<that ID>), or change the VG\'s (vgchange --systemid) if this node owns it now',
    );
  });
});
