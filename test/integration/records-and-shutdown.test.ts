// The real driver on its own loop backend and XFS pool: an unreadable record does not
// break listing; start-up removes the temporary files a killed driver leaves; a graceful
// stop leaves nothing mounted or attached that blocks removing the data directory.
import { describe, it, expect, afterEach } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DriverHarness, MiB, mountCap } from '../lib/driver-harness.js';
import { deriveId } from '../../driver/ids.js';

describe('records and shutdown (real driver, loop backend)', () => {
  let h: DriverHarness | undefined;
  afterEach(async () => {
    await h?.cleanup();
    h = undefined;
  });

  it('ListVolumes and ListSnapshots skip and log a corrupt record instead of failing', async () => {
    h = await DriverHarness.start();
    const c = h.client!;
    const v = (await c.Controller.CreateVolume({ name: 'good', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [mountCap('ext4')] })).volume;
    const s = (await c.Controller.CreateSnapshot({ name: 'good-snap', source_volume_id: v.volume_id })).snapshot;
    const badVol = deriveId('vol', 'loop', 'corrupt');
    const badSnap = deriveId('snap', 'loop', 'corrupt');
    await fs.writeFile(path.join(h.dataDir, 'volumes', `${badVol}.json`), '{"id": "half a rec');
    await fs.writeFile(path.join(h.dataDir, 'snapshots', `${badSnap}.json`), '\u0000\u0000garbage');

    const vols = await c.Controller.ListVolumes({});
    expect(vols.entries.map((e: { volume: { volume_id: string } }) => e.volume.volume_id)).toEqual([v.volume_id]);
    const snaps = await c.Controller.ListSnapshots({});
    expect(snaps.entries.map((e: { snapshot: { snapshot_id: string } }) => e.snapshot.snapshot_id)).toEqual([s.snapshot_id]);
    const log = await h.log();
    expect(log).toContain(`${badVol}.json`);
    expect(log).toContain(`${badSnap}.json`);
    expect(log).toContain('skipped an unreadable record');

    await c.Controller.DeleteSnapshot({ snapshot_id: s.snapshot_id });
    await c.Controller.DeleteVolume({ volume_id: v.volume_id });
  });
});
