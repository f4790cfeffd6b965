// Which VolumeSnapshotContents a per-node snapshotter (--node-name, in the node DaemonSet
// next to the loop/LVM driver) takes. A loop or LVM snapshot lives on the node of its source
// volume, and only that node's driver can make, list or delete it; every other node's driver
// answers NOT_FOUND (or, for DeleteSnapshot, OK without doing anything, which would let the
// content go and leak the snapshot). So exactly one node must act on each content.
//
// Why not only the source volume's PV, as the provisioner and attacher scope by node affinity
// (sidecars/common/scope.ts)? A snapshot outlives its volume: by the time a VolumeSnapshot is
// deleted, its source claim and PV are often gone, and a pre-provisioned content names a
// snapshot, not a volume. So the node that first takes a content writes itself on it
// (annotation "<driver>/node"), and that record decides from then on:
//   1. the annotation, when there is one: this node's or another's, nothing else is asked;
//   2. a content of a volume (dynamic): the PV with that volume handle, by node affinity
//      (the snapshot-controller only makes contents for bound claims, so the PV is there);
//   3. otherwise (pre-provisioned, or a volume whose PV is gone): this node's driver is asked
//      for the snapshot (ListSnapshots by ID); it knows only its own.
// What this leaves: a pre-provisioned content whose snapshot no node has gets no error from
// anyone (each node only knows it is not its own).
// VolumeGroupSnapshotContents are taken the same way: a group's volumes are all of one node's
// driver (it refuses others), so the first volume's PV decides, else the driver is asked for
// the group (GetVolumeGroupSnapshot by ID).
import type { Logger } from 'pino';
import { CsiClient, codeName } from '../common/csi-client.js';
import { k8s, Watch } from '../common/kube.js';
import { affinityNames } from '../common/scope.js';
import type { ContentMeta, CsiSnapshot, VolumeSnapshotContent } from './content.js';
import { groupHandleOf, type VolumeGroupSnapshotContent } from './group-content.js';

/** The annotation naming the node whose snapshotter took a content. */
export const nodeAnnotation = (driverName: string) => `${driverName}/node`;

export type Ownership = 'mine' | 'other' | 'ask-driver';

/** Rules 1 and 2 above; 'ask-driver' is rule 3. */
export function ownership(c: VolumeSnapshotContent, driverName: string, node: string, pvOfHandle: (handle: string) => k8s.V1PersistentVolume | undefined): Ownership {
  return ownershipBy(c.metadata, c.spec?.source?.volumeHandle, driverName, node, pvOfHandle);
}

/** The same for any content: its recorded node, else the PV of `volume` (the volume it is of, if any). */
export function ownershipBy(meta: ContentMeta | undefined, volume: string | undefined, driverName: string, node: string, pvOfHandle: (handle: string) => k8s.V1PersistentVolume | undefined): Ownership {
  const recorded = meta?.annotations?.[nodeAnnotation(driverName)];
  if (recorded !== undefined) return recorded === node ? 'mine' : 'other';
  const pv = volume ? pvOfHandle(volume) : undefined;
  if (pv) return affinityNames(pv, node) ? 'mine' : 'other';
  return 'ask-driver';
}

/** The snapshot ID a content names (its source, or what CreateSnapshot answered), if any. */
const snapshotIdOf = (c: VolumeSnapshotContent) => c.spec?.source?.snapshotHandle ?? c.status?.snapshotHandle;

export class NodeScope {
  private pvs!: Watch<k8s.V1PersistentVolume>;

  constructor(
    private readonly k: { kc: k8s.KubeConfig; core: k8s.CoreV1Api },
    private readonly csi: CsiClient,
    private readonly opts: { driverName: string; nodeName: string; timeoutMs: number; log: Logger },
  ) {}

  async start(): Promise<void> {
    this.pvs = new Watch(this.k.kc, '/api/v1/persistentvolumes', () => this.k.core.listPersistentVolume(), () => undefined, this.opts.log);
    await this.pvs.start();
  }

  async stop(): Promise<void> {
    await this.pvs?.stop();
  }

  /**
   * The content when this node acts on it, else undefined. The first time it does, `record`
   * writes the node on it (before anything else is done) and the written content is returned.
   */
  take<T extends VolumeSnapshotContent>(c: T, record: (ann: Record<string, string>) => Promise<T>): Promise<T | undefined> {
    return this.takeBy(c, c.spec?.source?.volumeHandle, () => this.driverHas(snapshotIdOf(c)), record);
  }

  /** take() for a VolumeGroupSnapshotContent. */
  takeGroup<T extends VolumeGroupSnapshotContent>(c: T, record: (ann: Record<string, string>) => Promise<T>): Promise<T | undefined> {
    return this.takeBy(c, c.spec?.source?.volumeHandles?.[0], () => this.driverHasGroup(groupHandleOf(c)), record);
  }

  private async takeBy<T extends { metadata?: ContentMeta }>(c: T, volume: string | undefined, driverHas: () => Promise<boolean>, record: (ann: Record<string, string>) => Promise<T>): Promise<T | undefined> {
    const { driverName, nodeName } = this.opts;
    let o = ownershipBy(c.metadata, volume, driverName, nodeName, (h) => this.pvs.list().find((pv) => pv.spec?.csi?.driver === driverName && pv.spec.csi.volumeHandle === h));
    if (o === 'ask-driver') o = (await driverHas()) ? 'mine' : 'other';
    if (o === 'other') return undefined;
    if (c.metadata?.annotations?.[nodeAnnotation(driverName)] !== undefined) return c;
    const taken = await record({ [nodeAnnotation(driverName)]: nodeName });
    this.opts.log.info({ content: c.metadata?.name, node: nodeName }, 'content taken by this node');
    return taken;
  }

  private async driverHasGroup(id: string | undefined): Promise<boolean> {
    if (!id) return false;
    try {
      await this.csi.GroupController.GetVolumeGroupSnapshot({ group_snapshot_id: id }, this.opts.timeoutMs);
      return true;
    } catch (err) {
      if (codeName(err) === 'NOT_FOUND') return false;
      throw err;
    }
  }

  private async driverHas(id: string | undefined): Promise<boolean> {
    if (!id) return false;
    const res = await this.csi.Controller.ListSnapshots({ snapshot_id: id }, this.opts.timeoutMs);
    return (res.entries ?? []).some((e: { snapshot?: CsiSnapshot }) => e.snapshot?.snapshot_id === id);
  }
}
