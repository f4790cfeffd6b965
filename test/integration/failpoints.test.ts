// Crash at every step: for each fail point (driver/failpoints.ts) the driver is started with
// that one point armed, the RPC runs until the driver kills itself and its children there
// (the log line names the point: that is how the test shows where it died), the driver is
// started again without fail points, the same RPC is retried to completion, and then:
// exactly one volume/snapshot or none, the data written before is intact, and nothing is
// leaked (files, loop devices, mounts, LVs, frozen filesystems) in this harness's own
// directories and volume group.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { DriverHarness, mountCap, MiB, loopDevices, loopDevicesUnder, mountsUnder } from '../lib/driver-harness.js';
import { TestVg } from '../lib/lvm-vg.js';
import { crashAt } from '../lib/crash.js';
import { codeName, type CsiClient } from '../../sidecars/common/csi-client.js';
import { FAILPOINTS } from '../../driver/failpoints.js';
import { startCeph, stopCeph, adminRbd, adminRbdRuns, cleanupDriverDir, type CephEnv } from '../lib/ceph/cluster.js';
import { volumeImage, snapshotImage } from '../../driver/backends/rbd/index.js';

let h: DriverHarness;
let vg: TestVg | undefined;
const c = (): CsiClient => h.client!;

interface Outcome {
  backend: string;
  rpc: string;
  point: string;
  firstAttempt: string;
  retry: string;
  result: string;
  ms: number;
  /** Where the run's time went, phase by phase (the CI budget is watched through this). */
  phases: string;
}
const outcomes: Outcome[] = [];

/** Prints how every run ended: the report of this test. */
afterAll(() => {
  if (outcomes.length) {
    const rows = outcomes.map((o) => [o.backend, o.rpc, o.point, o.firstAttempt, o.retry, o.result, `${(o.ms / 1000).toFixed(1)}s`, o.phases]);
    const head = ['backend', 'rpc', 'fail point', 'killed call', 'retry', 'after retry', 'time', 'phases (s)'];
    const w = head.map((x, i) => Math.max(x.length, ...rows.map((r) => r[i].length)));
    const line = (r: string[]) => r.map((x, i) => x.padEnd(w[i])).join('  ');
    const ok = outcomes.filter((o) => o.result === 'ok').length;
    process.stdout.write(`\nfail points: ${outcomes.length} runs over ${new Set(outcomes.map((o) => o.point.replace(/:during.*/, ''))).size} points, ${ok} ok, ${outcomes.length - ok} not ok\n${line(head)}\n${rows.map(line).join('\n')}\n\n`);
  }
});

// ---- helpers -----------------------------------------------------------------------

const loopParams = () => ({ backend: 'loop' });
const lvmParams = () => ({ backend: 'lvm', volumeGroup: vg!.name });
const SIZE = 64 * MiB;

async function createVol(name: string, params: Record<string, string>, extra: object = {}) {
  return (await c().Controller.CreateVolume({ name, parameters: params, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [mountCap('ext4')], ...extra })).volume;
}

function stagingOf(name: string) {
  return path.join(h.dir, 'staging', name);
}
function targetOf(name: string) {
  return path.join(h.dir, 'pods', name, 'mount');
}

async function stage(volumeId: string, name: string, cap = mountCap('ext4')) {
  const staging = stagingOf(name);
  await fs.mkdir(staging, { recursive: true });
  await c().Node.NodeStageVolume({ volume_id: volumeId, staging_target_path: staging, volume_capability: cap });
  return staging;
}

/** A pattern written and fsynced into a mounted volume; read back by readPattern. */
async function writePattern(dir: string): Promise<Buffer> {
  const data = randomBytes(512 * 1024);
  const fh = await fs.open(path.join(dir, 'pattern'), 'w');
  await fh.writeFile(data);
  await fh.sync();
  await fh.close();
  return data;
}

async function readPattern(dir: string): Promise<Buffer> {
  return fs.readFile(path.join(dir, 'pattern'));
}

/** Restores a snapshot into a new volume, stages it and returns what the pattern file holds. */
async function restoreAndRead(snapshotId: string, name: string, params: Record<string, string>): Promise<Buffer> {
  const v = await createVol(name, params, { volume_content_source: { snapshot: { snapshot_id: snapshotId } } });
  return readPattern(await stage(v.volume_id, name));
}

/** A filesystem left frozen is a leak: `fsfreeze -u` succeeds only on a frozen one (and thaws it). */
async function frozenMounts(): Promise<string[]> {
  const mounts = (await mountsUnder(h.dir)).filter((m) => m !== h.dataDir);
  const thawed = await Promise.all(mounts.map(async (m) => (await execa('fsfreeze', ['-u', m], { reject: false })).exitCode === 0));
  return mounts.filter((_, i) => thawed[i]);
}

async function filesIn(dir: string): Promise<string[]> {
  return (await fs.readdir(dir, { withFileTypes: true }).catch(() => [])).filter((e) => e.isFile()).map((e) => e.name).sort();
}

/**
 * What the driver holds, from the host's point of view (only this harness's paths and VG).
 * Every part is read at once: they are independent, and each run reads this twice or more.
 */
async function inventory() {
  const [volumes, snapshots, volumeFiles, snapshotFiles, groupFiles, stateFiles, devices, mounts, lvs] = await Promise.all([
    listedVolumes(),
    listedSnapshots(),
    filesIn(path.join(h.dataDir, 'volumes')),
    filesIn(path.join(h.dataDir, 'snapshots')),
    filesIn(path.join(h.dataDir, 'groups')),
    filesIn(h.stateDir),
    loopDevices(),
    mountsUnder(h.dir),
    vg ? vg.lvs().then((l) => [...l.keys()].sort()) : [],
  ]);
  const loops = devices.filter((d) => d.backFile.startsWith(h.dataDir + '/')).length + lvmWindowsIn(devices).length;
  return { volumes, snapshots, volumeFiles, snapshotFiles, groupFiles, stateFiles, loops, mounts: mounts.filter((m) => m !== h.dataDir).sort(), lvs };
}

async function listedVolumes(): Promise<string[]> {
  return ((await c().Controller.ListVolumes({})).entries as any[]).map((e) => e.volume.volume_id as string).sort();
}

async function listedSnapshots(): Promise<string[]> {
  return ((await c().Controller.ListSnapshots({})).entries as any[]).map((e) => e.snapshot.snapshot_id as string).sort();
}

/** Loop windows over the test VG's PV (the LVM backend's devices without device-mapper). */
async function lvmWindows(): Promise<string[]> {
  return vg ? lvmWindowsIn(await loopDevices()) : [];
}

