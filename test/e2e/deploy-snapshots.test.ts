// VolumeSnapshots and clones through the installed driver, as a Kubernetes user makes them:
// deploy/ installed as pods (test/lib/deploy-install.ts, as deploy.test.ts does), the
// snapshot CRDs and the real snapshot-controller running in the cluster
// (test/lib/snapshot-controller.ts, from external-snapshotter's own manifests), the example
// VolumeSnapshotClasses of deploy/examples/snapshotclass.yaml, and only kubectl objects:
// claims, pods, VolumeSnapshots, VolumeSnapshotContents. (The test talks CSI to the driver's
// host socket only to take the out-of-band snapshot a static content imports, and to look at
// what is left in the driver after a deletion.)
//
// Prints the timings a user waits for: VolumeSnapshot created -> readyToUse, restore claim
// and pod created -> pod Running, clone claim and pod created -> pod Running.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import path from 'node:path';
import { ClusterEnv, DRIVER, MIN, NODE_NAME, pod, claim } from '../lib/cluster-env.js';
import { Installation, DEPLOY, NS } from '../lib/deploy-install.js';
import { installSnapshotController } from '../lib/snapshot-controller.js';

const API = 'snapshot.storage.k8s.io/v1';
const CLASS = 'tscsi-loop';
const SNAP_DELETE = 'tscsi-snapshots';
const SNAP_RETAIN = 'tscsi-snapshots-retain';
const NODE_ANNOTATION = `${DRIVER}/node`;
const SOURCE_SIZE = '64Mi';
const LARGER_SIZE = '160Mi';

const env = new ClusterEnv();
const inst = new Installation(env, { healthIntervalS: 60 });
const timings: Record<string, number> = {};
const diagnostics = async () =>
  `${await inst.diagnostics()}\n--- snapshots ---\n${await env.kubectl(['get', 'volumesnapshot,volumesnapshotcontent', '-A', '-o', 'yaml']).catch(String)}\n--- snapshotter ---\n${await env
    .kubectl(['logs', '-n', NS, 'daemonset/tscsi-node', '-c', 'snapshotter', '--tail=40'])
    .catch(String)}\n--- snapshot-controller ---\n${await env.kubectl(['logs', '-n', 'kube-system', 'deployment/snapshot-controller', '--tail=40']).catch(String)}`;

beforeAll(async () => {
  await inst.prepare();
  await inst.install();
  await installSnapshotController(env, inst.work);
  await env.kubectl(['apply', '-f', path.join(DEPLOY, 'examples', 'snapshotclass.yaml')]);
}, 60 * MIN);

afterAll(async () => {
  await inst.teardown();
  console.log(`deploy-snapshots e2e timings (ms): ${JSON.stringify(timings)}; install: ${JSON.stringify(inst.results)}`);
}, 15 * MIN);

/** A pod that checks the data the source pod wrote and says how big its filesystem is (1K blocks), then stays Running. */
const READER = 'md5sum -c /data/sum && df -k /data | tail -1 && sleep 3600';

/** Claim + pod made together (as an application does) -> pod Running; returns the ms it took and what the pod printed. */
async function claimAndReader(name: string, spec: object): Promise<{ ms: number; out: string }> {
  const t0 = Date.now();
  await env.apply(spec);
  await env.apply(pod(name, name, READER));
  await env.waitPhase(name, ['Running'], 4 * MIN, diagnostics);
  const ms = Date.now() - t0;
  inst.handles.add((await env.bound(name)).handle);
  const out = await env.waitFor(`${name} checked the data`, async () => {
    const l = await env.logs(name);
    return l.includes('/data/blob: OK') && /\d+\s+\d+\s+\d+\s+\d+%/.test(l) && l;
  }, MIN, diagnostics);
  return { ms, out };
}

/** The filesystem's size in 1K blocks from `df -k` as READER prints it. */
const fsBlocks = (out: string) => Number(/\s(\d+)\s+\d+\s+\d+\s+\d+%/.exec(out)![1]);

const fromSnapshot = (name: string, snapshot: string, size: string) =>
  claim(name, CLASS, size, { dataSourceRef: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: snapshot } });
const fromClaim = (name: string, source: string, size: string) => claim(name, CLASS, size, { dataSource: { kind: 'PersistentVolumeClaim', name: source } });

function volumeSnapshot(name: string, source: { persistentVolumeClaimName: string } | { volumeSnapshotContentName: string }, className?: string) {
  return { apiVersion: API, kind: 'VolumeSnapshot', metadata: { name, namespace: 'default' }, spec: { ...(className ? { volumeSnapshotClassName: className } : {}), source } };
}

/** Waits for the VolumeSnapshot to be readyToUse; returns it, its content and the ms from `since`. */
async function ready(name: string, since: number): Promise<{ vs: any; content: any; ms: number }> {
  const vs = await env.waitFor(`VolumeSnapshot ${name} readyToUse`, async () => {
    const v = await env.json(['get', 'volumesnapshot', name]);
    return v.status?.readyToUse === true && v;
  }, 3 * MIN, diagnostics);
  const ms = Date.now() - since;
  return { vs, content: await env.json(['get', 'volumesnapshotcontent', vs.status.boundVolumeSnapshotContentName]), ms };
}

