// The Ceph RBD backend: each volume is an RBD image, each snapshot an image of its own
// (a clone of a short-lived snapshot of the source, as ceph-csi does, so a snapshot
// outlives its source), and every CSI record lives in the image's own metadata
// (`rbd image-meta`), so every state is rebuilt from the cluster alone; there is no database.
//
// Images: csi-vol-<hash> / csi-snap-<hash>, the hash being the one of the CSI ID (which is
// derived from the CSI name). IDs carry the image's cluster, pool and namespace (ids.ts), so
// a call goes to that pool alone; IDs without them (made before they were added, or by the
// sidecars) are searched for in every allowed pool, the last place an image was seen first. An image without the record key is a create that did not
// finish; one marked tscsi.deleting is a delete that did not finish. Both are finished by
// the next attempt and at start-up.
//
// Shared storage: `nodeLocal = false`; node plugins register their node ID in the omap of
// the RADOS object `tscsi.nodes` in each cluster's first pool (and the config may list
// more), which is what knowsNode answers from.
import path from 'node:path';
import { BackendError, type Backend, type Capacity, type PoolUsage, type GroupSnapshotRecord, type GroupSnapshotStore, type SnapshotRecord, type HealthProblem, type StorageProblem, type VolumeRecord } from '../backend.js';
import { mergeSameReason } from '../problems.js';
import { clusterProblems, clusterUnreachable, describeCluster } from './health.js';
import { recordFromJson, recordToJson } from '../../host/atomic.js';
import { withQuiescedDevices } from '../../host/freeze.js';
import { deviceSize } from '../../host/loop.js';
import { SINGLE_NODE_MODES } from '../../validate.js';
import { MiB } from '../../../lib/size.js';
import { unavailable } from '../../errors.js';
import { CommandError } from '../../host/exec.js';
import type { Logger } from '../../log.js';
import { failpoint } from '../../failpoints.js';
import { locationFits, locationOf as idLocation } from '../../ids.js';
import { CephCli, credentialsFrom, errnoOf, imageSpec, isNotFound, poolSpec, EEXIST, ENOTEMPTY, type Credentials } from './cli.js';
import { checkName, invalid, NODE_ID_RE, parseFeatures, type ClusterConfig, type PoolRef, type RbdConfig } from './config.js';
import { DeviceMapper, FuseMapper, type MapTarget, type Mapper } from './mapper.js';
import { RbdSnapshotBlocks } from './blocks.js';
import { ImageRecordCache } from './recordcache.js';
import { holdsLock } from '../../locks.js';
import { QOS_OPTIONS, checkQosValue, qosCommands } from './qos.js';

export { loadConfig, parseConfig } from './config.js';
export type { RbdConfig } from './config.js';

const META_RECORD = 'tscsi.record';
const META_DELETING = 'tscsi.deleting';
const META_GROUP = 'tscsi.group';
/** How long a mapping may take to show a resize (a watch notification away, normally milliseconds). */
const RESIZE_SEEN_TIMEOUT_MS = 30_000;
const RESIZE_POLL_MS = 100;
/** A flatten copies the whole parent image; beyond this it is taken as hung. */
const FLATTEN_TIMEOUT_MS = 30 * 60_000;
/** A node found registered stays known this long without asking RADOS again. */
const KNOWN_NODE_CACHE_MS = 60_000;
/**
 * Retries of the node's registration in RADOS. Kubelet writes a late Secret about a minute in,
 * and until the node is registered every ControllerPublish to it fails: retry often. An attempt
 * without a key file is a stat; one against an unreachable monitor is one tool at a time.
 */
const REGISTER_RETRY_MIN_MS = 1_000;
const REGISTER_RETRY_MAX_MS = 10_000;
/** `ceph df` is asked at most this often per pool (GetCapacity is polled by the CO). */
const POOL_FREE_CACHE_MS = 10_000;
const CEPH_DF_TIMEOUT_MS = 30_000;
const NODES_OBJECT = 'tscsi.nodes';
const PARAMS = new Set(['clusterID', 'pool', 'radosNamespace', 'imageFeatures']);
const VOL_RE = /^csi-vol-[0-9a-f]{32}$/;
const SNAP_RE = /^csi-snap-[0-9a-f]{32}$/;

/**
 * rbd-nbd serves each volume from a userspace daemon the plugin starts. In the node plugin's
 * container (no host PID namespace) those daemons die with the container, and with them
 * every mounted volume's I/O; nothing can re-attach a running pod's mount to a new one.
 */
export const RBD_NBD_REFUSED =
  'the rbd-nbd mapper is not supported by this node plugin: its rbd-nbd daemons run inside the plugin (its container) and die with it on every restart, ' +
  'leaving every volume mapped through them dead under the pods using it. Use --rbd-mapper krbd (the kernel rbd driver; mappings outlive the plugin), ' +
  'or --rbd-mapper fuse where the kernel has no rbd driver';

export interface RbdBackendOptions {
  config: RbdConfig;
  /** Private directory: temporary key files, fuse mappings. */
  stateDir: string;
  nodeId?: string;
  /** Node plugin: register nodeId in RADOS and re-map after a restart. */
  node?: boolean;
  /** Controller: finish half-done creates and deletes at start-up. */
  controller?: boolean;
  maxVolumeBytes?: bigint;
  log: Logger;
  /** Tests: another mapper than the configured one. */
  mapper?: Mapper;
}

interface Loc {
  cluster: ClusterConfig;
  pool: PoolRef;
}

/** What image-meta holds under tscsi.record: the CSI record and the image's clone depth. */
interface Stored<T> {
  record: T;
  depth: number;
}

interface RbdInfo {
  name: string;
  size: number;
  features: string[];
  parent?: { pool: string; pool_namespace?: string; image: string; snapshot: string; trash?: boolean };
}

interface RbdSnap {
  id: number;
  name: string;
  protected?: string;
}

/** Whether a record's mutable parameters name a QoS limit. */
const hasQos = (rec: VolumeRecord) => Object.keys(rec.mutableParameters ?? {}).some((k) => Object.hasOwn(QOS_OPTIONS, k));
const hashOf = (id: string) => id.slice(id.lastIndexOf('-') + 1);
export const volumeImage = (id: string) => `csi-vol-${hashOf(id)}`;
export const snapshotImage = (id: string) => `csi-snap-${hashOf(id)}`;
const imageOf = (id: string) => (id.startsWith('snap-') ? snapshotImage(id) : volumeImage(id));

/**
 * The image's own record, or undefined when it has none (a create that did not finish, or a
 * delete that did not). `rbd clone` copies the parent's image-meta, so a clone that a crash
 * stopped before its own record was written carries its source's record: a record is the
 * image's only when the ID in it names this image. Throws when the record cannot be read.
 */
