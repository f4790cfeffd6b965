// What the LVM backend does on a real kernel with device-mapper (inside test/guest/run) that
// the host tier cannot run at all: thin snapshots and clones (no thin pools without
// device-mapper), a COW snapshot of a mounted linear volume, a thin pool promised beyond its size and then filled, online growth of an
// active LV (lvextend under a mounted filesystem; ext4's online resize also needs
// CAP_SYS_RESOURCE, which the host's root lacks), and the wipe of extents an activated LV
// wrote.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { DriverHarness, mountCap, blockCap, MiB } from '../lib/driver-harness.js';
import { TestVg } from '../lib/lvm-vg.js';
import { codeName } from '../../sidecars/common/csi-client.js';
import { TAG_DIRTY } from '../../driver/backends/lvm/records.js';

let h: DriverHarness;
let vg: TestVg;
const c = () => h.client!;
const ext4 = mountCap('ext4');
/** A thin pool with room for every case, and one of 16 MiB that case b promises 8x over and fills. */
const POOL = 'pool';
const SMALL = 'small';
const SMALL_MIB = 16;
// Periodic writeback off while the tests run: data written without fsync then stays in the
// page cache until something syncs the filesystem, as a freeze does. Restored afterwards.
const WRITEBACK = { '/proc/sys/vm/dirty_writeback_centisecs': '0', '/proc/sys/vm/dirty_expire_centisecs': '360000' };
const savedWriteback: Record<string, string> = {};

beforeAll(async () => {
  if (!/\bdevice-mapper\b/.test(await fs.readFile('/proc/misc', 'utf8'))) throw new Error('no device-mapper: run this file in the guest (test/guest/run)');
  vg = await TestVg.create(await fs.mkdtemp('/tmp/tscsi-lvm-ops-'), 2, undefined, { deviceMapper: true });
  await vg.lvm(['lvcreate', '-q', '-y', '--type', 'thin-pool', '-L', '256M', '--zero', 'y', '-n', POOL, vg.name]);
  // --errorwhenfull y: a write that needs a block of a full pool fails at once instead of
  // waiting (60 s by default) for the pool to be extended.
  await vg.lvm(['lvcreate', '-q', '-y', '--type', 'thin-pool', '-L', `${SMALL_MIB}M`, '--zero', 'y', '-n', SMALL, vg.name]);
  await vg.lvm(['lvchange', '-q', '--errorwhenfull', 'y', `${vg.name}/${SMALL}`]);
  for (const [f, v] of Object.entries(WRITEBACK)) {
    savedWriteback[f] = await fs.readFile(f, 'utf8');
    await fs.writeFile(f, v);
  }
  h = await DriverHarness.start({ driver: { lvmVolumeGroups: vg.name, lvmDevices: vg.pv, lvmMode: 'dm', defaultBackend: 'lvm' } });
});

afterAll(async () => {
  for (const [f, v] of Object.entries(savedWriteback)) await fs.writeFile(f, v);
  await h?.cleanup();
  await vg?.remove();
});

const thin = (pool = POOL) => ({ ...vg.params(), type: 'thin', thinPool: pool });
const linear = () => ({ ...vg.params(), type: 'linear' });

async function create(name: string, parameters: Record<string, string>, mib: number, opts: { cap?: object; source?: object } = {}): Promise<string> {
  const req = { name, parameters, capacity_range: { required_bytes: String(mib * MiB) }, volume_capabilities: [opts.cap ?? ext4], volume_content_source: opts.source };
  return (await c().Controller.CreateVolume(req)).volume.volume_id;
}

/** Stages the volume at staging/<name> and returns that path. */
async function stage(id: string, name: string, cap: object = ext4): Promise<string> {
  const staging = path.join(h.dir, 'staging', name);
  await fs.mkdir(staging, { recursive: true });
  await c().Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
  return staging;
}

async function unstageAndDelete(id: string, staging: string): Promise<void> {
  await c().Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
  await c().Controller.DeleteVolume({ volume_id: id });
}

/** One row of `lvs` for vg/lv, in bytes: these fields, in this order. */
async function lvsRow(lv: string, fields: string[]): Promise<string[]> {
  const r = await vg.lvm(['lvs', '--noheadings', '--units', 'b', '--nosuffix', '--separator', ';', '-o', fields.join(','), `${vg.name}/${lv}`]);
  return r.stdout.trim().split(';');
}

/** How many bytes of a thin pool's data are allocated (lvm reports percent with two decimals). */
async function poolUsed(pool: string): Promise<number> {
  const [pct, size] = await lvsRow(pool, ['data_percent', 'lv_size']);
  return (Number(pct) / 100) * Number(size);
}

