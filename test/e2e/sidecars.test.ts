// Our driver and our sidecars (as host processes) on the real single-node cluster: kubelet
// registers the driver, the provisioner makes volumes for claims, the attacher publishes
// them, kubelet stages and mounts them into pods, the resizer grows them online (the
// volume flows every install runs, test/e2e/volume-flows.ts). The provisioner, attacher and
// resizer reach the driver through a CsiGate (test/lib), which records what they sent and
// can hold a call in flight: the cases here that need it run only in this install.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import path from 'node:path';
import { ClusterEnv, DRIVER, MIN, NODE_NAME, claim, running, storageClass, type HostProcess } from '../lib/cluster-env.js';
import { DriverHarness } from '../lib/driver-harness.js';
import { CsiGate } from '../lib/csi-gate.js';
import { freePort, holdsFor } from '../lib/wait.js';
import { volumeFlows } from './volume-flows.js';
import { derivedVolumeId } from '../../sidecars/common/scope.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const env = new ClusterEnv();
let driver: DriverHarness | undefined;
let gate: CsiGate | undefined;
/** What a second, central (RBD-only) set of sidecars sends the same driver: it must never touch its loop objects. */
let centralGate: CsiGate | undefined;
const central: HostProcess[] = [];
/** The provisioner's --timeout: a CreateVolume held longer than this has failed for it. */
const PROVISION_TIMEOUT_S = 15;
const results: Record<string, number | string | boolean> = {};
let httpPort = 0;

const sidecar = (name: string) => path.join(ROOT, 'dist', 'sidecars', name, 'main.js');

async function volumeIds(): Promise<string[]> {
  const r = await driver!.client!.Controller.ListVolumes({});
  return r.entries.map((e: any) => e.volume.volume_id);
}

