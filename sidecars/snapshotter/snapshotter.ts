// The snapshotter: VolumeSnapshotContents of our driver -> CreateSnapshot (dynamic) or
// ListSnapshots by ID (pre-provisioned) -> the content's status; a content the
// snapshot-controller deletes -> DeleteSnapshot under deletionPolicy Delete, then its
// finalizer goes. Failures go on status.error and as Events on the content.
import { CsiClient, codeName, rpcErrorText } from '../common/csi-client.js';
import type { CommonControllerOptions } from '../common/run.js';
import { k8s, type Clients, Watch, mergePatch, httpStatus } from '../common/kube.js';
import { WorkQueue } from '../common/workqueue.js';
import { Recorder } from '../common/events.js';
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
  errorStatus,
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

/** Codes after which a CreateSnapshot may still be running in the driver (csi-snapshotter's list): the being-created mark stays. */
const NOT_FINAL = new Set(['CANCELLED', 'DEADLINE_EXCEEDED', 'UNAVAILABLE', 'RESOURCE_EXHAUSTED', 'ABORTED']);
const isFinal = (err: unknown) => codeName(err) !== undefined && !NOT_FINAL.has(codeName(err)!);

type Content = VolumeSnapshotContent & k8s.KubernetesObject;

export interface SnapshotterOptions extends CommonControllerOptions {
  /** --snapshot-name-prefix. */
  namePrefix?: string;
}

