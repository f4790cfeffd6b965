// The snapshotter's group half: VolumeGroupSnapshotContents of our driver ->
// CreateVolumeGroupSnapshot (dynamic) or GetVolumeGroupSnapshot (pre-provisioned) -> the group
// content's status, whose member list the snapshot-controller turns into member
// VolumeSnapshots and contents; a group content the snapshot-controller deletes ->
// DeleteVolumeGroupSnapshot under deletionPolicy Delete, then its finalizer goes. Failures go
// on status.error and as Events. Started by the Snapshotter only when the driver advertises
// CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT and the group CRDs are installed (as csi-snapshotter).
import type { Logger } from 'pino';
import { CsiClient, codeName, isFinalError, rpcErrorText } from '../common/csi-client.js';
import type { CommonControllerOptions } from '../common/run.js';
import { k8s, type Clients, Watch, httpStatus } from '../common/kube.js';
import { WorkQueue } from '../common/workqueue.js';
import { Recorder } from '../common/events.js';
import { readSecret, type SecretRef } from '../common/secrets.js';
import {
  ANN_GROUP_BEING_CREATED,
  ANN_GROUP_SECRET_NAME,
  ANN_GROUP_SECRET_NAMESPACE,
  GROUP_CLASSES,
  GROUP_CONTENTS,
  GROUP_CONTENT_FINALIZER,
  GROUP_SNAPSHOT_GROUP,
  GROUP_SNAPSHOT_VERSION,
  annotatedGroupSecretRef,
  clearedGroupStatus,
  groupActionFor,
  groupHandleOf,
  groupParameters,
  groupSecretRef,
  groupSnapshotName,
  isOurGroup,
  memberSnapshotIds,
  statusFromGroupSnapshot,
  type CsiGroupSnapshot,
  type GroupContentStatus,
  type VolumeGroupSnapshotClass,
  type VolumeGroupSnapshotContent,
} from './group-content.js';
import { ClusterObjects, Explained } from './objects.js';
import type { NodeScope } from './node-scope.js';

type GroupContent = VolumeGroupSnapshotContent & k8s.KubernetesObject;
type GroupClass = VolumeGroupSnapshotClass & k8s.KubernetesObject;

export interface GroupSnapshotterOptions extends CommonControllerOptions {
  /** --groupsnapshot-name-prefix. */
  groupNamePrefix?: string;
}

const GROUP_PATH = `/apis/${GROUP_SNAPSHOT_GROUP}/${GROUP_SNAPSHOT_VERSION}/${GROUP_CONTENTS}`;

/**
 * Whether group contents are to be served: the driver advertises the group controller's
 * CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT (a driver without the service answers UNIMPLEMENTED)
 * and the API server has the group CRDs and lets this sidecar list them. Any of these missing is
 * logged, not fatal: the sidecar still serves VolumeSnapshotContents.
 */
export async function groupSnapshotsAvailable(csi: CsiClient, api: k8s.CustomObjectsApi, opts: { timeoutMs: number; log: Logger }): Promise<boolean> {
  let caps: Array<{ rpc?: { type?: string } }> = [];
  try {
    caps = (await csi.GroupController.GroupControllerGetCapabilities({}, opts.timeoutMs)).capabilities ?? [];
  } catch (err) {
    if (codeName(err) !== 'UNIMPLEMENTED') throw err;
  }
  if (!caps.some((c) => c.rpc?.type === 'CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT')) {
    opts.log.info('the driver does not advertise CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT: VolumeGroupSnapshotContents are not served');
    return false;
  }
  try {
    await api.listClusterCustomObject({ group: GROUP_SNAPSHOT_GROUP, version: GROUP_SNAPSHOT_VERSION, plural: GROUP_CONTENTS, limit: 1 });
  } catch (err) {
    // An install without the group CRDs, or whose RBAC grants only VolumeSnapshots, still snapshots volumes.
    if (httpStatus(err) === 404) opts.log.warn(`the ${GROUP_CONTENTS}.${GROUP_SNAPSHOT_GROUP} CRD (${GROUP_SNAPSHOT_VERSION}) is not installed: VolumeGroupSnapshotContents are not served; install the CRDs and restart the sidecar`);
    else if (httpStatus(err) === 403) opts.log.warn(`this sidecar may not list ${GROUP_CONTENTS}.${GROUP_SNAPSHOT_GROUP}: VolumeGroupSnapshotContents are not served; grant get/list/watch/patch on them, patch on their status and get on ${GROUP_CLASSES} (deploy/base/rbac.yaml), and restart the sidecar`);
    else throw err;
    return false;
  }
  return true;
}

