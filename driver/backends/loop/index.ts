// The loop backend: each volume is a sparse file with its record beside it; snapshots and
// clones are reflinks (instant, sharing blocks) where the data directory's filesystem
// supports them, sparse copies otherwise. Node-local: one data directory per node.
import fs from 'node:fs/promises';
import path from 'node:path';
import { BackendError, type Backend, type Capacity, type PoolUsage, type GroupSnapshotRecord, type GroupSnapshotStore, type SnapshotRecord, type HealthProblem, type StorageProblem, type VolumeRecord } from '../backend.js';
import { readJson, writeJsonAtomic, removeFile, fsyncDir } from '../../host/atomic.js';
import { run } from '../../host/exec.js';
import * as loop from '../../host/loop.js';
import { withQuiescedDevices, mountedFilesystems } from '../../host/freeze.js';
import type { Logger } from '../../log.js';
import { failpoint } from '../../failpoints.js';
import { MiB } from '../../../lib/size.js';
import { LoopSnapshotBlocks } from './blocks.js';
import { dataDirProblems } from './storagehealth.js';

export interface LoopBackendOptions {
  dataDir: string;
  /** Caps what GetCapacity reports and what may be provisioned; default: the data directory's size. */
  capacityBytes?: bigint;
  maxVolumeBytes?: bigint;
  /** The data directory is the XFS pool's mount point (--data-pool-size): it must stay mounted. */
  pool?: boolean;
  log: Logger;
}

const TRUE_FALSE = ['true', 'false'] as const;

/** Direct I/O (no second page cache in the loop driver) unless the volume turned it off. */
function directIOOf(rec: VolumeRecord): boolean {
  return (rec.mutableParameters.directIO ?? rec.parameters.directIO) !== 'false';
}

export class LoopBackend implements Backend {
  readonly nodeLocal = true;
  readonly name = 'loop';
  readonly mutableParameters = { directIO: TRUE_FALSE };
  readonly groupSnapshots: GroupSnapshotStore = this;
  readonly snapshotBlocks: LoopSnapshotBlocks;
  private readonly volDir: string;
  private readonly snapDir: string;
  private readonly groupDir: string;
  reflink = false;

  constructor(private readonly opts: LoopBackendOptions) {
    this.volDir = path.join(opts.dataDir, 'volumes');
    this.snapDir = path.join(opts.dataDir, 'snapshots');
    this.groupDir = path.join(opts.dataDir, 'groups');
    this.snapshotBlocks = new LoopSnapshotBlocks({ dataDir: opts.dataDir, reflink: () => this.reflink, snapshotFile: (id) => this.snapImg(id) });
  }

  validateParameters(params: Record<string, string>): void {
    for (const [k, v] of Object.entries(params)) {
      if (k !== 'directIO') throw new BackendError('invalid', `the loop backend has no parameter ${JSON.stringify(k)}; it takes: directIO (and the driver's backend, mkfsOptions)`);
      if (!(TRUE_FALSE as readonly string[]).includes(v)) throw new BackendError('invalid', `parameter directIO must be "true" or "false", not ${JSON.stringify(v)}`);
    }
  }

  private volImg(id: string) {
    return path.join(this.volDir, `${id}.img`);
  }
  private volMeta(id: string) {
    return path.join(this.volDir, `${id}.json`);
  }
  private snapImg(id: string) {
    return path.join(this.snapDir, `${id}.img`);
  }
  private snapMeta(id: string) {
    return path.join(this.snapDir, `${id}.json`);
  }

  async init(): Promise<void> {
    for (const d of [this.volDir, this.snapDir, this.groupDir]) await fs.mkdir(d, { recursive: true, mode: 0o700 });
    this.reflink = await this.probeReflink();
    // Reconcile: a record is written last on create and removed last on delete, so an
    // image without a record is a create that never finished, and a record without an
    // image is a delete that never finished. Temp files are always leftovers.
    for (const [dir, img, meta] of [
      [this.volDir, (id: string) => this.volImg(id), (id: string) => this.volMeta(id)],
      [this.snapDir, (id: string) => this.snapImg(id), (id: string) => this.snapMeta(id)],
    ] as const) {
      const names = await fs.readdir(dir);
      for (const n of names) {
        if (n.endsWith('.tmp')) {
          await removeFile(path.join(dir, n));
          this.opts.log.warn({ file: n }, 'removed a leftover temporary file');
        } else if (n.endsWith('.img') && !names.includes(n.replace(/\.img$/, '.json'))) {
          const id = n.replace(/\.img$/, '');
          if ((await loop.devicesFor(img(id))).length === 0) {
            await removeFile(img(id));
            this.opts.log.warn({ id }, 'removed the image of a create that did not finish');
          }
        } else if (n.endsWith('.json') && !names.includes(n.replace(/\.json$/, '.img'))) {
          const id = n.replace(/\.json$/, '');
          await removeFile(meta(id));
          this.opts.log.warn({ id }, 'finished a delete that did not finish');
        }
      }
    }
  }

