// Volume and storage health of the RBD backend on one real Ceph cluster (test/lib/ceph: one
// mon, one OSD, one mgr, cephx) with the fuse mapper (rbd-fuse + a loop device; these VMs
// have neither krbd nor nbd). Volumes are made abnormal the way it happens in life: the
// rbd-fuse helper of a staged volume dies, the image behind a staged volume is removed, the
// monitor stops answering, the pool fills up to its quota. The health RPCs must say what is
// wrong, then nothing once it is put right. One cluster for the whole file (Ceph is heavy here).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { execa } from 'execa';
import { adminRbd, type CephEnv } from '../lib/ceph/cluster.js';
import { RbdDriverRun } from '../lib/rbd-driver.js';
import { DriverHarness, mountCap, MiB } from '../lib/driver-harness.js';
import { waitFor } from '../lib/wait.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';
import { RbdBackend, parseConfig, volumeImage } from '../../driver/backends/rbd/index.js';
import type { VolumeRecord } from '../../driver/backends/backend.js';

let root: string;
let ceph: CephEnv;
let h: DriverHarness;
let c: CsiClient;
let configJson: Record<string, unknown>;

const run = new RbdDriverRun('tscsi-health-rbd-', 'hc');

beforeAll(async () => {
  h = await run.start();
  ({ root, ceph, config: configJson } = run);
  c = h.client!;
}, 600_000);

afterAll(() => run.stop(), 180_000);

interface Entry {
  status: string;
  reason: string;
  message: string;
}
const statuses = (hs: Entry[] | undefined) => (hs ?? []).map((x) => `${x.status}/${x.reason}`);
const params = () => ({ backend: 'rbd', clusterID: 'hc', pool: ceph.pool });

