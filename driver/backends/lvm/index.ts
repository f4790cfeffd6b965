// The LVM backend: each volume is a logical volume in a volume group the driver was given,
// and everything about it lives in the LV's own tags, so every state can be rebuilt from
// `lvs` alone. Two modes, detected at start:
//  - dm: the kernel has device-mapper; LVs are activated, thin pools give instant
//    snapshots and clones.
//  - nodm: no device-mapper (these VMs). LVM edits metadata only; volumes are contiguous
//    linear LVs exposed through a loop device over their extents on the PV; snapshots and
//    clones are full copies. There is no snapshot to copy from, so a volume whose
//    filesystem is mounted is not copied (it would stay frozen for the whole copy): the
//    snapshot's error says to unstage it first.
import fs from 'node:fs/promises';
import path from 'node:path';
import { BackendError, type Backend, type Capacity, type PoolUsage, type GroupSnapshotRecord, type GroupSnapshotStore, type SnapshotRecord, type HealthProblem, type StorageProblem, type VolumeRecord } from '../backend.js';
import { lvProblems, vgProblems } from './health.js';
import { Lvm, type LvInfo, type LvmRunner, type ScannedPv } from './lvm.js';
import { readJson, writeJsonAtomic, removeFile } from '../../host/atomic.js';
import { LvmSnapshotBlocks } from './blocks.js';
import { TAG_DIRTY, TAG_HOLDS, TAG_RECORD, holdsOf, newLvTagArgs, recordTags, snapshotRecordOf, volumeRecordOf, type LvHolds, type SnapshotWithGroup } from './records.js';
import * as loop from '../../host/loop.js';
import { wipe, copy } from '../../host/block.js';
import { withQuiescedDevices, mountedFilesystems } from '../../host/freeze.js';
import { CommandError } from '../../host/exec.js';
import type { Logger } from '../../log.js';
import { failpoint } from '../../failpoints.js';

/** The node-side tools the backend uses; unit tests replace them to check exact commands. */
export interface LvmHost {
  wipe(device: string): Promise<void>;
  copy(src: string, dst: string, bytes: bigint): Promise<void>;
  withQuiescedDevices<T>(devices: string[], fn: () => Promise<T>): Promise<T>;
  mountedFilesystems(devices: string[]): Promise<string[]>;
  attachWindow(file: string, offset: number, size: number, directIO: boolean): Promise<string>;
  windowsAt(file: string, offset: number): Promise<Array<{ name: string }>>;
  detach(device: string): Promise<void>;
  setSizeLimit(device: string, bytes: bigint): Promise<void>;
  setDirectIO(device: string, on: boolean): Promise<void>;
  describe(device: string): Promise<{ backFile: string; offset: number; directIO: boolean } | undefined>;
  hasDeviceMapper(): Promise<boolean>;
}

export const realHost: LvmHost = {
  wipe,
  copy,
  withQuiescedDevices,
  mountedFilesystems,
  attachWindow: (f, o, s, directIO) => loop.attachWindow(f, o, s, { directIO }),
  windowsAt: loop.windowsAt,
  detach: loop.detach,
  setSizeLimit: loop.setSizeLimit,
  setDirectIO: loop.setDirectIO,
  describe: loop.describe,
  hasDeviceMapper: async () => /\bdevice-mapper\b/.test(await fs.readFile('/proc/misc', 'utf8').catch(() => '')),
};

/** How many times its size a thin pool may promise unless told otherwise. */
export const DEFAULT_THIN_OVERPROVISION_RATIO = 10;

export interface LvmBackendOptions {
  volumeGroups: string[];
  /** Thin pools may promise this many times their size (thin volumes only grow on write). */
  thinOverprovisionRatio?: number;
  host?: LvmHost;
  runner?: LvmRunner;
  /** Explicit PV devices; default: found by one scan at start. */
  devices?: string[];
  /** This node's lvm system ID (--lvm-system-id); without it only VGs without one are usable. */
  systemId?: string;
  mode: 'auto' | 'dm' | 'nodm';
  stateDir: string;
  maxVolumeBytes?: bigint;
  log: Logger;
}

/** A short-lived COW snapshot a copy reads from (device-mapper mode); never outlives its copy. */
const TAG_PIT = 'tscsi.pit';
const PARAMS = new Set(['volumeGroup', 'type', 'thinPool']);
/** How lvm names a PV it cannot find. */
const UNKNOWN_PV = '[unknown]';

function exhaustedOr(err: unknown, what: string): unknown {
  // lvm refuses a new thin volume or snapshot in a pool with no data space left (it would
  // only fail its writes): the pool, not the volume group, is what to grow.
  if (err instanceof CommandError && /free space in thin pool \S+ reached threshold|thin pool \S+ is out of data space/i.test(err.stderr)) {
    return new BackendError('exhausted', `${what}: the thin pool is out of data space (${err.stderr.trim().split('\n').pop()?.trim()}); extend the pool (lvextend) or delete volumes or snapshots in it`);
  }
  if (err instanceof CommandError && /Insufficient (suitable )?(contiguous )?(allocatable )?(free )?extents|insufficient free space/i.test(err.stderr)) {
    return new BackendError('exhausted', `${what}: not enough ${/contiguous/.test(err.stderr) ? 'contiguous ' : ''}free space in the volume group (${err.stderr.trim().split('\n').pop()})`);
  }
  return err;
}

/** A volume's loop window does direct I/O unless its mutable parameters say otherwise (as the loop backend's default). */
const directIOOf = (rec: VolumeRecord) => rec.mutableParameters?.directIO !== 'false';

