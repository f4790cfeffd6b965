// Our snapshotter sidecar (sidecars/snapshotter) on the real cluster, with the driver (loop
// backend) and the sidecar as host processes and the snapshot CRDs of external-snapshotter's
// client module (test/cluster/build snapshot-crds). There is no snapshot-controller here:
// the test makes the VolumeSnapshotContents it would make (bound to a VolumeSnapshot, with its
// finalizer) and deletes them as it would (the being-deleted annotation, then delete). The
// sidecar reaches the driver through a CsiGate, so the requests it sent can be checked. One
// cluster, one driver, one sidecar for the whole file.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { ClusterEnv, DRIVER, MIN, NODE_NAME, claim, storageClass } from '../lib/cluster-env.js';
import { parseSize } from '../../lib/size.js';
import { DriverHarness, mountCap } from '../lib/driver-harness.js';
import { CsiGate } from '../lib/csi-gate.js';
import { freePort } from '../lib/wait.js';
import { ANN_BEING_CREATED, ANN_BEING_DELETED, CONTENT_FINALIZER } from '../../sidecars/snapshotter/content.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const BUILD = path.join(ROOT, 'test', 'cluster', 'build');
const API = 'snapshot.storage.k8s.io/v1';
const MiB = 1024 * 1024;
const env = new ClusterEnv();
let driver: DriverHarness | undefined;
let gate: CsiGate | undefined;
let httpPort = 0;
let socket = '';
/** The loop volume every snapshot here is taken of. */
let volumeId = '';
const results: Record<string, number | string> = {};
const t0 = Date.now();

const csi = () => driver!.client!;
const sidecar = (name: string) => path.join(ROOT, 'dist', 'sidecars', name, 'main.js');

/** test/cluster/build's `component`, built once and cached; returns its cache directory (`dirVar` of lib/versions.sh). */
async function built(component: string, dirVar: string): Promise<string> {
  await execa('bash', [BUILD, component], { stderr: 'inherit' });
  const r = await execa('bash', ['-c', `. "$1" && echo "$${dirVar}"`, '-', path.join(ROOT, 'test', 'cluster', 'lib', 'versions.sh')]);
  return r.stdout.trim();
}

beforeAll(async () => {
  const crds = await built('snapshot-crds', 'SNAPSHOT_CRDS_DIR');
  await env.up();
  results.clusterUpS = Math.round((Date.now() - t0) / 1000);
  const files = fs.readdirSync(crds).filter((f) => f.endsWith('.yaml'));
  await env.kubectl(['apply', '--server-side', ...files.flatMap((f) => ['-f', path.join(crds, f)])]);
  await env.kubectl(['wait', '--for=condition=Established', '--timeout=60s', ...files.map((f) => `crd/${f.split('_')[1].replace(/\.yaml$/, '')}.${f.split('_')[0]}`)]);
  socket = path.join(env.kubeletDir, 'plugins', DRIVER, 'csi.sock');
  driver = await DriverHarness.start({ socketPath: socket, nodeId: NODE_NAME, pathRoots: [env.kubeletDir], driver: { defaultFsType: 'ext4' } });
  gate = await CsiGate.start(socket, path.join(env.runDir, 'gate.sock'));
  httpPort = await freePort();
  env.start('snapshotter', [sidecar('snapshotter'), '--csi-address', path.join(env.runDir, 'gate.sock'), '--kubeconfig', env.kubeconfig, '--leader-election', '--http-endpoint', `127.0.0.1:${httpPort}`]);
  volumeId = (await csi().Controller.CreateVolume({ name: 'snap-source', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [mountCap('ext4')] })).volume.volume_id;
  await env.apply(snapshotClass('tscsi-snap', {}));
}, 30 * MIN);

afterAll(async () => {
  env.printErrors(['snapshotter']);
  await env.down();
  await gate?.close();
  await driver?.cleanup(); // its data directory, with every volume and snapshot a failed case left
  results.fileS = Math.round((Date.now() - t0) / 1000);
  console.log(`snapshotter e2e: ${JSON.stringify(results)}`);
}, 15 * MIN);

