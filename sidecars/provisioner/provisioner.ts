// The provisioner: PersistentVolumeClaims of our StorageClasses become CSI volumes and
// PersistentVolumes bound to them; released PVs with reclaim Delete have their volume
// deleted. It uses external-provisioner's annotations and finalizers, so a cluster can
// switch between the two.
import { CsiClient, codeName, rpcErrorText } from '../common/csi-client.js';
import type { CommonControllerOptions } from '../common/run.js';
import { ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER, ANN_SELECTED_NODE, ANN_PROVISIONED_BY, PV_FINALIZER } from '../common/annotations.js';
import { ANN_MODIFY_SECRET_NAME, ANN_MODIFY_SECRET_NAMESPACE } from '../common/annotations.js';
import { volumeCapabilities } from '../common/capability.js';
import { k8s, type Clients, Watch, mergePatch, httpStatus } from '../common/kube.js';
import { WorkQueue } from '../common/workqueue.js';
import { SNAPSHOT_GROUP, snapshotIdOfSource } from '../common/snapshots.js';
import { parseSize, formatSize } from '../../lib/size.js';
import { cloneSourceProblem, crossNamespaceProblem } from './clone.js';
import { NodeOffer, nodeTopology } from './immediate.js';
import { Recorder } from '../common/events.js';
import { mayReschedule, sendBackToScheduler } from './reschedule.js';
import { UnservedClaims } from './unserved.js';
import { servesClass, servesVolume, backendOfClass, candidateBackends, derivedVolumeId } from '../common/scope.js';
import {
  driverParameters,
  secretRef,
  readSecret,
  FSTYPE_KEY,
  ANN_DELETION_SECRET_NAME,
  ANN_DELETION_SECRET_NAMESPACE,
  type SecretRef,
  type ClaimInfo,
} from '../common/secrets.js';

/**
 * Held on a claim while its volume may exist without a PV: the claim cannot vanish until we
 * know. One per backend (csi.tscsi.dev/provisioning-<backend>), so the clean-up knows where
 * to look when the StorageClass is gone and the central and per-node provisioners never
 * take each other's; the bare name is what earlier versions set.
 */
export const CLAIM_FINALIZER = 'csi.tscsi.dev/provisioning';
export const claimFinalizer = (backend: string) => `${CLAIM_FINALIZER}-${backend}`;

/** What the provisioner does with one of its PVs. */
export type VolumeAction = 'delete' | 'drop-finalizer' | 'none';

/**
 * As Kubernetes' provisioner library decides: the volume is deleted only when its PV is
 * Released with reclaim Delete. A PV deleted by hand while Bound keeps its deletion
 * timestamp until pv-protection lets go (its claim is gone): its data must survive that
 * wait (a StatefulSet scaled to zero comes back to it). A PV with another reclaim policy
 * loses our finalizer when it is deleted; its volume stays.
 */
export function volumeAction(pv: k8s.V1PersistentVolume, driverName: string): VolumeAction {
  if (pv.metadata?.annotations?.[ANN_PROVISIONED_BY] !== driverName) return 'none';
  const ours = (pv.metadata?.finalizers ?? []).includes(PV_FINALIZER);
  const policy = pv.spec?.persistentVolumeReclaimPolicy ?? 'Delete';
  if (pv.metadata?.deletionTimestamp && !ours) return 'none'; // deleted already, only pv-protection left
  if (policy === 'Delete') return pv.status?.phase === 'Released' ? 'delete' : 'none';
  return pv.metadata?.deletionTimestamp ? 'drop-finalizer' : 'none';
}

const claimInfo = (pvc: k8s.V1PersistentVolumeClaim, withAnnotations: boolean): ClaimInfo => ({
  name: pvc.metadata!.name!,
  namespace: pvc.metadata!.namespace!,
  ...(withAnnotations ? { annotations: pvc.metadata?.annotations ?? {} } : {}),
});

