// The attacher: VolumeAttachments for our driver become ControllerPublish/Unpublish calls;
// the result goes into status.attached / attachError, and a finalizer keeps the object
// until the volume is unpublished.
import { CsiClient, rpcErrorText } from '../common/csi-client.js';
import type { CommonControllerOptions } from '../common/run.js';
import { k8s, type Clients, Watch, mergePatch, httpStatus } from '../common/kube.js';
import { WorkQueue } from '../common/workqueue.js';
import { pvVolumeCapability } from '../common/capability.js';
import { servesVolume, backendOfHandle } from '../common/scope.js';
import { readSecret } from '../common/secrets.js';

/** Remembers the CSI node ID used to publish, so detach works after the Node is gone. */
export const ANN_NODE_ID = 'csi.tscsi.dev/node-id';

/**
 * ControllerPublishVolume for the volume of a PV spec (a PV's, or a VolumeAttachment's
 * inline one): its handle, read-only flag and attributes, and one capability that carries
 * all of its access modes (throws for modes CSI cannot combine).
 */
export function publishRequest(spec: k8s.V1PersistentVolumeSpec, nodeId: string, secrets: Record<string, string>) {
  const csi = spec.csi;
  if (!csi) throw new Error('not a CSI volume');
  return {
    volume_id: csi.volumeHandle,
    node_id: nodeId,
    volume_capability: pvVolumeCapability(spec),
    readonly: !!csi.readOnly,
    volume_context: csi.volumeAttributes ?? {},
    secrets,
  };
}

export class Attacher {
  private readonly queue: WorkQueue;
  private vas!: Watch<k8s.V1VolumeAttachment>;
  /** This attacher's finalizer: the central one's is external-attacher's, a node attacher's its own. */
  readonly finalizer: string;
  /** The central name, which node attachers before this version also set: theirs to remove on their volumes. */
  private readonly legacyFinalizer?: string;

  constructor(
    private readonly k: Clients,
    private readonly csi: CsiClient,
    private readonly opts: CommonControllerOptions,
  ) {
    this.queue = new WorkQueue((key) => this.sync(key), { workers: opts.workers }, opts.log);
    const central = `external-attacher/${opts.driverName.replace(/\//g, '-')}`;
    this.finalizer = opts.nodeName ? `${central}-node` : central;
    this.legacyFinalizer = opts.nodeName ? central : undefined;
  }

  /** Whether this attacher acts on a VolumeAttachment of its driver whose PV (if still there) is `pv`. */
  private serves(va: k8s.V1VolumeAttachment, pv: k8s.V1PersistentVolume | undefined): boolean {
    if (this.opts.nodeName && va.spec.nodeName !== this.opts.nodeName) return false;
    if (pv) return servesVolume(this.opts, pv);
    const inline = va.spec.source.inlineVolumeSpec?.csi;
    if (inline) return !this.opts.backends || this.opts.backends.has(backendOfHandle(inline.volumeHandle) ?? '');
    return !this.opts.backends; // no PV to tell the backend: only an attacher serving every backend reports it
  }

  async start(): Promise<void> {
    this.vas = new Watch(this.k.kc, '/apis/storage.k8s.io/v1/volumeattachments', () => this.k.storage.listVolumeAttachment(), (key) => this.queue.add(key), this.opts.log);
    await this.vas.start();
    this.opts.log.info({ driver: this.opts.driverName }, 'attacher started');
  }

  async stop(): Promise<void> {
    this.queue.stop();
    await this.vas?.stop();
  }

  private async nodeId(nodeName: string): Promise<string | undefined> {
    try {
      const n = await this.k.storage.readCSINode({ name: nodeName });
      return n.spec?.drivers?.find((d) => d.name === this.opts.driverName)?.nodeID;
    } catch (err) {
      if (httpStatus(err) === 404) return undefined;
      throw err;
    }
  }

  /** This attacher's finalizer, or the legacy one it replaces. */
  private mine(f: string): boolean {
    return f === this.finalizer || f === this.legacyFinalizer;
  }

