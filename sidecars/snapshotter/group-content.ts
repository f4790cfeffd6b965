// What the snapshotter decides from a VolumeGroupSnapshotContent alone: whether it is ours,
// what a sync does with it, the CreateVolumeGroupSnapshot name, parameters and secrets, and
// the status a CSI group snapshot makes. Names, annotations and the status's shape are
// csi-snapshotter's (v8, groupsnapshot.storage.k8s.io/v1): the snapshot-controller makes the
// member VolumeSnapshots and contents from status.volumeSnapshotInfoList, so that list must
// be exactly what it reads.
import { CO_PREFIX, driverParameters, type SecretRef } from '../common/secrets.js';
import { backendOfHandle, type Scope } from '../common/scope.js';
import { classSecretRef, recordedSecretRef, type ContentMeta, type CsiSnapshot } from './content.js';

export const GROUP_SNAPSHOT_GROUP = 'groupsnapshot.storage.k8s.io';
export const GROUP_SNAPSHOT_VERSION = 'v1';
export const GROUP_CONTENTS = 'volumegroupsnapshotcontents';
export const GROUP_CLASSES = 'volumegroupsnapshotclasses';

/** The snapshot-controller's finalizer on a bound group content; the sidecar removes it once the group snapshot is dealt with. */
export const GROUP_CONTENT_FINALIZER = 'groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection';
/** Set by the sidecar while a CreateVolumeGroupSnapshot may be in flight: the content must not be deleted then. */
export const ANN_GROUP_BEING_CREATED = 'groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-being-created';
/** Set by the snapshot-controller when it deletes a group content whose VolumeGroupSnapshot is gone. */
export const ANN_GROUP_BEING_DELETED = 'groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-being-deleted';
/** Where the snapshot-controller records the group snapshotter secret (for the create and, after the class is gone, the delete). */
export const ANN_GROUP_SECRET_NAME = 'groupsnapshot.storage.kubernetes.io/deletion-secret-name';
export const ANN_GROUP_SECRET_NAMESPACE = 'groupsnapshot.storage.kubernetes.io/deletion-secret-namespace';

/** csi-snapshotter's --groupsnapshot-name-prefix default. */
export const DEFAULT_GROUP_NAME_PREFIX = 'groupsnapshot';

/** One member as the snapshot-controller reads it; creationTime in nanoseconds since the epoch. */
export interface VolumeSnapshotInfo {
  volumeHandle?: string;
  snapshotHandle?: string;
  creationTime?: number;
  readyToUse?: boolean;
  restoreSize?: number;
}

export interface GroupContentStatus {
  volumeGroupSnapshotHandle?: string;
  readyToUse?: boolean;
  /** RFC 3339 (unlike a VolumeSnapshotContent's nanoseconds). */
  creationTime?: string;
  volumeSnapshotInfoList?: VolumeSnapshotInfo[];
  error?: { time?: string; message?: string };
}

export interface VolumeGroupSnapshotContent {
  metadata?: ContentMeta;
  spec?: {
    driver?: string;
    deletionPolicy?: 'Delete' | 'Retain';
    volumeGroupSnapshotClassName?: string;
    source?: { volumeHandles?: string[]; groupSnapshotHandles?: { volumeGroupSnapshotHandle?: string; volumeSnapshotHandles?: string[] } };
    volumeGroupSnapshotRef?: { name?: string; namespace?: string; uid?: string };
  };
  status?: GroupContentStatus;
}

export interface VolumeGroupSnapshotClass {
  metadata?: { name?: string };
  driver?: string;
  parameters?: Record<string, string>;
  deletionPolicy?: string;
}

const GROUP_ID_RE = /^group-([a-z][a-z0-9]{0,15})-/;

/** The backend of the volumes or the group snapshot a group content names, or undefined when its handles are not the driver's. */
export function backendOfGroupContent(c: VolumeGroupSnapshotContent): string | undefined {
  const src = c.spec?.source;
  if (src?.volumeHandles?.length) return backendOfHandle(src.volumeHandles[0]);
  return GROUP_ID_RE.exec(src?.groupSnapshotHandles?.volumeGroupSnapshotHandle ?? '')?.[1];
}

