// The snapshotter's decisions from a VolumeGroupSnapshotContent alone
// (sidecars/snapshotter/group-content.ts): which group contents are ours, what a sync does
// with each, the CreateVolumeGroupSnapshot name, parameters and secrets, and the status (with
// the member list the snapshot-controller reads) a CSI group snapshot makes.
import { describe, it, expect } from 'vitest';
import * as group from '../../sidecars/snapshotter/group-content.js';

const DRIVER = 'csi.tscsi.dev';
const UID = '5d0c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d';
const HEX = '0123456789abcdef0123456789abcdef';
const VOL_A = `vol-loop-${HEX}`;
const VOL_B = `vol-loop-${HEX.replace('0', 'f')}`;
const GROUP_ID = `group-loop-${HEX}`;

type Extra = { annotations?: Record<string, string>; deleted?: boolean; status?: group.GroupContentStatus; policy?: 'Delete' | 'Retain' };

function dynamic(extra: Extra = {}): group.VolumeGroupSnapshotContent {
  return {
    metadata: { name: 'groupsnapcontent-1', annotations: extra.annotations, deletionTimestamp: extra.deleted ? '2026-01-01T00:00:00Z' : undefined },
    spec: { driver: DRIVER, deletionPolicy: extra.policy ?? 'Delete', volumeGroupSnapshotClassName: 'gc', source: { volumeHandles: [VOL_A, VOL_B] }, volumeGroupSnapshotRef: { name: 'vgs', namespace: 'team-a', uid: UID } },
    status: extra.status,
  };
}

function imported(extra: Extra & { uid?: string } = {}): group.VolumeGroupSnapshotContent {
  return {
    metadata: { name: 'static-group', annotations: extra.annotations, deletionTimestamp: extra.deleted ? '2026-01-01T00:00:00Z' : undefined },
    spec: { driver: DRIVER, deletionPolicy: extra.policy ?? 'Delete', source: { groupSnapshotHandles: { volumeGroupSnapshotHandle: GROUP_ID, volumeSnapshotHandles: ['snap-loop-1', 'snap-loop-2'] } }, volumeGroupSnapshotRef: { name: 'vgs', namespace: 'team-a', uid: extra.uid } },
    status: extra.status,
  };
}

describe('which group contents the snapshotter acts on', () => {
  it("takes its driver's group contents that name volumes or a group snapshot, and no other", () => {
    const all = { driverName: DRIVER };
    expect(group.isOurGroup(dynamic(), all)).toBe(true);
    expect(group.isOurGroup(imported(), all)).toBe(true);
    expect(group.isOurGroup(dynamic(), { driverName: 'other.csi.example.com' })).toBe(false);
    expect(group.isOurGroup({ spec: { driver: DRIVER, source: { volumeHandles: [] } } }, all)).toBe(false);
  });

  it('with --backends, only group contents whose volumes or group snapshot are of a backend served', () => {
    const rbd = { driverName: DRIVER, backends: new Set(['rbd']) };
    const loop = { driverName: DRIVER, backends: new Set(['loop']) };
    expect(group.isOurGroup(dynamic(), loop)).toBe(true);
    expect(group.isOurGroup(dynamic(), rbd)).toBe(false);
    expect(group.isOurGroup(imported(), loop)).toBe(true);
    expect(group.isOurGroup(imported(), rbd)).toBe(false);
    expect(group.isOurGroup({ spec: { driver: DRIVER, source: { volumeHandles: ['pvc-not-ours'] } } }, loop)).toBe(false);
  });
});