export class LvmBackend implements Backend {
  readonly nodeLocal = true;
  readonly name = 'lvm';
  /**
   * directIO of the loop window a volume is attached through, as the loop backend's: only
   * windows have it (no-device-mapper mode); a device-mapper LV has nothing to change.
   */
  get mutableParameters(): Record<string, readonly string[]> {
    return this.deviceMapper ? {} : { directIO: ['true', 'false'] };
  }
  readonly groupSnapshots: GroupSnapshotStore = this;
  readonly snapshotBlocks = new LvmSnapshotBlocks({ withSnapshotDevice: (id, fn) => this.withSnapshotDevice(id, fn) });
  lvm!: Lvm;
  deviceMapper = false;
  // Fixed once a VG and its PVs exist: an extent's size and where a PV's extents start.
  private readonly extentBytes = new Map<string, bigint>();
  private readonly peStart = new Map<string, bigint>();
  // Where each LV's nodm window is (by LV and extents): found again while its PV is missing.
  private readonly windows = new Map<string, { file: string; offset: number; size: number }>();

  private readonly host: LvmHost;

  constructor(private readonly opts: LvmBackendOptions) {
    this.host = opts.host ?? realHost;
  }

  validateParameters(params: Record<string, string>): void {
    for (const k of Object.keys(params)) {
      if (!PARAMS.has(k)) throw new BackendError('invalid', `the lvm backend has no parameter ${JSON.stringify(k)}; it takes: ${[...PARAMS].join(', ')}`);
    }
    const vg = params.volumeGroup ?? this.opts.volumeGroups[0];
    if (!this.opts.volumeGroups.includes(vg)) {
      throw new BackendError('invalid', `volume group ${JSON.stringify(vg.slice(0, 64))} is not one this driver may touch (--lvm-volume-groups: ${this.opts.volumeGroups.join(', ')})`);
    }
    const type = params.type ?? 'linear';
    if (type !== 'linear' && type !== 'thin') throw new BackendError('invalid', `parameter type must be linear or thin, not ${JSON.stringify(type.slice(0, 32))}`);
    if (type === 'thin') {
      if (!params.thinPool || !/^[A-Za-z0-9+_.-]{1,64}$/.test(params.thinPool)) throw new BackendError('invalid', 'type thin needs a thinPool parameter naming an existing thin pool');
      if (this.opts.mode === 'nodm' || (this.lvm && !this.deviceMapper)) {
        throw new BackendError('invalid', 'thin volumes need device-mapper, which this node does not have; use type linear');
      }
    }
  }

  async init(): Promise<void> {
    const dmPresent = await this.host.hasDeviceMapper();
    if (this.opts.mode === 'dm' && !dmPresent) throw new Error('--lvm-mode dm, but the kernel has no device-mapper (/proc/misc)');
    this.deviceMapper = this.opts.mode === 'dm' || (this.opts.mode === 'auto' && dmPresent);
    this.lvm = new Lvm(this.opts.stateDir, this.deviceMapper, this.opts.runner, this.opts.systemId);
    const devices = this.opts.devices ?? this.ownPvs(await Lvm.scanPvs());
    await this.lvm.configure(devices);
    let missing: string[];
    try {
      missing = (await this.lvm.vgsOrMissing(this.opts.volumeGroups)).missing;
    } catch (err) {
      throw new Error(`could not look up volume group(s) ${this.opts.volumeGroups.join(', ')}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (missing.length) throw new Error(`volume group(s) ${missing.join(', ')} not found on devices ${devices.join(', ') || '(none)'}`);
    // An LV still marked dirty is a create or copy that never finished: remove it, the
    // CO's retry makes it again. Exactly one LV per name, or none.
    for (const lv of await this.lvm.lvs(this.opts.volumeGroups)) {
      if (lv.tags.includes(TAG_PIT)) {
        await this.lvm.run(['lvremove', '-y', `${lv.vg}/${lv.name}`]);
        this.opts.log.warn({ lv: `${lv.vg}/${lv.name}` }, 'removed the copy-source snapshot of a copy that did not finish');
      }
    }
    for (const lv of await this.ours()) {
      if (!lv.tags.includes(TAG_DIRTY)) continue;
      try {
        await this.detachForRemoval(lv);
      } catch (err) {
        // Start-up goes on: the CO's retry of the create says the same, and an admin can act on it.
        this.opts.log.error({ lv: `${lv.vg}/${lv.name}`, err: err instanceof Error ? err.message : String(err) }, 'left an LV whose create did not finish: it could not be detached');
        continue;
      }
      await this.lvm.run(['lvremove', '-y', `${lv.vg}/${lv.name}`]);
      this.opts.log.warn({ lv: `${lv.vg}/${lv.name}` }, 'removed an LV whose create did not finish');
    }
    await this.releaseTempDevices();
    this.opts.log.info({ mode: this.deviceMapper ? 'dm' : 'nodm', volumeGroups: this.opts.volumeGroups, devices }, 'lvm backend ready');
  }

  /**
   * The scanned PVs of our VGs. A VG whose system ID is not this node's is another host's
   * (disks several nodes see): lvm would refuse it later with "not found", so say why now.
   */
  private ownPvs(scanned: ScannedPv[]): string[] {
    const mine = scanned.filter((p) => this.opts.volumeGroups.includes(p.vg));
    const own = this.opts.systemId ?? '';
    const foreign = [...new Map(mine.filter((p) => p.systemId !== '' && p.systemId !== own).map((p) => [p.vg, p.systemId])).entries()];
    if (foreign.length) {
      const which = foreign.map(([vg, id]) => `${vg} has lvm system ID ${JSON.stringify(id)}`).join(', ');
      throw new Error(
        `volume group(s) of --lvm-volume-groups belong to another host: ${which}, and this driver's is ${own ? JSON.stringify(own) : 'none'} (--lvm-system-id): ` +
          `serve each VG from the node whose ID it carries (start that node's driver with --lvm-system-id=<that ID>), or change the VG's (vgchange --systemid) if this node owns it now`,
      );
    }
    return mine.map((p) => p.name);
  }

