// The Ceph RBD backend served by the driver installed from deploy/ as pods (#14), on the
// single-node cluster (host network namespace): deploy/overlays/rbd (the controller
// Deployment with provisioner, attacher, resizer and snapshotter; the node DaemonSet) with
// the image built --with-rbd, reaching the test's own Ceph cluster on 127.0.0.1
// (test/lib/ceph/cluster.sh). The admin's part is deploy/examples/storageclass-rbd.yaml filled
// in (the ConfigMap's monitors, the Secret's key; the fuse mapper, as these kernels have no
// rbd driver) and the snapshot machinery (test/lib/snapshot-controller.ts). Everything else
// is kubectl objects: a claim and a pod writing data, a VolumeSnapshot and claims restored
// from it, a claim cloned from the claim, a Retain snapshot whose RBD snapshot outlives its
// VolumeSnapshot and content and is imported again by a pre-provisioned content, a
// VolumeGroupSnapshot of two claims of one pod, the CSIStorageCapacity the controller's
// provisioner publishes from GetCapacity, and a VolumeAttributesClass change (QoS limits)
// through the resizer. The test looks into Ceph (admin rbd/ceph) only to see what the driver
// did there.
//
// Prints the timings a user waits for: claim and pod created -> pod Running, VolumeSnapshot
// readyToUse, restore and clone to Running, group snapshot ready, class change reached.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { ClusterEnv, DRIVER, MIN, NODE_NAME, claim, pod } from '../lib/cluster-env.js';
import { Installation, DEPLOY, NS } from '../lib/deploy-install.js';
import { installSnapshotController } from '../lib/snapshot-controller.js';
import { RBD_CLASS as SC, TestCeph } from '../lib/rbd-install.js';
import { WRITER, claimAndReader, claimFromClaim, claimFromSnapshot, fsBlocks, groupMember, groupSnapshotReady, podOfClaims, podPrinted, removeGroupSnapshot, removePodsAndClaims, snapshotReady, staticContent, volumeGroupSnapshot, volumeSnapshot } from '../lib/kube-snapshots.js';
import { snapshotImage, volumeImage } from '../../driver/backends/rbd/index.js';
import { parseSize } from '../../lib/size.js';

const SNAP_CLASS = 'tscsi-rbd-snapshots';
const SNAP_RETAIN = 'tscsi-rbd-snapshots-retain';
const GROUP_CLASS = 'tscsi-group-snapshots';
const SOURCE_SIZE = '64Mi';
const LARGER_SIZE = '160Mi';
const SRC = 'rbd-src';
const GROUP_CLAIMS = ['rbd-grp-a', 'rbd-grp-b'];
const GROUP_RESTORED = GROUP_CLAIMS.map((c) => `${c}-restored`);

const env = new ClusterEnv();
const inst = new Installation(env, { healthIntervalS: 60, rbd: true });
const ceph = new TestCeph();
const timings: Record<string, number> = {};
/** The objects and Ceph images a user would see, printed with the timings. */
const names: Record<string, string> = {};
const diagnostics = async () =>
  `${await inst.diagnostics()}\n--- snapshots ---\n${await env.kubectl(['get', 'volumesnapshot,volumesnapshotcontent', '-A', '-o', 'yaml']).catch(String)}\n--- ceph images ---\n${await ceph.listing()}`;

async function imagesGone(what: string, images: string[]): Promise<void> {
  await env.waitFor(what, async () => !(await ceph.imagesAndTrash()).some((i) => images.includes(i)), 2 * MIN, diagnostics);
}

/** The example RBD VolumeSnapshotClass (its snapshotter Secret) with deletionPolicy Retain, as an admin would add it. */
function retainClass() {
  const example = (k8s.loadAllYaml(fs.readFileSync(path.join(DEPLOY, 'examples', 'snapshotclass.yaml'), 'utf8')) as any[]).find((o) => o.metadata.name === SNAP_CLASS);
  return { ...example, metadata: { name: SNAP_RETAIN }, deletionPolicy: 'Retain' };
}

beforeAll(async () => {
  await Promise.all([ceph.start(), inst.prepare()]);
  await inst.install(ceph.adminObjects);
  await env.apply(ceph.example!.storageClass);
  await installSnapshotController(env, inst.work);
  await env.kubectl(['apply', '-f', path.join(DEPLOY, 'examples', 'snapshotclass.yaml')]);
}, 60 * MIN);

