// The device-mapper path of the LVM backend cannot run on these VMs (no device-mapper), so
// it is checked here against a small in-memory lvm that answers the JSON reports and
// records every command: the assertions are the exact lvm2 argument lists the backend runs.
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { LvmBackend, type LvmHost } from '../../driver/backends/lvm/index.js';
import type { VolumeRecord, SnapshotRecord } from '../../driver/backends/backend.js';
import { CommandError } from '../../driver/host/exec.js';

const MiB = 1024n * 1024n;
const GiB = 1024n * MiB;

interface FakeLv {
  name: string;
  size: bigint;
  tags: string[];
  pool: string;
  active: boolean;
  segType: string;
  /** Thin pools: whether newly allocated blocks are zeroed (lv_attr position 8). */
  zero?: boolean;
  /** Thin pools: data_percent and metadata_percent as lvm prints them. */
  dataPercent?: string;
  metadataPercent?: string;
  /** lv_attr positions 4 (state) and 8 (health) when not the defaults (active or not, healthy). */
  state?: string;
  health?: string;
}

/** Just enough lvm2 for the backend: reports in lvm's JSON shape, and the commands it sends. */
class FakeLvm {
  lvs = new Map<string, FakeLv>();
  calls: string[][] = [];
  /** When set, vgs fails with this stderr. */
  vgsFailure = '';
  constructor(readonly vg: string) {
    this.lvs.set('pool', { name: 'pool', size: 10n * GiB, tags: [], pool: '', active: true, segType: 'thin-pool', zero: true });
  }

  runner = async (args: string[]) => {
    const [cmd, ...rest] = args;
    if (!['lvs', 'vgs', 'pvs'].includes(cmd)) this.calls.push(args);
    const ok = (stdout = '') => ({ stdout, stderr: '', exitCode: 0 });
    const report = (key: string, rows: object[]) => ok(JSON.stringify({ report: [{ [key]: rows }] }));
    const opt = (flag: string): string | undefined => (rest.includes(flag) ? rest[rest.indexOf(flag) + 1] : undefined);
    const lvArg = () => rest[rest.length - 1].split('/')[1];
    switch (cmd) {
      case 'vgs':
        if (this.vgsFailure) throw new CommandError(`lvm ${args.join(' ')}`, 5, this.vgsFailure, false);
        return report('vg', [{ vg_name: this.vg, vg_extent_size: String(4n * MiB), vg_free: String(20n * GiB), vg_size: String(40n * GiB) }]);
      case 'pvs':
        return report('pv', [{ pv_name: '/dev/sdb', vg_name: this.vg, pe_start: String(MiB) }]);
      case 'lvs': {
        const sel = opt('-S')?.replace(/^lv_name=/, '');
        const rows = [...this.lvs.values()]
          .filter((l) => !sel || l.name === sel)
          .map((l) => ({
            vg_name: this.vg,
            lv_name: l.name,
            lv_size: String(l.size),
            lv_tags: l.tags.join(','),
            lv_attr: `${l.segType === 'thin-pool' ? 't' : 'V'}wi-${l.state ?? (l.active ? 'a' : '-')}-t${l.zero === false ? '-' : 'z'}${l.health ?? '-'}-`,
            pool_lv: l.pool,
            seg_start_pe: '0',
            seg_size_pe: String(l.size / (4n * MiB)),
            seg_pe_ranges: '',
            data_percent: l.segType === 'thin-pool' ? (l.dataPercent ?? '12.50') : '',
            metadata_percent: l.segType === 'thin-pool' ? (l.metadataPercent ?? '3.10') : '',
          }));
        return report('seg', rows);
      }
      case 'lvcreate': {
        const name = opt('-n');
        if (!name) throw new Error(`fake lvm: lvcreate without -n: ${rest.join(' ')}`);
        const tags = rest.flatMap((a, i) => (rest[i - 1] === '--addtag' ? [a] : []));
        // As lvm2 does: a new LV is active unless -an says otherwise.
        const active = !rest.includes('-an');
        if (rest.includes('-s')) {
          const origin = this.lvs.get(lvArg())!;
          this.lvs.set(name, { name, size: origin.size, tags, pool: origin.pool, active, segType: 'thin' });
        } else {
          const size = BigInt((opt('-V') ?? opt('-L'))!.replace(/b$/, ''));
          const pool = opt('-T')?.split('/')[1] ?? '';
          this.lvs.set(name, { name, size, tags, pool, active, segType: pool ? 'thin' : 'linear' });
        }
        return ok();
      }
      case 'lvchange': {
        const lv = this.lvs.get(lvArg())!;
        if (rest.includes('-ay')) lv.active = true;
        if (rest.includes('-an')) lv.active = false;
        rest.forEach((a, i) => {
          if (rest[i - 1] === '--deltag') lv.tags = lv.tags.filter((t) => t !== a);
          if (rest[i - 1] === '--addtag') lv.tags.push(a);
        });
        return ok();
      }
      case 'lvextend':
        this.lvs.get(lvArg())!.size = BigInt(opt('-L')!.replace(/b$/, ''));
        return ok();
      case 'lvremove':
        this.lvs.delete(lvArg());
        return ok();
      default:
        throw new Error(`unexpected lvm command ${args.join(' ')}`);
    }
  };
}

