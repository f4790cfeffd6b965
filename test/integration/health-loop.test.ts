// Volume and storage health on the loop backend, on real loop devices, filesystems and
// mounts: each case breaks a volume (or the data pool) the way it breaks in life, checks
// that the health RPCs name the cause, then recovers it the way an operator would and
// checks that the problem is gone. The data pool is small (512Mi) so one case can fill it.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { type DriverHarness, mountCap, blockCap, MiB } from '../lib/driver-harness.js';
import { driverPerFile } from '../lib/driver-per-file.js';
import type { CsiClient } from '../../sidecars/common/csi-client.js';

let h: DriverHarness;
let c: CsiClient;
driverPerFile((driver, client) => ([h, c] = [driver, client]), { driver: { dataPoolSize: '512Mi' } });

interface Placed {
  id: string;
  cap: object;
  staging: string;
  target: string;
}

async function createPlaced(name: string, cap: object, bytes: number, parameters: Record<string, string> = {}): Promise<Placed> {
  const vol = (await c.Controller.CreateVolume({ name, capacity_range: { required_bytes: String(bytes) }, volume_capabilities: [cap], parameters })).volume;
  const staging = path.join(h.dir, 'staging', name);
  await fs.mkdir(staging, { recursive: true });
  const isBlock = 'block' in cap;
  return { id: vol.volume_id, cap, staging, target: path.join(h.dir, 'pods', name, isBlock ? 'dev' : 'mount') };
}

async function up(v: Placed) {
  await c.Node.NodeStageVolume({ volume_id: v.id, staging_target_path: v.staging, volume_capability: v.cap });
  await c.Node.NodePublishVolume({ volume_id: v.id, staging_target_path: v.staging, target_path: v.target, volume_capability: v.cap });
}

async function down(v: Placed) {
  await c.Node.NodeUnpublishVolume({ volume_id: v.id, target_path: v.target });
  await c.Node.NodeUnstageVolume({ volume_id: v.id, staging_target_path: v.staging });
}

/** Every case's finally: whatever state the case left the volume in, it is gone afterwards. */
async function remove(v: Placed | undefined) {
  if (!v) return;
  const downErr = await down(v).then(
    () => undefined,
    (err: unknown) => err,
  );
  await c.Controller.DeleteVolume({ volume_id: v.id }).catch((err: unknown) => {
    throw new Error(`deleting ${v.id} after the case: ${String(err)}; taking it down first: ${String(downErr)}`);
  });
}

type Entry = { status: string; reason: string; message: string };

const controllerHealth = async (id: string): Promise<Entry[]> => (await c.Controller.ControllerGetVolumeHealth({ volume_id: id })).volume_health.health_statuses;
const nodeHealth = async (id: string, paths: { staging_target_path?: string; volume_publish_path?: string } = {}): Promise<Entry[]> =>
  (await c.Node.NodeGetVolumeHealth({ volume_id: id, ...paths })).volume_health.health_statuses;

/** ControllerListVolumeHealth over all its pages (one volume a page, so paging is exercised): volume ID -> entries. */
async function listedHealth(): Promise<Record<string, Entry[]>> {
  const out: Record<string, Entry[]> = {};
  let token = '';
  do {
    const r = await c.Controller.ControllerListVolumeHealth({ max_entries: 1, starting_token: token });
    for (const e of r.entries) out[e.volume_id] = e.health_statuses;
    token = r.next_token;
  } while (token);
  return out;
}

const entry = (status: string, reason: string, ...inMessage: Array<string | RegExp>) =>
  expect.objectContaining({ status, reason, message: expect.stringMatching(new RegExp(inMessage.map((m) => (typeof m === 'string' ? escape(m) : m.source)).join('[\\s\\S]*'))) });
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

async function expectHealthy(v: Placed) {
  expect(await controllerHealth(v.id)).toEqual([]);
  expect(await nodeHealth(v.id)).toEqual([]);
  expect((await listedHealth())[v.id]).toBeUndefined();
}

const image = (id: string) => path.join(h.dataDir, 'volumes', `${id}.img`);