  private async ours(select?: string): Promise<LvInfo[]> {
    return (await this.lvm.lvs(this.opts.volumeGroups, select)).filter((lv) => holdsOf(lv) !== undefined);
  }

  private async findLv(id: string, holds: LvHolds): Promise<LvInfo | undefined> {
    const [lv] = (await this.ours(`lv_name=${id}`)).filter((l) => holdsOf(l) === holds);
    return lv;
  }

  private volumeFrom(lv: LvInfo): VolumeRecord | undefined {
    const r = lv.tags.includes(TAG_DIRTY) ? undefined : this.readable(lv, volumeRecordOf);
    // The LV's real size wins over the record: an expand that crashed before its tag update
    // still shows its true size.
    return r && { ...r, capacityBytes: lv.sizeBytes };
  }

  /** An LV's record, or undefined (logged) when it cannot be read: one bad LV must not break every listing. */
  private readable<T>(lv: LvInfo, read: (lv: LvInfo) => T): T | undefined {
    try {
      return read(lv);
    } catch (err) {
      this.opts.log.error({ lv: `${lv.vg}/${lv.name}`, err: err instanceof Error ? err.message : String(err) }, 'skipped an LV whose record cannot be read');
      return undefined;
    }
  }

  private async extentOf(vg: string): Promise<bigint> {
    let e = this.extentBytes.get(vg);
    if (e === undefined) {
      const [info] = await this.lvm.vgs([vg]);
      if (!info) throw new BackendError('precondition', `volume group ${vg} not found`);
      e = info.extentBytes;
      this.extentBytes.set(vg, e);
    }
    return e;
  }

  async granularity(params: Record<string, string>): Promise<bigint> {
    return this.extentOf(this.vgOf(params));
  }

  /** Each volume group, and each thin pool's data and metadata in them. */
  async poolUsage(): Promise<PoolUsage[]> {
    const vgs = this.opts.volumeGroups;
    const [infos, thin] = await Promise.all([this.lvm.vgs(vgs), this.lvm.thinPools(vgs)]);
    const out: PoolUsage[] = infos.map((v) => ({ pool: v.name, part: 'data', capacityBytes: v.sizeBytes, freeBytes: v.freeBytes }));
    // lvm reports thin usage in percent with two decimals: free bytes are as exact as that.
    // An unknown percent (an inactive pool) leaves free unknown: reading it as 0 % used would
    // show a full pool as empty and keep its alerts quiet.
    const freeOf = (size: bigint, pct: number | undefined) => (pct === undefined ? undefined : (size * BigInt(Math.round((100 - pct) * 100))) / 10000n);
    for (const t of thin) {
      out.push({ pool: `${t.vg}/${t.name}`, part: 'data', capacityBytes: t.dataBytes, freeBytes: freeOf(t.dataBytes, t.dataPercent) });
      out.push({ pool: `${t.vg}/${t.name}`, part: 'metadata', capacityBytes: t.metadataBytes, freeBytes: freeOf(t.metadataBytes, t.metadataPercent) });
    }
    return out;
  }

  async capacity(params: Record<string, string>): Promise<Capacity> {
    const vg = this.vgOf(params);
    const [info] = await this.lvm.vgs([vg]);
    if (!info) return { availableBytes: 0n };
    if (params.type === 'thin' && params.thinPool) {
      // Over-provisioning: promise up to ratio x the pool, less what thin volumes already claim,
      // and never more than the ratio x the pool's unwritten space.
      const all = await this.lvm.lvs([vg]);
      const pool = all.find((l) => l.name === params.thinPool);
      if (!pool) return { availableBytes: 0n };
      const ratio = BigInt(Math.round((this.opts.thinOverprovisionRatio ?? DEFAULT_THIN_OVERPROVISION_RATIO) * 100));
      const claimed = all.filter((l) => l.poolLv === pool.name).reduce((a, l) => a + l.sizeBytes, 0n);
      const promised = (pool.sizeBytes * ratio) / 100n - claimed;
      // An unknown fill (lvm prints "" for a pool with no kernel state, such as an inactive
      // one) is not 0 % used: read so, a full pool would look empty and take more volumes.
      if (pool.dataPercent === undefined) {
        throw new BackendError(
          'precondition',
          `thin pool ${vg}/${pool.name} does not report how full it is (it is not active), so its free space is unknown: activate it (lvchange -ay ${vg}/${pool.name}) and retry`,
        );
      }
      const unwritten = (pool.sizeBytes * BigInt(Math.floor((100 - pool.dataPercent) * 100))) / 10000n;
      const cap = (unwritten * ratio) / 100n;
      const available = promised < 0n ? 0n : promised < cap ? promised : cap;
      return { availableBytes: available, maximumVolumeBytes: this.opts.maxVolumeBytes };
    }
    let largest = info.freeBytes;
    if (!this.deviceMapper) {
      // Without device-mapper a volume must be one contiguous run of extents.
      const runs = await this.lvm.freeRuns(vg);
      largest = BigInt(Math.max(0, ...runs.map((r) => r.size))) * info.extentBytes;
    }
    const max = this.opts.maxVolumeBytes;
    return { availableBytes: info.freeBytes, maximumVolumeBytes: max !== undefined && max < largest ? max : largest };
  }

  async getVolume(id: string): Promise<VolumeRecord | undefined> {
    const lv = await this.findLv(id, 'vol');
    return lv ? this.volumeFrom(lv) : undefined;
  }

  async listVolumes(): Promise<VolumeRecord[]> {
    return (await this.ours())
      .filter((lv) => holdsOf(lv) === 'vol')
      .map((lv) => this.volumeFrom(lv))
      .filter((v): v is VolumeRecord => !!v);
  }

