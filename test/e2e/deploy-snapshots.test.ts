// VolumeSnapshots, group snapshots, clones and VolumeAttributesClass changes through the
// installed driver, as a Kubernetes user makes them:
// deploy/ installed as pods (test/lib/deploy-install.ts, as deploy.test.ts does), the
// snapshot CRDs and the real snapshot-controller running in the cluster
// (test/lib/snapshot-controller.ts, from external-snapshotter's own manifests), the example
// VolumeSnapshotClasses of deploy/examples/snapshotclass.yaml, and only kubectl objects:
// claims, pods, VolumeSnapshots, VolumeSnapshotContents. (The test talks CSI to the driver's
// host socket only to take the out-of-band snapshot a static content imports, and to look at
// what is left in the driver after a deletion.) The same flows run on the loop backend and on
// LVM (a volume group of the test's own on a loop-backed PV, given to the installed driver).
//
// Prints the timings a user waits for: VolumeSnapshot created -> readyToUse, restore claim
// and pod created -> pod Running, clone claim and pod created -> pod Running.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ClusterEnv, DRIVER, MIN, NODE_NAME, pod, claim, storageClass } from '../lib/cluster-env.js';
import { Installation, DEPLOY, NS } from '../lib/deploy-install.js';
import { installSnapshotController } from '../lib/snapshot-controller.js';
import { TestVg } from '../lib/lvm-vg.js';
import { loopDevices } from '../lib/driver-harness.js';
import { WRITER, claimAndReader as claimAndReaderOn, claimFromClaim, claimFromSnapshot, fsBlocks, groupMember, groupSnapshotReady, podOfClaims, podPrinted, removeGroupSnapshot, removePodsAndClaims as removeOn, snapshotReady, staticContent, volumeGroupSnapshot, volumeSnapshot } from '../lib/kube-snapshots.js';

const SNAP_DELETE = 'tscsi-snapshots';
const SNAP_RETAIN = 'tscsi-snapshots-retain';
const NODE_ANNOTATION = `${DRIVER}/node`;
const SOURCE_SIZE = '64Mi';
const LARGER_SIZE = '160Mi';

const env = new ClusterEnv();
const inst = new Installation(env, { healthIntervalS: 60 });
const timings: Record<string, number> = {};
let vg: TestVg | undefined;
const diagnostics = async () =>
  `${await inst.diagnostics()}\n--- snapshots ---\n${await env.kubectl(['get', 'volumesnapshot,volumesnapshotcontent', '-A', '-o', 'yaml']).catch(String)}\n--- snapshotter ---\n${await env
    .kubectl(['logs', '-n', NS, 'daemonset/tscsi-node', '-c', 'snapshotter', '--tail=40'])
    .catch(String)}\n--- snapshot-controller ---\n${await env.kubectl(['logs', '-n', 'kube-system', 'deployment/snapshot-controller', '--tail=40']).catch(String)}`;