export class Provisioner {
  private readonly queue: WorkQueue;
  private readonly pvQueue: WorkQueue;
  private claims!: Watch<k8s.V1PersistentVolumeClaim>;
  private volumes!: Watch<k8s.V1PersistentVolume>;
  private attachments!: Watch<k8s.V1VolumeAttachment>;
  /** Our driver's VolumeAttachments by name, with the PV each attaches: a deleted one's PV is still known. */
  private readonly attachedPv = new Map<string, string>();
  private readonly recorder: Recorder;
  /** Per-node provisioners only: taking Immediate claims for this node. */
  private readonly offer?: NodeOffer;
  /** Claims whose class names a backend no provisioner has, told so. */
  private readonly unserved: UnservedClaims;

  /** VolumeSnapshots and their contents, for claims restored from a snapshot. */
  private readonly custom: k8s.CustomObjectsApi;

  constructor(
    private readonly k: Clients,
    private readonly csi: CsiClient,
    private readonly opts: CommonControllerOptions,
    /** Told when volumes were made or deleted, or a create failed (capacity tracking refreshes). */
    private readonly volumesChanged: () => void = () => {},
  ) {
    this.queue = new WorkQueue((key) => this.syncClaim(key), { workers: opts.workers }, opts.log);
    this.pvQueue = new WorkQueue((key) => this.syncVolume(key), { workers: opts.workers }, opts.log);
    this.recorder = new Recorder(k.core, `${opts.driverName}-provisioner`, opts.log);
    this.custom = k.kc.makeApiClient(k8s.CustomObjectsApi);
    if (opts.nodeName) this.offer = new NodeOffer(k, csi, { ...opts, nodeName: opts.nodeName }, this.recorder);
    this.unserved = new UnservedClaims(opts, this.recorder);
  }

  async start(): Promise<void> {
    this.claims = new Watch(this.k.kc, '/api/v1/persistentvolumeclaims', () => this.k.core.listPersistentVolumeClaimForAllNamespaces(), (key) => this.queue.add(key), this.opts.log);
    this.volumes = new Watch(this.k.kc, '/api/v1/persistentvolumes', () => this.k.core.listPersistentVolume(), (key) => this.pvQueue.add(key), this.opts.log);
    this.attachments = new Watch(this.k.kc, '/apis/storage.k8s.io/v1/volumeattachments', () => this.k.storage.listVolumeAttachment(), (key, va) => this.attachmentChanged(key, va), this.opts.log);
    await this.claims.start();
    await this.volumes.start();
    await this.attachments.start();
    this.opts.log.info({ driver: this.opts.driverName, node: this.opts.nodeName, backends: this.opts.backends ? [...this.opts.backends] : 'all' }, 'provisioner started');
  }

  async stop(): Promise<void> {
    this.queue.stop();
    this.pvQueue.stop();
    await this.claims?.stop();
    await this.volumes?.stop();
    await this.attachments?.stop();
  }

  private forgetClaim(key: string): void {
    this.offer?.forget(key);
    this.unserved.forget(key);
  }

  /** Volumes made or deleted, or a create failed: capacity tracking refreshes, and this node's "too little room" verdicts are looked at again. */
  private changedVolumes(): void {
    this.offer?.verdicts.capacityChanged();
    this.volumesChanged();
  }

  /** A PV waiting for its attachments to go is looked at again when one of them changes or goes. */
  private attachmentChanged(name: string, va: k8s.V1VolumeAttachment | undefined): void {
    const pv = va?.spec?.attacher === this.opts.driverName ? va.spec.source?.persistentVolumeName : undefined;
    const before = this.attachedPv.get(name);
    if (pv) this.attachedPv.set(name, pv);
    else this.attachedPv.delete(name);
    for (const p of new Set([before, pv])) if (p) this.pvQueue.add(p);
  }

