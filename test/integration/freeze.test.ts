// A driver killed while an application's filesystem is frozen for a snapshot must not
// leave it frozen: the freeze is journalled before fsfreeze runs and the next start thaws
// it. Real driver, real loop device, real ext4, real fsfreeze, real SIGKILL (a fail point
// inside the freeze window).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { execa } from 'execa';
import { DriverHarness, mountCap, MiB } from '../lib/driver-harness.js';
import { within } from '../lib/wait.js';
import { codeName } from '../../sidecars/common/csi-client.js';
import { pino } from 'pino';
import { LoopBackend } from '../../driver/backends/loop/index.js';
import { initFreezeJournal } from '../../driver/host/freeze.js';
import { mkfs } from '../../driver/host/fs.js';
import { BackendError, type VolumeRecord } from '../../driver/backends/backend.js';

let h: DriverHarness;
const writers: ChildProcess[] = [];
let staging = '';

beforeAll(async () => {
  // Only the first run is armed.
  h = await DriverHarness.start({ failpoints: 'loop.snapshot.frozen' });
});

afterAll(async () => {
  // Whatever happened, never leave the filesystem frozen (a hung writer would stay in D state).
  if (staging) await execa('fsfreeze', ['-u', staging], { reject: false });
  for (const w of writers) if (w.exitCode === null) await new Promise((r) => w.once('exit', r));
  await h?.cleanup();
});

function exited(p: ChildProcess, ms: number): Promise<number | null | 'running'> {
  if (p.exitCode !== null) return Promise.resolve(p.exitCode);
  return within(new Promise<number | null>((resolve) => p.once('exit', resolve)), ms, 'running' as const);
}

describe('a driver killed inside a freeze', () => {
  it('thaws the frozen filesystem when it starts again, so the application can write', async () => {
    const c = h.client!;
    const cap = mountCap('ext4');
    const vol = (await c.Controller.CreateVolume({ name: 'pvc-freeze', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume;
    staging = path.join(h.dir, 'staging', 'freeze');
    await fs.mkdir(staging, { recursive: true });
    await c.Node.NodeStageVolume({ volume_id: vol.volume_id, staging_target_path: staging, volume_capability: cap });
    await fs.writeFile(path.join(staging, 'before.txt'), 'written before the snapshot');

    // The fail point kills the driver (SIGKILL) with the filesystem frozen.
    const died = new Promise<NodeJS.Signals | null>((r) => h.proc!.once('exit', (_code, sig) => r(sig)));
    const snap = await c.Controller.CreateSnapshot({ name: 'snap-freeze', source_volume_id: vol.volume_id }).then(() => 'OK', (e) => codeName(e));
    expect(snap).toBe('UNAVAILABLE');
    expect(await died).toBe('SIGKILL');

    // Proof that the kill came inside the freeze: a writer hangs.
    const writer = spawn('dd', ['if=/dev/zero', `of=${path.join(staging, 'after.bin')}`, 'bs=4096', 'count=1', 'conv=fsync', 'status=none'], { stdio: 'ignore' });
    writers.push(writer);
    expect(await exited(writer, 1_000)).toBe('running');

    await h.stopProcess('SIGKILL');
    await h.startProcess();
    expect(await exited(writer, 15_000)).toBe(0);
    expect(await h.log()).toContain('thawed a filesystem a previous run left frozen');
    expect(await fs.readFile(path.join(staging, 'before.txt'), 'utf8')).toBe('written before the snapshot');
    // Nothing left in the journal once thawed.
    expect((await fs.readdir(path.join(h.stateDir, 'freezes'))).filter((n) => n.endsWith('.json'))).toEqual([]);

    // The retried snapshot succeeds on the restarted driver and the volume goes away cleanly.
    const c2 = h.client!;
    const s = (await c2.Controller.CreateSnapshot({ name: 'snap-freeze', source_volume_id: vol.volume_id })).snapshot;
    expect(s.ready_to_use).toBe(true);
    await c2.Node.NodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: staging });
    await c2.Controller.DeleteSnapshot({ snapshot_id: s.snapshot_id });
    await c2.Controller.DeleteVolume({ volume_id: vol.volume_id });
  }, 60_000);
});

describe('a snapshot without a point-in-time image', () => {
  it('is refused for a mounted loop volume when the data directory cannot reflink, instead of freezing it for a whole copy', async () => {
    // /tmp is ext4 here (no reflink), the case of a loop backend run without --data-pool-size.
    const dir = await fs.mkdtemp('/tmp/tscsi-noreflink-');
    const mnt = path.join(dir, 'mnt');
    const log = pino({ level: 'silent' });
    const b = new LoopBackend({ dataDir: path.join(dir, 'data'), log });
    let dev: string | undefined;
    try {
      await initFreezeJournal(path.join(dir, 'freezes'), log);
      await b.init();
      expect(b.reflink).toBe(false);
      const rec: VolumeRecord = {
        id: 'vol-loop-noreflink', name: 'pvc-noreflink', backend: 'loop', capacityBytes: BigInt(32 * MiB), accessType: 'mount', fsType: 'ext4',
        parameters: {}, mutableParameters: {}, topology: {}, published: {}, createdAt: new Date().toISOString(),
      };
      await b.createVolume(rec);
      dev = await b.attach(rec);
      await mkfs(dev, 'ext4');
      await fs.mkdir(mnt);
      await execa('mount', [dev, mnt]);
      const snap = { id: 'snap-loop-noreflink', name: 's', sourceVolumeId: rec.id, sizeBytes: rec.capacityBytes, createdAtSeconds: 1n, createdAtNanos: 0, groupSnapshotId: '', parameters: {} };
      const err = await b.createSnapshots([snap]).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(BackendError);
      expect((err as BackendError).reason).toBe('precondition');
      expect((err as BackendError).message).toMatch(/cannot reflink.*no point-in-time image.*--data-pool-size/);
      expect(await b.getSnapshot(snap.id)).toBeUndefined();
      await fs.writeFile(path.join(mnt, 'still-writable'), 'yes'); // not left frozen
      // Unmounted, the copy needs no freeze and is made.
      await execa('umount', [mnt]);
      expect((await b.createSnapshots([snap]))[0].id).toBe(snap.id);
    } finally {
      await execa('fsfreeze', ['-u', mnt], { reject: false });
      await execa('umount', [mnt], { reject: false });
      if (dev) await execa('losetup', ['-d', dev], { reject: false });
      await fs.rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