describe('what a sync does with a group content', () => {
  it('creates a dynamic one until it is ready (again after a failure), then only takes the being-created mark off', () => {
    expect(group.groupActionFor(dynamic())).toBe('create');
    expect(group.groupActionFor(dynamic({ status: { readyToUse: false, error: { message: 'boom' } } }))).toBe('create');
    expect(group.groupActionFor(dynamic({ status: { readyToUse: true, volumeGroupSnapshotHandle: GROUP_ID } }))).toBe('ready');
  });

  it('checks a pre-provisioned one with the driver until it is ready', () => {
    expect(group.groupActionFor(imported({ uid: UID }))).toBe('check');
    expect(group.groupActionFor(imported({ uid: UID, status: { readyToUse: true } }))).toBe('ready');
  });

  it('lets a deleted one go only when the snapshot-controller says so and no create may be in flight', () => {
    const handle = { volumeGroupSnapshotHandle: GROUP_ID, readyToUse: true };
    expect(group.groupActionFor(dynamic({ deleted: true, status: handle }))).toBe('none');
    // one that may be in flight is finished first (its answer clears the mark), not waited on forever
    expect(group.groupActionFor(dynamic({ deleted: true, status: handle, annotations: { [group.ANN_GROUP_BEING_DELETED]: 'yes', [group.ANN_GROUP_BEING_CREATED]: 'yes' } }))).toBe('create');
    expect(group.groupActionFor(dynamic({ deleted: true, status: handle, annotations: { [group.ANN_GROUP_BEING_DELETED]: 'yes' } }))).toBe('delete');
  });

  it('deletes the group snapshot under Delete while the status still names it; otherwise only the finalizer goes', () => {
    const going = { deleted: true, annotations: { [group.ANN_GROUP_BEING_DELETED]: 'yes' } };
    expect(group.groupActionFor(dynamic({ ...going, policy: 'Retain', status: { volumeGroupSnapshotHandle: GROUP_ID } }))).toBe('release');
    // the handle was cleared after DeleteVolumeGroupSnapshot: never deleted twice
    expect(group.groupActionFor(dynamic({ ...going, status: { volumeSnapshotInfoList: [] } }))).toBe('release');
    expect(group.groupActionFor(dynamic({ ...going }))).toBe('release');
  });

  it('an unbound pre-provisioned one goes on the user delete alone, taking its group snapshot under Delete once checked', () => {
    expect(group.groupActionFor(imported({ deleted: true, status: { volumeGroupSnapshotHandle: GROUP_ID, readyToUse: true } }))).toBe('delete');
    expect(group.groupActionFor(imported({ deleted: true, policy: 'Retain', status: { volumeGroupSnapshotHandle: GROUP_ID } }))).toBe('release');
    expect(group.groupActionFor(imported({ uid: UID, deleted: true, status: { volumeGroupSnapshotHandle: GROUP_ID } }))).toBe('none');
  });
});

describe('CreateVolumeGroupSnapshot input', () => {
  it("is named as csi-snapshotter names it, from the VolumeGroupSnapshot's UID", () => {
    expect(group.groupSnapshotName(dynamic())).toBe(`groupsnapshot-${UID}`);
    expect(group.groupSnapshotName(dynamic(), 'grp')).toBe(`grp-${UID}`);
    const unbound = dynamic();
    delete unbound.spec!.volumeGroupSnapshotRef!.uid;
    expect(() => group.groupSnapshotName(unbound)).toThrow(/not bound to a group snapshot/);
  });

  it("passes the class's own parameters, keeps the CO's secret keys to the CO and refuses an unknown CO key", () => {
    const P = 'csi.storage.k8s.io/';
    expect(group.groupParameters({ freeze: 'true', [`${P}group-snapshotter-secret-name`]: 'n', [`${P}group-snapshotter-secret-namespace`]: 'ns', [`${P}group-snapshotter-get-secret-name`]: 'g' })).toEqual({ freeze: 'true' });
    expect(group.groupParameters(undefined)).toEqual({});
    expect(() => group.groupParameters({ [`${P}group-snapshoter-secret-name`]: 'typo' })).toThrow('found unknown parameter key "csi.storage.k8s.io/group-snapshoter-secret-name" with reserved namespace csi.storage.k8s.io/');
  });

  it("resolves the class's secret templates from the group content and its VolumeGroupSnapshot", () => {
    const P = 'csi.storage.k8s.io/group-snapshotter-secret-';
    expect(group.groupSecretRef('group-snapshotter', { [`${P}name`]: '${volumegroupsnapshot.name}-creds', [`${P}namespace`]: '${volumegroupsnapshot.namespace}' }, dynamic())).toEqual({ name: 'vgs-creds', namespace: 'team-a' });
    expect(group.groupSecretRef('group-snapshotter', { [`${P}name`]: 'for-${volumegroupsnapshotcontent.name}', [`${P}namespace`]: 'kube-system' }, dynamic())).toEqual({ name: 'for-groupsnapcontent-1', namespace: 'kube-system' });
    expect(group.groupSecretRef('group-snapshotter-get', { [`${P}name`]: 'n', [`${P}namespace`]: 'ns' }, dynamic())).toBeUndefined();
    expect(() => group.groupSecretRef('group-snapshotter', { [`${P}name`]: 'n' }, dynamic())).toThrow('the VolumeGroupSnapshotClass must give both csi.storage.k8s.io/group-snapshotter-secret-name and -namespace, non-empty, or neither');
    // the namespace may not come from the name the user chose
    expect(() => group.groupSecretRef('group-snapshotter', { [`${P}name`]: 'n', [`${P}namespace`]: '${volumegroupsnapshot.name}' }, dynamic())).toThrow(/invalid tokens/);
  });

  it('reads the secret the snapshot-controller recorded, and refuses a half record', () => {
    expect(group.annotatedGroupSecretRef(dynamic())).toBeUndefined();
    expect(group.annotatedGroupSecretRef(dynamic({ annotations: { [group.ANN_GROUP_SECRET_NAME]: 'n', [group.ANN_GROUP_SECRET_NAMESPACE]: 'ns' } }))).toEqual({ name: 'n', namespace: 'ns' });
    expect(() => group.annotatedGroupSecretRef(dynamic({ annotations: { [group.ANN_GROUP_SECRET_NAMESPACE]: 'ns' } }))).toThrow('cannot retrieve secrets for group snapshot content groupsnapcontent-1: secret name or namespace not specified');
  });
});

