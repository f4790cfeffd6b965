// The snapshotter: VolumeSnapshotContents of our driver -> CreateSnapshot (dynamic) or
// ListSnapshots by ID (pre-provisioned) -> the content's status; a content the
// snapshot-controller deletes -> DeleteSnapshot under deletionPolicy Delete, then its
// finalizer goes. Failures go on status.error and as Events on the content. When the driver
// has the group controller, VolumeGroupSnapshotContents too (group-snapshotter.ts).
import { CsiClient, codeName, isFinalError, rpcErrorText } from '../common/csi-client.js';
import type { CommonControllerOptions } from '../common/run.js';
import { k8s, type Clients, Watch } from '../common/kube.js';
import { WorkQueue } from '../common/workqueue.js';
import { Recorder, type EventReason } from '../common/events.js';
import { readSecret, type SecretRef } from '../common/secrets.js';
import {
  ANN_BEING_CREATED,
  ANN_SECRET_NAME,
  ANN_SECRET_NAMESPACE,
  CLASSES,
  CONTENTS,
  CONTENT_FINALIZER,
  SNAPSHOT_GROUP,
  SNAPSHOT_VERSION,
  actionFor,
  annotatedSecretRef,
  deletesSnapshot,
  isOurs,
  snapshotName,
  snapshotParameters,
  snapshotSecretRef,
  statusFromSnapshot,
  type ContentStatus,
  type CsiSnapshot,
  type VolumeSnapshotClass,
  type VolumeSnapshotContent,
} from './content.js';
import { NodeScope } from './node-scope.js';
import { ClusterObjects, Explained } from './objects.js';
import { GroupSnapshotter, groupSnapshotsAvailable } from './group-snapshotter.js';

type Content = VolumeSnapshotContent & k8s.KubernetesObject;

export interface SnapshotterOptions extends CommonControllerOptions {
  /** --snapshot-name-prefix. */
  namePrefix?: string;
  /** --groupsnapshot-name-prefix. */
  groupNamePrefix?: string;
}

export class Snapshotter {
  private readonly queue: WorkQueue;
  private contents!: Watch<Content>;
  private readonly recorder: Recorder;
  private readonly api: k8s.CustomObjectsApi;
  private readonly nodeScope?: NodeScope;
  private readonly objs: ClusterObjects<Content>;
  private readonly classes: ClusterObjects<VolumeSnapshotClass & k8s.KubernetesObject>;
  private groups?: GroupSnapshotter;

  constructor(
    private readonly k: Clients,
    private readonly csi: CsiClient,
    private readonly opts: SnapshotterOptions,
  ) {
    // In the node DaemonSet (loop, LVM): only the contents whose snapshot lives on this node (node-scope.ts says how and why).
    if (opts.nodeName) this.nodeScope = new NodeScope(k, csi, { ...opts, nodeName: opts.nodeName });
    this.queue = new WorkQueue((key) => this.sync(key), { workers: opts.workers }, opts.log);
    this.recorder = new Recorder(k.core, `${opts.driverName}-snapshotter`, opts.log);
    this.api = k.kc.makeApiClient(k8s.CustomObjectsApi);
    this.objs = new ClusterObjects(this.api, SNAPSHOT_GROUP, SNAPSHOT_VERSION, CONTENTS);
    this.classes = new ClusterObjects(this.api, SNAPSHOT_GROUP, SNAPSHOT_VERSION, CLASSES);
  }

  async start(): Promise<void> {
    const list = () => this.api.listClusterCustomObject({ group: SNAPSHOT_GROUP, version: SNAPSHOT_VERSION, plural: CONTENTS }) as Promise<k8s.KubernetesListObject<Content>>;
    await this.nodeScope?.start();
    this.contents = new Watch(this.k.kc, `/apis/${SNAPSHOT_GROUP}/${SNAPSHOT_VERSION}/${CONTENTS}`, list, (key) => this.queue.add(key), this.opts.log);
    await this.contents.start();
    // As csi-snapshotter: group contents only for a driver that can make group snapshots.
    if (await groupSnapshotsAvailable(this.csi, this.api, this.opts)) {
      this.groups = new GroupSnapshotter(this.k, this.csi, this.api, this.opts, this.nodeScope);
      await this.groups.start();
    }
    this.opts.log.info({ driver: this.opts.driverName, groupSnapshots: !!this.groups }, 'snapshotter started');
  }

  async stop(): Promise<void> {
    this.queue.stop();
    await this.contents?.stop();
    await this.nodeScope?.stop();
    await this.groups?.stop();
  }

  private async sync(key: string): Promise<void> {
    const seen = this.contents.get(key);
    if (!seen || !isOurs(seen, this.opts)) return;
    const c = this.nodeScope ? await this.nodeScope.take(seen, (ann) => this.objs.setAnnotations(seen, ann)) : seen;
    if (!c) return;
    switch (actionFor(c)) {
      case 'delete':
        return this.delete(c);
      case 'create':
        return this.create(c);
      case 'check':
        return this.check(c);
      case 'ready':
        await this.objs.setAnnotations(c, { [ANN_BEING_CREATED]: null });
        return;
      case 'none':
        return;
    }
  }