describe('loop volume health', () => {
  it('a backing file deleted under a staged volume, then put back from a copy: DATA_LOSS until the volume is staged again', async () => {
    let v: Placed | undefined;
    try {
      v = await createPlaced('deleted', mountCap('ext4'), 64 * MiB);
      await up(v);
      await fs.writeFile(path.join(v.target, 'kept'), 'in the copy');
      await execa('sync', ['-f', path.join(v.target, 'kept')]);
      const copy = `${image(v.id)}.copy`;
      await execa('cp', ['--sparse=always', image(v.id), copy]);
      await expectHealthy(v);

      await fs.rm(image(v.id));
      const missing = entry('DATA_LOSS', 'BackingFileMissing', image(v.id), 'restore');
      expect(await controllerHealth(v.id)).toEqual([missing]);
      expect((await listedHealth())[v.id]).toEqual([missing]);
      const node = await nodeHealth(v.id);
      expect(node).toEqual(expect.arrayContaining([missing, entry('DATA_LOSS', 'LoopBackingFileDeleted', /\/dev\/loop\d+/, image(v.id), 'deleted while attached', 'copy out')]));
      expect(node).toHaveLength(2);

      // Put back (a restore from backup): the controller sees a sound file, the node that the pods still use the old one.
      await fs.rename(copy, image(v.id));
      expect(await controllerHealth(v.id)).toEqual([]);
      expect(await nodeHealth(v.id)).toEqual([entry('DATA_LOSS', 'LoopBackingFileReplaced', image(v.id), 'replaced while attached', 'restart the pods')]);

      await down(v);
      await up(v);
      await expectHealthy(v);
      expect(await fs.readFile(path.join(v.target, 'kept'), 'utf8')).toBe('in the copy');
    } finally {
      await remove(v);
    }
  });

  it('a backing file moved away under a staged volume: the node says the pods still run on a device it cannot place, not that it is detached', async () => {
    let v: Placed | undefined;
    try {
      v = await createPlaced('moved', mountCap('xfs'), 64 * MiB);
      await up(v);
      await expectHealthy(v);
      const moved = `${image(v.id)}.moved`;
      await fs.rename(image(v.id), moved);
      await fs.writeFile(path.join(v.target, 'still'), 'writable');

      expect(await controllerHealth(v.id)).toEqual([entry('DATA_LOSS', 'BackingFileMissing', image(v.id))]);
      const node = await nodeHealth(v.id);
      expect(node).toEqual(expect.arrayContaining([entry('DEGRADED', 'DeviceUnrecognised', v.staging, /\/dev\/loop\d+/, 'moved or renamed', 'keep working')]));
      expect(node.map((e) => e.reason)).not.toContain('DeviceDetached');

      await fs.rename(moved, image(v.id));
      await expectHealthy(v);
      expect(await fs.readFile(path.join(v.target, 'still'), 'utf8')).toBe('writable');
    } finally {
      await remove(v);
    }
  });

  it('a block volume whose loop device is detached behind the driver: INACCESSIBLE on the node until staged again', async () => {
    let v: Placed | undefined;
    try {
      v = await createPlaced('detached', blockCap(), 32 * MiB);
      await up(v);
      await expectHealthy(v);
      const dev = (await execa('losetup', ['-j', image(v.id), '-O', 'NAME', '-n'])).stdout.trim();
      expect(dev).toMatch(/^\/dev\/loop\d+$/);
      await execa('losetup', ['-d', dev]);

      expect(await controllerHealth(v.id)).toEqual([]);
      expect(await nodeHealth(v.id)).toEqual([entry('INACCESSIBLE', 'DeviceDetached', v.id, 'no longer attached', 'stage it again')]);
      expect(await nodeHealth(v.id, { volume_publish_path: v.target })).toEqual([entry('INACCESSIBLE', 'DeviceDetached', v.id)]);

      await down(v);
      await up(v);
      await expectHealthy(v);
    } finally {
      await remove(v);
    }
  });

  it('a publish mount unmounted behind the driver: INACCESSIBLE for that path until published again', async () => {
    let v: Placed | undefined;
    try {
      v = await createPlaced('unmounted', mountCap('ext4'), 32 * MiB);
      await up(v);
      await execa('umount', [v.target]);

      const gone = entry('INACCESSIBLE', 'PublishMountMissing', v.target, 'nothing is mounted there');
      expect(await nodeHealth(v.id)).toEqual([gone]);
      expect(await nodeHealth(v.id, { volume_publish_path: v.target })).toEqual([gone]);
      expect(await controllerHealth(v.id)).toEqual([]);

      await c.Node.NodePublishVolume({ volume_id: v.id, staging_target_path: v.staging, target_path: v.target, volume_capability: v.cap });
      await expectHealthy(v);
    } finally {
      await remove(v);
    }
  });

  it('an XFS volume shut down by the kernel: INACCESSIBLE until unstaged and staged again', async () => {
    let v: Placed | undefined;
    try {
      v = await createPlaced('xfs-shutdown', mountCap('xfs'), 320 * MiB);
      await up(v);
      await fs.writeFile(path.join(v.target, 'before'), 'x');
      // Committed before the shutdown, so it must be there after the log replays on the next mount.
      await execa('sync', ['-f', path.join(v.target, 'before')]);
      await execa('xfs_io', ['-x', '-c', 'shutdown', v.staging]);
      await expect(fs.readdir(v.target)).rejects.toThrow(/EIO/);

      const shut = entry('INACCESSIBLE', 'FilesystemShutDown', v.id, 'xfs on /dev/loop', 'EIO', 'restart the pods');
      expect(await nodeHealth(v.id)).toEqual([shut]);
      // Asked about the publication alone: the same filesystem, seen through the bind mount.
      expect(await nodeHealth(v.id, { volume_publish_path: v.target })).toEqual([shut]);
      expect(await controllerHealth(v.id)).toEqual([]);

      await down(v);
      await up(v);
      await expectHealthy(v);
      expect(await fs.readdir(v.target)).toContain('before');
    } finally {
      await remove(v);
    }
  });

  it('ext4 errors on a filesystem made with errors=remount-ro: read-only and errors reported, until e2fsck and a new stage', async () => {
    let v: Placed | undefined;
    try {
      v = await createPlaced('ext4-errors', mountCap('ext4'), 32 * MiB, { mkfsOptions: '-e remount-ro' });
      await up(v);
      await expectHealthy(v);
      const dev = (await execa('findmnt', ['-n', '-o', 'SOURCE', '--mountpoint', v.staging])).stdout.trim();
      // The kernel's own ext4_error() path, as a corrupt block found on read takes it.
      await fs.writeFile(`/sys/fs/ext4/${path.basename(dev)}/trigger_fs_error`, 'health-loop test\n');
      await expect(fs.writeFile(path.join(v.target, 'after'), 'x')).rejects.toThrow(/EROFS/);

      const node = await nodeHealth(v.id);
      expect(node).toEqual(
        expect.arrayContaining([
          entry('INACCESSIBLE', 'FilesystemReadOnly', v.id, `ext4 on ${dev}`, 'read-only', 'every write fails'),
          entry('DEGRADED', 'FilesystemErrors', `recorded 1 error(s) since its last fsck`, 'trigger_test_error', 'EFSCORRUPTED', 'e2fsck -f'),
        ]),
      );
      expect(node).toHaveLength(2);
      expect(await controllerHealth(v.id)).toEqual([]);

      // ext4 keeps its error count in the superblock: a new mount alone does not clear it, e2fsck does.
      await down(v);
      await up(v);
      expect(await nodeHealth(v.id)).toEqual([entry('DEGRADED', 'FilesystemErrors', 'recorded 1 error(s)')]);
      await down(v);
      const fsck = await execa('e2fsck', ['-f', '-y', image(v.id)], { reject: false });
      expect(fsck.exitCode, fsck.stdout + fsck.stderr).toBeLessThanOrEqual(1); // 0 clean, 1 fixed
      await up(v);
      await expectHealthy(v);
      await fs.writeFile(path.join(v.target, 'after'), 'x');
    } finally {
      await remove(v);
    }
  });
});

