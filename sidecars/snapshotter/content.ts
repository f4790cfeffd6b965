// What the snapshotter decides from a VolumeSnapshotContent alone: whether it is ours, what to
// do with it, the CreateSnapshot name and parameters, the secrets its class names and the
// status a CSI snapshot makes. The names and annotations are csi-snapshotter's (v8), so a
// cluster can switch between the two sidecars with its snapshot-controller unchanged.
import { CO_PREFIX, DNS1123_LABEL, DNS1123_SUBDOMAIN, driverParameters, resolveTemplate, type SecretRef } from '../common/secrets.js';
import { backendOfHandle, type Scope } from '../common/scope.js';

export { SNAPSHOT_GROUP, SNAPSHOT_VERSION, CONTENTS, CLASSES } from '../common/snapshots.js';

/** The snapshot-controller's finalizer on a bound content; the sidecar removes it once the snapshot is dealt with. */
export const CONTENT_FINALIZER = 'snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection';
/** Set by the sidecar while a CreateSnapshot may be in flight: the content must not be deleted then. */
export const ANN_BEING_CREATED = 'snapshot.storage.kubernetes.io/volumesnapshot-being-created';
/** Set by the snapshot-controller when it deletes a content whose VolumeSnapshot is gone. */
export const ANN_BEING_DELETED = 'snapshot.storage.kubernetes.io/volumesnapshot-being-deleted';
/** Where the snapshotter secret is kept for DeleteSnapshot (the class may be gone by then). */
export const ANN_SECRET_NAME = 'snapshot.storage.kubernetes.io/deletion-secret-name';
export const ANN_SECRET_NAMESPACE = 'snapshot.storage.kubernetes.io/deletion-secret-namespace';
/** On member contents of a group snapshot: the group sidecar makes those, not CreateSnapshot. */
export const ANN_GROUP_SNAPSHOT_HANDLE = 'groupsnapshot.storage.k8s.io/volumeGroupSnapshotHandle';

/** csi-snapshotter's --snapshot-name-prefix default. */
export const DEFAULT_NAME_PREFIX = 'snapshot';

export interface ContentStatus {
  snapshotHandle?: string;
  readyToUse?: boolean;
  /** Nanoseconds since the epoch. */
  creationTime?: number;
  restoreSize?: number;
  volumeGroupSnapshotHandle?: string;
  error?: { time?: string; message?: string };
}

/** The metadata of a (group) snapshot content the sidecar reads and writes. */
export interface ContentMeta {
  name?: string;
  uid?: string;
  resourceVersion?: string;
  annotations?: Record<string, string>;
  finalizers?: string[];
  deletionTimestamp?: string | Date;
}

export interface VolumeSnapshotContent {
  apiVersion?: string;
  kind?: string;
  metadata?: ContentMeta;
  spec?: {
    driver?: string;
    deletionPolicy?: 'Delete' | 'Retain';
    volumeSnapshotClassName?: string;
    source?: { volumeHandle?: string; snapshotHandle?: string };
    volumeSnapshotRef?: { name?: string; namespace?: string; uid?: string };
  };
  status?: ContentStatus;
}

export interface VolumeSnapshotClass {
  metadata?: { name?: string };
  driver?: string;
  parameters?: Record<string, string>;
  deletionPolicy?: string;
}

const SNAPSHOT_ID_RE = /^snap-([a-z][a-z0-9]{0,15})-/;

/** The backend of the volume or snapshot a content names, or undefined when the handle is not one of the driver's IDs. */
export function backendOfContent(c: VolumeSnapshotContent): string | undefined {
  const src = c.spec?.source;
  return src?.volumeHandle ? backendOfHandle(src.volumeHandle) : SNAPSHOT_ID_RE.exec(src?.snapshotHandle ?? '')?.[1];
}

/** Whether the content is this sidecar's: its driver's, naming a volume or a snapshot, of a backend it serves (--backends). */
export function isOurs(c: VolumeSnapshotContent, scope: Pick<Scope, 'driverName' | 'backends'>): boolean {
  const src = c.spec?.source;
  if (c.spec?.driver !== scope.driverName || !(src?.volumeHandle || src?.snapshotHandle)) return false;
  if (!scope.backends) return true;
  const backend = backendOfContent(c);
  return backend !== undefined && scope.backends.has(backend);
}

