// The provisioner: PersistentVolumeClaims of our StorageClasses become CSI volumes and
// PersistentVolumes bound to them; released PVs with reclaim Delete have their volume
// deleted. It uses external-provisioner's annotations and finalizers, so a cluster can
// switch between the two.
import type { Logger } from 'pino';
import { CsiClient, codeName } from '../common/csi-client.js';
import { k8s, type Clients, Watch, mergePatch, httpStatus, quantityToBytes, bytesToQuantity } from '../common/kube.js';
import { WorkQueue } from '../common/workqueue.js';
import { Recorder } from '../common/events.js';

export const ANN_STORAGE_PROVISIONER = 'volume.kubernetes.io/storage-provisioner';
export const ANN_BETA_STORAGE_PROVISIONER = 'volume.beta.kubernetes.io/storage-provisioner';
export const ANN_SELECTED_NODE = 'volume.kubernetes.io/selected-node';
export const ANN_PROVISIONED_BY = 'pv.kubernetes.io/provisioned-by';
export const PV_FINALIZER = 'external-provisioner.volume.kubernetes.io/finalizer';
/** Held on a claim while its volume may exist without a PV: the claim cannot vanish until we know. */
export const CLAIM_FINALIZER = 'csi.tscsi.dev/provisioning';
const CO_PREFIX = 'csi.storage.k8s.io/';

export interface ProvisionerOptions {
  driverName: string;
  /** Node-local backends: only claims selected for this node (one provisioner per node). */
  nodeName?: string;
  workers: number;
  timeoutMs: number;
  log: Logger;
}

/** Kubernetes access modes -> CSI, as the kubernetes-csi sidecars map them when the driver advertises SINGLE_NODE_MULTI_WRITER. */
export function csiAccessMode(mode: string): string {
  switch (mode) {
    case 'ReadWriteOnce':
      return 'SINGLE_NODE_MULTI_WRITER';
    case 'ReadWriteOncePod':
      return 'SINGLE_NODE_SINGLE_WRITER';
    case 'ReadOnlyMany':
      return 'MULTI_NODE_READER_ONLY';
    case 'ReadWriteMany':
      return 'MULTI_NODE_MULTI_WRITER';
    default:
      throw new Error(`unknown access mode ${mode}`);
  }
}

export function volumeCapabilities(modes: string[], block: boolean, fsType: string, mountOptions: string[]) {
  return modes.map((m) => ({
    ...(block ? { block: {} } : { mount: { fs_type: fsType, mount_flags: mountOptions } }),
    access_mode: { mode: csiAccessMode(m) },
  }));
}

export class Provisioner {
  private readonly queue: WorkQueue;
  private readonly pvQueue: WorkQueue;
  private claims!: Watch<k8s.V1PersistentVolumeClaim>;
  private volumes!: Watch<k8s.V1PersistentVolume>;
  private readonly recorder: Recorder;

  constructor(
    private readonly k: Clients,
    private readonly csi: CsiClient,
    private readonly opts: ProvisionerOptions,
  ) {
    this.queue = new WorkQueue((key) => this.syncClaim(key), { workers: opts.workers }, opts.log);
    this.pvQueue = new WorkQueue((key) => this.syncVolume(key), { workers: opts.workers }, opts.log);
    this.recorder = new Recorder(k.core, `${opts.driverName}-provisioner`, opts.log);
  }

  async start(): Promise<void> {
    this.claims = new Watch(this.k.kc, '/api/v1/persistentvolumeclaims', () => this.k.core.listPersistentVolumeClaimForAllNamespaces(), (key) => this.queue.add(key), this.opts.log);
    this.volumes = new Watch(this.k.kc, '/api/v1/persistentvolumes', () => this.k.core.listPersistentVolume(), (key) => this.pvQueue.add(key), this.opts.log);
    await this.claims.start();
    await this.volumes.start();
    this.opts.log.info({ driver: this.opts.driverName, node: this.opts.nodeName }, 'provisioner started');
  }

  async stop(): Promise<void> {
    this.queue.stop();
    this.pvQueue.stop();
    await this.claims?.stop();
    await this.volumes?.stop();
  }

  private ours(pvc: k8s.V1PersistentVolumeClaim): boolean {
    const a = pvc.metadata?.annotations ?? {};
    return (a[ANN_STORAGE_PROVISIONER] ?? a[ANN_BETA_STORAGE_PROVISIONER]) === this.opts.driverName;
  }

