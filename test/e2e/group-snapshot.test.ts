// VolumeGroupSnapshots through Kubernetes, on the real cluster: the common snapshot-controller
// (external-snapshotter v8.7.0, built by name: test/cluster/build snapshot-controller) with its
// CRDs, our driver (loop backend, which cuts a group with every member's filesystem frozen
// together) and our sidecars as host processes. The user's path, through kubectl objects:
// two claims used by one pod that keeps writing -> a VolumeGroupSnapshot of them by label ->
// ready, with a member VolumeSnapshot per claim -> both restored into new claims -> a pod
// reads both, and they are of one instant; then a pre-provisioned group content, a Retain
// class and a failure the user must see. The sidecars reach the driver through a CsiGate, so
// what the snapshotter sent can be checked. One cluster for the whole file.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import path from 'node:path';
import { ClusterEnv, DRIVER, MIN, NODE_NAME, claim, pod, storageClass } from '../lib/cluster-env.js';
import { DriverHarness } from '../lib/driver-harness.js';
import { CsiGate } from '../lib/csi-gate.js';
import { ANN_GROUP_BEING_CREATED, GROUP_CONTENT_FINALIZER } from '../../sidecars/snapshotter/group-content.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const GROUP_API = 'groupsnapshot.storage.k8s.io/v1';
const SC = 'tscsi-group-wffc';
const CLASS = 'tscsi-group';
const env = new ClusterEnv();
let driver: DriverHarness | undefined;
let gate: CsiGate | undefined;
const results: Record<string, number | string> = {};
const t0 = Date.now();

const sidecar = (name: string) => path.join(ROOT, 'dist', 'sidecars', name, 'main.js');

/** The cache directories of test/cluster/build's snapshot CRDs and snapshot-controller, built (once, cached) first. */
async function snapshotMachinery(): Promise<{ crds: string; controller: string }> {
  await execa('bash', [path.join(ROOT, 'test', 'cluster', 'build'), 'snapshot-crds', 'snapshot-controller'], { stderr: 'inherit' });
  const versions = path.join(ROOT, 'test', 'cluster', 'lib', 'versions.sh');
  const r = await execa('bash', ['-c', '. "$1" && printf "%s\\n%s" "$SNAPSHOT_CRDS_DIR" "$SNAPSHOT_CONTROLLER_BIN"', '-', versions]);
  const [crds, bin] = r.stdout.split('\n');
  return { crds, controller: path.join(bin, 'snapshot-controller') };
}