export const isReady = (c: VolumeSnapshotContent) => c.status?.readyToUse === true;
const isGroupMember = (c: VolumeSnapshotContent) => ANN_GROUP_SNAPSHOT_HANDLE in (c.metadata?.annotations ?? {});

export type Action = 'delete' | 'create' | 'check' | 'ready' | 'none';

/**
 * What a sync does with the content, as csi-snapshotter decides it: a deleted content is let go
 * only when the snapshot-controller says so (or it is an unbound static one) and no
 * CreateSnapshot may be in flight; a dynamic one is created until ready; a static one is
 * checked with ListSnapshots.
 */
export function actionFor(c: VolumeSnapshotContent): Action {
  const ann = c.metadata?.annotations ?? {};
  if (c.metadata?.deletionTimestamp) {
    if (c.spec?.source?.snapshotHandle && !c.spec.volumeSnapshotRef?.uid) return 'delete';
    // A CreateSnapshot that may still be in flight is finished first, as csi-snapshotter's
    // shouldDelete waits for it: its answer clears the mark and a later sync deletes. Only
    // waiting would never clear the mark, and the snapshot the driver finished would leak.
    if (ANN_BEING_CREATED in ann) return c.spec?.source?.volumeHandle && !isGroupMember(c) ? 'create' : 'none';
    return ANN_BEING_DELETED in ann ? 'delete' : 'none';
  }
  if (isReady(c)) return 'ready';
  if (c.spec?.source?.snapshotHandle || (c.status?.volumeGroupSnapshotHandle && c.status.snapshotHandle)) return 'check';
  // Not ready yet (or failed): CreateSnapshot again, which answers for the same snapshot.
  if (c.spec?.source?.volumeHandle && !isGroupMember(c)) return 'create';
  return 'none';
}

/** Whether deleting the content also deletes the snapshot behind it. */
export function deletesSnapshot(c: VolumeSnapshotContent): boolean {
  return c.spec?.deletionPolicy === 'Delete' && !!c.status?.snapshotHandle && !c.status.volumeGroupSnapshotHandle;
}

/** The snapshot's name in CreateSnapshot: "<prefix>-<VolumeSnapshot UID>", as csi-snapshotter names it (so a retry by either sidecar finds the same snapshot). */
export function snapshotName(c: VolumeSnapshotContent, prefix = DEFAULT_NAME_PREFIX): string {
  const uid = c.spec?.volumeSnapshotRef?.uid;
  if (!uid) throw new Error(`cannot create snapshot: content ${c.metadata?.name} is not bound to a VolumeSnapshot (spec.volumeSnapshotRef.uid is empty)`);
  return `${prefix}-${uid}`;
}

export type SnapshotSecretKind = 'snapshotter' | 'snapshotter-list';
const SECRET_KEYS = new Set((['snapshotter', 'snapshotter-list'] as const).flatMap((k) => [`${CO_PREFIX}${k}-secret-name`, `${CO_PREFIX}${k}-secret-namespace`]));

/** The class parameters the driver gets: the CO's secret keys removed, any other csi.storage.k8s.io/ key refused (a typo must not pass silently). */
export function snapshotParameters(params: Record<string, string> | undefined): Record<string, string> {
  return driverParameters(params, SECRET_KEYS);
}

/**
 * The Secret a VolumeSnapshotClass names for `kind`, or undefined. Namespace templates may use
 * ${volumesnapshotcontent.name} and ${volumesnapshot.namespace}; name templates also
 * ${volumesnapshot.name} (the templates csi-snapshotter resolves).
 */
export function snapshotSecretRef(kind: SnapshotSecretKind, params: Record<string, string> | undefined, c: VolumeSnapshotContent): SecretRef | undefined {
  const ref = c.spec?.volumeSnapshotRef;
  const nsValues: Record<string, string> = { 'volumesnapshotcontent.name': c.metadata?.name ?? '' };
  if (ref?.namespace) nsValues['volumesnapshot.namespace'] = ref.namespace;
  return classSecretRef('VolumeSnapshotClass', kind, params, nsValues, ref?.name ? { ...nsValues, 'volumesnapshot.name': ref.name } : nsValues);
}

/**
 * The Secret a (group) snapshot class names with csi.storage.k8s.io/<kind>-secret-name and
 * -namespace, their templates resolved from `nsValues` and `nameValues`; undefined when it
 * names none. Shared by the snapshot and the group snapshot classes, which differ only in keys
 * and template values.
 */