  private async create(c: Content): Promise<void> {
    let status: ContentStatus;
    try {
      status = await this.createSnapshot(c);
    } catch (err) {
      const message = `Failed to create snapshot: ${err instanceof Explained ? err.message : rpcErrorText(err)}`;
      await this.reportError(c, 'SnapshotCreationFailed', message);
      throw err;
    }
    await this.objs.setAnnotations(await this.objs.patchStatus(c, status), { [ANN_BEING_CREATED]: null });
    if (!status.readyToUse) throw new Error(`snapshot ${status.snapshotHandle} of content ${c.metadata?.name} is not ready yet`);
    this.opts.log.info({ content: c.metadata?.name, snapshot: status.snapshotHandle }, 'snapshot created');
  }

  /** CreateSnapshot for a dynamic content, marked as being created while the call may be in flight. */
  private async createSnapshot(c: Content): Promise<ContentStatus> {
    const volume = c.spec!.source!.volumeHandle!;
    const { parameters, secretRef } = await this.classInput(c);
    const name = snapshotName(c, this.opts.namePrefix);
    // The secret is recorded for DeleteSnapshot, which may come after the class is gone.
    const record: Record<string, string> = secretRef && !annotatedSecretRef(c) ? { [ANN_SECRET_NAME]: secretRef.name, [ANN_SECRET_NAMESPACE]: secretRef.namespace } : {};
    const secrets = await readSecret(this.k.core, secretRef);
    const marked = await this.objs.setAnnotations(c, { ...record, [ANN_BEING_CREATED]: 'yes' });
    let res;
    try {
      res = await this.csi.Controller.CreateSnapshot({ name, source_volume_id: volume, parameters, secrets }, this.opts.timeoutMs);
    } catch (err) {
      if (isFinalError(err)) await this.objs.setAnnotations(marked, { [ANN_BEING_CREATED]: null });
      throw new Explained(`failed to take snapshot of the volume ${volume}: ${rpcErrorText(err)}`, { cause: err });
    }
    return statusFromSnapshot(c.status, res.snapshot as CsiSnapshot);
  }

  /** The class's parameters for the driver and the snapshotter secret (the recorded one first, as csi-snapshotter reads it). */
  private async classInput(c: Content): Promise<{ parameters: Record<string, string>; secretRef?: SecretRef }> {
    const className = c.spec?.volumeSnapshotClassName;
    if (!className) throw new Explained(`failed to take snapshot ${c.metadata?.name} without a snapshot class`);
    const cls = await this.readClass(className);
    try {
      return { parameters: snapshotParameters(cls.parameters), secretRef: annotatedSecretRef(c) ?? snapshotSecretRef('snapshotter', cls.parameters, c) };
    } catch (err) {
      throw new Explained(`VolumeSnapshotClass ${className}: ${(err as Error).message}`, { cause: err });
    }
  }

  private readClass(name: string): Promise<VolumeSnapshotClass> {
    return this.classes.getOrExplain('VolumeSnapshotClass', name);
  }

  /** A pre-provisioned content (or a group member): the snapshot is the driver's already; ListSnapshots by its ID says how it is. */
  private async check(c: Content): Promise<void> {
    const id = c.spec?.source?.snapshotHandle ?? c.status!.snapshotHandle!;
    let status: ContentStatus;
    try {
      const className = c.spec?.volumeSnapshotClassName;
      // A group member has no class: the snapshot-controller records the group's secret on it.
      const secretRef = c.status?.volumeGroupSnapshotHandle ? annotatedSecretRef(c) : className ? snapshotSecretRef('snapshotter-list', (await this.readClass(className)).parameters, c) : undefined;
      const res = await this.csi.Controller.ListSnapshots({ snapshot_id: id, secrets: await readSecret(this.k.core, secretRef) }, this.opts.timeoutMs);
      const found = (res.entries ?? []).map((e: { snapshot?: CsiSnapshot }) => e.snapshot).find((s: CsiSnapshot | undefined) => s?.snapshot_id === id);
      if (!found) throw new Explained(`can not find snapshot for snapshotID ${id}`);
      status = statusFromSnapshot(c.status, found);
    } catch (err) {
      const why = err instanceof Explained || !codeName(err) ? (err as Error).message : rpcErrorText(err);
      await this.reportError(c, 'SnapshotContentCheckandUpdateFailed', `Failed to check and update snapshot content: failed to list snapshot for content ${c.metadata?.name}: ${why}`);
      throw err;
    }
    await this.objs.patchStatus(c, status);
    if (!status.readyToUse) throw new Error(`snapshot ${id} of content ${c.metadata?.name} is not ready yet`);
    this.opts.log.info({ content: c.metadata?.name, snapshot: id }, 'pre-provisioned snapshot ready');
  }

  private async delete(c: Content): Promise<void> {
    if (deletesSnapshot(c)) {
      try {
        await this.csi.Controller.DeleteSnapshot({ snapshot_id: c.status!.snapshotHandle!, secrets: await readSecret(this.k.core, annotatedSecretRef(c)) }, this.opts.timeoutMs);
      } catch (err) {
        await this.recorder.event(c, 'Warning', 'SnapshotDeleteError', `Failed to delete snapshot ${c.status!.snapshotHandle}: ${rpcErrorText(err)}`);
        throw err;
      }
      this.opts.log.info({ content: c.metadata?.name, snapshot: c.status!.snapshotHandle }, 'snapshot deleted');
    }
    await this.objs.removeFinalizer(c, CONTENT_FINALIZER);
  }

  private reportError(c: Content, reason: EventReason, message: string): Promise<void> {
    return this.objs.reportError(c, this.recorder, this.opts.log, reason, message);
  }
}