class FakeHost implements LvmHost {
  ops: string[] = [];
  /** Devices with a filesystem mounted from them, and where. */
  mounted = new Map<string, string>();
  async mountedFilesystems(devs: string[]) {
    return devs.flatMap((d) => (this.mounted.has(d) ? [this.mounted.get(d)!] : []));
  }
  async wipe(d: string) {
    this.ops.push(`wipe ${d}`);
  }
  async copy(s: string, d: string, n: bigint) {
    this.ops.push(`copy ${s} ${d} ${n}`);
  }
  async withQuiescedDevices<T>(devs: string[], fn: () => Promise<T>) {
    this.ops.push(`freeze ${devs.join(',')}`);
    try {
      return await fn();
    } finally {
      this.ops.push(`thaw ${devs.join(',')}`);
    }
  }
  async attachWindow(): Promise<string> {
    throw new Error('no loop windows in dm mode');
  }
  async windowsAt() {
    return [];
  }
  async detach() {}
  async setSizeLimit() {
    throw new Error('no loop windows in dm mode');
  }
  async setDirectIO() {
    throw new Error('no loop windows in dm mode');
  }
  async describe() {
    return undefined;
  }
  async hasDeviceMapper() {
    return true;
  }
}

function volume(id: string, params: Record<string, string>, extra: Partial<VolumeRecord> = {}): VolumeRecord {
  return {
    id,
    name: `pvc-${id}`,
    backend: 'lvm',
    capacityBytes: GiB,
    accessType: 'mount',
    fsType: 'ext4',
    parameters: params,
    mutableParameters: {},
    topology: {},
    published: {},
    createdAt: '2026-11-23T00:00:00Z',
    ...extra,
  };
}

let fake: FakeLvm;
let host: FakeHost;
let b: LvmBackend;
const VG = 'vg0';
const thin = { backend: 'lvm', volumeGroup: VG, type: 'thin', thinPool: 'pool' };
const linear = { backend: 'lvm', volumeGroup: VG };
const tagArgs = (args: string[]) => args.filter((_a, i) => args[i - 1] === '--addtag');

// Each test's own state directory (the backend's lvm.conf and temporary-device marks), removed after it.
let stateDir: string;
beforeEach(async () => {
  stateDir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-unit-lvm-'));
  fake = new FakeLvm(VG);
  host = new FakeHost();
  b = new LvmBackend({ volumeGroups: [VG], devices: ['/dev/sdb'], mode: 'auto', stateDir, log: pino({ level: 'silent' }), host, runner: fake.runner });
  await b.init();
});
afterEach(async () => {
  await fs.rm(stateDir, { recursive: true, force: true });
});

