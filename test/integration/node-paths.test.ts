// The node service against hostile and odd paths, on real loop devices and real mounts:
// it mounts only below its allowed roots and never through a symlink (#11 item 11), a
// failed NodeStage leaves nothing behind (item 12), NodeUnpublish removes only what
// NodePublish made (item 13), devices are matched by major:minor, not by name (item 5),
// and the smaller answers of item 14. "Outside" directories stand in for /etc: each test
// makes its own under /tmp, outside the harness's roots, so a regression mounts nothing
// over a real host directory.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { pino } from 'pino';
import { DriverHarness, mountCap, blockCap, MiB, loopDevicesUnder, mountsUnder } from '../lib/driver-harness.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';
import type { ControllerService } from '../../driver/controller.js';
import type { NodeService } from '../../driver/node.js';
import { resolveSettings } from '../../driver/config.js';
import { createDriver } from '../../driver/create.js';
import { LoopBackend } from '../../driver/backends/loop/index.js';
import type { Backend, VolumeRecord } from '../../driver/backends/backend.js';
import { mountedFilesystems } from '../../driver/host/freeze.js';
import { TestVg } from '../lib/lvm-vg.js';

let h: DriverHarness;
let c: CsiClient;
const outsideDirs: string[] = [];

beforeAll(async () => {
  h = await DriverHarness.start();
  c = h.client!;
});

afterAll(async () => {
  // A regression mounts into the outside directories: unmount them before the harness
  // detaches its loop devices, then remove them.
  for (const d of outsideDirs) for (const m of (await mountsUnder(d)).concat(d).reverse()) await execa('umount', ['-l', m], { reject: false });
  await h?.cleanup();
  for (const d of outsideDirs) await fs.rm(d, { recursive: true, force: true });
});

const outcomeOf = (p: Promise<unknown>) => p.then(() => 'OK', (e) => codeName(e) ?? String(e));

async function outside(): Promise<string> {
  const d = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-np-outside-'));
  outsideDirs.push(d);
  return d;
}

async function isMountPoint(p: string): Promise<boolean> {
  return (await execa('findmnt', ['-rn', '--mountpoint', p], { reject: false })).exitCode === 0;
}

async function loopsOf(volumeId: string): Promise<string[]> {
  const r = await execa('losetup', ['-l', '-n', '-O', 'NAME,BACK-FILE']);
  return r.stdout.split('\n').filter((l) => l.includes(`${volumeId}.img`)).map((l) => l.split(/\s+/)[0]);
}

const stateFile = (volumeId: string) => path.join(h.stateDir, `${volumeId}.json`);
const stagingDir = (name: string) => path.join(h.dir, 'staging', name);
const podDir = (name: string) => path.join(h.dir, 'pods', name);

async function createVolume(name: string, cap: object = mountCap('ext4')): Promise<string> {
  return (await c.Controller.CreateVolume({ name, capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [cap] })).volume.volume_id;
}

/** The volume is neither recorded, attached nor mounted anywhere, and DeleteVolume works. */
async function expectReleasable(volumeId: string): Promise<void> {
  expect(existsSync(stateFile(volumeId)), 'no staging record').toBe(false);
  expect(await loopsOf(volumeId), 'no loop device').toEqual([]);
  expect(await outcomeOf(c.Controller.DeleteVolume({ volume_id: volumeId }))).toBe('OK');
}

