// A claim cloned from another claim (dataSource/dataSourceRef of kind PersistentVolumeClaim):
// the checks external-provisioner makes before it asks for a clone, each refusal worded so
// the user knows what to change. The driver would refuse some of these too, but only after
// the claim's finalizer is set, and in its own words.
import type { k8s } from '../common/kube.js';
import { backendOfHandle } from '../common/scope.js';
import { parseSize } from '../../lib/size.js';

export interface CloneTarget {
  /** The new claim. */
  claim: k8s.V1PersistentVolumeClaim;
  /** The backend its StorageClass provisions on. */
  backend: string;
  driverName: string;
}

/** The namespace a data source reference points into (dataSourceRef may name another one). */
export function sourceNamespace(claim: k8s.V1PersistentVolumeClaim, ds: k8s.V1TypedLocalObjectReference | k8s.V1TypedObjectReference): string {
  return (ds as k8s.V1TypedObjectReference).namespace ?? claim.metadata!.namespace!;
}

/**
 * Why a claim may not be cloned from `ds` before anything is read: another namespace (that
 * takes a ReferenceGrant, which this provisioner does not honour), or undefined.
 */
export function crossNamespaceProblem(claim: k8s.V1PersistentVolumeClaim, ds: k8s.V1TypedLocalObjectReference | k8s.V1TypedObjectReference): string | undefined {
  const ns = sourceNamespace(claim, ds);
  if (ns === claim.metadata!.namespace) return undefined;
  return `data source ${ds.kind} ${ns}/${ds.name} is in another namespace than the claim (${claim.metadata!.namespace}): cross-namespace data sources (ReferenceGrant) are not supported; copy the source into namespace ${claim.metadata!.namespace}`;
}

const modeOf = (c: k8s.V1PersistentVolumeClaim | k8s.V1PersistentVolume) => c.spec?.volumeMode ?? 'Filesystem';

/**
 * Why `source` (with its PV, if bound) cannot be cloned into `t.claim`, or undefined: the
 * source must be Bound and not being deleted, its volume one of this driver's on the same
 * backend, the new claim at least as large as the source volume, and of the same volume mode.
 */
export function cloneSourceProblem(t: CloneTarget, source: k8s.V1PersistentVolumeClaim, sourcePv: k8s.V1PersistentVolume | undefined): string | undefined {
  const what = `source claim ${source.metadata?.namespace}/${source.metadata?.name}`;
  if (source.metadata?.deletionTimestamp) return `${what} is being deleted`;
  if (source.status?.phase !== 'Bound' || !source.spec?.volumeName) return `${what} is not bound to a volume yet (phase ${source.status?.phase ?? 'Pending'}); the clone is made once it is`;
  if (!sourcePv) return `${what} is bound to PersistentVolume ${source.spec.volumeName}, which does not exist`;
  const csi = sourcePv.spec?.csi;
  if (csi?.driver !== t.driverName) return `${what} is a volume of ${csi?.driver ? `driver ${csi.driver}` : 'no CSI driver'}, not of ${t.driverName}: only volumes of the same driver can be cloned`;
  const backend = backendOfHandle(csi.volumeHandle);
  if (backend !== t.backend) return `${what} is a ${backend ?? 'foreign'} volume and the claim's StorageClass provisions on ${t.backend}: a clone stays on its source's backend`;
  // The source claim's request, as external-provisioner compares: its PV's capacity is the
  // driver's rounded-up size, which would refuse a clone asking for what the source asked.
  const requested = t.claim.spec?.resources?.requests?.storage;
  const sourceSize = source.spec?.resources?.requests?.storage;
  if (requested !== undefined && sourceSize !== undefined && parseSize(String(requested)) < parseSize(String(sourceSize))) {
    return `requested volume size ${parseSize(String(requested))} is less than the size ${parseSize(String(sourceSize))} of the ${what}: a clone must be at least as large as its source`;
  }
  if (modeOf(t.claim) !== modeOf(source)) return `the claim's volume mode ${modeOf(t.claim)} differs from the ${what}'s ${modeOf(source)}: a clone keeps its source's volume mode`;
  return undefined;
}