afterAll(async () => {
  // the driver deletes what it made while it still runs
  await env.kubectl(['delete', 'volumegroupsnapshot', '--all', '--ignore-not-found', '--wait=true', '--timeout=120s']).catch(() => undefined);
  await env.kubectl(['delete', 'volumesnapshot', '--all', '--ignore-not-found', '--wait=true', '--timeout=120s']).catch(() => undefined);
  await removePodsAndClaims(env, SRC, 'rbd-restored', 'rbd-restored-larger', 'rbd-cloned', 'rbd-from-imported', 'rbd-grp-writer', 'rbd-grp-reader', ...GROUP_CLAIMS, ...GROUP_RESTORED).catch(() => undefined);
  await ceph.teardownWith(inst);
  console.log(`deploy-rbd e2e timings (ms): ${JSON.stringify(timings)}; names: ${JSON.stringify(names)}; install: ${JSON.stringify(inst.results)}`);
}, 15 * MIN);

describe('RBD through the driver installed from deploy/overlays/rbd, Ceph on 127.0.0.1', () => {
  let handle = '';
  let sourceBlocks = 0;

  it('a claim of the example RBD StorageClass binds to an image in Ceph; a pod runs on it and writes', { timeout: 6 * MIN }, async () => {
    const t0 = Date.now();
    await env.apply(claim(SRC, SC, SOURCE_SIZE));
    await env.apply(pod(SRC, SRC, WRITER));
    await env.waitPhase(SRC, ['Running'], 4 * MIN, diagnostics);
    timings.claimToRunning = Date.now() - t0;
    const { pvName, handle: h } = await env.bound(SRC);
    handle = h;
    expect(handle).toMatch(/^vol-rbd-/);
    sourceBlocks = fsBlocks(await podPrinted(env, SRC, 'written', diagnostics));
    // the controller made the image in the test's Ceph, the attacher attached it to this node
    expect(await ceph.images()).toContain(volumeImage(handle));
    const va = (await env.json(['get', 'volumeattachment'])).items.find((a: any) => a.spec.source.persistentVolumeName === pvName);
    expect(va).toMatchObject({ spec: { attacher: DRIVER, nodeName: NODE_NAME }, status: { attached: true } });
  });

  it('a VolumeSnapshot of it becomes readyToUse; claims restored from it, the same size and larger, hold the data', { timeout: 10 * MIN }, async () => {
    const t0 = Date.now();
    await env.apply(volumeSnapshot('rbd-snap', { persistentVolumeClaimName: SRC }, SNAP_CLASS));
    const { vs, content, ms } = await snapshotReady(env, 'rbd-snap', t0, diagnostics);
    timings.snapshotReady = ms;
    expect(vs.status.restoreSize).toBe(SOURCE_SIZE);
    expect(content.spec).toMatchObject({ driver: DRIVER, deletionPolicy: 'Delete', source: { volumeHandle: handle } });
    const snapHandle = content.status.snapshotHandle as string;
    expect(snapHandle).toMatch(/^snap-rbd-/);
    Object.assign(names, { 'rbd-snap': content.metadata.name, 'rbd-snap.handle': snapHandle, 'rbd-snap.image': snapshotImage(snapHandle) });
    expect(await ceph.images()).toContain(snapshotImage(snapHandle));

    const same = await claimAndReader(env, 'rbd-restored', claimFromSnapshot('rbd-restored', SC, 'rbd-snap', SOURCE_SIZE), diagnostics);
    timings.restoreToRunning = same.ms;
    expect(fsBlocks(same.out)).toBe(sourceBlocks);
    const larger = await claimAndReader(env, 'rbd-restored-larger', claimFromSnapshot('rbd-restored-larger', SC, 'rbd-snap', LARGER_SIZE), diagnostics);
    timings.restoreLargerToRunning = larger.ms;
    expect(fsBlocks(larger.out)).toBeGreaterThan(sourceBlocks * 2);
    expect((await env.json(['get', 'pvc', 'rbd-restored-larger'])).status.capacity.storage).toBe(LARGER_SIZE);

    // deleting the restored claims (reclaim Delete), then the snapshot (policy Delete), removes their images
    await removePodsAndClaims(env, 'rbd-restored', 'rbd-restored-larger');
    await imagesGone('the restored images gone from Ceph', [volumeImage(same.handle), volumeImage(larger.handle)]);
    await env.kubectl(['delete', 'volumesnapshot', 'rbd-snap', '--wait=true', '--timeout=120s']);
    await imagesGone("the snapshot's image gone from Ceph", [snapshotImage(snapHandle)]);
  });

  it('a claim cloned from the claim in use holds its data, on an image of its own', { timeout: 6 * MIN }, async () => {
    const cloned = await claimAndReader(env, 'rbd-cloned', claimFromClaim('rbd-cloned', SC, SRC, SOURCE_SIZE), diagnostics);
    timings.cloneToRunning = cloned.ms;
    expect(fsBlocks(cloned.out)).toBe(sourceBlocks);
    expect(cloned.handle).not.toBe(handle);
    expect(await ceph.images()).toContain(volumeImage(cloned.handle));
    Object.assign(names, { 'rbd-cloned.pv': (await env.bound('rbd-cloned')).pvName, 'rbd-cloned.image': volumeImage(cloned.handle) });
    await removePodsAndClaims(env, 'rbd-cloned');
    await imagesGone("the clone's image gone from Ceph", [volumeImage(cloned.handle)]);
  });

  let kept = '';

  it('deletionPolicy Retain: the VolumeSnapshot goes, its content and the RBD snapshot stay; deleting the content leaves the snapshot', { timeout: 5 * MIN }, async () => {
    await env.apply(retainClass());
    const t0 = Date.now();
    await env.apply(volumeSnapshot('rbd-snap-kept', { persistentVolumeClaimName: SRC }, SNAP_RETAIN));
    const { content, ms } = await snapshotReady(env, 'rbd-snap-kept', t0, diagnostics);
    timings.retainSnapshotReady = ms;
    expect(content.spec).toMatchObject({ driver: DRIVER, deletionPolicy: 'Retain', source: { volumeHandle: handle } });
    kept = content.status.snapshotHandle;
    Object.assign(names, { 'rbd-snap-kept': content.metadata.name, 'rbd-snap-kept.image': snapshotImage(kept) });
    await env.kubectl(['delete', 'volumesnapshot', 'rbd-snap-kept', '--wait=true', '--timeout=120s']);
    const after = await env.json(['get', 'volumesnapshotcontent', content.metadata.name]);
    expect(after.metadata.deletionTimestamp).toBeUndefined();
    expect(after.status.readyToUse).toBe(true);
    expect(await ceph.images()).toContain(snapshotImage(kept));
    await env.kubectl(['delete', 'volumesnapshotcontent', content.metadata.name, '--wait=true', '--timeout=120s']);
    expect(await ceph.images()).toContain(snapshotImage(kept));
  });

  it('a pre-provisioned VolumeSnapshotContent naming that RBD snapshot imports it; a claim restored from it holds the data; Delete removes the snapshot from Ceph', { timeout: 8 * MIN }, async () => {
    expect(kept).toMatch(/^snap-rbd-/);
    await env.apply(staticContent('rbd-imported-content', kept, 'rbd-imported', 'Delete'));
    const t0 = Date.now();
    await env.apply(volumeSnapshot('rbd-imported', { volumeSnapshotContentName: 'rbd-imported-content' }));
    const { vs, content, ms } = await snapshotReady(env, 'rbd-imported', t0, diagnostics);
    timings.staticReady = ms;
    expect(vs.status.boundVolumeSnapshotContentName).toBe('rbd-imported-content');
    expect(vs.status.restoreSize).toBe(SOURCE_SIZE);
    expect(content.status.snapshotHandle).toBe(kept);

    const restored = await claimAndReader(env, 'rbd-from-imported', claimFromSnapshot('rbd-from-imported', SC, 'rbd-imported', SOURCE_SIZE), diagnostics);
    timings.restoreFromStaticToRunning = restored.ms;
    expect(fsBlocks(restored.out)).toBe(sourceBlocks);
    await removePodsAndClaims(env, 'rbd-from-imported');
    await imagesGone('the restored image gone from Ceph', [volumeImage(restored.handle)]);
    // the content's Delete policy: DeleteSnapshot of a snapshot the driver did not make for it
    await env.kubectl(['delete', 'volumesnapshot', 'rbd-imported', '--wait=true', '--timeout=120s']);
    await env.waitFor('rbd-imported-content gone', async () => (await env.kubectl(['get', 'volumesnapshotcontent', 'rbd-imported-content', '--ignore-not-found', '-o', 'name'])).trim() === '', 2 * MIN, diagnostics);
    await imagesGone("the imported snapshot's image gone from Ceph", [snapshotImage(kept)]);
  });

  // RBD group contents are the controller Deployment's snapshotter's (--backends=rbd), as its
  // VolumeSnapshotContents are: the volumes are not any node's.
  it('a VolumeGroupSnapshot of two claims of one pod: ready, one RBD snapshot per claim; both restored and read, as written together; Delete removes them', { timeout: 12 * MIN }, async () => {
    const groupDiagnostics = async () => `${await env.kubectl(['describe', 'volumegroupsnapshot,volumegroupsnapshotcontent']).catch(String)}\n${await diagnostics()}`;
    for (const c of GROUP_CLAIMS) await env.apply(groupMember(c, SC, SOURCE_SIZE, 'rbd-grp'));
    await env.apply(podOfClaims('rbd-grp-writer', GROUP_CLAIMS, `echo first > /data/n && echo second > /${GROUP_CLAIMS[1]}/n && sync && echo written && sleep 3600`));
    await env.waitPhase('rbd-grp-writer', ['Running'], 4 * MIN, diagnostics);
    const handles = await Promise.all(GROUP_CLAIMS.map(async (c) => (await env.bound(c)).handle));
    await env.waitFor('rbd-grp-writer wrote', async () => (await env.logs('rbd-grp-writer')).includes('written'), MIN, diagnostics);

    const t0 = Date.now();
    await env.apply(volumeGroupSnapshot('rbd-grp-snap', GROUP_CLASS, 'rbd-grp'));
    const { vgs, content, snapshotOfClaim, readyMs, membersMs } = await groupSnapshotReady(env, 'rbd-grp-snap', GROUP_CLAIMS.length, t0, groupDiagnostics);
    timings.groupReady = readyMs;
    timings.groupMembersReady = membersMs;
    expect(content.spec).toMatchObject({ driver: DRIVER, deletionPolicy: 'Delete' });
    expect([...content.spec.source.volumeHandles].sort()).toEqual([...handles].sort());
    expect(content.status.volumeGroupSnapshotHandle).toMatch(/^group-rbd-[0-9a-f]{32}$/);
    const snapshotIds = (content.status.volumeSnapshotInfoList as any[]).map((i) => i.snapshotHandle as string);
    Object.assign(names, { 'rbd-grp-snap': content.metadata.name, 'rbd-grp-snap.handle': content.status.volumeGroupSnapshotHandle, 'rbd-grp-snap.members': [...snapshotOfClaim.values()].join(',') });
    expect(snapshotIds).toHaveLength(2);
    const images = await ceph.images();
    for (const id of snapshotIds) expect(images).toContain(snapshotImage(id));

    const t1 = Date.now();
    for (const [i, c] of GROUP_CLAIMS.entries()) await env.apply(claimFromSnapshot(GROUP_RESTORED[i], SC, snapshotOfClaim.get(c)!, SOURCE_SIZE));
    await env.apply(podOfClaims('rbd-grp-reader', GROUP_RESTORED, `echo "a=$(cat /data/n) b=$(cat /${GROUP_RESTORED[1]}/n)"`));
    await env.waitPhase('rbd-grp-reader', ['Succeeded', 'Failed'], 4 * MIN, diagnostics);
    timings.groupRestoreToRead = Date.now() - t1;
    expect((await env.logs('rbd-grp-reader')).trim()).toBe('a=first b=second');
    const restoredHandles = await Promise.all(GROUP_RESTORED.map(async (c) => (await env.bound(c)).handle));

    // class deletionPolicy Delete: the group goes, and with it the member snapshots in Ceph
    await removePodsAndClaims(env, 'rbd-grp-reader', 'rbd-grp-writer', ...GROUP_RESTORED);
    await imagesGone('the restored images gone from Ceph', restoredHandles.map(volumeImage));
    await removeGroupSnapshot(env, vgs, groupDiagnostics);
    await imagesGone("the group's snapshot images gone from Ceph", snapshotIds.map(snapshotImage));
    await removePodsAndClaims(env, ...GROUP_CLAIMS);
    await imagesGone('the group members gone from Ceph', handles.map(volumeImage));
  });

  // The scheduler reads capacity only for classes that wait for their first consumer (and the
  // provisioner publishes it only for those, as external-provisioner does by default).
  it("the controller's provisioner publishes the pool's free space (GetCapacity) as CSIStorageCapacity of a WaitForFirstConsumer RBD class", { timeout: 3 * MIN }, async () => {
    const wffc = `${SC}-wffc`;
    await env.apply({ ...ceph.example!.storageClass, metadata: { name: wffc }, volumeBindingMode: 'WaitForFirstConsumer' });
    const cap = await env.waitFor(
      `a CSIStorageCapacity of ${wffc}`,
      async () => ((await env.json(['get', 'csistoragecapacity', '-n', NS])).items as any[]).find((c) => c.storageClassName === wffc && c.capacity),
      2 * MIN,
      diagnostics,
    );
    expect(cap.nodeTopology).toEqual({ matchLabels: { 'topology.tscsi.dev/node': NODE_NAME } });
    expect(cap.metadata.ownerReferences).toMatchObject([{ kind: 'Deployment', name: 'tscsi-controller' }]);
    // what `ceph df` says the pool can still take (the driver's answer is cached for seconds
    // and the pool's use moves a little meanwhile: within 10 %)
    const df = JSON.parse((await execa('ceph', ['-c', ceph.env!.conf, 'df', '--format', 'json'], { env: { CEPH_ARGS: '' } })).stdout);
    const maxAvail = df.pools.find((p: any) => p.name === ceph.env!.pool).stats.max_avail as number;
    const published = Number(parseSize(cap.capacity));
    expect(published).toBeGreaterThan(maxAvail * 0.9);
    expect(published).toBeLessThan(maxAvail * 1.1);
  });

  // CSI: the SP modifies only the keys a ControllerModifyVolume names, never on a key's
  // absence; a class lifts a limit by naming it with 0 ("no limit").
  it('a VolumeAttributesClass change sets the QoS limits on the image; a second one changes the limits it names', { timeout: 5 * MIN }, async () => {
    const vac = (name: string, parameters: Record<string, string>) => ({ apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttributesClass', metadata: { name }, driverName: DRIVER, parameters });
    await env.apply(vac('tscsi-rbd-iops', { qosIopsLimit: '500', qosWriteBpsLimit: '4194304' }));
    await env.apply(vac('tscsi-rbd-bps', { qosIopsLimit: '0', qosBpsLimit: '8388608' }));
    const reach = async (cls: string) => {
      const t0 = Date.now();
      await env.kubectl(['patch', 'pvc', SRC, '--type', 'merge', '-p', JSON.stringify({ spec: { volumeAttributesClassName: cls } })]);
      await env.waitFor(
        `claim ${SRC} at class ${cls}`,
        async () => {
          const p = await env.json(['get', 'pvc', SRC]);
          return p.status.currentVolumeAttributesClassName === cls && !p.status.modifyVolumeStatus;
        },
        2 * MIN,
        async () => `${await env.kubectl(['describe', 'pvc', SRC])}\n${await diagnostics()}`,
      );
      timings[`classReached.${cls}`] = Date.now() - t0;
      const meta = await ceph.imageMeta(volumeImage(handle));
      return Object.fromEntries(Object.entries(meta).filter(([k]) => k.startsWith('conf_rbd_qos_')));
    };
    expect(await reach('tscsi-rbd-iops')).toEqual({ conf_rbd_qos_iops_limit: '500', conf_rbd_qos_write_bps_limit: '4194304' });
    expect(await reach('tscsi-rbd-bps')).toEqual({ conf_rbd_qos_iops_limit: '0', conf_rbd_qos_write_bps_limit: '4194304', conf_rbd_qos_bps_limit: '8388608' });
    // the pod kept its volume throughout
    expect(await env.phase(SRC)).toBe('Running');
  });
});