  private async lvcreate(holds: LvHolds, id: string, vg: string, bytes: bigint, params: Record<string, string>, rec: object): Promise<void> {
    const tags = newLvTagArgs(holds, rec);
    // -an: lvcreate activates by default, and an LV left active counts as attached on this
    // node (DeleteVolume refuses it, NodeUnstage would deactivate a device it never staged).
    // Activation is NodeStage's and the wipe's, each undoing its own. Signatures: the wipe.
    const args =
      params.type === 'thin'
        ? ['lvcreate', '-y', '-an', '-n', id, '-V', `${bytes}b`, '-T', `${vg}/${params.thinPool}`, ...tags]
        : ['lvcreate', '-y', '-n', id, '-L', `${bytes}b`, ...(this.deviceMapper ? ['-an', '-Wn', '-Zn'] : ['--alloc', 'contiguous', '-Wn', '-Zn']), ...tags, vg];
    try {
      await this.lvm.run(args);
    } catch (err) {
      throw exhaustedOr(err, `creating ${vg}/${id}`);
    }
  }

  private async clearDirty(vg: string, id: string): Promise<void> {
    await this.lvm.run(['lvchange', '--deltag', TAG_DIRTY, `${vg}/${id}`]);
  }

  private vgOf(params: Record<string, string>): string {
    return params.volumeGroup ?? this.opts.volumeGroups[0];
  }

  async createVolume(rec: VolumeRecord): Promise<VolumeRecord> {
    const vg = this.vgOf(rec.parameters);
    const existing = await this.findLv(rec.id, 'vol');
    if (existing?.tags.includes(TAG_DIRTY)) {
      await this.detachForRemoval(existing);
      await this.lvm.run(['lvremove', '-y', `${existing.vg}/${existing.name}`]);
    } else if (existing) {
      const v = this.volumeFrom(existing);
      if (!v) throw new BackendError('precondition', `${existing.vg}/${existing.name} exists, but its record cannot be read (see the driver's log); not touching it`);
      return v;
    }
    const src = rec.contentSource ? await this.findLv(rec.contentSource.id, rec.contentSource.type === 'snapshot' ? 'snap' : 'vol') : undefined;
    if (rec.contentSource && !src) throw new BackendError('not-found', `content source ${rec.contentSource.id} does not exist`);
    if (src && src.vg !== vg) throw new BackendError('invalid', `content source ${rec.contentSource!.id} is in volume group ${src.vg}, not ${vg}`);
    if (src && !(this.deviceMapper && rec.parameters.type === 'thin' && src.poolLv)) await this.mustBeCopyable([src], `cloning ${src.name}`);

    if (rec.parameters.type === 'thin') await this.mustZeroNewBlocks(vg, rec.parameters.thinPool);
    let made: LvInfo | undefined;
    if (src && this.deviceMapper && rec.parameters.type === 'thin' && src.poolLv) {
      // Thin clone: a thin snapshot of the source, instant and sharing blocks. lvm suspends an
      // active source for the cut, which freezes (and so syncs) a filesystem mounted on it.
      const tags = newLvTagArgs('vol', rec);
      await this.lvm.run(['lvcreate', '-y', '-s', '-kn', '-an', '-n', rec.id, ...tags, `${vg}/${src.name}`]).catch((err: unknown) => {
        throw exhaustedOr(err, `cloning ${src.name}`);
      });
      if (rec.capacityBytes > src.sizeBytes) await this.lvm.run(['lvextend', '-L', `${rec.capacityBytes}b`, `${vg}/${rec.id}`]);
    } else {
      await this.lvcreate('vol', rec.id, vg, rec.capacityBytes, rec.parameters, rec);
      failpoint('lvm.create.afterLvcreate');
      const thinVolume = rec.parameters.type === 'thin';
      // Thin pools that zero (checked above) hand out zeroed blocks; everything else is wiped before first use.
      if (!thinVolume || src) {
        const lv = (await this.findLv(rec.id, 'vol'))!;
        made = lv;
        await this.withTempDevice(lv, async (dst) => {
          if (!thinVolume) await this.host.wipe(dst);
          if (src) await this.copySources([src], [rec.id], `cloning ${src.name}`, async (_i, s) => this.host.copy(s, dst, src.sizeBytes));
        });
      }
    }
    failpoint('lvm.create.afterCopy');
    await this.clearDirty(vg, rec.id);
    // The LV read after lvcreate, less the tag just removed, is what a new lookup would find: one lvs fewer.
    if (made) return this.volumeFrom({ ...made, tags: made.tags.filter((t) => t !== TAG_DIRTY) })!;
    return (await this.getVolume(rec.id))!;
  }

  /**
   * A thin pool that does not zero new blocks hands a new thin volume whatever a deleted
   * one left in them. Wiping every thin volume would allocate all of it, so such pools are
   * refused instead.
   */
  private async mustZeroNewBlocks(vg: string, poolName: string | undefined): Promise<void> {
    const pool = (await this.lvm.lvs([vg], `lv_name=${poolName}`)).find((l) => l.name === poolName);
    if (!pool || pool.attr[0] !== 't') throw new BackendError('invalid', `thinPool ${JSON.stringify(poolName)} is not a thin pool in volume group ${vg}`);
    if (pool.attr[7] !== 'z') {
      throw new BackendError(
        'precondition',
        `thin pool ${vg}/${poolName} does not zero newly allocated blocks, so a new volume could read a deleted volume's data: ` +
          `turn zeroing on (lvchange --zero y ${vg}/${poolName}) or use type linear`,
      );
    }
  }

