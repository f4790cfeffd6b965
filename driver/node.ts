// The CSI Node service: attach the volume's device, make and mount its filesystem at the
// staging path, bind it into pods, and report on it. Backend-agnostic: a backend only
// turns a volume into a block device on this node.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Backend, VolumeRecord } from './backends/backend.js';
import { DriverContext, backendCall } from './context.js';
import { invalidArgument, notFound, alreadyExists, failedPrecondition, outOfRange } from './errors.js';
import { checkCapability, checkPath, checkStringMap, parseRange, READ_ONLY_MODES, type Capability } from './validate.js';
import * as mnt from './host/mount.js';
import * as fsx from './host/fs.js';
import { deviceSize } from './host/loop.js';
import { run, hostFailure } from './host/exec.js';
import { NodeStateStore, type NodeVolumeState } from './nodestate.js';
import type * as T from '../proto/types.js';

export const NODE_CAPABILITIES = ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'SINGLE_NODE_MULTI_WRITER'] as const;

async function pathExists(p: string): Promise<boolean> {
  return fs.lstat(p).then(
    () => true,
    () => false,
  );
}

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

  private async volume(id: string): Promise<{ backend: Backend; vol: VolumeRecord }> {
    if (!id) throw invalidArgument('volume_id is required');
    return this.ctx.mustFindVolume(id);
  }

  async NodeStageVolume(req: T.NodeStageVolumeRequest__Output): Promise<T.NodeStageVolumeResponse> {
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

    return this.ctx.locks.with([vol.id], 'NodeStageVolume', async () => {
      const prev = await this.state.get(vol.id);
      if (prev && prev.stagingPath !== staging) {
        throw alreadyExists(`volume ${vol.id} is already staged at ${prev.stagingPath}, not ${staging}`);
      }
      const device = await backendCall(() => backend.attach(vol, req.secrets ?? {}));
      const record: NodeVolumeState = prev ?? {
        volumeId: vol.id,
        stagingPath: staging,
        accessType: cap.accessType,
        fsType,
        mountFlags: cap.mountFlags,
        mode: cap.mode,
        publications: {},
      };
      // Recorded before mounting: a crash after the mount still finds its way to unstage.
      if (!prev) await this.state.put(record);
      if (cap.accessType === 'block') return {};

      const existing = await mnt.mountAt(staging);
      if (existing) {
        if (existing.source !== device) throw alreadyExists(`staging path ${staging} already has ${existing.source} mounted on it`);
        return {};
      }
      try {
        await fs.mkdir(staging, { recursive: true });
        const found = await fsx.probe(device);
        if (!found) {
          await fsx.mkfs(device, fsType as fsx.FsType, mkfsArgs(vol.parameters));
        } else if (found.type !== fsType) {
          throw failedPrecondition(`volume ${vol.id} already holds ${found.type ?? 'unknown data'}, not ${fsType}; refusing to format it`);
        } else if (fsType === 'ext4' || fsType === 'ext3') {
          const fsBytes = await extFilesystemBytes(device);
          if (fsBytes !== undefined && fsBytes < (await deviceSize(device))) await fsx.growOffline(device, fsType);
        }
        await mnt.mount(device, staging, fsType, [...fsx.implicitMountOptions(fsType), ...cap.mountFlags]);
        if (fsType === 'xfs' || fsType === 'btrfs') await fsx.growOnline(device, fsType, staging);
      } catch (err) {
        throw hostFailure(`staging volume ${vol.id} at ${staging}`, err);
      }
      return {};
    });
  }

  async NodeUnstageVolume(req: T.NodeUnstageVolumeRequest__Output): Promise<T.NodeUnstageVolumeResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const staging = checkPath(req.staging_target_path, 'staging_target_path');
    const found = await this.ctx.findVolume(req.volume_id);
    const st = found ? await this.state.get(req.volume_id) : undefined;
    if (!found) throw notFound(`volume ${req.volume_id} does not exist`);
    const { backend, vol } = found;
    return this.ctx.locks.with([vol.id], 'NodeUnstageVolume', async () => {
      const cur = (await this.state.get(vol.id)) ?? st;
      if (cur && cur.stagingPath !== staging) {
        throw failedPrecondition(`volume ${vol.id} is staged at ${cur.stagingPath}, not ${staging}`);
      }
      const pubs = Object.keys(cur?.publications ?? {});
      if (pubs.length > 0) throw failedPrecondition(`volume ${vol.id} is still published at ${pubs.join(', ')}: NodeUnpublishVolume first`);
      const device = await backend.attachedDevice(vol);
      const m = await mnt.mountAt(staging);
      if (m) {
        if (!device || m.source !== device) throw failedPrecondition(`${staging} has ${m.source} mounted, which is not volume ${vol.id}`);
        await mnt.umount(staging).catch((err) => {
          throw hostFailure(`unmounting ${staging}`, err);
        });
      }
      if (device) {
        const still = await mnt.mountsOf(device);
        if (still.length > 0) throw failedPrecondition(`volume ${vol.id} (${device}) is still mounted at ${still.map((x) => x.target).join(', ')}`);
        await backendCall(() => backend.detach(vol));
      }
      await this.state.remove(vol.id);
      return {};
    });
  }

  async NodePublishVolume(req: T.NodePublishVolumeRequest__Output): Promise<T.NodePublishVolumeResponse> {
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

    return this.ctx.locks.with([vol.id], 'NodePublishVolume', async () => {
      const st = await this.state.get(vol.id);
      if (!st || st.stagingPath !== staging) throw failedPrecondition(`volume ${vol.id} is not staged at ${staging}: NodeStageVolume first`);
      const device = await backend.attachedDevice(vol);
      if (!device) throw failedPrecondition(`volume ${vol.id} is not attached on this node: NodeStageVolume again`);
      const mine = st.publications[target];
      const others = Object.keys(st.publications).filter((t) => t !== target);
      if (others.length > 0 && (cap.mode === 'SINGLE_NODE_SINGLE_WRITER' || others.some((t) => st.publications[t].mode === 'SINGLE_NODE_SINGLE_WRITER'))) {
        throw failedPrecondition(`volume ${vol.id} is SINGLE_NODE_SINGLE_WRITER and already published at ${others.join(', ')}`);
      }
      const existing = await mnt.mountAt(target);
      if (existing) {
        const same = cap.accessType === 'block' ? mnt.bindSourceDevice(existing) === device : existing.source === device;
        if (!same) throw alreadyExists(`target ${target} already has ${existing.source} mounted on it`);
        if (existing.options.includes('ro') !== readonly || (mine && mine.mode !== cap.mode)) {
          throw alreadyExists(`volume ${vol.id} is already published at ${target} with readonly=${existing.options.includes('ro')}`);
        }
      } else {
        try {
          if (cap.accessType === 'block') {
            await fs.mkdir(path.dirname(target), { recursive: true });
            await (await fs.open(target, 'a', 0o600)).close();
            await mnt.bindMount(device, target, readonly);
          } else {
            if (!(await mnt.mountAt(staging))) throw failedPrecondition(`staging path ${staging} of volume ${vol.id} is not mounted: NodeStageVolume again`);
            await fs.mkdir(target, { recursive: true, mode: 0o750 });
            const extra = cap.mountFlags.filter((f) => ['nosuid', 'nodev', 'noexec', 'noatime', 'nodiratime', 'relatime'].includes(f));
            await mnt.bindMount(staging, target, readonly, extra);
          }
        } catch (err) {
          throw hostFailure(`publishing volume ${vol.id} at ${target}`, err);
        }
      }
      st.publications[target] = { readonly, mode: cap.mode };
      await this.state.put(st);
      return {};
    });
  }

  async NodeUnpublishVolume(req: T.NodeUnpublishVolumeRequest__Output): Promise<T.NodeUnpublishVolumeResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    const target = checkPath(req.target_path, 'target_path');
    const found = await this.ctx.findVolume(req.volume_id);
    if (!found) throw notFound(`volume ${req.volume_id} does not exist`);
    const { backend, vol } = found;
    return this.ctx.locks.with([vol.id], 'NodeUnpublishVolume', async () => {
      const st = await this.state.get(vol.id);
      const device = await backend.attachedDevice(vol);
      const m = await mnt.mountAt(target);
      if (m) {
        const ours = device !== undefined && (m.source === device || mnt.bindSourceDevice(m) === device);
        if (!ours) throw failedPrecondition(`${target} has ${m.source} mounted, which is not volume ${vol.id}; not touching it`);
        await mnt.umount(target).catch((err) => {
          throw hostFailure(`unmounting ${target}`, err);
        });
      }
      const stat = await fs.lstat(target).catch(() => undefined);
      if (stat?.isDirectory()) await fs.rmdir(target);
      else if (stat?.isFile() && st?.publications[target]) await fs.unlink(target);
      if (st?.publications[target]) {
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
    const health = await backend.volumeHealth(vol);
    const device = await backend.attachedDevice(vol);
    if (!device) return { usage: [], volume_condition: { abnormal: true, message: `volume ${vol.id} is not attached on this node any more` } };
    if (vol.accessType === 'block') {
      return { usage: [{ total: (await deviceSize(device)).toString(), unit: 'BYTES' }], volume_condition: health };
    }
    const m = await mnt.mountAt(p);
    if (!m) return { usage: [], volume_condition: { abnormal: true, message: `${p} is not mounted any more` } };
    const s = await fsx.stats(p);
    return {
      usage: [
        { available: s.availableBytes.toString(), total: s.totalBytes.toString(), used: s.usedBytes.toString(), unit: 'BYTES' },
        { available: s.freeInodes.toString(), total: s.totalInodes.toString(), used: s.usedInodes.toString(), unit: 'INODES' },
      ],
      volume_condition: health,
    };
  }

  async NodeExpandVolume(req: T.NodeExpandVolumeRequest__Output): Promise<T.NodeExpandVolumeResponse> {
    if (!req.volume_id) throw invalidArgument('volume_id is required');
    if (!req.volume_path) throw invalidArgument('volume_path is required');
    const range = parseRange(req.capacity_range);
    if (req.volume_capability) checkCapability(req.volume_capability as Capability);
    const { backend, vol } = await this.volume(req.volume_id);
    if (range.required > vol.capacityBytes) {
      throw outOfRange(`volume ${vol.id} is ${vol.capacityBytes} bytes; ControllerExpandVolume must grow it to ${range.required} first`);
    }
    return this.ctx.locks.with([vol.id], 'NodeExpandVolume', async () => {
      const device = await backend.attachedDevice(vol);
      if (!device) throw failedPrecondition(`volume ${vol.id} is not staged on this node`);
      try {
        await backend.refreshDevice(vol, device);
        if (vol.accessType === 'mount') {
          const st = await this.state.get(vol.id);
          const where = st?.stagingPath && (await mnt.mountAt(st.stagingPath)) ? st.stagingPath : req.volume_path;
          const m = await mnt.mountAt(where);
          if (!m) throw failedPrecondition(`volume ${vol.id} is not mounted at ${where}`);
          await fsx.growOnline(device, m.fstype, where);
        }
      } catch (err) {
        throw hostFailure(`expanding volume ${vol.id}`, err);
      }
      return { capacity_bytes: (await deviceSize(device)).toString() };
    });
  }
}

/** mkfs options a StorageClass may pass (parameter mkfsOptions), checked as single dash-options. */
function mkfsArgs(params: Record<string, string>): string[] {
  const raw = params.mkfsOptions;
  if (!raw) return [];
  return raw.split(/\s+/).filter(Boolean);
}
