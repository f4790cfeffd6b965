// The real driver on its own loop backend and XFS pool: an unreadable record does not
// break listing; start-up removes the temporary files a killed driver leaves; a graceful
// stop leaves nothing mounted or attached that blocks removing the data directory.
import { describe, it, expect, afterEach } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DriverHarness, MiB, mountCap, mountsUnder, loopDevicesUnder } from '../lib/driver-harness.js';
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

  it('start-up removes the temporary files a killed driver left, and nothing else', async () => {
    h = await DriverHarness.start();
    await h.stopProcess('SIGKILL');
    const vol = deriveId('vol', 'loop', 'swept');
    const group = deriveId('group', 'loop', 'swept');
    const leftovers = [
      path.join(h.stateDir, `${vol}.json.4242.1700000000000.tmp`),
      path.join(h.dataDir, '.reflink-probe-4242.tmp'),
      path.join(h.dataDir, '.reflink-probe-4242.tmp.clone.tmp'),
      path.join(h.dataDir, 'groups', `${group}.json.4242.1700000000000.tmp`),
    ];
    // Not the driver's temporaries: a start-up sweep must leave them alone.
    const strangers = [path.join(h.stateDir, 'notes.tmp'), path.join(h.dataDir, 'README.tmp'), path.join(h.dataDir, 'groups', 'keep.json')];
    for (const f of [...leftovers, ...strangers]) await fs.writeFile(f, 'x');
    await h.startProcess();
    for (const f of leftovers) expect(await fs.access(f).then(() => 'present', () => 'gone'), f).toBe('gone');
    for (const f of strangers) expect(await fs.access(f).then(() => 'present', () => 'gone'), f).toBe('present');
    expect(await h.log()).toContain('removed a temporary file a previous run left');
  });

  it('SIGTERM unmounts the data pool and detaches its loop device when no volume is attached', async () => {
    h = await DriverHarness.start();
    const c = h.client!;
    await c.Controller.CreateVolume({ name: 'kept', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [mountCap('ext4')] });
    expect(await mountsUnder(h.dir)).toContain(h.dataDir);
    expect(await h.stopProcess('SIGTERM')).toBe(0);
    expect(await mountsUnder(h.dir)).toEqual([]);
    expect(await loopDevicesUnder(h.dir)).toEqual([]);
    // The uninstall step: removing the data directory works (before: EBUSY, it was a mount point).
    await fs.rm(h.dataDir, { recursive: true });
    expect(await h.log()).toContain('data pool unmounted');
  });

  it('SIGTERM leaves the data pool mounted while a volume is staged, and logs which', async () => {
    h = await DriverHarness.start();
    const c = h.client!;
    const v = (await c.Controller.CreateVolume({ name: 'busy', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [mountCap('ext4')] })).volume;
    const staging = path.join(h.dir, 'staging', 'busy');
    await c.Node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: mountCap('ext4') });
    expect(await h.stopProcess('SIGTERM')).toBe(0);
    expect(await mountsUnder(h.dir)).toContain(h.dataDir);
    expect(await mountsUnder(h.dir)).toContain(staging);
    const log = await h.log();
    expect(log).toContain('leaving the data pool mounted');
    expect(log).toContain(v.volume_id);
    // The driver comes back and releases the volume as usual.
    await h.startProcess();
    await h.client!.Node.NodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: staging });
    await h.client!.Controller.DeleteVolume({ volume_id: v.volume_id });
  });
});