function ownRecord<T>(name: string, meta: Record<string, string> | undefined): Stored<T> | undefined {
  if (!meta || !meta[META_RECORD] || meta[META_DELETING]) return undefined;
  const stored = recordFromJson<Stored<T> | null>(meta[META_RECORD]);
  const id = (stored?.record as { id?: unknown } | undefined)?.id;
  if (typeof id !== 'string') throw new Error(`${META_RECORD} of ${name} holds no record`);
  return imageOf(id) === name ? stored! : undefined;
}

export class RbdBackend implements Backend {
  readonly name = 'rbd';
  readonly nodeLocal = false;
  readonly mutableParameters = Object.fromEntries(Object.keys(QOS_OPTIONS).map((k) => [k, checkQosValue]));
  readonly groupSnapshots: GroupSnapshotStore = this;
  readonly cli: CephCli;
  readonly mapper: Mapper;
  readonly snapshotBlocks: RbdSnapshotBlocks;
  private readonly where = new Map<string, Loc>(); // image name -> where it was last seen
  private readonly knownNodes = new Map<string, number>();
  /** Settles once init's background registration of this node succeeded in every cluster with a default key. */
  nodeRegistered: Promise<void> = Promise.resolve();
  private capCache = new Map<string, { at: number; bytes: bigint }>();
  private readonly records = new ImageRecordCache();

  constructor(private readonly opts: RbdBackendOptions) {
    // Key file paths travel in rbd-fuse's CEPH_ARGS, which Ceph splits at whitespace.
    if (!path.isAbsolute(opts.stateDir) || /\s/.test(opts.stateDir)) throw new Error(`the rbd state directory must be an absolute path without whitespace: ${JSON.stringify(opts.stateDir)}`);
    this.cli = new CephCli(path.join(opts.stateDir, 'keys'));
    this.snapshotBlocks = new RbdSnapshotBlocks({ cli: this.cli, locate: (id, secrets) => this.snapshotImageAt(id, secrets) });
    const c = opts.config;
    if (c.mapper === 'rbd-nbd' && opts.node && !opts.mapper) throw new Error(RBD_NBD_REFUSED);
    this.mapper =
      opts.mapper ??
      (c.mapper === 'fuse' ? new FuseMapper(path.join(opts.stateDir, 'fuse'), this.cli, opts.log) : new DeviceMapper(c.mapper, this.cli, c.mapOptions));
  }

  get config(): RbdConfig {
    return this.opts.config;
  }

  // ---- parameters and locations ----

  /** ceph-csi's rule: ext4/xfs on one image mounted read-write on two nodes corrupts it; raw block leaves it to the application. */
  accessRefusal(accessType: 'mount' | 'block', mode: string): string | undefined {
    if (accessType === 'mount' && mode === 'MULTI_NODE_MULTI_WRITER') {
      return 'RBD filesystem (mount) volumes cannot be MULTI_NODE_MULTI_WRITER: ext4/xfs/btrfs mounted read-write on several nodes at once corrupts the image. ' +
        'Use volumeMode: Block for multi-node writers (the application must coordinate its writes), or a single-node access mode (ReadWriteOnce/ReadWriteOncePod)';
    }
    return undefined;
  }

  validateParameters(params: Record<string, string>): void {
    for (const k of Object.keys(params)) {
      if (!PARAMS.has(k)) throw invalid(`the rbd backend has no parameter ${JSON.stringify(k)}; it takes: ${[...PARAMS].join(', ')} (and the driver's backend, mkfsOptions)`);
    }
    this.locFromParams(params);
    if (params.imageFeatures !== undefined) parseFeatures(params.imageFeatures);
  }

  private cluster(id: string | undefined): ClusterConfig {
    const cs = this.config.clusters;
    if (id === undefined) {
      if (cs.length === 1) return cs[0];
      throw invalid(`parameter clusterID is required: this driver knows clusters ${cs.map((c) => c.clusterID).join(', ')}`);
    }
    const c = cs.find((x) => x.clusterID === id);
    if (!c) throw invalid(`clusterID ${JSON.stringify(id.slice(0, 64))} is not in the driver's rbd config; known: ${cs.map((x) => x.clusterID).join(', ')}`);
    return c;
  }

  /** Where a volume of these parameters lives; only pools the config lists are allowed. */
  private locFromParams(params: Record<string, string>): Loc {
    const cluster = this.cluster(params.clusterID);
    const pool = params.pool === undefined ? cluster.pools[0].pool : checkName('pool', params.pool);
    const ns = params.radosNamespace === undefined ? (params.pool === undefined ? cluster.pools[0].namespace : '') : checkName('radosNamespace', params.radosNamespace);
    const ref = cluster.pools.find((p) => p.pool === pool && p.namespace === ns);
    if (!ref) {
      throw invalid(`pool ${poolSpec({ pool, namespace: ns })} is not one the driver may use in cluster ${cluster.clusterID}; allowed: ${cluster.pools.map(poolSpec).join(', ')}`);
    }
    return { cluster, pool: ref };
  }

  /** The ID fields of a volume of these parameters: cluster, pool, namespace. */
  locationOf(params: Record<string, string>): string[] {
    const loc = this.locFromParams(params);
    return [loc.cluster.clusterID, loc.pool.pool, loc.pool.namespace];
  }

  /**
   * Where the image of an ID is, when the ID says (undefined: it does not, search); null when
   * it names a place the config does not allow: nothing there is ours to touch.
   */
  private placeOf(id: string): Loc | null | undefined {
    const f = idLocation(id);
    if (!f) return undefined;
    if (f.length !== 3) return null;
    const cluster = this.config.clusters.find((c) => c.clusterID === f[0]);
    const pool = cluster?.pools.find((p) => p.pool === f[1] && p.namespace === f[2]);
    return cluster && pool ? { cluster, pool } : null;
  }

  private allLocs(): Loc[] {
    return this.config.clusters.flatMap((cluster) => cluster.pools.map((pool) => ({ cluster, pool })));
  }

  /** The config's default credentials (reads carry no secrets), or undefined. */
  private defaultCreds(cluster: ClusterConfig): Credentials | undefined {
    return cluster.user && cluster.keyFile ? { user: cluster.user, keyFile: cluster.keyFile } : undefined;
  }

  /** Secrets when the request has them, else the config's default user. */
  private creds(cluster: ClusterConfig, secrets?: Record<string, string>): Credentials {
    return credentialsFrom(cluster, secrets);
  }

  private features(params: Record<string, string>): string {
    return parseFeatures(params.imageFeatures ?? this.config.imageFeatures).join(',');
  }

  // ---- image helpers ----