  private async probeReflink(): Promise<boolean> {
    const a = path.join(this.opts.dataDir, `.reflink-probe-${process.pid}.tmp`);
    const b = `${a}.clone.tmp`;
    try {
      await fs.writeFile(a, 'probe');
      await fs.copyFile(a, b, fs.constants.COPYFILE_FICLONE_FORCE);
      return true;
    } catch {
      return false;
    } finally {
      await removeFile(a);
      await removeFile(b);
    }
  }

  async capacity(): Promise<Capacity> {
    const s = await fs.statfs(this.opts.dataDir, { bigint: true });
    const limit = this.opts.capacityBytes ?? s.blocks * s.bsize;
    let provisioned = 0n;
    for (const v of await this.listVolumes()) provisioned += v.capacityBytes;
    let available = limit > provisioned ? limit - provisioned : 0n;
    // Sparse files share the filesystem with snapshots and other tenants: never promise more than is free.
    const free = s.bavail * s.bsize;
    if (available > free) available = free;
    return { availableBytes: available, maximumVolumeBytes: this.opts.maxVolumeBytes };
  }

  /** The data directory's filesystem (the XFS pool image when there is one), as statfs sees it. */
  async poolUsage(): Promise<PoolUsage[]> {
    const s = await fs.statfs(this.opts.dataDir, { bigint: true });
    return [{ pool: this.opts.dataDir, part: 'data', capacityBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize }];
  }

  async granularity(): Promise<bigint> {
    return MiB;
  }

  async getVolume(id: string): Promise<VolumeRecord | undefined> {
    return readJson<VolumeRecord>(this.volMeta(id));
  }

  async listVolumes(): Promise<VolumeRecord[]> {
    const out: VolumeRecord[] = [];
    for (const n of (await fs.readdir(this.volDir)).sort()) {
      if (!n.endsWith('.json')) continue;
      const r = await this.readListed<VolumeRecord>(path.join(this.volDir, n));
      if (r) out.push(r);
    }
    return out;
  }

  /** One unreadable record is logged and left out: it must not break every listing. */
  private async readListed<T>(file: string): Promise<T | undefined> {
    try {
      return await readJson<T>(file);
    } catch (err) {
      this.opts.log.error({ file, err: err instanceof Error ? err.message : String(err) }, 'skipped an unreadable record while listing');
      return undefined;
    }
  }

  /** A source is there when its record is: the record is written last and removed last. */
  private async mustHaveSource(type: 'snapshot' | 'volume', id: string): Promise<void> {
    const found = type === 'snapshot' ? await this.getSnapshot(id) : await this.getVolume(id);
    if (!found) throw new BackendError('not-found', `source ${type} ${id} does not exist`);
  }

  async createVolume(rec: VolumeRecord): Promise<VolumeRecord> {
    if (rec.contentSource) await this.mustHaveSource(rec.contentSource.type, rec.contentSource.id);
    const img = this.volImg(rec.id);
    const tmp = `${img}.tmp`;
    await removeFile(tmp);
    try {
      if (rec.contentSource?.type === 'snapshot') {
        const src = this.snapImg(rec.contentSource.id);
        await this.cloneFile(src, tmp);
      } else if (rec.contentSource?.type === 'volume') {
        const src = this.volImg(rec.contentSource.id);
        await this.withQuiesced([src], () => (failpoint('loop.clone.frozen'), this.cloneFile(src, tmp)));
      }
      await this.sizeImage(tmp, rec.capacityBytes, !rec.contentSource);
      // No directory sync here: the record is renamed into this same directory next, and
      // its sync makes both entries durable before the create is answered. A crash before
      // that leaves an image without a record (removed at start) or, on a filesystem that
      // reorders, a record without an image (a delete finished at start): either way an
      // unanswered create, which the CO retries.
      await fs.rename(tmp, img);
    } catch (err) {
      await removeFile(tmp);
      throw err;
    }
    failpoint('loop.create.afterImage');
    await writeJsonAtomic(this.volMeta(rec.id), rec);
    return rec;
  }

  /** The image at its full size and synced; a blank one is made here in one open. */
  private async sizeImage(file: string, bytes: bigint, blank: boolean): Promise<void> {
    const h = await fs.open(file, blank ? 'wx' : 'r+', 0o600);
    try {
      failpoint('loop.create.afterTmp');
      const size = blank ? 0n : BigInt((await h.stat()).size);
      if (size < bytes) await h.truncate(Number(bytes));
      await h.sync();
    } finally {
      await h.close();
    }
  }

