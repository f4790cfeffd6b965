// A driver that exits during start-up after its loop backend mounted the XFS pool (here: an
// --rbd-config that does not exist, read after the pool is up): DriverHarness.start throws,
// and nothing of that run is left on the host (pool mount, loop device, directory).
import { describe, it, expect } from 'vitest';
import { existsSync } from 'node:fs';
import { DriverHarness, loopDevicesUnder, mountsUnder } from '../lib/driver-harness.js';

describe('DriverHarness.start when the driver exits during start-up', () => {
  it('leaves no mount, loop device or directory behind', async () => {
    const err = await DriverHarness.start({ driver: { rbdConfig: '/nonexistent/tscsi-rbd.json', defaultBackend: 'loop' } }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/^driver exited: /);
    // The driver got as far as mounting the pool: the log it left says where.
    const dataDir = /"dataDir":"([^"]+)"[^\n]*xfs pool for the loop backend/.exec(err!.message)?.[1];
    expect(dataDir).toMatch(/\/tscsi-it-[^/]+\/data$/);
    const dir = dataDir!.replace(/\/data$/, '');
    expect(await mountsUnder(dir)).toEqual([]);
    expect(await loopDevicesUnder(dir)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
  });
});
