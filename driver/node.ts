// The CSI Node service: attach the volume's device, make and mount its filesystem at the
// staging path, bind it into pods, and report on it. Backend-agnostic: a backend only
// turns a volume into a block device on this node.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { NodeBackend, VolumeRecord } from './backends/backend.js';
import { DriverContext } from './context.js';
import { invalidArgument, notFound, alreadyExists, failedPrecondition, outOfRange } from './errors.js';
import { checkCapability, checkMountFlags, checkPath, checkStringMap, parseRange, PER_MOUNT_FLAGS, READ_ONLY_MODES, type Capability, type CheckedCapability } from './validate.js';
import { resolveUnderRoots, locateUnderRoots, isEmptyDir, DEFAULT_PATH_ROOTS, type ResolvedPath } from './host/paths.js';
import * as mnt from './host/mount.js';
import * as fsx from './host/fs.js';
import { deviceSize } from './host/loop.js';
import { readSuperblock } from './host/superblock.js';
import { run, hostFailure } from './host/exec.js';
import { NodeStateStore, type NodeVolumeState } from './nodestate.js';
import { failpoint } from './failpoints.js';
import { attachmentProblems } from './nodehealth.js';
import { mergeSameReason } from './backends/problems.js';
import type * as T from '../proto/types.js';

/**
 * Mounts of ours stacked at one path that NodeUnstage/NodeUnpublish take off before giving
 * up: a path mounted over and over by a retried crash is cleared, a loop that keeps finding
 * a mount (one re-made behind our back) ends.
 */
const MAX_STACKED_UNMOUNTS = 16;

/** A NodeStage request checked against itself and its volume. */
interface StageRequest {
  backend: NodeBackend;
  vol: VolumeRecord;
  staging: string;
  cap: CheckedCapability;
  /** The filesystem to stage with ('' for block). */
  fsType: string;
}

/** The device this node holds for a volume, and how to let it go. */
interface HeldDevice {
  device: string;
  devno?: string;
  detach(): Promise<void>;
}

/** A NodePublish request checked against itself and its volume. */
interface PublishRequest {
  backend: NodeBackend;
  vol: VolumeRecord;
  target: string;
  staging: string;
  cap: CheckedCapability;
  readonly: boolean;
}

export const NODE_CAPABILITIES = [
  'STAGE_UNSTAGE_VOLUME',
  'GET_VOLUME_STATS',
  'EXPAND_VOLUME',
  'SINGLE_NODE_MULTI_WRITER',
  'GET_VOLUME_HEALTH',
  'GET_STORAGE_HEALTH',
] as const;

/** ext* keeps its size in the superblock; read it to know whether an offline grow is due. */
async function extFilesystemBytes(device: string): Promise<bigint | undefined> {
  const r = await run('dumpe2fs', ['-h', device], { okCodes: [1] });
  const count = /^Block count:\s+(\d+)/m.exec(r.stdout);
  const size = /^Block size:\s+(\d+)/m.exec(r.stdout);
  return count && size ? BigInt(count[1]) * BigInt(size[1]) : undefined;
}

export class NodeService {
  constructor(
    private readonly ctx: DriverContext,
    private readonly state: NodeStateStore,
    /** The only directories NodeStage/NodePublish mount below (kubelet's by default). */
    private readonly roots: readonly string[] = DEFAULT_PATH_ROOTS,
  ) {}

  async NodeGetCapabilities(): Promise<T.NodeGetCapabilitiesResponse> {
    return { capabilities: NODE_CAPABILITIES.map((type) => ({ rpc: { type } })) };
  }

  async NodeGetInfo(): Promise<T.NodeGetInfoResponse> {
    return {
      node_id: this.ctx.config.nodeId,
      max_volumes_per_node: String(this.ctx.config.maxVolumesPerNode),
      accessible_topology: { segments: this.ctx.topology },
    };
  }

  private async volume(id: string): Promise<{ backend: NodeBackend; vol: VolumeRecord }> {
    if (!id) throw invalidArgument('volume_id is required');
    return this.ctx.mustFindVolume(id);
  }