  /** The VolumeAttachments (as the cache has them) that still attach PV `pvName` somewhere. */
  private attachmentsOf(pvName: string): string[] {
    return [...this.attachedPv].filter(([, pv]) => pv === pvName).map(([va]) => va);
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

  /** The PV from the API server itself: the watch cache may not have seen it yet. */
  private async readVolume(name: string): Promise<k8s.V1PersistentVolume | undefined> {
    try {
      return await this.k.core.readPersistentVolume({ name });
    } catch (err) {
      if (httpStatus(err) === 404) return undefined;
      throw err;
    }
  }

  /**
   * Our provisioning finalizers on a claim, with the backends they stand for (the bare
   * legacy name: the class's backend, or every backend served when the class is gone).
   * Another provisioner's (another backend, another node) are not ours to touch.
   */
  private async ownFinalizers(pvc: k8s.V1PersistentVolumeClaim): Promise<Array<{ finalizer: string; backends: string[] }>> {
    if (this.opts.nodeName && pvc.metadata?.annotations?.[ANN_SELECTED_NODE] !== this.opts.nodeName) return [];
    const out: Array<{ finalizer: string; backends: string[] }> = [];
    for (const f of pvc.metadata?.finalizers ?? []) {
      if (f === CLAIM_FINALIZER) {
        const sc = await this.storageClass(pvc.spec?.storageClassName);
        const backends = candidateBackends(this.opts, sc?.provisioner === this.opts.driverName ? sc : undefined);
        if (backends.length) out.push({ finalizer: f, backends });
      } else if (f.startsWith(`${CLAIM_FINALIZER}-`)) {
        const backend = f.slice(CLAIM_FINALIZER.length + 1);
        if (!this.opts.backends || this.opts.backends.has(backend)) out.push({ finalizer: f, backends: [backend] });
      }
    }
    return out;
  }

  private async syncClaim(key: string): Promise<void> {
    const pvc = this.claims.get(key);
    // Gone (the watch's delete queued this last sync): what was kept about the claim goes.
    // Here rather than in the watch handler, so a sync still running for it cannot put it back.
    if (!pvc?.metadata?.uid) return this.forgetClaim(key);
    const [namespace, name] = key.split('/');

    if (pvc.metadata.deletionTimestamp || pvc.spec?.volumeName) this.forgetClaim(key);
    if (pvc.metadata.deletionTimestamp) {
      // The claim is going away. If it holds our finalizer, a volume may exist for it
      // without a PV (the claim was deleted while CreateVolume ran): that volume goes first.
      for (const { finalizer, backends } of await this.ownFinalizers(pvc)) {
        await this.cleanUpClaim(pvc, backends);
        await this.removeClaimFinalizer(namespace, name, pvc, finalizer);
      }
      return;
    }
    if (pvc.spec?.volumeName || pvc.status?.phase === 'Bound') {
      if (pvc.spec?.volumeName && this.volumes.get(pvc.spec.volumeName)) {
        for (const { finalizer } of await this.ownFinalizers(pvc)) await this.removeClaimFinalizer(namespace, name, pvc, finalizer);
      }
      return;
    }
    if (!this.ours(pvc)) return;
    const sc = await this.storageClass(pvc.spec?.storageClassName);
    if (!sc) return;
    if (!servesClass(this.opts, sc)) return this.unserved.check(key, pvc, sc);
    const selectedNode = pvc.metadata.annotations?.[ANN_SELECTED_NODE];
    if (sc.volumeBindingMode === 'WaitForFirstConsumer' && !selectedNode) return; // the scheduler has not picked a node yet
    if (this.offer && !selectedNode) return this.offer.offer(pvc, sc); // Immediate on a node-local backend: a node takes it
    if (this.opts.nodeName && selectedNode !== this.opts.nodeName) return; // another node's provisioner takes it
    const pvName = `pvc-${pvc.metadata.uid}`;
    if (this.volumes.get(pvName)) return; // provisioned; the PV controller binds it

    try {
      await this.provision(pvc, sc, pvName, selectedNode);
      this.changedVolumes();
    } catch (err) {
      this.changedVolumes();
      if (httpStatus(err) === 409) throw err; // the claim changed under us: a retry, not a failure to show
      // An Immediate claim this node took goes back for another node; this one stands aside for a while.
      const immediate = !!this.offer?.took(pvc, sc);
      if (mayReschedule(err, selectedNode) && immediate) this.offer!.standAside(pvc);
      if (mayReschedule(err, selectedNode)) return sendBackToScheduler(this.k.core, this.recorder, pvc, selectedNode, claimFinalizer(backendOfClass(this.opts, sc)), sc.metadata?.name, err, immediate);
      await this.recorder.event(pvc, 'Warning', 'ProvisioningFailed', `failed to provision volume with StorageClass "${sc.metadata?.name}": ${rpcErrorText(err)}`);
      throw err;
    }
  }

  private async createRequest(pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass, pvName: string, selectedNode: string | undefined) {
    const params = driverParameters(sc.parameters);
    const fsType = sc.parameters?.[FSTYPE_KEY] ?? '';
    const block = pvc.spec?.volumeMode === 'Block';
    const storage = pvc.spec?.resources?.requests?.storage;
    if (!storage) throw new Error('the claim requests no storage size');
    // Every reference is resolved before any volume exists: a bad template fails the claim, not a later attach.
    const provisionerSecret = secretRef('provisioner', sc.parameters, pvName, claimInfo(pvc, false));
    const refs = {
      controllerPublishSecretRef: secretRef('controller-publish', sc.parameters, pvName, claimInfo(pvc, true)),
      nodeStageSecretRef: secretRef('node-stage', sc.parameters, pvName, claimInfo(pvc, true)),
      nodePublishSecretRef: secretRef('node-publish', sc.parameters, pvName, claimInfo(pvc, true)),
      controllerExpandSecretRef: secretRef('controller-expand', sc.parameters, pvName, claimInfo(pvc, true)),
      nodeExpandSecretRef: secretRef('node-expand', sc.parameters, pvName, claimInfo(pvc, true)),
    };
    // no field on the PV for it: external-provisioner's annotations, which the resizer reads
    const modifySecret = secretRef('controller-modify', sc.parameters, pvName, claimInfo(pvc, true));
    const req: Record<string, unknown> = {
      name: pvName,
      capacity_range: { required_bytes: parseSize(String(storage)).toString() },
      volume_capabilities: volumeCapabilities(pvc.spec?.accessModes ?? ['ReadWriteOnce'], block, fsType, sc.mountOptions ?? []),
      parameters: params,
      secrets: await readSecret(this.k.core, provisionerSecret),
      accessibility_requirements: await this.topology(sc, selectedNode),
    };
    const vacName = pvc.spec?.volumeAttributesClassName;
    if (vacName) req.mutable_parameters = await this.classMutableParameters(vacName);
    const ds = pvc.spec?.dataSourceRef ?? pvc.spec?.dataSource;
    if (ds) req.volume_content_source = await this.contentSource(pvc, sc, ds, parseSize(String(storage)));
    return { req, fsType, block, provisionerSecret, refs, modifySecret };
  }

  /** A VolumeAttributesClass's parameters, the volume's mutable parameters from the start (as external-provisioner). */
  private async classMutableParameters(name: string): Promise<Record<string, string>> {
    const vac = await this.k.storage.readVolumeAttributesClass({ name }).catch((err: unknown) => {
      // not the API client's error itself: it carries the whole HTTP exchange
      throw new Error(httpStatus(err) === 404 ? `VolumeAttributesClass ${name} not found` : `cannot read VolumeAttributesClass ${name}: ${httpStatus(err) ?? String(err)}`);
    });
    if (vac.driverName !== this.opts.driverName) throw new Error(`VolumeAttributesClass ${name} is for driver ${vac.driverName}, not ${this.opts.driverName}`);
    return vac.parameters ?? {};
  }

  /** The CreateVolume content source of a claim's data source: a VolumeSnapshot (restore) or a claim (clone), each checked first. */
  private async contentSource(pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass, ds: k8s.V1TypedLocalObjectReference | k8s.V1TypedObjectReference, requestedBytes: bigint) {
    const isSnapshot = ds.kind === 'VolumeSnapshot' && ds.apiGroup === SNAPSHOT_GROUP;
    if (!isSnapshot && (ds.kind !== 'PersistentVolumeClaim' || (ds.apiGroup ?? '') !== '')) throw new Error(`data source ${ds.kind} is not supported`);
    const crossNamespace = crossNamespaceProblem(pvc, ds);
    if (crossNamespace) throw new Error(crossNamespace);
    const namespace = pvc.metadata!.namespace!;
    if (isSnapshot) return { snapshot: { snapshot_id: await snapshotIdOfSource(this.custom, this.opts.driverName, { namespace, name: ds.name, requestedBytes }) } };
    let src: k8s.V1PersistentVolumeClaim;
    try {
      src = await this.k.core.readNamespacedPersistentVolumeClaim({ name: ds.name, namespace });
    } catch (err) {
      // eslint-disable-next-line preserve-caught-error -- the API client's error carries the whole HTTP exchange
      throw new Error(httpStatus(err) === 404 ? `source claim ${namespace}/${ds.name} not found` : `cannot read source claim ${namespace}/${ds.name}: ${httpStatus(err) ?? (err as Error).message}`);
    }
    const srcPv = src.spec?.volumeName ? await this.readVolume(src.spec.volumeName) : undefined;
    const problem = cloneSourceProblem({ claim: pvc, backend: backendOfClass(this.opts, sc), driverName: this.opts.driverName }, src, srcPv);
    if (problem) throw new Error(problem);
    return { volume: { volume_id: srcPv!.spec!.csi!.volumeHandle } };
  }

  /** Requisite/preferred topology: the selected node's segment, or the StorageClass's allowedTopologies. */
  private async topology(sc: k8s.V1StorageClass, selectedNode: string | undefined) {
    if (selectedNode) {
      const { segments } = await nodeTopology(this.k, this.opts.driverName, selectedNode);
      return { requisite: [{ segments }], preferred: [{ segments }] };
    }
    const terms = (sc.allowedTopologies ?? []).flatMap((t) =>
      (t.matchLabelExpressions ?? []).flatMap((e) => (e.values ?? []).map((v) => ({ segments: { [e.key]: v } }))),
    );
    return terms.length ? { requisite: terms, preferred: terms } : null;
  }

  private async provision(pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass, pvName: string, selectedNode: string | undefined): Promise<void> {
    const [namespace, name] = [pvc.metadata!.namespace!, pvc.metadata!.name!];
    const { req, fsType, block, provisionerSecret, refs, modifySecret } = await this.createRequest(pvc, sc, pvName, selectedNode);
    // Before any volume can exist: the claim must not disappear without us seeing it.
    const finalizer = claimFinalizer(backendOfClass(this.opts, sc));
    if (!(pvc.metadata?.finalizers ?? []).includes(finalizer)) {
      await this.k.core.patchNamespacedPersistentVolumeClaim(
        { name, namespace, body: { metadata: { finalizers: [...(pvc.metadata?.finalizers ?? []), finalizer], resourceVersion: pvc.metadata?.resourceVersion } } },
        mergePatch,
      );
    }
    const started = Date.now();
    const res = await this.csi.Controller.CreateVolume(req, this.opts.timeoutMs);
    const vol = res.volume;
    this.opts.log.info({ pvc: `${namespace}/${name}`, volumeId: vol.volume_id, ms: Date.now() - started }, 'volume created');

    const csiRefs = Object.fromEntries(Object.entries(refs).filter(([, r]) => r)) as Record<string, SecretRef>;
    const pv: k8s.V1PersistentVolume = {
      apiVersion: 'v1',
      kind: 'PersistentVolume',
      metadata: {
        name: pvName,
        annotations: {
          [ANN_PROVISIONED_BY]: this.opts.driverName,
          ...(selectedNode ? { [ANN_SELECTED_NODE]: selectedNode } : {}),
          ...(provisionerSecret ? { [ANN_DELETION_SECRET_NAME]: provisionerSecret.name, [ANN_DELETION_SECRET_NAMESPACE]: provisionerSecret.namespace } : {}),
          ...(modifySecret ? { [ANN_MODIFY_SECRET_NAME]: modifySecret.name, [ANN_MODIFY_SECRET_NAMESPACE]: modifySecret.namespace } : {}),
        },
        finalizers: [PV_FINALIZER],
      },
      spec: {
        capacity: { storage: formatSize(BigInt(vol.capacity_bytes)) },
        accessModes: pvc.spec?.accessModes,
        volumeMode: block ? 'Block' : 'Filesystem',
        persistentVolumeReclaimPolicy: sc.reclaimPolicy ?? 'Delete',
        storageClassName: sc.metadata?.name,
        mountOptions: sc.mountOptions,
        claimRef: { apiVersion: 'v1', kind: 'PersistentVolumeClaim', namespace, name, uid: pvc.metadata?.uid, resourceVersion: pvc.metadata?.resourceVersion },
        csi: { driver: this.opts.driverName, volumeHandle: vol.volume_id, fsType: block ? undefined : fsType || undefined, volumeAttributes: vol.volume_context, ...csiRefs },
        nodeAffinity: nodeAffinity(vol.accessible_topology ?? []),
        volumeAttributesClassName: pvc.spec?.volumeAttributesClassName || undefined,
      },
    };
    try {
      await this.k.core.createPersistentVolume({ body: pv });
    } catch (err) {
      if (httpStatus(err) !== 409) throw err;
    }
    await this.recorder.event(pvc, 'Normal', 'ProvisioningSucceeded', `Successfully provisioned volume ${pvName} (${vol.volume_id})`);
  }

  /**
   * The claim was deleted while its volume was being provisioned. If its PV exists (asked
   * of the API server, not the cache), the PV holds the volume and its reclaim policy
   * decides. Otherwise the volume, if any, has the ID the driver derives from the PV name:
   * DeleteVolume it (OK when absent; ABORTED while a CreateVolume for it still runs) and
   * see the driver no longer has it. Never CreateVolume: that would make the volume.
   * Throws, and so keeps the claim's finalizer, until the volume is proven gone.
   */
  private async cleanUpClaim(pvc: k8s.V1PersistentVolumeClaim, backends: string[]): Promise<void> {
    const pvName = `pvc-${pvc.metadata!.uid}`;
    const claim = `${pvc.metadata?.namespace}/${pvc.metadata?.name}`;
    if (await this.readVolume(pvName)) return;
    const sc = await this.storageClass(pvc.spec?.storageClassName);
    const secrets = sc?.provisioner === this.opts.driverName ? await readSecret(this.k.core, secretRef('provisioner', sc.parameters, pvName, claimInfo(pvc, false))) : {};
    for (const backend of backends) {
      const volumeId = derivedVolumeId(backend, pvName);
      const found = await this.volumeExists(volumeId).catch(() => undefined);
      try {
        await this.csi.Controller.DeleteVolume({ volume_id: volumeId, secrets }, this.opts.timeoutMs);
        if (await this.volumeExists(volumeId)) throw new Error(`volume ${volumeId} is still there after DeleteVolume`);
      } catch (err) {
        await this.recorder.event(pvc, 'Warning', 'VolumeDeleteFailed', `cannot delete volume ${volumeId} of the claim deleted while it was provisioned (the claim stays until it is gone): ${rpcErrorText(err)}`);
        throw err;
      }
      if (found !== false) this.opts.log.info({ pvc: claim, volumeId, found }, 'deleted the volume of a claim deleted during provisioning');
    }
  }

  /** Whether the driver has the volume: ControllerGetVolume, or a full ListVolumes where that is not implemented. */
  private async volumeExists(volumeId: string): Promise<boolean> {
    try {
      await this.csi.Controller.ControllerGetVolume({ volume_id: volumeId }, this.opts.timeoutMs);
      return true;
    } catch (err) {
      if (codeName(err) === 'NOT_FOUND') return false;
      if (codeName(err) !== 'UNIMPLEMENTED') throw err;
    }
    let token = '';
    do {
      const page = await this.csi.Controller.ListVolumes({ starting_token: token }, this.opts.timeoutMs);
      if ((page.entries ?? []).some((e: { volume?: { volume_id?: string } }) => e.volume?.volume_id === volumeId)) return true;
      token = page.next_token ?? '';
    } while (token);
    return false;
  }

  private async removeClaimFinalizer(namespace: string, name: string, pvc: k8s.V1PersistentVolumeClaim, finalizer: string): Promise<void> {
    const current = pvc.metadata?.finalizers ?? [];
    if (!current.includes(finalizer)) return;
    try {
      await this.k.core.patchNamespacedPersistentVolumeClaim(
        { name, namespace, body: { metadata: { finalizers: current.filter((f) => f !== finalizer), resourceVersion: pvc.metadata?.resourceVersion } } },
        mergePatch,
      );
    } catch (err) {
      if (httpStatus(err) !== 404) throw err;
    }
  }

  /** The provisioner secret DeleteVolume needs: kept on the PV, else from its StorageClass. */
  private async deletionSecrets(pv: k8s.V1PersistentVolume): Promise<Record<string, string>> {
    const a = pv.metadata?.annotations ?? {};
    if (a[ANN_DELETION_SECRET_NAME] && a[ANN_DELETION_SECRET_NAMESPACE]) return readSecret(this.k.core, { name: a[ANN_DELETION_SECRET_NAME], namespace: a[ANN_DELETION_SECRET_NAMESPACE] });
    const sc = await this.storageClass(pv.spec?.storageClassName);
    if (sc?.provisioner !== this.opts.driverName) return {};
    const ref = pv.spec?.claimRef;
    return readSecret(this.k.core, secretRef('provisioner', sc.parameters, pv.metadata!.name!, ref?.name && ref.namespace ? { name: ref.name, namespace: ref.namespace } : undefined));
  }

  /** Our PVs: Released with reclaim Delete -> DeleteVolume, then the PV goes; Retain keeps the volume. */
  private async syncVolume(key: string): Promise<void> {
    const cached = this.volumes.get(key);
    if (!cached || !servesVolume(this.opts, cached) || volumeAction(cached, this.opts.driverName) === 'none') return;
    // Deleting data on the word of a cache that may lag: ask the API server first.
    const pv = await this.readVolume(key);
    if (!pv || !servesVolume(this.opts, pv)) return;
    const action = volumeAction(pv, this.opts.driverName);
    const finalizers = pv.metadata?.finalizers ?? [];
    if (action === 'delete') {
      // While attached (a pod's volume still being detached) the driver refuses DeleteVolume
      // with FAILED_PRECONDITION: wait for the attachments to go instead of retrying into
      // that. Their deletion queues this PV again; a stale cache here costs one refused call.
      const attached = this.attachmentsOf(key);
      if (attached.length) {
        this.opts.log.info({ pv: key, volumeAttachments: attached }, 'waiting for the volume to be detached before DeleteVolume');
        return;
      }
      await this.csi.Controller.DeleteVolume({ volume_id: pv.spec!.csi!.volumeHandle, secrets: await this.deletionSecrets(pv) }, this.opts.timeoutMs);
      this.opts.log.info({ pv: key, volumeId: pv.spec!.csi!.volumeHandle }, 'volume deleted');
      this.changedVolumes();
      await this.k.core
        .patchPersistentVolume({ name: key, body: { metadata: { finalizers: finalizers.filter((f) => f !== PV_FINALIZER) } } }, mergePatch)
        .catch((err) => {
          if (httpStatus(err) !== 404) throw err;
        });
      await this.k.core.deletePersistentVolume({ name: key }).catch((err) => {
        if (httpStatus(err) !== 404) throw err;
      });
    } else if (action === 'drop-finalizer') {
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