const exists = async (kind: string, name: string) => (await env.kubectl(['get', kind, name, '--ignore-not-found', '-o', 'name'])).trim() !== '';
const driverHas = async (snapshotId: string) => (await inst.csi!.Controller.ListSnapshots({ snapshot_id: snapshotId })).entries.length > 0;

async function removePodsAndClaims(...names: string[]): Promise<void> {
  await env.kubectl(['delete', 'pod', ...names, '--ignore-not-found', '--wait=true', '--timeout=120s']);
  await env.kubectl(['delete', 'pvc', ...names, '--ignore-not-found', '--wait=true', '--timeout=120s']);
}

describe('VolumeSnapshots and clones of loop volumes through the installed driver and the snapshot-controller', () => {
  let sourceHandle = '';
  let sourceBlocks = 0;

  beforeAll(async () => {
    await env.apply(claim('src', CLASS, SOURCE_SIZE));
    // 4 MiB of random data and its checksum, flushed: what every copy must hold
    await env.apply(pod('src', 'src', 'head -c 4194304 /dev/urandom > /data/blob && md5sum /data/blob > /data/sum && sync && df -k /data | tail -1 && echo written && sleep 3600'));
    await env.waitPhase('src', ['Running'], 4 * MIN, diagnostics);
    sourceHandle = (await env.bound('src')).handle;
    inst.handles.add(sourceHandle);
    const out = await env.waitFor('the source pod wrote its data', async () => {
      const l = await env.logs('src');
      return l.includes('written') && l;
    }, MIN, diagnostics);
    sourceBlocks = fsBlocks(out);
  }, 6 * MIN);

  it('pod writes -> VolumeSnapshot -> readyToUse -> claims from it, the same size and larger -> pods read the data', { timeout: 10 * MIN }, async () => {
    const t0 = Date.now();
    await env.apply(volumeSnapshot('snap-1', { persistentVolumeClaimName: 'src' }, SNAP_DELETE));
    const { vs, content, ms } = await ready('snap-1', t0);
    timings.snapshotReady = ms;
    // what a user sees: the snapshot's size and time, and a content of our driver naming the source volume
    expect(vs.status.restoreSize).toBe(SOURCE_SIZE);
    expect(vs.status.creationTime).toBeTruthy();
    expect(vs.status.error).toBeUndefined();
    expect(content.spec).toMatchObject({ driver: DRIVER, deletionPolicy: 'Delete', source: { volumeHandle: sourceHandle } });
    expect(content.status.snapshotHandle).toMatch(/^snap-loop-[0-9a-f]{32}$/);
    // taken by the one node the volume lives on (sidecars/snapshotter/node-scope.ts)
    expect(content.metadata.annotations[NODE_ANNOTATION]).toBe(NODE_NAME);

    const same = await claimAndReader('restored', fromSnapshot('restored', 'snap-1', SOURCE_SIZE));
    timings.restoreToRunning = same.ms;
    expect(fsBlocks(same.out)).toBe(sourceBlocks);
    const larger = await claimAndReader('restored-larger', fromSnapshot('restored-larger', 'snap-1', LARGER_SIZE));
    timings.restoreLargerToRunning = larger.ms;
    // the filesystem grew to the larger volume when it was staged
    expect(fsBlocks(larger.out)).toBeGreaterThan(sourceBlocks * 2);
    expect((await env.json(['get', 'pvc', 'restored-larger'])).status.capacity.storage).toBe(LARGER_SIZE);
  });

  it('a claim cloned from the source claim, the same size and larger -> pods read the data', { timeout: 10 * MIN }, async () => {
    const same = await claimAndReader('cloned', fromClaim('cloned', 'src', SOURCE_SIZE));
    timings.cloneToRunning = same.ms;
    expect(fsBlocks(same.out)).toBe(sourceBlocks);
    const larger = await claimAndReader('cloned-larger', fromClaim('cloned-larger', 'src', LARGER_SIZE));
    timings.cloneLargerToRunning = larger.ms;
    expect(fsBlocks(larger.out)).toBeGreaterThan(sourceBlocks * 2);
    // a clone is a volume of its own: not the source's
    expect((await env.bound('cloned')).handle).not.toBe(sourceHandle);
    await removePodsAndClaims('cloned', 'cloned-larger');
  });

  it('deletionPolicy Delete: deleting the VolumeSnapshot deletes its content and the snapshot in the driver', { timeout: 5 * MIN }, async () => {
    await removePodsAndClaims('restored', 'restored-larger');
    const content = (await env.json(['get', 'volumesnapshot', 'snap-1'])).status.boundVolumeSnapshotContentName;
    const handle = (await env.json(['get', 'volumesnapshotcontent', content])).status.snapshotHandle;
    expect(await driverHas(handle)).toBe(true);
    await env.kubectl(['delete', 'volumesnapshot', 'snap-1', '--wait=true', '--timeout=120s']);
    await env.waitFor(`content ${content} gone`, async () => !(await exists('volumesnapshotcontent', content)), 2 * MIN, diagnostics);
    expect(await driverHas(handle)).toBe(false);
  });

  it('deletionPolicy Retain: deleting the VolumeSnapshot keeps its content and the snapshot', { timeout: 5 * MIN }, async () => {
    await env.apply(volumeSnapshot('snap-kept', { persistentVolumeClaimName: 'src' }, SNAP_RETAIN));
    const { content } = await ready('snap-kept', Date.now());
    const name = content.metadata.name;
    expect(content.spec.deletionPolicy).toBe('Retain');
    await env.kubectl(['delete', 'volumesnapshot', 'snap-kept', '--wait=true', '--timeout=120s']);
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
    const made = await inst.csi!.Controller.CreateSnapshot({ name: 'out-of-band-1', source_volume_id: sourceHandle });
    const id = made.snapshot.snapshot_id as string;
    await env.apply({
      apiVersion: API,
      kind: 'VolumeSnapshotContent',
      metadata: { name: 'imported-content' },
      spec: { driver: DRIVER, deletionPolicy: 'Delete', source: { snapshotHandle: id }, volumeSnapshotRef: { name: 'imported', namespace: 'default' } },
    });
    const t0 = Date.now();
    await env.apply(volumeSnapshot('imported', { volumeSnapshotContentName: 'imported-content' }));
    const { vs, content, ms } = await ready('imported', t0);
    timings.staticReady = ms;
    expect(vs.status.boundVolumeSnapshotContentName).toBe('imported-content');
    expect(content.status.snapshotHandle).toBe(id);
    expect(content.metadata.annotations[NODE_ANNOTATION]).toBe(NODE_NAME);
    expect(vs.status.restoreSize).toBe(SOURCE_SIZE);

    const restored = await claimAndReader('from-imported', fromSnapshot('from-imported', 'imported', SOURCE_SIZE));
    timings.restoreFromStaticToRunning = restored.ms;
    await removePodsAndClaims('from-imported');
    await env.kubectl(['delete', 'volumesnapshot', 'imported', '--wait=true', '--timeout=120s']);
    await env.waitFor('imported-content gone', async () => !(await exists('volumesnapshotcontent', 'imported-content')), 2 * MIN, diagnostics);
    expect(await driverHas(id)).toBe(false);
  });

  // deploy/base/node-admission.yaml, tscsi-node-snapshotcontents: the node service account
  // (as its pods' tokens name it, impersonated here with the node the API server would put
  // in the token) writes only the contents that name its own node.
  it('the node service account may update only contents that name its node', { timeout: 4 * MIN }, async () => {
    await env.apply(volumeSnapshot('snap-vap', { persistentVolumeClaimName: 'src' }, SNAP_DELETE));
    const { content } = await ready('snap-vap', Date.now());
    const name = content.metadata.name;
    const asNode = (node: string, ann: string) =>
      env.kubectl([
        '--as=system:serviceaccount:tscsi:tscsi-node',
        `--as-user-extra=authentication.kubernetes.io/node-name=${node}`,
        'annotate',
        'volumesnapshotcontent',
        name,
        '--overwrite',
        ann,
      ]);
    await expect(asNode('tscsi-e2e-other-node', 'tscsi.dev/e2e=stolen')).rejects.toThrow(/tscsi-node-snapshotcontents.*\(node tscsi-e2e-other-node\) may not UPDATE VolumeSnapshotContent/s);
    await expect(asNode('tscsi-e2e-other-node', `${NODE_ANNOTATION}=tscsi-e2e-other-node`)).rejects.toThrow(/recorded node '127\.0\.0\.1'/);
    await asNode(NODE_NAME, 'tscsi.dev/e2e=own');
    const after = await env.json(['get', 'volumesnapshotcontent', name]);
    expect(after.metadata.annotations).toMatchObject({ [NODE_ANNOTATION]: NODE_NAME, 'tscsi.dev/e2e': 'own' });
    await env.kubectl(['delete', 'volumesnapshot', 'snap-vap', '--wait=true', '--timeout=120s']);
    await env.waitFor(`content ${name} gone`, async () => !(await exists('volumesnapshotcontent', name)), 2 * MIN, diagnostics);
  });

  afterAll(async () => {
    // the claims' volumes are deleted by the installed driver while it still runs (cluster down follows)
    await env.kubectl(['delete', 'volumesnapshot', '--all', '--wait=false']).catch(() => undefined);
    await removePodsAndClaims('src', 'restored', 'restored-larger', 'cloned', 'cloned-larger', 'from-imported').catch(() => undefined);
  }, 6 * MIN);
});