describe('lvm backend, device-mapper mode (exact lvm2 commands)', () => {
  it('detects device-mapper and accepts thin parameters', () => {
    expect(b.deviceMapper).toBe(true);
    expect(() => b.validateParameters({ volumeGroup: VG, type: 'thin', thinPool: 'pool' })).not.toThrow();
  });

  it('creates a thin volume in the pool, tagged with its record, without wiping (thin pools zero new blocks)', async () => {
    const v = await b.createVolume(volume('vol-lvm-a', thin));
    const [create, clear] = fake.calls;
    expect(create.slice(0, 9)).toEqual(['lvcreate', '-y', '-an', '-n', 'vol-lvm-a', '-V', `${GiB}b`, '-T', `${VG}/pool`]);
    expect(tagArgs(create)).toContain('tscsi.kind=vol');
    expect(tagArgs(create)).toContain('tscsi.dirty');
    expect(clear).toEqual(['lvchange', '--deltag', 'tscsi.dirty', `${VG}/vol-lvm-a`]);
    expect(host.ops.filter((o) => o.startsWith('wipe'))).toEqual([]);
    expect(v.capacityBytes).toBe(GiB);
    expect((await b.getVolume('vol-lvm-a'))?.name).toBe('pvc-vol-lvm-a');
  });

  it('creates a linear volume inactive (-an -Wn -Zn), activates it once to wipe it, and deactivates it', async () => {
    await b.createVolume(volume('vol-lvm-l', linear));
    expect(fake.calls[0].slice(0, 10)).toEqual(['lvcreate', '-y', '-n', 'vol-lvm-l', '-L', `${GiB}b`, '-an', '-Wn', '-Zn', '--addtag']);
    expect(fake.calls[0][fake.calls[0].length - 1]).toBe(VG);
    expect(fake.calls[1]).toEqual(['lvchange', '-ay', '-K', `${VG}/vol-lvm-l`]);
    expect(host.ops).toEqual([`wipe /dev/${VG}/vol-lvm-l`]);
    expect(fake.calls[2]).toEqual(['lvchange', '-an', `${VG}/vol-lvm-l`]);
  });

  it('stages by activation: attach -> /dev/vg/lv, detach -> lvchange -an', async () => {
    const v = await b.createVolume(volume('vol-lvm-s', thin));
    fake.calls = [];
    expect(await b.attach(v)).toBe(`/dev/${VG}/vol-lvm-s`);
    expect(fake.calls).toEqual([['lvchange', '-ay', '-K', `${VG}/vol-lvm-s`]]);
    expect(await b.attachedDevice(v)).toBe(`/dev/${VG}/vol-lvm-s`);
    await b.detach(v);
    expect(fake.calls[1]).toEqual(['lvchange', '-an', `${VG}/vol-lvm-s`]);
  });

  it('snapshots a thin volume with a thin snapshot, leaving the freeze to lvm\'s suspend of the origin, and clones from it', async () => {
    const v = await b.createVolume(volume('vol-lvm-src', thin));
    await b.attach(v);
    fake.calls = [];
    const snap: SnapshotRecord = { id: 'snap-lvm-1', name: 's', sourceVolumeId: v.id, sizeBytes: GiB, createdAtSeconds: 1n, createdAtNanos: 0, groupSnapshotId: '', parameters: {} };
    await b.createSnapshots([snap]);
    expect(fake.calls[0].slice(0, 7)).toEqual(['lvcreate', '-y', '-s', '-kn', '-an', '-n', 'snap-lvm-1']);
    expect(fake.calls[0][fake.calls[0].length - 1]).toBe(`${VG}/vol-lvm-src`);
    expect(tagArgs(fake.calls[0])).toContain('tscsi.kind=snap');
    // A freeze of ours would make the kernel refuse lvm's suspend of the origin (EBUSY):
    // test/guest/lvm-dm-ops.guest.ts shows that suspend freezing the filesystem instead.
    expect(host.ops).toEqual([]);
    expect((await b.listSnapshots()).map((s) => s.id)).toEqual(['snap-lvm-1']);

    fake.calls = [];
    await b.createVolume(volume('vol-lvm-clone', thin, { capacityBytes: 2n * GiB, contentSource: { type: 'snapshot', id: 'snap-lvm-1' } }));
    expect(fake.calls[0].slice(0, 7)).toEqual(['lvcreate', '-y', '-s', '-kn', '-an', '-n', 'vol-lvm-clone']);
    expect(fake.calls[0][fake.calls[0].length - 1]).toBe(`${VG}/snap-lvm-1`);
    expect(fake.calls[1]).toEqual(['lvextend', '-L', `${2n * GiB}b`, `${VG}/vol-lvm-clone`]);
    expect(fake.calls[2]).toEqual(['lvchange', '--deltag', 'tscsi.dirty', `${VG}/vol-lvm-clone`]);
  });

  it('a computed delta reads the snapshot LVs activated for the read only, also when the read fails', async () => {
    const v = await b.createVolume(volume('vol-lvm-d', thin));
    const snaps = ['snap-lvm-d1', 'snap-lvm-d2'].map((id, i): SnapshotRecord => ({ id, name: id, sourceVolumeId: v.id, sizeBytes: GiB, createdAtSeconds: BigInt(i + 1), createdAtNanos: 0, groupSnapshotId: '', parameters: {} }));
    await b.createSnapshots([snaps[0]]);
    await b.createSnapshots([snaps[1]]);
    fake.calls = [];
    // No such device on this VM: dd fails, and the error says which read.
    await expect(b.snapshotBlocks.delta(snaps[0], snaps[1])).rejects.toThrow(new RegExp(`dd if=/dev/${VG}/snap-lvm-d1 .*iflag=direct`));
    expect(fake.calls).toEqual([
      ['lvchange', '-ay', '-K', `${VG}/snap-lvm-d1`],
      ['lvchange', '-ay', '-K', `${VG}/snap-lvm-d2`],
      ['lvchange', '-an', `${VG}/snap-lvm-d2`],
      ['lvchange', '-an', `${VG}/snap-lvm-d1`],
    ]);
  });

  it('grows with lvextend -L (no contiguous policy: device-mapper maps any extents)', async () => {
    const v = await b.createVolume(volume('vol-lvm-g', thin));
    fake.calls = [];
    await b.expandVolume(v, 3n * GiB);
    expect(fake.calls[0]).toEqual(['lvextend', '-L', `${3n * GiB}b`, `${VG}/vol-lvm-g`]);
    expect(fake.calls[1][0]).toBe('lvchange'); // the record's tags follow in one lvchange
    await expect(b.refreshDevice(v, `/dev/${VG}/vol-lvm-g`)).resolves.toBeUndefined();
  });

  it('deletes: refuses while active, removes thin LVs without wiping, wipes linear ones first', async () => {
    const t = await b.createVolume(volume('vol-lvm-t', thin));
    await b.attach(t);
    await expect(b.deleteVolume(t.id)).rejects.toThrow(/still attached/);
    await b.detach(t);
    fake.calls = [];
    await b.deleteVolume(t.id);
    expect(fake.calls).toEqual([['lvremove', '-y', `${VG}/vol-lvm-t`]]);

    await b.createVolume(volume('vol-lvm-lin', linear));
    fake.calls = [];
    host.ops = [];
    await b.deleteVolume('vol-lvm-lin');
    expect(fake.calls).toEqual([
      ['lvchange', '-ay', '-K', `${VG}/vol-lvm-lin`],
      ['lvchange', '-an', `${VG}/vol-lvm-lin`],
      ['lvremove', '-y', `${VG}/vol-lvm-lin`],
    ]);
    expect(host.ops).toEqual([`wipe /dev/${VG}/vol-lvm-lin`]);
  });

  it('reports thin capacity with over-provisioning: ratio x pool, less what thin volumes claim', async () => {
    // pool 10 GiB, 12.5 % written, ratio 10: promised 100 GiB - claimed; capped by 10 x unwritten.
    await b.createVolume(volume('vol-lvm-c', thin, { capacityBytes: 30n * GiB }));
    const cap = await b.capacity(thin);
    expect(cap.availableBytes).toBe(70n * GiB);
  });

  it('does not count an inactive thin pool (no data percent) as empty: capacity says its fill is unknown', async () => {
    await b.createVolume(volume('vol-lvm-u', thin, { capacityBytes: 30n * GiB }));
    fake.lvs.get('pool')!.dataPercent = '';
    await expect(b.capacity(thin)).rejects.toMatchObject({ reason: 'precondition', message: expect.stringMatching(/thin pool vg0\/pool does not report how full it is .*lvchange -ay vg0\/pool/) });
  });

  it('removes LVs left dirty by a crash at start-up, with lvremove', async () => {
    fake.lvs.set('vol-lvm-half', { name: 'vol-lvm-half', size: GiB, tags: ['tscsi.kind=vol', 'tscsi.dirty'], pool: 'pool', active: false, segType: 'thin' });
    fake.calls = [];
    await b.init();
    expect(fake.calls).toContainEqual(['lvremove', '-y', `${VG}/vol-lvm-half`]);
    expect(fake.lvs.has('vol-lvm-half')).toBe(false);
  });

  it('never copies a mounted linear volume inside a freeze: a COW snapshot is cut (lvm\'s suspend of the origin freezes it, none of ours), copied, then removed', async () => {
    const v = await b.createVolume(volume('vol-lvm-m', linear));
    await b.attach(v);
    host.mounted.set(`/dev/${VG}/vol-lvm-m`, '/var/lib/kubelet/staging/m');
    fake.calls = [];
    host.ops = [];
    const snap: SnapshotRecord = { id: 'snap-lvm-m', name: 's', sourceVolumeId: v.id, sizeBytes: GiB, createdAtSeconds: 1n, createdAtNanos: 0, groupSnapshotId: '', parameters: {} };
    await b.createSnapshots([snap]);
    // A freeze of ours would make the kernel refuse lvm's suspend of the origin (EBUSY), as
    // test/guest/lvm-dm-ops.guest.ts shows for a mounted linear volume.
    expect(host.ops.filter((o) => o.startsWith('freeze '))).toEqual([]);
    const cut = fake.calls.findIndex((c) => c[0] === 'lvcreate' && c.includes('-s'));
    expect(fake.calls[cut]).toEqual(['lvcreate', '-y', '-s', '-l', '100%ORIGIN', '-n', 'snap-lvm-m.pit', '--addtag', 'tscsi.pit', `${VG}/vol-lvm-m`]);
    expect(host.ops.filter((o) => o.startsWith('copy '))).toEqual([`copy /dev/${VG}/snap-lvm-m.pit /dev/${VG}/snap-lvm-m ${GiB}`]);
    expect(fake.calls.findIndex((c) => c[0] === 'lvremove' && c.includes(`${VG}/snap-lvm-m.pit`))).toBeGreaterThan(cut);
    expect(fake.lvs.has('snap-lvm-m.pit')).toBe(false);
  });

  it('refuses thin volumes in a pool that does not zero new blocks (a new volume could read a deleted one)', async () => {
    fake.lvs.get('pool')!.zero = false;
    fake.calls = [];
    await expect(b.createVolume(volume('vol-lvm-nz', thin))).rejects.toThrow(/does not zero newly allocated blocks.*lvchange --zero y/);
    expect(fake.calls).toEqual([]);
  });

  it('tells "could not look up the volume group" from "not found" at start-up', async () => {
    fake.vgsFailure = '  /run/lock/lvm/V_vg0:aux: open failed: Permission denied\n  Can\'t get lock for vg0';
    const b2 = new LvmBackend({ volumeGroups: [VG], devices: ['/dev/sdb'], mode: 'auto', stateDir, log: pino({ level: 'silent' }), host, runner: fake.runner });
    const err = await b2.init().then(() => undefined, (e: Error) => e);
    expect(err?.message).toMatch(/could not look up volume group\(s\) vg0: .*Can't get lock for vg0/);
    expect(err?.message).not.toMatch(/not found/);
    fake.vgsFailure = `  Volume group "${VG}" not found\n  Cannot process volume group ${VG}`;
    await expect(b2.init()).rejects.toThrow(/volume group\(s\) vg0 not found on devices \/dev\/sdb/);
  });

  it('removes a copy-source snapshot a crash left behind at start-up', async () => {
    fake.lvs.set('vol-lvm-x.pit', { name: 'vol-lvm-x.pit', size: GiB, tags: ['tscsi.pit'], pool: '', active: true, segType: 'linear' });
    fake.calls = [];
    await b.init();
    expect(fake.calls).toContainEqual(['lvremove', '-y', `${VG}/vol-lvm-x.pit`]);
  });
});

describe('lvm backend, device-mapper mode: health from lvm2\'s reports', () => {
  const pool = () => fake.lvs.get('pool')!;
  const entries = (hs: Array<{ status: string; reason: string }>) => hs.map((x) => `${x.status}/${x.reason}`);

  it('a thin volume in a healthy pool has no problem, nor has the volume group', async () => {
    const v = await b.createVolume(volume('vol-lvm-h', thin));
    expect(await b.volumeHealth(v)).toEqual([]);
    expect(await b.storageHealth()).toEqual([]);
  });

  it('a thin pool over the threshold degrades its volumes and the storage, with the numbers', async () => {
    const v = await b.createVolume(volume('vol-lvm-h', thin));
    pool().dataPercent = '93.75';
    pool().metadataPercent = '91.02';
    const hs = await b.volumeHealth(v);
    expect(entries(hs)).toEqual(['DEGRADED/ThinPoolNearlyFull', 'DEGRADED/ThinPoolMetadataNearlyFull']);
    expect(hs[0].message).toContain(`thin pool ${VG}/pool data is 93.75% used (threshold 90%)`);
    expect(hs[1].message).toContain(`thin pool ${VG}/pool metadata is 91.02% used (threshold 90%)`);
    expect(entries(await b.storageHealth())).toEqual(['STORAGE_DEGRADED/ThinPoolNearlyFull', 'STORAGE_DEGRADED/ThinPoolMetadataNearlyFull']);
  });

  it('a full thin pool (lvm marks it out of data space) makes its volumes inaccessible: writes needing a block fail', async () => {
    const v = await b.createVolume(volume('vol-lvm-h', thin));
    pool().dataPercent = '100.00';
    pool().health = 'D';
    const hs = await b.volumeHealth(v);
    expect(entries(hs)).toEqual(['INACCESSIBLE/ThinPoolFull']);
    expect(hs[0].message).toMatch(/out of data space \(100\.00% used\): writes that need a new block fail/);
    expect(entries(await b.storageHealth())).toEqual(['STORAGE_DEGRADED/ThinPoolFull']);
    // A linear volume beside the pool does not share its fate.
    expect(await b.volumeHealth(await b.createVolume(volume('vol-lvm-lin', linear)))).toEqual([]);
  });

  it('a suspended LV, and one in a failed pool, are inaccessible', async () => {
    const v = await b.createVolume(volume('vol-lvm-h', thin));
    fake.lvs.get('vol-lvm-h')!.state = 's';
    expect(entries(await b.volumeHealth(v))).toEqual(['INACCESSIBLE/DeviceSuspended']);
    fake.lvs.get('vol-lvm-h')!.state = undefined;
    fake.lvs.get('vol-lvm-h')!.health = 'F';
    pool().health = 'F';
    expect(entries(await b.volumeHealth(v))).toEqual(['INACCESSIBLE/ThinPoolFailed']);
  });

  it('a volume group lvm cannot read is unreachable storage, with lvm\'s words', async () => {
    fake.vgsFailure = '  Volume group "vg0" not found';
    const hs = await b.storageHealth();
    expect(entries(hs)).toEqual(['STORAGE_UNREACHABLE/VolumeGroupMissing']);
    fake.vgsFailure = '  Cannot get lock for vg0';
    const locked = await b.storageHealth();
    expect(entries(locked)).toEqual(['STORAGE_UNREACHABLE/LvmUnreadable']);
    expect(locked[0].message).toContain('Cannot get lock for vg0');
  });
});
