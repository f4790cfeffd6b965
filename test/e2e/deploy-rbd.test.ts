// The Ceph RBD backend served by the driver installed from deploy/ as pods (#14), on the
// single-node cluster (host network namespace): deploy/overlays/rbd (the controller
// Deployment with provisioner, attacher, resizer and snapshotter; the node DaemonSet) with
// the image built --with-rbd, reaching the test's own Ceph cluster on 127.0.0.1
// (test/lib/ceph/cluster.sh). The admin's part is deploy/examples/storageclass-rbd.yaml filled
// in (the ConfigMap's monitors, the Secret's key; the fuse mapper, as these kernels have no
// rbd driver) and the snapshot machinery (test/lib/snapshot-controller.ts). Everything else
// is kubectl objects: a claim and a pod writing data, a VolumeSnapshot and claims restored
// from it, the CSIStorageCapacity the controller's provisioner publishes from GetCapacity,
// and a VolumeAttributesClass change (QoS limits) through the resizer. The test looks into
// Ceph (admin rbd/ceph) only to see what the driver did there.
//
// Prints the timings a user waits for: claim and pod created -> pod Running, VolumeSnapshot
// readyToUse, restore to Running, class change reached.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import path from 'node:path';
import { ClusterEnv, DRIVER, MIN, NODE_NAME, claim, pod } from '../lib/cluster-env.js';
import { Installation, DEPLOY, NS } from '../lib/deploy-install.js';
import { installSnapshotController } from '../lib/snapshot-controller.js';
import { RBD_CLASS as SC, TestCeph } from '../lib/rbd-install.js';
import { WRITER, claimAndReader, claimFromSnapshot, fsBlocks, podPrinted, removePodsAndClaims, snapshotReady, volumeSnapshot } from '../lib/kube-snapshots.js';
import { snapshotImage, volumeImage } from '../../driver/backends/rbd/index.js';
import { parseSize } from '../../lib/size.js';

const SNAP_CLASS = 'tscsi-rbd-snapshots';
const SOURCE_SIZE = '64Mi';
const LARGER_SIZE = '160Mi';
const SRC = 'rbd-src';

const env = new ClusterEnv();
const inst = new Installation(env, { healthIntervalS: 60, rbd: true });
const ceph = new TestCeph();
const timings: Record<string, number> = {};
const diagnostics = async () =>
  `${await inst.diagnostics()}\n--- snapshots ---\n${await env.kubectl(['get', 'volumesnapshot,volumesnapshotcontent', '-A', '-o', 'yaml']).catch(String)}\n--- ceph images ---\n${await ceph.listing()}`;

async function imagesGone(what: string, images: string[]): Promise<void> {
  await env.waitFor(what, async () => !(await ceph.imagesAndTrash()).some((i) => images.includes(i)), 2 * MIN, diagnostics);
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
  await env.kubectl(['delete', 'volumesnapshot', '--all', '--ignore-not-found', '--wait=true', '--timeout=120s']).catch(() => undefined);
  await removePodsAndClaims(env, SRC, 'rbd-restored', 'rbd-restored-larger').catch(() => undefined);
  await ceph.teardownWith(inst);
  console.log(`deploy-rbd e2e timings (ms): ${JSON.stringify(timings)}; install: ${JSON.stringify(inst.results)}`);
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