  async saveVolume(rec: VolumeRecord): Promise<void> {
    // The record is the volume's last part made and last removed: without it there is no volume to change.
    if (!(await this.getVolume(rec.id))) throw new BackendError('not-found', `volume ${rec.id} does not exist`);
    await writeJsonAtomic(this.volMeta(rec.id), rec);
    failpoint('loop.save.afterRecord');
    const dev = await this.attachedDevice(rec);
    if (dev) {
      const want = directIOOf(rec);
      const cur = (await loop.devicesFor(this.volImg(rec.id)))[0];
      if (cur && cur.directIO !== want) await loop.setDirectIO(dev, want);
    }
  }

  async expandVolume(rec: VolumeRecord, newBytes: bigint): Promise<VolumeRecord> {
    const h = await fs.open(this.volImg(rec.id), 'r+');
    try {
      const st = await h.stat();
      if (BigInt(st.size) < newBytes) await h.truncate(Number(newBytes));
      await h.sync();
    } finally {
      await h.close();
    }
    failpoint('loop.expand.afterTruncate');
    const next = { ...rec, capacityBytes: newBytes };
    await writeJsonAtomic(this.volMeta(rec.id), next);
    return next;
  }

  async deleteVolume(id: string): Promise<void> {
    const devs = await loop.devicesFor(this.volImg(id));
    if (devs.length > 0) {
      throw new BackendError(
        'precondition',
        `volume ${id} is still attached on this node as ${devs.map((d) => d.name).join(', ')}: unpublish and unstage it first`,
      );
    }
    // Image first, record last, one directory sync for both (shared with concurrent
    // writers): whichever of the two a crash leaves, the start-up reconcile finishes the
    // delete, and an answered delete has both gone for good.
    await removeFile(this.volImg(id));
    failpoint('loop.delete.afterImage');
    await removeFile(this.volMeta(id));
    await fsyncDir(this.volDir);
  }

