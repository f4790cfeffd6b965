// Storage capacity tracking, as external-provisioner's --enable-capacity does it: one
// CSIStorageCapacity (storage.k8s.io/v1) per topology segment and StorageClass of our
// driver, from GetCapacity, so the scheduler places a pod whose claim waits for its first
// consumer only on a node whose storage can hold it. The objects carry external-provisioner's
// labels (drivername, managed-by) and owner (the provisioner's DaemonSet or Deployment), so a
// cluster can switch between the two and the garbage collector removes them with the
// provisioner. A per-node provisioner publishes only its own node's segment (from
// NodeGetInfo); a central one every segment of the nodes where the driver is registered.
import { createHash } from 'node:crypto';
import type { CsiClient } from '../common/csi-client.js';
import type { CommonControllerOptions } from '../common/run.js';
import { k8s, type Clients, Watch, mergePatch, httpStatus } from '../common/kube.js';
import { servesClass } from '../common/scope.js';
import { driverParameters } from '../common/secrets.js';
import { formatSize } from '../../lib/size.js';

export const DRIVER_NAME_LABEL = 'csi.storage.k8s.io/drivername';
export const MANAGED_BY_LABEL = 'csi.storage.k8s.io/managed-by';
/** external-provisioner's managed-by value for a central deployment. */
export const MANAGED_BY_CENTRAL = 'external-provisioner';
/** A label value's limit. */
const LABEL_VALUE_MAX = 63;
/** The class watch's resync: rare (a missed class event), the poll refreshes everything anyway. */
const CLASS_RESYNC_MS = 30 * 60_000;

export type Segment = Record<string, string>;

/** One object the tracker keeps: a StorageClass in a topology segment. */
export interface CapacityItem {
  storageClassName: string;
  segment: Segment;
  /** The class's parameters as GetCapacity gets them (the CO's csi.storage.k8s.io/ keys left out, as for CreateVolume). */
  parameters: Record<string, string>;
}

/** What GetCapacity answered for an item, in bytes. */
export interface CapacityAnswer {
  capacity: bigint;
  maximumVolumeSize?: bigint;
}

/**
 * The managed-by label of a provisioner: external-provisioner's, with the node appended for
 * a per-node one; a node name too long for a label value is replaced by its digest.
 */
export function managedById(nodeName: string | undefined): string {
  if (!nodeName) return MANAGED_BY_CENTRAL;
  const id = `${MANAGED_BY_CENTRAL}-${nodeName}`;
  if (id.length <= LABEL_VALUE_MAX && /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(id)) return id;
  return `${MANAGED_BY_CENTRAL}-${createHash('sha256').update(nodeName).digest('hex').slice(0, 16)}`;
}

