// Immediate binding for node-local backends (loop, LVM). No scheduler picks a node for such a
// claim, so the per-node provisioners do, as external-provisioner's node deployments do: each
// one whose node can hold the volume (its driver registered there, inside the class's
// allowedTopologies, capacity enough) writes its node into the claim's selected-node
// annotation with the claim's resourceVersion; the API server lets exactly one such write
// through, and from then on the claim is that node's as if the scheduler had picked it.
import { k8s, type Clients, mergePatch, httpStatus } from '../common/kube.js';
import { SNAPSHOT_GROUP, snapshotIdOfSource } from '../common/snapshots.js';
import { type CsiClient, codeName, rpcErrorText } from '../common/csi-client.js';
import type { CommonControllerOptions } from '../common/run.js';
import type { Recorder } from '../common/events.js';
import { ANN_SELECTED_NODE } from '../common/annotations.js';
import { affinityNames } from '../common/scope.js';
import { volumeCapabilities } from '../common/capability.js';
import { driverParameters, FSTYPE_KEY } from '../common/secrets.js';
import { parseSize } from '../../lib/size.js';

/**
 * Why a node's labels fall outside the class's allowedTopologies (terms are ORed, the
 * expressions of one term ANDed, each "label In values"), or undefined when inside (or none).
 */
export function topologyProblem(sc: k8s.V1StorageClass, node: string, labels: Record<string, string>): string | undefined {
  const terms = sc.allowedTopologies ?? [];
  if (!terms.length) return undefined;
  const inside = terms.some((t) => (t.matchLabelExpressions ?? []).every((e) => labels[e.key] !== undefined && (e.values ?? []).includes(labels[e.key])));
  if (inside) return undefined;
  const wanted = terms.map((t) => (t.matchLabelExpressions ?? []).map((e) => `${e.key} in [${(e.values ?? []).join(', ')}]`).join(' and ')).join(' or ');
  return `node ${node} is outside the StorageClass's allowedTopologies (${wanted})`;
}

/** The driver's GetCapacity answer for the class on this node, in bytes. */
export interface NodeCapacity {
  available: bigint;
  /** Largest single volume; undefined when the driver does not say. */
  maximum?: bigint;
}

/** Why a node cannot hold `requested` bytes, or undefined. */
export function capacityProblem(node: string, requested: bigint, cap: NodeCapacity): string | undefined {
  if (cap.available < requested) return `node ${node} has ${cap.available} bytes free for this StorageClass, the claim asks for ${requested}`;
  if (cap.maximum !== undefined && cap.maximum < requested) return `node ${node} holds volumes of at most ${cap.maximum} bytes of this StorageClass, the claim asks for ${requested}`;
  return undefined;
}

/** A node's topology segment for our driver (from its CSINode's keys and its labels), and all its labels. */
export async function nodeTopology(k: Clients, driverName: string, node: string): Promise<{ segments: Record<string, string>; labels: Record<string, string> }> {
  const csiNode = await k.storage.readCSINode({ name: node }).catch(() => undefined);
  const drv = csiNode?.spec?.drivers?.find((d) => d.name === driverName);
  if (!drv) throw new Error(`driver ${driverName} is not registered on node ${node} (no CSINode entry)`);
  const labels = (await k.core.readNode({ name: node })).metadata?.labels ?? {};
  const segments: Record<string, string> = {};
  for (const key of drv.topologyKeys ?? []) if (labels[key] !== undefined) segments[key] = labels[key];
  return { segments, labels };
}

/** After this node gave a claim back (RESOURCE_EXHAUSTED), it does not offer itself for it again for this long: others go first. */
const RETAKE_AFTER_MS = 60_000;
/** A lasting "no" is looked at again after this long at first (the claim watch's resync), then twice as long each time... */
export const FIRST_LOOK_AGAIN_MS = 30_000;
/** ...up to this: a hopeless claim costs this node a GetCapacity and a few reads at most this often. */
export const MAX_LOOK_AGAIN_MS = 10 * 60_000;