export class GroupSnapshotter {
  private readonly queue: WorkQueue;
  private contents!: Watch<GroupContent>;
  private readonly recorder: Recorder;
  private readonly objs: ClusterObjects<GroupContent>;
  private readonly classes: ClusterObjects<GroupClass>;

  constructor(
    private readonly k: Clients,
    private readonly csi: CsiClient,
    private readonly api: k8s.CustomObjectsApi,
    private readonly opts: GroupSnapshotterOptions,
    /** Set on a per-node snapshotter: only the group contents whose group lives on this node. */
    private readonly nodeScope?: NodeScope,
  ) {
    this.queue = new WorkQueue((key) => this.sync(key), { workers: opts.workers }, opts.log);
    this.recorder = new Recorder(k.core, `${opts.driverName}-snapshotter`, opts.log);
    this.objs = new ClusterObjects(api, GROUP_SNAPSHOT_GROUP, GROUP_SNAPSHOT_VERSION, GROUP_CONTENTS);
    this.classes = new ClusterObjects(api, GROUP_SNAPSHOT_GROUP, GROUP_SNAPSHOT_VERSION, GROUP_CLASSES);
  }

  async start(): Promise<void> {
    const list = () => this.api.listClusterCustomObject({ group: GROUP_SNAPSHOT_GROUP, version: GROUP_SNAPSHOT_VERSION, plural: GROUP_CONTENTS }) as Promise<k8s.KubernetesListObject<GroupContent>>;
    this.contents = new Watch(this.k.kc, GROUP_PATH, list, (key) => this.queue.add(key), this.opts.log);
    await this.contents.start();
  }

  async stop(): Promise<void> {
    this.queue.stop();
    await this.contents?.stop();
  }

  private async sync(key: string): Promise<void> {
    const seen = this.contents.get(key);
    if (!seen || !isOurGroup(seen, this.opts)) return;
    const c = this.nodeScope ? await this.nodeScope.takeGroup(seen, (ann) => this.objs.setAnnotations(seen, ann)) : seen;
    if (!c) return;
    switch (groupActionFor(c)) {
      case 'delete':
        return this.delete(c);
      case 'release':
        return this.objs.removeFinalizer(c, GROUP_CONTENT_FINALIZER);
      case 'create':
        return this.create(c);
      case 'check':
        return this.check(c);
      case 'ready':
        await this.objs.setAnnotations(c, { [ANN_GROUP_BEING_CREATED]: null });
        return;
      case 'none':
        return;
    }
  }

  private async create(c: GroupContent): Promise<void> {
    let status: GroupContentStatus;
    try {
      status = await this.createGroupSnapshot(c);
    } catch (err) {
      const message = `Failed to create group snapshot: ${err instanceof Explained ? err.message : rpcErrorText(err)}`;
      await this.objs.reportError(c, this.recorder, this.opts.log, 'GroupSnapshotCreationFailed', message);
      throw err;
    }
    await this.objs.setAnnotations(await this.objs.patchStatus(c, status), { [ANN_GROUP_BEING_CREATED]: null });
    if (!status.readyToUse) throw new Error(`group snapshot ${status.volumeGroupSnapshotHandle} of group content ${c.metadata?.name} is not ready yet`);
    this.opts.log.info({ groupContent: c.metadata?.name, groupSnapshot: status.volumeGroupSnapshotHandle, members: status.volumeSnapshotInfoList?.length }, 'group snapshot created');
  }