function lvmWindowsIn(devices: Array<{ name: string; backFile: string }>): string[] {
  if (!vg) return [];
  const pvFile = path.join(vg.dir, 'pv.img');
  return devices.filter((d) => d.name !== vg!.pv && (d.backFile === pvFile || d.backFile === vg!.pv)).map((d) => d.name);
}

/**
 * The records and files must match what the driver lists: every listed volume/snapshot has
 * its image and record, nothing else lies in its folders (no temporary file, no orphan
 * image), the node has one device per staged volume, and no filesystem is frozen.
 */
async function expectConsistent(staged: number): Promise<void> {
  const inv = await inventory();
  const loopVols = inv.volumes.filter((v) => v.startsWith('vol-loop-'));
  const loopSnaps = inv.snapshots.filter((s) => s.startsWith('snap-loop-'));
  expect(inv.volumeFiles, 'files in the volumes folder').toEqual(loopVols.flatMap((v) => [`${v}.img`, `${v}.json`]).sort());
  expect(inv.snapshotFiles, 'files in the snapshots folder').toEqual(loopSnaps.flatMap((s) => [`${s}.img`, `${s}.json`]).sort());
  expect(inv.groupFiles.filter((f) => !f.endsWith('.json')), 'stray files in the groups folder').toEqual([]);
  expect(inv.stateFiles.filter((f) => !f.endsWith('.json')), 'stray files in the node state folder').toEqual([]);
  expect(inv.stateFiles.length, 'node state records').toBe(staged);
  const lvmIds = [...inv.volumes, ...inv.snapshots].filter((x) => x.includes('-lvm-')).sort();
  expect(inv.lvs, 'LVs in the volume group').toEqual(lvmIds);
  expect(inv.loops, 'loop devices and LV windows').toBe(staged);
  expect(await frozenMounts(), 'frozen filesystems').toEqual([]);
}

/**
 * Undoes everything the way a CO would (through the driver's RPCs), then requires that
 * nothing is left: no record, file, device, mount or LV.
 */
async function teardown(): Promise<void> {
  await undoThroughRpcs(undefined, async (e) => {
    if (e.status?.published_node_ids?.length) await c().Controller.ControllerUnpublishVolume({ volume_id: e.volume.volume_id });
    await c().Controller.DeleteVolume({ volume_id: e.volume.volume_id });
  });
  const inv = await inventory();
  expect(inv, 'what is left after deleting everything').toEqual({ volumes: [], snapshots: [], volumeFiles: [], snapshotFiles: [], groupFiles: [], stateFiles: [], loops: 0, mounts: [], lvs: [] });
  await clearPathRoots();
}

/**
 * What a CO does to release everything the runs made: unpublish and unstage every staging
 * the node recorded, delete group snapshots, snapshots, then each volume (`deleteVolume`:
 * the backend's own way, e.g. unpublish first or wait for a watcher to go).
 */
async function undoThroughRpcs(secrets: Record<string, string> | undefined, deleteVolume: (entry: any) => Promise<void>): Promise<void> {
  for (const f of await filesIn(h.stateDir)) {
    if (!f.endsWith('.json')) continue;
    const st = JSON.parse(await fs.readFile(path.join(h.stateDir, f), 'utf8')) as { volumeId: string; stagingPath: string; publications: Record<string, unknown> };
    for (const t of Object.keys(st.publications)) await c().Node.NodeUnpublishVolume({ volume_id: st.volumeId, target_path: t });
    await c().Node.NodeUnstageVolume({ volume_id: st.volumeId, staging_target_path: st.stagingPath });
  }
  const withSecrets = secrets ? { secrets } : {};
  let snaps = (await c().Controller.ListSnapshots({})).entries as any[];
  const groups = new Set(snaps.map((e) => e.snapshot.group_snapshot_id as string).filter(Boolean));
  for (const g of groups) await c().GroupController.DeleteVolumeGroupSnapshot({ group_snapshot_id: g, ...withSecrets });
  // Deleting a group deleted its members: what is left is asked again only then.
  if (groups.size) snaps = (await c().Controller.ListSnapshots({})).entries as any[];
  for (const e of snaps) await c().Controller.DeleteSnapshot({ snapshot_id: e.snapshot.snapshot_id, ...withSecrets });
  for (const e of (await c().Controller.ListVolumes({})).entries as any[]) await deleteVolume(e);
}

/** The harness's path roots stay; what the runs made below them goes. */
async function clearPathRoots(): Promise<void> {
  for (const root of ['staging', 'pods']) {
    for (const e of await fs.readdir(path.join(h.dir, root))) await fs.rm(path.join(h.dir, root, e), { recursive: true, force: true });
  }
}

/** A failed run may have left the driver dead (killed, never restarted): start a clean one. */
async function ensureLiveDriver(): Promise<void> {
  if (!h.proc || h.proc.exitCode !== null || h.proc.signalCode !== null || !h.client) {
    await h.stopProcess();
    await h.startProcess();
  }
}

/** After a failed scenario: a live driver without fail points, and a best-effort clean slate for the next one. */
async function recover(): Promise<void> {
  await ensureLiveDriver();
  await frozenMounts();
  await teardown().catch(() => undefined);
  // Whatever the failed run leaked must not fail the runs after it.
  for (const d of await lvmWindows()) await execa('losetup', ['-d', d], { reject: false });
  await teardown().catch(() => undefined);
  for (const d of [path.join(h.dataDir, 'volumes'), path.join(h.dataDir, 'snapshots'), path.join(h.dataDir, 'groups'), h.stateDir]) {
    for (const f of await filesIn(d)) if (f.endsWith('.tmp')) await fs.rm(path.join(d, f), { force: true });
  }
}


interface Scenario {
  backend: 'loop' | 'lvm' | 'rbd';
  rpc: string;
  points: string[];
  /** Builds what the RPC needs, with a driver without fail points. */
  setup?: () => Promise<Record<string, any>>;
  /** The RPC (or RPCs) that reach the point; run again unchanged as the retry. */
  act: (ctx: Record<string, any>) => Promise<any>;
  /** After the retry: the result is right, and the data written before is intact. */
  check: (ctx: Record<string, any>, result: any) => Promise<void>;
  /** Volumes staged on this node once the retry succeeded (one device each). */
  staged: number;
}

