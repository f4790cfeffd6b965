// The snapshotter's decisions from a VolumeSnapshotContent alone (sidecars/snapshotter/content.ts):
// which contents are ours, what a sync does with each, the CreateSnapshot name and parameters,
// the class's secrets and the status a CSI snapshot makes.
import { describe, it, expect } from 'vitest';
import * as content from '../../sidecars/snapshotter/content.js';

const DRIVER = 'csi.tscsi.dev';
const UID = '0b8a3c4e-1f2d-4e5f-9a6b-7c8d9e0f1a2b';

function dynamic(extra: { annotations?: Record<string, string>; deleted?: boolean; status?: content.VolumeSnapshotContent['status']; policy?: 'Delete' | 'Retain' } = {}): content.VolumeSnapshotContent {
  return {
    metadata: { name: 'snapcontent-1', annotations: extra.annotations, deletionTimestamp: extra.deleted ? '2026-01-01T00:00:00Z' : undefined },
    spec: { driver: DRIVER, deletionPolicy: extra.policy ?? 'Delete', volumeSnapshotClassName: 'c', source: { volumeHandle: 'vol-loop-1' }, volumeSnapshotRef: { name: 'snap', namespace: 'team-a', uid: UID } },
    status: extra.status,
  };
}

function imported(uid?: string, deleted = false): content.VolumeSnapshotContent {
  return {
    metadata: { name: 'static-1', deletionTimestamp: deleted ? '2026-01-01T00:00:00Z' : undefined },
    spec: { driver: DRIVER, deletionPolicy: 'Delete', source: { snapshotHandle: 'snap-loop-1' }, volumeSnapshotRef: { name: 'snap', namespace: 'team-a', uid } },
  };
}

describe('which contents the snapshotter acts on', () => {
  const all = { driverName: DRIVER };
  it("takes its driver's contents that name a volume or a snapshot, and no other", () => {
    expect(content.isOurs(dynamic(), all)).toBe(true);
    expect(content.isOurs(imported(), all)).toBe(true);
    expect(content.isOurs(dynamic(), { driverName: 'other.csi.example.com' })).toBe(false);
    expect(content.isOurs({ spec: { driver: DRIVER, source: {} } }, all)).toBe(false);
  });

  it('with --backends, only contents whose volume or snapshot handle is of a backend served', () => {
    const rbd = { driverName: DRIVER, backends: new Set(['rbd']) };
    const loop = { driverName: DRIVER, backends: new Set(['loop', 'lvm']) };
    const ofVolume = (h: string): content.VolumeSnapshotContent => ({ spec: { driver: DRIVER, source: { volumeHandle: h } } });
    const ofSnapshot = (h: string): content.VolumeSnapshotContent => ({ spec: { driver: DRIVER, source: { snapshotHandle: h } } });
    const hex = '0123456789abcdef0123456789abcdef';
    expect(content.isOurs(ofVolume(`vol-rbd-replicapool-${hex}`), rbd)).toBe(true);
    expect(content.isOurs(ofVolume(`vol-rbd-replicapool-${hex}`), loop)).toBe(false);
    expect(content.isOurs(ofSnapshot(`snap-loop-${hex}`), loop)).toBe(true);
    expect(content.isOurs(ofSnapshot(`snap-loop-${hex}`), rbd)).toBe(false);
    expect(content.isOurs(ofVolume('not-an-id'), loop)).toBe(false);
  });
});

describe('what a sync does', () => {
  it('creates a dynamic content until it is ready, then only clears the being-created mark', () => {
    expect(content.actionFor(dynamic())).toBe('create');
    expect(content.actionFor(dynamic({ status: { readyToUse: false, error: { message: 'x' } } }))).toBe('create');
    expect(content.actionFor(dynamic({ status: { snapshotHandle: 's', readyToUse: false } }))).toBe('create');
    expect(content.actionFor(dynamic({ status: { snapshotHandle: 's', readyToUse: true } }))).toBe('ready');
  });

  it('checks a pre-provisioned content (and a group member that has its handle) with ListSnapshots', () => {
    expect(content.actionFor(imported())).toBe('check');
    expect(content.actionFor(dynamic({ annotations: { [content.ANN_GROUP_SNAPSHOT_HANDLE]: 'g' } }))).toBe('none');
    expect(content.actionFor(dynamic({ annotations: { [content.ANN_GROUP_SNAPSHOT_HANDLE]: 'g' }, status: { volumeGroupSnapshotHandle: 'g', snapshotHandle: 's' } }))).toBe('check');
  });

  it('lets a deleted content go only when the snapshot-controller says so and no CreateSnapshot may be in flight', () => {
    expect(content.actionFor(dynamic({ deleted: true }))).toBe('none');
    expect(content.actionFor(dynamic({ deleted: true, annotations: { [content.ANN_BEING_DELETED]: 'yes' } }))).toBe('delete');
    // one that may be in flight is finished first (its answer clears the mark), not waited on forever
    expect(content.actionFor(dynamic({ deleted: true, annotations: { [content.ANN_BEING_DELETED]: 'yes', [content.ANN_BEING_CREATED]: 'yes' } }))).toBe('create');
    expect(content.actionFor(dynamic({ deleted: true, annotations: { [content.ANN_BEING_CREATED]: 'yes' } }))).toBe('create');
    // an unbound static content is the user's alone
    expect(content.actionFor(imported(undefined, true))).toBe('delete');
    expect(content.actionFor(imported(UID, true))).toBe('none');
  });

  it('deletes the snapshot only under Delete, with a handle, outside a group', () => {
    expect(content.deletesSnapshot(dynamic({ status: { snapshotHandle: 's' } }))).toBe(true);
    expect(content.deletesSnapshot(dynamic({ status: { snapshotHandle: 's' }, policy: 'Retain' }))).toBe(false);
    expect(content.deletesSnapshot(dynamic({ status: { readyToUse: false } }))).toBe(false);
    expect(content.deletesSnapshot(dynamic({ status: { snapshotHandle: 's', volumeGroupSnapshotHandle: 'g' } }))).toBe(false);
  });
});