export function classSecretRef(classKind: string, kind: string, params: Record<string, string> | undefined, nsValues: Record<string, string>, nameValues: Record<string, string>): SecretRef | undefined {
  const nameT = params?.[`${CO_PREFIX}${kind}-secret-name`];
  const nsT = params?.[`${CO_PREFIX}${kind}-secret-namespace`];
  if (nameT === undefined && nsT === undefined) return undefined;
  if (!nameT || !nsT) throw new Error(`the ${classKind} must give both ${CO_PREFIX}${kind}-secret-name and -namespace, non-empty, or neither`);
  const namespace = resolveOrExplain(nsT, nsValues);
  if (!DNS1123_LABEL.test(namespace) || namespace.length > 63) throw new Error(`${JSON.stringify(nsT)} resolved to ${JSON.stringify(namespace)}, which is not a valid namespace name`);
  const name = resolveOrExplain(nameT, nameValues);
  if (!DNS1123_SUBDOMAIN.test(name) || name.length > 253) throw new Error(`${JSON.stringify(nameT)} resolved to ${JSON.stringify(name)}, which is not a valid secret name`);
  return { name, namespace };
}

function resolveOrExplain(template: string, values: Record<string, string>): string {
  try {
    return resolveTemplate(template, values);
  } catch (err) {
    throw new Error(`error resolving value ${JSON.stringify(template)}: ${(err as Error).message}`, { cause: err });
  }
}

/** The snapshotter secret recorded on the content (for DeleteSnapshot), or undefined when none is. */
export function annotatedSecretRef(c: VolumeSnapshotContent): SecretRef | undefined {
  return recordedSecretRef(c.metadata?.annotations, ANN_SECRET_NAME, ANN_SECRET_NAMESPACE, `snapshot content ${c.metadata?.name}`);
}

/** The Secret recorded in annotations `nameKey` and `nsKey`, or undefined when neither is there; one alone, or one empty, is an error. */
export function recordedSecretRef(ann: Record<string, string> | undefined, nameKey: string, nsKey: string, what: string): SecretRef | undefined {
  const a = ann ?? {};
  if (!(nameKey in a) && !(nsKey in a)) return undefined;
  const name = a[nameKey];
  const namespace = a[nsKey];
  if (!name || !namespace) throw new Error(`cannot retrieve secrets for ${what}: secret name or namespace not specified`);
  return { name, namespace };
}

/** The CSI Snapshot message fields the status is made of. */
export interface CsiSnapshot {
  snapshot_id: string;
  size_bytes?: string | number;
  ready_to_use?: boolean;
  creation_time?: { seconds?: string | number; nanos?: number } | null;
  group_snapshot_id?: string;
}

/**
 * The content's status from the driver's snapshot, keeping what is already set (as
 * csi-snapshotter does: handle, creation time and size never change once written). The
 * creation time is in nanoseconds, which JSON carries as a double: within 128 ns of the
 * driver's time, which no consumer resolves.
 */
export function statusFromSnapshot(prev: ContentStatus | undefined, s: CsiSnapshot, now = new Date()): ContentStatus {
  const ct = s.creation_time;
  const nanos = ct && (Number(ct.seconds ?? 0) > 0 || (ct.nanos ?? 0) > 0) ? BigInt(ct.seconds ?? 0) * 1_000_000_000n + BigInt(ct.nanos ?? 0) : BigInt(now.getTime()) * 1_000_000n;
  const size = Number(s.size_bytes ?? 0);
  const ready = s.ready_to_use === true;
  const out: ContentStatus = { ...prev };
  out.snapshotHandle ??= s.snapshot_id;
  out.readyToUse = ready;
  out.creationTime ??= Number(nanos);
  if (out.restoreSize === undefined && size > 0) out.restoreSize = size;
  if (out.volumeGroupSnapshotHandle === undefined && s.group_snapshot_id) out.volumeGroupSnapshotHandle = s.group_snapshot_id;
  if (ready) delete out.error;
  return out;
}

/** The status (of a content or a group content) that reports `message`: readyToUse false, the rest kept. */
export function errorStatus<S extends object>(prev: S | undefined, message: string, now = new Date()): S & { readyToUse: false; error: { time: string; message: string } } {
  return { ...(prev as S), readyToUse: false, error: { time: now.toISOString(), message } };
}