  /** Refuses (before anything is made) a copy that would need a point-in-time image this node cannot make. */
  private async mustBeCopyable(sources: LvInfo[], what: string): Promise<{ attached: string[]; mounted: string[] }> {
    const attached = (await Promise.all(sources.map((s) => this.deviceOf(s)))).filter((d): d is string => !!d);
    const mounted = await this.host.mountedFilesystems(attached);
    if (mounted.length > 0 && !this.deviceMapper) {
      throw new BackendError(
        'precondition',
        `${what}: the source is mounted (${mounted.join(', ')}) and without device-mapper LVM has no snapshot to copy from, so the copy would keep the ` +
          `application's filesystem frozen for as long as it takes. Unstage the volume (stop the pods using it) and retry.`,
      );
    }
    return { attached, mounted };
  }

  /**
   * Runs copyOne for each source LV with a device to read it from, all as of one point in
   * time. An unmounted source is read directly (flushed first: nothing writes to it through
   * a filesystem). Mounted ones are never copied inside a freeze, which would stall their
   * applications for the whole copy: with device-mapper, COW snapshots of them are cut (one
   * by lvm's own suspend, several inside one short freeze) and copied after; without it
   * there is no such image, and the error says so.
   */
  private async copySources(sources: LvInfo[], ids: string[], what: string, copyOne: (i: number, device: string) => Promise<void>): Promise<void> {
    const { attached, mounted } = await this.mustBeCopyable(sources, what);
    if (mounted.length === 0) {
      await this.host.withQuiescedDevices(attached, async () => {
        for (let i = 0; i < sources.length; i++) await this.withTempDevice(sources[i], (d) => copyOne(i, d));
      });
      return;
    }
    // Only sources in use need a snapshot (an active origin's is active too); the others hold still anyway.
    const live = await Promise.all(sources.map(async (s) => !!(await this.deviceOf(s))));
    const pits = sources.map((s, i) => ({ vg: s.vg, name: `${ids[i]}.pit` }));
    const made: string[] = [];
    try {
      const cut = async () => {
        for (let i = 0; i < sources.length; i++) {
          if (!live[i]) continue;
          await this.lvm.run(['lvcreate', '-y', '-s', '-l', '100%ORIGIN', '-n', pits[i].name, '--addtag', TAG_PIT, `${sources[i].vg}/${sources[i].name}`]);
          made.push(`${pits[i].vg}/${pits[i].name}`);
        }
      };
      // As for thin snapshots: lvm suspends the active origin of a COW snapshot, and that
      // suspend freezes (so syncs) the filesystem mounted on it; the kernel refuses it on a
      // filesystem frozen already (EBUSY). One source gets no freeze of ours. Several are cut
      // inside one freeze of all of them, refused the same way when mounted (known limit, #17).
      if (sources.length === 1) await cut();
      else await this.host.withQuiescedDevices(attached, cut);
      for (let i = 0; i < sources.length; i++) {
        if (live[i]) await copyOne(i, `/dev/${pits[i].vg}/${pits[i].name}`);
        else await this.withTempDevice(sources[i], (d) => copyOne(i, d));
      }
    } finally {
      for (const m of made) await this.lvm.run(['lvremove', '-y', m]);
    }
  }

  async saveVolume(rec: VolumeRecord): Promise<void> {
    const lv = await this.findLv(rec.id, 'vol');
    if (!lv) throw new BackendError('not-found', `volume ${rec.id} does not exist`);
    await this.retag(lv, recordTags('vol', rec));
    // The record first: a crash between the two leaves a device the next save (or attach) corrects.
    const dev = this.deviceMapper ? undefined : await this.deviceOf(lv);
    const cur = dev ? await this.host.describe(dev) : undefined;
    if (dev && cur && cur.directIO !== directIOOf(rec)) await this.host.setDirectIO(dev, directIOOf(rec));
  }

  /** Replaces the record tags in one lvchange: one metadata commit, so never half a record. */
  private async retag(lv: LvInfo, tags: string[]): Promise<void> {
    const old = lv.tags.filter((t) => t.startsWith(TAG_RECORD) || t.startsWith(`${TAG_HOLDS}=`));
    const del = old.filter((t) => !tags.includes(t)).flatMap((t) => ['--deltag', t]);
    const add = tags.filter((t) => !old.includes(t)).flatMap((t) => ['--addtag', t]);
    if (del.length + add.length > 0) await this.lvm.run(['lvchange', ...del, ...add, `${lv.vg}/${lv.name}`]);
  }

  async expandVolume(rec: VolumeRecord, newBytes: bigint): Promise<VolumeRecord> {
    const lv = await this.findLv(rec.id, 'vol');
    if (!lv) throw new BackendError('not-found', `volume ${rec.id} does not exist`);
    if (lv.sizeBytes < newBytes) {
      try {
        await this.lvm.run(['lvextend', '-L', `${newBytes}b`, ...(this.deviceMapper ? [] : ['--alloc', 'contiguous']), `${lv.vg}/${lv.name}`]);
      } catch (err) {
        throw exhaustedOr(err, `growing ${lv.vg}/${lv.name} in place`);
      }
    }
    failpoint('lvm.expand.afterLvextend');
    const next = { ...rec, capacityBytes: newBytes };
    await this.saveVolume(next);
    return next;
  }

  /**
   * The controller finds no record of an LV whose tags cannot be read and passes it here as
   * a half-done delete, without its "still published" check: such an LV is refused, since
   * it may be in use on a node. A dirty one (a create that never finished) was never published.
   */
  async deleteVolume(id: string): Promise<void> {
    const lv = await this.findLv(id, 'vol');
    if (!lv) return;
    if (!lv.tags.includes(TAG_DIRTY)) {
      try {
        volumeRecordOf(lv);
      } catch (err) {
        throw new BackendError(
          'precondition',
          `${lv.vg}/${lv.name} exists but its record (LV tags) cannot be read (${err instanceof Error ? err.message : String(err)}), so whether it is still published to a node cannot be told; not deleting it. ` +
            `Make sure no node uses it (unstage it there), then remove it with lvremove ${lv.vg}/${lv.name}, or restore its tscsi.* tags and retry`,
        );
      }
    }
    await this.removeLv(lv);
  }