/** What this node last concluded about one unclaimed Immediate claim. */
interface Verdict {
  uid: string;
  /** The claim's and its class's resourceVersions and the capacity epoch the problem was found on. */
  basis?: string;
  problem?: string;
  lookAgainAt: number;
  waitMs: number;
  /** Until when this node leaves the claim to others after giving it back. */
  asideUntil: number;
}

/**
 * A node's memory of the Immediate claims it did not take, by claim key (namespace/name),
 * so that neither the memory nor the work grows with time:
 * - an entry lives while its claim is unbound: forget() on bound, deleting and deleted (a
 *   claim recreated under the same name is a new UID and starts afresh);
 * - a lasting problem (outside allowedTopologies, too little room: only the claim, its class
 *   or this node's volumes change it) is not evaluated again on every resync of the claim
 *   watch (each evaluation is a GetCapacity and node reads), only when one of those changed
 *   (capacityChanged() after this node made or deleted a volume) or, with backoff, after
 *   FIRST_LOOK_AGAIN_MS doubling up to MAX_LOOK_AGAIN_MS, for what this node cannot see
 *   (node labels, a volume group grown by hand).
 */
export class ClaimVerdicts {
  private readonly byKey = new Map<string, Verdict>();
  private epoch = 0;

  constructor(private readonly now: () => number = Date.now) {}

  get size(): number {
    return this.byKey.size;
  }

  private entry(key: string, uid: string): Verdict {
    let v = this.byKey.get(key);
    if (v?.uid !== uid) {
      v = { uid, lookAgainAt: 0, waitMs: FIRST_LOOK_AGAIN_MS, asideUntil: 0 };
      this.byKey.set(key, v);
    }
    return v;
  }

  private basis(pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass): string {
    return `${pvc.metadata?.resourceVersion}/${sc.metadata?.resourceVersion}/${this.epoch}`;
  }

  /** The lasting problem found before, while nothing it rests on changed and it is not yet due; else undefined (look). */
  standing(key: string, pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass): string | undefined {
    const v = this.byKey.get(key);
    if (!v || v.uid !== pvc.metadata?.uid || !v.problem || v.basis !== this.basis(pvc, sc) || this.now() >= v.lookAgainAt) return undefined;
    return v.problem;
  }

  /**
   * Records what this look found; true when it differs from what was said last (say it).
   * `lasting`: a problem standing() may repeat without looking; others are looked at each time.
   */
  found(key: string, pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass, problem: string, lasting: boolean): boolean {
    const v = this.entry(key, pvc.metadata!.uid!);
    const changed = v.problem !== problem;
    const basis = this.basis(pvc, sc);
    v.waitMs = changed || v.basis !== basis ? FIRST_LOOK_AGAIN_MS : Math.min(v.waitMs * 2, MAX_LOOK_AGAIN_MS);
    v.problem = problem;
    v.basis = lasting ? basis : undefined;
    v.lookAgainAt = this.now() + v.waitMs;
    return changed;
  }

  /** This node gave the claim back (RESOURCE_EXHAUSTED): others go first for a while. */
  standAside(key: string, uid: string): void {
    this.entry(key, uid).asideUntil = this.now() + RETAKE_AFTER_MS;
  }

  standsAside(key: string, uid: string | undefined): boolean {
    const v = this.byKey.get(key);
    return v !== undefined && v.uid === uid && v.asideUntil > this.now();
  }

  /** This node's free space changed (a volume made or deleted): every lasting "no" is looked at again. */
  capacityChanged(): void {
    this.epoch++;
  }

  forget(key: string): void {
    this.byKey.delete(key);
  }
}

/** Why this node does not take a claim; `lasting` when only the claim, its class or this node's volumes can change it (ClaimVerdicts). */
interface Problem {
  why: string;
  lasting: boolean;
}
const lasting = (why: string | undefined): Problem | undefined => (why ? { why, lasting: true } : undefined);
const passing = (why: string): Problem => ({ why, lasting: false });