  private async storageClass(name: string | undefined): Promise<k8s.V1StorageClass | undefined> {
    if (!name) return undefined;
    try {
      return await this.k.storage.readStorageClass({ name });
    } catch (err) {
      if (httpStatus(err) === 404) return undefined;
      throw err;
    }
  }

  private async syncClaim(key: string): Promise<void> {
    const pvc = this.claims.get(key);
    if (!pvc?.metadata?.uid) return;
    const [namespace, name] = key.split('/');
    const finalizers = pvc.metadata.finalizers ?? [];

    if (pvc.metadata.deletionTimestamp) {
      // The claim is going away. If it holds our finalizer, a volume may exist for it
      // without a PV (the claim was deleted while CreateVolume ran): delete that volume first.
      if (!finalizers.includes(CLAIM_FINALIZER)) return;
      const pvName = `pvc-${pvc.metadata.uid}`;
      const pv = this.volumes.get(pvName);
      if (!pv) await this.deleteOrphan(pvc);
      await this.removeClaimFinalizer(namespace, name, pvc);
      return;
    }
    if (pvc.spec?.volumeName || pvc.status?.phase === 'Bound') {
      if (finalizers.includes(CLAIM_FINALIZER) && this.volumes.get(pvc.spec?.volumeName ?? '')) await this.removeClaimFinalizer(namespace, name, pvc);
      return;
    }
    if (!this.ours(pvc)) return;
    const sc = await this.storageClass(pvc.spec?.storageClassName);
    if (!sc || sc.provisioner !== this.opts.driverName) return;
    const selectedNode = pvc.metadata.annotations?.[ANN_SELECTED_NODE];
    if (sc.volumeBindingMode === 'WaitForFirstConsumer' && !selectedNode) return; // the scheduler has not picked a node yet
    if (this.opts.nodeName && selectedNode !== this.opts.nodeName) return; // another node's provisioner takes it
    const pvName = `pvc-${pvc.metadata.uid}`;
    if (this.volumes.get(pvName)) return; // provisioned; the PV controller binds it

    try {
      await this.provision(pvc, sc, pvName, selectedNode);
    } catch (err) {
      await this.recorder.event(pvc, 'Warning', 'ProvisioningFailed', `failed to provision volume with StorageClass "${sc.metadata?.name}": ${describe(err)}`);
      throw err;
    }
  }

  private async createRequest(pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass, pvName: string, selectedNode: string | undefined) {
    const params: Record<string, string> = {};
    for (const [k, v] of Object.entries(sc.parameters ?? {})) if (!k.startsWith(CO_PREFIX)) params[k] = v;
    const fsType = sc.parameters?.[`${CO_PREFIX}fstype`] ?? '';
    const block = pvc.spec?.volumeMode === 'Block';
    const storage = pvc.spec?.resources?.requests?.storage;
    if (!storage) throw new Error('the claim requests no storage size');
    const req: Record<string, unknown> = {
      name: pvName,
      capacity_range: { required_bytes: quantityToBytes(String(storage)).toString() },
      volume_capabilities: volumeCapabilities(pvc.spec?.accessModes ?? ['ReadWriteOnce'], block, fsType, sc.mountOptions ?? []),
      parameters: params,
      accessibility_requirements: await this.topology(sc, selectedNode),
    };
    const ds = pvc.spec?.dataSourceRef ?? pvc.spec?.dataSource;
    if (ds) {
      if (ds.kind !== 'PersistentVolumeClaim' || (ds.apiGroup ?? '') !== '') throw new Error(`data source ${ds.kind} is not supported`);
      const srcNs = (ds as k8s.V1TypedObjectReference).namespace ?? pvc.metadata?.namespace!;
      const src = await this.k.core.readNamespacedPersistentVolumeClaim({ name: ds.name, namespace: srcNs });
      const srcPv = src.spec?.volumeName ? this.volumes.get(src.spec.volumeName) : undefined;
      if (!srcPv?.spec?.csi || srcPv.spec.csi.driver !== this.opts.driverName) throw new Error(`source claim ${srcNs}/${ds.name} is not bound to a volume of ${this.opts.driverName}`);
      req.volume_content_source = { volume: { volume_id: srcPv.spec.csi.volumeHandle } };
    }
    return { req, fsType, block };
  }

