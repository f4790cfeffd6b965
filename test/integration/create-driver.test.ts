// The driver builds a backend only where it is used (#12 item 1): a controller-only driver
// given an LVM volume group serves that and nothing else; no loop backend appears on the
// host's default data directory, and it has no node service.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import { DriverHarness } from '../lib/driver-harness.js';
import { TestVg } from '../lib/lvm-vg.js';
import { codeName } from '../../sidecars/common/csi-client.js';

let h: DriverHarness | undefined;
let vg: TestVg | undefined;

beforeAll(async () => {
  vg = await TestVg.create(await fs.mkdtemp('/tmp/tscsi-create-'), 1);
  h = await DriverHarness.start({ loop: false, driver: { mode: 'controller', lvmVolumeGroups: vg.name, lvmDevices: vg.pv } });
});

afterAll(async () => {
  await h?.cleanup();
  await vg?.destroy();
  if (vg) await fs.rm(vg.dir, { recursive: true, force: true });
});

describe('a controller-only driver', () => {
  it('serves the backend it is given, with it as the default', async () => {
    const c = h!.client!;
    const lvm = await c.Controller.GetCapacity({ parameters: { backend: 'lvm', volumeGroup: vg!.name } });
    expect(BigInt(lvm.available_capacity)).toBeGreaterThan(0n);
    const byDefault = await c.Controller.GetCapacity({ parameters: { volumeGroup: vg!.name } });
    expect(byDefault.available_capacity).toBe(lvm.available_capacity);
  });

  it('has no loop backend: a loop request is refused as not enabled', async () => {
    const err = await h!.client!.Controller.GetCapacity({ parameters: { backend: 'loop' } }).then(() => undefined, (e: Error) => e);
    expect(codeName(err)).toBe('INVALID_ARGUMENT');
    expect(err?.message).toMatch(/backend "loop" is not enabled on this driver; enabled: lvm/);
    expect(await h!.log()).not.toMatch(/loop backend ready/);
  });

  it('has no node service', async () => {
    const err = await h!.client!.Node.NodeGetInfo({}).then(() => undefined, (e: unknown) => e);
    expect(codeName(err)).toBe('UNIMPLEMENTED');
  });
});