describe('the status a group snapshot makes', () => {
  const made: group.CsiGroupSnapshot = {
    group_snapshot_id: GROUP_ID,
    creation_time: { seconds: '1796637600', nanos: 123_456_789 },
    ready_to_use: true,
    snapshots: [
      { snapshot_id: 'snap-loop-a', source_volume_id: VOL_A, size_bytes: '33554432', ready_to_use: true, creation_time: { seconds: '1796637600', nanos: 123_456_789 }, group_snapshot_id: GROUP_ID },
      { snapshot_id: 'snap-loop-b', source_volume_id: VOL_B, size_bytes: '67108864', ready_to_use: true, creation_time: { seconds: '1796637600', nanos: 0 }, group_snapshot_id: GROUP_ID },
    ],
  };

  it('has the handle, readiness, an RFC 3339 time and one member entry per volume as the snapshot-controller reads them', () => {
    expect(group.statusFromGroupSnapshot(undefined, made)).toEqual({
      volumeGroupSnapshotHandle: GROUP_ID,
      readyToUse: true,
      creationTime: '2026-12-07T10:00:00.123Z',
      volumeSnapshotInfoList: [
        { volumeHandle: VOL_A, snapshotHandle: 'snap-loop-a', readyToUse: true, creationTime: 1796637600123456800, restoreSize: 33554432 },
        { volumeHandle: VOL_B, snapshotHandle: 'snap-loop-b', readyToUse: true, creationTime: 1796637600000000000, restoreSize: 67108864 },
      ],
    });
  });

  it('keeps what was written (handle, time, members) and clears a past error once ready', () => {
    const prev: group.GroupContentStatus = { volumeGroupSnapshotHandle: GROUP_ID, creationTime: '2026-01-01T00:00:00Z', readyToUse: false, volumeSnapshotInfoList: [{ volumeHandle: VOL_A, snapshotHandle: 'first' }], error: { message: 'boom' } };
    expect(group.statusFromGroupSnapshot(prev, made)).toEqual({ volumeGroupSnapshotHandle: GROUP_ID, creationTime: '2026-01-01T00:00:00Z', readyToUse: true, volumeSnapshotInfoList: [{ volumeHandle: VOL_A, snapshotHandle: 'first' }] });
    expect(group.statusFromGroupSnapshot({ error: { message: 'boom' } }, { ...made, ready_to_use: false }).error).toEqual({ message: 'boom' });
  });

  it('has no member list for a pre-provisioned group content (csi-snapshotter writes none) and the time of now when the driver gives none', () => {
    const now = new Date('2026-12-07T11:00:00Z');
    expect(group.statusFromGroupSnapshot(undefined, { ...made, creation_time: null }, false, now)).toEqual({ volumeGroupSnapshotHandle: GROUP_ID, readyToUse: true, creationTime: '2026-12-07T11:00:00.000Z' });
  });

  it('names the members for Delete and Get: from the status, else from a pre-provisioned source', () => {
    expect(group.memberSnapshotIds(dynamic({ status: group.statusFromGroupSnapshot(undefined, made) }))).toEqual(['snap-loop-a', 'snap-loop-b']);
    expect(group.memberSnapshotIds(imported())).toEqual(['snap-loop-1', 'snap-loop-2']);
    expect(group.groupHandleOf(imported())).toBe(GROUP_ID);
    expect(group.groupHandleOf(dynamic({ status: { volumeGroupSnapshotHandle: 'g' } }))).toBe('g');
  });

  it('once deleted, loses handle, readiness, time and error, and keeps the member list', () => {
    const s = group.statusFromGroupSnapshot(undefined, made);
    expect(group.clearedGroupStatus({ ...s, error: { message: 'x' } })).toEqual({ volumeSnapshotInfoList: s.volumeSnapshotInfoList });
  });
});