  private async removeLv(lv: LvInfo): Promise<void> {
    const dev = await this.deviceOf(lv);
    if (dev) throw new BackendError('precondition', `${lv.vg}/${lv.name} is still attached on this node as ${dev}: unstage it first`);
    // The next tenant of these extents must not see this one's data.
    if (!lv.poolLv) await this.withTempDevice(lv, (d) => this.host.wipe(d));
    failpoint('lvm.delete.afterWipe');
    await this.lvm.run(['lvremove', '-y', `${lv.vg}/${lv.name}`]);
  }

  async volumeHealth(rec: VolumeRecord): Promise<HealthProblem[]> {
    let lv: LvInfo | undefined;
    let pool: LvInfo | undefined;
    try {
      lv = await this.findLv(rec.id, 'vol');
      if (lv?.poolLv) pool = (await this.lvm.lvs([lv.vg], `lv_name=${lv.poolLv}`))[0];
    } catch (err) {
      return [{ status: 'INACCESSIBLE', reason: 'LvmUnreadable', message: `lvm cannot report on volume ${rec.id}: ${err instanceof Error ? err.message : String(err)}` }];
    }
    if (!lv) return [await this.volumeGone(rec.id)];
    return lvProblems(lv, pool, this.deviceMapper);
  }

  /** The volume's LV was removed outside the driver (its record went with its tags). */
  async volumeGone(id: string): Promise<HealthProblem> {
    return {
      status: 'DATA_LOSS',
      reason: 'LogicalVolumeMissing',
      message: `the logical volume ${id} is in none of the volume groups this driver serves (${this.opts.volumeGroups.join(', ')}): it was removed outside the driver, and its extents may already belong to another volume; unstage it and restore from a snapshot or backup`,
    };
  }

  async storageHealth(): Promise<StorageProblem[]> {
    try {
      const { found, missing } = await this.lvm.vgsOrMissing(this.opts.volumeGroups);
      const have = found.map((v) => v.name);
      const vgs = await this.lvm.vgHealth(have);
      // lv_attr type 't': thin pools (those the driver's volumes use and any other: both share the VG's space).
      const pools = (await this.lvm.lvs(have)).filter((l) => l.attr[0] === 't');
      return vgProblems(missing, vgs, pools);
    } catch (err) {
      return [{ status: 'STORAGE_UNREACHABLE', reason: 'LvmUnreadable', message: `lvm cannot report on volume group(s) ${this.opts.volumeGroups.join(', ')}: ${err instanceof Error ? err.message : String(err)}` }];
    }
  }

  async getSnapshot(id: string): Promise<SnapshotRecord | undefined> {
    const lv = await this.findLv(id, 'snap');
    const r = lv && !lv.tags.includes(TAG_DIRTY) ? this.readable(lv, snapshotRecordOf) : undefined;
    if (!r) return undefined;
    const { group: _g, ...snap } = r;
    return snap;
  }

  /** The snapshot's LV as a block device for fn (a computed delta reads it), attached only meanwhile. */
  private async withSnapshotDevice<T>(id: string, fn: (device: string) => Promise<T>): Promise<T> {
    const lv = await this.findLv(id, 'snap');
    if (!lv || lv.tags.includes(TAG_DIRTY)) throw new BackendError('not-found', `snapshot ${id} has no logical volume any more; it is being deleted`);
    return this.withTempDevice(lv, fn);
  }

  private async snapshotsWithGroups(): Promise<SnapshotWithGroup[]> {
    return (await this.ours())
      .filter((lv) => holdsOf(lv) === 'snap' && !lv.tags.includes(TAG_DIRTY))
      .map((lv) => this.readable(lv, snapshotRecordOf))
      .filter((s): s is SnapshotWithGroup => !!s);
  }

  async listSnapshots(): Promise<SnapshotRecord[]> {
    return (await this.snapshotsWithGroups()).map(({ group: _g, ...s }) => s);
  }

  async createSnapshots(recs: SnapshotRecord[]): Promise<SnapshotRecord[]> {
    const sources: LvInfo[] = [];
    for (const r of recs) {
      const lv = await this.findLv(r.sourceVolumeId, 'vol');
      if (!lv) throw new BackendError('not-found', `source volume ${r.sourceVolumeId} does not exist`);
      sources.push(lv);
      const stale = await this.findLv(r.id, 'snap');
      if (stale) await this.removeLv(stale);
    }
    const attached = (await Promise.all(sources.map((s) => this.deviceOf(s)))).filter((d): d is string => !!d);
    const thin = this.deviceMapper && sources.every((s) => s.poolLv);
    if (thin) {
      const cut = async () => {
        for (let i = 0; i < recs.length; i++) {
          const tags = newLvTagArgs('snap', recs[i]);
          await this.lvm.run(['lvcreate', '-y', '-s', '-kn', '-an', '-n', recs[i].id, ...tags, `${sources[i].vg}/${sources[i].name}`]).catch((err: unknown) => {
            throw exhaustedOr(err, `snapshotting ${sources[i].name}`);
          });
        }
      };
      // Thin snapshots are instant. lvm suspends an active origin for the cut, and that
      // suspend freezes (so syncs) a filesystem mounted on it: one source needs no freeze of
      // ours, and gets none, since the kernel refuses to suspend an origin whose filesystem
      // is already frozen (EBUSY). Several are cut inside one freeze of all of them, which
      // the kernel refuses in the same way when they are mounted (known limit, #17).
      if (recs.length === 1) await cut();
      else await this.host.withQuiescedDevices(attached, cut);
    } else {
      await this.mustBeCopyable(sources, 'snapshotting');
      for (let i = 0; i < recs.length; i++) {
        await this.lvcreate('snap', recs[i].id, sources[i].vg, sources[i].sizeBytes, { type: 'linear' }, recs[i]);
      }
      const dests = await Promise.all(recs.map(async (r) => (await this.findLv(r.id, 'snap'))!));
      failpoint('lvm.snapshot.afterLvcreate');
      // Full copies, all of one point in time so a group is consistent across volumes.
      await this.copySources(sources, recs.map((r) => r.id), 'snapshotting', (i, src) => this.withTempDevice(dests[i], (dst) => this.host.copy(src, dst, sources[i].sizeBytes)));
    }
    failpoint('lvm.snapshot.afterCopy');
    for (let i = 0; i < recs.length; i++) await this.clearDirty(sources[i].vg, recs[i].id);
    return recs;
  }

