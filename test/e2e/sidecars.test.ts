// Our driver and our sidecars (as host processes) on the real single-node cluster: kubelet
// registers the driver, the provisioner makes volumes for claims, the attacher publishes
// them, kubelet stages and mounts them into pods, the resizer grows them online. The
// provisioner, attacher and resizer reach the driver through a CsiGate (test/lib), which
// records what they sent and can hold a call in flight.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { ClusterEnv, NODE_NAME, pod, claim } from '../lib/cluster-env.js';
import { DriverHarness } from '../lib/driver-harness.js';
import { CsiGate } from '../lib/csi-gate.js';
import { derivedVolumeId } from '../../sidecars/common/scope.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const DRIVER = 'csi.tscsi.dev';
const MIN = 60_000;
const env = new ClusterEnv();
let driver: DriverHarness | undefined;
let gate: CsiGate | undefined;
/** What a second, central (RBD-only) set of sidecars sends the same driver: it must never touch its loop objects. */
let centralGate: CsiGate | undefined;
const central: ChildProcess[] = [];
/** The provisioner's --timeout: a CreateVolume held longer than this has failed for it. */
const PROVISION_TIMEOUT_S = 15;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const timings: Record<string, number> = {};
const HTTP_PORT = 21000 + (process.pid % 20000);

const sidecar = (name: string) => path.join(ROOT, 'dist', 'sidecars', name, 'main.js');

async function phase(podName: string): Promise<string> {
  return env.kubectl(['get', 'pod', podName, '-o', 'jsonpath={.status.phase}']);
}

async function waitPhase(podName: string, want: string[], timeoutMs = 3 * MIN) {
  return env.waitFor(`pod ${podName} ${want.join('|')}`, async () => want.includes(await phase(podName)) && (await phase(podName)), timeoutMs, () =>
    env.kubectl(['describe', 'pod', podName]).then(async (d) => `${d}\n--- events ---\n${await env.kubectl(['get', 'events', '-A'])}`),
  );
}