function snapshotClass(name: string, parameters: Record<string, string>) {
  return { apiVersion: API, kind: 'VolumeSnapshotClass', metadata: { name }, driver: DRIVER, deletionPolicy: 'Delete', parameters };
}

/** A VolumeSnapshot as a user writes it; returns its UID. The snapshot-controller would bind it to a content; here the test does. */
async function volumeSnapshot(name: string, className: string): Promise<string> {
  await env.apply({ apiVersion: API, kind: 'VolumeSnapshot', metadata: { name, namespace: 'default' }, spec: { volumeSnapshotClassName: className, source: { persistentVolumeClaimName: 'src' } } });
  return (await env.json(['get', 'volumesnapshot', name])).metadata.uid;
}

/** The content the snapshot-controller makes for a VolumeSnapshot (dynamic: of a volume) or a user pre-provisions (static: of a snapshot handle). */
function content(name: string, opts: { policy: 'Delete' | 'Retain'; className?: string; volumeHandle?: string; snapshotHandle?: string; ref: { name: string; uid?: string } }) {
  return {
    apiVersion: API,
    kind: 'VolumeSnapshotContent',
    metadata: { name, finalizers: [CONTENT_FINALIZER] },
    spec: {
      driver: DRIVER,
      deletionPolicy: opts.policy,
      ...(opts.className ? { volumeSnapshotClassName: opts.className } : {}),
      source: opts.volumeHandle ? { volumeHandle: opts.volumeHandle } : { snapshotHandle: opts.snapshotHandle },
      volumeSnapshotRef: { apiVersion: API, kind: 'VolumeSnapshot', namespace: 'default', ...opts.ref },
    },
  };
}

const getContent = (name: string) => env.json(['get', 'volumesnapshotcontent', name]);

async function readyContent(name: string): Promise<any> {
  return env.waitFor(`content ${name} readyToUse`, async () => {
    const c = await getContent(name);
    return c.status?.readyToUse === true && c;
  }, 2 * MIN, async () => `${JSON.stringify(await getContent(name))}\n${env.log('snapshotter').split('\n').slice(-20).join('\n')}`);
}

/** What the snapshot-controller does when the VolumeSnapshot goes: mark the content, delete it; the sidecar lets it go. */
async function deleteAsController(name: string): Promise<void> {
  await env.kubectl(['annotate', 'volumesnapshotcontent', name, `${ANN_BEING_DELETED}=yes`]);
  await env.kubectl(['delete', 'volumesnapshotcontent', name, '--wait=false']);
  await env.waitFor(`content ${name} gone`, async () => (await env.kubectl(['get', 'volumesnapshotcontent', name, '--ignore-not-found', '-o', 'name'])) === '');
}

async function snapshotById(id: string): Promise<any | undefined> {
  const r = await csi().Controller.ListSnapshots({ snapshot_id: id });
  return r.entries[0]?.snapshot;
}