describe('CreateSnapshot input', () => {
  it("names the snapshot after the VolumeSnapshot's UID, as csi-snapshotter does", () => {
    expect(content.snapshotName(dynamic())).toBe(`snapshot-${UID}`);
    expect(content.snapshotName(dynamic(), 'tscsi')).toBe(`tscsi-${UID}`);
    expect(() => content.snapshotName(imported())).toThrow(/not bound to a VolumeSnapshot/);
  });

  it("passes the class's own parameters, keeps the CO's secret keys, refuses unknown CO keys", () => {
    const P = 'csi.storage.k8s.io/';
    expect(content.snapshotParameters({ a: '1', [`${P}snapshotter-secret-name`]: 'n', [`${P}snapshotter-list-secret-namespace`]: 'ns' })).toEqual({ a: '1' });
    expect(() => content.snapshotParameters({ [`${P}snapshoter-secret-name`]: 'typo' })).toThrow(/unknown parameter key "csi.storage.k8s.io\/snapshoter-secret-name"/);
  });

  it("resolves the class's secret templates from the content and its VolumeSnapshot", () => {
    const P = 'csi.storage.k8s.io/snapshotter-secret-';
    expect(content.snapshotSecretRef('snapshotter', { [`${P}name`]: '${volumesnapshot.name}-creds', [`${P}namespace`]: '${volumesnapshot.namespace}' }, dynamic())).toEqual({ name: 'snap-creds', namespace: 'team-a' });
    expect(content.snapshotSecretRef('snapshotter', { [`${P}name`]: 'for-${volumesnapshotcontent.name}', [`${P}namespace`]: 'kube-system' }, dynamic())).toEqual({ name: 'for-snapcontent-1', namespace: 'kube-system' });
    expect(content.snapshotSecretRef('snapshotter', {}, dynamic())).toBeUndefined();
    expect(content.snapshotSecretRef('snapshotter-list', { [`${P}name`]: 'n', [`${P}namespace`]: 'ns' }, dynamic())).toBeUndefined();
  });

  it('refuses half a secret reference, an unknown token and a name that is not one', () => {
    const P = 'csi.storage.k8s.io/snapshotter-secret-';
    expect(() => content.snapshotSecretRef('snapshotter', { [`${P}name`]: 'n' }, dynamic())).toThrow(/both/);
    // the VolumeSnapshot's name is not a namespace token: a user could pick another namespace's secret
    expect(() => content.snapshotSecretRef('snapshotter', { [`${P}name`]: 'n', [`${P}namespace`]: '${volumesnapshot.name}' }, dynamic())).toThrow(/invalid tokens/);
    expect(() => content.snapshotSecretRef('snapshotter', { [`${P}name`]: 'Not_A_Name', [`${P}namespace`]: 'ns' }, dynamic())).toThrow(/not a valid secret name/);
  });

  it('reads the secret recorded on the content for DeleteSnapshot, and refuses a half one', () => {
    expect(content.annotatedSecretRef(dynamic())).toBeUndefined();
    expect(content.annotatedSecretRef(dynamic({ annotations: { [content.ANN_SECRET_NAME]: 'n', [content.ANN_SECRET_NAMESPACE]: 'ns' } }))).toEqual({ name: 'n', namespace: 'ns' });
    expect(() => content.annotatedSecretRef(dynamic({ annotations: { [content.ANN_SECRET_NAME]: 'n' } }))).toThrow(/secret name or namespace not specified/);
  });
});

describe('the status a CSI snapshot makes', () => {
  const snap = { snapshot_id: 'snap-loop-1', size_bytes: '67108864', ready_to_use: true, creation_time: { seconds: '1765000000', nanos: 123456789 } };

  it('carries the handle, readiness, size and creation time in nanoseconds', () => {
    expect(content.statusFromSnapshot(undefined, snap)).toEqual({ snapshotHandle: 'snap-loop-1', readyToUse: true, restoreSize: 67108864, creationTime: Number(1765000000123456789n) });
  });

  it('keeps what was written, clears an error once ready, and leaves out a size of zero', () => {
    const prev = { snapshotHandle: 'snap-loop-1', creationTime: 5, readyToUse: false, error: { message: 'x' } };
    expect(content.statusFromSnapshot(prev, { ...snap, size_bytes: '0' })).toEqual({ snapshotHandle: 'snap-loop-1', creationTime: 5, readyToUse: true });
    expect(content.statusFromSnapshot(prev, { ...snap, ready_to_use: false }).error).toEqual({ message: 'x' });
  });

  it('takes the time of the answer when the driver gives none', () => {
    const now = new Date('2026-12-07T10:00:00Z');
    expect(content.statusFromSnapshot(undefined, { snapshot_id: 's', creation_time: null }, now).creationTime).toBe(now.getTime() * 1e6);
  });

  it('reports an error as readyToUse false with its message, keeping the rest', () => {
    const now = new Date('2026-12-07T10:00:00Z');
    expect(content.errorStatus({ snapshotHandle: 's' }, 'boom', now)).toEqual({ snapshotHandle: 's', readyToUse: false, error: { time: '2026-12-07T10:00:00.000Z', message: 'boom' } });
  });
});