/** A segment's identity regardless of key order. */
export const segmentKey = (s: Segment) => JSON.stringify(Object.entries(s).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
const itemKey = (storageClassName: string, s: Segment) => `${storageClassName}\0${segmentKey(s)}`;

/**
 * The items wanted: every class this provisioner serves that waits for its first consumer
 * (the scheduler reads capacity only for those, so external-provisioner skips Immediate
 * classes unless asked), in every segment. A class whose parameters the CO would refuse
 * gets none: CreateVolume would fail on it anyway.
 */
export function desiredItems(classes: readonly k8s.V1StorageClass[], segments: readonly Segment[], scope: CommonControllerOptions, immediateBinding: boolean): CapacityItem[] {
  const out: CapacityItem[] = [];
  for (const sc of classes) {
    if (!servesClass(scope, sc) || !sc.metadata?.name) continue;
    if (!immediateBinding && (sc.volumeBindingMode ?? 'Immediate') === 'Immediate') continue;
    let parameters: Record<string, string>;
    try {
      parameters = driverParameters(sc.parameters);
    } catch {
      continue;
    }
    for (const segment of segments) out.push({ storageClassName: sc.metadata.name, segment, parameters });
  }
  return out;
}

/** The segment an object stands for, or undefined when its selector is not one we write (matchLabels only). */
export function segmentOfObject(c: k8s.V1CSIStorageCapacity): Segment | undefined {
  const sel = c.nodeTopology;
  if (!sel || sel.matchExpressions?.length) return undefined;
  return { ...(sel.matchLabels ?? {}) };
}

export interface CapacityPlan {
  create: Array<{ item: CapacityItem; answer: CapacityAnswer }>;
  update: Array<{ object: k8s.V1CSIStorageCapacity; answer: CapacityAnswer; addOwner: boolean }>;
  /** Objects of classes or segments that are gone, and duplicates. */
  remove: k8s.V1CSIStorageCapacity[];
}

const sameBytes = (q: string | undefined, b: bigint | undefined) => (q === undefined || b === undefined ? q === undefined && b === undefined : parseQuantityBytes(q) === b);

/** Bytes of a quantity as the API server returns it (our own writes are binary-suffixed integers). */
function parseQuantityBytes(q: string): bigint | undefined {
  const m = /^(\d+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/.exec(q);
  if (!m) return undefined;
  const mult: Record<string, bigint> = { Ki: 1n << 10n, Mi: 1n << 20n, Gi: 1n << 30n, Ti: 1n << 40n, Pi: 1n << 50n, Ei: 1n << 60n, k: 10n ** 3n, M: 10n ** 6n, G: 10n ** 9n, T: 10n ** 12n, P: 10n ** 15n, E: 10n ** 18n };
  return BigInt(m[1]!) * (m[2] ? mult[m[2]]! : 1n);
}

/**
 * What to create, update and delete so that the objects say what GetCapacity answered: one
 * object per item (the first found is kept, later ones are duplicates), each owned by
 * `owner`; items without an answer (GetCapacity failed) keep their object as it is.
 */
export function planCapacity(
  items: readonly CapacityItem[],
  answers: ReadonlyMap<CapacityItem, CapacityAnswer>,
  existing: readonly k8s.V1CSIStorageCapacity[],
  owner: k8s.V1OwnerReference | undefined,
): CapacityPlan {
  const wanted = new Map(items.map((i) => [itemKey(i.storageClassName, i.segment), i]));
  const seen = new Set<string>();
  const plan: CapacityPlan = { create: [], update: [], remove: [] };
  for (const object of existing) {
    const segment = segmentOfObject(object);
    const key = segment && itemKey(object.storageClassName, segment);
    const item = key ? wanted.get(key) : undefined;
    if (!item || seen.has(key!)) {
      plan.remove.push(object);
      continue;
    }
    seen.add(key!);
    const answer = answers.get(item);
    if (!answer) continue;
    const addOwner = !!owner && !(object.metadata?.ownerReferences ?? []).some((o) => o.controller && o.uid === owner.uid);
    if (addOwner || !sameBytes(object.capacity, answer.capacity) || !sameBytes(object.maximumVolumeSize, answer.maximumVolumeSize)) plan.update.push({ object, answer, addOwner });
  }
  for (const [key, item] of wanted) {
    const answer = answers.get(item);
    if (!seen.has(key) && answer) plan.create.push({ item, answer });
  }
  return plan;
}

/** The new object of an item (generateName as external-provisioner's). */
export function capacityObject(item: CapacityItem, answer: CapacityAnswer, labels: Record<string, string>, owner: k8s.V1OwnerReference | undefined): k8s.V1CSIStorageCapacity {
  return {
    apiVersion: 'storage.k8s.io/v1',
    kind: 'CSIStorageCapacity',
    metadata: { generateName: 'csisc-', labels, ...(owner ? { ownerReferences: [owner] } : {}) },
    storageClassName: item.storageClassName,
    nodeTopology: { matchLabels: item.segment },
    capacity: formatSize(answer.capacity),
    ...(answer.maximumVolumeSize !== undefined ? { maximumVolumeSize: formatSize(answer.maximumVolumeSize) } : {}),
  };
}

export interface CapacityOptions extends CommonControllerOptions {
  /** Where the objects live: the provisioner's own namespace. */
  namespace: string;
  /** How often every object is refreshed (--capacity-poll-interval). */
  pollMs: number;
  /** The owner of every object (--capacity-ownerref-level), or none. */
  owner?: k8s.V1OwnerReference;
  /** --capacity-for-immediate-binding: objects for Immediate classes too. */
  immediateBinding: boolean;
}

/**
 * Keeps the objects up to date: on start, every poll period, when a StorageClass changes
 * and when the provisioner says volumes changed (refresh()). One pass at a time; a refresh
 * asked for during a pass runs one more after it.
 */
export class CapacityTracker {
  private classes!: Watch<k8s.V1StorageClass>;
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private again = false;
  private stopped = false;
  private nodeSegment?: Segment;
  private readonly labels: Record<string, string>;

  constructor(
    private readonly k: Clients,
    private readonly csi: CsiClient,
    private readonly opts: CapacityOptions,
  ) {
    this.labels = { [DRIVER_NAME_LABEL]: opts.driverName, [MANAGED_BY_LABEL]: managedById(opts.nodeName) };
  }

  async start(): Promise<void> {
    if (this.opts.nodeName) {
      const info = await this.csi.Node.NodeGetInfo({}, this.opts.timeoutMs);
      this.nodeSegment = { ...(info.accessible_topology?.segments ?? {}) };
    }
    // its own resync would only repeat the poll
    this.classes = new Watch(this.k.kc, '/apis/storage.k8s.io/v1/storageclasses', () => this.k.storage.listStorageClass(), () => this.refresh(), this.opts.log, CLASS_RESYNC_MS);
    await this.classes.start();
    this.timer = setInterval(() => this.refresh(), this.opts.pollMs);
    this.opts.log.info({ namespace: this.opts.namespace, pollMs: this.opts.pollMs, owner: this.opts.owner ? `${this.opts.owner.kind}/${this.opts.owner.name}` : undefined, segment: this.nodeSegment }, 'capacity tracking started');
    this.refresh();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.classes?.stop();
    await this.running;
  }

  /** Asks for a pass soon (after a volume was created or deleted, or a class changed). */
  refresh(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.sync()
      .catch((err) => this.opts.log.warn({ err: String(err) }, 'capacity update failed; the next poll retries'))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.refresh();
        }
      });
  }

  /** The segments to publish: this node's, or those of every node where the driver is registered. */
  private async segments(): Promise<Segment[]> {
    if (this.nodeSegment) return [this.nodeSegment];
    const out = new Map<string, Segment>();
    for (const csiNode of (await this.k.storage.listCSINode()).items) {
      const drv = csiNode.spec?.drivers?.find((d) => d.name === this.opts.driverName);
      if (!drv) continue;
      const node = await this.k.core.readNode({ name: csiNode.metadata!.name! }).catch((err) => {
        if (httpStatus(err) === 404) return undefined;
        throw err;
      });
      if (!node) continue;
      const segment: Segment = {};
      for (const key of drv.topologyKeys ?? []) {
        const v = node.metadata?.labels?.[key];
        if (v !== undefined) segment[key] = v;
      }
      if (Object.keys(segment).length === (drv.topologyKeys ?? []).length) out.set(segmentKey(segment), segment);
    }
    return [...out.values()];
  }

  private async getCapacity(item: CapacityItem): Promise<CapacityAnswer | undefined> {
    try {
      // No volume capabilities, as external-provisioner: capacity is taken not to depend on them.
      const res = await this.csi.Controller.GetCapacity({ parameters: item.parameters, accessible_topology: Object.keys(item.segment).length ? { segments: item.segment } : null }, this.opts.timeoutMs);
      return { capacity: BigInt(res.available_capacity ?? '0'), maximumVolumeSize: res.maximum_volume_size ? BigInt(res.maximum_volume_size.value) : undefined };
    } catch (err) {
      this.opts.log.warn({ storageClass: item.storageClassName, segment: item.segment, err: String(err) }, 'GetCapacity failed; the object keeps its last value');
      return undefined;
    }
  }

  private async sync(): Promise<void> {
    const items = desiredItems(this.classes.list(), await this.segments(), this.opts, this.opts.immediateBinding);
    const answers = new Map<CapacityItem, CapacityAnswer>();
    for (const item of items) {
      const a = await this.getCapacity(item);
      if (a) answers.set(item, a);
    }
    const { namespace } = this.opts;
    const labelSelector = Object.entries(this.labels).map(([k, v]) => `${k}=${v}`).join(',');
    const existing = (await this.k.storage.listNamespacedCSIStorageCapacity({ namespace, labelSelector })).items;
    const plan = planCapacity(items, answers, existing, this.opts.owner);
    for (const object of plan.remove) {
      await this.k.storage.deleteNamespacedCSIStorageCapacity({ namespace, name: object.metadata!.name! }).catch((err) => {
        if (httpStatus(err) !== 404) throw err;
      });
      this.opts.log.info({ name: object.metadata?.name, storageClass: object.storageClassName }, 'capacity object removed: its class or segment is gone');
    }
    for (const { item, answer } of plan.create) {
      const made = await this.k.storage.createNamespacedCSIStorageCapacity({ namespace, body: capacityObject(item, answer, this.labels, this.opts.owner) });
      this.opts.log.info({ name: made.metadata?.name, storageClass: item.storageClassName, segment: item.segment, capacity: made.capacity }, 'capacity object created');
    }
    for (const { object, answer, addOwner } of plan.update) {
      const body = {
        metadata: { resourceVersion: object.metadata?.resourceVersion, ...(addOwner ? { ownerReferences: [...(object.metadata?.ownerReferences ?? []), this.opts.owner] } : {}) },
        capacity: formatSize(answer.capacity),
        maximumVolumeSize: answer.maximumVolumeSize !== undefined ? formatSize(answer.maximumVolumeSize) : null,
      };
      await this.k.storage.patchNamespacedCSIStorageCapacity({ namespace, name: object.metadata!.name!, body }, mergePatch);
      this.opts.log.info({ name: object.metadata?.name, storageClass: object.storageClassName, capacity: body.capacity }, 'capacity object updated');
    }
  }
}