describe('the snapshotter sidecar on the real cluster', () => {
  it('a dynamic content bound to a VolumeSnapshot gets readyToUse with a real snapshot behind it; deleting it under Delete deletes the snapshot', { timeout: 5 * MIN }, async () => {
    await env.apply({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'snap-creds', namespace: 'default' }, stringData: { userID: 'snap', userKey: 'key-of-snap' } });
    await env.apply(
      snapshotClass('tscsi-snap-secret', {
        'csi.storage.k8s.io/snapshotter-secret-name': '${volumesnapshot.name}-creds',
        'csi.storage.k8s.io/snapshotter-secret-namespace': '${volumesnapshot.namespace}',
      }),
    );
    const uid = await volumeSnapshot('snap', 'tscsi-snap-secret');
    const started = Date.now();
    await env.apply(content('snapcontent-dyn', { policy: 'Delete', className: 'tscsi-snap-secret', volumeHandle: volumeId, ref: { name: 'snap', uid } }));
    const c = await readyContent('snapcontent-dyn');
    results.dynamicReadyMs = Date.now() - started;
    const handle = c.status.snapshotHandle;
    const snap = await snapshotById(handle);
    expect(snap).toMatchObject({ snapshot_id: handle, source_volume_id: volumeId, ready_to_use: true });
    expect(c.status.restoreSize).toBe(Number(snap.size_bytes));
    expect(c.status.creationTime).toBe(Number(BigInt(snap.creation_time.seconds) * 1_000_000_000n + BigInt(snap.creation_time.nanos)));
    expect(c.status.error).toBeUndefined();
    // The sidecar writes the ready status, then takes its being-created mark off (csi-snapshotter's
    // order), so a read in between sees both: the mark must go, not be gone at that instant.
    await env.waitFor('being-created mark gone once ready', async () => (await getContent('snapcontent-dyn')).metadata.annotations?.[ANN_BEING_CREATED] === undefined);
    // csi-snapshotter's name and the class's secret; the class's CO keys stay with the CO
    const [create] = gate!.seen('CreateSnapshot', (r) => r.source_volume_id === volumeId && r.name !== 'out-of-band');
    expect(create.request).toMatchObject({ name: `snapshot-${uid}`, source_volume_id: volumeId, secrets: { userID: 'snap', userKey: 'key-of-snap' }, parameters: {} });
    // recorded for DeleteSnapshot, as the snapshot-controller records it
    expect(c.metadata.annotations).toMatchObject({ 'snapshot.storage.kubernetes.io/deletion-secret-name': 'snap-creds', 'snapshot.storage.kubernetes.io/deletion-secret-namespace': 'default' });

    await deleteAsController('snapcontent-dyn');
    expect(await snapshotById(handle)).toBeUndefined();
    expect(gate!.seen('DeleteSnapshot', (r) => r.snapshot_id === handle).map((x) => x.request.secrets)).toContainEqual({ userID: 'snap', userKey: 'key-of-snap' });
    await env.kubectl(['delete', 'volumesnapshot', 'snap', '--wait=false']);
    await env.kubectl(['delete', 'volumesnapshotclass', 'tscsi-snap-secret']);
    await env.kubectl(['delete', 'secret', 'snap-creds']);
  });

  it('deleting a content under Retain keeps its snapshot', { timeout: 4 * MIN }, async () => {
    const uid = await volumeSnapshot('kept', 'tscsi-snap');
    await env.apply(content('snapcontent-kept', { policy: 'Retain', className: 'tscsi-snap', volumeHandle: volumeId, ref: { name: 'kept', uid } }));
    const handle = (await readyContent('snapcontent-kept')).status.snapshotHandle;
    await deleteAsController('snapcontent-kept');
    const left = await snapshotById(handle);
    if (left) await csi().Controller.DeleteSnapshot({ snapshot_id: handle });
    expect(left).toMatchObject({ snapshot_id: handle, source_volume_id: volumeId });
    expect(gate!.seen('DeleteSnapshot', (r) => r.snapshot_id === handle)).toHaveLength(0);
    await env.kubectl(['delete', 'volumesnapshot', 'kept', '--wait=false']);
  });

  it('a pre-provisioned content with a snapshotHandle of a snapshot made out of band becomes ready, and under Delete takes it along', { timeout: 4 * MIN }, async () => {
    const made = (await csi().Controller.CreateSnapshot({ name: 'out-of-band', source_volume_id: volumeId })).snapshot;
    await env.apply(content('snapcontent-static', { policy: 'Delete', snapshotHandle: made.snapshot_id, ref: { name: 'imported' } }));
    const c = await readyContent('snapcontent-static');
    expect(c.status).toMatchObject({ snapshotHandle: made.snapshot_id, readyToUse: true, restoreSize: Number(made.size_bytes) });
    expect(gate!.seen('ListSnapshots', (r) => r.snapshot_id === made.snapshot_id).length).toBeGreaterThan(0);
    expect(gate!.seen('CreateSnapshot', (r) => r.source_volume_id === volumeId && r.name === 'out-of-band')).toHaveLength(0);
    // unbound (no VolumeSnapshot UID): the user's delete alone lets it go
    await env.kubectl(['delete', 'volumesnapshotcontent', 'snapcontent-static', '--wait=true', '--timeout=120s']);
    expect(await snapshotById(made.snapshot_id)).toBeUndefined();
  });

  it('a class parameter the driver refuses gives a readable status.error and a Warning Event, and no snapshot', { timeout: 4 * MIN }, async () => {
    await env.apply(snapshotClass('tscsi-snap-bogus', { bogus: 'x' }));
    const uid = await volumeSnapshot('bad', 'tscsi-snap-bogus');
    await env.apply(content('snapcontent-bad', { policy: 'Delete', className: 'tscsi-snap-bogus', volumeHandle: volumeId, ref: { name: 'bad', uid } }));
    const c = await env.waitFor('status.error', async () => {
      const x = await getContent('snapcontent-bad');
      return x.status?.error?.message && x;
    });
    expect(c.status.readyToUse).toBe(false);
    expect(c.status.snapshotHandle).toBeUndefined();
    expect(c.status.error.message).toBe(`Failed to create snapshot: failed to take snapshot of the volume ${volumeId}: rpc error: code = INVALID_ARGUMENT desc = snapshot parameter "bogus" is not supported`);
    const ev = await env.waitFor('SnapshotCreationFailed event', async () => {
      const evs = await env.json(['get', 'events', '-n', 'default', '--field-selector', 'involvedObject.name=snapcontent-bad']);
      return evs.items.find((e: any) => e.reason === 'SnapshotCreationFailed');
    });
    expect(ev).toMatchObject({ type: 'Warning', message: c.status.error.message, involvedObject: { kind: 'VolumeSnapshotContent', name: 'snapcontent-bad' } });
    // a final error: no CreateSnapshot can still be running, so the mark goes (each retry sets
    // it again for its own call) and the content may be deleted
    await env.waitFor('being-created mark gone', async () => (await getContent('snapcontent-bad')).metadata.annotations?.[ANN_BEING_CREATED] === undefined);
    await deleteAsController('snapcontent-bad');
    await env.kubectl(['delete', 'volumesnapshot', 'bad', '--wait=false']);
    await env.kubectl(['delete', 'volumesnapshotclass', 'tscsi-snap-bogus']);
  });

  it('the sidecar leads through a Lease and serves /healthz and /metrics', { timeout: 2 * MIN }, async () => {
    const lease = await env.json(['get', 'lease', '-n', 'default', 'tscsi-snapshotter-csi-tscsi-dev']);
    expect(lease.spec.holderIdentity).toBeTruthy();
    expect((await fetch(`http://127.0.0.1:${httpPort}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    expect(metrics).toMatch(/tscsi_csi_operations_total\{[^}]*method="\/csi\.v1\.Controller\/CreateSnapshot"[^}]*code="OK"[^}]*\} [1-9]/);
  });
});

// The whole path a user takes, through kubectl objects only: the common snapshot-controller
// (external-snapshotter v8.7.0, built by name: test/cluster/build snapshot-controller) makes
// and deletes the content, our provisioner makes the claim's volume and restores claims from
// the snapshot. Last in the file: the
// controller would act on the hand-made objects above.
describe('with the snapshot-controller and our provisioner: a VolumeSnapshot of a claim, and claims restored from it', () => {
  beforeAll(async () => {
    const bin = path.join(await built('snapshot-controller', 'SNAPSHOT_CONTROLLER_BIN'), 'snapshot-controller');
    const kc = ['--kubeconfig', env.kubeconfig];
    env.start('registrar', [sidecar('registrar'), '--csi-address', socket, '--kubelet-registration-path', socket, '--plugin-registration-dir', path.join(env.kubeletDir, 'plugins_registry')]);
    env.start('provisioner', [sidecar('provisioner'), '--csi-address', path.join(env.runDir, 'gate.sock'), ...kc]);
    env.start('snapshot-controller', [...kc, '--retry-interval-max=10s'], bin);
    await env.apply(storageClass('tscsi-now', { volumeBindingMode: 'Immediate', reclaimPolicy: 'Delete' }));
  }, 30 * MIN);

  it('becomes readyToUse with a snapshot of its volume, restores into a larger claim (a smaller one is refused), and deleting it deletes the content and the snapshot', { timeout: 5 * MIN }, async () => {
    await env.apply(claim('data', 'tscsi-now', '32Mi'));
    const { handle } = await env.bound('data');
    const started = Date.now();
    await env.apply({ apiVersion: API, kind: 'VolumeSnapshot', metadata: { name: 'data-snap', namespace: 'default' }, spec: { volumeSnapshotClassName: 'tscsi-snap', source: { persistentVolumeClaimName: 'data' } } });
    const vs = await env.waitFor(
      'VolumeSnapshot readyToUse',
      async () => {
        const x = await env.json(['get', 'volumesnapshot', 'data-snap']);
        return x.status?.readyToUse === true && x;
      },
      2 * MIN,
      async () => `${await env.kubectl(['describe', 'volumesnapshot', 'data-snap'])}\n${env.log('snapshot-controller').split('\n').slice(-20).join('\n')}`,
    );
    results.volumeSnapshotReadyMs = Date.now() - started;
    const contentName = vs.status.boundVolumeSnapshotContentName;
    expect(contentName).toBe(`snapcontent-${vs.metadata.uid}`);
    const c = await getContent(contentName);
    const snap = await snapshotById(c.status.snapshotHandle);
    expect(snap).toMatchObject({ source_volume_id: handle, ready_to_use: true });
    expect(parseSize(vs.status.restoreSize)).toBe(BigInt(snap.size_bytes));
    expect(gate!.seen('CreateSnapshot', (r) => r.source_volume_id === handle).map((x) => x.request.name)).toContain(`snapshot-${vs.metadata.uid}`);

    // restored into a larger claim; a claim smaller than the snapshot is refused in words
    const fromSnap = { dataSource: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: 'data-snap' } };
    await env.apply(claim('too-small', 'tscsi-now', '16Mi', fromSnap));
    await env.apply(claim('restored', 'tscsi-now', '64Mi', fromSnap));
    const restored = await env.bound('restored');
    const [create] = gate!.seen('CreateVolume', (r) => r.name === restored.pvName);
    expect(create.request.volume_content_source).toMatchObject({ snapshot: { snapshot_id: c.status.snapshotHandle } });
    expect(await env.kubectl(['get', 'pv', restored.pvName, '-o', 'jsonpath={.spec.capacity.storage}'])).toBe('64Mi');
    const refused = await env.waitFor('ProvisioningFailed event of too-small', async () => {
      const evs = await env.json(['get', 'events', '-n', 'default', '--field-selector', 'involvedObject.name=too-small']);
      return evs.items.find((e: any) => e.reason === 'ProvisioningFailed');
    });
    expect(refused.message).toBe(`failed to provision volume with StorageClass "tscsi-now": requested volume size ${16 * MiB} is less than the size ${32 * MiB} of the source snapshot VolumeSnapshot default/data-snap`);
    expect((await env.json(['get', 'pvc', 'too-small'])).status.phase).toBe('Pending');
    await env.kubectl(['delete', 'pvc', 'too-small', 'restored', '--wait=true', '--timeout=120s']);
    await env.waitFor('restored volume gone', async () => !(await csi().Controller.ListVolumes({})).entries.some((e: any) => e.volume.volume_id === restored.handle));

    await env.kubectl(['delete', 'volumesnapshot', 'data-snap', '--wait=true', '--timeout=120s']);
    await env.waitFor(`content ${contentName} gone`, async () => (await env.kubectl(['get', 'volumesnapshotcontent', contentName, '--ignore-not-found', '-o', 'name'])) === '');
    expect(await snapshotById(c.status.snapshotHandle)).toBeUndefined();
    await env.kubectl(['delete', 'pvc', 'data', '--wait=true', '--timeout=120s']);
  });
});
