// The LVM backend on real lvm2, on a volume group the test makes on a loop-backed PV.
// On these VMs the kernel has no device-mapper, so this exercises the nodm mode: contiguous
// linear LVs exposed through loop windows over their extents, copies for snapshots.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DriverHarness, mountCap, blockCap, MiB, loopDevicesUnder } from '../lib/driver-harness.js';
import { crashAt } from '../lib/crash.js';
import { TestVg } from '../lib/lvm-vg.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';
import { deriveId } from '../../driver/ids.js';
import { execa } from 'execa';

let h: DriverHarness;
let vg: TestVg;
let c: CsiClient;
let foreignTagsBefore: string[] | undefined;

const outcomeOf = (p: Promise<unknown>) => p.then(() => 'OK', (e) => codeName(e));

beforeAll(async () => {
  const dir = await fs.mkdtemp('/tmp/tscsi-lvm-');
  vg = await TestVg.create(dir);
  // An LV the driver did not create: it must never list, change or remove it.
  await vg.lvm(['lvcreate', '-q', '-n', 'not-ours', '-L', '8M', '--addtag', 'owner=someone-else', vg.name]);
  foreignTagsBefore = (await vg.lvs()).get('not-ours');
  h = await DriverHarness.start({ driver: { lvmVolumeGroups: vg.name, lvmDevices: vg.pv, defaultBackend: 'lvm' } });
  c = h.client!;
});

afterAll(async () => {
  await h?.cleanup();
  await vg?.remove();
});

const params = () => vg.params();

/** A loop window over an LV's extents on the PV, as the driver makes to attach it (nodm). */
async function windowOver(lvName: string): Promise<string> {
  const report = async (args: string[], key: string) =>
    (JSON.parse((await vg.lvm([...args, '--reportformat', 'json', '--units', 'b', '--nosuffix'])).stdout) as { report: Array<Record<string, Array<Record<string, string>>>> }).report[0][key][0];
  const seg = await report(['lvs', '--segments', '-o', 'seg_pe_ranges,lv_size', `${vg.name}/${lvName}`], 'seg');
  const pv = await report(['pvs', '-o', 'pe_start', vg.pv], 'pv');
  const info = await report(['vgs', '-o', 'vg_extent_size', vg.name], 'vg');
  const startPe = Number(/:(\d+)-/.exec(seg.seg_pe_ranges)![1]);
  const offset = BigInt(pv.pe_start) + BigInt(startPe) * BigInt(info.vg_extent_size);
  return (await execa('losetup', ['-f', '--show', '--offset', String(offset), '--sizelimit', seg.lv_size, path.join(vg.dir, 'pv.img')])).stdout.trim();
}

async function stage(volumeId: string, name: string, cap = mountCap('ext4')) {
  const staging = path.join(h.dir, 'staging', name);
  await fs.mkdir(staging, { recursive: true });
  await c.Node.NodeStageVolume({ volume_id: volumeId, staging_target_path: staging, volume_capability: cap });
  return staging;
}