/** Whether the group content is this sidecar's: its driver's, naming volumes or a group snapshot, of a backend it serves (--backends). */
export function isOurGroup(c: VolumeGroupSnapshotContent, scope: Pick<Scope, 'driverName' | 'backends'>): boolean {
  const src = c.spec?.source;
  if (c.spec?.driver !== scope.driverName || !(src?.volumeHandles?.length || src?.groupSnapshotHandles)) return false;
  if (!scope.backends) return true;
  const backend = backendOfGroupContent(c);
  return backend !== undefined && scope.backends.has(backend);
}

export const isGroupReady = (c: VolumeGroupSnapshotContent) => c.status?.readyToUse === true;

export type GroupAction = 'delete' | 'release' | 'create' | 'check' | 'ready' | 'none';

/**
 * What a sync does, as csi-snapshotter decides it: a deleted group content is let go only when
 * the snapshot-controller says so (or it is an unbound pre-provisioned one) and no
 * CreateVolumeGroupSnapshot may be in flight — 'delete' when the group snapshot goes with it
 * (Delete policy, a handle still on the status), else 'release' (only the finalizer goes); a
 * dynamic one is created until ready; a pre-provisioned one is checked with GetVolumeGroupSnapshot.
 */
export function groupActionFor(c: VolumeGroupSnapshotContent): GroupAction {
  const ann = c.metadata?.annotations ?? {};
  const src = c.spec?.source;
  if (c.metadata?.deletionTimestamp) {
    const unboundStatic = !!src?.groupSnapshotHandles && !c.spec?.volumeGroupSnapshotRef?.uid;
    // A CreateVolumeGroupSnapshot that may still be in flight is finished first (as for a
    // content, content.ts actionFor): only waiting would leave the mark and leak the group.
    if (!unboundStatic && ANN_GROUP_BEING_CREATED in ann) return src?.volumeHandles?.length ? 'create' : 'none';
    if (!unboundStatic && !(ANN_GROUP_BEING_DELETED in ann)) return 'none';
    return c.spec?.deletionPolicy === 'Delete' && c.status?.volumeGroupSnapshotHandle ? 'delete' : 'release';
  }
  if (isGroupReady(c)) return 'ready';
  if (src?.groupSnapshotHandles) return 'check';
  // Not ready yet (or failed): CreateVolumeGroupSnapshot again, which answers for the same group.
  return src?.volumeHandles?.length ? 'create' : 'none';
}

/** The group's name in CreateVolumeGroupSnapshot: "<prefix>-<VolumeGroupSnapshot UID>", as csi-snapshotter names it (so a retry by either sidecar finds the same group). */
export function groupSnapshotName(c: VolumeGroupSnapshotContent, prefix = DEFAULT_GROUP_NAME_PREFIX): string {
  const uid = c.spec?.volumeGroupSnapshotRef?.uid;
  if (!uid) throw new Error(`cannot create group snapshot. Group snapshot content ${c.metadata?.name} not bound to a group snapshot (spec.volumeGroupSnapshotRef.uid is empty)`);
  return `${prefix}-${uid}`;
}

export type GroupSecretKind = 'group-snapshotter' | 'group-snapshotter-get';
// csi-snapshotter accepts the snapshot classes' secret keys in a group class too (one list for both).
const GROUP_SECRET_KEYS = new Set((['snapshotter', 'snapshotter-list', 'group-snapshotter', 'group-snapshotter-get'] as const).flatMap((k) => [`${CO_PREFIX}${k}-secret-name`, `${CO_PREFIX}${k}-secret-namespace`]));

/** The class parameters the driver gets: the CO's secret keys removed, any other csi.storage.k8s.io/ key refused. */
export function groupParameters(params: Record<string, string> | undefined): Record<string, string> {
  return driverParameters(params, GROUP_SECRET_KEYS);
}

/**
 * The Secret a VolumeGroupSnapshotClass names for `kind`, or undefined. Namespace templates may
 * use ${volumegroupsnapshotcontent.name} and ${volumegroupsnapshot.namespace}; name templates
 * also ${volumegroupsnapshot.name}.
 */
export function groupSecretRef(kind: GroupSecretKind, params: Record<string, string> | undefined, c: VolumeGroupSnapshotContent): SecretRef | undefined {
  const ref = c.spec?.volumeGroupSnapshotRef;
  const nsValues: Record<string, string> = { 'volumegroupsnapshotcontent.name': c.metadata?.name ?? '' };
  if (ref?.namespace) nsValues['volumegroupsnapshot.namespace'] = ref.namespace;
  return classSecretRef('VolumeGroupSnapshotClass', kind, params, nsValues, ref?.name ? { ...nsValues, 'volumegroupsnapshot.name': ref.name } : nsValues);
}

