// One driver for all the cases of a test file: started before the first, removed (mounts,
// loop devices, directory) after the last, whatever failed.
import { beforeAll, afterAll } from 'vitest';
import { DriverHarness } from './driver-harness.js';
import type { CsiClient } from '../../sidecars/common/csi-client.js';

/** `started` hands the file its driver and client (kept in the file's own variables). */
export function driverPerFile(started: (h: DriverHarness, c: CsiClient) => void, opts?: Parameters<typeof DriverHarness.start>[0]): void {
  let h: DriverHarness | undefined;
  beforeAll(async () => {
    h = await DriverHarness.start(opts);
    started(h, h.client!);
  });
  afterAll(async () => {
    await h?.cleanup();
  });
}