describe('loop storage health', () => {
  const storageHealth = async (): Promise<Entry[]> => (await c.Node.NodeGetStorageHealth({})).backend_health;

  it('a data pool filled by a snapshot holding blocks the volume rewrote: STORAGE_DEGRADED with the numbers, until the snapshot is deleted', async () => {
    let v: Placed | undefined;
    let snapshotId: string | undefined;
    try {
      expect(await storageHealth()).toEqual([]);
      v = await createPlaced('filler', mountCap('ext4'), 256 * MiB);
      await up(v);
      const fill = ['if=/dev/zero', `of=${path.join(v.target, 'data')}`, 'bs=1M', 'count=200', 'conv=fsync', 'status=none'];
      await execa('dd', fill);
      expect(await storageHealth()).toEqual([]);
      // The snapshot shares the volume's blocks (reflink); rewriting them makes the pool keep both.
      snapshotId = (await c.Controller.CreateSnapshot({ name: 'filler-snap', source_volume_id: v.id })).snapshot.snapshot_id;
      await execa('dd', [...fill, 'conv=notrunc,fsync']);

      expect(await storageHealth()).toEqual([entry('STORAGE_DEGRADED', 'DataPoolAlmostFull', `loop: the data directory ${h.dataDir} is`, /9\d% full \(\d+ MiB of \d+ MiB used, \d+ MiB free/, 'snapshots')]);

      await c.Controller.DeleteSnapshot({ snapshot_id: snapshotId });
      snapshotId = undefined;
      expect(await storageHealth()).toEqual([]);
    } finally {
      if (snapshotId) await c.Controller.DeleteSnapshot({ snapshot_id: snapshotId });
      await remove(v);
    }
  });

  it('a data pool remounted read-only: STORAGE_UNREACHABLE until read-write again', async () => {
    try {
      await execa('mount', ['-o', 'remount,ro', h.dataDir]);
      expect(await storageHealth()).toEqual([entry('STORAGE_UNREACHABLE', 'DataDirReadOnly', `loop: the data directory ${h.dataDir}`, 'read-only', 'remount it read-write')]);
    } finally {
      await execa('mount', ['-o', 'remount,rw', h.dataDir]);
    }
    expect(await storageHealth()).toEqual([]);
  });
});