export class Snapshotter {
  private readonly queue: WorkQueue;
  private contents!: Watch<Content>;
  private readonly recorder: Recorder;
  private readonly api: k8s.CustomObjectsApi;
  private readonly nodeScope?: NodeScope;

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
  }

  async start(): Promise<void> {
    const list = () => this.api.listClusterCustomObject({ group: SNAPSHOT_GROUP, version: SNAPSHOT_VERSION, plural: CONTENTS }) as Promise<k8s.KubernetesListObject<Content>>;
    await this.nodeScope?.start();
    this.contents = new Watch(this.k.kc, `/apis/${SNAPSHOT_GROUP}/${SNAPSHOT_VERSION}/${CONTENTS}`, list, (key) => this.queue.add(key), this.opts.log);
    await this.contents.start();
    this.opts.log.info({ driver: this.opts.driverName }, 'snapshotter started');
  }

  async stop(): Promise<void> {
    this.queue.stop();
    await this.contents?.stop();
    await this.nodeScope?.stop();
  }

  private async sync(key: string): Promise<void> {
    const seen = this.contents.get(key);
    if (!seen || !isOurs(seen, this.opts)) return;
    const c = this.nodeScope ? await this.nodeScope.take(seen, (ann) => this.setAnnotations(seen, ann)) : seen;
    if (!c) return;
    switch (actionFor(c)) {
      case 'delete':
        return this.delete(c);
      case 'create':
        return this.create(c);
      case 'check':
        return this.check(c);
      case 'ready':
        await this.setAnnotations(c, { [ANN_BEING_CREATED]: null });
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
      const message = `Failed to create snapshot: ${err instanceof SnapshotError ? err.message : rpcErrorText(err)}`;
      await this.reportError(c, 'SnapshotCreationFailed', message);
      throw err;
    }
    await this.setAnnotations(await this.patchStatus(c, status), { [ANN_BEING_CREATED]: null });
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
    const marked = await this.setAnnotations(c, { ...record, [ANN_BEING_CREATED]: 'yes' });
    let res;
    try {
      res = await this.csi.Controller.CreateSnapshot({ name, source_volume_id: volume, parameters, secrets }, this.opts.timeoutMs);
    } catch (err) {
      if (isFinal(err)) await this.setAnnotations(marked, { [ANN_BEING_CREATED]: null });
      throw new SnapshotError(`failed to take snapshot of the volume ${volume}: ${rpcErrorText(err)}`, { cause: err });
    }
    return statusFromSnapshot(c.status, res.snapshot as CsiSnapshot);
  }

  /** The class's parameters for the driver and the snapshotter secret (the recorded one first, as csi-snapshotter reads it). */
  private async classInput(c: Content): Promise<{ parameters: Record<string, string>; secretRef?: SecretRef }> {
    const className = c.spec?.volumeSnapshotClassName;
    if (!className) throw new SnapshotError(`failed to take snapshot ${c.metadata?.name} without a snapshot class`);
    const cls = await this.readClass(className);
    try {
      return { parameters: snapshotParameters(cls.parameters), secretRef: annotatedSecretRef(c) ?? snapshotSecretRef('snapshotter', cls.parameters, c) };
    } catch (err) {
      throw new SnapshotError(`VolumeSnapshotClass ${className}: ${(err as Error).message}`, { cause: err });
    }
  }

  private async readClass(name: string): Promise<VolumeSnapshotClass> {
    try {
      return (await this.api.getClusterCustomObject({ group: SNAPSHOT_GROUP, version: SNAPSHOT_VERSION, plural: CLASSES, name })) as VolumeSnapshotClass;
    } catch (err) {
      // The API client's error stays out of ours (no cause): it carries the whole HTTP exchange.
      throw new SnapshotError(httpStatus(err) === 404 ? `VolumeSnapshotClass ${name} not found` : `cannot read VolumeSnapshotClass ${name}: ${httpStatus(err) ?? (err as Error).message}`);
    }
  }

  /** A pre-provisioned content (or a group member): the snapshot is the driver's already; ListSnapshots by its ID says how it is. */
  private async check(c: Content): Promise<void> {
    const id = c.spec?.source?.snapshotHandle ?? c.status!.snapshotHandle!;
    let status: ContentStatus;
    try {
      const className = c.spec?.volumeSnapshotClassName;
      const secretRef = className ? snapshotSecretRef('snapshotter-list', (await this.readClass(className)).parameters, c) : undefined;
      const res = await this.csi.Controller.ListSnapshots({ snapshot_id: id, secrets: await readSecret(this.k.core, secretRef) }, this.opts.timeoutMs);
      const found = (res.entries ?? []).map((e: { snapshot?: CsiSnapshot }) => e.snapshot).find((s: CsiSnapshot | undefined) => s?.snapshot_id === id);
      if (!found) throw new SnapshotError(`can not find snapshot for snapshotID ${id}`);
      status = statusFromSnapshot(c.status, found);
    } catch (err) {
      const why = err instanceof SnapshotError || !codeName(err) ? (err as Error).message : rpcErrorText(err);
      await this.reportError(c, 'SnapshotContentCheckandUpdateFailed', `Failed to check and update snapshot content: failed to list snapshot for content ${c.metadata?.name}: ${why}`);
      throw err;
    }
    await this.patchStatus(c, status);
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
    const finalizers = c.metadata?.finalizers ?? [];
    if (!finalizers.includes(CONTENT_FINALIZER)) return;
    // resourceVersion makes the patch fail on a content changed meanwhile (another finalizer added), not overwrite it.
    await this.patch(c, { metadata: { resourceVersion: c.metadata?.resourceVersion, finalizers: finalizers.filter((f) => f !== CONTENT_FINALIZER) } });
  }

  /** The error on status.error and as an Event; the same message again writes neither (a retry loop must not flood). */
  private async reportError(c: Content, reason: string, message: string): Promise<void> {
    this.opts.log.warn({ content: c.metadata?.name, reason, err: message }, 'snapshot content failed');
    if (c.status?.error?.message === message) return;
    const fresh = await this.readContent(c).catch(() => c);
    await this.patchStatus(fresh, errorStatus(fresh.status, message)).catch((err: unknown) => this.opts.log.warn({ content: c.metadata?.name, err: String(err) }, 'could not record the error on the status'));
    await this.recorder.event(c, 'Warning', reason, message);
  }

  private async readContent(c: Content): Promise<Content> {
    return (await this.api.getClusterCustomObject({ group: SNAPSHOT_GROUP, version: SNAPSHOT_VERSION, plural: CONTENTS, name: c.metadata!.name! })) as Content;
  }

  /** Merges annotations (null removes one); skips the call when nothing would change. */
  private async setAnnotations(c: Content, ann: Record<string, string | null>): Promise<Content> {
    const have = c.metadata?.annotations ?? {};
    if (Object.entries(ann).every(([k, v]) => (v === null ? !(k in have) : have[k] === v))) return c;
    return this.patch(c, { metadata: { annotations: ann } });
  }

  private async patch(c: Content, body: object): Promise<Content> {
    return (await this.api.patchClusterCustomObject({ group: SNAPSHOT_GROUP, version: SNAPSHOT_VERSION, plural: CONTENTS, name: c.metadata!.name!, body }, mergePatch)) as Content;
  }

  /** Replaces the whole status, so fields the new one lacks (a cleared error) go. */
  private async patchStatus(c: Content, status: ContentStatus): Promise<Content> {
    const body = { status: { ...Object.fromEntries(Object.keys(c.status ?? {}).map((k) => [k, null])), ...status } };
    return (await this.api.patchClusterCustomObjectStatus({ group: SNAPSHOT_GROUP, version: SNAPSHOT_VERSION, plural: CONTENTS, name: c.metadata!.name!, body }, mergePatch)) as Content;
  }
}

/** A failure the snapshotter describes itself (not a gRPC status): its message goes to the user as it is. */
class SnapshotError extends Error {}