describe('NodeStage and NodePublish mount only below the allowed roots (#11 item 11)', () => {
  it('refuses staging paths outside the roots or through a symlink, touching nothing', async () => {
    const cap = mountCap('ext4');
    const id = await createVolume('pvc-np-stage-out', cap);
    const out = await outside();
    await fs.mkdir(path.join(h.dir, 'staging', 'via'), { recursive: true });
    await fs.symlink(out, path.join(h.dir, 'staging', 'link'));
    await fs.symlink(out, path.join(h.dir, 'staging', 'via', 'dirlink'));
    const cases: Array<[string, string]> = [
      ['a host directory outside the roots', out],
      ['a symlink below a root to a host directory', path.join(h.dir, 'staging', 'link')],
      ['a path through a symlinked directory below a root', path.join(h.dir, 'staging', 'via', 'dirlink', 'x')],
      ['/', '/'],
      ['/proc/self', '/proc/self'],
      ['/etc', '/etc'],
    ];
    for (const [what, p] of cases) {
      expect(await outcomeOf(c.Node.NodeStageVolume({ volume_id: id, staging_target_path: p, volume_capability: cap })), what).toBe('INVALID_ARGUMENT');
      expect(await isMountPoint(out), what).toBe(false);
      expect(await fs.readdir(out), what).toEqual([]);
      expect(existsSync(stateFile(id)), what).toBe(false);
      expect(await loopsOf(id), what).toEqual([]);
    }
    await expectReleasable(id);
  });

  it('refuses mount targets outside the roots, through symlinks, non-empty or not directories', async () => {
    const cap = mountCap('ext4');
    const id = await createVolume('pvc-np-pub-out', cap);
    const staging = stagingDir('pub-out');
    await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
    const out = await outside();
    await fs.mkdir(podDir('pub-out'), { recursive: true });
    await fs.symlink(out, path.join(podDir('pub-out'), 'link'));
    await fs.mkdir(path.join(podDir('pub-out'), 'full'));
    await fs.writeFile(path.join(podDir('pub-out'), 'full', 'keep'), 'host data');
    await fs.writeFile(path.join(podDir('pub-out'), 'file'), 'host data');
    const cases: Array<[string, string, string]> = [
      ['a host directory outside the roots', out, 'INVALID_ARGUMENT'],
      ['a symlink to a host directory', path.join(podDir('pub-out'), 'link'), 'INVALID_ARGUMENT'],
      ['a directory with files in it', path.join(podDir('pub-out'), 'full'), 'FAILED_PRECONDITION'],
      ['a regular file (EEXIST for mkdir)', path.join(podDir('pub-out'), 'file'), 'FAILED_PRECONDITION'],
    ];
    for (const [what, target, code] of cases) {
      expect(await outcomeOf(c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap })), what).toBe(code);
      expect(await isMountPoint(target), what).toBe(false);
    }
    expect(await fs.readdir(out)).toEqual([]);
    expect(await fs.readFile(path.join(podDir('pub-out'), 'full', 'keep'), 'utf8')).toBe('host data');
    expect(await fs.readFile(path.join(podDir('pub-out'), 'file'), 'utf8')).toBe('host data');
    await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
    await expectReleasable(id);
  });

  it('binds a block volume only onto an empty file it may use', async () => {
    const cap = blockCap();
    const id = await createVolume('pvc-np-blk-out', cap);
    const staging = stagingDir('blk-out');
    await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
    const dir = podDir('blk-out');
    await fs.mkdir(path.join(dir, 'emptydir'), { recursive: true });
    await fs.writeFile(path.join(dir, 'data'), 'host data');
    const out = await outside();
    await fs.writeFile(path.join(out, 'null'), 'stands in for /dev/null');
    await fs.symlink(path.join(out, 'null'), path.join(dir, 'link'));
    const cases: Array<[string, string, string]> = [
      ['a file with data in it', path.join(dir, 'data'), 'FAILED_PRECONDITION'],
      ['a directory (EISDIR)', path.join(dir, 'emptydir'), 'FAILED_PRECONDITION'],
      ['a symlink to a host file', path.join(dir, 'link'), 'INVALID_ARGUMENT'],
      ['a host file outside the roots', path.join(out, 'null'), 'INVALID_ARGUMENT'],
    ];
    for (const [what, target, code] of cases) {
      expect(await outcomeOf(c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap })), what).toBe(code);
      expect(await isMountPoint(target), what).toBe(false);
    }
    expect(await fs.readFile(path.join(dir, 'data'), 'utf8')).toBe('host data');
    expect(await fs.readFile(path.join(out, 'null'), 'utf8')).toBe('stands in for /dev/null');
    await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
    await expectReleasable(id);
  });
});