/** One per-node provisioner's side of Immediate binding: offering its node for unclaimed claims. */
export class NodeOffer {
  readonly verdicts: ClaimVerdicts;
  /** VolumeSnapshots and their contents, for claims restored from a snapshot. */
  private readonly custom: k8s.CustomObjectsApi;

  constructor(
    private readonly k: Clients,
    private readonly csi: CsiClient,
    private readonly opts: CommonControllerOptions & { nodeName: string },
    private readonly recorder: Recorder,
    now?: () => number,
  ) {
    this.verdicts = new ClaimVerdicts(now);
    this.custom = k.kc.makeApiClient(k8s.CustomObjectsApi);
  }

  /** Whether `pvc` is an Immediate claim this node took (and so may give back). */
  took(pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass): boolean {
    return sc.volumeBindingMode !== 'WaitForFirstConsumer' && pvc.metadata?.annotations?.[ANN_SELECTED_NODE] === this.opts.nodeName;
  }

  /** The claim (namespace/name) is bound, going or gone: nothing more to say about it. */
  forget(key: string): void {
    this.verdicts.forget(key);
  }

  /**
   * Takes an unclaimed Immediate claim for this node if the node can hold its volume: one
   * merge patch of the selected-node annotation carrying the claim's resourceVersion, so of
   * several nodes trying exactly one gets through (the others get 409 and see the winner's
   * annotation on their next look). A node that cannot says why on the claim, once.
   */
  async offer(pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass): Promise<void> {
    const node = this.opts.nodeName;
    const key = `${pvc.metadata!.namespace}/${pvc.metadata!.name}`;
    if (this.verdicts.standing(key, pvc, sc) !== undefined) return;
    const aside = this.verdicts.standsAside(key, pvc.metadata?.uid);
    const problem = aside ? passing(`node ${node} could not provision it a moment ago (RESOURCE_EXHAUSTED) and leaves it to other nodes for now`) : await this.problem(pvc, sc);
    if (problem) {
      if (this.verdicts.found(key, pvc, sc, problem.why, problem.lasting)) {
        this.opts.log.info({ pvc: key, problem: problem.why }, 'not taking the Immediate claim for this node');
        await this.recorder.event(pvc, 'Warning', 'NodeNotEligible', `${problem.why}; the provisioner of node ${node} does not take it (Immediate binding: a node that can hold the volume takes it)`);
      }
      return;
    }
    try {
      await this.k.core.patchNamespacedPersistentVolumeClaim(
        { name: pvc.metadata!.name!, namespace: pvc.metadata!.namespace!, body: { metadata: { resourceVersion: pvc.metadata?.resourceVersion, annotations: { [ANN_SELECTED_NODE]: node } } } },
        mergePatch,
      );
    } catch (err) {
      if (httpStatus(err) !== 409) throw err;
      this.opts.log.info({ pvc: `${pvc.metadata?.namespace}/${pvc.metadata?.name}` }, 'the claim changed before this node could take it (another node may have); looking again');
      return;
    }
    this.opts.log.info({ pvc: `${pvc.metadata?.namespace}/${pvc.metadata?.name}`, node }, 'took the Immediate claim for this node');
    await this.recorder.event(pvc, 'Normal', 'NodeSelected', `node ${node} provisions the volume (Immediate binding: its provisioner took the claim first among the nodes that can hold it)`);
  }