beforeAll(async () => {
  const built = await snapshotMachinery();
  await env.up();
  results.clusterUpS = Math.round((Date.now() - t0) / 1000);
  await env.kubectl(['apply', '--server-side', '-f', built.crds]);
  await env.kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd', '--all']);
  const socket = path.join(env.kubeletDir, 'plugins', DRIVER, 'csi.sock');
  driver = await DriverHarness.start({ socketPath: socket, nodeId: NODE_NAME, pathRoots: [env.kubeletDir], driver: { defaultFsType: 'ext4' } });
  const gated = path.join(env.runDir, 'gate.sock');
  gate = await CsiGate.start(socket, gated);
  const kc = ['--kubeconfig', env.kubeconfig];
  env.start('registrar', [sidecar('registrar'), '--csi-address', socket, '--kubelet-registration-path', socket, '--plugin-registration-dir', path.join(env.kubeletDir, 'plugins_registry')]);
  for (const n of ['provisioner', 'attacher', 'snapshotter']) env.start(n, [sidecar(n), '--csi-address', gated, ...kc]);
  env.start('snapshot-controller', [...kc, '--retry-interval-max=10s'], built.controller);
  await env.registerDriver();
  await env.apply(storageClass(SC, { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete' }));
  // The class names a Secret, as a real backend's would: the sidecar must pass it on, and the
  // snapshot-controller records it on the contents for the delete.
  await env.apply({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'group-creds', namespace: 'default' }, stringData: { userID: 'grp', userKey: 'key-of-grp' } });
  await env.apply(groupClass(CLASS, { 'csi.storage.k8s.io/group-snapshotter-secret-name': 'group-creds', 'csi.storage.k8s.io/group-snapshotter-secret-namespace': 'default' }));
}, 30 * MIN);

afterAll(async () => {
  env.printErrors(['snapshotter', 'provisioner', 'attacher']);
  await env.down();
  await gate?.close();
  await driver?.cleanup(); // its data directory, with every volume and snapshot a failed case left
  results.fileS = Math.round((Date.now() - t0) / 1000);
  console.log(`group snapshot e2e: ${JSON.stringify(results)}`);
}, 15 * MIN);

function groupClass(name: string, parameters: Record<string, string>) {
  return { apiVersion: GROUP_API, kind: 'VolumeGroupSnapshotClass', metadata: { name }, driver: DRIVER, deletionPolicy: 'Delete', parameters };
}

/** A busybox pod (cluster-env's) with claim `a` at /a and `b` at /b. */
function podOfTwo(name: string, a: string, b: string, script: string) {
  const p = pod(name, a, script);
  const [c] = p.spec.containers;
  return {
    ...p,
    spec: { ...p.spec, containers: [{ ...c, volumeMounts: [{ name: 'a', mountPath: '/a' }, { name: 'b', mountPath: '/b' }] }], volumes: [{ name: 'a', persistentVolumeClaim: { claimName: a } }, { name: 'b', persistentVolumeClaim: { claimName: b } }] },
  };
}

const describeAll = async () => `${await env.kubectl(['describe', 'volumegroupsnapshot,volumegroupsnapshotcontent,volumesnapshot,volumesnapshotcontent,pvc,pod'])}\n--- snapshotter ---\n${env.log('snapshotter').split('\n').slice(-15).join('\n')}\n--- snapshot-controller ---\n${env.log('snapshot-controller').split('\n').slice(-15).join('\n')}`;

/** The VolumeGroupSnapshot once readyToUse. */
function readyGroup(name: string): Promise<any> {
  return env.waitFor(
    `VolumeGroupSnapshot ${name} readyToUse`,
    async () => {
      const x = await env.json(['get', 'volumegroupsnapshot', name]);
      return x.status?.readyToUse === true && x;
    },
    3 * MIN,
    describeAll,
  );
}

/** The VolumeSnapshots the snapshot-controller made for group `uid`, once there are `n`, each ready, by the claim each is of. */
function readyMembers(uid: string, n: number): Promise<Map<string, any>> {
  return env.waitFor(
    `${n} ready member VolumeSnapshots`,
    async () => {
      const members = (await env.json(['get', 'volumesnapshot'])).items.filter((s: any) => s.metadata.ownerReferences?.some((o: any) => o.uid === uid));
      return members.length === n && members.every((s: any) => s.status?.readyToUse === true) && new Map<string, any>(members.map((s: any) => [s.spec.source.persistentVolumeClaimName, s]));
    },
    2 * MIN,
    describeAll,
  );
}

// Each iteration writes i to /a then to /b (write a temporary, rename over: a file is never
// seen half-written), so at any instant /a holds i or i+1 while /b holds i. Snapshots of one
// instant keep that; two snapshots cut one after the other find /b far behind or ahead.
const WRITE_BOTH_FOREVER = 'echo 1 > /a/n && echo 1 > /b/n && sync && echo writing; i=1; while true; do i=$((i+1)); echo $i > /a/t; mv /a/t /a/n; echo $i > /b/t; mv /b/t /b/n; done';

describe('a VolumeGroupSnapshot through the snapshot-controller and our snapshotter', () => {
  it('of two claims one pod keeps writing: ready with a member snapshot per claim; both restore into new claims a pod reads as of one instant', { timeout: 12 * MIN }, async () => {
    for (const n of ['grp-a', 'grp-b']) await env.apply({ ...claim(n, SC, '32Mi'), metadata: { name: n, namespace: 'default', labels: { group: 'grp' } } });
    await env.apply(podOfTwo('writer', 'grp-a', 'grp-b', WRITE_BOTH_FOREVER));
    await env.waitPhase('writer', ['Running']);
    await env.waitFor('writer writing', async () => (await env.logs('writer')).includes('writing'));
    const handles = [(await env.bound('grp-a')).handle, (await env.bound('grp-b')).handle];

    const started = Date.now();
    await env.apply({ apiVersion: GROUP_API, kind: 'VolumeGroupSnapshot', metadata: { name: 'grp-snap', namespace: 'default' }, spec: { volumeGroupSnapshotClassName: CLASS, source: { selector: { matchLabels: { group: 'grp' } } } } });
    const vgs = await readyGroup('grp-snap');
    results.groupReadyMs = Date.now() - started;
    const members = await readyMembers(vgs.metadata.uid, 2);
    results.membersReadyMs = Date.now() - started;
    await env.kubectl(['delete', 'pod', 'writer', '--wait=true', '--timeout=120s']);

    // the group content: ours, named by the controller, with the driver's group and its members
    const contentName = vs(vgs).boundVolumeGroupSnapshotContentName;
    const content = await env.json(['get', 'volumegroupsnapshotcontent', contentName]);
    const group = (await driver!.client!.GroupController.GetVolumeGroupSnapshot({ group_snapshot_id: content.status.volumeGroupSnapshotHandle })).group_snapshot;
    expect(group.snapshots.map((s: any) => s.source_volume_id).sort()).toEqual([...handles].sort());
    expect(content.status.volumeSnapshotInfoList.map((i: any) => [i.volumeHandle, i.snapshotHandle]).sort()).toEqual(group.snapshots.map((s: any) => [s.source_volume_id, s.snapshot_id]).sort());
    expect(content.metadata.finalizers).toContain(GROUP_CONTENT_FINALIZER);
    await env.waitFor('being-created mark gone once ready', async () => (await env.json(['get', 'volumegroupsnapshotcontent', contentName])).metadata.annotations?.[ANN_GROUP_BEING_CREATED] === undefined);
    // csi-snapshotter's name for it, and the class's secret passed on, its keys kept from the driver
    const [create] = gate!.seen('CreateVolumeGroupSnapshot');
    expect(create.request).toMatchObject({ name: `groupsnapshot-${vgs.metadata.uid}`, secrets: { userID: 'grp', userKey: 'key-of-grp' }, parameters: {} });
    expect([...create.request.source_volume_ids].sort()).toEqual([...handles].sort());

    // each member VolumeSnapshot is bound to a content whose snapshot is of its claim's volume
    for (const [pvc, handle] of [['grp-a', handles[0]], ['grp-b', handles[1]]]) {
      const m = members.get(pvc);
      expect(m, `member snapshot of ${pvc}`).toBeTruthy();
      const mc = await env.json(['get', 'volumesnapshotcontent', m.status.boundVolumeSnapshotContentName]);
      expect(group.snapshots.find((s: any) => s.snapshot_id === mc.status.snapshotHandle)?.source_volume_id).toBe(handle);
    }

    // both restored; one pod reads them: the two counters are of one instant
    const restoreStarted = Date.now();
    for (const [n, pvc] of [['restored-a', 'grp-a'], ['restored-b', 'grp-b']]) {
      await env.apply(claim(n, SC, '32Mi', { dataSource: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: members.get(pvc).metadata.name } }));
    }
    await env.apply(podOfTwo('reader', 'restored-a', 'restored-b', 'echo "a=$(cat /a/n) b=$(cat /b/n)"'));
    await env.waitPhase('reader', ['Succeeded', 'Failed'], 4 * MIN, describeAll);
    results.restoreToReadMs = Date.now() - restoreStarted;
    const read = /a=(\d+) b=(\d+)/.exec(await env.logs('reader'));
    expect(read, await env.logs('reader')).toBeTruthy();
    const [a, b] = [Number(read![1]), Number(read![2])];
    results.countersRead = `a=${a} b=${b}`;
    expect(b).toBeGreaterThanOrEqual(1);
    expect([b, b + 1]).toContain(a);
    expect(await env.phase('reader')).toBe('Succeeded');
    await env.kubectl(['delete', 'pod', 'reader', '--wait=true', '--timeout=120s']);
    await env.kubectl(['delete', 'pvc', 'restored-a', 'restored-b', '--wait=true', '--timeout=120s']);

    // deleting the VolumeGroupSnapshot (class policy Delete) takes its members, its content and the driver's group along
    await env.kubectl(['delete', 'volumegroupsnapshot', 'grp-snap', '--wait=true', '--timeout=180s']);
    await env.waitFor(`group content ${contentName} gone`, async () => (await env.kubectl(['get', 'volumegroupsnapshotcontent', contentName, '--ignore-not-found', '-o', 'name'])) === '', 2 * MIN, describeAll);
    await env.waitFor('member snapshots gone', async () => (await env.json(['get', 'volumesnapshot'])).items.length === 0, 2 * MIN, describeAll);
    const deleted = gate!.seen('DeleteVolumeGroupSnapshot', (r) => r.group_snapshot_id === group.group_snapshot_id);
    expect(deleted.length).toBeGreaterThan(0);
    expect([...deleted[0].request.snapshot_ids].sort()).toEqual(group.snapshots.map((s: any) => s.snapshot_id).sort());
    expect(deleted[0].request.secrets).toEqual({ userID: 'grp', userKey: 'key-of-grp' });
    await expect(driver!.client!.GroupController.GetVolumeGroupSnapshot({ group_snapshot_id: group.group_snapshot_id })).rejects.toMatchObject({ code: 5 });
    const left = (await driver!.client!.Controller.ListSnapshots({})).entries.map((e: any) => e.snapshot.snapshot_id);
    for (const s of group.snapshots) expect(left).not.toContain(s.snapshot_id);
  });

  it('a pre-provisioned VolumeGroupSnapshotContent of a group snapshot made out of band becomes ready through GetVolumeGroupSnapshot and binds its VolumeGroupSnapshot; an unbound one under Delete takes the group snapshot along when deleted', { timeout: 5 * MIN }, async () => {
    const handles = [(await env.bound('grp-a')).handle, (await env.bound('grp-b')).handle];
    const outOfBand = async (name: string) => {
      const g = (await driver!.client!.GroupController.CreateVolumeGroupSnapshot({ name, source_volume_ids: handles })).group_snapshot;
      return { made: g, ids: g.snapshots.map((s: any) => s.snapshot_id) as string[] };
    };
    const imported = (name: string, ref: string, g: { made: any; ids: string[] }, finalizers: string[] = []) => ({
      apiVersion: GROUP_API,
      kind: 'VolumeGroupSnapshotContent',
      metadata: { name, finalizers },
      spec: { driver: DRIVER, deletionPolicy: 'Delete', source: { groupSnapshotHandles: { volumeGroupSnapshotHandle: g.made.group_snapshot_id, volumeSnapshotHandles: g.ids } }, volumeGroupSnapshotRef: { name: ref, namespace: 'default' } },
    });
    const first = await outOfBand('out-of-band-group');
    const { made, ids } = first;
    await env.apply(imported('imported-group-content', 'imported-group', first));
    await env.apply({ apiVersion: GROUP_API, kind: 'VolumeGroupSnapshot', metadata: { name: 'imported-group', namespace: 'default' }, spec: { source: { volumeGroupSnapshotContentName: 'imported-group-content' } } });
    await readyGroup('imported-group');
    const content = await env.json(['get', 'volumegroupsnapshotcontent', 'imported-group-content']);
    expect(content.status).toMatchObject({ volumeGroupSnapshotHandle: made.group_snapshot_id, readyToUse: true });
    const got = gate!.seen('GetVolumeGroupSnapshot', (r) => r.group_snapshot_id === made.group_snapshot_id);
    expect(got.length).toBeGreaterThan(0);
    expect([...got[0].request.snapshot_ids].sort()).toEqual([...ids].sort());
    expect(gate!.seen('CreateVolumeGroupSnapshot', (r) => r.name === 'out-of-band-group')).toHaveLength(0);
    // The snapshot-controller v8.7.0 mostly leaves a bound pre-provisioned group content behind
    // when its VolumeGroupSnapshot goes (the user removes it, and the driver's group stays), but
    // not always: when it marks the content for deletion first, the Delete policy takes the group
    // along. Either is a user's outcome; more than one DeleteVolumeGroupSnapshot is not.
    await env.kubectl(['delete', 'volumegroupsnapshot', 'imported-group', '--wait=true', '--timeout=120s']);
    await removeAsUser(['volumegroupsnapshotcontent/imported-group-content']);
    const deletedWithIt = gate!.seen('DeleteVolumeGroupSnapshot', (r) => r.group_snapshot_id === made.group_snapshot_id).length;
    expect(deletedWithIt).toBeLessThanOrEqual(1);
    if (deletedWithIt === 0) await driver!.client!.GroupController.DeleteVolumeGroupSnapshot({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: ids });

    // unbound (no VolumeGroupSnapshot UID): checked all the same, and the user's delete alone lets
    // it go, with its group snapshot (held by the protection finalizer until then, as the
    // snapshot-controller would put it on a bound one)
    const loose = await outOfBand('out-of-band-group-2');
    await env.apply(imported('loose-group-content', 'nobody', loose, [GROUP_CONTENT_FINALIZER]));
    await env.waitFor('loose group content ready', async () => (await env.json(['get', 'volumegroupsnapshotcontent', 'loose-group-content'])).status?.readyToUse === true, 2 * MIN, describeAll);
    await env.kubectl(['delete', 'volumegroupsnapshotcontent', 'loose-group-content', '--wait=true', '--timeout=120s']);
    const deleted = gate!.seen('DeleteVolumeGroupSnapshot', (r) => r.group_snapshot_id === loose.made.group_snapshot_id);
    expect(deleted).toHaveLength(1);
    expect([...deleted[0].request.snapshot_ids].sort()).toEqual([...loose.ids].sort());
    await expect(driver!.client!.GroupController.GetVolumeGroupSnapshot({ group_snapshot_id: loose.made.group_snapshot_id })).rejects.toMatchObject({ code: 5 });
  });

  it('under a Retain class, deleting the VolumeGroupSnapshot keeps the group content and the group snapshot', { timeout: 5 * MIN }, async () => {
    await env.apply({ ...groupClass('tscsi-group-retain', {}), deletionPolicy: 'Retain' });
    await env.apply({ apiVersion: GROUP_API, kind: 'VolumeGroupSnapshot', metadata: { name: 'kept-group', namespace: 'default' }, spec: { volumeGroupSnapshotClassName: 'tscsi-group-retain', source: { selector: { matchLabels: { group: 'grp' } } } } });
    const vgs = await readyGroup('kept-group');
    await readyMembers(vgs.metadata.uid, 2);
    const contentName = vs(vgs).boundVolumeGroupSnapshotContentName;
    const id = (await env.json(['get', 'volumegroupsnapshotcontent', contentName])).status.volumeGroupSnapshotHandle;
    await env.kubectl(['delete', 'volumegroupsnapshot', 'kept-group', '--wait=true', '--timeout=180s']);
    await env.waitFor('member snapshots gone', async () => (await env.json(['get', 'volumesnapshot'])).items.length === 0, 2 * MIN, describeAll);
    expect((await env.json(['get', 'volumegroupsnapshotcontent', contentName])).status.volumeGroupSnapshotHandle).toBe(id);
    const kept = (await driver!.client!.GroupController.GetVolumeGroupSnapshot({ group_snapshot_id: id })).group_snapshot;
    expect(kept.snapshots).toHaveLength(2);
    expect(gate!.seen('DeleteVolumeGroupSnapshot', (r) => r.group_snapshot_id === id)).toHaveLength(0);
    // what is kept is the user's to remove: the contents, then the group snapshot
    const members = (await env.json(['get', 'volumesnapshotcontent'])).items.filter((c: any) => c.status?.volumeGroupSnapshotHandle === id).map((c: any) => `volumesnapshotcontent/${c.metadata.name}`);
    await removeAsUser([`volumegroupsnapshotcontent/${contentName}`, ...members]);
    await driver!.client!.GroupController.DeleteVolumeGroupSnapshot({ group_snapshot_id: id });
  });

  it('a class naming a Secret that does not exist: a readable error on the group content and the VolumeGroupSnapshot, a Warning Event, no group snapshot', { timeout: 5 * MIN }, async () => {
    await env.apply(groupClass('tscsi-group-nocreds', { 'csi.storage.k8s.io/group-snapshotter-secret-name': 'missing-creds', 'csi.storage.k8s.io/group-snapshotter-secret-namespace': 'default' }));
    const calls = gate!.seen('CreateVolumeGroupSnapshot').length;
    await env.apply({ apiVersion: GROUP_API, kind: 'VolumeGroupSnapshot', metadata: { name: 'bad-snap', namespace: 'default' }, spec: { volumeGroupSnapshotClassName: 'tscsi-group-nocreds', source: { selector: { matchLabels: { group: 'grp' } } } } });
    const vgs = await env.waitFor(
      'VolumeGroupSnapshot error',
      async () => {
        const x = await env.json(['get', 'volumegroupsnapshot', 'bad-snap']);
        return x.status?.error?.message && x;
      },
      2 * MIN,
      describeAll,
    );
    const contentName = vs(vgs).boundVolumeGroupSnapshotContentName;
    const content = await env.json(['get', 'volumegroupsnapshotcontent', contentName]);
    expect(content.status.readyToUse).toBe(false);
    expect(content.status.volumeGroupSnapshotHandle).toBeUndefined();
    expect(content.status.error.message).toBe('Failed to create group snapshot: secret default/missing-creds not found');
    expect(vgs.status.error.message).toContain(content.status.error.message);
    const ev = await env.waitFor('GroupSnapshotCreationFailed event', async () => {
      const evs = await env.json(['get', 'events', '-n', 'default', '--field-selector', `involvedObject.name=${contentName}`]);
      return evs.items.find((e: any) => e.reason === 'GroupSnapshotCreationFailed');
    });
    expect(ev).toMatchObject({ type: 'Warning', message: content.status.error.message, involvedObject: { kind: 'VolumeGroupSnapshotContent', name: contentName } });
    expect(gate!.seen('CreateVolumeGroupSnapshot')).toHaveLength(calls);
    // no call was made, so nothing is in flight: the mark was never set and the delete is not held up
    expect(content.metadata.annotations?.[ANN_GROUP_BEING_CREATED]).toBeUndefined();
    await env.kubectl(['delete', 'volumegroupsnapshot', 'bad-snap', '--wait=true', '--timeout=120s']);
    await env.waitFor(`group content ${contentName} gone`, async () => (await env.kubectl(['get', 'volumegroupsnapshotcontent', contentName, '--ignore-not-found', '-o', 'name'])) === '', 2 * MIN, describeAll);
  });
});

/** What a user does with objects no controller will let go: deletes them and takes off a finalizer left on them. */
async function removeAsUser(objects: string[]): Promise<void> {
  for (const o of objects) {
    await env.kubectl(['delete', o, '--ignore-not-found', '--wait=false']);
    if (await env.kubectl(['get', o, '--ignore-not-found', '-o', 'name'])) await env.kubectl(['patch', o, '--type', 'merge', '-p', '{"metadata":{"finalizers":null}}']).catch((e: Error) => expect(e.message).toContain('NotFound'));
  }
}

const vs = (vgs: any) => vgs.status as { boundVolumeGroupSnapshotContentName: string };