describe('a failed NodeStage leaves nothing that no RPC can release (#11 item 12)', () => {
  it('staging to / is refused before anything is recorded or attached', async () => {
    const cap = mountCap('ext4');
    const id = await createVolume('pvc-np-root', cap);
    expect(await outcomeOf(c.Node.NodeStageVolume({ volume_id: id, staging_target_path: '/', volume_capability: cap }))).toBe('INVALID_ARGUMENT');
    await expectReleasable(id);
  });

  it('a NodeStage that fails after attaching detaches the device and forgets the staging', async () => {
    const cap = mountCap('ext4');
    const id = await createVolume('pvc-np-undo', cap);
    // Someone else's filesystem on the volume: NodeStage refuses to format it, after attaching.
    await execa('mkfs.ext2', ['-q', '-F', path.join(h.dataDir, 'volumes', `${id}.img`)]);
    const staging = stagingDir('undo');
    expect(await outcomeOf(c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap }))).toBe('FAILED_PRECONDITION');
    expect(await isMountPoint(staging)).toBe(false);
    await expectReleasable(id);
  });

  it('mount flags of another filesystem are refused before attaching (#11 item 14)', async () => {
    const cap = mountCap('xfs');
    const id = await createVolume('pvc-np-flags', cap);
    const staging = stagingDir('flags');
    const code = await outcomeOf(c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: mountCap('xfs', 'SINGLE_NODE_WRITER', ['data=journal']) }));
    expect(code).toBe('INVALID_ARGUMENT');
    await expectReleasable(id);
  });

  it('a staging path that is a file is FAILED_PRECONDITION, not INTERNAL (#11 item 14)', async () => {
    const cap = mountCap('ext4');
    const id = await createVolume('pvc-np-eexist', cap);
    const staging = stagingDir('eexist');
    await fs.writeFile(staging, 'not a directory');
    expect(await outcomeOf(c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap }))).toBe('FAILED_PRECONDITION');
    expect(await fs.readFile(staging, 'utf8')).toBe('not a directory');
    await expectReleasable(id);
  });
});

describe('NodeUnpublish removes only what NodePublish made (#11 item 13)', () => {
  it('leaves a target directory the CO made and removes the one it made', async () => {
    const cap = mountCap('ext4');
    const id = await createVolume('pvc-np-rmdir', cap);
    const staging = stagingDir('rmdir');
    await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
    const coMade = podDir('rmdir-co');
    const ours = podDir('rmdir-ours');
    await fs.mkdir(coMade, { recursive: true });
    for (const t of [coMade, ours]) await c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: t, volume_capability: cap });
    for (const t of [coMade, ours]) await c.Node.NodeUnpublishVolume({ volume_id: id, target_path: t });
    expect(existsSync(coMade), 'the directory the CO made is still there').toBe(true);
    expect(existsSync(ours), 'the directory NodePublish made is gone').toBe(false);
    await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
    await expectReleasable(id);
  });

  it('a target it cannot remove does not wedge the volume', async () => {
    const cap = mountCap('ext4');
    const id = await createVolume('pvc-np-wedge', cap);
    const staging = stagingDir('wedge');
    const target = podDir('wedge');
    await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
    await c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap });
    // Unmounted behind the driver's back and written into: rmdir fails with ENOTEMPTY.
    await execa('umount', [target]);
    await fs.writeFile(path.join(target, 'written-after'), 'x');
    expect(await outcomeOf(c.Node.NodeUnpublishVolume({ volume_id: id, target_path: target }))).toBe('OK');
    expect(await fs.readFile(path.join(target, 'written-after'), 'utf8')).toBe('x');
    expect(await outcomeOf(c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging }))).toBe('OK');
    await expectReleasable(id);
  });
});