beforeAll(async () => {
  await env.up();
  const socket = path.join(env.kubeletDir, 'plugins', DRIVER, 'csi.sock');
  driver = await DriverHarness.start({ socketPath: socket, nodeId: NODE_NAME, pathRoots: [env.kubeletDir], driver: { defaultFsType: 'ext4' } });
  const kc = ['--kubeconfig', env.kubeconfig];
  const gated = path.join(env.runDir, 'gate.sock');
  gate = await CsiGate.start(socket, gated);
  httpPort = await freePort();
  env.start('registrar', [sidecar('registrar'), '--csi-address', socket, '--kubelet-registration-path', socket, '--plugin-registration-dir', path.join(env.kubeletDir, 'plugins_registry')]);
  env.start('provisioner', [sidecar('provisioner'), '--csi-address', gated, ...kc, '--leader-election', '--http-endpoint', `127.0.0.1:${httpPort}`, '--timeout', String(PROVISION_TIMEOUT_S)]);
  env.start('attacher', [sidecar('attacher'), '--csi-address', gated, ...kc]);
  env.start('resizer', [sidecar('resizer'), '--csi-address', gated, ...kc]);
  const centralSocket = path.join(env.runDir, 'gate-central.sock');
  centralGate = await CsiGate.start(socket, centralSocket);
  for (const n of ['provisioner', 'attacher', 'resizer']) central.push(env.start(`central-${n}`, [sidecar(n), '--csi-address', centralSocket, ...kc, '--backends', 'rbd']));
  await env.registerDriver();
  await env.apply(storageClass('tscsi-loop', { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete', parameters: { 'csi.storage.k8s.io/fstype': 'xfs' } }));
  await env.apply(storageClass('tscsi-retain', { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Retain' }));
  await env.apply(storageClass('tscsi-immediate', { volumeBindingMode: 'Immediate', reclaimPolicy: 'Delete' }));
  await env.apply(storageClass('tscsi-bogus', { volumeBindingMode: 'Immediate', parameters: { bogus: 'x' } }));
}, 60 * MIN);

afterAll(async () => {
  if (process.env.TSCSI_E2E_KEEP_LOGS) console.log(`logs in ${env.runDir}/logs`);
  env.printErrors(['registrar', 'provisioner', 'attacher', 'resizer', 'central-provisioner', 'central-attacher', 'central-resizer']);
  await env.down();
  await gate?.close();
  await centralGate?.close();
  await driver?.cleanup();
  console.log(`sidecars e2e: ${JSON.stringify(results)}`);
}, 15 * MIN);

describe('the driver and our sidecars as host processes: what every install does', () => {
  volumeFlows({
    env,
    classes: { fs: 'tscsi-loop', block: 'tscsi-loop', retain: 'tscsi-retain' },
    csi: () => driver!.client!,
    diagnostics: (p) => env.describePod(p),
    provisioned: () => undefined,
    results,
  });
});

describe('the driver and our sidecars as host processes: what only the gate can show', () => {
  it('a claim deleted while its CreateVolume is in flight leaves no volume behind', { timeout: 5 * MIN }, async () => {
    const held = gate!.hold('CreateVolume');
    await env.apply(claim('fleeting', 'tscsi-immediate', '32Mi'));
    const req = await held.arrived;
    await held.answered; // the driver has made the volume; the provisioner does not know yet
    const uid = (await env.json(['get', 'pvc', 'fleeting'])).metadata.uid;
    expect(req.name).toBe(`pvc-${uid}`);
    const volumeId = derivedVolumeId('loop', req.name);
    expect(await volumeIds()).toContain(volumeId);
    await env.kubectl(['delete', 'pvc', 'fleeting', '--wait=false']);
    // the deletion raced provisioning: the claim is going, held by our finalizer, with no PV yet
    const p = await env.json(['get', 'pvc', 'fleeting']);
    expect(p.metadata.deletionTimestamp).toBeTruthy();
    expect(p.metadata.finalizers.some((f: string) => f.startsWith('csi.tscsi.dev/provisioning'))).toBe(true);
    expect(p.spec.volumeName ?? '').toBe('');
    held.release();
    await env.waitFor('claim gone', async () => !(await env.kubectl(['get', 'pvc', '-o', 'name'])).includes('fleeting'), 2 * MIN);
    await env.waitFor('no volume left', async () => !(await volumeIds()).includes(volumeId), 2 * MIN, async () => JSON.stringify(await volumeIds()));
    expect(await env.pvNames()).not.toContain(req.name);
  });

  // The provisioner gave up on CreateVolume (deadline) after the driver made the volume,
  // then the claim and its StorageClass were deleted: the clean-up must find the volume by
  // its derived ID (never CreateVolume again) and keep the claim until it is gone.
  it('a claim whose CreateVolume timed out, deleted with its StorageClass, leaves no volume and gets no new CreateVolume', { timeout: 5 * MIN }, async () => {
    await env.apply(storageClass('tscsi-doomed', { volumeBindingMode: 'Immediate', reclaimPolicy: 'Delete' }));
    const held = gate!.hold('CreateVolume');
    await env.apply(claim('doomed', 'tscsi-doomed', '32Mi'));
    const req = await held.arrived;
    await held.answered;
    const volumeId = derivedVolumeId('loop', req.name);
    expect(await volumeIds()).toContain(volumeId);
    await env.kubectl(['delete', 'pvc', 'doomed', '--wait=false']);
    await env.kubectl(['delete', 'storageclass', 'tscsi-doomed']);
    const deletedAt = Date.now();
    try {
      const p = await env.json(['get', 'pvc', 'doomed']); // held by our finalizer while CreateVolume is in flight
      expect(p.metadata.deletionTimestamp).toBeTruthy();
      expect(p.spec.volumeName ?? '').toBe('');
      await held.callerGone; // the provisioner's call has timed out (its --timeout)
    } finally {
      held.release();
    }
    await env.waitFor('claim gone', async () => !(await env.kubectl(['get', 'pvc', '-o', 'name'])).includes('doomed'), 2 * MIN, () => env.kubectl(['get', 'pvc', 'doomed', '-o', 'yaml']));
    const left = (await volumeIds()).includes(volumeId);
    if (left) await driver!.client!.Controller.DeleteVolume({ volume_id: volumeId });
    expect(left).toBe(false);
    expect(gate!.seen('CreateVolume', (r) => r.name === req.name).filter((c) => c.at > deletedAt)).toEqual([]);
    expect(await env.pvNames()).not.toContain(req.name);
  });

  it('a Bound PV deleted by hand keeps its volume until its claim is gone', { timeout: 4 * MIN }, async () => {
    await env.apply(claim('held', 'tscsi-immediate', '32Mi'));
    const { pvName, handle } = await env.bound('held');
    await env.kubectl(['delete', 'pv', pvName, '--wait=false']);
    // pv-protection keeps the PV while its claim exists (a StatefulSet scaled to zero); so must
    // we its data. Keeping is doing nothing: no event to wait for, so the volume must stay for
    // a few of the provisioner's resyncs.
    await holdsFor('the Bound PV being deleted keeps its volume', async () => (await volumeIds()).includes(handle), 6_000);
    const pv = await env.json(['get', 'pv', pvName]);
    expect(pv.metadata.deletionTimestamp).toBeTruthy();
    expect(pv.status.phase).toBe('Bound');
    await env.kubectl(['delete', 'pvc', 'held', '--wait=true', '--timeout=60s']);
    await env.waitFor('PV gone', async () => !(await env.pvNames()).includes(pvName), 2 * MIN);
    await env.waitFor('volume gone once Released', async () => !(await volumeIds()).includes(handle));
  });

  it("the StorageClass's secrets reach CreateVolume, ControllerPublish/Unpublish, ControllerExpand and DeleteVolume; the node ones go on the PV", { timeout: 5 * MIN }, async () => {
    const secret = (name: string, userID: string) => ({ apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace: 'default' }, stringData: { userID, userKey: `key-of-${userID}` } });
    for (const [n, u] of [['sec-prov', 'prov'], ['pub-creds', 'pub'], ['expand-creds', 'expand'], ['stage-creds', 'stage']]) await env.apply(secret(n, u));
    const P = 'csi.storage.k8s.io/';
    await env.apply(
      storageClass('tscsi-secrets', {
        volumeBindingMode: 'Immediate',
        reclaimPolicy: 'Delete',
        parameters: {
        [`${P}fstype`]: 'ext4',
        [`${P}provisioner-secret-name`]: '${pvc.name}-prov',
        [`${P}provisioner-secret-namespace`]: '${pvc.namespace}',
        [`${P}controller-publish-secret-name`]: 'pub-creds',
        [`${P}controller-publish-secret-namespace`]: 'default',
        [`${P}node-stage-secret-name`]: "${pvc.annotations['example.com/stage']}",
        [`${P}node-stage-secret-namespace`]: 'default',
        [`${P}controller-expand-secret-name`]: 'expand-creds',
        [`${P}controller-expand-secret-namespace`]: 'default',
        },
      }),
    );
    const c = claim('sec', 'tscsi-secrets', '32Mi');
    await env.apply({ ...c, metadata: { ...c.metadata, annotations: { 'example.com/stage': 'stage-creds' } } });
    const { pvName } = await env.bound('sec');
    const creds = (u: string) => ({ userID: u, userKey: `key-of-${u}` });
    const [create] = gate!.seen('CreateVolume', (r) => r.name === pvName);
    expect(create.request.secrets).toEqual(creds('prov'));
    expect(create.request.parameters).toEqual({}); // the CO's keys stay with the CO
    const pv = await env.json(['get', 'pv', pvName]);
    expect(pv.spec.csi.nodeStageSecretRef).toEqual({ name: 'stage-creds', namespace: 'default' });
    expect(pv.spec.csi.controllerPublishSecretRef).toEqual({ name: 'pub-creds', namespace: 'default' });
    expect(pv.spec.csi.controllerExpandSecretRef).toEqual({ name: 'expand-creds', namespace: 'default' });
    const handle = pv.spec.csi.volumeHandle;

    await env.apply({ apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttachment', metadata: { name: 'sec-va' }, spec: { attacher: DRIVER, nodeName: NODE_NAME, source: { persistentVolumeName: pvName } } });
    await env.waitFor('attached', async () => (await env.json(['get', 'volumeattachment', 'sec-va'])).status?.attached === true);
    // every call (a retry or a re-run after our own patch may repeat one: they are idempotent) carries them
    const secretsOf = (method: string) => gate!.seen(method, (r) => r.volume_id === handle).map((x) => x.request.secrets);
    expect(secretsOf('ControllerPublishVolume').length).toBeGreaterThan(0);
    expect(new Set(secretsOf('ControllerPublishVolume').map((x) => JSON.stringify(x)))).toEqual(new Set([JSON.stringify(creds('pub'))]));
    await env.kubectl(['delete', 'volumeattachment', 'sec-va', '--wait=true', '--timeout=60s']);
    expect(secretsOf('ControllerUnpublishVolume').length).toBeGreaterThan(0);
    expect(new Set(secretsOf('ControllerUnpublishVolume').map((x) => JSON.stringify(x)))).toEqual(new Set([JSON.stringify(creds('pub'))]));

    await env.kubectl(['patch', 'pvc', 'sec', '--type', 'merge', '-p', JSON.stringify({ spec: { resources: { requests: { storage: '64Mi' } } } })]);
    await env.waitFor('PV grown', async () => (await env.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.spec.capacity.storage}'])) === '64Mi');
    expect(secretsOf('ControllerExpandVolume').length).toBeGreaterThan(0);
    expect(new Set(secretsOf('ControllerExpandVolume').map((x) => JSON.stringify(x)))).toEqual(new Set([JSON.stringify(creds('expand'))]));

    await env.kubectl(['delete', 'pvc', 'sec', '--wait=true', '--timeout=60s']);
    await env.waitFor('volume gone', async () => !(await volumeIds()).includes(handle));
    expect(secretsOf('DeleteVolume').length).toBeGreaterThan(0);
    expect(new Set(secretsOf('DeleteVolume').map((x) => JSON.stringify(x)))).toEqual(new Set([JSON.stringify(creds('prov'))]));
    await env.kubectl(['delete', 'storageclass', 'tscsi-secrets']);
    await env.kubectl(['delete', 'secret', 'sec-prov', 'pub-creds', 'expand-creds', 'stage-creds']);
  });

  it('the provisioner leads through a Lease and serves /healthz and /metrics', { timeout: 3 * MIN }, async () => {
    await env.apply(claim('counted', 'tscsi-immediate', '32Mi'));
    await env.bound('counted');
    const lease = await env.json(['get', 'lease', '-n', 'default', 'tscsi-provisioner-csi-tscsi-dev']);
    expect(lease.spec.holderIdentity).toBeTruthy();
    const health = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
    expect(health.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    expect(metrics).toMatch(/tscsi_csi_operations_total\{[^}]*method="\/csi\.v1\.Controller\/CreateVolume"[^}]*code="OK"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/tscsi_csi_operation_duration_seconds_bucket\{/);
    await env.kubectl(['delete', 'pvc', 'counted', '--wait=true', '--timeout=60s']);
  });

  it('a claim that cannot be provisioned gets an event a person can read', { timeout: 3 * MIN }, async () => {
    await env.apply(claim('bad', 'tscsi-bogus', '32Mi'));
    const ev = await env.waitFor('ProvisioningFailed event', async () => {
      const evs = await env.json(['get', 'events', '--field-selector', 'involvedObject.name=bad']);
      return evs.items.find((e: any) => e.reason === 'ProvisioningFailed');
    });
    expect(ev.message).toMatch(/INVALID_ARGUMENT/);
    expect(ev.message).toMatch(/bogus/);
    await env.kubectl(['delete', 'pvc', 'bad', '--wait=true', '--timeout=60s']);
  });

  // The RBD overlay's central sidecars (--backends=rbd) see every claim, PV, VolumeAttachment
  // and resize of the cluster: here a loop volume goes through all of them under their eyes.
  it('sidecars serving only RBD, running next to these, never call the driver for a loop object', { timeout: 5 * MIN }, async () => {
    await env.apply(claim('loop-only', 'tscsi-immediate', '32Mi'));
    const { pvName, handle } = await env.bound('loop-only');
    await env.apply({ apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttachment', metadata: { name: 'loop-only-va' }, spec: { attacher: DRIVER, nodeName: NODE_NAME, source: { persistentVolumeName: pvName } } });
    await env.waitFor('attached', async () => (await env.json(['get', 'volumeattachment', 'loop-only-va'])).status?.attached === true);
    await env.kubectl(['delete', 'volumeattachment', 'loop-only-va', '--wait=true', '--timeout=60s']);
    await env.kubectl(['patch', 'pvc', 'loop-only', '--type', 'merge', '-p', JSON.stringify({ spec: { resources: { requests: { storage: '64Mi' } } } })]);
    await env.waitFor('PV grown', async () => (await env.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.spec.capacity.storage}'])) === '64Mi');
    await env.kubectl(['delete', 'pvc', 'loop-only', '--wait=true', '--timeout=60s']);
    await env.waitFor('volume gone', async () => !(await volumeIds()).includes(handle));
    // the per-node sidecars did all of it; the central ones only asked who the driver is
    expect(gate!.seen('ControllerExpandVolume', (r) => r.volume_id === handle).length).toBeGreaterThan(0);
    expect(central.filter(running).length).toBe(3);
    expect(centralGate!.seen('GetPluginInfo').length).toBeGreaterThanOrEqual(3);
    expect(centralGate!.calls.filter((c) => !['GetPluginInfo', 'Probe', 'GetPluginCapabilities'].includes(c.method)).map((c) => c.method)).toEqual([]);
  });
});