  /** The device number of the volume's device on this node, when it is attached. */
  private async devnoOf(backend: NodeBackend, vol: VolumeRecord): Promise<{ device?: string; devno?: string }> {
    const device = await backend.attachedDevice(vol);
    return { device, devno: device ? await mnt.deviceNumber(device) : undefined };
  }

  /**
   * What this node holds for a volume (found: its backend knows it), or for one whose record
   * is gone from its backend while it is still staged here (st): then the backend finds its
   * device from the ID and the device NodeStage recorded.
   */
  private async heldDevice(id: string, found: { backend: NodeBackend; vol: VolumeRecord } | undefined, st: NodeVolumeState | undefined): Promise<HeldDevice | undefined> {
    const held = found
      ? await found.backend.attachedDevice(found.vol).then((device) => device && { device, detach: () => found.backend.detach(found.vol) })
      : st && (await this.ctx.ownerOf(id, 'volume_id', 'vol')?.orphanedAttachment?.(id, st.device ?? (await this.deviceMountedAt(st.stagingPath))));
    return held ? { ...held, devno: await mnt.deviceNumber(held.device) } : undefined;
  }

  /** Records of older versions name no device: the one still mounted at the staging path stands in (the backend checks it). */
  private async deviceMountedAt(p: string): Promise<string | undefined> {
    const m = await mnt.mountAt(p);
    return m && mnt.liveDeviceOf(m);
  }

  /**
   * Where NodeUnstage/NodeUnpublish look for their mount: below a root without following
   * symlinks; outside the roots (a record of an older version) the path as given, which is
   * safe because only a mount of the volume's own device is ever unmounted.
   */
  /**
   * An unstage or unpublish of a volume this node holds nothing of (no record; its backend
   * does not know it either): the spec's "not staged/published there" case, which MUST be
   * OK. It is also the retry of a call that already succeeded but whose reply was lost
   * (kubelet would otherwise retry for ever). Something mounted at the path is not ours to
   * judge and stops it; an ID no backend of ours issued is NOT_FOUND.
   */
  private async nothingHeldAt(id: string, p: string, field: string): Promise<Record<string, never>> {
    if (!this.ctx.ownerOf(id, 'volume_id', 'vol')) throw notFound(`volume ${id} does not exist: no backend of this driver issued that ID`);
    const where = await this.releasePath(p, field);
    const m = await mnt.mountAt(where);
    if (m) throw failedPrecondition(`${where} has ${m.source} mounted, but this node holds nothing of volume ${id} and its backend does not know it; not touching it`);
    return {};
  }

  private async releasePath(p: string, field: string): Promise<string> {
    return (await locateUnderRoots(p, this.roots, field))?.real ?? p;
  }

  /**
   * Our mounts at `where`, top first, are unmounted; a foreign one on top stops us.
   * `staleBindIsOurs`: the caller knows `where` as this volume's block publication while the
   * volume has no device here (detached behind our back), so a bind of a device node whose
   * device is gone can only be what we left there.
   */
  private async unmountOurs(where: string, devno: string | undefined, volId: string, staleBindIsOurs = false): Promise<void> {
    for (let i = 0; i < MAX_STACKED_UNMOUNTS; i++) {
      const m = await mnt.mountAt(where);
      if (!m) return;
      const ours = (await mnt.isMountOf(m, devno)) || (staleBindIsOurs && (await mnt.isBindOfVanishedDevice(m)));
      if (!ours) throw failedPrecondition(`${where} has ${m.source} mounted, which is not volume ${volId}; not touching it`);
      await mnt.umount(where).catch((err) => {
        throw hostFailure(`unmounting ${where}`, err);
      });
    }
    throw failedPrecondition(`${where} still has volume ${volId} mounted after ${MAX_STACKED_UNMOUNTS} unmounts`);
  }

  async NodeStageVolume(req: T.NodeStageVolumeRequest__Output): Promise<T.NodeStageVolumeResponse> {
    const r = await this.stageRequest(req);
    return this.ctx.locks.with([r.vol.id], 'NodeStageVolume', async () => {
      const prev = await this.state.get(r.vol.id);
      if (prev && prev.stagingPath !== r.staging) {
        throw alreadyExists(`volume ${r.vol.id} is already staged at ${prev.stagingPath}, not ${r.staging}`);
      }
      // Everything about the path is settled before anything is recorded or attached: a
      // refusal leaves nothing behind.
      const where = await resolveUnderRoots(r.staging, this.roots, 'staging_target_path');
      if (await this.stagedAlready(r, where, prev)) return {};
      await this.attachAndMount(r, where, prev, req.secrets ?? {});
      return {};
    });
  }