describe('answers of item 14', () => {
  it('NodeGetVolumeStats and NodeExpandVolume at a path the volume is not at answer NOT_FOUND', async () => {
    const cap = mountCap('xfs');
    const id = await createVolume('pvc-np-stats', cap);
    const staging = stagingDir('stats');
    const target = podDir('stats');
    await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
    await c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap });
    expect(await outcomeOf(c.Node.NodeGetVolumeStats({ volume_id: id, volume_path: target }))).toBe('OK');
    // The pool is another XFS: xfs_growfs must never be pointed at it.
    expect(await outcomeOf(c.Node.NodeExpandVolume({ volume_id: id, volume_path: h.dataDir, capacity_range: { required_bytes: String(32 * MiB) } }))).toBe('NOT_FOUND');
    // Another filesystem on top of the target: the stats would be someone else's.
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tscsi-np-tmpfs', target]);
    try {
      expect(await outcomeOf(c.Node.NodeGetVolumeStats({ volume_id: id, volume_path: target }))).toBe('NOT_FOUND');
    } finally {
      await execa('umount', [target]);
    }
    await c.Node.NodeUnpublishVolume({ volume_id: id, target_path: target });
    await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
    await expectReleasable(id);
  });
});

describe('NodeUnpublish and NodeUnstage of a volume whose storage is gone (#13)', () => {
  // Gone by hand (or by a crash): the backing file, or the file and the record with it.
  const losses = [
    ['its backing file', ['img']],
    ['its backing file and its record', ['img', 'json']],
  ] as const;
  for (const [kind, cap] of [
    ['mount', mountCap('ext4')],
    ['block', blockCap()],
  ] as const) {
    for (const [what, files] of losses) {
      it(`a staged and published ${kind} volume that lost ${what} is unpublished and unstaged: no mount, loop device or record is left`, async () => {
        const name = `gone-${kind}-${files.length}`;
        const id = await createVolume(`pvc-np-${name}`, cap);
        const staging = stagingDir(name);
        const target = podDir(name);
        await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
        await c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap });
        for (const ext of files) await fs.rm(path.join(h.dataDir, 'volumes', `${id}.${ext}`));
        expect(await outcomeOf(c.Node.NodeUnpublishVolume({ volume_id: id, target_path: target }))).toBe('OK');
        expect(await isMountPoint(target), 'target unmounted').toBe(false);
        expect(existsSync(target), 'the target NodePublish made is removed').toBe(false);
        expect(await outcomeOf(c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging }))).toBe('OK');
        expect(await isMountPoint(staging), 'staging path unmounted').toBe(false);
        expect(await loopsOf(id), 'no loop device').toEqual([]);
        expect(existsSync(stateFile(id)), 'no staging record').toBe(false);
        // A retry whose first reply was lost: not staged or published there any more is OK.
        expect(await outcomeOf(c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging }))).toBe('OK');
        expect(await outcomeOf(c.Node.NodeUnpublishVolume({ volume_id: id, target_path: target }))).toBe('OK');
        expect(await outcomeOf(c.Controller.DeleteVolume({ volume_id: id }))).toBe('OK');
      });
    }
  }

  it('a mount that is not the gone volume\'s stays, and the staging is kept for a retry', async () => {
    const cap = mountCap('ext4');
    const id = await createVolume('pvc-np-gone-foreign', cap);
    const staging = stagingDir('gone-foreign');
    await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
    for (const ext of ['img', 'json']) await fs.rm(path.join(h.dataDir, 'volumes', `${id}.${ext}`));
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tscsi-np-foreign', staging]);
    try {
      expect(await outcomeOf(c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging }))).toBe('FAILED_PRECONDITION');
      expect((await execa('findmnt', ['-rn', '-o', 'SOURCE', '--mountpoint', staging])).stdout.trim().split('\n').pop()).toBe('tscsi-np-foreign');
      expect(existsSync(stateFile(id)), 'staging record kept').toBe(true);
    } finally {
      await execa('umount', [staging]);
    }
    expect(await outcomeOf(c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging }))).toBe('OK');
    expect(await isMountPoint(staging)).toBe(false);
    expect(await loopsOf(id)).toEqual([]);
    expect(existsSync(stateFile(id))).toBe(false);
  });

  // The spec: "not staged to the staging_target_path" MUST be OK; it is also the retry of an
  // unstage whose reply was lost, which kubelet repeats until it gets OK.
  it('a volume neither known nor staged here: unstage and unpublish are OK, a foreign mount at the path stops them, an ID no backend issued is NOT_FOUND', async () => {
    const id = (await createVolume('pvc-np-gone-unknown')).replace(/.$/, (x) => (x === '0' ? '1' : '0'));
    expect(await outcomeOf(c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: stagingDir('unknown') }))).toBe('OK');
    expect(await outcomeOf(c.Node.NodeUnpublishVolume({ volume_id: id, target_path: podDir('unknown') }))).toBe('OK');
    const staging = stagingDir('unknown-foreign');
    await fs.mkdir(staging, { recursive: true });
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tscsi-np-foreign2', staging]);
    try {
      expect(await outcomeOf(c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging }))).toBe('FAILED_PRECONDITION');
      expect(await isMountPoint(staging), 'a mount this node cannot tie to the volume stays').toBe(true);
    } finally {
      await execa('umount', [staging]);
    }
    const foreignId = id.replace(/^vol-[a-z]+-/, 'vol-nosuchbackend-');
    expect(await outcomeOf(c.Node.NodeUnstageVolume({ volume_id: foreignId, staging_target_path: stagingDir('unknown') }))).toBe('NOT_FOUND');
  });
});