beforeAll(async () => {
  // its own directory: removed after the cluster (whose driver uses it) is down
  vg = await TestVg.create(fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-e2e-vg-')), 2);
  // The loop backend snapshots and clones a mounted volume only where its data dir reflinks
  // (a copy would keep the application's filesystem frozen for as long as it takes): these
  // hosts are ext4, so the driver keeps its volumes in an XFS pool, as deploy/README.md says.
  // Without device-mapper the LVM backend reads volumes through loop windows onto the PV's
  // backing file, which the driver's container must see at its host path.
  await inst.prepare(['--data-pool-size=2Gi', `--lvm-volume-groups=${vg.name}`, `--lvm-devices=${vg.pv}`], [vg.dir]);
  await inst.install();
  await installSnapshotController(env, inst.work);
  await env.kubectl(['apply', '-f', path.join(DEPLOY, 'examples', 'snapshotclass.yaml')]);
  await env.apply(storageClass('tscsi-e2e-lvm', { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete', parameters: { backend: 'lvm', volumeGroup: vg.name } }));
}, 60 * MIN);

afterAll(async () => {
  await inst.teardown();
  if (vg) {
    // windows the driver left over the PV (a volume staged when the cluster went down), then the PV
    for (const d of (await loopDevices()).filter((x) => x.backFile === vg!.pv)) await execa('losetup', ['-d', d.name], { reject: false });
    await vg.remove();
  }
  console.log(`deploy-snapshots e2e timings (ms): ${JSON.stringify(timings)}; install: ${JSON.stringify(inst.results)}`);
}, 15 * MIN);

/** Claim + reader pod -> Running (kube-snapshots.ts), its volume recorded for the teardown. */
async function claimAndReader(name: string, spec: object): Promise<{ ms: number; out: string }> {
  const r = await claimAndReaderOn(env, name, spec, diagnostics);
  inst.handles.add(r.handle);
  return r;
}

const ready = (name: string, since: number) => snapshotReady(env, name, since, diagnostics);
const exists = async (kind: string, name: string) => (await env.kubectl(['get', kind, name, '--ignore-not-found', '-o', 'name'])).trim() !== '';
const driverHas = async (snapshotId: string) => (await inst.csi!.Controller.ListSnapshots({ snapshot_id: snapshotId })).entries.length > 0;
const removePodsAndClaims = (...names: string[]) => removeOn(env, ...names);

interface Backend {
  name: 'loop' | 'lvm';
  storageClass: string;
  /** LVM without device-mapper (these VMs) copies a source only while it is not mounted: the writer pod goes (and the volume is unstaged) first. */
  sourceUnmounted: boolean;
}

// One describe per backend, every case in order on the same source claim; a function of its
// own because it is one sequence of cases (its length is theirs).
function flows(b: Backend): void {
  const n = (name: string) => `${b.name}-${name}`;
  const time = (what: string, ms: number) => (timings[`${b.name}.${what}`] = ms);
  const fromSnapshot = (name: string, snapshot: string, size: string) => claimFromSnapshot(name, b.storageClass, snapshot, size);
  const fromClaim = (name: string, source: string, size: string) => claimFromClaim(name, b.storageClass, source, size);
  const src = n('src');
  const handlePattern = new RegExp(`^snap-${b.name}-[0-9a-f]{32}$`);

  describe(`VolumeSnapshots and clones of ${b.name} volumes through the installed driver and the snapshot-controller`, () => {
    let sourceHandle = '';
    let sourceBlocks = 0;

    beforeAll(async () => {
      await env.apply(claim(src, b.storageClass, SOURCE_SIZE));
      // 4 MiB of random data and its checksum, flushed: what every copy must hold
      await env.apply(pod(src, src, WRITER));
      await env.waitPhase(src, ['Running'], 4 * MIN, diagnostics);
      const { pvName, handle } = await env.bound(src);
      sourceHandle = handle;
      inst.handles.add(sourceHandle);
      const out = await podPrinted(env, src, 'written', diagnostics);
      sourceBlocks = fsBlocks(out);
      if (b.sourceUnmounted) {
        await env.kubectl(['delete', 'pod', src, '--wait=true', '--timeout=120s']);
        await env.waitFor(`${src} detached`, async () => !(await env.json(['get', 'volumeattachment'])).items.some((a: any) => a.spec.source.persistentVolumeName === pvName), 2 * MIN, diagnostics);
      }
    }, 6 * MIN);

    it('pod writes -> VolumeSnapshot -> readyToUse -> claims from it, the same size and larger -> pods read the data', { timeout: 10 * MIN }, async () => {
      const t0 = Date.now();
      await env.apply(volumeSnapshot(n('snap'), { persistentVolumeClaimName: src }, SNAP_DELETE));
      const { vs, content, ms } = await ready(n('snap'), t0);
      time('snapshotReady', ms);
      // what a user sees: the snapshot's size and time, and a content of our driver naming the source volume
      expect(vs.status.restoreSize).toBe(SOURCE_SIZE);
      expect(vs.status.creationTime).toBeTruthy();
      expect(vs.status.error).toBeUndefined();
      expect(content.spec).toMatchObject({ driver: DRIVER, deletionPolicy: 'Delete', source: { volumeHandle: sourceHandle } });
      expect(content.status.snapshotHandle).toMatch(handlePattern);
      // taken by the one node the volume lives on (sidecars/snapshotter/node-scope.ts)
      expect(content.metadata.annotations[NODE_ANNOTATION]).toBe(NODE_NAME);

      const same = await claimAndReader(n('restored'), fromSnapshot(n('restored'), n('snap'), SOURCE_SIZE));
      time('restoreToRunning', same.ms);
      expect(fsBlocks(same.out)).toBe(sourceBlocks);
      const larger = await claimAndReader(n('restored-larger'), fromSnapshot(n('restored-larger'), n('snap'), LARGER_SIZE));
      time('restoreLargerToRunning', larger.ms);
      // the filesystem grew to the larger volume when it was staged
      expect(fsBlocks(larger.out)).toBeGreaterThan(sourceBlocks * 2);
      expect((await env.json(['get', 'pvc', n('restored-larger')])).status.capacity.storage).toBe(LARGER_SIZE);
    });

    it('a claim cloned from the source claim, the same size and larger -> pods read the data', { timeout: 10 * MIN }, async () => {
      const same = await claimAndReader(n('cloned'), fromClaim(n('cloned'), src, SOURCE_SIZE));
      time('cloneToRunning', same.ms);
      expect(fsBlocks(same.out)).toBe(sourceBlocks);
      const larger = await claimAndReader(n('cloned-larger'), fromClaim(n('cloned-larger'), src, LARGER_SIZE));
      time('cloneLargerToRunning', larger.ms);
      expect(fsBlocks(larger.out)).toBeGreaterThan(sourceBlocks * 2);
      // a clone is a volume of its own: not the source's
      expect((await env.bound(n('cloned'))).handle).not.toBe(sourceHandle);
      await removePodsAndClaims(n('cloned'), n('cloned-larger'));
    });

    it('deletionPolicy Delete: deleting the VolumeSnapshot deletes its content and the snapshot in the driver', { timeout: 5 * MIN }, async () => {
      await removePodsAndClaims(n('restored'), n('restored-larger'));
      const content = (await env.json(['get', 'volumesnapshot', n('snap')])).status.boundVolumeSnapshotContentName;
      const handle = (await env.json(['get', 'volumesnapshotcontent', content])).status.snapshotHandle;
      expect(await driverHas(handle)).toBe(true);
      await env.kubectl(['delete', 'volumesnapshot', n('snap'), '--wait=true', '--timeout=120s']);
      await env.waitFor(`content ${content} gone`, async () => !(await exists('volumesnapshotcontent', content)), 2 * MIN, diagnostics);
      expect(await driverHas(handle)).toBe(false);
    });

    it('deletionPolicy Retain: deleting the VolumeSnapshot keeps its content and the snapshot', { timeout: 5 * MIN }, async () => {
      await env.apply(volumeSnapshot(n('snap-kept'), { persistentVolumeClaimName: src }, SNAP_RETAIN));
      const { content } = await ready(n('snap-kept'), Date.now());
      const name = content.metadata.name;
      expect(content.spec.deletionPolicy).toBe('Retain');
      await env.kubectl(['delete', 'volumesnapshot', n('snap-kept'), '--wait=true', '--timeout=120s']);
      // the VolumeSnapshot is gone; its content and the snapshot stay
      const kept = await env.json(['get', 'volumesnapshotcontent', name]);
      expect(kept.metadata.deletionTimestamp).toBeUndefined();
      expect(kept.status.readyToUse).toBe(true);
      expect(await driverHas(kept.status.snapshotHandle)).toBe(true);
      // an admin deletes the content object: it goes (the sidecar lets it go), the snapshot still stays
      await env.kubectl(['delete', 'volumesnapshotcontent', name, '--wait=true', '--timeout=120s']);
      expect(await driverHas(kept.status.snapshotHandle)).toBe(true);
      await inst.csi!.Controller.DeleteSnapshot({ snapshot_id: kept.status.snapshotHandle });
    });

    it('a static VolumeSnapshotContent imports a snapshot made out of band; a claim restores from it; Delete removes it', { timeout: 8 * MIN }, async () => {
      const made = await inst.csi!.Controller.CreateSnapshot({ name: n('out-of-band'), source_volume_id: sourceHandle });
      const id = made.snapshot.snapshot_id as string;
      await env.apply(staticContent(n('imported-content'), id, n('imported'), 'Delete'));
      const t0 = Date.now();
      await env.apply(volumeSnapshot(n('imported'), { volumeSnapshotContentName: n('imported-content') }));
      const { vs, content, ms } = await ready(n('imported'), t0);
      time('staticReady', ms);
      expect(vs.status.boundVolumeSnapshotContentName).toBe(n('imported-content'));
      expect(content.status.snapshotHandle).toBe(id);
      expect(content.metadata.annotations[NODE_ANNOTATION]).toBe(NODE_NAME);
      expect(vs.status.restoreSize).toBe(SOURCE_SIZE);

      const restored = await claimAndReader(n('from-imported'), fromSnapshot(n('from-imported'), n('imported'), SOURCE_SIZE));
      time('restoreFromStaticToRunning', restored.ms);
      await removePodsAndClaims(n('from-imported'));
      await env.kubectl(['delete', 'volumesnapshot', n('imported'), '--wait=true', '--timeout=120s']);
      await env.waitFor(`${n('imported-content')} gone`, async () => !(await exists('volumesnapshotcontent', n('imported-content'))), 2 * MIN, diagnostics);
      expect(await driverHas(id)).toBe(false);
    });

    afterAll(async () => {
      // the claims' volumes are deleted by the installed driver while it still runs (cluster down follows)
      for (const s of ['snap', 'snap-kept', 'imported']) await env.kubectl(['delete', 'volumesnapshot', n(s), '--ignore-not-found', '--wait=false']).catch(() => undefined);
      await removePodsAndClaims(...['src', 'restored', 'restored-larger', 'cloned', 'cloned-larger', 'from-imported'].map(n)).catch(() => undefined);
    }, 6 * MIN);
  });
}

flows({ name: 'loop', storageClass: 'tscsi-loop', sourceUnmounted: false });
flows({ name: 'lvm', storageClass: 'tscsi-e2e-lvm', sourceUnmounted: true });

// deploy/base/node-admission.yaml, tscsi-node-snapshotcontents: the node service account
// (as its pods' tokens name it, impersonated here with the node the API server would put
// in the token) writes only the contents that name its own node.
describe('the node service account and VolumeSnapshotContents', () => {
  it('may update only contents that name its node', { timeout: 6 * MIN }, async () => {
    await env.apply(claim('vap-src', 'tscsi-loop', SOURCE_SIZE));
    await env.apply(pod('vap-src', 'vap-src', 'sleep 3600'));
    await env.waitPhase('vap-src', ['Running'], 4 * MIN, diagnostics);
    inst.handles.add((await env.bound('vap-src')).handle);
    await env.apply(volumeSnapshot('snap-vap', { persistentVolumeClaimName: 'vap-src' }, SNAP_DELETE));
    const { content } = await ready('snap-vap', Date.now());
    const name = content.metadata.name;
    const asNode = (node: string, ann: string) =>
      env.kubectl(['--as=system:serviceaccount:tscsi:tscsi-node', `--as-user-extra=authentication.kubernetes.io/node-name=${node}`, 'annotate', 'volumesnapshotcontent', name, '--overwrite', ann]);
    await expect(asNode('tscsi-e2e-other-node', 'tscsi.dev/e2e=stolen')).rejects.toThrow(/tscsi-node-snapshotcontents.*\(node tscsi-e2e-other-node\) may not UPDATE VolumeSnapshotContent/s);
    await expect(asNode('tscsi-e2e-other-node', `${NODE_ANNOTATION}=tscsi-e2e-other-node`)).rejects.toThrow(/recorded node '127\.0\.0\.1'/);
    await asNode(NODE_NAME, 'tscsi.dev/e2e=own');
    const after = await env.json(['get', 'volumesnapshotcontent', name]);
    expect(after.metadata.annotations).toMatchObject({ [NODE_ANNOTATION]: NODE_NAME, 'tscsi.dev/e2e': 'own' });
    await env.kubectl(['delete', 'volumesnapshot', 'snap-vap', '--wait=true', '--timeout=120s']);
    await env.waitFor(`content ${name} gone`, async () => !(await exists('volumesnapshotcontent', name)), 2 * MIN, diagnostics);
    await removePodsAndClaims('vap-src');
  });
});

// Group snapshots of node-local volumes through deploy/: the node snapshotter (DaemonSet,
// --node-name) may watch and write VolumeGroupSnapshotContents (rbac.yaml's node role) of its
// own node only (node-admission.yaml, tscsi-node-groupsnapshotcontents).
describe('a VolumeGroupSnapshot of loop claims through the installed node snapshotter', () => {
  const members = ['grp-a', 'grp-b'];
  const groupDiagnostics = async () =>
    `${await env.kubectl(['describe', 'volumegroupsnapshot,volumegroupsnapshotcontent']).catch(String)}\n${await diagnostics()}`;

  it('two claims of one pod -> group ready, taken by the node -> both restored and read; only the node may write it; deleting it deletes the snapshots', { timeout: 12 * MIN }, async () => {
    for (const c of members) await env.apply(groupMember(c, 'tscsi-loop', SOURCE_SIZE, 'deploy-grp'));
    await env.apply(podOfClaims('grp-writer', members, 'echo first > /data/n && echo second > /grp-b/n && sync && echo written && sleep 3600'));
    await env.waitPhase('grp-writer', ['Running'], 4 * MIN, diagnostics);
    const handles = await Promise.all(members.map(async (c) => (await env.bound(c)).handle));
    for (const h of handles) inst.handles.add(h);
    await env.waitFor('grp-writer wrote', async () => (await env.logs('grp-writer')).includes('written'), MIN, diagnostics);

    const t0 = Date.now();
    await env.apply(volumeGroupSnapshot('grp-snap', 'tscsi-group-snapshots', 'deploy-grp'));
    const { vgs, content, snapshotOfClaim: byClaim, readyMs, membersMs } = await groupSnapshotReady(env, 'grp-snap', members.length, t0, groupDiagnostics);
    timings['loop.groupReady'] = readyMs;
    timings['loop.groupMembersReady'] = membersMs;
    const contentName = content.metadata.name;
    expect(content.spec).toMatchObject({ driver: DRIVER, deletionPolicy: 'Delete' });
    expect([...content.spec.source.volumeHandles].sort()).toEqual([...handles].sort());
    expect(content.status.volumeGroupSnapshotHandle).toMatch(/^group-loop-[0-9a-f]{32}$/);
    expect(content.metadata.annotations[NODE_ANNOTATION]).toBe(NODE_NAME);
    const snapshotOf = new Map<string, string>(content.status.volumeSnapshotInfoList.map((i: any) => [i.volumeHandle, i.snapshotHandle]));
    expect([...snapshotOf.keys()].sort()).toEqual([...handles].sort());

    // the member VolumeSnapshots the snapshot-controller made, one per claim, restore into new claims a pod reads
    const restored = members.map((c) => `${c}-restored`);
    const t1 = Date.now();
    for (const [i, c] of members.entries()) {
      await env.apply(claimFromSnapshot(restored[i], 'tscsi-loop', byClaim.get(c)!, SOURCE_SIZE));
    }
    await env.apply(podOfClaims('grp-reader', restored, `echo "a=$(cat /data/n) b=$(cat /${restored[1]}/n)"`));
    await env.waitPhase('grp-reader', ['Succeeded', 'Failed'], 4 * MIN, diagnostics);
    timings['loop.groupRestoreToRead'] = Date.now() - t1;
    for (const c of restored) inst.handles.add((await env.bound(c)).handle);
    expect((await env.logs('grp-reader')).trim()).toBe('a=first b=second');

    // tscsi-node-groupsnapshotcontents: the node's credentials write this content only as its own node
    const asNode = (node: string, ann: string) =>
      env.kubectl(['--as=system:serviceaccount:tscsi:tscsi-node', `--as-user-extra=authentication.kubernetes.io/node-name=${node}`, 'annotate', 'volumegroupsnapshotcontent', contentName, '--overwrite', ann]);
    await expect(asNode('tscsi-e2e-other-node', 'tscsi.dev/e2e=stolen')).rejects.toThrow(/tscsi-node-groupsnapshotcontents.*\(node tscsi-e2e-other-node\) may not UPDATE VolumeGroupSnapshotContent/s);
    await expect(asNode('tscsi-e2e-other-node', `${NODE_ANNOTATION}=tscsi-e2e-other-node`)).rejects.toThrow(/recorded node '127\.0\.0\.1'/);
    await asNode(NODE_NAME, 'tscsi.dev/e2e=own');
    expect((await env.json(['get', 'volumegroupsnapshotcontent', contentName])).metadata.annotations).toMatchObject({ [NODE_ANNOTATION]: NODE_NAME, 'tscsi.dev/e2e': 'own' });

    // class deletionPolicy Delete: the group goes, and with it the member snapshots in the driver
    await env.kubectl(['delete', 'pod', 'grp-reader', 'grp-writer', '--wait=true', '--timeout=120s']);
    await env.kubectl(['delete', 'pvc', ...restored, '--wait=true', '--timeout=120s']);
    for (const id of snapshotOf.values()) expect(await driverHas(id)).toBe(true);
    await removeGroupSnapshot(env, vgs, groupDiagnostics);
    for (const id of snapshotOf.values()) expect(await driverHas(id)).toBe(false);
  });

  afterAll(async () => {
    await env.kubectl(['delete', 'volumegroupsnapshot', 'grp-snap', '--ignore-not-found', '--wait=false']).catch(() => undefined);
    await removePodsAndClaims('grp-reader', 'grp-writer', 'grp-a-restored', 'grp-b-restored', ...members).catch(() => undefined);
  }, 6 * MIN);
});

// VolumeAttributesClass through deploy/: the node DaemonSet's resizer modifies its node's loop
// volume (ControllerModifyVolume) as the node role and the admission policies allow (claim
// status, PV spec.volumeAttributesClassName), with the example class of deploy/examples.
describe('a VolumeAttributesClass change through the installed node resizer', () => {
  const EXAMPLE_CLASS = 'tscsi-loop-buffered';
  /** /sys/block/loopN/loop/dio of the volume's loop device: '1' direct I/O, '0' buffered. */
  const directIO = async (handle: string) => {
    const dev = await env.waitFor(`the loop device of ${handle}`, async () => (await loopDevices()).find((d) => path.basename(d.backFile) === `${handle}.img`), MIN, diagnostics);
    return fs.readFileSync(`/sys/block/${path.basename(dev.name)}/loop/dio`, 'utf8').trim();
  };
  const changeTo = async (cls: string) => {
    const t0 = Date.now();
    await env.kubectl(['patch', 'pvc', 'vac-data', '--type', 'merge', '-p', JSON.stringify({ spec: { volumeAttributesClassName: cls } })]);
    const p = await env.waitFor(`vac-data at class ${cls}`, async () => {
      const c = await env.json(['get', 'pvc', 'vac-data']);
      return c.status.currentVolumeAttributesClassName === cls && !c.status.modifyVolumeStatus && c;
    }, 3 * MIN, async () => `${await env.kubectl(['describe', 'pvc', 'vac-data']).catch(String)}\n${await env.kubectl(['logs', '-n', NS, 'daemonset/tscsi-node', '-c', 'resizer', '--tail=30']).catch(String)}`);
    timings[`loop.modifyTo.${cls}`] = Date.now() - t0;
    return p;
  };

  it('the example class turns direct I/O off on the running pod\'s loop device, another turns it on; the claim and its PV name the class', { timeout: 8 * MIN }, async () => {
    await env.kubectl(['apply', '-f', path.join(DEPLOY, 'examples', 'volumeattributesclass-loop.yaml')]);
    await env.apply({ apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttributesClass', metadata: { name: 'tscsi-e2e-loop-direct' }, driverName: DRIVER, parameters: { directIO: 'true' } });
    await env.apply(claim('vac-data', 'tscsi-loop', SOURCE_SIZE));
    await env.apply(pod('vac-data', 'vac-data', 'echo kept > /data/f && sleep 3600'));
    await env.waitPhase('vac-data', ['Running'], 4 * MIN, diagnostics);
    const { pvName, handle } = await env.bound('vac-data');
    inst.handles.add(handle);

    const buffered = await changeTo(EXAMPLE_CLASS);
    expect(await directIO(handle)).toBe('0');
    expect((buffered.status.conditions ?? []).filter((c: any) => c.type === 'ModifyingVolume' || c.type === 'ModifyVolumeError')).toEqual([]);
    expect((await env.json(['get', 'pv', pvName])).spec.volumeAttributesClassName).toBe(EXAMPLE_CLASS);
    const reasons = (await env.json(['get', 'events', '--field-selector', 'involvedObject.name=vac-data'])).items.map((e: any) => e.reason);
    expect(reasons).toEqual(expect.arrayContaining(['VolumeModify', 'VolumeModifySuccessful']));

    await changeTo('tscsi-e2e-loop-direct');
    expect(await directIO(handle)).toBe('1');
    expect((await env.json(['get', 'pv', pvName])).spec.volumeAttributesClassName).toBe('tscsi-e2e-loop-direct');
    expect(await env.kubectl(['exec', 'vac-data', '--', 'cat', '/data/f'])).toBe('kept');
  });

  afterAll(async () => {
    await removePodsAndClaims('vac-data').catch(() => undefined);
    await env.kubectl(['delete', 'volumeattributesclass', EXAMPLE_CLASS, 'tscsi-e2e-loop-direct', '--ignore-not-found']).catch(() => undefined);
  }, 5 * MIN);
});

// Immediate binding restores a loop volume on the node holding the snapshot: a node whose
// driver does not have the snapshot does not take the claim (sidecars/provisioner/immediate.ts).
// The snapshot of "another node" is a pre-provisioned content recorded on a node that does not
// exist here, whose status (written by that node's snapshotter, here by the test) says ready.
describe('an Immediate-binding claim restored from a snapshot this node does not hold', () => {
  const ELSEWHERE = 'tscsi-e2e-other-node';
  const id = `snap-loop-${'e'.repeat(32)}`;

  it('is not taken by this node, which says why; a snapshot it holds restores', { timeout: 6 * MIN }, async () => {
    await env.apply(storageClass('tscsi-e2e-now', { volumeBindingMode: 'Immediate', reclaimPolicy: 'Delete', parameters: { backend: 'loop' } }));
    await env.apply(staticContent('elsewhere-content', id, 'elsewhere', 'Retain', { [NODE_ANNOTATION]: ELSEWHERE }));
    await env.kubectl(['patch', 'volumesnapshotcontent', 'elsewhere-content', '--subresource=status', '--type', 'merge', '-p', JSON.stringify({ status: { snapshotHandle: id, readyToUse: true, restoreSize: 64 << 20 } })]);
    await env.apply(volumeSnapshot('elsewhere', { volumeSnapshotContentName: 'elsewhere-content' }));
    await ready('elsewhere', Date.now());
    await env.apply(claim('from-elsewhere', 'tscsi-e2e-now', SOURCE_SIZE, { dataSourceRef: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: 'elsewhere' } }));
    const why = await env.waitFor('NodeNotEligible on from-elsewhere', async () => {
      const evs = (await env.json(['get', 'events', '--field-selector', 'involvedObject.name=from-elsewhere'])).items;
      return evs.find((e: any) => e.reason === 'NodeNotEligible');
    }, 2 * MIN, diagnostics);
    expect(why.message).toBe(
      `the source snapshot VolumeSnapshot default/elsewhere (${id}) is not on node ${NODE_NAME}, and a volume is restored where its snapshot is; the provisioner of node ${NODE_NAME} does not take it (Immediate binding: a node that can hold the volume takes it)`,
    );
    const c = await env.json(['get', 'pvc', 'from-elsewhere']);
    expect(c.metadata.annotations?.['volume.kubernetes.io/selected-node']).toBeUndefined();
    expect(c.status.phase).toBe('Pending');

    // a snapshot this node holds: the node takes the claim and restores it
    await env.apply(claim('imm-src', 'tscsi-e2e-now', SOURCE_SIZE));
    inst.handles.add((await env.bound('imm-src')).handle);
    await env.apply(volumeSnapshot('imm-snap', { persistentVolumeClaimName: 'imm-src' }, SNAP_DELETE));
    await ready('imm-snap', Date.now());
    await env.apply(claim('from-here', 'tscsi-e2e-now', SOURCE_SIZE, { dataSourceRef: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: 'imm-snap' } }));
    inst.handles.add((await env.bound('from-here')).handle);
    expect((await env.json(['get', 'pvc', 'from-here'])).metadata.annotations['volume.kubernetes.io/selected-node']).toBe(NODE_NAME);
  });

  afterAll(async () => {
    await removePodsAndClaims('from-elsewhere', 'from-here').catch(() => undefined);
    await env.kubectl(['delete', 'volumesnapshot', 'elsewhere', 'imm-snap', '--ignore-not-found', '--wait=true', '--timeout=120s']).catch(() => undefined);
    await env.kubectl(['delete', 'volumesnapshotcontent', 'elsewhere-content', '--ignore-not-found', '--wait=false']).catch(() => undefined);
    await removePodsAndClaims('imm-src').catch(() => undefined);
    await env.kubectl(['delete', 'storageclass', 'tscsi-e2e-now', '--ignore-not-found']).catch(() => undefined);
  }, 5 * MIN);
});