  /** Requisite/preferred topology: the selected node's segment, or the StorageClass's allowedTopologies. */
  private async topology(sc: k8s.V1StorageClass, selectedNode: string | undefined) {
    if (selectedNode) {
      const csiNode = await this.k.storage.readCSINode({ name: selectedNode }).catch(() => undefined);
      const drv = csiNode?.spec?.drivers?.find((d) => d.name === this.opts.driverName);
      if (!drv) throw new Error(`driver ${this.opts.driverName} is not registered on node ${selectedNode} (no CSINode entry)`);
      const node = await this.k.core.readNode({ name: selectedNode });
      const segments: Record<string, string> = {};
      for (const key of drv.topologyKeys ?? []) {
        const v = node.metadata?.labels?.[key];
        if (v !== undefined) segments[key] = v;
      }
      return { requisite: [{ segments }], preferred: [{ segments }] };
    }
    const terms = (sc.allowedTopologies ?? []).flatMap((t) =>
      (t.matchLabelExpressions ?? []).flatMap((e) => (e.values ?? []).map((v) => ({ segments: { [e.key]: v } }))),
    );
    return terms.length ? { requisite: terms, preferred: terms } : null;
  }

  private async provision(pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass, pvName: string, selectedNode: string | undefined): Promise<void> {
    const [namespace, name] = [pvc.metadata!.namespace!, pvc.metadata!.name!];
    // Before any volume can exist: the claim must not disappear without us seeing it.
    if (!(pvc.metadata?.finalizers ?? []).includes(CLAIM_FINALIZER)) {
      await this.k.core.patchNamespacedPersistentVolumeClaim(
        { name, namespace, body: { metadata: { finalizers: [...(pvc.metadata?.finalizers ?? []), CLAIM_FINALIZER], resourceVersion: pvc.metadata?.resourceVersion } } },
        mergePatch,
      );
    }
    const { req, fsType, block } = await this.createRequest(pvc, sc, pvName, selectedNode);
    const started = Date.now();
    const res = await this.csi.Controller.CreateVolume(req, this.opts.timeoutMs);
    const vol = res.volume;
    this.opts.log.info({ pvc: `${namespace}/${name}`, volumeId: vol.volume_id, ms: Date.now() - started }, 'volume created');

    const pv: k8s.V1PersistentVolume = {
      apiVersion: 'v1',
      kind: 'PersistentVolume',
      metadata: {
        name: pvName,
        annotations: { [ANN_PROVISIONED_BY]: this.opts.driverName, ...(selectedNode ? { [ANN_SELECTED_NODE]: selectedNode } : {}) },
        finalizers: [PV_FINALIZER],
      },
      spec: {
        capacity: { storage: bytesToQuantity(BigInt(vol.capacity_bytes)) },
        accessModes: pvc.spec?.accessModes,
        volumeMode: block ? 'Block' : 'Filesystem',
        persistentVolumeReclaimPolicy: sc.reclaimPolicy ?? 'Delete',
        storageClassName: sc.metadata?.name,
        mountOptions: sc.mountOptions,
        claimRef: { apiVersion: 'v1', kind: 'PersistentVolumeClaim', namespace, name, uid: pvc.metadata?.uid, resourceVersion: pvc.metadata?.resourceVersion },
        csi: { driver: this.opts.driverName, volumeHandle: vol.volume_id, fsType: block ? undefined : fsType || undefined, volumeAttributes: vol.volume_context },
        nodeAffinity: nodeAffinity(vol.accessible_topology ?? []),
      },
    };
    try {
      await this.k.core.createPersistentVolume({ body: pv });
    } catch (err) {
      if (httpStatus(err) !== 409) throw err;
    }
    await this.recorder.event(pvc, 'Normal', 'ProvisioningSucceeded', `Successfully provisioned volume ${pvName} (${vol.volume_id})`);
  }

