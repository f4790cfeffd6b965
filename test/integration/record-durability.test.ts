// A power cut in the middle of a burst of CreateVolume and DeleteVolume calls. Concurrent
// record writes share directory syncs (group commit: a sync that begins after a writer's
// rename answers for every writer waiting on it); this proves that a shared sync still makes
// every answered call durable. The cut is real: the XFS pool under the loop backend is shut
// down without flushing its log (xfs_io shutdown, no -f), so only what a sync forced into
// the log survives, as after a power loss; the driver is stopped (SIGSTOP) before and
// killed after it. After the pool is
// remounted (XFS replays its log) and the driver restarted, every create it answered is
// there with its full-size image and every delete it answered is gone; the calls it did
// not answer are retried to completion, as a CO would.
import { describe, it, expect, afterEach } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { DriverHarness, MiB, mountCap, loopDevicesUnder } from '../lib/driver-harness.js';

const SIZE = 64 * MiB;
// 64 calls at once: the driver's default --max-concurrent-rpcs, so none is refused.
const CREATES = 56;
const DELETES = 8;
/**
 * Where the cut comes: after a few answers, with the rest of the burst in flight (their
 * syncs, which would also carry the earlier renames to disk, never run), and right after
 * the last answer (nothing after it syncs anything).
 */
const CUTS = [
  { after: 4, what: 'mid-batch' },
  { after: CREATES + DELETES, what: 'right after the last answer' },
];

interface Call {
  kind: 'create' | 'delete';
  name: string;
  volumeId?: string;
  answered: boolean;
}

describe('record durability across a power cut mid-batch (real driver, XFS pool)', () => {
  let h: DriverHarness | undefined;
  afterEach(async () => {
    await h?.cleanup();
    h = undefined;
  });

  it.each(CUTS)('cut $what: every answered create and delete survives; unanswered ones complete on retry', async (cutAt) => {
    h = await DriverHarness.start();
    const c = () => h!.client!;
    const create = (name: string) =>
      c().Controller.CreateVolume({ name, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [mountCap('ext4')] });
    const doomed: Call[] = [];
    for (let i = 0; i < DELETES; i++) doomed.push({ kind: 'delete', name: `old-${i}`, volumeId: (await create(`old-${i}`)).volume.volume_id, answered: false });
    const fresh: Call[] = Array.from({ length: CREATES }, (_, i) => ({ kind: 'create', name: `new-${i}`, answered: false }));

    let answered = 0;
    let cut!: () => void;
    const enoughAnswered = new Promise<void>((r) => (cut = r));
    const mark = (call: Call) => {
      call.answered = true;
      if (++answered === cutAt.after) cut();
    };
    const burst = [
      ...fresh.map((call) => create(call.name).then((r) => ((call.volumeId = r.volume.volume_id), mark(call)))),
      ...doomed.map((call) => c().Controller.DeleteVolume({ volume_id: call.volumeId }).then(() => mark(call))),
    ].map((p) => p.catch(() => undefined)); // failed or cut off: unanswered, retried below
    await enoughAnswered;
    // Stopped first, so nothing more is answered (or synced) while the cut is made.
    process.kill(h.proc!.pid!, 'SIGSTOP');
    await execa('xfs_io', ['-x', '-c', 'shutdown', h.dataDir]);
    await h.stopProcess('SIGKILL');
    await Promise.allSettled(burst);
    const inFlight = [...fresh, ...doomed].filter((x) => !x.answered).length;
    if (cutAt.after < CREATES + DELETES) expect(inFlight, 'calls still in flight at the cut').toBeGreaterThan(0);

    // The pool's own loop device goes too, so the remount reads only what reached the image.
    await execa('umount', [h.dataDir]);
    for (const d of await loopDevicesUnder(h.dir)) await execa('losetup', ['-d', d]);
    await h.startProcess();

    const listed = new Map<string, string>(
      ((await c().Controller.ListVolumes({})).entries as Array<{ volume: { volume_id: string; capacity_bytes: string } }>).map((e) => [e.volume.volume_id, e.volume.capacity_bytes]),
    );
    for (const call of fresh.filter((x) => x.answered)) {
      expect(listed.get(call.volumeId!), `answered create ${call.name}`).toBe(String(SIZE));
      const st = await fs.stat(path.join(h.dataDir, 'volumes', `${call.volumeId}.img`));
      expect(st.size, `image of ${call.name}`).toBe(SIZE);
    }
    for (const call of doomed.filter((x) => x.answered)) expect(listed.has(call.volumeId!), `answered delete ${call.name}`).toBe(false);

    // What was in flight completes on retry, and nothing else is left.
    for (const call of fresh) {
      const again = (await create(call.name)).volume;
      expect(again.capacity_bytes).toBe(String(SIZE));
      await c().Controller.DeleteVolume({ volume_id: again.volume_id });
    }
    for (const call of doomed) await c().Controller.DeleteVolume({ volume_id: call.volumeId });
    expect((await c().Controller.ListVolumes({})).entries).toEqual([]);
    expect((await fs.readdir(path.join(h.dataDir, 'volumes'))).sort()).toEqual([]);
  }, 120_000);
});