describe('NodeUnpublish and NodeUnstage of an LVM volume whose LV was removed (nodm, #13)', () => {
  let vg: TestVg | undefined;
  let lh: DriverHarness | undefined;

  beforeAll(async () => {
    vg = await TestVg.create(await fs.mkdtemp('/tmp/tscsi-np-lvm-'), 0, [256]);
    lh = await DriverHarness.start({ driver: { lvmVolumeGroups: vg.name, lvmDevices: vg.pv, lvmMode: 'nodm', defaultBackend: 'lvm' } });
  });

  afterAll(async () => {
    await lh?.cleanup();
    await vg?.remove();
  });

  /** Loop devices over the PV's file other than the PV itself: the LVs' windows. */
  const windows = async () => (await loopDevicesUnder(vg!.dir)).filter((d) => d !== vg!.pv);

  for (const [kind, cap, olderRecord] of [
    ['mount', mountCap('ext4'), false],
    ['block', blockCap(), false],
    // Staging records of older versions name no device: the one mounted at the staging path is checked instead.
    ['mount', mountCap('ext4'), true],
  ] as const) {
    it(`a staged and published ${kind} volume${olderRecord ? ' with a staging record of an older version' : ''}: its window is detached and nothing is left`, async () => {
      const lc = lh!.client!;
      const id = (await lc.Controller.CreateVolume({ name: `pvc-np-lv-${kind}${olderRecord ? '-older' : ''}`, parameters: vg!.params(), capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [cap] })).volume.volume_id;
      const staging = path.join(lh!.dir, 'staging', `${kind}${olderRecord ? '-older' : ''}`);
      const target = path.join(lh!.dir, 'pods', `${kind}${olderRecord ? '-older' : ''}`);
      await lc.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
      await lc.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap });
      expect(await windows()).toHaveLength(1);
      if (olderRecord) {
        const file = path.join(lh!.stateDir, `${id}.json`);
        const { device: _, ...older } = JSON.parse(await fs.readFile(file, 'utf8')) as { device?: string };
        await fs.writeFile(file, JSON.stringify(older));
      }
      await vg!.lvm(['lvremove', '-y', `${vg!.name}/${id}`]);
      expect(await outcomeOf(lc.Node.NodeUnpublishVolume({ volume_id: id, target_path: target }))).toBe('OK');
      expect(await isMountPoint(target)).toBe(false);
      expect(await outcomeOf(lc.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging }))).toBe('OK');
      expect(await isMountPoint(staging)).toBe(false);
      expect(await windows(), 'the removed LV\'s window is detached').toEqual([]);
      expect(existsSync(path.join(lh!.stateDir, `${id}.json`))).toBe(false);
      expect(await outcomeOf(lc.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging })), 'a retry of the unstage (its reply lost)').toBe('OK');
    });
  }
});