function scenarios(backends: Array<'loop' | 'lvm'>): Scenario[] {
  const out: Scenario[] = [];
  for (const backend of backends) {
    const params = backend === 'loop' ? loopParams : lvmParams;
    const B = backend;
    const stagedSource = async () => {
      const src = await createVol(`fp-${B}-src`, params());
      const staging = await stage(src.volume_id, `${B}-src`);
      return { src, staging, pattern: await writePattern(staging) };
    };
    // Growing an ext4 online needs CAP_SYS_RESOURCE, which test runners may lack: xfs grows anywhere.
    const stagedXfsSource = async () => {
      const src = (await c().Controller.CreateVolume({ name: `fp-${B}-xfs-src`, parameters: params(), capacity_range: { required_bytes: String(320 * MiB) }, volume_capabilities: [mountCap('xfs')] })).volume;
      const staging = await stage(src.volume_id, `${B}-xfs-src`, mountCap('xfs'));
      return { src, staging, pattern: await writePattern(staging) };
    };
    const unstagedSource = async () => {
      const s = await stagedSource();
      await c().Node.NodeUnstageVolume({ volume_id: s.src.volume_id, staging_target_path: s.staging });
      return s;
    };
    const onlyVolumeNamed = async (name: string, id: string) => {
      const named = ((await c().Controller.ListVolumes({})).entries as any[]).filter((e) => e.volume.volume_id === id);
      expect(named.length, `volumes named ${name}`).toBe(1);
    };
    const createPoints =
      B === 'loop'
        ? ['loop.create.afterTmp', 'loop.create.afterImage', 'atomic.beforeRename', 'rpc.beforeReply']
        : ['lvm.create.afterLvcreate', 'host.wipe:during', 'lvm.create.afterCopy'];
    out.push({
      backend: B,
      rpc: 'CreateVolume',
      points: createPoints,
      act: () => createVol(`fp-${B}-new`, params()),
      check: async (_ctx, v) => onlyVolumeNamed(`fp-${B}-new`, v.volume_id),
      staged: 0,
    });
    out.push({
      backend: B,
      rpc: 'CreateVolume from snapshot',
      points: B === 'loop' ? ['loop.create.afterTmp', 'loop.create.afterImage'] : [],
      setup: async () => {
        const s = await stagedSource();
        const snap = (await c().Controller.CreateSnapshot({ name: `fp-${B}-snap-src`, source_volume_id: s.src.volume_id })).snapshot;
        return { ...s, snap };
      },
      act: (x) => createVol(`fp-${B}-restore`, params(), { volume_content_source: { snapshot: { snapshot_id: x.snap.snapshot_id } } }),
      check: async (x, v) => {
        await onlyVolumeNamed(`fp-${B}-restore`, v.volume_id);
        expect((await readPattern(await stage(v.volume_id, `${B}-restore`))).equals(x.pattern)).toBe(true);
      },
      staged: 2,
    });
    out.push({
      backend: B,
      rpc: 'CreateVolume from volume',
      points: B === 'loop' ? ['loop.clone.frozen', 'loop.create.afterImage'] : ['host.copy:during'],
      // LVM copies an unstaged source through a temporary device of its own: that device must not outlive a crash.
      setup: B === 'loop' ? stagedSource : unstagedSource,
      act: (x) => createVol(`fp-${B}-clone`, params(), { volume_content_source: { volume: { volume_id: x.src.volume_id } } }),
      check: async (x, v) => {
        await onlyVolumeNamed(`fp-${B}-clone`, v.volume_id);
        expect((await readPattern(await stage(v.volume_id, `${B}-clone`))).equals(x.pattern)).toBe(true);
        if (B === 'loop') expect((await readPattern(x.staging)).equals(x.pattern)).toBe(true);
      },
      staged: B === 'loop' ? 2 : 1,
    });
    out.push({
      backend: B,
      rpc: 'CreateSnapshot',
      points:
        B === 'loop'
          ? ['loop.snapshot.frozen', 'loop.snapshot.afterClone', 'loop.snapshot.afterImage', 'atomic.beforeRename']
          : ['lvm.snapshot.afterLvcreate', 'host.copy:during', 'lvm.snapshot.afterCopy'],
      // LVM without device-mapper copies the whole volume: of an unstaged one, nothing to freeze.
      setup: B === 'loop' ? stagedSource : unstagedSource,
      act: (x) => c().Controller.CreateSnapshot({ name: `fp-${B}-snap`, source_volume_id: x.src.volume_id }),
      check: async (x, r) => {
        const all = ((await c().Controller.ListSnapshots({ source_volume_id: x.src.volume_id })).entries as any[]).map((e) => e.snapshot.snapshot_id);
        expect(all).toEqual([r.snapshot.snapshot_id]);
        expect((await restoreAndRead(r.snapshot.snapshot_id, `fp-${B}-snap-restore`, params())).equals(x.pattern)).toBe(true);
      },
      staged: B === 'loop' ? 2 : 1,
    });
    out.push({
      backend: B,
      rpc: 'DeleteSnapshot',
      points: B === 'loop' ? ['loop.deleteSnapshot.afterImage'] : [],
      setup: async () => {
        const src = await createVol(`fp-${B}-src`, params());
        return { src, snap: (await c().Controller.CreateSnapshot({ name: `fp-${B}-snap`, source_volume_id: src.volume_id })).snapshot };
      },
      act: (x) => c().Controller.DeleteSnapshot({ snapshot_id: x.snap.snapshot_id }),
      check: async () => expect((await c().Controller.ListSnapshots({})).entries).toEqual([]),
      staged: 0,
    });
    out.push({
      backend: B,
      rpc: 'DeleteVolume',
      points: B === 'loop' ? ['loop.delete.afterImage', 'rpc.beforeReply'] : ['host.wipe:during', 'lvm.delete.afterWipe'],
      setup: async () => ({ v: await createVol(`fp-${B}-gone`, params()) }),
      act: (x) => c().Controller.DeleteVolume({ volume_id: x.v.volume_id }),
      check: async () => expect((await c().Controller.ListVolumes({})).entries).toEqual([]),
      staged: 0,
    });
    out.push({
      backend: B,
      rpc: 'ControllerExpandVolume',
      points: B === 'loop' ? ['loop.expand.afterTruncate', 'atomic.beforeRename'] : ['lvm.expand.afterLvextend'],
      setup: stagedXfsSource,
      act: (x) => c().Controller.ControllerExpandVolume({ volume_id: x.src.volume_id, capacity_range: { required_bytes: String(400 * MiB) } }),
      check: async (x, r) => {
        expect(r.capacity_bytes).toBe(String(400 * MiB));
        expect(r.node_expansion_required).toBe(true);
        await c().Node.NodeExpandVolume({ volume_id: x.src.volume_id, volume_path: x.staging });
        const st = await fs.statfs(x.staging);
        expect(st.blocks * st.bsize, "more than the old 320 MiB device could hold").toBeGreaterThan(320 * MiB);
        expect((await readPattern(x.staging)).equals(x.pattern)).toBe(true);
      },
      staged: 1,
    });
    if (B === 'lvm') continue; // the rest below is backend-agnostic node and controller code, run on loop
    out.push({
      backend: B,
      rpc: 'NodeExpandVolume',
      points: ['node.expand.afterRefresh', 'host.growfs:during'],
      setup: async () => {
        const s = await stagedXfsSource();
        await c().Controller.ControllerExpandVolume({ volume_id: s.src.volume_id, capacity_range: { required_bytes: String(512 * MiB) } });
        return s;
      },
      act: (x) => c().Node.NodeExpandVolume({ volume_id: x.src.volume_id, volume_path: x.staging }),
      check: async (x, r) => {
        expect(r.capacity_bytes).toBe(String(512 * MiB));
        const st = await fs.statfs(x.staging);
        expect(st.blocks * st.bsize).toBeGreaterThan(400 * MiB);
        expect((await readPattern(x.staging)).equals(x.pattern)).toBe(true);
      },
      staged: 1,
    });
    out.push({
      backend: B,
      rpc: 'ControllerPublishVolume',
      points: ['loop.save.afterRecord', 'atomic.beforeRename'],
      setup: async () => ({ v: await createVol(`fp-${B}-pub`, params()) }),
      act: (x) => c().Controller.ControllerPublishVolume({ volume_id: x.v.volume_id, node_id: h.nodeId, volume_capability: mountCap('ext4') }),
      check: async (x) => expect((await c().Controller.ControllerGetVolume({ volume_id: x.v.volume_id })).status.published_node_ids).toEqual([h.nodeId]),
      staged: 0,
    });
    out.push({
      backend: B,
      rpc: 'ControllerUnpublishVolume',
      points: ['loop.save.afterRecord'],
      setup: async () => {
        const v = await createVol(`fp-${B}-unpub`, params());
        await c().Controller.ControllerPublishVolume({ volume_id: v.volume_id, node_id: h.nodeId, volume_capability: mountCap('ext4') });
        return { v };
      },
      act: (x) => c().Controller.ControllerUnpublishVolume({ volume_id: x.v.volume_id, node_id: h.nodeId }),
      check: async (x) => expect((await c().Controller.ControllerGetVolume({ volume_id: x.v.volume_id })).status.published_node_ids).toEqual([]),
      staged: 0,
    });
    out.push({
      backend: B,
      rpc: 'ControllerModifyVolume',
      points: ['loop.save.afterRecord'],
      setup: stagedSource,
      act: (x) => c().Controller.ControllerModifyVolume({ volume_id: x.src.volume_id, mutable_parameters: { directIO: 'false' } }),
      check: async (x) => {
        const [dev] = await loopDevicesUnder(path.join(h.dataDir, 'volumes'));
        expect(x.src.volume_id).toBeTruthy();
        // The record says off and the live device agrees: the retry applied what the crash skipped.
        expect((await fs.readFile(`/sys/block/${path.basename(dev)}/loop/dio`, 'utf8')).trim()).toBe('0');
      },
      staged: 1,
    });
    out.push({
      backend: B,
      rpc: 'CreateVolumeGroupSnapshot',
      points: ['loop.snapshot.frozen', 'loop.snapshot.afterImage', 'group.create.afterMembers'],
      setup: async () => {
        const a = await stagedSource();
        const b = await createVol(`fp-${B}-src-b`, params());
        return { ...a, b };
      },
      act: (x) => c().GroupController.CreateVolumeGroupSnapshot({ name: `fp-${B}-group`, source_volume_ids: [x.src.volume_id, x.b.volume_id] }),
      check: async (x, r) => {
        const g = r.group_snapshot;
        expect(g.snapshots).toHaveLength(2);
        expect(((await c().Controller.ListSnapshots({})).entries as any[]).map((e) => e.snapshot.snapshot_id).sort()).toEqual(g.snapshots.map((s: any) => s.snapshot_id).sort());
        const ofA = g.snapshots.find((s: any) => s.source_volume_id === x.src.volume_id);
        expect((await restoreAndRead(ofA.snapshot_id, `fp-${B}-group-restore`, params())).equals(x.pattern)).toBe(true);
      },
      staged: 2,
    });
    out.push({
      backend: B,
      rpc: 'DeleteVolumeGroupSnapshot',
      points: ['loop.deleteSnapshot.afterImage', 'group.delete.afterMembers'],
      setup: async () => {
        const a = await createVol(`fp-${B}-src-a`, params());
        const b = await createVol(`fp-${B}-src-b`, params());
        return { g: (await c().GroupController.CreateVolumeGroupSnapshot({ name: `fp-${B}-group`, source_volume_ids: [a.volume_id, b.volume_id] })).group_snapshot };
      },
      act: (x) => c().GroupController.DeleteVolumeGroupSnapshot({ group_snapshot_id: x.g.group_snapshot_id }),
      check: async (x) => {
        expect(codeName(await c().GroupController.GetVolumeGroupSnapshot({ group_snapshot_id: x.g.group_snapshot_id }).catch((e) => e))).toBe('NOT_FOUND');
        expect((await c().Controller.ListSnapshots({})).entries).toEqual([]);
      },
      staged: 0,
    });
    out.push({
      backend: B,
      rpc: 'NodeStageVolume (ext4)',
      points: ['node.stage.afterAttach', 'atomic.beforeRename', 'node.stage.afterRecord', 'host.mkfs:during', 'node.stage.afterMkfs', 'node.stage.afterMount'],
      setup: async () => ({ v: await createVol(`fp-${B}-stage`, params()) }),
      act: (x) => stage(x.v.volume_id, `${B}-stage`),
      check: async (x) => {
        const m = await execa('findmnt', ['-n', '-o', 'FSTYPE', '--mountpoint', stagingOf(`${B}-stage`)]);
        expect(m.stdout.trim()).toBe('ext4');
        const data = await writePattern(stagingOf(`${B}-stage`));
        expect((await readPattern(stagingOf(`${B}-stage`))).equals(data)).toBe(true);
        expect(x.v.volume_id).toBeTruthy();
      },
      staged: 1,
    });
    out.push({
      backend: B,
      rpc: 'NodeStageVolume (xfs)',
      // A fresh mkfs spans its device: no growfs to kill here (the case below has one).
      points: ['host.mkfs:during', 'node.stage.afterMount'],
      setup: async () =>
        ({ v: (await c().Controller.CreateVolume({ name: `fp-${B}-xfs`, parameters: params(), capacity_range: { required_bytes: String(320 * MiB) }, volume_capabilities: [mountCap('xfs')] })).volume }),
      act: (x) => stage(x.v.volume_id, `${B}-xfs`, mountCap('xfs')),
      check: async () => {
        const m = await execa('findmnt', ['-n', '-o', 'FSTYPE', '--mountpoint', stagingOf(`${B}-xfs`)]);
        expect(m.stdout.trim()).toBe('xfs');
        const data = await writePattern(stagingOf(`${B}-xfs`));
        expect((await readPattern(stagingOf(`${B}-xfs`))).equals(data)).toBe(true);
      },
      staged: 1,
    });
    out.push({
      backend: B,
      rpc: 'NodeStageVolume (xfs grown while unstaged)',
      points: ['host.growfs:during'],
      setup: async () => {
        const s = await stagedXfsSource();
        await c().Node.NodeUnstageVolume({ volume_id: s.src.volume_id, staging_target_path: s.staging });
        await c().Controller.ControllerExpandVolume({ volume_id: s.src.volume_id, capacity_range: { required_bytes: String(400 * MiB) } });
        return s;
      },
      act: (x) => stage(x.src.volume_id, `${B}-xfs-src`, mountCap('xfs')),
      check: async (x) => {
        const st = await fs.statfs(x.staging);
        expect(st.blocks * st.bsize, 'more than the old 320 MiB device could hold').toBeGreaterThan(320 * MiB);
        expect((await readPattern(x.staging)).equals(x.pattern)).toBe(true);
      },
      staged: 1,
    });
    out.push({
      backend: B,
      rpc: 'NodeUnstageVolume',
      points: ['node.unstage.afterUmount', 'node.unstage.afterDetach'],
      setup: stagedSource,
      act: (x) => c().Node.NodeUnstageVolume({ volume_id: x.src.volume_id, staging_target_path: x.staging }),
      check: async (x) => {
        // The data is still on the volume: stage it again and read it.
        expect((await readPattern(await stage(x.src.volume_id, `${B}-src`))).equals(x.pattern)).toBe(true);
      },
      staged: 1,
    });
    out.push({
      backend: B,
      rpc: 'NodePublishVolume',
      points: ['atomic.beforeRename', 'node.publish.afterRecord', 'node.publish.afterMount'],
      setup: stagedSource,
      act: (x) => c().Node.NodePublishVolume({ volume_id: x.src.volume_id, staging_target_path: x.staging, target_path: targetOf(B), volume_capability: mountCap('ext4') }),
      check: async (x) => {
        expect((await mountsUnder(path.join(h.dir, 'pods'))).filter((m) => m === targetOf(B))).toHaveLength(1);
        expect((await readPattern(targetOf(B))).equals(x.pattern)).toBe(true);
      },
      staged: 1,
    });
    out.push({
      backend: B,
      rpc: 'NodeUnpublishVolume',
      points: ['node.unpublish.afterUmount', 'atomic.beforeRename'],
      setup: async () => {
        const s = await stagedSource();
        await c().Node.NodePublishVolume({ volume_id: s.src.volume_id, staging_target_path: s.staging, target_path: targetOf(B), volume_capability: mountCap('ext4') });
        return s;
      },
      act: (x) => c().Node.NodeUnpublishVolume({ volume_id: x.src.volume_id, target_path: targetOf(B) }),
      check: async (x) => {
        expect(await mountsUnder(path.join(h.dir, 'pods'))).toEqual([]);
        expect((await readPattern(x.staging)).equals(x.pattern)).toBe(true);
      },
      staged: 1,
    });
  }
  return out;
}