async function logs(podName: string): Promise<string> {
  return env.kubectl(['logs', podName]);
}

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
  env.start('registrar', [sidecar('registrar'), '--csi-address', socket, '--kubelet-registration-path', socket, '--plugin-registration-dir', path.join(env.kubeletDir, 'plugins_registry')]);
  env.start('provisioner', [sidecar('provisioner'), '--csi-address', gated, ...kc, '--leader-election', '--http-endpoint', `127.0.0.1:${HTTP_PORT}`, '--timeout', String(PROVISION_TIMEOUT_S)]);
  env.start('attacher', [sidecar('attacher'), '--csi-address', gated, ...kc]);
  env.start('resizer', [sidecar('resizer'), '--csi-address', gated, ...kc]);
  const centralSocket = path.join(env.runDir, 'gate-central.sock');
  centralGate = await CsiGate.start(socket, centralSocket);
  for (const n of ['provisioner', 'attacher', 'resizer']) central.push(env.start(`central-${n}`, [sidecar(n), '--csi-address', centralSocket, ...kc, '--backends', 'rbd']));
  await env.apply({
    apiVersion: 'storage.k8s.io/v1',
    kind: 'CSIDriver',
    metadata: { name: DRIVER },
    spec: { attachRequired: true, podInfoOnMount: false, fsGroupPolicy: 'File', volumeLifecycleModes: ['Persistent'], storageCapacity: false },
  });
  const sc = (name: string, extra: object) => ({
    apiVersion: 'storage.k8s.io/v1',
    kind: 'StorageClass',
    metadata: { name },
    provisioner: DRIVER,
    allowVolumeExpansion: true,
    ...extra,
  });
  await env.apply(sc('tscsi-loop', { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete', parameters: { 'csi.storage.k8s.io/fstype': 'xfs' } }));
  await env.apply(sc('tscsi-retain', { volumeBindingMode: 'Immediate', reclaimPolicy: 'Retain' }));
  await env.apply(sc('tscsi-immediate', { volumeBindingMode: 'Immediate', reclaimPolicy: 'Delete' }));
  await env.apply(sc('tscsi-bogus', { volumeBindingMode: 'Immediate', parameters: { bogus: 'x' } }));
}, 60 * MIN);

afterAll(async () => {
  if (process.env.TSCSI_E2E_KEEP_LOGS) console.log(`logs in ${env.runDir}/logs`);
  for (const n of ['registrar', 'provisioner', 'attacher', 'resizer', 'central-provisioner', 'central-attacher', 'central-resizer']) {
    try {
      const l = env.log(n);
      if (/"level":(50|60)/.test(l)) console.log(`--- ${n} errors ---\n${l.split('\n').filter((x) => /"level":(50|60)/.test(x)).slice(-10).join('\n')}`);
    } catch {
      /* never started */
    }
  }
  await env.down();
  await gate?.close();
  await centralGate?.close();
  await driver?.cleanup();
  console.log(`timings: ${JSON.stringify(timings)}`);
}, 15 * MIN);

describe('the driver and our sidecars on a real cluster', () => {
  it('kubelet registers the driver: CSINode lists it with its node ID and topology key', { timeout: 3 * MIN }, async () => {
    const t0 = Date.now();
    const entry = await env.waitFor('CSINode entry', async () => {
      const n = await env.json(['get', 'csinode', NODE_NAME]);
      return n.spec.drivers?.find((d: any) => d.name === DRIVER);
    });
    timings.registrationMs = Date.now() - t0;
    expect(entry.nodeID).toBe(NODE_NAME);
    expect(entry.topologyKeys).toEqual(['topology.tscsi.dev/node']);
    const node = await env.json(['get', 'node', NODE_NAME]);
    expect(node.metadata.labels['topology.tscsi.dev/node']).toBe(NODE_NAME);
  });

  it('a pod on a WaitForFirstConsumer claim runs, writes, and a second pod reads the file', { timeout: 8 * MIN }, async () => {
    const t0 = Date.now();
    await env.apply(claim('data', 'tscsi-loop', '512Mi'));
    await env.apply(pod('writer', 'data', 'echo hello-from-writer > /data/f && sync && echo written && sleep 3600'));
    await waitPhase('writer', ['Running']);
    timings.pvcToRunningMs = Date.now() - t0;
    await env.waitFor('writer wrote', async () => (await logs('writer')).includes('written'));
    const pvc = await env.json(['get', 'pvc', 'data']);
    expect(pvc.status.phase).toBe('Bound');
    const pv = await env.json(['get', 'pv', pvc.spec.volumeName]);
    expect(pv.metadata.annotations['pv.kubernetes.io/provisioned-by']).toBe(DRIVER);
    expect(pv.spec.csi.fsType).toBe('xfs');
    expect(pv.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0]).toEqual({ key: 'topology.tscsi.dev/node', operator: 'In', values: [NODE_NAME] });
    expect(pvc.metadata.annotations['volume.kubernetes.io/selected-node']).toBe(NODE_NAME);
    const va = (await env.json(['get', 'volumeattachment'])).items.find((v: any) => v.spec.source.persistentVolumeName === pv.metadata.name);
    expect(va.status.attached).toBe(true);

    await env.kubectl(['delete', 'pod', 'writer', '--wait=true', '--timeout=120s']);
    await env.apply(pod('reader', 'data', 'cat /data/f; while true; do df -k /data | tail -1; sleep 1; done'));
    await waitPhase('reader', ['Running']);
    await env.waitFor('reader saw the file', async () => (await logs('reader')).includes('hello-from-writer'));
  });

  it('grows the claim while the pod runs: the pod sees the new size', { timeout: 6 * MIN }, async () => {
    await env.kubectl(['patch', 'pvc', 'data', '--type', 'merge', '-p', JSON.stringify({ spec: { resources: { requests: { storage: '1Gi' } } } })]);
    await env.waitFor(
      'claim capacity 1Gi',
      async () => (await env.kubectl(['get', 'pvc', 'data', '-o', 'jsonpath={.status.capacity.storage}'])) === '1Gi',
      4 * MIN,
      () => env.kubectl(['get', 'pvc', 'data', '-o', 'yaml']),
    );
    await env.waitFor('the pod sees about 1 GiB', async () => {
      const last = (await logs('reader')).trim().split('\n').pop() ?? '';
      const kb = Number(last.trim().split(/\s+/)[1]);
      return kb > 900 * 1024;
    });
    await env.kubectl(['delete', 'pod', 'reader', '--wait=true', '--timeout=120s']);
  });

  it('a Block claim is written and read raw', { timeout: 6 * MIN }, async () => {
    await env.apply(claim('raw', 'tscsi-loop', '64Mi', { volumeMode: 'Block' }));
    await env.apply(pod('raw-io', 'raw', 'echo raw-block-bytes | dd of=/dev/xvda bs=512 count=1 conv=sync,fsync 2>/dev/null; dd if=/dev/xvda bs=512 count=1 2>/dev/null | head -c 15; echo', true));
    await waitPhase('raw-io', ['Succeeded', 'Failed']);
    expect(await logs('raw-io')).toContain('raw-block-bytes');
    expect(await phase('raw-io')).toBe('Succeeded');
    await env.kubectl(['delete', 'pod', 'raw-io', '--wait=true', '--timeout=120s']);
  });

  it('deleting a claim deletes its PV and its backing volume', { timeout: 5 * MIN }, async () => {
    const pvName = await env.kubectl(['get', 'pvc', 'data', '-o', 'jsonpath={.spec.volumeName}']);
    const handle = await env.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.spec.csi.volumeHandle}']);
    expect(await volumeIds()).toContain(handle);
    await env.kubectl(['delete', 'pvc', 'data', 'raw', '--wait=true', '--timeout=120s']);
    await env.waitFor('PV gone', async () => !(await env.kubectl(['get', 'pv', '-o', 'name'])).includes(pvName), 3 * MIN);
    await env.waitFor('backing volume gone', async () => !(await volumeIds()).includes(handle));
  });

  it('with reclaim Retain the backing volume stays after the claim is gone', { timeout: 5 * MIN }, async () => {
    await env.apply(claim('kept', 'tscsi-retain', '32Mi'));
    const pvName = await env.waitFor('kept bound', async () => {
      const p = await env.json(['get', 'pvc', 'kept']);
      return p.status.phase === 'Bound' && p.spec.volumeName;
    });
    const handle = await env.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.spec.csi.volumeHandle}']);
    await env.kubectl(['delete', 'pvc', 'kept', '--wait=true', '--timeout=60s']);
    await env.waitFor('PV Released', async () => (await env.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.status.phase}'])) === 'Released');
    await new Promise((r) => setTimeout(r, 3000));
    expect(await volumeIds()).toContain(handle);
    // The admin removes the PV object; the volume is still theirs to delete.
    await env.kubectl(['delete', 'pv', pvName, '--wait=true', '--timeout=60s']);
    expect(await volumeIds()).toContain(handle);
    await driver!.client!.Controller.DeleteVolume({ volume_id: handle });
  });

  it('a claim deleted while its CreateVolume is in flight leaves no volume behind', { timeout: 5 * MIN }, async () => {
    const before = await volumeIds();
    const held = gate!.hold('CreateVolume');
    await env.apply(claim('fleeting', 'tscsi-immediate', '32Mi'));
    const req = await held.arrived;
    await held.answered; // the driver has made the volume; the provisioner does not know yet
    const uid = (await env.json(['get', 'pvc', 'fleeting'])).metadata.uid;
    expect(req.name).toBe(`pvc-${uid}`);
    expect(await volumeIds()).toContain(derivedVolumeId('loop', req.name));
    await env.kubectl(['delete', 'pvc', 'fleeting', '--wait=false']);
    // the deletion raced provisioning: the claim is going, held by our finalizer, with no PV yet
    const p = await env.json(['get', 'pvc', 'fleeting']);
    expect(p.metadata.deletionTimestamp).toBeTruthy();
    expect(p.metadata.finalizers.some((f: string) => f.startsWith('csi.tscsi.dev/provisioning'))).toBe(true);
    expect(p.spec.volumeName ?? '').toBe('');
    held.release();
    await env.waitFor('claim gone', async () => !(await env.kubectl(['get', 'pvc', '-o', 'name'])).includes('fleeting'), 2 * MIN);
    await env.waitFor('no volume left', async () => (await volumeIds()).length === before.length, 2 * MIN, async () => JSON.stringify(await volumeIds()));
    await env.waitFor('no PV left', async () => !(await env.kubectl(['get', 'pv', '-o', 'name'])).trim());
  });

  // The provisioner gave up on CreateVolume (deadline) after the driver made the volume,
  // then the claim and its StorageClass were deleted: the clean-up must find the volume by
  // its derived ID (never CreateVolume again) and keep the claim until it is gone.
  it('a claim whose CreateVolume timed out, deleted with its StorageClass, leaves no volume and gets no new CreateVolume', { timeout: 5 * MIN }, async () => {
    await env.apply({
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: { name: 'tscsi-doomed' },
      provisioner: DRIVER,
      volumeBindingMode: 'Immediate',
      reclaimPolicy: 'Delete',
    });
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
      await sleep(PROVISION_TIMEOUT_S * 1000 + 2000); // the provisioner's call has timed out
    } finally {
      held.release();
    }
    await env.waitFor('claim gone', async () => !(await env.kubectl(['get', 'pvc', '-o', 'name'])).includes('doomed'), 2 * MIN, () => env.kubectl(['get', 'pvc', 'doomed', '-o', 'yaml']));
    const left = (await volumeIds()).includes(volumeId);
    if (left) await driver!.client!.Controller.DeleteVolume({ volume_id: volumeId });
    expect(left).toBe(false);
    expect(gate!.seen('CreateVolume', (r) => r.name === req.name).filter((c) => c.at > deletedAt)).toEqual([]);
    expect(await env.kubectl(['get', 'pv', '-o', 'name'])).toBe('');
  });

  it('a Bound PV deleted by hand keeps its volume until its claim is gone', { timeout: 4 * MIN }, async () => {
    await env.apply(claim('held', 'tscsi-immediate', '32Mi'));
    const pvName = await env.waitFor('held bound', async () => {
      const p = await env.json(['get', 'pvc', 'held']);
      return p.status.phase === 'Bound' && p.spec.volumeName;
    });
    const handle = await env.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.spec.csi.volumeHandle}']);
    await env.kubectl(['delete', 'pv', pvName, '--wait=false']);
    // pv-protection keeps the PV while its claim exists (a StatefulSet scaled to zero); so must we its data
    const until = Date.now() + 6000;
    while (Date.now() < until) {
      expect(await volumeIds()).toContain(handle);
      await sleep(500);
    }
    const pv = await env.json(['get', 'pv', pvName]);
    expect(pv.metadata.deletionTimestamp).toBeTruthy();
    expect(pv.status.phase).toBe('Bound');
    await env.kubectl(['delete', 'pvc', 'held', '--wait=true', '--timeout=60s']);
    await env.waitFor('PV gone', async () => !(await env.kubectl(['get', 'pv', '-o', 'name'])).includes(pvName), 2 * MIN);
    await env.waitFor('volume gone once Released', async () => !(await volumeIds()).includes(handle));
  });

  it("the StorageClass's secrets reach CreateVolume, ControllerPublish/Unpublish, ControllerExpand and DeleteVolume; the node ones go on the PV", { timeout: 5 * MIN }, async () => {
    const secret = (name: string, userID: string) => ({ apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace: 'default' }, stringData: { userID, userKey: `key-of-${userID}` } });
    for (const [n, u] of [['sec-prov', 'prov'], ['pub-creds', 'pub'], ['expand-creds', 'expand'], ['stage-creds', 'stage']]) await env.apply(secret(n, u));
    const P = 'csi.storage.k8s.io/';
    await env.apply({
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: { name: 'tscsi-secrets' },
      provisioner: DRIVER,
      volumeBindingMode: 'Immediate',
      reclaimPolicy: 'Delete',
      allowVolumeExpansion: true,
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
    });
    const c = claim('sec', 'tscsi-secrets', '32Mi');
    await env.apply({ ...c, metadata: { ...c.metadata, annotations: { 'example.com/stage': 'stage-creds' } } });
    const pvName = await env.waitFor('sec bound', async () => {
      const p = await env.json(['get', 'pvc', 'sec']);
      return p.status.phase === 'Bound' && p.spec.volumeName;
    });
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

  it('the provisioner leads through a Lease and serves /healthz and /metrics', { timeout: 2 * MIN }, async () => {
    const lease = await env.json(['get', 'lease', '-n', 'default', 'tscsi-provisioner-csi-tscsi-dev']);
    expect(lease.spec.holderIdentity).toBeTruthy();
    const health = await fetch(`http://127.0.0.1:${HTTP_PORT}/healthz`);
    expect(health.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${HTTP_PORT}/metrics`)).text();
    expect(metrics).toMatch(/tscsi_csi_operations_total\{[^}]*method="\/csi\.v1\.Controller\/CreateVolume"[^}]*code="OK"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/tscsi_csi_operation_duration_seconds_bucket\{/);
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

  // Runs last: by now claims, PVs, VolumeAttachments and resizes of the loop backend have
  // all passed by the central sidecars too (the RBD overlay's --backends=rbd).
  it('sidecars serving only RBD, running next to these, never called the driver for a loop object', () => {
    expect(central.map((p) => p.exitCode)).toEqual([null, null, null]); // they ran all along
    expect(centralGate!.seen('GetPluginInfo').length).toBeGreaterThanOrEqual(3);
    expect(centralGate!.calls.filter((c) => !['GetPluginInfo', 'Probe', 'GetPluginCapabilities'].includes(c.method)).map((c) => c.method)).toEqual([]);
  });
});
