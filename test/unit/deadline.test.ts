// The caller's deadline and cancellation reach the child process an RPC waits for: the
// child is killed, the caller's code says why, and the volume's lock is free for the retry.
// Real gRPC server, real services, real child processes; only the backend is a fake.
import { describe, it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import fs from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { loadCsi } from '../../proto/load.js';
import { run } from '../../driver/host/exec.js';
import { codeName } from '../../sidecars/common/csi-client.js';
import { startServices, type ServiceHarness } from './service-harness.js';
import path from 'node:path';
import type { VolumeRecord } from '../../driver/backends/backend.js';
import { deriveId } from '../../driver/ids.js';
import { fakeVolume } from './fake-backend.js';
import { waitFor as waitUntil } from '../lib/wait.js';

const mountCap = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const VOL = deriveId('vol', 'fake', 'grown');
const volume = (): VolumeRecord => fakeVolume({ id: VOL, name: 'grown' });
// ControllerExpandVolume is served in the call (short work); CreateVolume runs in the background.
const expand = (h: ServiceHarness, deadlineMs?: number) =>
  h.client.Controller.ControllerExpandVolume({ volume_id: VOL, capacity_range: { required_bytes: String(2n << 30n) } }, deadlineMs);

/** PIDs of processes whose command line is exactly argv (a unique sleep time marks ours). */
async function pidsOf(argv: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const n of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    const cmd = await fs.readFile(`/proc/${n}/cmdline`, 'utf8').catch(() => '');
    if (cmd === argv.join('\0') + '\0') out.push(Number(n));
  }
  return out;
}

// Child processes come and go within milliseconds: ask often.
const waitFor = <T>(what: string, fn: () => Promise<T | undefined>, ms = 5_000) => waitUntil(what, fn, { timeoutMs: ms, everyMs: 20 });

const alive = (pid: number) => fs.access(`/proc/${pid}`).then(() => true, () => false);