describe('lvm backend (no device-mapper: loop windows over the PV)', () => {
  it('lives through create, stage, write, snapshot, restore, online growth and delete, all recorded in LV tags', async () => {
    const cap = mountCap('xfs');
    const v = (await c.Controller.CreateVolume({ name: 'pvc-lvm-1', parameters: params(), capacity_range: { required_bytes: String(320 * MiB) }, volume_capabilities: [cap] })).volume;
    expect(v.volume_id).toMatch(/^vol-lvm-/);
    expect(v.capacity_bytes).toBe(String(320 * MiB));
    const tags = (await vg.lvs()).get(v.volume_id)!;
    expect(tags).toContain('tscsi.kind=vol');
    expect(tags.some((t) => t.startsWith('tscsi.r0='))).toBe(true);
    expect(tags).not.toContain('tscsi.dirty');

    const staging = await stage(v.volume_id, 'v1', cap);
    await fs.writeFile(path.join(staging, 'data'), 'lvm bytes');
    // Without device-mapper there is no snapshot to copy from: a staged volume is not copied
    // (its filesystem would stay frozen for the whole copy), and the error says why.
    const refused = await c.Controller.CreateSnapshot({ name: 'snap-lvm-1', source_volume_id: v.volume_id }).catch((e) => e);
    expect(codeName(refused)).toBe('FAILED_PRECONDITION');
    expect(refused.details).toMatch(/mounted .*no snapshot to copy from.*Unstage/);
    await fs.writeFile(path.join(staging, 'after-refusal'), 'not frozen'); // would hang if left frozen
    expect([...(await vg.lvs()).keys()].filter((n) => n.startsWith('snap-'))).toEqual([]);
    await c.Node.NodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: staging });
    const snap = (await c.Controller.CreateSnapshot({ name: 'snap-lvm-1', source_volume_id: v.volume_id })).snapshot;
    expect(snap.snapshot_id).toMatch(/^snap-lvm-/);
    expect((await vg.lvs()).has(snap.snapshot_id)).toBe(true);

    const restored = (await c.Controller.CreateVolume({ name: 'pvc-lvm-restore', parameters: params(), volume_capabilities: [cap], volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } })).volume;
    const staging2 = await stage(restored.volume_id, 'restored', cap);
    expect(await fs.readFile(path.join(staging2, 'data'), 'utf8')).toBe('lvm bytes');

    // Without device-mapper a volume must stay one contiguous run of extents: the snapshot
    // sits right after the first volume, so it cannot grow in place, and says so.
    const blocked = await c.Controller.ControllerExpandVolume({ volume_id: v.volume_id, capacity_range: { required_bytes: String(480 * MiB) } }).catch((e) => e);
    expect(codeName(blocked)).toBe('RESOURCE_EXHAUSTED');
    expect(blocked.details).toMatch(/contiguous/);
    // The restored volume is last, with free extents after it: online growth works there
    // (lvextend in place, the loop window's size limit, xfs_growfs).
    await c.Controller.ControllerExpandVolume({ volume_id: restored.volume_id, capacity_range: { required_bytes: String(480 * MiB) } });
    const grown = await c.Node.NodeExpandVolume({ volume_id: restored.volume_id, volume_path: staging2 });
    expect(grown.capacity_bytes).toBe(String(480 * MiB));
    const st = await fs.statfs(staging2);
    expect(st.blocks * st.bsize).toBeGreaterThan(400 * MiB);
    expect(await fs.readFile(path.join(staging2, 'data'), 'utf8')).toBe('lvm bytes');

    const listed = (await c.Controller.ListVolumes({})).entries.map((e: any) => e.volume.volume_id);
    expect(listed).toEqual(expect.arrayContaining([v.volume_id, restored.volume_id]));
    expect(listed).not.toContain('not-ours');

    for (const [id, s] of [[v.volume_id, staging], [restored.volume_id, staging2]]) {
      await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: s });
      await c.Controller.DeleteVolume({ volume_id: id });
    }
    await c.Controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id });
    expect([...(await vg.lvs()).keys()]).toEqual(['not-ours']);
    expect((await vg.lvs()).get('not-ours')).toEqual(foreignTagsBefore);
  });

  it('an LV removed by someone else right after the driver looked is seen at once: NodeStage answers NOT_FOUND and attaches nothing', async () => {
    // The driver reuses its last lvm report until a metadata commit; this one is not its own.
    const v = (await c.Controller.CreateVolume({ name: 'pvc-lvm-gone', parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [mountCap('ext4')] })).volume;
    await vg.lvm(['lvremove', '-q', '-y', `${vg.name}/${v.volume_id}`]);
    const staging = path.join(h.dir, 'staging', 'gone');
    await fs.mkdir(staging, { recursive: true });
    expect(await outcomeOf(c.Node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: mountCap('ext4') }))).toBe('NOT_FOUND');
    expect(await loopDevicesUnder(vg.dir)).toEqual([vg.pv]);
  });

  it('wipes new volumes: a filesystem left by a deleted volume does not reappear', async () => {
    const cap = mountCap('ext4');
    const a = (await c.Controller.CreateVolume({ name: 'pvc-old-tenant', parameters: params(), capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume;
    const s = await stage(a.volume_id, 'old');
    await fs.writeFile(path.join(s, 'secret'), 'old tenant');
    await c.Node.NodeUnstageVolume({ volume_id: a.volume_id, staging_target_path: s });
    await c.Controller.DeleteVolume({ volume_id: a.volume_id });
    // Same extents again (first fit); the new volume must come up blank and be formatted anew.
    const b = (await c.Controller.CreateVolume({ name: 'pvc-new-tenant', parameters: params(), capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume;
    const s2 = await stage(b.volume_id, 'new');
    await expect(fs.readFile(path.join(s2, 'secret'))).rejects.toThrow();
    await c.Node.NodeUnstageVolume({ volume_id: b.volume_id, staging_target_path: s2 });
    await c.Controller.DeleteVolume({ volume_id: b.volume_id });
  });

  it('zeroes freed extents: a new volume on a deleted volume\'s extents reads as zeros, raw', async () => {
    const cap = blockCap();
    const size = 16 * MiB;
    const pattern = Buffer.alloc(size, 'TSCSI-OLD-TENANT');
    const useBlock = async (volumeId: string, name: string, fn: (dev: fs.FileHandle) => Promise<void>) => {
      const staging = path.join(h.dir, 'staging', name);
      const target = path.join(h.dir, 'pods', name, 'dev');
      await fs.mkdir(staging, { recursive: true });
      await c.Node.NodeStageVolume({ volume_id: volumeId, staging_target_path: staging, volume_capability: cap });
      await c.Node.NodePublishVolume({ volume_id: volumeId, staging_target_path: staging, target_path: target, volume_capability: cap });
      const fh = await fs.open(target, 'r+');
      try {
        await fn(fh);
      } finally {
        await fh.close();
      }
      await c.Node.NodeUnpublishVolume({ volume_id: volumeId, target_path: target });
      await c.Node.NodeUnstageVolume({ volume_id: volumeId, staging_target_path: staging });
    };
    const seg = async (lv: string) => (await vg.lvm(['lvs', '--noheadings', '-o', 'seg_pe_ranges', `${vg.name}/${lv}`])).stdout.trim();
    const a = (await c.Controller.CreateVolume({ name: 'pvc-raw-old', parameters: params(), capacity_range: { required_bytes: String(size) }, volume_capabilities: [cap] })).volume;
    const extents = await seg(a.volume_id);
    await useBlock(a.volume_id, 'raw-old', async (fh) => {
      await fh.write(pattern, 0, size, 0);
      await fh.sync();
    });
    await c.Controller.DeleteVolume({ volume_id: a.volume_id });
    const b = (await c.Controller.CreateVolume({ name: 'pvc-raw-new', parameters: params(), capacity_range: { required_bytes: String(size) }, volume_capabilities: [cap] })).volume;
    expect(await seg(b.volume_id)).toBe(extents); // first fit: the same extents
    const back = Buffer.alloc(size, 1);
    await useBlock(b.volume_id, 'raw-new', async (fh) => {
      await fh.read(back, 0, size, 0);
    });
    expect(back.includes('OLD-TENANT')).toBe(false);
    expect(back.equals(Buffer.alloc(size))).toBe(true);
    await c.Controller.DeleteVolume({ volume_id: b.volume_id });
  });

  it('refuses hostile parameters with INVALID_ARGUMENT and touches no LV', async () => {
    const before = await vg.lvs();
    const cap = mountCap();
    const cases: Array<Record<string, string>> = [
      { backend: 'lvm', volumeGroup: 'some-other-vg' },
      { backend: 'lvm', volumeGroup: `${vg.name}/../x` },
      { backend: 'lvm', volumeGroup: '../etc' },
      { backend: 'lvm', volumeGroup: vg.name, type: 'thin', thinPool: 'pool' }, // no device-mapper here
      { backend: 'lvm', volumeGroup: vg.name, type: 'mirror' },
      { backend: 'lvm', volumeGroup: vg.name, lvName: 'x/../y' },
    ];
    for (const p of cases) {
      expect(await outcomeOf(c.Controller.CreateVolume({ name: 'pvc-hostile', parameters: p, volume_capabilities: [cap] })), JSON.stringify(p)).toBe('INVALID_ARGUMENT');
    }
    expect(await outcomeOf(c.Controller.DeleteVolume({ volume_id: 'vol-lvm-../../x' }))).toBe('INVALID_ARGUMENT');
    expect(await outcomeOf(c.Controller.DeleteVolume({ volume_id: 'not-ours' }))).toBe('OK'); // not ours: nothing to delete
    expect(await vg.lvs()).toEqual(before);
  });

  it('directIO is a mutable parameter of the loop window: at create, changed live on a staged volume, kept on re-attach', async () => {
    const dio = async (dev: string) => (await fs.readFile(`/sys/block/${path.basename(dev)}/loop/dio`, 'utf8')).trim();
    const windowOf = async (before: string[]) => (await loopDevicesUnder(vg.dir)).filter((d) => !before.includes(d));
    const v = (await c.Controller.CreateVolume({ name: 'pvc-lvm-dio', parameters: params(), mutable_parameters: { directIO: 'false' }, capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [mountCap('ext4')] })).volume;
    const before = await loopDevicesUnder(vg.dir);
    const staging = await stage(v.volume_id, 'dio');
    try {
      const [dev] = await windowOf(before);
      expect(await dio(dev)).toBe('0');
      await c.Controller.ControllerModifyVolume({ volume_id: v.volume_id, mutable_parameters: { directIO: 'true' } });
      expect(await dio(dev)).toBe('1');
      await c.Controller.ControllerModifyVolume({ volume_id: v.volume_id, mutable_parameters: { directIO: 'false' } });
      expect(await dio(dev)).toBe('0');
      expect(await outcomeOf(c.Controller.ControllerModifyVolume({ volume_id: v.volume_id, mutable_parameters: { directIO: 'maybe' } }))).toBe('INVALID_ARGUMENT');
      expect(await outcomeOf(c.Controller.ControllerModifyVolume({ volume_id: v.volume_id, mutable_parameters: { qosIopsLimit: '5' } }))).toBe('INVALID_ARGUMENT');
      expect(await dio(dev)).toBe('0');
      // the record (LV tags) keeps it: the next attach makes the window so
      await c.Node.NodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: staging });
      await stage(v.volume_id, 'dio');
      const [again] = await windowOf(before);
      expect(await dio(again)).toBe('0');
    } finally {
      await c.Node.NodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: staging }).catch(() => undefined);
      await c.Controller.DeleteVolume({ volume_id: v.volume_id });
    }
  });

  it('a driver killed while a clone copies or a delete wipes leaves one LV or none, and the retry finishes', async () => {
    const cap = mountCap('ext4');
    const src = (await c.Controller.CreateVolume({ name: 'pvc-crash-src', parameters: params(), capacity_range: { required_bytes: String(512 * MiB) }, volume_capabilities: [cap] })).volume;
    const existing = new Set((await vg.lvs()).keys());
    const req = { name: 'pvc-crash-clone', parameters: params(), volume_capabilities: [cap], volume_content_source: { volume: { volume_id: src.volume_id } } };
    const clones = () => vg.lvs().then((m) => [...m.entries()].filter(([n]) => n.startsWith('vol-lvm-') && n !== src.volume_id && !existing.has(n)));
    const windows = () => loopDevicesUnder(vg.dir).then((d) => d.filter((x) => x !== vg.pv));

    // Killed 50 ms into the 512 MiB copy: the fail point's log line proves dd was still running.
    const killed = await crashAt(h, 'host.copy:during=50', () => h.client!.Controller.CreateVolume(req), async () => {
      // Mid-copy: the clone LV exists, still marked dirty, and both temporary devices are attached.
      const left = await clones();
      expect(left).toHaveLength(1);
      expect(left[0][1]).toContain('tscsi.dirty');
      expect(await windows()).toHaveLength(2);
    });
    c = h.client!;
    expect(killed.first).toBe('UNAVAILABLE');
    expect(killed.fired.tool).toMatch(/^dd if=/);
    // The restarted driver removed the half-copied LV and both temporary devices.
    expect(await clones()).toEqual([]);
    expect(await windows()).toEqual([]);
    const clone = (await c.Controller.CreateVolume(req)).volume;
    expect((await clones()).map(([n]) => n)).toEqual([clone.volume_id]);
    expect((await vg.lvs()).get(clone.volume_id)).not.toContain('tscsi.dirty');

    // Killed while the delete wipes the LV through a temporary device: the retry must not
    // take that device for a staged volume's and refuse for ever.
    const wiping = await crashAt(
      h,
      'host.wipe:during',
      () => h.client!.Controller.DeleteVolume({ volume_id: clone.volume_id }),
      async () => expect(await windows()).toHaveLength(1),
    );
    c = h.client!;
    expect(wiping.first).toBe('UNAVAILABLE');
    expect(await windows()).toEqual([]);
    await c.Controller.DeleteVolume({ volume_id: clone.volume_id });
    await c.Controller.DeleteVolume({ volume_id: src.volume_id });
    expect(await clones()).toEqual([]);
    expect([...(await vg.lvs()).keys()]).toEqual(['not-ours']);
  });

  it('an LV whose record cannot be read is logged and left out: listing and capacity go on', async () => {
    const good = (await c.Controller.CreateVolume({ name: 'pvc-good-neighbour', parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [blockCap()] })).volume;
    const goodSnap = (await c.Controller.CreateSnapshot({ name: 'snap-good-neighbour', source_volume_id: good.volume_id })).snapshot;
    const b64 = (text: string) => Buffer.from(text).toString('base64url');
    const badVolJson = deriveId('vol', 'lvm', 'bad-json');
    const badVolShape = deriveId('vol', 'lvm', 'bad-shape');
    const badSnapShape = deriveId('snap', 'lvm', 'bad-shape');
    const badSnapNone = deriveId('snap', 'lvm', 'no-record');
    // Hand-edited or half-written tags: JSON cut short, a record missing the fields a listing
    // needs (it parses), and a kind tag without any record.
    const bad: Array<[string, string[]]> = [
      [badVolJson, ['tscsi.kind=vol', `tscsi.r0=${b64('{"id": "half a rec')}`]],
      [badVolShape, ['tscsi.kind=vol', `tscsi.r0=${b64(JSON.stringify({ id: badVolShape, name: 'x' }))}`]],
      [badSnapShape, ['tscsi.kind=snap', `tscsi.r0=${b64(JSON.stringify({ id: badSnapShape, sizeBytes: '1048576' }))}`]],
      [badSnapNone, ['tscsi.kind=snap']],
    ];
    try {
      for (const [name, tags] of bad) await vg.lvm(['lvcreate', '-q', '-n', name, '-L', '8M', ...tags.flatMap((t) => ['--addtag', t]), vg.name]);
      const vols = (await c.Controller.ListVolumes({})).entries.map((e: any) => e.volume.volume_id);
      expect(vols).toContain(good.volume_id);
      expect(vols).not.toEqual(expect.arrayContaining([badVolJson]));
      expect(vols).not.toEqual(expect.arrayContaining([badVolShape]));
      const snaps = (await c.Controller.ListSnapshots({})).entries.map((e: any) => e.snapshot.snapshot_id);
      expect(snaps).toEqual([goodSnap.snapshot_id]);
      expect(BigInt((await c.Controller.GetCapacity({ parameters: params() })).available_capacity)).toBeGreaterThan(0n);
      const log = await h.log();
      expect(log).toContain('skipped an LV whose record cannot be read');
      for (const [name] of bad) expect(log, name).toContain(`${vg.name}/${name}`);
    } finally {
      for (const [name] of bad) await vg.lvm(['lvremove', '-y', `${vg.name}/${name}`]).catch(() => undefined);
    }
    await c.Controller.DeleteSnapshot({ snapshot_id: goodSnap.snapshot_id });
    await c.Controller.DeleteVolume({ volume_id: good.volume_id });
    expect([...(await vg.lvs()).keys()]).toEqual(['not-ours']);
  });

  it('DeleteVolume of a published volume whose record cannot be read is refused, and removes nothing (#13 item 4)', async () => {
    const v = (await c.Controller.CreateVolume({ name: 'pvc-unreadable-published', parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [blockCap()] })).volume;
    await c.Controller.ControllerPublishVolume({ volume_id: v.volume_id, node_id: h.nodeId, volume_capability: blockCap() });
    const recordTags = (await vg.lvs()).get(v.volume_id)!.filter((t) => t.startsWith('tscsi.r'));
    const cut = `tscsi.r0=${Buffer.from('{"id": "cut sh').toString('base64url')}`;
    const swap = (del: string[], add: string[]) => vg.lvm(['lvchange', ...del.flatMap((t) => ['--deltag', t]), ...add.flatMap((t) => ['--addtag', t]), `${vg.name}/${v.volume_id}`]);
    await swap(recordTags, [cut]);
    try {
      const err = await c.Controller.DeleteVolume({ volume_id: v.volume_id }).then(() => undefined, (e: Error) => e);
      expect(codeName(err)).toBe('FAILED_PRECONDITION');
      expect(err?.message).toContain(`${vg.name}/${v.volume_id} exists but its record (LV tags) cannot be read`);
      expect(err?.message).toContain(`lvremove ${vg.name}/${v.volume_id}`);
      expect([...(await vg.lvs()).keys()]).toContain(v.volume_id);
    } finally {
      await swap([cut], recordTags);
    }
    await c.Controller.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: h.nodeId });
    expect(await outcomeOf(c.Controller.DeleteVolume({ volume_id: v.volume_id }))).toBe('OK');
    expect([...(await vg.lvs()).keys()]).toEqual(['not-ours']);
  });

  it('a half-made LV that is attached and held open is not removed, at start-up or by the retry, until it is let go', async () => {
    const req = { name: 'pvc-held', parameters: params(), capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [blockCap()] };
    const id = deriveId('vol', 'lvm', req.name);
    // What a create killed after lvcreate leaves, with its device still attached and in use.
    await vg.lvm(['lvcreate', '-q', '-n', id, '-L', '16M', '--alloc', 'contiguous', '--addtag', 'tscsi.kind=vol', '--addtag', 'tscsi.dirty', vg.name]);
    const dev = await windowOver(id);
    const held = await fs.open(dev, 'r');
    try {
      await h.stopProcess();
      await h.startProcess();
      c = h.client!;
      expect((await vg.lvs()).get(id)).toContain('tscsi.dirty');
      expect(await h.log()).toContain('left an LV whose create did not finish: it could not be detached');
      const refused = await c.Controller.CreateVolume(req).catch((e) => e);
      expect(codeName(refused)).toBe('FAILED_PRECONDITION');
      expect(refused.details).toMatch(/still attached as \/dev\/loop\d+ and could not be detached/);
      expect((await vg.lvs()).get(id)).toContain('tscsi.dirty');
    } finally {
      await held.close();
      // The driver's detach only marked the busy device to go at its last close; make sure it went.
      await execa('losetup', ['-d', dev], { reject: false });
    }
    const made = (await c.Controller.CreateVolume(req)).volume;
    expect(made.volume_id).toBe(id);
    expect((await vg.lvs()).get(id)).not.toContain('tscsi.dirty');
    await c.Controller.DeleteVolume({ volume_id: id });
    expect([...(await vg.lvs()).keys()]).toEqual(['not-ours']);
  });
});