  private async sync(key: string): Promise<void> {
    const va = this.vas.get(key);
    if (!va || va.spec.attacher !== this.opts.driverName) return;
    if (this.opts.nodeName && va.spec.nodeName !== this.opts.nodeName) return;
    const finalizers = va.metadata?.finalizers ?? [];
    // Attached by us and not going away: nothing to read (each resync passes every VolumeAttachment here).
    if (!va.metadata?.deletionTimestamp && va.status?.attached && finalizers.includes(this.finalizer) && va.metadata?.annotations?.[ANN_NODE_ID]) return;
    const pvName = va.spec.source.persistentVolumeName;
    const pv = pvName ? await this.k.core.readPersistentVolume({ name: pvName }).catch((e) => (httpStatus(e) === 404 ? undefined : Promise.reject(e))) : undefined;
    if (va.metadata?.deletionTimestamp) return this.detach(key, va, pv);
    if (this.serves(va, pv)) return this.attach(key, va, pv);
  }

  /** ControllerUnpublish, then our finalizer goes (a PV already gone says nothing about its backend: our finalizer on it does). */
  private async detach(key: string, va: k8s.V1VolumeAttachment, pv: k8s.V1PersistentVolume | undefined): Promise<void> {
    const finalizers = va.metadata?.finalizers ?? [];
    if (!finalizers.some((f) => this.mine(f)) || (pv && !this.serves(va, pv))) return;
    const nodeId = va.metadata?.annotations?.[ANN_NODE_ID] ?? (await this.nodeId(va.spec.nodeName));
    const csiSrc = pv?.spec?.csi ?? va.spec.source.inlineVolumeSpec?.csi;
    if (nodeId && csiSrc?.volumeHandle) {
      try {
        const secrets = await readSecret(this.k.core, csiSrc.controllerPublishSecretRef);
        await this.csi.Controller.ControllerUnpublishVolume({ volume_id: csiSrc.volumeHandle, node_id: nodeId, secrets }, this.opts.timeoutMs);
      } catch (err) {
        await this.setStatus(key, { detachError: { time: new Date(), message: rpcErrorText(err) } });
        throw err;
      }
    } else {
      this.opts.log.warn({ va: key }, 'node or volume gone: nothing left to unpublish');
    }
    await this.k.storage.patchVolumeAttachment({ name: key, body: { metadata: { finalizers: finalizers.filter((f) => !this.mine(f)) } } }, mergePatch);
  }

  /** Our finalizer and the node ID on the object first (so a detach can always follow), then ControllerPublish and the status. */
  private async attach(key: string, va: k8s.V1VolumeAttachment, pv: k8s.V1PersistentVolume | undefined): Promise<void> {
    const spec = pv?.spec ?? va.spec.source.inlineVolumeSpec;
    const csiSrc = spec?.csi;
    if (!spec || !csiSrc) {
      await this.setStatus(key, { attached: false, attachError: { time: new Date(), message: `persistent volume ${va.spec.source.persistentVolumeName} not found or not a CSI volume` } });
      throw new Error(`no CSI source for ${key}`);
    }
    const nodeId = await this.nodeId(va.spec.nodeName);
    if (!nodeId) {
      await this.setStatus(key, { attached: false, attachError: { time: new Date(), message: `driver ${this.opts.driverName} is not registered on node ${va.spec.nodeName}` } });
      throw new Error(`no CSINode entry for ${va.spec.nodeName}`);
    }
    if (va.status?.attached && va.metadata?.annotations?.[ANN_NODE_ID] === nodeId) return;
    const finalizers = va.metadata?.finalizers ?? [];
    if (!finalizers.includes(this.finalizer) || (this.legacyFinalizer && finalizers.includes(this.legacyFinalizer)) || va.metadata?.annotations?.[ANN_NODE_ID] !== nodeId) {
      await this.k.storage.patchVolumeAttachment(
        { name: key, body: { metadata: { finalizers: [...finalizers.filter((f) => !this.mine(f)), this.finalizer], annotations: { [ANN_NODE_ID]: nodeId } } } },
        mergePatch,
      );
    }
    try {
      const req = publishRequest(spec, nodeId, await readSecret(this.k.core, csiSrc.controllerPublishSecretRef));
      const res = await this.csi.Controller.ControllerPublishVolume(req, this.opts.timeoutMs);
      await this.setStatus(key, { attached: true, attachmentMetadata: res.publish_context ?? {}, attachError: null });
      this.opts.log.info({ va: key, volumeId: csiSrc.volumeHandle, nodeId }, 'attached');
    } catch (err) {
      await this.setStatus(key, { attached: false, attachError: { time: new Date(), message: rpcErrorText(err) } });
      throw err;
    }
  }

  private async setStatus(name: string, status: Record<string, unknown>): Promise<void> {
    await this.k.storage.patchVolumeAttachmentStatus({ name, body: { status } }, mergePatch).catch((err) => {
      if (httpStatus(err) !== 404) throw err;
    });
  }
}