// ---- rbd: one Ceph cluster for every run; the node side through the fuse mapper --------

let ceph: CephEnv | undefined;
let cephRoot: string | undefined;
const rbdParams = () => ({ backend: 'rbd', clusterID: 'fp', pool: ceph!.pool });
/** The CSI secrets on every call that takes them, so that each rbd run writes a key file a crash may leave. */
const rbdSecrets = () => ({ userID: ceph!.user, userKey: ceph!.key });
const rbdState = () => path.join(h.stateDir, 'rbd');

async function rbdJson<T>(args: string[], empty: T): Promise<T> {
  const out = await adminRbd(ceph!, [...args, '--format', 'json']);
  return out.trim() ? (JSON.parse(out) as T) : empty;
}

async function csiImages(): Promise<string[]> {
  return (await rbdJson<string[]>(['ls', ceph!.pool], [])).filter((n) => n.startsWith('csi-')).sort();
}

async function csiTrash(): Promise<string[]> {
  return (await rbdJson<Array<{ name: string }>>(['trash', 'ls', ceph!.pool], [])).map((t) => t.name).filter((n) => n.startsWith('csi-')).sort();
}

/** User snapshots of an image (a cut or a clone's temporary snapshot left on a source would show here). */
async function userSnaps(image: string): Promise<string[]> {
  return (await rbdJson<Array<{ name: string }>>(['snap', 'ls', `${ceph!.pool}/${image}`], [])).map((x) => x.name).sort();
}