/** The group snapshotter secret the snapshot-controller recorded on the content, or undefined when none is. */
export function annotatedGroupSecretRef(c: VolumeGroupSnapshotContent): SecretRef | undefined {
  return recordedSecretRef(c.metadata?.annotations, ANN_GROUP_SECRET_NAME, ANN_GROUP_SECRET_NAMESPACE, `group snapshot content ${c.metadata?.name}`);
}

/** The group snapshot's ID: the one the driver answered with, or the one a pre-provisioned content names. */
export function groupHandleOf(c: VolumeGroupSnapshotContent): string | undefined {
  return c.status?.volumeGroupSnapshotHandle ?? c.spec?.source?.groupSnapshotHandles?.volumeGroupSnapshotHandle;
}

/** The members' snapshot IDs (DeleteVolumeGroupSnapshot and GetVolumeGroupSnapshot must name them all). */
export function memberSnapshotIds(c: VolumeGroupSnapshotContent): string[] {
  const listed = (c.status?.volumeSnapshotInfoList ?? []).map((i) => i.snapshotHandle).filter((h): h is string => !!h);
  return listed.length ? listed : [...(c.spec?.source?.groupSnapshotHandles?.volumeSnapshotHandles ?? [])];
}

/** The CSI VolumeGroupSnapshot message fields the status is made of. */
export interface CsiGroupSnapshot {
  group_snapshot_id: string;
  snapshots?: Array<CsiSnapshot & { source_volume_id?: string }>;
  creation_time?: { seconds?: string | number; nanos?: number } | null;
  ready_to_use?: boolean;
}

type CsiTime = CsiSnapshot['creation_time'];
const isSet = (t: CsiTime): t is NonNullable<CsiTime> => !!t && (Number(t.seconds ?? 0) > 0 || (t.nanos ?? 0) > 0);
/** A CSI timestamp in nanoseconds (a JSON double: within 128 ns, which no consumer resolves), or undefined when unset. */
const nanosOf = (t: CsiTime) => (isSet(t) ? Number(BigInt(t.seconds ?? 0) * 1_000_000_000n + BigInt(t.nanos ?? 0)) : undefined);

/**
 * The group content's status from the driver's group snapshot, keeping what is already set
 * (handle, creation time and the member list never change once written, as in
 * csi-snapshotter). `members` is false for a pre-provisioned content: csi-snapshotter writes
 * no member list for one, and the snapshot-controller makes member objects only from a list.
 */
export function statusFromGroupSnapshot(prev: GroupContentStatus | undefined, g: CsiGroupSnapshot, members = true, now = new Date()): GroupContentStatus {
  const ready = g.ready_to_use === true;
  const out: GroupContentStatus = { ...prev };
  out.volumeGroupSnapshotHandle ??= g.group_snapshot_id;
  out.readyToUse = ready;
  out.creationTime ??= isSet(g.creation_time) ? new Date(Number(g.creation_time.seconds ?? 0) * 1000 + Math.floor((g.creation_time.nanos ?? 0) / 1e6)).toISOString() : now.toISOString();
  if (members && !out.volumeSnapshotInfoList?.length && g.snapshots?.length) {
    out.volumeSnapshotInfoList = g.snapshots.map((s) => {
      const info: VolumeSnapshotInfo = { volumeHandle: s.source_volume_id, snapshotHandle: s.snapshot_id, readyToUse: s.ready_to_use === true };
      const ct = nanosOf(s.creation_time);
      if (ct !== undefined) info.creationTime = ct;
      if (Number(s.size_bytes ?? 0) > 0) info.restoreSize = Number(s.size_bytes);
      return info;
    });
  }
  if (ready) delete out.error;
  return out;
}

/** The status once the group snapshot is deleted: handle, readiness, time and error go (csi-snapshotter's clearGroupSnapshotContentStatus), the member list stays. */
export function clearedGroupStatus(prev: GroupContentStatus | undefined): GroupContentStatus {
  const out: GroupContentStatus = { ...prev };
  delete out.volumeGroupSnapshotHandle;
  delete out.readyToUse;
  delete out.creationTime;
  delete out.error;
  return out;
}
