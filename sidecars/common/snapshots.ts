// The VolumeSnapshot API (snapshot.storage.k8s.io/v1, the CRDs of external-snapshotter) as the
// sidecars read it: the snapshotter acts on contents, the provisioner restores from snapshots;
// here so neither imports the other.
import { k8s, httpStatus } from './kube.js';
import { parseSize } from '../../lib/size.js';

export const SNAPSHOT_GROUP = 'snapshot.storage.k8s.io';
export const SNAPSHOT_VERSION = 'v1';
export const SNAPSHOTS = 'volumesnapshots';
export const CONTENTS = 'volumesnapshotcontents';
export const CLASSES = 'volumesnapshotclasses';

interface SnapshotView {
  status?: { readyToUse?: boolean; boundVolumeSnapshotContentName?: string; restoreSize?: string | number };
}
interface ContentView {
  spec?: { driver?: string };
  status?: { snapshotHandle?: string };
}

/** A claim's VolumeSnapshot data source, checked as external-provisioner checks it. */
export interface SnapshotSource {
  namespace: string;
  name: string;
  /** What the claim asks for, in bytes. */
  requestedBytes: bigint;
}

/**
 * The snapshot ID a claim restores from: the VolumeSnapshot must be ready, bound to a content of
 * `driverName`, and no larger than the claim. Every refusal says what to fix.
 */
export async function snapshotIdOfSource(api: k8s.CustomObjectsApi, driverName: string, src: SnapshotSource): Promise<string> {
  const what = `VolumeSnapshot ${src.namespace}/${src.name}`;
  const vs = (await readOrExplain(what, () => api.getNamespacedCustomObject({ group: SNAPSHOT_GROUP, version: SNAPSHOT_VERSION, plural: SNAPSHOTS, namespace: src.namespace, name: src.name }))) as SnapshotView;
  const contentName = vs.status?.boundVolumeSnapshotContentName;
  if (vs.status?.readyToUse !== true || !contentName) throw new Error(`${what} is not ready to use yet`);
  const content = (await readOrExplain(`VolumeSnapshotContent ${contentName}`, () => api.getClusterCustomObject({ group: SNAPSHOT_GROUP, version: SNAPSHOT_VERSION, plural: CONTENTS, name: contentName }))) as ContentView;
  if (content.spec?.driver !== driverName) throw new Error(`${what} is a snapshot of driver ${JSON.stringify(content.spec?.driver)}, not of ${driverName}`);
  const id = content.status?.snapshotHandle;
  if (!id) throw new Error(`VolumeSnapshotContent ${contentName} of ${what} has no snapshot handle yet`);
  const restoreSize = vs.status.restoreSize;
  if (restoreSize !== undefined && parseSize(String(restoreSize)) > src.requestedBytes) {
    throw new Error(`requested volume size ${src.requestedBytes} is less than the size ${parseSize(String(restoreSize))} of the source snapshot ${what}`);
  }
  return id;
}

async function readOrExplain(what: string, read: () => Promise<unknown>): Promise<unknown> {
  try {
    return await read();
  } catch (err) {
    // The API client's error stays out of ours (no cause): it carries the whole HTTP exchange.
    // eslint-disable-next-line preserve-caught-error
    throw new Error(httpStatus(err) === 404 ? `${what} not found` : `cannot read ${what}: ${httpStatus(err) ?? (err as Error).message}`);
  }
}