describe('deadline and cancellation reach the child process', () => {
  let h: ServiceHarness;
  beforeAll(async () => {
    h = await startServices();
    await h.client.Identity.GetPluginInfo({}); // the first call pays for connecting
  });
  afterAll(async () => {
    await h?.close();
  });
  beforeEach(() => {
    h.backend.hook = undefined;
    h.backend.vols.clear();
    h.backend.vols.set(VOL, volume());
  });

  it('a short client deadline kills the long child, answers DEADLINE_EXCEEDED and frees the lock', async () => {
    const argv = ['sleep', `${30 + (process.pid % 1000) / 1000}`];
    h.backend.hook = async (m) => {
      if (m === 'expandVolume') await run(argv[0], argv.slice(1));
    };
    const started = Date.now();
    const call = expand(h, 2_500).catch((e: unknown) => e);
    const pid = await waitFor('the child to start', async () => (await pidsOf(argv))[0]);
    const err = await call;
    expect(codeName(err)).toBe('DEADLINE_EXCEEDED');
    expect(Date.now() - started).toBeLessThan(8_000);
    // Gone soon after the deadline, not after its 30 s.
    await waitFor('the child to be killed', async () => ((await alive(pid)) ? undefined : true), 4_000);
    // The lock is released: the retry runs (and succeeds) instead of ABORTED.
    h.backend.hook = undefined;
    const res = await expand(h, 5_000);
    expect(res.capacity_bytes).toBe(String(2n << 30n));
    expect(h.ctx.locks.size).toBe(0);
  });

  it('a cancelled call kills its child and frees the lock', async () => {
    const argv = ['sleep', `${40 + (process.pid % 1000) / 1000}`];
    h.backend.hook = async (m) => {
      if (m === 'expandVolume') await run(argv[0], argv.slice(1));
    };
    const csi = loadCsi().csi.v1;
    const Ctor = csi.Controller as unknown as grpc.ServiceClientConstructor;
    const raw = new Ctor(`unix://${path.join(h.dir, 'csi.sock')}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'localhost' });
    try {
      let settled: unknown;
      const c = (raw as unknown as Record<string, (r: object, cb: (e: unknown) => void) => grpc.ClientUnaryCall>).ControllerExpandVolume.call(
        raw,
        { volume_id: VOL, capacity_range: { required_bytes: String(2n << 30n) } },
        (e) => (settled = e),
      );
      const pid = await waitFor('the child to start', async () => (await pidsOf(argv))[0]);
      c.cancel();
      await waitFor('the child to be killed', async () => ((await alive(pid)) ? undefined : true), 4_000);
      expect(codeName(settled)).toBe('CANCELLED');
      await waitFor('the lock to be released', async () => (h.ctx.locks.size === 0 ? true : undefined), 2_000);
    } finally {
      raw.close();
    }
  });

  it('a command run after the caller gave up (an undo step) still runs, within a short grace', async () => {
    const marker = path.join(h.dir, 'undo-ran');
    h.backend.hook = async (m) => {
      if (m !== 'expandVolume') return;
      try {
        await run('sleep', [`${50 + (process.pid % 1000) / 1000}`]);
      } finally {
        await run('touch', [marker]);
      }
    };
    const err = await expand(h, 500).catch((e: unknown) => e);
    expect(codeName(err)).toBe('DEADLINE_EXCEEDED');
    await waitFor('the undo step', () => fs.access(marker).then(() => true, () => undefined), 4_000);
  });

  it('long work (CreateVolume) outlives the caller: the retry gets ABORTED while it runs, then the finished volume', async () => {
    const argv = ['sleep', `2.${process.pid % 1000}`];
    let creates = 0;
    h.backend.hook = async (m) => {
      if (m !== 'createVolume') return;
      creates++;
      await run(argv[0], argv.slice(1));
    };
    const req = { name: 'big-clone', volume_capabilities: [mountCap] };
    const first = h.client.Controller.CreateVolume(req, 800).catch((e: unknown) => e);
    const pid = await waitFor('the copy to start', async () => (await pidsOf(argv))[0]);
    expect(codeName(await first)).toBe('DEADLINE_EXCEEDED');
    expect(await alive(pid)).toBe(true);
    const retry = await h.client.Controller.CreateVolume(req, 5_000).catch((e: unknown) => e);
    expect(codeName(retry)).toBe('ABORTED');
    expect((retry as Error).message).toContain('in progress');
    await waitFor('the copy to finish', async () => ((await alive(pid)) ? undefined : true), 6_000);
    await waitFor('the background work to end', async () => (h.ctx.background.size === 0 ? true : undefined), 2_000);
    const done = await h.client.Controller.CreateVolume(req, 5_000);
    expect(done.volume.volume_id).toBe(deriveId('vol', 'fake', 'big-clone'));
    expect(creates).toBe(1);
    expect(h.ctx.locks.size).toBe(0);
  });

  it('a group snapshot (member copies) outlives the caller too: a short-deadline retry gets ABORTED without waiting for the lock, a later one the finished group', async () => {
    const argv = ['sleep', `2.${(process.pid + 500) % 1000}`];
    let cuts = 0;
    h.backend.hook = async (m) => {
      if (m !== 'createSnapshots') return;
      cuts++;
      await run(argv[0], argv.slice(1));
    };
    const req = { name: 'big-group', source_volume_ids: [VOL] };
    const first = h.client.GroupController.CreateVolumeGroupSnapshot(req, 800).catch((e: unknown) => e);
    const pid = await waitFor('the member copy to start', async () => (await pidsOf(argv))[0]);
    expect(codeName(await first)).toBe('DEADLINE_EXCEEDED');
    // The copy was not killed with the first caller: it runs on in the background.
    expect(await alive(pid)).toBe(true);
    // A retry whose deadline is shorter than the copy answers at once instead of queueing on the lock.
    const retry = await h.client.GroupController.CreateVolumeGroupSnapshot(req, 1_000).catch((e: unknown) => e);
    expect(codeName(retry)).toBe('ABORTED');
    expect((retry as Error).message).toContain('in progress');
    await waitFor('the copy to finish', async () => ((await alive(pid)) ? undefined : true), 6_000);
    await waitFor('the background work to end', async () => (h.ctx.background.size === 0 ? true : undefined), 2_000);
    const done = await h.client.GroupController.CreateVolumeGroupSnapshot(req, 5_000);
    expect(done.group_snapshot.group_snapshot_id).toBe(deriveId('group', 'fake', 'big-group'));
    expect(done.group_snapshot.snapshots.map((s: { source_volume_id: string }) => s.source_volume_id)).toEqual([VOL]);
    expect(cuts).toBe(1);
    expect(h.ctx.locks.size).toBe(0);
  });
});