  async deleteSnapshot(id: string): Promise<void> {
    const lv = await this.findLv(id, 'snap');
    if (lv) await this.removeLv(lv);
  }

  // A group snapshot has no LV of its own: its record rides in each member's tags.
  async getGroupSnapshot(id: string): Promise<GroupSnapshotRecord | undefined> {
    return (await this.snapshotsWithGroups()).find((s) => s.group?.id === id)?.group;
  }

  async saveGroupSnapshot(rec: GroupSnapshotRecord): Promise<void> {
    // Every member is found before any is tagged: a missing one leaves no partial group.
    const members: Array<{ lv: LvInfo; snap: SnapshotWithGroup }> = [];
    for (const sid of rec.snapshotIds) {
      const lv = await this.findLv(sid, 'snap');
      const snap = lv ? this.readable(lv, snapshotRecordOf) : undefined;
      if (!lv || !snap) throw new BackendError('not-found', `member snapshot ${sid} does not exist`);
      members.push({ lv, snap });
    }
    for (const { lv, snap } of members) await this.retag(lv, recordTags('snap', { ...snap, group: rec }));
  }

  async deleteGroupSnapshotRecord(id: string): Promise<void> {
    for (const s of await this.snapshotsWithGroups()) {
      if (s.group?.id !== id) continue;
      const lv = await this.findLv(s.id, 'snap');
      const { group: _g, ...snap } = s;
      if (lv) await this.retag(lv, recordTags('snap', snap));
    }
  }

  // ---- node side -------------------------------------------------------------------

  /** Where a nodm window for this LV goes: the PV's backing file when the PV is itself a loop device (one layer, direct I/O). */
  private async windowOf(lv: LvInfo): Promise<{ file: string; offset: number; size: number }> {
    if (lv.segments.length !== 1) throw new BackendError('precondition', `${lv.vg}/${lv.name} has ${lv.segments.length} segments; without device-mapper only one contiguous segment can be exposed`);
    const seg = lv.segments[0];
    const placed = `${lv.vg}/${lv.name}:${seg.startPe}+${seg.sizePe}`;
    if (seg.pv === UNKNOWN_PV) {
      // Its PV is missing: the window made while it was there is still where it was.
      const w = this.windows.get(placed);
      if (w) return w;
      throw new BackendError('precondition', `${lv.vg}/${lv.name} is on a missing physical volume of ${lv.vg}; reconnect it`);
    }
    if (!this.peStart.has(seg.pv)) for (const p of await this.lvm.pvs([lv.vg])) this.peStart.set(p.name, p.peStartBytes);
    const peStart = this.peStart.get(seg.pv);
    const extent = await this.extentOf(lv.vg);
    if (peStart === undefined) throw new BackendError('precondition', `physical volume ${seg.pv} of ${lv.vg} not found`);
    let file = seg.pv;
    let base = 0;
    const m = /^\/dev\/loop\d+$/.test(seg.pv) ? (await this.host.describe(seg.pv)) : undefined;
    if (m) {
      file = m.backFile;
      base = m.offset;
    }
    const w = { file, offset: base + Number(peStart + BigInt(seg.startPe) * extent), size: Number(lv.sizeBytes) };
    this.windows.set(placed, w);
    return w;
  }

  private dmPath(lv: LvInfo): string {
    return `/dev/${lv.vg}/${lv.name}`;
  }

  private async deviceOf(lv: LvInfo): Promise<string | undefined> {
    if (this.deviceMapper) return lv.attr[4] === 'a' ? this.dmPath(lv) : undefined;
    if (lv.segments.length !== 1) return undefined;
    const w = await this.windowOf(lv);
    return (await this.host.windowsAt(w.file, w.offset))[0]?.name;
  }

  /** `directIO`: of a nodm window (a volume's record says; temporary devices for copies keep the default, on). */
  private async attachLv(lv: LvInfo, directIO = true): Promise<string> {
    if (this.deviceMapper) {
      await this.lvm.run(['lvchange', '-ay', '-K', `${lv.vg}/${lv.name}`]);
      return this.dmPath(lv);
    }
    const w = await this.windowOf(lv);
    return this.host.attachWindow(w.file, w.offset, w.size, directIO);
  }

  private async detachLv(lv: LvInfo): Promise<void> {
    if (this.deviceMapper) {
      await this.lvm.run(['lvchange', '-an', `${lv.vg}/${lv.name}`]);
      return;
    }
    const w = await this.windowOf(lv);
    for (const d of await this.host.windowsAt(w.file, w.offset)) await this.host.detach(d.name);
  }

