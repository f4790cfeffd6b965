// The CSI GroupController service: crash-consistent snapshots of several volumes at once
// (every filesystem frozen together while the backend cuts them).
import type { SnapshotRecord, GroupSnapshotRecord, Backend, GroupSnapshotStore } from './backends/backend.js';
import { DriverContext, timestamp, nowTimestamp } from './context.js';
import { invalidArgument, notFound, alreadyExists } from './errors.js';
import { deriveId, locationOf, parseId } from './ids.js';
import { checkName } from './validate.js';
import { checkSnapshotParameters, snapshotMessage, snapshotTopology } from './controller.js';
import type * as T from '../proto/types.js';
import { failpoint } from './failpoints.js';

function groupMessage(g: GroupSnapshotRecord, snaps: SnapshotRecord[], topology: Record<string, string>[]) {
  return {
    group_snapshot_id: g.id,
    snapshots: snaps.map((s) => snapshotMessage(s, topology)),
    creation_time: timestamp(g.createdAtSeconds, g.createdAtNanos),
    ready_to_use: true,
  };
}

function sameSet(a: string[], b: string[]): boolean {
  const sa = [...a].sort();
  const sb = [...b].sort();
  return sa.length === sb.length && sa.every((x, i) => x === sb[i]);
}

export class GroupControllerService {
  constructor(private readonly ctx: DriverContext) {}

  async GroupControllerGetCapabilities(): Promise<T.GroupControllerGetCapabilitiesResponse> {
    return { capabilities: [{ rpc: { type: 'CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT' } }] };
  }

  private async members(backend: Backend, g: GroupSnapshotRecord): Promise<SnapshotRecord[]> {
    const out: SnapshotRecord[] = [];
    for (const id of g.snapshotIds) {
      const s = await backend.getSnapshot(id);
      if (s) out.push(s);
    }
    return out;
  }

  async CreateVolumeGroupSnapshot(req: T.CreateVolumeGroupSnapshotRequest__Output): Promise<T.CreateVolumeGroupSnapshotResponse> {
    checkName(req.name);
    const sources = [...new Set(req.source_volume_ids ?? [])];
    if (sources.length === 0) throw invalidArgument('source_volume_ids is required');
    const params = checkSnapshotParameters(req.parameters);
    const owners = sources.map((id) => this.ctx.ownerOf(id, 'source_volume_ids', 'vol'));
    const missing = sources.filter((_, i) => !owners[i]);
    if (missing.length) throw notFound(`source volume(s) ${missing.join(', ')} do not exist`);
    const backend = owners[0]!;
    if (owners.some((o) => o !== backend)) throw invalidArgument('a group snapshot must take all its volumes from one backend');
    const groups = backend.groupSnapshots;
    if (!groups) throw invalidArgument(`the ${backend.name} backend has no group snapshots`);
    const id = deriveId('group', backend.name, req.name);
    // Members may be full copies (LVM without device-mapper): like CreateSnapshot, the cut
    // runs on when the caller's deadline passes, and a retry sees it finish.
    const work = () => this.ctx.locks.with([id, ...sources], 'CreateVolumeGroupSnapshot', async () => {
      const existing = await groups.getGroupSnapshot(id);
      if (existing) {
        const snaps = await this.members(backend, existing);
        if (!sameSet(snaps.map((s) => s.sourceVolumeId), sources)) {
          throw alreadyExists(`a group snapshot named ${JSON.stringify(req.name)} already exists (${id}) of other volumes`);
        }
        return { group_snapshot: groupMessage(existing, snaps, snapshotTopology(backend, this.ctx.topology)) };
      }
      const vols = [];
      for (const v of sources) {
        const vol = await backend.getVolume(v);
        if (!vol) throw notFound(`source volume ${v} does not exist`);
        vols.push(vol);
      }
      const t = nowTimestamp();
      const recs: SnapshotRecord[] = vols.map((v) => ({
        id: deriveId('snap', backend.name, `${id}/${v.id}`, locationOf(v.id)), // where its source lives
        name: `${req.name}/${v.id}`,
        sourceVolumeId: v.id,
        sizeBytes: v.capacityBytes,
        createdAtSeconds: t.seconds,
        createdAtNanos: t.nanos,
        groupSnapshotId: id,
        parameters: params,
      }));
      // Members cut by an attempt that crashed before the group record are cut again, together.
      for (const r of recs) if (await backend.getSnapshot(r.id)) await backend.deleteSnapshot(r.id, req.secrets ?? {});
      const made = await backend.createSnapshots(recs, req.secrets ?? {});
      failpoint('group.create.afterMembers');
      const group: GroupSnapshotRecord = {
        id,
        name: req.name,
        snapshotIds: made.map((s) => s.id),
        createdAtSeconds: t.seconds,
        createdAtNanos: t.nanos,
        parameters: params,
      };
      await groups.saveGroupSnapshot(group);
      return { group_snapshot: groupMessage(group, made, snapshotTopology(backend, this.ctx.topology)) };
    });
    return this.ctx.background.run(id, 'CreateVolumeGroupSnapshot', work);
  }

  async GetVolumeGroupSnapshot(req: T.GetVolumeGroupSnapshotRequest__Output): Promise<T.GetVolumeGroupSnapshotResponse> {
    const backend = this.ctx.ownerOf(req.group_snapshot_id, 'group_snapshot_id', 'group');
    const g = await backend?.groupSnapshots?.getGroupSnapshot(req.group_snapshot_id);
    if (!backend || !g) throw notFound(`group snapshot ${req.group_snapshot_id} does not exist`);
    if (req.snapshot_ids?.length && !sameSet(req.snapshot_ids, g.snapshotIds)) {
      throw invalidArgument(`snapshot_ids do not match the members of group snapshot ${g.id}`);
    }
    return { group_snapshot: groupMessage(g, await this.members(backend, g), snapshotTopology(backend, this.ctx.topology)) };
  }

  async DeleteVolumeGroupSnapshot(req: T.DeleteVolumeGroupSnapshotRequest__Output): Promise<T.DeleteVolumeGroupSnapshotResponse> {
    const backend = this.ctx.ownerOf(req.group_snapshot_id, 'group_snapshot_id', 'group');
    const groups: GroupSnapshotStore | undefined = backend?.groupSnapshots;
    if (!backend || !groups) return {};
    for (const s of req.snapshot_ids ?? []) parseId(s, 'snapshot_ids', 'snap');
    return this.ctx.locks.with([req.group_snapshot_id], 'DeleteVolumeGroupSnapshot', async () => {
      const g = await groups.getGroupSnapshot(req.group_snapshot_id);
      if (!g) return {};
      if (req.snapshot_ids?.length && !sameSet(req.snapshot_ids, g.snapshotIds)) {
        throw invalidArgument(`snapshot_ids do not match the members of group snapshot ${g.id}`);
      }
      for (const s of g.snapshotIds) await backend.deleteSnapshot(s, req.secrets ?? {});
      failpoint('group.delete.afterMembers');
      await groups.deleteGroupSnapshotRecord(g.id);
      return {};
    });
  }
}