async function createStaged(name: string): Promise<{ id: string; staging: string }> {
  const cap = mountCap('ext4');
  const id = (await c.Controller.CreateVolume({ name, parameters: params(), capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume.volume_id;
  const staging = path.join(h.dir, 'staging', name);
  await fs.mkdir(staging, { recursive: true });
  await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
  return { id, staging };
}

async function rbdStorage(): Promise<Entry[]> {
  return ((await c.Node.NodeGetStorageHealth({})).backend_health ?? []).filter((b: Entry) => b.message.startsWith('rbd: '));
}

async function nodeHealth(id: string, staging: string): Promise<Entry[]> {
  return (await c.Node.NodeGetVolumeHealth({ volume_id: id, staging_target_path: staging })).volume_health.health_statuses;
}

async function ctrlHealth(id: string): Promise<Entry[]> {
  return (await c.Controller.ControllerGetVolumeHealth({ volume_id: id })).volume_health.health_statuses;
}

/** The fuse mapper's record of an image's mapping. */
async function mappingFile(image: string): Promise<string> {
  // reject: false: a dead helper's mount makes find complain about it, and exit 1.
  const files = String((await execa('find', [h.stateDir, '-name', 'mapping.json'], { reject: false })).stdout).split('\n').filter(Boolean);
  for (const f of files) {
    const m = JSON.parse(await fs.readFile(f, 'utf8')) as { image: string };
    if (m.image === image) return f;
  }
  throw new Error(`no fuse mapping of ${image} under ${h.stateDir}`);
}

/** The pid of the rbd-fuse helper serving an image, from the mapper's record. */
async function fusePid(image: string): Promise<number> {
  return (JSON.parse(await fs.readFile(await mappingFile(image), 'utf8')) as { pid: number }).pid;
}

const dead = async (pid: number) => !(await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')).match(/\) [^Z]/);

describe('rbd volume and storage health (fuse mapper)', () => {
  it('a healthy staged volume and cluster report nothing', async () => {
    const v = await createStaged('health-ok');
    expect(statuses(await ctrlHealth(v.id))).toEqual([]);
    expect(statuses(await nodeHealth(v.id, v.staging))).toEqual([]);
    expect((await c.Controller.ControllerListVolumeHealth({})).entries).toEqual([]);
    expect(await rbdStorage()).toEqual([]);
    await c.Node.NodeUnstageVolume({ volume_id: v.id, staging_target_path: v.staging });
    await c.Controller.DeleteVolume({ volume_id: v.id });
  });

  it('the rbd-fuse helper of a staged volume dies: the node reports the mapping dead, the cluster view stays clean; staging again recovers', async () => {
    const v = await createStaged('health-fuse');
    const pid = await fusePid(volumeImage(v.id));
    process.kill(pid, 'SIGKILL');
    await waitFor('the killed rbd-fuse to be reaped', async () => dead(pid));
    const hs = await nodeHealth(v.id, v.staging);
    // The filesystem above may also have met the dead device already (its errors are the node's to report).
    const mapping = hs.find((x) => x.reason === 'MappingDead');
    expect(mapping?.status).toBe('INACCESSIBLE');
    expect(mapping?.message).toContain(`its rbd-fuse helper (pid ${pid}) is gone`);
    expect(statuses(hs).filter((x) => !['INACCESSIBLE/MappingDead', 'DEGRADED/FilesystemErrors'].includes(x))).toEqual([]);
    expect(statuses(await ctrlHealth(v.id))).toEqual([]);

    await c.Node.NodeUnstageVolume({ volume_id: v.id, staging_target_path: v.staging });
    await c.Node.NodeStageVolume({ volume_id: v.id, staging_target_path: v.staging, volume_capability: mountCap('ext4') });
    expect(statuses(await nodeHealth(v.id, v.staging))).toEqual([]);
    await c.Node.NodeUnstageVolume({ volume_id: v.id, staging_target_path: v.staging });
    // The killed helper's watch lasts until the OSD times it out (10 s here); until then the image counts as mapped.
    await waitFor('DeleteVolume once the dead helper\'s watch is gone', async () => {
      const e = await c.Controller.DeleteVolume({ volume_id: v.id }).then(() => undefined, (err: unknown) => err);
      if (e && codeName(e) !== 'FAILED_PRECONDITION') throw e;
      return !e;
    }, { timeoutMs: 90_000, everyMs: 2000 });
  });

  it('the monitor stops answering: the node reports the cluster unreachable, naming monitor and user but not the key, until it answers again', async () => {
    const v = await createStaged('health-mon');
    // The backend's own view of the volume, asked directly: through the RPCs the volume's record
    // (its image's metadata) cannot be read while the monitor is away, so getVolume waits first.
    const probe = new RbdBackend({ config: parseConfig(configJson), stateDir: path.join(root, 'probe'), log: pino({ level: 'silent' }) });
    await probe.init();
    const vol = (await probe.getVolume(v.id)) as VolumeRecord;
    const monPid = Number((await fs.readFile(path.join(ceph.dir, 'run', 'mon.a.pid'), 'utf8')).split(' ')[0]);
    process.kill(monPid, 'SIGSTOP');
    try {
      const storage = await rbdStorage();
      expect(storage.map((s) => `${s.status}/${s.reason}`)).toEqual(['STORAGE_UNREACHABLE/ClusterUnreachable']);
      expect(storage[0].message).toContain(`Ceph cluster hc (monitors ${ceph.mon}) as client.${ceph.user} cannot be reached`);
      expect(storage[0].message).not.toContain(ceph.key);
      const hs = await probe.volumeHealth(vol);
      expect(statuses(hs)).toEqual(['INACCESSIBLE/ClusterUnreachable']);
      expect(hs[0].message).toContain(`monitors ${ceph.mon}`);
      expect(hs[0].message).not.toContain(ceph.key);
    } finally {
      process.kill(monPid, 'SIGCONT');
    }
    await waitFor('the cluster to answer again', async () => (await rbdStorage()).length === 0, { timeoutMs: 60_000 });
    expect(statuses(await probe.volumeHealth(vol))).toEqual([]);
    await c.Node.NodeUnstageVolume({ volume_id: v.id, staging_target_path: v.staging });
    await c.Controller.DeleteVolume({ volume_id: v.id });
  });

  it('the pool reaches its quota: the storage is degraded with the numbers, and clears when the quota is raised', async () => {
    const v = await createStaged('health-quota');
    await execa('dd', ['if=/dev/urandom', `of=${path.join(v.staging, 'fill')}`, 'bs=1M', 'count=16', 'oflag=direct']);
    const stored = await waitFor('ceph df to count the written bytes', async () => {
      const df = JSON.parse(String((await execa('ceph', ['-c', ceph.conf, 'df', '--format', 'json'], { env: { CEPH_ARGS: '' } })).stdout)) as { pools: Array<{ name: string; stats: { stored: number } }> };
      const s = df.pools.find((p) => p.name === ceph.pool)!.stats.stored;
      return s >= 16 * MiB ? s : undefined;
    }, { timeoutMs: 90_000 });
    const quota = (a: number) => execa('ceph', ['-c', ceph.conf, 'osd', 'pool', 'set-quota', ceph.pool, 'max_bytes', String(a)], { env: { CEPH_ARGS: '' } });
    const limit = Math.ceil(stored * 1.05);
    await quota(limit);
    try {
      const storage = await waitFor('the pool to show nearly full', async () => {
        const s = await rbdStorage();
        return s.length ? s : undefined;
      }, { timeoutMs: 90_000 });
      expect(storage.map((s) => `${s.status}/${s.reason}`)).toEqual(['STORAGE_DEGRADED/PoolNearlyFull']);
      expect(storage[0].message).toMatch(new RegExp(`pool ${ceph.pool} of Ceph cluster hc .* holds \\d+ bytes and can take \\d+ more \\(\\d+\\.\\d% used, threshold 85%, quota ${limit} bytes\\): writes (will soon block|to its images block now)`));
    } finally {
      await quota(0);
    }
    await waitFor('the pool to clear', async () => (await rbdStorage()).length === 0, { timeoutMs: 90_000 });
    await c.Node.NodeUnstageVolume({ volume_id: v.id, staging_target_path: v.staging });
    await c.Controller.DeleteVolume({ volume_id: v.id });
  });

  it('the image behind a staged volume is removed: the controller no longer knows it, the node reports the data lost and still unstages it (#13)', async () => {
    const v = await createStaged('health-gone');
    const image = volumeImage(v.id);
    // A live helper holds a watch, and rbd refuses to remove a watched image: the helper
    // dies first (a node crash), its watch times out, then an admin removes the image.
    const pid = await fusePid(image);
    process.kill(pid, 'SIGKILL');
    await waitFor('the image to be removed once its watch times out', async () => {
      const r = await execa('rbd', ['-c', ceph.conf, 'rm', `${ceph.pool}/${image}`], { reject: false, env: { CEPH_ARGS: '' } });
      return r.exitCode === 0;
    }, { timeoutMs: 90_000, everyMs: 2000 });
    expect(await adminRbd(ceph, ['ls', ceph.pool])).not.toContain(image);

    expect(codeName(await c.Controller.ControllerGetVolumeHealth({ volume_id: v.id }).catch((e: unknown) => e))).toBe('NOT_FOUND');
    const hs = await nodeHealth(v.id, v.staging);
    expect(statuses(hs)).toEqual(['DATA_LOSS/ImageMissing']);
    expect(hs[0].message).toContain(`RBD image ${image} of volume ${v.id} is in none of the pools this driver serves (hc:${ceph.pool})`);

    // Unstaging takes down what the node still holds for it: the mount, the loop device on
    // the dead helper's file, the fuse mount and the mapping's record.
    const mapping = path.dirname(await mappingFile(image));
    const { device } = JSON.parse(await fs.readFile(path.join(mapping, 'mapping.json'), 'utf8')) as { device: string };
    const unstage = () => c.Node.NodeUnstageVolume({ volume_id: v.id, staging_target_path: v.staging }).then(() => 'OK', (e: unknown) => codeName(e));
    expect(await unstage()).toBe('OK');
    expect((await execa('findmnt', ['-rn', '--mountpoint', v.staging], { reject: false })).exitCode, 'staging path unmounted').not.toBe(0);
    expect((await execa('findmnt', ['-rn', '--mountpoint', path.join(mapping, 'mnt')], { reject: false })).exitCode, 'fuse mount gone').not.toBe(0);
    // That device only: other runs of this file (other worktrees) have images of the same name.
    const back = String((await execa('losetup', ['-n', '-O', 'BACK-FILE', device], { reject: false })).stdout).trim();
    expect(back.startsWith(mapping) || back === `/${image}`, `${device} no longer on its file (${back})`).toBe(false);
    await expect(fs.access(mapping), 'mapping directory removed').rejects.toThrow();
    expect(await unstage(), 'a retry whose first reply was lost').toBe('OK');
  });
});