  /** The claim was deleted before its PV existed: delete the volume its CreateVolume may have made. */
  private async deleteOrphan(pvc: k8s.V1PersistentVolumeClaim): Promise<void> {
    const sc = await this.storageClass(pvc.spec?.storageClassName);
    if (!sc) return;
    const pvName = `pvc-${pvc.metadata!.uid}`;
    // CreateVolume is idempotent: asking again returns the volume if the first call made one.
    let volumeId: string | undefined;
    try {
      const { req } = await this.createRequest(pvc, sc, pvName, pvc.metadata?.annotations?.[ANN_SELECTED_NODE]);
      volumeId = (await this.csi.Controller.CreateVolume(req, this.opts.timeoutMs)).volume.volume_id;
    } catch (err) {
      this.opts.log.warn({ pvc: pvName, err: describe(err) }, 'could not look up the volume of a deleted claim');
      if (codeName(err) === 'INVALID_ARGUMENT') return;
      throw err;
    }
    await this.csi.Controller.DeleteVolume({ volume_id: volumeId }, this.opts.timeoutMs);
    this.opts.log.info({ pvc: `${pvc.metadata?.namespace}/${pvc.metadata?.name}`, volumeId }, 'deleted the volume of a claim deleted during provisioning');
  }

  private async removeClaimFinalizer(namespace: string, name: string, pvc: k8s.V1PersistentVolumeClaim): Promise<void> {
    const finalizers = (pvc.metadata?.finalizers ?? []).filter((f) => f !== CLAIM_FINALIZER);
    try {
      await this.k.core.patchNamespacedPersistentVolumeClaim({ name, namespace, body: { metadata: { finalizers, resourceVersion: pvc.metadata?.resourceVersion } } }, mergePatch);
    } catch (err) {
      if (httpStatus(err) !== 404) throw err;
    }
  }

  /** Released PVs of ours: reclaim Delete -> DeleteVolume, then the PV goes; Retain keeps the volume. */
  private async syncVolume(key: string): Promise<void> {
    const pv = this.volumes.get(key);
    if (!pv?.spec?.csi || pv.spec.csi.driver !== this.opts.driverName) return;
    if (pv.metadata?.annotations?.[ANN_PROVISIONED_BY] !== this.opts.driverName) return;
    if (this.opts.nodeName && !affinityNames(pv, this.opts.nodeName)) return;
    const finalizers = pv.metadata?.finalizers ?? [];
    const policy = pv.spec.persistentVolumeReclaimPolicy ?? 'Delete';
    const released = pv.status?.phase === 'Released' || pv.status?.phase === 'Failed';
    if (policy === 'Delete' && (released || pv.metadata?.deletionTimestamp)) {
      if (pv.metadata?.deletionTimestamp && !finalizers.includes(PV_FINALIZER)) return;
      await this.csi.Controller.DeleteVolume({ volume_id: pv.spec.csi.volumeHandle }, this.opts.timeoutMs);
      this.opts.log.info({ pv: key, volumeId: pv.spec.csi.volumeHandle }, 'volume deleted');
      await this.k.core
        .patchPersistentVolume({ name: key, body: { metadata: { finalizers: finalizers.filter((f) => f !== PV_FINALIZER) } } }, mergePatch)
        .catch((err) => {
          if (httpStatus(err) !== 404) throw err;
        });
      await this.k.core.deletePersistentVolume({ name: key }).catch((err) => {
        if (httpStatus(err) !== 404) throw err;
      });
    } else if (pv.metadata?.deletionTimestamp && finalizers.includes(PV_FINALIZER)) {
      // Retain: the admin deletes the PV object; the volume stays.
      await this.k.core.patchPersistentVolume({ name: key, body: { metadata: { finalizers: finalizers.filter((f) => f !== PV_FINALIZER) } } }, mergePatch);
    }
  }
}

export function nodeAffinity(topologies: Array<{ segments: Record<string, string> }>): k8s.V1VolumeNodeAffinity | undefined {
  const terms = topologies
    .filter((t) => Object.keys(t.segments ?? {}).length)
    .map((t) => ({ matchExpressions: Object.entries(t.segments).map(([key, v]) => ({ key, operator: 'In', values: [v] })) }));
  return terms.length ? { required: { nodeSelectorTerms: terms } } : undefined;
}

/** Whether a PV's node affinity lets it be used on `node` (no affinity: any node). */
export function affinityNames(pv: k8s.V1PersistentVolume, node: string): boolean {
  const terms = pv.spec?.nodeAffinity?.required?.nodeSelectorTerms;
  if (!terms?.length) return true;
  return terms.some((t) => (t.matchExpressions ?? []).some((e) => e.values?.includes(node)));
}

function describe(err: unknown): string {
  const code = codeName(err);
  const details = (err as { details?: string })?.details;
  if (code) return `rpc error: code = ${code} desc = ${details ?? ''}`;
  return err instanceof Error ? err.message : String(err);
}