  /** Why this node cannot hold the claim's volume: driver not registered, outside allowedTopologies, its source elsewhere, too little capacity. */
  private async problem(pvc: k8s.V1PersistentVolumeClaim, sc: k8s.V1StorageClass): Promise<Problem | undefined> {
    const node = this.opts.nodeName;
    let topology: Awaited<ReturnType<typeof nodeTopology>>;
    try {
      topology = await nodeTopology(this.k, this.opts.driverName, node);
    } catch (err) {
      return passing((err as Error).message);
    }
    const outside = topologyProblem(sc, node, topology.labels);
    if (outside) return lasting(outside);
    const storage = pvc.spec?.resources?.requests?.storage;
    if (!storage) return lasting('the claim requests no storage size');
    const elsewhere = await this.sourceElsewhere(pvc, parseSize(String(storage)));
    if (elsewhere) return elsewhere;
    let res;
    try {
      res = await this.csi.Controller.GetCapacity(
        {
          volume_capabilities: volumeCapabilities(pvc.spec?.accessModes ?? ['ReadWriteOnce'], pvc.spec?.volumeMode === 'Block', sc.parameters?.[FSTYPE_KEY] ?? '', sc.mountOptions ?? []),
          parameters: driverParameters(sc.parameters),
          accessible_topology: { segments: topology.segments },
        },
        this.opts.timeoutMs,
      );
    } catch (err) {
      if (codeName(err) === 'UNIMPLEMENTED') return undefined; // the driver cannot say: let CreateVolume tell
      return passing(`node ${node} cannot tell its capacity for this StorageClass: ${rpcErrorText(err)}`);
    }
    const max = res.maximum_volume_size?.value;
    return lasting(capacityProblem(node, parseSize(String(storage)), { available: BigInt(res.available_capacity ?? 0), maximum: max === undefined || max === null ? undefined : BigInt(max) }));
  }

  /**
   * A clone or a restore is made where its source lives: a source claim whose volume is pinned
   * to other nodes, or a snapshot this node's driver does not have, rules this node out.
   */
  private async sourceElsewhere(pvc: k8s.V1PersistentVolumeClaim, requestedBytes: bigint): Promise<Problem | undefined> {
    const ds = pvc.spec?.dataSourceRef ?? pvc.spec?.dataSource;
    const namespace = pvc.metadata!.namespace!;
    if (ds?.kind === 'VolumeSnapshot' && ds.apiGroup === SNAPSHOT_GROUP) return this.snapshotElsewhere(namespace, ds.name, requestedBytes);
    if (ds?.kind !== 'PersistentVolumeClaim' || (ds.apiGroup ?? '') !== '') return undefined;
    const src = await this.k.core.readNamespacedPersistentVolumeClaim({ name: ds.name, namespace }).catch(() => undefined);
    const pv = src?.spec?.volumeName ? await this.k.core.readPersistentVolume({ name: src.spec.volumeName }).catch(() => undefined) : undefined;
    // Unbound or missing sources are the clone checks' to refuse, in their words, on the node that takes the claim.
    if (!pv?.spec?.nodeAffinity?.required?.nodeSelectorTerms?.length || affinityNames(pv, this.opts.nodeName)) return undefined;
    return lasting(`the source claim ${namespace}/${ds.name}'s volume lives on another node than ${this.opts.nodeName}, and a clone is made where its source is`);
  }

  /**
   * A loop or LVM snapshot lives on one node, and only that node's driver lists it (as the
   * node snapshotter finds its contents: node-scope.ts). A snapshot not ready yet (or refused
   * by the restore checks) keeps every node from taking the claim until it is, saying why.
   */
  private async snapshotElsewhere(namespace: string, name: string, requestedBytes: bigint): Promise<Problem | undefined> {
    let id: string;
    try {
      id = await snapshotIdOfSource(this.custom, this.opts.driverName, { namespace, name, requestedBytes });
    } catch (err) {
      return passing(`the source snapshot cannot be restored yet: ${(err as Error).message}`);
    }
    const res = await this.csi.Controller.ListSnapshots({ snapshot_id: id }, this.opts.timeoutMs);
    if ((res.entries ?? []).some((e: { snapshot?: { snapshot_id?: string } }) => e.snapshot?.snapshot_id === id)) return undefined;
    return lasting(`the source snapshot VolumeSnapshot ${namespace}/${name} (${id}) is not on node ${this.opts.nodeName}, and a volume is restored where its snapshot is`);
  }

  /** CreateVolume said RESOURCE_EXHAUSTED on this node for a claim it took (the claim goes back: reschedule.ts): other nodes go first. */
  standAside(pvc: k8s.V1PersistentVolumeClaim): void {
    this.verdicts.standAside(`${pvc.metadata!.namespace}/${pvc.metadata!.name}`, pvc.metadata!.uid!);
  }
}