  async volumeHealth(rec: VolumeRecord): Promise<HealthProblem[]> {
    try {
      const st = await fs.stat(this.volImg(rec.id));
      if (BigInt(st.size) < rec.capacityBytes) {
        return [{ status: 'DATA_LOSS', reason: 'BackingFileShrunk', message: `backing file ${this.volImg(rec.id)} is ${st.size} bytes, smaller than the volume's ${rec.capacityBytes}: its end is gone` }];
      }
      return [];
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') {
        // The data directory itself failing (a shut-down or vanished pool) says nothing about this file's bytes.
        return [{ status: 'INACCESSIBLE', reason: 'BackingFileUnreadable', message: `backing file ${this.volImg(rec.id)} cannot be looked at (${code ?? String(err)}): check the loop backend's data directory ${this.opts.dataDir} (NodeGetStorageHealth says more)` }];
      }
      return [{ status: 'DATA_LOSS', reason: 'BackingFileMissing', message: `backing file ${this.volImg(rec.id)} is missing: restore the volume from a snapshot or backup` }];
    }
  }

  async storageHealth(): Promise<StorageProblem[]> {
    return dataDirProblems(this.opts.dataDir, this.volDir, !!this.opts.pool);
  }

  async getSnapshot(id: string): Promise<SnapshotRecord | undefined> {
    return readJson<SnapshotRecord>(this.snapMeta(id));
  }

  async listSnapshots(): Promise<SnapshotRecord[]> {
    const out: SnapshotRecord[] = [];
    for (const n of (await fs.readdir(this.snapDir)).sort()) {
      if (!n.endsWith('.json')) continue;
      const r = await this.readListed<SnapshotRecord>(path.join(this.snapDir, n));
      if (r) out.push(r);
    }
    return out;
  }

  async createSnapshots(recs: SnapshotRecord[]): Promise<SnapshotRecord[]> {
    for (const r of recs) await this.mustHaveSource('volume', r.sourceVolumeId);
    const sources = recs.map((r) => this.volImg(r.sourceVolumeId));
    const tmps = recs.map((r) => `${this.snapImg(r.id)}.tmp`);
    try {
      await this.withQuiesced(sources, async () => {
        failpoint('loop.snapshot.frozen');
        for (let i = 0; i < recs.length; i++) {
          await removeFile(tmps[i]);
          await this.cloneFile(sources[i], tmps[i]);
        }
        failpoint('loop.snapshot.afterClone');
      });
      for (let i = 0; i < recs.length; i++) await fs.rename(tmps[i], this.snapImg(recs[i].id));
      await fsyncDir(this.snapDir);
    } catch (err) {
      for (const t of tmps) await removeFile(t);
      throw err;
    }
    failpoint('loop.snapshot.afterImage');
    for (const r of recs) await writeJsonAtomic(this.snapMeta(r.id), r);
    return recs;
  }

  async deleteSnapshot(id: string): Promise<void> {
    await removeFile(this.snapImg(id));
    failpoint('loop.deleteSnapshot.afterImage');
    await removeFile(this.snapMeta(id));
    await fsyncDir(this.snapDir);
  }

  async getGroupSnapshot(id: string): Promise<GroupSnapshotRecord | undefined> {
    return readJson<GroupSnapshotRecord>(path.join(this.groupDir, `${id}.json`));
  }

  async saveGroupSnapshot(rec: GroupSnapshotRecord): Promise<void> {
    for (const sid of rec.snapshotIds) {
      if (!(await this.getSnapshot(sid))) throw new BackendError('not-found', `member snapshot ${sid} does not exist`);
    }
    await writeJsonAtomic(path.join(this.groupDir, `${rec.id}.json`), rec);
  }

  async deleteGroupSnapshotRecord(id: string): Promise<void> {
    await removeFile(path.join(this.groupDir, `${id}.json`));
  }

  async attach(rec: VolumeRecord): Promise<string> {
    return loop.attach(this.volImg(rec.id), { directIO: directIOOf(rec) });
  }

  async attachedDevice(rec: VolumeRecord): Promise<string | undefined> {
    return (await loop.devicesFor(this.volImg(rec.id)))[0]?.name;
  }

  async detach(rec: VolumeRecord): Promise<void> {
    await loop.detachAll(this.volImg(rec.id));
  }

  /** Found by its backing file's path, which the kernel keeps even once the file is deleted. */
  async orphanedAttachment(id: string): Promise<{ device: string; detach(): Promise<void> } | undefined> {
    const [dev] = await loop.devicesFor(this.volImg(id));
    return dev && { device: dev.name, detach: () => loop.detachAll(this.volImg(id)) };
  }

  async refreshDevice(_rec: VolumeRecord, device: string): Promise<void> {
    await loop.refreshCapacity(device);
  }

  /**
   * A loop device holds its backing file's inode, not its path: when the file is deleted or
   * replaced (restored from a backup, copied back) under a staged volume, the pods go on
   * reading and writing the old inode, and all of it is gone once the device is detached.
   */
  async deviceHealth(rec: VolumeRecord, device: string): Promise<HealthProblem[]> {
    const back = await loop.backingFile(device);
    if (!back?.deleted) return [];
    const img = this.volImg(rec.id);
    const replaced = await fs.stat(img).then(
      () => true,
      () => false,
    );
    const saveFirst = `copy out what the pods wrote (from a pod or ${device}) before the volume is unstaged`;
    return [
      replaced
        ? {
            status: 'DATA_LOSS',
            reason: 'LoopBackingFileReplaced',
            message: `${device} of volume ${rec.id} still reads and writes the backing file ${img} that was replaced while attached: the pods do not see the new file, and what they write is lost when ${device} is detached: ${saveFirst}, then restart the pods to stage the new file`,
          }
        : {
            status: 'DATA_LOSS',
            reason: 'LoopBackingFileDeleted',
            message: `${device} of volume ${rec.id} still reads and writes its backing file ${img}, which was deleted while attached: everything in the volume is lost when ${device} is detached: ${saveFirst}, or restore the volume from a snapshot`,
          },
    ];
  }

  /** Reflink when the filesystem can (instant, shares blocks), else a copy that keeps holes. */
  private async cloneFile(src: string, dst: string): Promise<void> {
    if (this.reflink) {
      await fs.copyFile(src, dst, fs.constants.COPYFILE_FICLONE_FORCE | fs.constants.COPYFILE_EXCL);
    } else {
      await run('cp', ['--sparse=always', '--reflink=never', '--', src, dst], { failpoint: 'host.copy' });
    }
  }

  /**
   * Runs fn while the volumes backed by these files hold still (frozen or flushed). Only a
   * reflink is instant: without one, fn copies whole volumes, and a mounted filesystem
   * frozen for that long stalls its application, so that is refused instead.
   */
  private async withQuiesced<T>(files: string[], fn: () => Promise<T>): Promise<T> {
    const devices: string[] = [];
    for (const f of files) for (const d of await loop.devicesFor(f)) devices.push(d.name);
    if (!this.reflink) {
      const mounted = await mountedFilesystems(devices);
      if (mounted.length > 0) {
        throw new BackendError(
          'precondition',
          `the volume is mounted (${mounted.join(', ')}) and the loop backend's data directory ${this.opts.dataDir} cannot reflink, so there is no ` +
            `point-in-time image: a copy would keep the application's filesystem frozen for the whole copy. Unstage the volume first, or run the ` +
            `driver with --data-pool-size (an XFS pool that reflinks).`,
        );
      }
    }
    return withQuiescedDevices(devices, fn);
  }
}