/**
 * The object `levels` owners up from the pod `podName` (0: the pod, 1: its controller, a
 * DaemonSet or ReplicaSet; 2: a ReplicaSet's Deployment), as external-provisioner's
 * --capacity-ownerref-level finds it. The last level is taken from its child's owner
 * reference, so only the objects below it need to be readable.
 */
export async function lookUpOwner(k: Clients, namespace: string, podName: string, levels: number): Promise<k8s.V1OwnerReference> {
  const custom = k.kc.makeApiClient(k8s.CustomObjectsApi);
  let obj: k8s.KubernetesObject = await k.core.readNamespacedPod({ namespace, name: podName });
  let ref: k8s.V1OwnerReference = { apiVersion: 'v1', kind: 'Pod', name: podName, uid: obj.metadata!.uid!, controller: true };
  for (let level = 1; level <= levels; level++) {
    const owner = (obj.metadata?.ownerReferences ?? []).find((o) => o.controller);
    if (!owner) throw new Error(`${ref.kind} ${namespace}/${ref.name} has no controlling owner: --capacity-ownerref-level ${levels} is too high`);
    ref = { apiVersion: owner.apiVersion, kind: owner.kind, name: owner.name, uid: owner.uid, controller: true };
    if (level === levels) break;
    const [group, version] = owner.apiVersion.includes('/') ? owner.apiVersion.split('/') : ['', owner.apiVersion];
    if (!group) throw new Error(`cannot follow owner ${owner.kind} ${owner.name} of the core API group`);
    obj = (await custom.getNamespacedCustomObject({ group, version: version!, namespace, plural: `${owner.kind.toLowerCase()}s`, name: owner.name })) as k8s.KubernetesObject;
  }
  return ref;
}