  /**
   * Detaches an LV that is about to be removed. Not attached: nothing to do. Still attached
   * afterwards (held open: the kernel then only marks a loop device to go at its last close,
   * and lvchange -an refuses): the LV is in use, and removing it would pull its extents from
   * under the user, so this throws instead. A detach that failed but left nothing attached is
   * done all the same.
   */
  private async detachForRemoval(lv: LvInfo): Promise<void> {
    if (!(await this.deviceOf(lv))) return;
    let failure: unknown;
    await this.detachLv(lv).catch((err: unknown) => {
      failure = err;
    });
    // Read again: in device-mapper mode the activation state is in the LV's attributes.
    const now = (await this.ours(`lv_name=${lv.name}`)).find((l) => l.vg === lv.vg) ?? lv;
    const still = await this.deviceOf(now);
    if (still) {
      const why = failure instanceof Error ? failure.message : failure !== undefined ? String(failure) : 'it is held open';
      throw new BackendError('precondition', `${lv.vg}/${lv.name} is still attached as ${still} and could not be detached (${why}); not removing it`);
    }
  }

  /**
   * Runs fn with the LV as a block device: the attached one, or one made for fn and removed
   * after. A device made here is written down first: a driver killed inside fn cannot tell
   * it from a staged volume's device afterwards, and DeleteVolume would refuse for ever.
   */
  private async withTempDevice<T>(lv: LvInfo, fn: (device: string) => Promise<T>): Promise<T> {
    const existing = await this.deviceOf(lv);
    if (existing) return fn(existing);
    const mark = this.tempMark(lv);
    await fs.mkdir(path.dirname(mark), { recursive: true, mode: 0o700 });
    await writeJsonAtomic(mark, { vg: lv.vg, name: lv.name });
    const dev = await this.attachLv(lv);
    try {
      return await fn(dev);
    } finally {
      await this.detachLv(lv);
      await removeFile(mark);
    }
  }

  private tempMark(lv: LvInfo): string {
    return path.join(this.opts.stateDir, 'lvm-temp-devices', `${Buffer.from(`${lv.vg}/${lv.name}`).toString('base64url')}.json`);
  }

  /** Start-up: removes the temporary devices a killed run left (nothing is staged on them: staging never reuses one before this runs). */
  private async releaseTempDevices(): Promise<void> {
    const dir = path.dirname(this.tempMark({ vg: '', name: '' } as LvInfo));
    for (const n of await fs.readdir(dir).catch(() => [] as string[])) {
      const file = path.join(dir, n);
      const m = n.endsWith('.json') ? await readJson<{ vg: string; name: string }>(file).catch(() => undefined) : undefined;
      const lv = m && this.opts.volumeGroups.includes(m.vg) ? (await this.ours(`lv_name=${m.name}`)).find((l) => l.vg === m.vg) : undefined;
      if (lv) {
        await this.detachLv(lv);
        this.opts.log.warn({ lv: `${lv.vg}/${lv.name}` }, 'detached a temporary device a previous run left');
      }
      await removeFile(file);
    }
  }

  private async mustLv(rec: VolumeRecord): Promise<LvInfo> {
    const lv = await this.findLv(rec.id, 'vol');
    if (!lv) throw new BackendError('not-found', `volume ${rec.id} does not exist`);
    return lv;
  }

  async attach(rec: VolumeRecord): Promise<string> {
    return this.attachLv(await this.mustLv(rec), directIOOf(rec));
  }

  async attachedDevice(rec: VolumeRecord): Promise<string | undefined> {
    const lv = await this.findLv(rec.id, 'vol');
    return lv ? this.deviceOf(lv) : undefined;
  }

  async detach(rec: VolumeRecord): Promise<void> {
    const lv = await this.findLv(rec.id, 'vol');
    if (lv && (await this.deviceOf(lv))) await this.detachLv(lv);
  }

  /**
   * nodm: an LV removed while staged leaves its window attached, and nothing in lvm names it
   * any more. The device NodeStage recorded is let go when it still is such a window (see
   * isOrphanWindow). With device-mapper, lvm refuses to remove an open LV: nothing is left.
   */
  async orphanedAttachment(_id: string, recorded: string | undefined): Promise<{ device: string; detach(): Promise<void> } | undefined> {
    if (this.deviceMapper || !recorded || !/^\/dev\/loop\d+$/.test(recorded)) return undefined;
    const w = await this.host.describe(recorded);
    if (!w || !(await this.isOrphanWindow(recorded, w))) return undefined;
    return { device: recorded, detach: () => this.host.detach(recorded) };
  }

  /**
   * A window over one of the driver's PVs, past its metadata (never the PV itself), that no
   * LV of the volume groups has: the extents the removal freed may already hold a new LV,
   * and a window at its place is that LV's device.
   */
  private async isOrphanWindow(device: string, w: { backFile: string; offset: number }): Promise<boolean> {
    const pvs = await this.lvm.pvs(this.opts.volumeGroups);
    if (pvs.some((p) => p.name === device)) return false;
    let onPv = false;
    for (const p of pvs) {
      const m = /^\/dev\/loop\d+$/.test(p.name) ? await this.host.describe(p.name) : undefined;
      if ((m?.backFile ?? p.name) === w.backFile && w.offset >= (m?.offset ?? 0) + Number(p.peStartBytes)) onPv = true;
    }
    if (!onPv) return false;
    for (const lv of await this.lvm.lvs(this.opts.volumeGroups)) {
      if (lv.segments.length !== 1) continue;
      const lw = await this.windowOf(lv).catch(() => undefined);
      if (lw && lw.file === w.backFile && lw.offset === w.offset) return false;
    }
    return true;
  }

  async refreshDevice(rec: VolumeRecord, device: string): Promise<void> {
    if (this.deviceMapper) return; // dm devices follow lvextend by themselves
    const lv = await this.mustLv(rec);
    await this.host.setSizeLimit(device, lv.sizeBytes);
  }
}