/**
 * A backend that names its devices by a symlink, as LVM's device-mapper mode does
 * (/dev/<vg>/<lv> -> ../dm-N, shown in mountinfo as /dev/mapper/<vg>-<lv>): the real loop
 * backend, with each device handed out under a symlink of its own.
 */
function symlinkNamedBackend(loop: LoopBackend, linkDir: string): Backend {
  const link = async (rec: VolumeRecord, dev: string | undefined) => {
    if (!dev) return undefined;
    const l = path.join(linkDir, `vg-${rec.id.slice(-8)}`);
    await fs.rm(l, { force: true });
    await fs.symlink(dev, l);
    return l;
  };
  const b = Object.create(loop) as Backend;
  b.attach = async (rec) => link(rec, await loop.attach(rec)) as Promise<string>;
  b.attachedDevice = async (rec) => link(rec, await loop.attachedDevice(rec));
  return b;
}

describe('devices are matched by major:minor, not by name (#11 item 5)', () => {
  let dir: string;
  let node: NodeService;
  let controller: ControllerService;

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-np-dm-'));
    const log = pino({ level: 'silent' });
    const loop = new LoopBackend({ dataDir: path.join(dir, 'data'), maxVolumeBytes: 1n << 40n, log });
    await loop.init();
    await fs.mkdir(path.join(dir, 'mapper'));
    await fs.mkdir(path.join(dir, 'kubelet'));
    const settings = resolveSettings({
      nodeId: 'np-node',
      dataDir: path.join(dir, 'data'),
      stateDir: path.join(dir, 'node'),
      allowedPathRoot: [path.join(dir, 'kubelet')],
      maxVolumesPerNode: 16,
      defaultVolumeSize: '32Mi',
    });
    // The real loop backend, its devices seen under symlinked names as device-mapper's are.
    const drv = await createDriver(settings, { log, backends: [symlinkNamedBackend(loop, path.join(dir, 'mapper'))] });
    node = drv.services.node!;
    controller = drv.services.controller!;
  });

  afterAll(async () => {
    if (!dir) return;
    for (const m of (await mountsUnder(dir)).reverse()) await execa('umount', ['-l', m], { reject: false });
    for (const d of await loopDevicesUnder(dir)) await execa('losetup', ['-d', d], { reject: false });
    await fs.rm(dir, { recursive: true, force: true });
  });

  for (const [kind, cap] of [
    ['mount', mountCap('ext4')],
    ['block', blockCap()],
  ] as const) {
    it(`stages, publishes, unpublishes and unstages a ${kind} volume whose device is a symlink`, async () => {
      const v = (await controller.CreateVolume({ name: `pvc-np-dm-${kind}`, capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [cap] } as never)).volume!;
      const staging = path.join(dir, 'kubelet', 'staging', kind);
      const target = path.join(dir, 'kubelet', 'pods', kind, 'vol');
      const stage = { volume_id: v.volume_id, staging_target_path: staging, volume_capability: cap } as never;
      const publish = { volume_id: v.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap } as never;
      await node.NodeStageVolume(stage);
      await node.NodeStageVolume(stage); // a retry finds its own mount under the other name
      // What a snapshot would freeze: the staged filesystem, found under the device's other name.
      const link = path.join(dir, 'mapper', `vg-${v.volume_id!.slice(-8)}`);
      expect(await mountedFilesystems([link])).toEqual(kind === 'mount' ? [staging] : []);
      await node.NodePublishVolume(publish);
      await node.NodePublishVolume(publish);
      expect(await outcomeOf(node.NodeGetVolumeStats({ volume_id: v.volume_id, volume_path: target } as never))).toBe('OK');
      await node.NodeUnpublishVolume({ volume_id: v.volume_id, target_path: target } as never);
      expect(await isMountPoint(target)).toBe(false);
      await node.NodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: staging } as never);
      expect(await isMountPoint(staging)).toBe(false);
      expect(await loopDevicesUnder(path.join(dir, 'data', 'volumes'))).toEqual([]);
      await controller.DeleteVolume({ volume_id: v.volume_id } as never);
    });
  }
});