/**
 * Whether the filesystem at p is frozen, asked without leaving it changed: freezing a frozen
 * filesystem fails with EBUSY; one that was not frozen is thawed again at once.
 */
async function isFrozen(p: string): Promise<boolean> {
  const r = await execa('fsfreeze', ['-f', p], { reject: false });
  if (r.exitCode === 0) {
    await execa('fsfreeze', ['-u', p]);
    return false;
  }
  if (/busy/i.test(r.stderr)) return true;
  throw new Error(`fsfreeze -f ${p}: ${r.stderr}`);
}

/** The LVs of the VG that the driver marks as half-made (a create or snapshot not finished). */
async function dirtyLvs(): Promise<string[]> {
  return [...(await vg.lvs())].filter(([, tags]) => tags.includes(TAG_DIRTY)).map(([n]) => n);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('lvm device-mapper mode, inside the guest', () => {
  it('wipes the extents a deleted linear volume wrote: a new volume on the same extents reads none of it (activation: the host has no dm)', async () => {
    const marker = Buffer.alloc(4096, `tenant-a-${randomBytes(8).toString('hex')}|`);
    const cap = blockCap();
    const a = await create('pvc-wipe-a', linear(), 8, { cap });
    const st = await stage(a, 'wipe-a', cap);
    const target = path.join(h.dir, 'pods', 'wipe-a');
    await c().Node.NodePublishVolume({ volume_id: a, staging_target_path: st, target_path: target, volume_capability: cap });
    // The tenant's data at the start and at the end of its volume, through the device it was given.
    for (const seek of [0, 8 * 256 - 1]) {
      await execa('dd', [`of=${target}`, 'bs=4096', `seek=${seek}`, 'oflag=direct', 'conv=fsync,notrunc', 'status=none'], { input: marker });
    }
    const [ranges] = await lvsRow(a, ['seg_pe_ranges']);
    await c().Node.NodeUnpublishVolume({ volume_id: a, target_path: target });
    await unstageAndDelete(a, st);

    // The PV's bytes where the LV was: the deleted volume's data is gone from the disk itself.
    const [, first, last] = /:(\d+)-(\d+)$/.exec(ranges)!.map(Number);
    const [peStart] = (await vg.lvm(['pvs', '--noheadings', '--units', 'b', '--nosuffix', '-o', 'pe_start', vg.pv])).stdout.trim().split(/\s+/);
    const [extent] = (await vg.lvm(['vgs', '--noheadings', '--units', 'b', '--nosuffix', '-o', 'vg_extent_size', vg.name])).stdout.trim().split(/\s+/);
    const fh = await fs.open(path.join(vg.dir, 'pv.img'), 'r');
    const old = Buffer.alloc((last - first + 1) * Number(extent));
    await fh.read(old, 0, old.length, Number(peStart) + first * Number(extent));
    await fh.close();
    expect(old.indexOf(marker.subarray(0, 64))).toBe(-1);

    const b = await create('pvc-wipe-b', linear(), 8, { cap });
    expect((await lvsRow(b, ['seg_pe_ranges']))[0], 'the new volume has the old one\'s extents').toBe(ranges);
    const stB = await stage(b, 'wipe-b', cap);
    // Staged, so activated: all of it as the new tenant's block device reads it.
    const seen = Buffer.from((await execa('dd', [`if=/dev/${vg.name}/${b}`, 'bs=1M', 'iflag=direct', 'status=none'], { encoding: 'buffer' })).stdout);
    expect(seen.length).toBe(8 * MiB);
    expect(seen.indexOf(marker.subarray(0, 64))).toBe(-1);
    await unstageAndDelete(b, stB);
  });

  it('cuts a thin snapshot and a thin clone of a mounted volume without copying, with its filesystem frozen (by lvm\'s suspend), and restores what was written', async () => {
    const src = await create('pvc-thin-src', thin(), 64);
    const st = await stage(src, 'thin-src');
    const base = randomBytes(24 * MiB);
    await fs.writeFile(path.join(st, 'base.bin'), base);
    await execa('sync', ['-f', path.join(st, 'base.bin')]);
    // Written and never synced: in the page cache only, until a freeze syncs the filesystem.
    await fs.writeFile(path.join(st, 'before-snapshot.txt'), 'cached when the snapshot was cut');
    const used = await poolUsed(POOL);
    const snap = (await c().Controller.CreateSnapshot({ name: 'snap-thin', source_volume_id: src })).snapshot;
    expect(snap.ready_to_use).toBe(true);
    await fs.writeFile(path.join(st, 'before-clone.txt'), 'cached when the clone was cut');
    const clone = await create('pvc-thin-clone', thin(), 64, { source: { volume: { volume_id: src } } });
    // A copy of either would allocate its 24 MiB again; sharing blocks allocates next to none
    // (the freezes' flushes, and whatever ext4's background inode-table init writes meanwhile).
    expect(await poolUsed(POOL) - used).toBeLessThan(8 * MiB);

    const restored = await create('pvc-thin-restored', thin(), 64, { source: { snapshot: { snapshot_id: snap.snapshot_id } } });
    for (const [id, name, files] of [
      [restored, 'thin-restored', ['before-snapshot.txt']],
      [clone, 'thin-clone', ['before-snapshot.txt', 'before-clone.txt']],
    ] as const) {
      const at = await stage(id, name);
      expect(sha(await fs.readFile(path.join(at, 'base.bin'))), `${name}: base.bin`).toBe(sha(base));
      for (const f of files) expect(await fs.readFile(path.join(at, f), 'utf8'), `${name}: ${f}`).toMatch(/^cached when the (snapshot|clone) was cut$/);
      await unstageAndDelete(id, at);
    }
    await unstageAndDelete(src, st);
    await c().Controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id });
    expect(await dirtyLvs()).toEqual([]);
  });

  it('snapshots a mounted linear volume through a COW snapshot (its filesystem frozen by lvm\'s suspend) and restores what was written, leaving nothing frozen or behind', async () => {
    const src = await create('pvc-lin-src', linear(), 64);
    const st = await stage(src, 'lin-src');
    const base = randomBytes(8 * MiB);
    await fs.writeFile(path.join(st, 'base.bin'), base);
    // Written and never synced (periodic writeback is off): only a freeze at the cut saves it.
    await fs.writeFile(path.join(st, 'before-snapshot.txt'), 'cached when the snapshot was cut');
    const snap = (await c().Controller.CreateSnapshot({ name: 'snap-lin', source_volume_id: src })).snapshot;
    expect(snap.ready_to_use).toBe(true);
    expect(await isFrozen(st)).toBe(false);
    expect([...(await vg.lvs()).keys()].filter((n) => n.endsWith('.pit')), 'the COW snapshot of the cut is removed').toEqual([]);
    const restored = await create('pvc-lin-restored', linear(), 64, { source: { snapshot: { snapshot_id: snap.snapshot_id } } });
    const at = await stage(restored, 'lin-restored');
    expect(sha(await fs.readFile(path.join(at, 'base.bin')))).toBe(sha(base));
    expect(await fs.readFile(path.join(at, 'before-snapshot.txt'), 'utf8')).toBe('cached when the snapshot was cut');
    await unstageAndDelete(restored, at);
    await unstageAndDelete(src, st);
    await c().Controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id });
    expect(await dirtyLvs()).toEqual([]);
  });

  it('promises a thin pool beyond its size up to the ratio, and a full pool fails writes and new volumes with RESOURCE_EXHAUSTED, leaving nothing frozen or half-made', async () => {
    // Two 64 MiB volumes in a 16 MiB pool (8x): within the default ratio of 10; a third is not.
    const v1 = await create('pvc-small-1', thin(SMALL), 64);
    const v2 = await create('pvc-small-2', thin(SMALL), 64);
    const third = await create('pvc-small-3', thin(SMALL), 64).then(() => 'OK', (e: unknown) => `${codeName(e)}: ${(e as Error).message}`);
    expect(third).toMatch(/^RESOURCE_EXHAUSTED: .*not enough capacity/);

    const st = await stage(v1, 'small-1');
    const w = await execa('dd', ['if=/dev/zero', `of=${path.join(st, 'fill.bin')}`, 'bs=1M', `count=${SMALL_MIB * 2}`, 'conv=fsync', 'status=none'], { reject: false });
    expect(w.exitCode, 'the user\'s write into a full pool fails').not.toBe(0);
    expect(w.stderr).toMatch(/No space left on device|Input\/output error/);
    expect(Number((await lvsRow(SMALL, ['data_percent']))[0])).toBe(100);

    const more = await create('pvc-small-4', thin(SMALL), 8).then(() => 'OK', (e: unknown) => `${codeName(e)}: ${(e as Error).message}`);
    expect(more).toMatch(/^RESOURCE_EXHAUSTED: .*not enough capacity/);
    // lvm refuses the thin snapshot itself; it was INTERNAL before the driver read lvm's words.
    const snap = await c().Controller.CreateSnapshot({ name: 'snap-small', source_volume_id: v1 }).then(() => 'OK', (e: unknown) => `${codeName(e)}: ${(e as Error).message}`);
    expect(snap).toMatch(/^RESOURCE_EXHAUSTED: .*the thin pool is out of data space \(.*reached threshold\.?\); extend the pool/);
    expect(await isFrozen(st)).toBe(false);
    expect(await dirtyLvs()).toEqual([]);
    await unstageAndDelete(v1, st);
    await c().Controller.DeleteVolume({ volume_id: v2 });
  });

  it('a driver killed right after cutting a thin snapshot of a mounted volume leaves it writable (not frozen, not suspended), no half-made snapshot once restarted, and the retry succeeds', async () => {
    const id = await create('pvc-kill', thin(), 64);
    const st = await stage(id, 'kill');
    await fs.writeFile(path.join(st, 'before.txt'), 'written before the snapshot');
    await h.stopProcess();
    // Armed for this start only: the snapshot LV is cut and still tagged dirty.
    await h.startProcess('lvm.snapshot.afterCopy');
    const died = new Promise<NodeJS.Signals | null>((r) => h.proc!.once('exit', (_code, sig) => r(sig)));
    const first = await c().Controller.CreateSnapshot({ name: 'snap-kill', source_volume_id: id }).then(() => 'OK', (e: unknown) => codeName(e));
    expect(first).toBe('UNAVAILABLE');
    expect(await died).toBe('SIGKILL');
    expect(await dirtyLvs(), 'the half-made snapshot LV').toHaveLength(1);
    // lvm suspended the origin for the cut: it must have been resumed (a suspended device holds every write).
    const suspended = await execa('dmsetup', ['info', '-c', '--noheadings', '-o', 'suspended', `${vg.name.replace(/-/g, '--')}-${id.replace(/-/g, '--')}`]);
    expect(suspended.stdout.trim()).toBe('Active');
    expect(await isFrozen(st)).toBe(false);

    await h.stopProcess('SIGKILL');
    await h.startProcess();
    expect(await dirtyLvs()).toEqual([]);
    await fs.writeFile(path.join(st, 'after.txt'), 'the application writes again');
    await execa('sync', ['-f', path.join(st, 'after.txt')]);
    const snap = (await c().Controller.CreateSnapshot({ name: 'snap-kill', source_volume_id: id })).snapshot;
    expect(snap.ready_to_use).toBe(true);
    const restored = await create('pvc-kill-restored', thin(), 64, { source: { snapshot: { snapshot_id: snap.snapshot_id } } });
    const at = await stage(restored, 'kill-restored');
    expect(await fs.readFile(path.join(at, 'after.txt'), 'utf8')).toBe('the application writes again');
    await unstageAndDelete(restored, at);
    await unstageAndDelete(id, st);
    await c().Controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id });
    expect(await dirtyLvs()).toEqual([]);
  });

  for (const [fsType, type, fromMiB, toMiB] of [['ext4', 'linear', 64, 96], ['xfs', 'thin', 304, 400]] as const) {
    it(`grows a staged and published ${fsType} on a ${type} LV online: lvextend, then the filesystem, data intact and the new size in df`, async () => {
      const cap = mountCap(fsType);
      const id = await create(`pvc-grow-${fsType}`, type === 'thin' ? thin() : linear(), fromMiB, { cap });
      const st = await stage(id, `grow-${fsType}`, cap);
      const target = path.join(h.dir, 'pods', `grow-${fsType}`);
      await c().Node.NodePublishVolume({ volume_id: id, staging_target_path: st, target_path: target, volume_capability: cap });
      const data = randomBytes(MiB);
      await fs.writeFile(path.join(target, 'kept.bin'), data);
      const df = async () => Number((await execa('df', ['-B1', '--output=size', target])).stdout.split('\n')[1]);
      const before = await df();

      const ce = await c().Controller.ControllerExpandVolume({ volume_id: id, capacity_range: { required_bytes: String(toMiB * MiB) }, volume_capability: cap });
      expect(ce.node_expansion_required).toBe(true);
      expect(Number((await lvsRow(id, ['lv_size']))[0])).toBe(toMiB * MiB);
      const ne = await c().Node.NodeExpandVolume({ volume_id: id, volume_path: target, staging_target_path: st, capacity_range: { required_bytes: String(toMiB * MiB) }, volume_capability: cap });
      expect(Number(ne.capacity_bytes)).toBe(toMiB * MiB);
      // Still mounted where the pod has it, larger by about the growth (less the filesystem's own overhead).
      const after = await df();
      expect(after - before).toBeGreaterThan((toMiB - fromMiB) * MiB * 0.9);
      expect(sha(await fs.readFile(path.join(target, 'kept.bin')))).toBe(sha(data));
      await c().Node.NodeUnpublishVolume({ volume_id: id, target_path: target });
      await unstageAndDelete(id, st);
    });
  }
});