/** rbd-fuse helpers serving this harness's mappings, by their command line. */
async function fuseHelpers(): Promise<number[]> {
  const out: number[] = [];
  for (const p of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await fs.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    const stat = await fs.readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    if (cmd.startsWith('rbd-fuse\0') && cmd.includes(rbdState()) && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z') out.push(Number(p));
  }
  return out;
}

/** The images of every RBD volume this file made, whatever became of them. */
const rbdImagesMade = new Set<string>();

/**
 * Loop devices left on the file of an rbd-fuse mount that is gone: once the mount is
 * detached, the kernel shows the file as "/<image>", outside every directory of ours.
 */
async function loopsOnDeadFuseFiles(): Promise<string[]> {
  return onDeadFuseFiles(await loopDevices());
}

function onDeadFuseFiles(devices: Array<{ name: string; backFile: string }>): string[] {
  return devices.filter((d) => rbdImagesMade.has(d.backFile.slice(1))).map((d) => d.name);
}

/** Every part read at once (independent; the Ceph CLI's start-up is most of a check's time). */
async function rbdInventory() {
  const fuseDir = path.join(rbdState(), 'fuse');
  const [volumes, snapshots, images, keyFiles, mappings, helpers, devices, stateFiles] = await Promise.all([
    listedVolumes(),
    listedSnapshots(),
    csiImages(),
    fs.readdir(path.join(rbdState(), 'keys')).catch(() => [] as string[]),
    fs.readdir(fuseDir).then((m) => m.sort(), () => [] as string[]),
    fuseHelpers(),
    loopDevices(),
    filesIn(h.stateDir),
  ]);
  const loops = devices.filter((d) => d.backFile.startsWith(fuseDir + '/')).length + onDeadFuseFiles(devices).length;
  return { volumes, snapshots, images, keyFiles, mappings, helpers: helpers.length, loops, stateFiles: stateFiles.filter((f) => f.endsWith('.json')).length };
}

/**
 * Every listed volume and snapshot has its image and nothing else is in the pool; volumes
 * carry no leftover snapshot (cut, clone's temporary), a snapshot image exactly its own one;
 * no key file; one mapping, rbd-fuse helper, loop device, fuse mount and staging mount per
 * staged volume; nothing frozen.
 */
async function expectRbdConsistent(staged: number): Promise<void> {
  const inv = await rbdInventory();
  expect(inv.images, 'csi images in the pool').toEqual([...inv.volumes.map(volumeImage), ...inv.snapshots.map(snapshotImage)].sort());
  // One rbd CLI per image, all at once: each costs a client start-up, not work.
  const [ofVolumes, ofSnapshots] = await Promise.all([
    Promise.all(inv.volumes.map((v) => userSnaps(volumeImage(v)))),
    Promise.all(inv.snapshots.map((s) => userSnaps(snapshotImage(s)))),
  ]);
  inv.volumes.forEach((v, i) => expect(ofVolumes[i], `snapshots of ${volumeImage(v)}`).toEqual([]));
  inv.snapshots.forEach((s, i) => expect(ofSnapshots[i], `snapshots of ${snapshotImage(s)}`).toEqual([snapshotImage(s)]));
  expect(inv.keyFiles, 'key files').toEqual([]);
  expect(inv.stateFiles, 'node state records').toBe(staged);
  expect(inv.mappings.length, 'fuse mappings').toBe(staged);
  expect(inv.helpers, 'rbd-fuse helpers').toBe(staged);
  expect(inv.loops, 'loop devices over fuse files').toBe(staged);
  const mounts = (await mountsUnder(h.dir)).filter((m) => m !== h.dataDir);
  expect(mounts.filter((m) => m.startsWith(path.join(h.dir, 'staging') + '/')).length, 'staging mounts').toBe(staged);
  expect(mounts.filter((m) => m.startsWith(rbdState() + '/')).length, 'rbd-fuse mounts').toBe(staged);
  expect(await frozenMounts(), 'frozen filesystems').toEqual([]);
}

/** A helper killed with the driver keeps its watch until the OSDs time it out (10 s on the test cluster). */
async function untilWatchGone(call: () => Promise<unknown>): Promise<void> {
  const end = Date.now() + 90_000;
  for (;;) {
    const e = await call().then(() => undefined, (x: unknown) => x);
    if (e === undefined) return;
    if (codeName(e) !== 'FAILED_PRECONDITION' || Date.now() > end) throw e;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function rbdTeardown(): Promise<void> {
  await undoThroughRpcs(rbdSecrets(), (e) => untilWatchGone(() => c().Controller.DeleteVolume({ volume_id: e.volume.volume_id, secrets: rbdSecrets() })));
  const [left, trash, mounts] = await Promise.all([rbdInventory(), csiTrash(), mountsUnder(h.dir)]);
  expect(left, 'what is left after deleting everything').toEqual({ volumes: [], snapshots: [], images: [], keyFiles: [], mappings: [], helpers: 0, loops: 0, stateFiles: 0 });
  expect(trash, 'images in the RBD trash').toEqual([]);
  expect(mounts.filter((m) => m !== h.dataDir), 'mounts').toEqual([]);
  await clearPathRoots();
}

async function rbdRecover(): Promise<void> {
  await ensureLiveDriver();
  await frozenMounts();
  await rbdTeardown().catch(() => undefined);
  // Whatever the failed run left must not fail the runs after it: images straight from the
  // cluster, a few rounds (a parent goes only after its clones).
  await cleanupDriverDir(path.join(h.dir, 'staging')).catch(() => undefined);
  for (const d of await loopsOnDeadFuseFiles()) await execa('losetup', ['-d', d], { reject: false });
  for (let round = 0; round < 3; round++) {
    for (const n of await csiImages().catch(() => [] as string[])) {
      for (const sn of await userSnaps(n).catch(() => [] as string[])) await adminRbd(ceph!, ['snap', 'rm', `${ceph!.pool}/${n}@${sn}`]).catch(() => undefined);
      await adminRbd(ceph!, ['rm', '--no-progress', `${ceph!.pool}/${n}`]).catch(() => undefined);
    }
    for (const t of await rbdJson<Array<{ id: string; name: string }>>(['trash', 'ls', ceph!.pool], []).catch(() => [])) {
      if (t.name.startsWith('csi-')) await adminRbd(ceph!, ['trash', 'rm', '--no-progress', `${ceph!.pool}/${t.id}`]).catch(() => undefined);
    }
  }
}

function rbdScenarios(): Scenario[] {
  const B = 'rbd' as const;
  const params = rbdParams;
  const secrets = rbdSecrets;
  const create = async (name: string, extra: object = {}) => {
    const v = await createVol(name, params(), { secrets: secrets(), ...extra });
    rbdImagesMade.add(volumeImage(v.volume_id));
    return v;
  };
  const restoreAndReadRbd = async (snapshotId: string, name: string) =>
    readPattern(await stage((await create(name, { volume_content_source: { snapshot: { snapshot_id: snapshotId } } })).volume_id, name));
  const stagedSource = async () => {
    const src = await create('fp-rbd-src');
    const staging = await stage(src.volume_id, 'rbd-src');
    return { src, staging, pattern: await writePattern(staging) };
  };
  const onlyVolumeNamed = async (id: string) => {
    expect(((await c().Controller.ListVolumes({})).entries as any[]).filter((e) => e.volume.volume_id === id)).toHaveLength(1);
  };
  return [
    {
      backend: B,
      rpc: 'CreateVolume',
      points: ['rbd.create.afterImage', 'rbd.create.beforeRecord'],
      act: () => create('fp-rbd-new'),
      check: async (_x, v) => onlyVolumeNamed(v.volume_id),
      staged: 0,
    },
    {
      backend: B,
      rpc: 'CreateVolume from snapshot (flattened)',
      points: ['host.rbd:during', 'rbd.create.afterImage'],
      setup: async () => {
        const s = await stagedSource();
        return { ...s, snap: (await c().Controller.CreateSnapshot({ name: 'fp-rbd-snap-src', source_volume_id: s.src.volume_id, secrets: secrets() })).snapshot };
      },
      act: (x) => create('fp-rbd-restore', { volume_content_source: { snapshot: { snapshot_id: x.snap.snapshot_id } } }),
      check: async (x, v) => {
        await onlyVolumeNamed(v.volume_id);
        // maxCloneDepth 1: the restore is flattened, no parent left.
        expect(JSON.parse(await adminRbd(ceph!, ['info', '--format', 'json', `${ceph!.pool}/${volumeImage(v.volume_id)}`])).parent).toBeUndefined();
        expect((await readPattern(await stage(v.volume_id, 'rbd-restore'))).equals(x.pattern)).toBe(true);
      },
      staged: 2,
    },
    {
      backend: B,
      rpc: 'CreateVolume from volume',
      points: ['rbd.clone.frozen', 'rbd.clone.afterSnap', 'rbd.create.afterImage', 'rbd.create.beforeRecord'],
      setup: stagedSource,
      act: (x) => create('fp-rbd-clone', { volume_content_source: { volume: { volume_id: x.src.volume_id } } }),
      check: async (x, v) => {
        await onlyVolumeNamed(v.volume_id);
        expect((await readPattern(await stage(v.volume_id, 'rbd-clone'))).equals(x.pattern)).toBe(true);
        expect((await readPattern(x.staging)).equals(x.pattern)).toBe(true);
      },
      staged: 2,
    },
    {
      backend: B,
      rpc: 'CreateSnapshot',
      points: ['rbd.snapshot.frozen', 'rbd.snapshot.afterCut', 'rbd.snapshot.afterClone', 'rbd.snapshot.afterCutRm', 'rbd.snapshot.beforeRecord'],
      setup: stagedSource,
      act: (x) => c().Controller.CreateSnapshot({ name: 'fp-rbd-snap', source_volume_id: x.src.volume_id, secrets: secrets() }),
      check: async (x, r) => {
        const all = ((await c().Controller.ListSnapshots({ source_volume_id: x.src.volume_id })).entries as any[]).map((e) => e.snapshot.snapshot_id);
        expect(all).toEqual([r.snapshot.snapshot_id]);
        expect((await restoreAndReadRbd(r.snapshot.snapshot_id, 'rbd-snap-restore')).equals(x.pattern)).toBe(true);
      },
      staged: 2,
    },
    {
      backend: B,
      rpc: 'CreateVolumeGroupSnapshot',
      points: ['group.create.afterMembers'],
      setup: async () => ({ ...(await stagedSource()), b: await create('fp-rbd-src-b') }),
      act: (x) => c().GroupController.CreateVolumeGroupSnapshot({ name: 'fp-rbd-group', source_volume_ids: [x.src.volume_id, x.b.volume_id], secrets: secrets() }),
      check: async (x, r) => {
        const g = r.group_snapshot;
        expect(((await c().Controller.ListSnapshots({})).entries as any[]).map((e) => e.snapshot.snapshot_id).sort()).toEqual(g.snapshots.map((s: any) => s.snapshot_id).sort());
        const ofA = g.snapshots.find((s: any) => s.source_volume_id === x.src.volume_id);
        expect((await restoreAndReadRbd(ofA.snapshot_id, 'rbd-group-restore')).equals(x.pattern)).toBe(true);
      },
      staged: 2,
    },
    {
      backend: B,
      rpc: 'DeleteVolume (its snapshot keeps it in the RBD trash)',
      points: ['rbd.delete.afterMark', 'rbd.delete.afterSnaps', 'rbd.delete.afterTrash'],
      setup: async () => {
        const v = await create('fp-rbd-gone');
        return { v, snap: (await c().Controller.CreateSnapshot({ name: 'fp-rbd-keeps', source_volume_id: v.volume_id, secrets: secrets() })).snapshot };
      },
      act: (x) => c().Controller.DeleteVolume({ volume_id: x.v.volume_id, secrets: secrets() }),
      check: async (x) => {
        expect((await c().Controller.ListVolumes({})).entries).toEqual([]);
        expect(await csiTrash(), 'the source waits in the trash for its snapshot').toEqual([volumeImage(x.v.volume_id)]);
      },
      staged: 0,
    },
    {
      backend: B,
      rpc: 'DeleteSnapshot (its source waits in the RBD trash)',
      points: ['rbd.delete.afterMark', 'rbd.delete.afterSnaps', 'rbd.delete.afterRemove'],
      setup: async () => {
        const v = await create('fp-rbd-gone');
        const snap = (await c().Controller.CreateSnapshot({ name: 'fp-rbd-last', source_volume_id: v.volume_id, secrets: secrets() })).snapshot;
        await c().Controller.DeleteVolume({ volume_id: v.volume_id, secrets: secrets() });
        expect(await csiTrash()).toEqual([volumeImage(v.volume_id)]);
        return { snap };
      },
      act: (x) => c().Controller.DeleteSnapshot({ snapshot_id: x.snap.snapshot_id, secrets: secrets() }),
      check: async () => {
        expect((await c().Controller.ListSnapshots({})).entries).toEqual([]);
        expect(await csiTrash(), 'the source left the trash with its last clone').toEqual([]);
      },
      staged: 0,
    },
    {
      backend: B,
      rpc: 'ControllerExpandVolume',
      points: ['rbd.expand.afterResize'],
      setup: async () => {
        const src = await create('fp-rbd-xfs-src', { capacity_range: { required_bytes: String(320 * MiB) }, volume_capabilities: [mountCap('xfs')] });
        const staging = await stage(src.volume_id, 'rbd-xfs-src', mountCap('xfs'));
        return { src, staging, pattern: await writePattern(staging) };
      },
      act: (x) => c().Controller.ControllerExpandVolume({ volume_id: x.src.volume_id, capacity_range: { required_bytes: String(400 * MiB) }, secrets: secrets() }),
      check: async (x, r) => {
        expect(r.capacity_bytes).toBe(String(400 * MiB));
        expect(JSON.parse(await adminRbd(ceph!, ['info', '--format', 'json', `${ceph!.pool}/${volumeImage(x.src.volume_id)}`])).size).toBe(400 * MiB);
        await c().Node.NodeExpandVolume({ volume_id: x.src.volume_id, volume_path: x.staging });
        const st = await fs.statfs(x.staging);
        expect(st.blocks * st.bsize).toBeGreaterThan(320 * MiB);
        expect((await readPattern(x.staging)).equals(x.pattern)).toBe(true);
      },
      staged: 1,
    },
    {
      backend: B,
      rpc: 'NodeStageVolume (fuse mapper)',
      points: ['rbd.fuse.afterSpawn', 'rbd.fuse.afterLoop'],
      setup: async () => ({ v: await create('fp-rbd-stage') }),
      act: async (x) => {
        await fs.mkdir(stagingOf('rbd-stage'), { recursive: true });
        return c().Node.NodeStageVolume({ volume_id: x.v.volume_id, staging_target_path: stagingOf('rbd-stage'), volume_capability: mountCap('ext4'), secrets: secrets() });
      },
      check: async () => {
        const m = await execa('findmnt', ['-n', '-o', 'FSTYPE', '--mountpoint', stagingOf('rbd-stage')]);
        expect(m.stdout.trim()).toBe('ext4');
        const data = await writePattern(stagingOf('rbd-stage'));
        // Past the page cache: the device under the mount must reach the image (not a loop device left on a dead helper's file).
        const direct = await execa('dd', [`if=${path.join(stagingOf('rbd-stage'), 'pattern')}`, 'iflag=direct', 'bs=512k', 'status=none'], { encoding: 'buffer' });
        expect(Buffer.from(direct.stdout).equals(data)).toBe(true);
      },
      staged: 1,
    },
    {
      backend: B,
      rpc: 'NodeUnstageVolume (fuse mapper)',
      points: ['rbd.fuse.afterDetach', 'rbd.fuse.afterUnmount'],
      setup: stagedSource,
      act: (x) => c().Node.NodeUnstageVolume({ volume_id: x.src.volume_id, staging_target_path: x.staging }),
      check: async (x) => {
        expect((await readPattern(await stage(x.src.volume_id, 'rbd-src'))).equals(x.pattern)).toBe(true);
      },
      staged: 1,
    },
  ];
}

const LOOP = scenarios(['loop']);
const LVM = scenarios(['lvm']);
const RBD = rbdScenarios();

it('every fail point in the registry is exercised by at least one scenario', () => {
  const used = new Set([...LOOP, ...LVM, ...RBD].flatMap((s) => s.points.map((p) => p.replace(/:during.*/, ''))));
  expect(Object.keys(FAILPOINTS).filter((p) => !used.has(p))).toEqual([]);
});

interface Checks {
  consistent: (staged: number) => Promise<void>;
  teardown: () => Promise<void>;
  recover: () => Promise<void>;
  timeoutMs: number;
}
const LOCAL: Checks = { consistent: expectConsistent, teardown, recover, timeoutMs: 120_000 };
// Killed rbd-fuse helpers keep their watches for the OSD timeout, which teardown waits out.
const RBD_CHECKS: Checks = { consistent: expectRbdConsistent, teardown: rbdTeardown, recover: rbdRecover, timeoutMs: 300_000 };

/** Seconds per phase of a run, and the admin rbd commands the test itself ran. */
function phaseClock() {
  const parts: string[] = [];
  let last = Date.now();
  const rbdAtStart = adminRbdRuns.count;
  const clock = {
    /** Ends the phase that ran since the last mark (unnamed: already accounted for by add). */
    mark(name?: string) {
      if (name) parts.push(`${name} ${((Date.now() - last) / 1000).toFixed(1)}`);
      last = Date.now();
      return clock;
    },
    add(name: string, ms: number) {
      parts.push(`${name} ${(ms / 1000).toFixed(1)}`);
      return clock;
    },
    text: () => [...parts, ...(adminRbdRuns.count > rbdAtStart ? [`rbd cli ×${adminRbdRuns.count - rbdAtStart}`] : [])].join(', '),
  };
  return clock;
}

function runAll(list: Scenario[], k: Checks = LOCAL): void {
  for (const s of list) {
    for (const point of s.points) {
      it(`${s.backend} ${s.rpc} killed at ${point}`, async () => {
        const started = Date.now();
        const o: Outcome = { backend: s.backend, rpc: s.rpc, point, firstAttempt: '-', retry: '-', result: 'not ok', ms: 0, phases: '' };
        outcomes.push(o);
        const clock = phaseClock();
        try {
          const ctx = (await s.setup?.()) ?? {};
          clock.mark('setup');
          const crash = await crashAt(h, point, () => s.act(ctx));
          o.firstAttempt = crash.first;
          clock.add('armed', crash.ms.armedStart).add('kill', crash.ms.untilDeath).add('restart', crash.ms.restart).mark();
          const result = await s.act(ctx).catch((e) => {
            o.retry = codeName(e) ?? 'error';
            throw e;
          });
          o.retry = 'OK';
          clock.mark('retry');
          await s.check(ctx, result);
          clock.mark('check');
          await k.consistent(s.staged);
          clock.mark('leaks');
          await k.teardown();
          clock.mark('teardown');
          o.result = 'ok';
        } catch (err) {
          o.result = `FAILED: ${String((err as Error).message ?? err).split('\n')[0].slice(0, 120)}`;
          await k.recover();
          throw err;
        } finally {
          o.ms = Date.now() - started;
          o.phases = clock.text();
        }
      }, k.timeoutMs);
    }
  }
}

describe('loop backend and the backend-agnostic services: crash at every fail point, restart, retry', () => {
  beforeAll(async () => {
    h = await DriverHarness.start();
  }, 60_000);
  afterAll(async () => {
    await h?.cleanup();
  });
  runAll(LOOP);
});

describe('lvm backend (no device-mapper): crash at its tool runs, restart, retry', () => {
  beforeAll(async () => {
    vg = await TestVg.create(await fs.mkdtemp('/tmp/tscsi-fp-lvm-'), 2);
    h = await DriverHarness.start({ driver: { lvmVolumeGroups: vg.name, lvmDevices: vg.pv } });
  }, 60_000);
  afterAll(async () => {
    await h?.cleanup();
    await vg?.destroy();
    if (vg) await fs.rm(vg.dir, { recursive: true, force: true });
    vg = undefined;
  });
  runAll(LVM);
});

describe('rbd backend (one real Ceph cluster, fuse mapper): crash at every fail point, restart, retry', () => {
  beforeAll(async () => {
    cephRoot = await fs.mkdtemp('/tmp/tscsi-fp-rbd-');
    ceph = await startCeph(path.join(cephRoot, 'ceph'));
    const config = path.join(cephRoot, 'rbd.json');
    // maxCloneDepth 1: a restore from a snapshot (depth 2) is flattened, so host.rbd has a run to kill.
    await fs.writeFile(config, JSON.stringify({ clusters: [{ clusterID: 'fp', monitors: [ceph.mon], pools: [ceph.pool], user: ceph.user, keyFile: ceph.keyFile }], mapper: 'fuse', maxCloneDepth: 1 }));
    h = await DriverHarness.start({ driver: { rbdConfig: config, rbdMapper: 'fuse' } });
  }, 600_000);
  afterAll(async () => {
    await h?.stopProcess();
    if (h) await cleanupDriverDir(h.dir);
    for (const d of await loopsOnDeadFuseFiles()) await execa('losetup', ['-d', d], { reject: false });
    await h?.cleanup();
    if (cephRoot) {
      await stopCeph(path.join(cephRoot, 'ceph'));
      await fs.rm(cephRoot, { recursive: true, force: true });
    }
    ceph = undefined;
  }, 180_000);
  runAll(RBD, RBD_CHECKS);
});