  /** Checks a NodeStage request against itself and the volume it names; takes no lock. */
  private async stageRequest(req: T.NodeStageVolumeRequest__Output): Promise<StageRequest> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const staging = checkPath(req.staging_target_path, 'staging_target_path');
    const cap = checkCapability(req.volume_capability as Capability);
    checkStringMap(req.publish_context, 'publish_context');
    checkStringMap(req.volume_context, 'volume_context');
    const { backend, vol } = await this.volume(req.volume_id);
    if (cap.accessType !== vol.accessType) {
      throw failedPrecondition(`volume ${vol.id} was created for ${vol.accessType} access and cannot be staged for ${cap.accessType} access`);
    }
    const fsType = cap.accessType === 'mount' ? cap.fsType || vol.fsType || this.ctx.config.defaultFsType : '';
    if (cap.accessType === 'mount' && vol.fsType && fsType !== vol.fsType) {
      throw failedPrecondition(`volume ${vol.id} holds ${vol.fsType}; it cannot be staged as ${fsType}`);
    }
    if (cap.accessType === 'mount') checkMountFlags(cap.mountFlags, fsType);
    return { backend, vol, staging, cap, fsType };
  }

  /**
   * True when this volume is already mounted at the staging path (a retry: recorded if the
   * record was lost); refuses a path that holds anything else.
   */
  private async stagedAlready(r: StageRequest, where: ResolvedPath, prev: NodeVolumeState | undefined): Promise<boolean> {
    const existing = where.stat?.isDirectory() ? await mnt.mountAt(where.real) : undefined;
    if (existing) {
      const { device, devno } = await this.devnoOf(r.backend, r.vol);
      if (!(await mnt.isMountOf(existing, devno))) {
        throw alreadyExists(`staging path ${r.staging} already has ${existing.source} mounted on it`);
      }
      if (!prev) await this.state.put({ ...this.stageRecord(r.vol.id, r.staging, r.cap, r.fsType), device });
      return true;
    }
    if (where.stat && !where.stat.isDirectory()) throw failedPrecondition(`staging_target_path ${r.staging} exists and is not a directory`);
    if (where.stat && !(await isEmptyDir(where.real))) throw failedPrecondition(`staging_target_path ${r.staging} is not an empty directory; refusing to mount over what it holds`);
    return false;
  }

  /** Records, attaches, formats if blank and mounts; a failure takes back what it did. */
  private async attachAndMount(r: StageRequest, where: ResolvedPath, prev: NodeVolumeState | undefined, secrets: Record<string, string>): Promise<void> {
    const { backend, vol, cap, fsType } = r;
    const wasAttached = (await backend.attachedDevice(vol)) !== undefined;
    // Recorded before attaching: a crash after the attach or the mount still finds its way
    // to NodeUnstage, which undoes both.
    if (!prev) await this.state.put(this.stageRecord(vol.id, r.staging, cap, fsType));
    failpoint('node.stage.afterRecord');
    let createdDir = false;
    let mounted = false;
    try {
      const device = await backend.attach(vol, secrets);
      await this.recordDevice(vol.id, device);
      failpoint('node.stage.afterAttach');
      if (cap.accessType === 'block') return;
      if (!where.stat) {
        await fs.mkdir(where.real, { recursive: true, mode: 0o750 });
        createdDir = true;
      }
      const growAfterMount = await this.ensureFilesystem(vol, device, fsType, prev?.formatting === true);
      await mnt.mount(device, where.real, fsType, [...fsx.implicitMountOptions(fsType), ...cap.mountFlags]);
      mounted = true;
      failpoint('node.stage.afterMount');
      if (growAfterMount) await fsx.growOnline(device, fsType, where.real);
    } catch (err) {
      await this.undoStage(backend, vol, { path: where.real, mounted, createdDir, wasAttached, recorded: !prev });
      throw hostFailure(`staging volume ${vol.id} at ${r.staging}`, err);
    }
  }

  /**
   * Makes the filesystem on a blank device, refuses one holding something else, and grows an
   * ext filesystem offline to the device. A device that was blank when an earlier NodeStage
   * started mkfs may hold a half-written filesystem (the driver was killed mid-mkfs): the
   * record says so (`resumeFormat`), and it is formatted again instead of mounted or refused.
   * True when an xfs or btrfs filesystem is to be grown online once mounted.
   */
  private async ensureFilesystem(vol: VolumeRecord, device: string, fsType: string, resumeFormat: boolean): Promise<boolean> {
    const found = resumeFormat ? undefined : await fsx.probe(device);
    if (fsType !== 'xfs' && fsType !== 'btrfs') {
      await this.formatOrCheck(vol, device, fsType, found);
      return false;
    }
    // A filesystem that already spans its device has nothing to grow into: no growfs process.
    if (found?.type === fsType) return !(await spansDevice(device, found));
    await this.formatOrCheck(vol, device, fsType, found);
    return !(await spansDevice(device, await readSuperblock(device).catch(() => undefined)));
  }

  /** ensureFilesystem's work proper: mkfs on a blank device, refusal, ext's offline growth. */
  private async formatOrCheck(vol: VolumeRecord, device: string, fsType: string, found: fsx.Probe | undefined): Promise<void> {
    if (!found) {
      const rec = await this.state.get(vol.id);
      if (rec && !rec.formatting) await this.state.put({ ...rec, formatting: true });
      await fsx.mkfs(device, fsType as fsx.FsType, mkfsArgs(vol.parameters));
      failpoint('node.stage.afterMkfs');
      const after = await this.state.get(vol.id);
      if (after?.formatting) {
        delete after.formatting;
        await this.state.put(after);
      }
    } else if (found.type !== fsType) {
      throw failedPrecondition(`volume ${vol.id} already holds ${found.type ?? 'unknown data'}, not ${fsType}; refusing to format it`);
    } else if (fsType === 'ext4' || fsType === 'ext3') {
      const fsBytes = found.fsBytes ?? (await extFilesystemBytes(device));
      if (fsBytes !== undefined && fsBytes < (await deviceSize(device))) await fsx.growOffline(device, fsType);
    }
  }

  private stageRecord(volumeId: string, stagingPath: string, cap: CheckedCapability, fsType: string): NodeVolumeState {
    return { volumeId, stagingPath, accessType: cap.accessType, fsType, mountFlags: cap.mountFlags, mode: cap.mode, publications: {} };
  }

  /** Written down once attached: NodeUnstage needs it if the volume's record vanishes from its backend. */
  private async recordDevice(volumeId: string, device: string): Promise<void> {
    const rec = await this.state.get(volumeId);
    if (rec && rec.device !== device) await this.state.put({ ...rec, device });
  }

  /**
   * Takes back what a failed NodeStage did, last step first. What cannot be taken back stays
   * recorded, so NodeUnstage can finish it.
   */
  private async undoStage(backend: NodeBackend, vol: VolumeRecord, done: { path: string; mounted: boolean; createdDir: boolean; wasAttached: boolean; recorded: boolean }): Promise<void> {
    try {
      if (done.mounted) await mnt.umount(done.path);
      if (!done.wasAttached) await backend.detach(vol);
      if (done.recorded) await this.state.remove(vol.id);
      if (done.createdDir) await fs.rmdir(done.path).catch(() => undefined);
    } catch (err) {
      this.ctx.log.warn({ volumeId: vol.id, err: err instanceof Error ? err.message : String(err) }, 'could not undo a failed NodeStageVolume; NodeUnstageVolume will finish it');
    }
  }

  /**
   * A volume whose record is gone from its backend (its storage removed behind it, by hand
   * or by a crash) but still staged here is unstaged all the same: its mounts and device
   * are taken down, or kubelet retries for ever and the node leaks both.
   */
  async NodeUnstageVolume(req: T.NodeUnstageVolumeRequest__Output): Promise<T.NodeUnstageVolumeResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const staging = checkPath(req.staging_target_path, 'staging_target_path');
    const found = await this.ctx.findVolume(req.volume_id);
    const id = found?.vol.id ?? req.volume_id;
    const st = found ? await this.state.get(id) : undefined;
    return this.ctx.locks.with([id], 'NodeUnstageVolume', async () => {
      const cur = (await this.state.get(id)) ?? st;
      if (!found && !cur) return this.nothingHeldAt(id, staging, 'staging_target_path');
      if (cur && cur.stagingPath !== staging) {
        throw failedPrecondition(`volume ${id} is staged at ${cur.stagingPath}, not ${staging}`);
      }
      const pubs = Object.keys(cur?.publications ?? {});
      if (pubs.length > 0) throw failedPrecondition(`volume ${id} is still published at ${pubs.join(', ')}: NodeUnpublishVolume first`);
      const held = await this.heldDevice(id, found, cur);
      // Only a mount of this volume's own device is ever unmounted.
      await this.unmountOurs(await this.releasePath(staging, 'staging_target_path'), held?.devno, id);
      failpoint('node.unstage.afterUmount');
      if (held) {
        const still = await mnt.mountsOf(held.device);
        if (still.length > 0) throw failedPrecondition(`volume ${id} (${held.device}) is still mounted at ${still.map((x) => x.target).join(', ')}`);
        await held.detach();
        failpoint('node.unstage.afterDetach');
      }
      await this.state.remove(id);
      return {};
    });
  }

  async NodePublishVolume(req: T.NodePublishVolumeRequest__Output): Promise<T.NodePublishVolumeResponse> {
    const r = await this.publishRequest(req);
    const { vol, cap, target, staging } = r;
    return this.ctx.locks.with([vol.id], 'NodePublishVolume', async () => {
      const st = await this.state.get(vol.id);
      if (!st || st.stagingPath !== staging) throw failedPrecondition(`volume ${vol.id} is not staged at ${staging}: NodeStageVolume first`);
      if (cap.accessType === 'mount') checkMountFlags(cap.mountFlags, st.fsType);
      const { device, devno } = await this.devnoOf(r.backend, vol);
      if (!device) throw failedPrecondition(`volume ${vol.id} is not attached on this node: NodeStageVolume again`);
      const others = Object.keys(st.publications).filter((t) => t !== target);
      if (others.length > 0 && (cap.mode === 'SINGLE_NODE_SINGLE_WRITER' || others.some((t) => st.publications[t].mode === 'SINGLE_NODE_SINGLE_WRITER'))) {
        throw failedPrecondition(`volume ${vol.id} is SINGLE_NODE_SINGLE_WRITER and already published at ${others.join(', ')}`);
      }
      const where = await resolveUnderRoots(target, this.roots, 'target_path');
      if (await this.publishedAlready(r, st, where, devno)) return {};
      await this.checkTargetPlace(r, where);
      let stagedAt: string | undefined;
      if (cap.accessType === 'mount') {
        const sm = await mnt.mountAt(staging);
        if (!sm || !(await mnt.isMountOf(sm, devno))) throw failedPrecondition(`staging path ${staging} of volume ${vol.id} is not mounted: NodeStageVolume again`);
        stagedAt = sm.target;
      }
      await this.bindTarget(r, st, where, cap.accessType === 'block' ? device : stagedAt!, devno);
      return {};
    });
  }

  /** Checks a NodePublish request against itself and the volume it names; takes no lock. */
  private async publishRequest(req: T.NodePublishVolumeRequest__Output): Promise<PublishRequest> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const target = checkPath(req.target_path, 'target_path');
    const staging = checkPath(req.staging_target_path, 'staging_target_path');
    const cap = checkCapability(req.volume_capability as Capability);
    checkStringMap(req.volume_context, 'volume_context');
    const { backend, vol } = await this.volume(req.volume_id);
    if (cap.accessType !== vol.accessType) {
      throw failedPrecondition(`volume ${vol.id} is a ${vol.accessType} volume and cannot be published for ${cap.accessType} access`);
    }
    const readonly = !!req.readonly || READ_ONLY_MODES.has(cap.mode);
    return { backend, vol, target, staging, cap, readonly };
  }

  /**
   * True when this volume is already mounted at the target the same way (a retry: recorded
   * if the record was lost); refuses another mount there or the same one with other flags.
   */
  private async publishedAlready(r: PublishRequest, st: NodeVolumeState, where: ResolvedPath, devno: string | undefined): Promise<boolean> {
    const existing = where.stat ? await mnt.mountAt(where.real) : undefined;
    if (!existing) return false;
    const mine = st.publications[r.target];
    if (!(await mnt.isMountOf(existing, devno))) throw alreadyExists(`target ${r.target} already has ${existing.source} mounted on it`);
    if (existing.options.includes('ro') !== r.readonly || (mine && mine.mode !== r.cap.mode)) {
      throw alreadyExists(`volume ${r.vol.id} is already published at ${r.target} with readonly=${existing.options.includes('ro')}`);
    }
    if (!mine) {
      st.publications[r.target] = { readonly: r.readonly, mode: r.cap.mode, created: false };
      await this.state.put(st);
    }
    return true;
  }

  /** Nothing mounted: the target must be absent (we make it) or the empty place the CO made. */
  private async checkTargetPlace(r: PublishRequest, where: ResolvedPath): Promise<void> {
    const { target } = r;
    if (r.cap.accessType === 'block') {
      if (where.stat && !(where.stat.isFile() && where.stat.size === 0)) throw failedPrecondition(`target_path ${target} exists and is not an empty regular file; a block volume is bind-mounted onto a file`);
      return;
    }
    if (where.stat && !where.stat.isDirectory()) throw failedPrecondition(`target_path ${target} exists and is not a directory`);
    if (where.stat && !(await isEmptyDir(where.real))) throw failedPrecondition(`target_path ${target} is not an empty directory; refusing to mount over what it holds`);
  }

  /** Records the publication, makes the target if absent and bind-mounts `source` onto it. */
  private async bindTarget(r: PublishRequest, st: NodeVolumeState, where: ResolvedPath, source: string, devno: string | undefined): Promise<void> {
    const { vol, cap, target, readonly } = r;
    const mine = st.publications[target];
    // Recorded first, with whether we make the target: a crash at any later line leaves
    // something NodeUnpublish knows to remove.
    const created = !where.stat || mine?.created === true;
    st.publications[target] = { readonly, mode: cap.mode, created };
    await this.state.put(st);
    failpoint('node.publish.afterRecord');
    let madeNow = false;
    try {
      if (cap.accessType === 'block') {
        if (!where.stat) {
          await fs.mkdir(path.dirname(where.real), { recursive: true, mode: 0o750 });
          await (await fs.open(where.real, 'wx', 0o600)).close();
          madeNow = true;
        }
        await mnt.bindMount(source, where.real, readonly);
      } else {
        if (!where.stat) {
          await fs.mkdir(where.real, { recursive: true, mode: 0o750 });
          madeNow = true;
        }
        // Per-mount flags apply to each bind; the filesystem's own took effect at NodeStage.
        const perMount = cap.mountFlags.filter((f) => PER_MOUNT_FLAGS.includes(f));
        await mnt.bindMount(source, where.real, readonly, perMount);
      }
      failpoint('node.publish.afterMount');
    } catch (err) {
      await this.undoPublish(st, target, where.real, { madeNow, previous: mine, devno });
      throw hostFailure(`publishing volume ${vol.id} at ${target}`, err);
    }
  }

  /**
   * Takes back a failed NodePublish: the target it made and its record. A bind mount of ours
   * still at the target (its undo failed too) keeps the record, so NodeUnpublish can remove it.
   */
  private async undoPublish(st: NodeVolumeState, target: string, real: string, done: { madeNow: boolean; previous?: NodeVolumeState['publications'][string]; devno?: string }): Promise<void> {
    const left = await mnt.mountAt(real);
    if (left && (await mnt.isMountOf(left, done.devno))) {
      this.ctx.log.warn({ volumeId: st.volumeId, target }, 'a failed NodePublishVolume left its bind mount; NodeUnpublishVolume will remove it');
      return;
    }
    if (done.madeNow) await fs.rm(real, { force: true, recursive: false }).catch(() => fs.rmdir(real).catch(() => undefined));
    if (done.previous) st.publications[target] = done.previous;
    else delete st.publications[target];
    await this.state.put(st);
  }

  /** Like NodeUnstage, also for a volume whose record is gone from its backend while it is still staged here. */
  async NodeUnpublishVolume(req: T.NodeUnpublishVolumeRequest__Output): Promise<T.NodeUnpublishVolumeResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const target = checkPath(req.target_path, 'target_path');
    const found = await this.ctx.findVolume(req.volume_id);
    const id = found?.vol.id ?? req.volume_id;
    return this.ctx.locks.with([id], 'NodeUnpublishVolume', async () => {
      const st = await this.state.get(id);
      if (!found && !st) return this.nothingHeldAt(id, target, 'target_path');
      const pub = st?.publications[target];
      const devno = (await this.heldDevice(id, found, st))?.devno;
      const where = await this.releasePath(target, 'target_path');
      const accessType = found?.vol.accessType ?? st!.accessType;
      await this.unmountOurs(where, devno, id, pub !== undefined && accessType === 'block' && !devno);
      failpoint('node.unpublish.afterUmount');
      // Only what NodePublish made is removed, and only if it still is a plain directory or
      // file (never through a symlink); a target the CO made is the CO's.
      if (pub?.created) {
        const stat = await fs.lstat(where).catch(() => undefined);
        const removed = stat?.isDirectory() ? fs.rmdir(where) : stat?.isFile() ? fs.unlink(where) : Promise.resolve();
        await removed.catch((err: unknown) => {
          this.ctx.log.warn({ volumeId: id, target, err: err instanceof Error ? err.message : String(err) }, 'could not remove the target NodePublish made; leaving it to the CO');
        });
      }
      if (st && pub) {
        delete st.publications[target];
        await this.state.put(st);
      }
      return {};
    });
  }

  async NodeGetVolumeStats(req: T.NodeGetVolumeStatsRequest__Output): Promise<T.NodeGetVolumeStatsResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    if (!req.volume_path) throw invalidArgument('volume_path is required');
    const { backend, vol } = await this.volume(req.volume_id);
    const st = await this.state.get(vol.id);
    const p = req.volume_path;
    if (!st || (st.stagingPath !== p && !st.publications[p])) throw notFound(`volume ${vol.id} is neither staged nor published at ${p}`);
    const { device, devno } = await this.devnoOf(backend, vol);
    // Why there is nothing to count (detached, unmounted) is NodeGetVolumeHealth's to say.
    if (!device) return { usage: [] };
    // A block volume's staging path holds nothing; everywhere else the volume is a mount.
    const m = vol.accessType === 'block' && p === st.stagingPath ? undefined : await mnt.mountAt(p);
    if (m && !(await mnt.isMountOf(m, devno))) throw notFound(`${p} has ${m.source} mounted, not volume ${vol.id}`);
    if (vol.accessType === 'block') return { usage: [{ total: (await deviceSize(device)).toString(), unit: 'BYTES' }] };
    if (!m) return { usage: [] };
    const s = await fsx.stats(p);
    return {
      usage: [
        { available: s.availableBytes.toString(), total: s.totalBytes.toString(), used: s.usedBytes.toString(), unit: 'BYTES' },
        { available: s.freeInodes.toString(), total: s.totalInodes.toString(), used: s.usedInodes.toString(), unit: 'INODES' },
      ],
    };
  }

  /**
   * The backend's view of the volume plus this node's: attached, mounted where it was
   * staged and published. A volume not staged here (the CO may ask after a failed stage)
   * gets the backend's view only.
   */
  async NodeGetVolumeHealth(req: T.NodeGetVolumeHealthRequest__Output): Promise<T.NodeGetVolumeHealthResponse> {
    const staging = req.staging_target_path ? checkPath(req.staging_target_path, 'staging_target_path') : undefined;
    const publish = req.volume_publish_path ? checkPath(req.volume_publish_path, 'volume_publish_path') : undefined;
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const found = await this.ctx.findVolume(req.volume_id);
    if (!found) return this.goneHealth(req.volume_id);
    const { backend, vol } = found;
    const st = await this.state.get(vol.id);
    const problems = await backend.volumeHealth(vol);
    if (st?.stagingPath) problems.push(...(await attachmentProblems(backend, vol, st, { staging, publish })));
    return { volume_health: { volume_id: vol.id, health_statuses: mergeSameReason(problems) } };
  }

  /**
   * A volume its backend no longer knows: NOT_FOUND, unless it is still staged here, where
   * its pods keep using whatever is left: then that is its health (the backend says what
   * went; without its word, that the volume's storage is gone).
   */
  private async goneHealth(id: string): Promise<T.NodeGetVolumeHealthResponse> {
    const st = await this.state.get(id);
    if (!st?.stagingPath) throw notFound(`volume ${id} does not exist`);
    const backend = this.ctx.ownerOf(id, 'volume_id', 'vol');
    const problem = (await backend?.volumeGone?.(id)) ?? {
      status: 'DATA_LOSS' as const,
      reason: 'VolumeMissing',
      message: `volume ${id} is staged on this node at ${st.stagingPath}, but its storage is gone from its backend; unstage it and restore from a snapshot or backup`,
    };
    return { volume_health: { volume_id: id, health_statuses: [problem] } };
  }

  /** One entry per (status, reason) across every backend this node serves (the spec's rule), naming each backend that has it. */
  async NodeGetStorageHealth(): Promise<T.NodeGetStorageHealthResponse> {
    const problems = [];
    for (const b of this.ctx.backends.values()) {
      for (const p of (await b.storageHealth?.()) ?? []) problems.push({ ...p, message: `${b.name}: ${p.message}` });
    }
    return { backend_health: mergeSameReason(problems) };
  }

  async NodeExpandVolume(req: T.NodeExpandVolumeRequest__Output): Promise<T.NodeExpandVolumeResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    if (!req.volume_path) throw invalidArgument('volume_path is required');
    const range = parseRange(req.capacity_range);
    if (req.volume_capability) checkCapability(req.volume_capability as Capability);
    const { backend, vol } = await this.volume(req.volume_id);
    const p = checkPath(req.volume_path, 'volume_path');
    if (range.required > vol.capacityBytes) {
      throw outOfRange(`volume ${vol.id} is ${vol.capacityBytes} bytes; ControllerExpandVolume must grow it to ${range.required} first`);
    }
    return this.ctx.locks.with([vol.id], 'NodeExpandVolume', async () => {
      const st = await this.state.get(vol.id);
      if (!st || (st.stagingPath !== p && !st.publications[p])) throw notFound(`volume ${vol.id} is neither staged nor published at ${p}`);
      const { device, devno } = await this.devnoOf(backend, vol);
      if (!device) throw failedPrecondition(`volume ${vol.id} is not staged on this node`);
      try {
        await backend.refreshDevice(vol, device);
        failpoint('node.expand.afterRefresh');
        if (vol.accessType === 'mount') {
          // Grown where it is mounted from its own device, never at whatever else is mounted at a path.
          let m: mnt.MountEntry | undefined;
          for (const where of [st.stagingPath, p]) {
            const e = await mnt.mountAt(where);
            if (e && (await mnt.isMountOf(e, devno))) {
              m = e;
              break;
            }
          }
          if (!m) throw failedPrecondition(`volume ${vol.id} is not mounted at ${st.stagingPath} or ${p}: NodeStageVolume again`);
          await fsx.growOnline(device, m.fstype, m.target);
        }
      } catch (err) {
        throw hostFailure(`expanding volume ${vol.id}`, err);
      }
      return { capacity_bytes: (await deviceSize(device)).toString() };
    });
  }
}

/** Whether the filesystem a superblock describes leaves no whole block of its device unused. */
async function spansDevice(device: string, sb: { fsBytes?: bigint; blockBytes?: number } | undefined): Promise<boolean> {
  if (sb?.fsBytes === undefined || !sb.blockBytes) return false;
  return (await deviceSize(device)) - sb.fsBytes < BigInt(sb.blockBytes);
}

/** mkfs options a StorageClass may pass (parameter mkfsOptions), checked as single dash-options. */
function mkfsArgs(params: Record<string, string>): string[] {
  const raw = params.mkfsOptions;
  if (!raw) return [];
  return raw.split(/\s+/).filter(Boolean);
}