  private async info(loc: Loc, name: string, creds = this.creds(loc.cluster)): Promise<RbdInfo | undefined> {
    try {
      return await this.cli.rbdJson<RbdInfo>(loc.cluster, creds, ['info', imageSpec(loc.pool, name)]);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async meta(loc: Loc, name: string, creds = this.creds(loc.cluster)): Promise<Record<string, string> | undefined> {
    try {
      return (await this.cli.rbdJson<Record<string, string> | null>(loc.cluster, creds, ['image-meta', 'list', imageSpec(loc.pool, name)])) ?? {};
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async setMeta(loc: Loc, name: string, key: string, value: string, creds = this.creds(loc.cluster)): Promise<void> {
    await this.records.writing(name, () => this.cli.rbd(loc.cluster, creds, ['image-meta', 'set', imageSpec(loc.pool, name), key, value]));
  }

  /**
   * The metadata of name at loc (undefined: no such image). Cached answers only for a caller
   * holding the ID's lock (`trusted`); see recordcache.ts for why that is safe.
   */
  private async recordMeta(loc: Loc, name: string, creds: Credentials, trusted: boolean): Promise<Record<string, string> | undefined> {
    if (!trusted) return this.meta(loc, name, creds);
    const known = this.records.get({ ...loc, readAs: creds }, name);
    if (known !== undefined) return known ?? undefined;
    return this.records.fill({ ...loc, readAs: creds }, name, () => this.meta(loc, name, creds));
  }

  /** ownRecord, forgetting a damaged record so that the next reader asks again (someone may repair it). */
  private ownRecordOf<T>(name: string, meta: Record<string, string> | undefined): Stored<T> | undefined {
    try {
      return ownRecord<T>(name, meta);
    } catch (err) {
      this.records.drop(name);
      throw err;
    }
  }

  /** Whether name is at loc: from the record cache when trusted and it knows, else from `rbd info`. */
  private async isAt(loc: Loc, name: string, creds: Credentials, trusted: boolean): Promise<boolean> {
    const known = trusted ? this.records.get({ ...loc, readAs: creds }, name) : undefined;
    return known !== undefined ? known !== null : !!(await this.info(loc, name, creds));
  }

  private async snapshotImageAt(id: string, secrets?: Record<string, string>) {
    const image = snapshotImage(id);
    const loc = await this.findImage(image, secrets, this.placeOf(id));
    return loc && { image, ...loc, creds: credentialsFrom(loc.cluster, secrets) };
  }

  /**
   * Finds an image by name at `at` alone when given, else in every allowed pool (the last
   * place it was seen first). `trusted`: the caller holds the lock of the image's ID.
   */
  private async findImage(name: string, secrets?: Record<string, string>, at?: Loc | null, trusted = false): Promise<Loc | undefined> {
    if (at !== undefined) return at && (await this.isAt(at, name, this.creds(at.cluster, secrets), trusted)) ? at : undefined;
    const hint = this.where.get(name);
    if (hint && (await this.isAt(hint, name, this.creds(hint.cluster, secrets), trusted))) return hint;
    this.where.delete(name);
    for (const loc of this.allLocs()) {
      if (loc === hint) continue;
      if (await this.isAt(loc, name, this.creds(loc.cluster, secrets), trusted)) {
        this.where.set(name, loc);
        return loc;
      }
    }
    return undefined;
  }

  /** The record of the image of an ID (volume or snapshot) and where it is. */
  private async stored<T>(id: string, secrets?: Record<string, string>): Promise<{ loc: Loc; stored: Stored<T>; meta: Record<string, string> } | undefined> {
    const name = imageOf(id);
    const at = this.placeOf(id);
    if (at === null) return undefined;
    const trusted = holdsLock(id);
    // Where the ID says, or where the image was last seen: one call (its metadata) instead of a search.
    const hint = at ?? this.where.get(name);
    let meta = hint ? await this.recordMeta(hint, name, this.creds(hint.cluster, secrets), trusted) : undefined;
    let loc = meta ? hint : undefined;
    if (!loc) {
      if (at) return undefined;
      loc = await this.findImage(name, secrets, undefined, trusted);
      if (!loc) return undefined;
      meta = await this.recordMeta(loc, name, this.creds(loc.cluster, secrets), trusted);
    }
    const own = this.ownRecordOf<T>(name, meta);
    return own && meta ? { loc, stored: own, meta } : undefined;
  }

  private async listStored<T>(re: RegExp): Promise<Array<{ loc: Loc; name: string; stored: Stored<T>; meta: Record<string, string> }>> {
    const out = [];
    for (const loc of this.allLocs()) {
      const names = (await this.cli.rbdJson<string[] | null>(loc.cluster, this.creds(loc.cluster), ['ls', poolSpec(loc.pool)])) ?? [];
      for (const name of names.filter((n) => re.test(n)).sort()) {
        const found = await this.readListed<T>(loc, name);
        if (!found) continue;
        this.where.set(name, loc);
        out.push({ loc, name, ...found });
      }
    }
    return out;
  }

  /**
   * One image whose metadata cannot be read or whose record is not valid JSON is logged and
   * left out: it must not break every listing. The pool's own listing failing still fails.
   */
  private async readListed<T>(loc: Loc, name: string): Promise<{ stored: Stored<T>; meta: Record<string, string> } | undefined> {
    try {
      const meta = await this.meta(loc, name);
      const stored = ownRecord<T>(name, meta);
      return stored && meta ? { stored, meta } : undefined;
    } catch (err) {
      this.opts.log.error({ image: imageSpec(loc.pool, name), err: err instanceof Error ? err.message : String(err) }, 'skipped an unreadable record while listing');
      return undefined;
    }
  }

  /**
   * Removes an image completely: refuses while it is mapped anywhere (it has watchers),
   * marks it deleting, removes its snapshots (a snapshot with clone-v2 children goes to the
   * trash namespace), then the image; an image whose trashed snapshots still have children
   * goes to the RBD trash and is removed by a later sweep once they are gone.
   */
  private async removeImage(loc: Loc, name: string, creds: Credentials): Promise<void> {
    await this.records.writing(name, () => this.removeImageNow(loc, name, creds));
    await this.sweepTrash(loc, creds);
  }

  private async removeImageNow(loc: Loc, name: string, creds: Credentials): Promise<void> {
    const spec = imageSpec(loc.pool, name);
    let status: { watchers?: Array<{ address: string }> };
    try {
      status = await this.cli.rbdJson(loc.cluster, creds, ['status', spec]);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    const watchers = status?.watchers ?? [];
    if (watchers.length > 0) {
      throw new BackendError(
        'precondition',
        `RBD image ${spec} is still mapped (watched by ${watchers.map((w) => w.address).join(', ')}): unstage the volume on its node first${this.config.mapper === 'fuse' ? ' (a crashed mapper lets go after the OSD watch timeout)' : ''}`,
      );
    }
    try {
      await this.setMeta(loc, name, META_DELETING, new Date().toISOString(), creds);
      failpoint('rbd.delete.afterMark');
      const snaps = (await this.cli.rbdJson<RbdSnap[] | null>(loc.cluster, creds, ['snap', 'ls', spec])) ?? [];
      for (const s of snaps) {
        if (s.protected === 'true') await this.cli.rbd(loc.cluster, creds, ['snap', 'unprotect', `${spec}@${s.name}`]).catch(() => undefined);
        await this.cli.rbd(loc.cluster, creds, ['snap', 'rm', '--no-progress', `${spec}@${s.name}`]);
      }
      failpoint('rbd.delete.afterSnaps');
      const r = await this.cli.rbd(loc.cluster, creds, ['rm', '--no-progress', spec]).catch((err: unknown) => err);
      if (!(r instanceof Error)) failpoint('rbd.delete.afterRemove');
      if (r instanceof Error) {
        if (isNotFound(r)) return;
        // Only "it still has (trashed) snapshots" means clones of them are left; any other
        // failure (cluster unreachable, permission, timeout) is one, not a reason to trash.
        // rbd exits with the errno; its message here has no "(39) ..." to parse.
        const hasSnapshots = errnoOf(r) === ENOTEMPTY || (r instanceof CommandError && r.exitCode === ENOTEMPTY);
        if (!hasSnapshots) throw r;
        this.opts.log.info({ image: spec }, 'image still has clones of its snapshots; moved to the RBD trash until they are gone');
        await this.cli.rbd(loc.cluster, creds, ['trash', 'mv', spec]);
        failpoint('rbd.delete.afterTrash');
      }
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    } finally {
      this.where.delete(name);
    }
  }

  /** Removes our images from the RBD trash once nothing depends on them any more. */
  private async sweepTrash(loc: Loc, creds: Credentials): Promise<void> {
    // Removing a child frees its parent's trashed snapshot, so a parent may leave on the next round.
    for (let round = 0; round < 8; round++) {
      // An empty trash is "nothing to do"; a trash that cannot be read is not (an image parked there would stay for ever unnoticed).
      const list = (await this.cli.rbdJson<Array<{ id: string; name: string }> | null>(loc.cluster, creds, ['trash', 'ls', poolSpec(loc.pool)]).catch((err: unknown) => {
        throw unavailable(`cannot tell whether the RBD trash of ${poolSpec(loc.pool)} in cluster ${loc.cluster.clusterID} holds images to remove: ${err instanceof Error ? err.message : String(err)}`);
      })) ?? [];
      let removed = 0;
      for (const t of list) {
        if (!VOL_RE.test(t.name) && !SNAP_RE.test(t.name)) continue;
        if (!/^[0-9a-f]+$/.test(t.id)) continue;
        await this.cli.rbd(loc.cluster, creds, ['trash', 'rm', '--no-progress', imageSpec(loc.pool, t.id)]).then(
          () => {
            removed++;
            this.opts.log.info({ image: t.name, pool: poolSpec(loc.pool) }, 'removed an image from the RBD trash');
          },
          () => undefined,
        );
      }
      if (removed === 0) return;
    }
  }

  /** A snapshot of spec named snap, taken while the image's filesystem on this node (if any) is frozen. */
  private async freshSnap(loc: Loc, image: string, snap: string, creds: Credentials): Promise<void> {
    const at = `${imageSpec(loc.pool, image)}@${snap}`;
    const create = () => this.cli.rbd(loc.cluster, creds, ['snap', 'create', '--no-progress', at]);
    // A cut of that name exists only when a crash stopped an earlier attempt: never reused (it is not of now), replaced.
    await create().catch(async (err: unknown) => {
      if (errnoOf(err) !== EEXIST && !(err instanceof CommandError && err.exitCode === EEXIST)) throw err;
      await this.cli.rbd(loc.cluster, creds, ['snap', 'rm', '--no-progress', at]);
      await create();
    });
  }

  private async devicesOn(locs: Array<{ loc: Loc; image: string }>): Promise<string[]> {
    const out: string[] = [];
    for (const { loc, image } of locs) {
      // Not knowing whether it is mapped here must not pass as "not mapped": the cut would skip the freeze.
      const d = await this.mapper.mapped({ cluster: loc.cluster, pool: loc.pool, image });
      if (d) out.push(d);
    }
    return out;
  }

  /** Clones src@snap into dst (clone format 2: the parent snapshot may be removed later), flattening when too deep. */
  private async cloneInto(src: Loc, srcImage: string, snap: string, dst: Loc, dstImage: string, features: string, depth: number, creds: Credentials): Promise<number> {
    if (src.cluster !== dst.cluster) throw invalid(`cannot clone across clusters (${src.cluster.clusterID} -> ${dst.cluster.clusterID})`);
    await this.cli.rbd(dst.cluster, creds, [
      'clone',
      '--rbd-default-clone-format', '2',
      '--image-feature', features,
      imageSpec(src.pool, srcImage, snap),
      imageSpec(dst.pool, dstImage),
    ]);
    if (depth > this.config.maxCloneDepth) {
      await this.cli.rbd(dst.cluster, creds, ['flatten', '--no-progress', imageSpec(dst.pool, dstImage)], FLATTEN_TIMEOUT_MS, 'host.rbd');
      this.opts.log.info({ image: imageSpec(dst.pool, dstImage), depth, max: this.config.maxCloneDepth }, 'flattened a clone that would be too deep');
      return 0;
    }
    return depth;
  }

  // ---- Backend ----

  async init(): Promise<void> {
    for (const { cluster, pool } of this.allLocs()) {
      if (!locationFits('snap', this.name, [cluster.clusterID, pool.pool, pool.namespace])) {
        this.opts.log.warn({ clusterID: cluster.clusterID, pool: poolSpec(pool) }, 'cluster ID, pool and namespace are too long for the IDs of this pool; its volumes get IDs without them, which every call searches every pool for');
      }
    }
    await this.cli.init();
    if (this.mapper instanceof FuseMapper) await this.mapper.init();
    const log = this.opts.log;
    if (this.opts.node && this.opts.nodeId) {
      if (!NODE_ID_RE.test(this.opts.nodeId)) throw new Error(`node ID ${JSON.stringify(this.opts.nodeId)} cannot be registered in RADOS: letters, digits, '_', '.', ':', '-'`);
      this.nodeRegistered = Promise.all(this.config.clusters.map((c) => this.registerNode(c, this.opts.nodeId!))).then(() => undefined);
      await this.mapper.recover(this.config.clusters, (c) => this.defaultCreds(c));
    }
    if (this.opts.controller) {
      for (const loc of this.allLocs()) {
        const creds = this.defaultCreds(loc.cluster);
        if (!creds) continue;
        try {
          await this.reconcilePool(loc, creds);
        } catch (err) {
          log.error({ pool: poolSpec(loc.pool), clusterID: loc.cluster.clusterID, err: String(err) }, 'start-up reconciliation failed');
        }
      }
    }
  }

  /**
   * Registers this node in the cluster's RADOS (what knowsNode answers ControllerPublish from),
   * in the background and again until it succeeds: start-up does not wait on Ceph (a key file
   * kubelet has not written yet, or a monitor out of reach, would hold every backend's calls
   * back until the liveness probe killed the plugin), and a key that arrives later registers
   * the node without a restart. Never rejects.
   */
  private async registerNode(cluster: ClusterConfig, nodeId: string): Promise<void> {
    const log = this.opts.log;
    for (let delay = REGISTER_RETRY_MIN_MS; ; delay = Math.min(2 * delay, REGISTER_RETRY_MAX_MS)) {
      const creds = this.defaultCreds(cluster);
      if (!creds) return;
      try {
        await this.rados(cluster, creds, ['setomapval', NODES_OBJECT, nodeId, JSON.stringify({ registeredAt: new Date().toISOString() })]);
        log.info({ clusterID: cluster.clusterID, nodeId }, 'node registered in RADOS');
        return;
      } catch (err) {
        log.error({ clusterID: cluster.clusterID, nodeId, err: String(err), retryInMs: delay }, 'could not register this node in RADOS yet; ControllerPublish to it is NOT_FOUND until it is');
      }
      await new Promise((r) => setTimeout(r, delay).unref());
    }
  }

  /** Start-up: finishes the creates and deletes a crash interrupted, then empties what the trash may let go. */
  private async reconcilePool(loc: Loc, creds: Credentials): Promise<void> {
    const log = this.opts.log;
    const names = (await this.cli.rbdJson<string[] | null>(loc.cluster, creds, ['ls', poolSpec(loc.pool)])) ?? [];
    for (const name of names.filter((n) => VOL_RE.test(n) || SNAP_RE.test(n))) {
      const meta = await this.meta(loc, name, creds);
      if (!meta) continue;
      try {
        if (ownRecord(name, meta)) continue;
      } catch (err) {
        // Possibly someone's data under a damaged record: never removed on a guess.
        log.error({ image: imageSpec(loc.pool, name), err: String(err) }, 'an image whose record cannot be read is left alone');
        continue;
      }
      await this.removeImage(loc, name, creds).then(
        () => log.warn({ image: imageSpec(loc.pool, name) }, meta[META_DELETING] ? 'finished a delete that did not finish' : 'removed the image of a create that did not finish'),
        (err: unknown) => log.warn({ image: imageSpec(loc.pool, name), err: String(err) }, 'could not clean up a half-done image yet'),
      );
    }
    await this.sweepTrash(loc, creds);
  }

  private async rados(cluster: ClusterConfig, creds: Credentials, args: string[]) {
    const p = cluster.pools[0];
    return this.cli.tool('rados', cluster, creds, ['-p', p.pool, ...(p.namespace ? ['-N', p.namespace] : []), ...args]);
  }

  async knowsNode(nodeId: string): Promise<boolean> {
    if (!NODE_ID_RE.test(nodeId)) return false;
    if (this.config.nodes.includes(nodeId)) return true;
    const seen = this.knownNodes.get(nodeId);
    if (seen && Date.now() - seen < KNOWN_NODE_CACHE_MS) return true;
    // "Not registered" only when every cluster could be asked; a cluster that could not be
    // read makes the answer unknown, which is an error of its own (not NOT_FOUND for the node).
    let failure: unknown;
    for (const cluster of this.config.clusters) {
      const creds = this.defaultCreds(cluster);
      if (!creds) continue;
      let keys: string[];
      try {
        keys = (await this.rados(cluster, creds, ['listomapkeys', NODES_OBJECT])).stdout.split('\n');
      } catch (err) {
        if (!isNotFound(err)) failure ??= err; // ENOENT: no node registered in this cluster yet
        continue;
      }
      if (keys.includes(nodeId)) {
        this.knownNodes.set(nodeId, Date.now());
        return true;
      }
    }
    if (failure !== undefined) throw unavailable(`cannot tell whether node ${nodeId} is registered: reading ${NODES_OBJECT} failed: ${failure instanceof Error ? failure.message : String(failure)}`);
    return false;
  }

  async capacity(params: Record<string, string>): Promise<Capacity> {
    const loc = this.locFromParams(params);
    const key = `${loc.cluster.clusterID}/${loc.pool.pool}`;
    const hit = this.capCache.get(key);
    let bytes: bigint;
    if (hit && Date.now() - hit.at < POOL_FREE_CACHE_MS) {
      bytes = hit.bytes;
    } else {
      bytes = await this.maxAvail(loc);
      this.capCache.set(key, { at: Date.now(), bytes });
    }
    return { availableBytes: bytes, maximumVolumeBytes: this.opts.maxVolumeBytes };
  }

  /**
   * Each configured pool once per cluster (its namespaces share it), as `ceph df` shows it to
   * the configured user: free is what that user may still write (max_avail, replication and
   * quota counted), capacity that plus what the pool stores.
   */
  async poolUsage(): Promise<PoolUsage[]> {
    const out: PoolUsage[] = [];
    for (const cluster of this.config.clusters) {
      const r = await this.cli.tool('ceph', cluster, this.creds(cluster), ['df', '--format', 'json'], CEPH_DF_TIMEOUT_MS);
      const df = JSON.parse(r.stdout) as { pools?: Array<{ name: string; stats: { stored?: number; bytes_used?: number; max_avail: number } }> };
      for (const name of new Set(cluster.pools.map((p) => p.pool))) {
        const p = df.pools?.find((x) => x.name === name);
        if (!p) continue; // not yet in the mgr's statistics (see maxAvail)
        const free = BigInt(Math.floor(p.stats.max_avail));
        const stored = BigInt(Math.floor(p.stats.stored ?? p.stats.bytes_used ?? 0));
        out.push({ pool: `${cluster.clusterID}/${name}`, part: 'data', capacityBytes: stored + free, freeBytes: free });
      }
    }
    return out;
  }

  /**
   * `ceph df` lists only pools the mgr has reported statistics for: a pool made moments ago
   * (or while the mgr is away) exists in the OSD map but not yet there. That is "ask again
   * shortly" (UNAVAILABLE), not "no such pool" (NOT_FOUND), which only the OSD map can say.
   */
  private async maxAvail(loc: Loc): Promise<bigint> {
    const creds = this.creds(loc.cluster);
    const r = await this.cli.tool('ceph', loc.cluster, creds, ['df', '--format', 'json'], CEPH_DF_TIMEOUT_MS);
    const df = JSON.parse(r.stdout) as { pools?: Array<{ name: string; stats: { max_avail: number } }> };
    const p = df.pools?.find((x) => x.name === loc.pool.pool);
    if (p) return BigInt(Math.floor(p.stats.max_avail));
    const ls = await this.cli.tool('ceph', loc.cluster, creds, ['osd', 'pool', 'ls', '--format', 'json'], CEPH_DF_TIMEOUT_MS);
    if ((JSON.parse(ls.stdout || '[]') as string[]).includes(loc.pool.pool)) {
      throw unavailable(`pool ${loc.pool.pool} exists in cluster ${loc.cluster.clusterID} but the mgr has not reported its usage yet (it is not in \`ceph df\`); ask again shortly`);
    }
    throw new BackendError('not-found', `pool ${loc.pool.pool} does not exist in cluster ${loc.cluster.clusterID}`);
  }

  async granularity(): Promise<bigint> {
    return MiB;
  }

  async getVolume(id: string, secrets?: Record<string, string>): Promise<VolumeRecord | undefined> {
    return (await this.stored<VolumeRecord>(id, secrets))?.stored.record;
  }

  async listVolumes(): Promise<VolumeRecord[]> {
    return (await this.listStored<VolumeRecord>(VOL_RE)).map((s) => s.stored.record);
  }

  /** One `rbd ls` per pool: no `rbd image-meta list` per image, as listVolumes and listSnapshots need. */
  async countObjects(): Promise<{ volumes: number; snapshots: number }> {
    let volumes = 0;
    let snapshots = 0;
    for (const loc of this.allLocs()) {
      const names = (await this.cli.rbdJson<string[] | null>(loc.cluster, this.creds(loc.cluster), ['ls', poolSpec(loc.pool)])) ?? [];
      volumes += names.filter((n) => VOL_RE.test(n)).length;
      snapshots += names.filter((n) => SNAP_RE.test(n)).length;
    }
    return { volumes, snapshots };
  }

  async createVolume(rec: VolumeRecord, secrets?: Record<string, string>): Promise<VolumeRecord> {
    const loc = this.locFromParams(rec.parameters);
    const creds = credentialsFrom(loc.cluster, secrets);
    const name = volumeImage(rec.id);
    const meta = await this.recordMeta(loc, name, creds, holdsLock(rec.id));
    const own = this.ownRecordOf<VolumeRecord>(name, meta);
    if (own) return own.record;
    if (meta) await this.removeImage(loc, name, creds); // a create (or delete) that did not finish
    await this.records.writing(name, () => this.makeImage(rec, loc, creds, secrets));
    this.where.set(name, loc);
    return rec;
  }

  /** The image of a new volume, empty or from its source, its record written last. */
  private async makeImage(rec: VolumeRecord, loc: Loc, creds: Credentials, secrets?: Record<string, string>): Promise<void> {
    const name = volumeImage(rec.id);
    const spec = imageSpec(loc.pool, name);
    const features = this.features(rec.parameters);
    let depth = 0;
    const cs = rec.contentSource;
    if (!cs) {
      await this.cli.rbd(loc.cluster, creds, ['create', '--size', `${rec.capacityBytes / MiB}M`, '--image-feature', features, spec]);
      failpoint('rbd.create.afterImage');
    } else if (cs.type === 'snapshot') {
      const src = await this.stored<SnapshotRecord>(cs.id, secrets);
      if (!src) throw new BackendError('not-found', `source snapshot ${cs.id} does not exist`);
      const srcImage = snapshotImage(cs.id);
      depth = await this.cloneInto(src.loc, srcImage, srcImage, loc, name, features, src.stored.depth + 1, creds);
      failpoint('rbd.create.afterImage');
    } else {
      const src = await this.stored<VolumeRecord>(cs.id, secrets);
      if (!src) throw new BackendError('not-found', `source volume ${cs.id} does not exist`);
      const srcImage = volumeImage(cs.id);
      const tmp = `csi-tmp-${hashOf(rec.id)}`;
      const devs = await this.devicesOn([{ loc: src.loc, image: srcImage }]);
      await withQuiescedDevices(devs, async () => {
        failpoint('rbd.clone.frozen');
        await this.freshSnap(src.loc, srcImage, tmp, creds);
        failpoint('rbd.clone.afterSnap');
      });
      depth = await this.cloneInto(src.loc, srcImage, tmp, loc, name, features, src.stored.depth + 1, creds);
      failpoint('rbd.create.afterImage');
      // With clone format 2 the snapshot goes to the trash namespace and disappears with its last clone.
      await this.cli.rbd(loc.cluster, creds, ['snap', 'rm', '--no-progress', imageSpec(src.loc.pool, srcImage, tmp)]);
    }
    // An empty image was made at its size; a clone has its source's, maybe smaller.
    const info = cs ? await this.info(loc, name, creds) : undefined;
    if (info && BigInt(info.size) < rec.capacityBytes) {
      await this.cli.rbd(loc.cluster, creds, ['resize', '--no-progress', '--size', `${rec.capacityBytes / MiB}M`, spec]);
    }
    // a clone carries its source's limits in the image-meta it copied
    if (cs || hasQos(rec)) await this.applyQos(loc, name, rec.mutableParameters, creds);
    failpoint('rbd.create.beforeRecord');
    // The record last: its presence is what makes the image a volume.
    await this.setMeta(loc, name, META_RECORD, recordToJson({ record: rec, depth } satisfies Stored<VolumeRecord>), creds);
  }

  async saveVolume(rec: VolumeRecord, secrets?: Record<string, string>): Promise<void> {
    const name = volumeImage(rec.id);
    const found = await this.stored<VolumeRecord>(rec.id, secrets);
    if (!found) throw new BackendError('not-found', `volume ${rec.id} does not exist`);
    const creds = credentialsFrom(found.loc.cluster, secrets);
    // the limits before the record that names them; a retry after a crash between the two sets them again
    if (hasQos(rec) || hasQos(found.stored.record)) await this.applyQos(found.loc, name, rec.mutableParameters, creds);
    await this.setMeta(found.loc, name, META_RECORD, recordToJson({ record: rec, depth: found.stored.depth }), creds);
  }

  /** Brings the image's QoS options (its conf_ image-meta) to what the mutable parameters ask. */
  private async applyQos(loc: Loc, name: string, mutable: Record<string, string>, creds: Credentials): Promise<void> {
    const meta = await this.meta(loc, name, creds);
    if (!meta) throw new BackendError('not-found', `image ${name} does not exist`);
    for (const args of qosCommands(imageSpec(loc.pool, name), meta, mutable)) {
      await this.records.writing(name, () => this.cli.rbd(loc.cluster, creds, args));
    }
  }

  async expandVolume(rec: VolumeRecord, newBytes: bigint, secrets?: Record<string, string>): Promise<VolumeRecord> {
    const name = volumeImage(rec.id);
    const found = await this.stored<VolumeRecord>(rec.id, secrets);
    if (!found) throw new BackendError('not-found', `volume ${rec.id} does not exist`);
    const creds = credentialsFrom(found.loc.cluster, secrets);
    const info = await this.info(found.loc, name, creds);
    if (info && BigInt(info.size) < newBytes) {
      await this.cli.rbd(found.loc.cluster, creds, ['resize', '--no-progress', '--size', `${newBytes / MiB}M`, imageSpec(found.loc.pool, name)]);
      failpoint('rbd.expand.afterResize');
    }
    const next = { ...rec, capacityBytes: newBytes };
    await this.setMeta(found.loc, name, META_RECORD, recordToJson({ record: next, depth: found.stored.depth }), creds);
    return next;
  }

  async deleteVolume(id: string, secrets?: Record<string, string>): Promise<void> {
    const name = volumeImage(id);
    const loc = await this.findImage(name, secrets, this.placeOf(id), holdsLock(id));
    if (!loc) return;
    await this.removeImage(loc, name, credentialsFrom(loc.cluster, secrets));
  }

  /**
   * The cluster's view: reachable with the configured user (bounded: a dead monitor must not
   * hold a health poll for the tool timeout), the image there and of the volume's size. The
   * node's own mapping is deviceHealth's; MappedAgain stays here, where it always was.
   */
  async volumeHealth(rec: VolumeRecord): Promise<HealthProblem[]> {
    const name = volumeImage(rec.id);
    const remapped = this.mapper.remappedAt ? await this.mapper.remappedAt(this.target(rec)).catch(() => undefined) : undefined;
    if (remapped) {
      return [{
        status: 'DEGRADED',
        reason: 'MappedAgain',
        message: `the rbd-fuse helper of this volume died with the node plugin and the image was mapped again at ${remapped}; containers started before then still see the dead device (I/O errors): restart the pods using this volume (this clears when it is unstaged)`,
      }];
    }
    const at = this.placeOf(rec.id);
    const cluster = (at ?? this.where.get(name) ?? this.locFromParams(rec.parameters)).cluster;
    const creds = this.defaultCreds(cluster);
    const why = creds && (await clusterUnreachable(this.cli, cluster, creds));
    if (why) return [{ status: 'INACCESSIBLE', reason: 'ClusterUnreachable', message: `${describeCluster(cluster, creds?.user)} cannot be reached: ${why}` }];
    // Where the ID says, else searched for; never from the record cache: this checks what is there now.
    let loc: Loc | undefined;
    try {
      loc = at !== undefined ? (at ?? undefined) : await this.findImage(name);
    } catch (err) {
      return [{ status: 'INACCESSIBLE', reason: 'ImageUnreachable', message: `RBD image ${name} cannot be looked up in ${describeCluster(cluster, creds?.user)}: ${err instanceof Error ? err.message : String(err)}` }];
    }
    const info = loc && (await this.info(loc, name).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))));
    if (!loc || !info) return [await this.volumeGone(rec.id)];
    if (info instanceof Error) return [{ status: 'INACCESSIBLE', reason: 'ImageUnreadable', message: `RBD image ${imageSpec(loc.pool, name)} cannot be read: ${info.message}` }];
    if (BigInt(info.size) < rec.capacityBytes) {
      return [{ status: 'DATA_LOSS', reason: 'ImageShrunk', message: `RBD image ${imageSpec(loc.pool, name)} is ${info.size} bytes, smaller than the volume's ${rec.capacityBytes}` }];
    }
    return [];
  }

  /** The image and its record (its metadata) went together: removed outside the driver. */
  async volumeGone(id: string): Promise<HealthProblem> {
    const where = this.allLocs().map((l) => `${l.cluster.clusterID}:${poolSpec(l.pool)}`).join(', ');
    return {
      status: 'DATA_LOSS',
      reason: 'ImageMissing',
      message: `RBD image ${volumeImage(id)} of volume ${id} is in none of the pools this driver serves (${where}): it was removed outside the driver; unstage the volume and restore from a snapshot or backup`,
    };
  }

  async deviceHealth(rec: VolumeRecord): Promise<HealthProblem[]> {
    const t = this.target(rec);
    const why = await this.mapper.mappingProblem(t).catch((err: unknown) => `its mapping cannot be checked: ${err instanceof Error ? err.message : String(err)}`);
    return why ? [{ status: 'INACCESSIBLE', reason: 'MappingDead', message: `volume ${rec.id} is staged on this node through the ${this.mapper.name} mapper, but ${why}` }] : [];
  }

  async storageHealth(): Promise<StorageProblem[]> {
    const out: StorageProblem[] = [];
    // A cluster the config gives no user is reached only with each request's secrets: nothing to check it with here.
    for (const c of this.config.clusters) {
      const creds = this.defaultCreds(c);
      if (creds) out.push(...(await clusterProblems(this.cli, c, creds)));
    }
    return mergeSameReason(out);
  }

  async getSnapshot(id: string, secrets?: Record<string, string>): Promise<SnapshotRecord | undefined> {
    return (await this.stored<SnapshotRecord>(id, secrets))?.stored.record;
  }

  async listSnapshots(): Promise<SnapshotRecord[]> {
    return (await this.listStored<SnapshotRecord>(SNAP_RE)).map((s) => s.stored.record);
  }

  /**
   * All sources are cut together (their filesystems on this node frozen meanwhile), then
   * each cut becomes an image of its own: a clone of the cut, which is then removed from
   * the source (it lives on in the trash namespace while the clone needs it). The snapshot
   * image carries one snapshot of its own, which restores clone from.
   */
  async createSnapshots(recs: SnapshotRecord[], secrets?: Record<string, string>): Promise<SnapshotRecord[]> {
    const work: Array<{ rec: SnapshotRecord; src: Loc; srcImage: string; depth: number; features: string; creds: Credentials; name: string; done: boolean }> = [];
    for (const rec of recs) {
      const srcImage = volumeImage(rec.sourceVolumeId);
      const src = await this.stored<VolumeRecord>(rec.sourceVolumeId, secrets);
      if (!src) throw new BackendError('not-found', `source volume ${rec.sourceVolumeId} does not exist`);
      const creds = credentialsFrom(src.loc.cluster, secrets);
      const name = snapshotImage(rec.id);
      const at = this.placeOf(rec.id);
      if (at !== undefined && (at?.cluster !== src.loc.cluster || at.pool !== src.loc.pool)) throw new Error(`snapshot ID ${rec.id} names another pool than its source volume's`);
      const meta = await this.recordMeta(src.loc, name, creds, holdsLock(rec.id));
      const done = !!this.ownRecordOf<SnapshotRecord>(name, meta);
      if (meta && !done) await this.removeImage(src.loc, name, creds);
      work.push({ rec, src: src.loc, srcImage, depth: src.stored.depth + 1, features: this.features(src.stored.record.parameters), creds, name, done });
    }
    const todo = work.filter((w) => !w.done);
    const devs = await this.devicesOn(todo.map((w) => ({ loc: w.src, image: w.srcImage })));
    await withQuiescedDevices(devs, async () => {
      failpoint('rbd.snapshot.frozen');
      for (const w of todo) await this.freshSnap(w.src, w.srcImage, w.name, w.creds);
      failpoint('rbd.snapshot.afterCut');
    });
    for (const w of todo) {
      await this.records.writing(w.name, async () => {
        const depth = await this.cloneInto(w.src, w.srcImage, w.name, w.src, w.name, w.features, w.depth, w.creds);
        failpoint('rbd.snapshot.afterClone');
        await this.cli.rbd(w.src.cluster, w.creds, ['snap', 'rm', '--no-progress', imageSpec(w.src.pool, w.srcImage, w.name)]);
        failpoint('rbd.snapshot.afterCutRm');
        await this.cli.rbd(w.src.cluster, w.creds, ['snap', 'create', '--no-progress', imageSpec(w.src.pool, w.name, w.name)]).catch((err: unknown) => {
          if (errnoOf(err) !== EEXIST) throw err;
        });
        failpoint('rbd.snapshot.beforeRecord');
        await this.setMeta(w.src, w.name, META_RECORD, recordToJson({ record: w.rec, depth } satisfies Stored<SnapshotRecord>), w.creds);
      });
      this.where.set(w.name, w.src);
    }
    const out: SnapshotRecord[] = [];
    for (const w of work) out.push(w.done ? ((await this.getSnapshot(w.rec.id)) ?? w.rec) : w.rec);
    return out;
  }

  async deleteSnapshot(id: string, secrets?: Record<string, string>): Promise<void> {
    const name = snapshotImage(id);
    const loc = await this.findImage(name, secrets, this.placeOf(id), holdsLock(id));
    if (!loc) return;
    await this.removeImage(loc, name, credentialsFrom(loc.cluster, secrets));
  }

  async getGroupSnapshot(id: string): Promise<GroupSnapshotRecord | undefined> {
    for (const s of await this.listStored<SnapshotRecord>(SNAP_RE)) {
      if (s.stored.record.groupSnapshotId !== id || !s.meta[META_GROUP]) continue;
      return recordFromJson<GroupSnapshotRecord>(s.meta[META_GROUP]);
    }
    return undefined;
  }

  /** A group's record is kept in the metadata of each of its member snapshots. */
  async saveGroupSnapshot(rec: GroupSnapshotRecord): Promise<void> {
    // Every member is found before any is written: a missing one leaves no partial group.
    const members: Array<{ loc: Loc; name: string }> = [];
    for (const sid of rec.snapshotIds) {
      const name = snapshotImage(sid);
      const loc = await this.findImage(name, undefined, this.placeOf(sid));
      if (!loc) throw new BackendError('not-found', `member snapshot ${sid} does not exist`);
      members.push({ loc, name });
    }
    for (const { loc, name } of members) await this.setMeta(loc, name, META_GROUP, recordToJson(rec));
  }

  async deleteGroupSnapshotRecord(id: string): Promise<void> {
    for (const s of await this.listStored<SnapshotRecord>(SNAP_RE)) {
      if (s.stored.record.groupSnapshotId !== id || !s.meta[META_GROUP]) continue;
      await this.records.writing(s.name, () => this.cli.rbd(s.loc.cluster, this.creds(s.loc.cluster), ['image-meta', 'remove', imageSpec(s.loc.pool, s.name), META_GROUP]));
    }
  }

  // ---- node side ----

  private target(rec: VolumeRecord): MapTarget {
    const loc = this.locFromParams(rec.parameters);
    return { cluster: loc.cluster, pool: loc.pool, image: volumeImage(rec.id) };
  }

  async attach(rec: VolumeRecord, secrets?: Record<string, string>): Promise<string> {
    const t = this.target(rec);
    const have = await this.mapper.mapped(t);
    if (have) return have;
    // ControllerPublish recorded which node may map a single-node volume: no other node maps it.
    const me = this.opts.nodeId;
    const holders = Object.entries(rec.published);
    if (me && holders.length > 0 && !rec.published[me] && holders.some(([, p]) => SINGLE_NODE_MODES.has(p.accessMode))) {
      throw new BackendError(
        'precondition',
        `volume ${rec.id} is published to node ${holders.map(([n]) => n).join(', ')} with a single-node access mode; node ${me} may not map it (ControllerPublishVolume to this node first)`,
      );
    }
    return this.mapper.map(t, credentialsFrom(t.cluster, secrets));
  }

  async attachedDevice(rec: VolumeRecord): Promise<string | undefined> {
    return this.mapper.mapped(this.target(rec));
  }

  async detach(rec: VolumeRecord): Promise<void> {
    await this.mapper.unmap(this.target(rec));
  }

  /** The mappers know their mappings by image and pool alone: the record is not needed. */
  async orphanedAttachment(id: string): Promise<{ device: string; detach(): Promise<void> } | undefined> {
    const at = this.placeOf(id);
    for (const loc of at ? [at] : at === null ? [] : this.allLocs()) {
      const t = { ...loc, image: volumeImage(id) };
      const device = await this.mapper.mapped(t);
      if (device) return { device, detach: () => this.mapper.unmap(t) };
    }
    return undefined;
  }

  /**
   * librbd learns of a resize from a watch notification, so a mapping (rbd-fuse's file,
   * krbd's device) may show the new size a moment after `rbd resize` returned: refresh
   * until the device shows it, within a bound.
   */
  async refreshDevice(rec: VolumeRecord, device: string): Promise<void> {
    const deadline = Date.now() + RESIZE_SEEN_TIMEOUT_MS;
    for (;;) {
      await this.mapper.refresh(this.target(rec), device);
      const bytes = await deviceSize(device);
      if (bytes >= rec.capacityBytes) return;
      if (Date.now() > deadline) throw new Error(`${device} shows ${bytes} bytes, not the ${rec.capacityBytes} of ${rec.id}, ${RESIZE_SEEN_TIMEOUT_MS / 1000} s after the resize`);
      await new Promise((r) => setTimeout(r, RESIZE_POLL_MS));
    }
  }
}