  /** CreateVolumeGroupSnapshot for a dynamic group content, marked as being created while the call may be in flight. */
  private async createGroupSnapshot(c: GroupContent): Promise<GroupContentStatus> {
    const volumes = c.spec!.source!.volumeHandles!;
    const { parameters, secretRef } = await this.classInput(c);
    const name = groupSnapshotName(c, this.opts.groupNamePrefix);
    // Recorded for the delete, which may come after the class is gone (the snapshot-controller records it for the contents it makes).
    const record: Record<string, string> = secretRef && !annotatedGroupSecretRef(c) ? { [ANN_GROUP_SECRET_NAME]: secretRef.name, [ANN_GROUP_SECRET_NAMESPACE]: secretRef.namespace } : {};
    const secrets = await readSecret(this.k.core, secretRef);
    const marked = await this.objs.setAnnotations(c, { ...record, [ANN_GROUP_BEING_CREATED]: 'yes' });
    let res;
    try {
      res = await this.csi.GroupController.CreateVolumeGroupSnapshot({ name, source_volume_ids: volumes, parameters, secrets }, this.opts.timeoutMs);
    } catch (err) {
      if (isFinalError(err)) await this.objs.setAnnotations(marked, { [ANN_GROUP_BEING_CREATED]: null });
      throw new Explained(`failed to take group snapshot of the volumes ${JSON.stringify(volumes)}: ${rpcErrorText(err)}`, { cause: err });
    }
    return statusFromGroupSnapshot(c.status, res.group_snapshot as CsiGroupSnapshot);
  }

  /** The class's parameters for the driver and the group snapshotter secret (the recorded one first, as csi-snapshotter reads it). */
  private async classInput(c: GroupContent): Promise<{ parameters: Record<string, string>; secretRef?: SecretRef }> {
    const className = c.spec?.volumeGroupSnapshotClassName;
    if (!className) throw new Explained(`failed to take group snapshot ${c.metadata?.name} without a group snapshot class`);
    const cls = await this.classes.getOrExplain('VolumeGroupSnapshotClass', className);
    try {
      return { parameters: groupParameters(cls.parameters), secretRef: annotatedGroupSecretRef(c) ?? groupSecretRef('group-snapshotter', cls.parameters, c) };
    } catch (err) {
      throw new Explained(`VolumeGroupSnapshotClass ${className}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** A pre-provisioned group content: the group snapshot is the driver's already; GetVolumeGroupSnapshot says how it is. */
  private async check(c: GroupContent): Promise<void> {
    const id = groupHandleOf(c)!;
    let status: GroupContentStatus;
    try {
      const className = c.spec?.volumeGroupSnapshotClassName;
      const secretRef = className ? groupSecretRef('group-snapshotter-get', (await this.classes.getOrExplain('VolumeGroupSnapshotClass', className)).parameters, c) : undefined;
      const res = await this.csi.GroupController.GetVolumeGroupSnapshot({ group_snapshot_id: id, snapshot_ids: memberSnapshotIds(c), secrets: await readSecret(this.k.core, secretRef) }, this.opts.timeoutMs);
      status = statusFromGroupSnapshot(c.status, res.group_snapshot as CsiGroupSnapshot, false);
    } catch (err) {
      const why = err instanceof Explained || !codeName(err) ? (err as Error).message : rpcErrorText(err);
      await this.objs.reportError(c, this.recorder, this.opts.log, 'GroupSnapshotContentCheckandUpdateFailed', `Failed to check and update group snapshot content: failed to get group snapshot ${id} for group content ${c.metadata?.name}: ${why}`);
      throw err;
    }
    await this.objs.patchStatus(c, status);
    if (!status.readyToUse) throw new Error(`group snapshot ${id} of group content ${c.metadata?.name} is not ready yet`);
    this.opts.log.info({ groupContent: c.metadata?.name, groupSnapshot: id }, 'pre-provisioned group snapshot ready');
  }

  /** DeleteVolumeGroupSnapshot with every member; then the handle leaves the status (so it is never deleted twice) and the finalizer goes. */
  private async delete(c: GroupContent): Promise<void> {
    const id = groupHandleOf(c)!;
    try {
      const secrets = await readSecret(this.k.core, annotatedGroupSecretRef(c));
      await this.csi.GroupController.DeleteVolumeGroupSnapshot({ group_snapshot_id: id, snapshot_ids: memberSnapshotIds(c), secrets }, this.opts.timeoutMs);
    } catch (err) {
      await this.recorder.event(c, 'Warning', 'GroupSnapshotDeleteError', `Failed to delete group snapshot ${id}: ${codeName(err) ? rpcErrorText(err) : (err as Error).message}`);
      throw err;
    }
    this.opts.log.info({ groupContent: c.metadata?.name, groupSnapshot: id }, 'group snapshot deleted');
    const cleared = await this.objs.patchStatus(c, clearedGroupStatus(c.status));
    await this.objs.removeFinalizer(cleared, GROUP_CONTENT_FINALIZER);
  }
}
