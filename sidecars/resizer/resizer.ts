// The resizer: a bound claim of ours asking for more than its PV has -> ControllerExpandVolume
// -> the PV's capacity; then the claim's status tells kubelet whether the node must finish
// (NodeResizePending + FileSystemResizePending) or the claim already has its new size.
// And a claim asking for another VolumeAttributesClass -> ControllerModifyVolume (modify.ts).
import { CsiClient, rpcErrorText } from '../common/csi-client.js';
import type { CommonControllerOptions } from '../common/run.js';
import { k8s, type Clients, Watch, mergePatch, httpStatus } from '../common/kube.js';
import { WorkQueue } from '../common/workqueue.js';
import { parseSize, formatSize } from '../../lib/size.js';
import { Recorder } from '../common/events.js';
import { ANN_STORAGE_PROVISIONER } from '../common/annotations.js';
import { pvVolumeCapability } from '../common/capability.js';
import { servesVolume } from '../common/scope.js';
import { readSecret } from '../common/secrets.js';
import { Modifier } from './modify.js';

/** Kubelet's turn: the controller side is done up to allocatedResources. */
const NODE_STATES = new Set(['NodeResizePending', 'NodeResizeInProgress', 'NodeResizeFailed']);

/**
 * Whether a claim may need ControllerExpandVolume, from the claim alone: every claim of every
 * driver passes through here on each resync, and only these few are worth reading a PV for.
 */
export function claimWantsExpansion(pvc: k8s.V1PersistentVolumeClaim, driverName: string): boolean {
  if (!pvc.spec?.volumeName || pvc.status?.phase !== 'Bound' || pvc.metadata?.deletionTimestamp) return false;
  const provisioner = pvc.metadata?.annotations?.[ANN_STORAGE_PROVISIONER];
  if (provisioner !== undefined && provisioner !== driverName) return false;
  const want = pvc.spec.resources?.requests?.storage;
  if (!want) return false;
  const wantBytes = parseSize(String(want));
  if (wantBytes <= parseSize(String(pvc.status?.capacity?.storage ?? '0'))) return false;
  const allocated = pvc.status?.allocatedResources?.storage;
  if (NODE_STATES.has(pvc.status?.allocatedResourceStatuses?.storage ?? '') && allocated && parseSize(String(allocated)) >= wantBytes) return false;
  return true;
}

/** ControllerExpandVolume of a PV's volume to `bytes`, with the capability its access modes make (throws for modes CSI cannot combine). */
export function expandRequest(spec: k8s.V1PersistentVolumeSpec, bytes: bigint, secrets: Record<string, string>) {
  if (!spec.csi) throw new Error('not a CSI volume');
  return { volume_id: spec.csi.volumeHandle, capacity_range: { required_bytes: bytes.toString() }, secrets, volume_capability: pvVolumeCapability(spec) };
}

export class Resizer {
  private readonly queue: WorkQueue;
  private claims!: Watch<k8s.V1PersistentVolumeClaim>;
  private readonly recorder: Recorder;
  private readonly modifier: Modifier;

  constructor(
    private readonly k: Clients,
    private readonly csi: CsiClient,
    private readonly opts: CommonControllerOptions,
  ) {
    this.queue = new WorkQueue((key) => this.sync(key), { workers: opts.workers }, opts.log);
    this.recorder = new Recorder(k.core, `${opts.driverName}-resizer`, opts.log);
    this.modifier = new Modifier(k, csi, opts, this.recorder, () => this.claims?.list() ?? [], (key) => this.queue.add(key));
  }

  async start(): Promise<void> {
    // the classes first: a claim's first sync must find the class it names
    await this.modifier.start();
    this.claims = new Watch(this.k.kc, '/api/v1/persistentvolumeclaims', () => this.k.core.listPersistentVolumeClaimForAllNamespaces(), (key) => this.queue.add(key), this.opts.log);
    await this.claims.start();
    this.opts.log.info({ driver: this.opts.driverName }, 'resizer started');
  }

  async stop(): Promise<void> {
    this.queue.stop();
    await this.modifier.stop();
    await this.claims?.stop();
  }

  private async sync(key: string): Promise<void> {
    const pvc = this.claims.get(key);
    await this.modifier.sync(key, pvc);
    await this.expand(key, pvc);
  }

  private async expand(key: string, pvc: k8s.V1PersistentVolumeClaim | undefined): Promise<void> {
    if (!pvc?.spec?.volumeName || !claimWantsExpansion(pvc, this.opts.driverName)) return;
    const want = pvc.spec.resources!.requests!.storage;
    let pv: k8s.V1PersistentVolume;
    try {
      pv = await this.k.core.readPersistentVolume({ name: pvc.spec.volumeName });
    } catch (err) {
      if (httpStatus(err) === 404) return;
      throw err;
    }
    // Another sidecar's volume (the central one's RBD, another node's): its status is not ours to write.
    if (!servesVolume(this.opts, pv) || !pv.spec?.csi) return;
    const wantBytes = parseSize(String(want));
    const haveBytes = parseSize(String(pv.spec.capacity?.storage ?? '0'));
    if (wantBytes <= haveBytes) return;
    const [namespace, name] = key.split('/');

    await this.patchClaimStatus(namespace, name, {
      allocatedResources: { storage: String(want) },
      allocatedResourceStatuses: { storage: 'ControllerResizeInProgress' },
      conditions: [{ type: 'Resizing', status: 'True', lastTransitionTime: new Date().toISOString() }],
    });
    let res;
    try {
      const req = expandRequest(pv.spec, wantBytes, await readSecret(this.k.core, pv.spec.csi.controllerExpandSecretRef));
      res = await this.csi.Controller.ControllerExpandVolume(req, this.opts.timeoutMs);
    } catch (err) {
      const msg = rpcErrorText(err);
      await this.patchClaimStatus(namespace, name, { allocatedResourceStatuses: { storage: 'ControllerResizeInfeasible' }, conditions: [] });
      await this.recorder.event(pvc, 'Warning', 'VolumeResizeFailed', msg);
      throw err;
    }
    const newBytes = BigInt(res.capacity_bytes);
    await this.k.core.patchPersistentVolume({ name: pv.metadata!.name!, body: { spec: { capacity: { storage: formatSize(newBytes) } } } }, mergePatch);
    if (res.node_expansion_required) {
      await this.patchClaimStatus(namespace, name, {
        allocatedResourceStatuses: { storage: 'NodeResizePending' },
        conditions: [{ type: 'FileSystemResizePending', status: 'True', lastTransitionTime: new Date().toISOString(), message: 'Waiting for user to (re-)start a pod to finish file system resize of volume on node.' }],
      });
    } else {
      await this.patchClaimStatus(namespace, name, { capacity: { storage: formatSize(newBytes) }, allocatedResourceStatuses: null, conditions: [] });
    }
    await this.recorder.event(pvc, 'Normal', 'VolumeResizeSuccessful', `controller resized volume ${pv.metadata?.name} to ${formatSize(newBytes)}`);
    this.opts.log.info({ pvc: key, bytes: newBytes.toString(), node: !!res.node_expansion_required }, 'volume expanded');
  }

  private async patchClaimStatus(namespace: string, name: string, status: Record<string, unknown>): Promise<void> {
    await this.k.core.patchNamespacedPersistentVolumeClaimStatus({ name, namespace, body: { status } }, mergePatch);
  }
}
