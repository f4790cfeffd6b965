// Storage capacity tracking on the real single-node cluster, through kubectl objects: the
// node's provisioner (a host process, as in sidecars.test.ts) publishes CSIStorageCapacity
// objects for its node, the scheduler (CSIDriver storageCapacity: true from deploy/base)
// reads them, and a claim that does not fit is kept off the node or, when the object was
// stale and CreateVolume answered RESOURCE_EXHAUSTED, sent back to the scheduler.
//
// The provisioner runs as deploy/ runs it: the tscsi-node service account with deploy/base's
// RBAC and admission policies (a token bound to a pod of a DaemonSet named tscsi-node, which
// is what the objects' owner is looked up from, as in a real install), so the Roles and the
// CEL that let a node write its own segment's objects and drop selected-node are exercised.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { ClusterEnv, DRIVER, MIN, NODE_NAME, claim, pod, storageClass, type HostProcess } from '../lib/cluster-env.js';
import { DriverHarness } from '../lib/driver-harness.js';
import { holdsFor } from '../lib/wait.js';
import { TestVg } from '../lib/lvm-vg.js';
import { parseSize } from '../../lib/size.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const BASE = path.join(ROOT, 'deploy', 'base');
const NS = 'tscsi';
const KEY = 'topology.tscsi.dev/node';
const SEGMENT = { [KEY]: NODE_NAME };
/** The loop backend's --capacity: what the node offers in all. */
const POOL = '1Gi';
const MiB = 1n << 20n;
/** Long: objects change here only on a create, a delete or a class change, never by the clock. */
const POLL = '10m';
const SC = 'cap-loop';
const env = new ClusterEnv();
let driver: DriverHarness | undefined;
/** The LVM backend's volume group (1 GiB on a loop-backed PV). */
let vg: TestVg | undefined;
let provisioner: HostProcess | undefined;
const results: Record<string, number | string | boolean> = {};
const outOfBand: string[] = [];

const sidecar = (name: string) => path.join(ROOT, 'dist', 'sidecars', name, 'main.js');

/** The one capacity object of `sc` in the driver's namespace (undefined while there is none, or more than one). */
async function capacityOf(sc: string): Promise<any | undefined> {
  const mine = (await env.json(['get', 'csistoragecapacities', '-n', NS])).items.filter((c: any) => c.storageClassName === sc);
  return mine.length === 1 ? mine[0] : undefined;
}

/** Waits until `sc`'s object says `bytes` of capacity. */
const capacityIs = (sc: string, bytes: bigint) =>
  env.waitFor(`${sc}'s CSIStorageCapacity at ${bytes} bytes`, async () => {
    const c = await capacityOf(sc);
    return c && parseSize(c.capacity) === bytes && c;
  }, 2 * MIN, async () => JSON.stringify(await env.json(['get', 'csistoragecapacities', '-n', NS])) + `\n--- provisioner ---\n${env.log('provisioner').split('\n').slice(-15).join('\n')}`);

/** What the driver itself answers for the node's segment: the truth the object must tell. */
async function driverCapacity(parameters: Record<string, string> = {}): Promise<{ capacity: bigint; max: bigint }> {
  const r = await driver!.client!.Controller.GetCapacity({ parameters, accessible_topology: { segments: SEGMENT } });
  return { capacity: BigInt(r.available_capacity), max: BigInt(r.maximum_volume_size.value) };
}

const events = async (name: string, reason: string): Promise<string[]> =>
  (await env.json(['get', 'events', '-n', 'default', '--field-selector', `involvedObject.name=${name},reason=${reason}`])).items.map((e: any) => e.message as string);

/**
 * A kubeconfig of the tscsi-node service account, its token bound to `podName` (so the API
 * server puts the pod's node in it, which the admission policies read), for the cluster
 * the admin kubeconfig names.
 */
async function nodeServiceAccountKubeconfig(podName: string): Promise<string> {
  const token = await env.kubectl(['create', 'token', 'tscsi-node', '-n', NS, '--bound-object-kind', 'Pod', '--bound-object-name', podName, '--duration', '2h']);
  const admin = new k8s.KubeConfig();
  admin.loadFromFile(env.kubeconfig);
  const cluster = admin.getCurrentCluster()!;
  const file = path.join(env.runDir, 'tscsi-node.kubeconfig');
  const kc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'e2e', cluster: { server: cluster.server, 'certificate-authority-data': cluster.caData ?? fs.readFileSync(cluster.caFile!).toString('base64') } }],
    users: [{ name: 'tscsi-node', user: { token: token.trim() } }],
    contexts: [{ name: 'e2e', context: { cluster: 'e2e', user: 'tscsi-node' } }],
    'current-context': 'e2e',
  };
  fs.writeFileSync(file, JSON.stringify(kc), { mode: 0o600 });
  return file;
}

/** The pod whose identity the provisioner runs under: tscsi-node's, a DaemonSet in the driver's namespace. */
async function ownerPod(): Promise<string> {
  await env.apply({
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: 'tscsi-node', namespace: NS },
    spec: {
      selector: { matchLabels: { app: 'tscsi-capacity-e2e' } },
      template: {
        metadata: { labels: { app: 'tscsi-capacity-e2e' } },
        spec: {
          serviceAccountName: 'tscsi-node',
          hostNetwork: true,
          terminationGracePeriodSeconds: 1,
          containers: [{ name: 'c', image: 'tscsi.local/busybox:1', imagePullPolicy: 'Never', command: ['sleep', '86400'] }],
        },
      },
    },
  });
  return env.waitFor('the tscsi-node pod Running', async () => {
    const p = (await env.json(['get', 'pods', '-n', NS, '-l', 'app=tscsi-capacity-e2e'])).items[0];
    return p?.status?.phase === 'Running' && (p.metadata.name as string);
  }, 3 * MIN);
}

beforeAll(async () => {
  await env.up();
  const socket = path.join(env.kubeletDir, 'plugins', DRIVER, 'csi.sock');
  vg = await TestVg.create(fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-e2e-capacity-vg-')), 1);
  driver = await DriverHarness.start({ socketPath: socket, nodeId: NODE_NAME, pathRoots: [env.kubeletDir], driver: { defaultFsType: 'ext4', capacity: POOL, lvmVolumeGroups: vg.name, lvmDevices: vg.pv } });
  env.start('registrar', [sidecar('registrar'), '--csi-address', socket, '--kubelet-registration-path', socket, '--plugin-registration-dir', path.join(env.kubeletDir, 'plugins_registry')]);
  // deploy/base as an admin applies it: the CSIDriver (storageCapacity: true), RBAC, admission
  for (const f of ['namespace.yaml', 'csidriver.yaml', 'rbac.yaml', 'node-admission.yaml']) await env.kubectl(['apply', '-f', path.join(BASE, f)]);
  await env.apply(storageClass(SC, { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete', parameters: { 'csi.storage.k8s.io/fstype': 'ext4' } }));
  await env.apply(storageClass('cap-second', { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete' }));
  await env.apply(storageClass('cap-lvm', { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete', parameters: { ...vg.params(), 'csi.storage.k8s.io/fstype': 'ext4' } }));
  await env.apply(storageClass('cap-immediate', { volumeBindingMode: 'Immediate', reclaimPolicy: 'Delete' }));
  await env.waitFor('CSINode entry', async () => (await env.json(['get', 'csinode', NODE_NAME])).spec.drivers?.some((d: any) => d.name === DRIVER));
  const podName = await ownerPod();
  const kubeconfig = await nodeServiceAccountKubeconfig(podName);
  // the downward API's values in the DaemonSet (deploy/base/node.yaml)
  Object.assign(process.env, { POD_NAME: podName, POD_NAMESPACE: NS });
  try {
    provisioner = env.start('provisioner', [sidecar('provisioner'), '--csi-address', socket, '--kubeconfig', kubeconfig, '--node-name', NODE_NAME, '--backends', 'loop,lvm', '--enable-capacity', '--capacity-poll-interval', POLL]);
  } finally {
    delete process.env.POD_NAME;
    delete process.env.POD_NAMESPACE;
  }
  env.start('attacher', [sidecar('attacher'), '--csi-address', socket, '--kubeconfig', env.kubeconfig, '--node-name', NODE_NAME, '--backends', 'loop,lvm']);
}, 60 * MIN);

afterAll(async () => {
  for (const n of ['provisioner', 'attacher']) {
    try {
      const l = env.log(n);
      if (/"level":(40|50|60)/.test(l)) console.log(`--- ${n} warnings and errors ---\n${l.split('\n').filter((x) => /"level":(40|50|60)/.test(x)).slice(-10).join('\n')}`);
    } catch {
      /* never started */
    }
  }
  for (const id of outOfBand) await driver?.client?.Controller.DeleteVolume({ volume_id: id }).catch(() => undefined);
  await env.down();
  await driver?.cleanup();
  await vg?.remove();
  console.log(`capacity e2e: ${JSON.stringify(results)}`);
}, 15 * MIN);

async function removeClaim(claimName: string, pods: string[]): Promise<void> {
  if (pods.length) await env.kubectl(['delete', 'pod', ...pods, '--ignore-not-found', '--wait=true', '--timeout=120s']);
  await env.kubectl(['delete', 'pvc', claimName, '--ignore-not-found', '--wait=true', '--timeout=120s']);
}

describe('storage capacity tracking by the node provisioner (loop backend)', () => {
  it('a CSIStorageCapacity per WaitForFirstConsumer class appears for the node with the pool\'s capacity, owned by the DaemonSet', { timeout: 3 * MIN }, async () => {
    const t0 = Date.now();
    const c = await capacityIs(SC, parseSize(POOL));
    results.firstObjectMs = Date.now() - t0;
    expect((await driverCapacity()).capacity).toBe(parseSize(POOL));
    expect(c.metadata.labels).toEqual({ 'csi.storage.k8s.io/drivername': DRIVER, 'csi.storage.k8s.io/managed-by': `external-provisioner-${NODE_NAME}` });
    expect(c.nodeTopology).toEqual({ matchLabels: SEGMENT });
    expect(parseSize(c.maximumVolumeSize)).toBe(parseSize(POOL));
    const ds = await env.json(['get', 'daemonset', 'tscsi-node', '-n', NS]);
    expect(c.metadata.ownerReferences).toEqual([{ apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'tscsi-node', uid: ds.metadata.uid, controller: true }]);
    await capacityIs('cap-second', parseSize(POOL));
    // the scheduler reads capacity only for late binding: Immediate classes get none
    expect((await env.json(['get', 'csistoragecapacities', '-n', NS])).items.map((x: any) => x.storageClassName).sort()).toEqual([SC, 'cap-lvm', 'cap-second']);
  });

  it('provisioning and deleting a volume change the objects soon after, without waiting for the poll', { timeout: 5 * MIN }, async () => {
    await env.apply(claim('cap-a', SC, '300Mi'));
    await env.apply(pod('cap-a-pod', 'cap-a', 'sleep 86400'));
    await env.waitPhase('cap-a-pod', ['Running']);
    const t0 = Date.now();
    await capacityIs(SC, parseSize(POOL) - 300n * MiB);
    results.refreshAfterCreateMs = Date.now() - t0;
    expect((await driverCapacity()).capacity).toBe(parseSize(POOL) - 300n * MiB);
    await capacityIs('cap-second', parseSize(POOL) - 300n * MiB); // the node's pool is shared by its classes
    await removeClaim('cap-a', ['cap-a-pod']);
    await capacityIs(SC, parseSize(POOL));
  });

  it('LVM: the object says the volume group\'s free space and largest volume, and drops by what a claim took', { timeout: 5 * MIN }, async () => {
    const before = await driverCapacity(vg!.params());
    expect(before.capacity).toBeGreaterThan(0n);
    const c = await capacityIs('cap-lvm', before.capacity);
    expect(parseSize(c.maximumVolumeSize)).toBe(before.max);
    await env.apply(claim('cap-l', 'cap-lvm', '200Mi'));
    await env.apply(pod('cap-l-pod', 'cap-l', 'sleep 86400'));
    await env.waitPhase('cap-l-pod', ['Running']);
    await capacityIs('cap-lvm', before.capacity - 200n * MiB);
    expect((await driverCapacity(vg!.params())).capacity).toBe(before.capacity - 200n * MiB);
    expect(parseSize((await capacityOf(SC)).capacity)).toBe(parseSize(POOL)); // the loop pool is another pool
    await removeClaim('cap-l', ['cap-l-pod']);
    await capacityIs('cap-lvm', before.capacity);
  });

  it('a claim bigger than the node\'s capacity is not scheduled there: no node is selected, no volume made', { timeout: 4 * MIN }, async () => {
    await env.apply(claim('cap-big', SC, '2Gi'));
    await env.apply(pod('cap-big-pod', 'cap-big', 'sleep 86400'));
    const msg = await env.waitFor('FailedScheduling for storage', async () => (await events('cap-big-pod', 'FailedScheduling')).find((m) => m.includes('did not have enough free storage')), 2 * MIN, () => env.describePod('cap-big-pod'));
    results.notEnoughStorage = msg;
    const pvc = await env.json(['get', 'pvc', 'cap-big']);
    expect(pvc.metadata.annotations?.['volume.kubernetes.io/selected-node']).toBeUndefined();
    expect(pvc.status.phase).toBe('Pending');
    expect(await env.phase('cap-big-pod')).toBe('Pending');
    expect(await events('cap-big', 'ProvisioningFailed')).toEqual([]);
    await removeClaim('cap-big', ['cap-big-pod']);
  });

  it('after RESOURCE_EXHAUSTED (a stale object) the claim goes back to the scheduler with an Event, and runs once there is room', { timeout: 6 * MIN }, async () => {
    // Space taken behind the CO's back: the object still says the whole pool (the next poll is minutes away).
    const taken = await driver!.client!.Controller.CreateVolume({
      name: 'cap-out-of-band',
      capacity_range: { required_bytes: String(600n * MiB) },
      volume_capabilities: [{ mount: { fs_type: 'ext4', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
      parameters: {},
    });
    outOfBand.push(taken.volume.volume_id);
    expect(parseSize((await capacityOf(SC)).capacity)).toBe(parseSize(POOL));
    await env.apply(claim('cap-stale', SC, '600Mi'));
    await env.apply(pod('cap-stale-pod', 'cap-stale', 'sleep 86400'));
    const t0 = Date.now();
    const why = await env.waitFor('the ProvisioningFailed Event of the reschedule', async () => (await events('cap-stale', 'ProvisioningFailed')).find((m) => m.includes('volume.kubernetes.io/selected-node')), 2 * MIN, () => env.describePod('cap-stale-pod'));
    results.rescheduleEventMs = Date.now() - t0;
    expect(why).toContain(`on node ${NODE_NAME}`);
    expect(why).toContain('code = RESOURCE_EXHAUSTED');
    expect(why).toContain('so that the scheduler chooses a node again');
    // the failure refreshed the objects: now the scheduler keeps the pod off the node
    await capacityIs(SC, parseSize(POOL) - 600n * MiB);
    await env.waitFor('FailedScheduling for storage after the reschedule', async () => (await events('cap-stale-pod', 'FailedScheduling')).some((m) => m.includes('did not have enough free storage')), 2 * MIN, () => env.describePod('cap-stale-pod'));
    const pvc = await env.json(['get', 'pvc', 'cap-stale']);
    expect(pvc.metadata.annotations?.['volume.kubernetes.io/selected-node']).toBeUndefined();
    // no volume exists for it, so no provisioning finalizer holds it
    expect((pvc.metadata.finalizers ?? []).filter((f: string) => f.startsWith('csi.tscsi.dev/provisioning'))).toEqual([]);
    // room again; a change of the class (a label) makes the provisioner look without the poll
    await driver!.client!.Controller.DeleteVolume({ volume_id: taken.volume.volume_id });
    outOfBand.length = 0;
    await env.kubectl(['label', 'storageclass', SC, 'e2e.tscsi.dev/touched=yes']);
    // (the object says the whole pool only until the scheduler places the pod again: too briefly to wait for)
    await env.waitPhase('cap-stale-pod', ['Running']);
    results.rescheduledToRunningMs = Date.now() - t0;
    await capacityIs(SC, parseSize(POOL) - 600n * MiB);
    await removeClaim('cap-stale', ['cap-stale-pod']);
  });

  it('a class that goes away loses its object; the objects of a deleted DaemonSet are garbage-collected', { timeout: 4 * MIN }, async () => {
    const second = (await capacityOf('cap-second')).metadata.name;
    await env.kubectl(['delete', 'storageclass', 'cap-second']);
    await env.waitFor('cap-second\'s object gone', async () => !(await env.kubectl(['get', 'csistoragecapacities', '-n', NS, '-o', 'name'])).includes(second));
    await holdsFor('cap-loop keeps its object', async () => !!(await capacityOf(SC)), 2_000);
    // the provisioner gone with its DaemonSet: Kubernetes' garbage collector removes what it owned
    await env.stop(provisioner!);
    await env.kubectl(['delete', 'daemonset', 'tscsi-node', '-n', NS, '--wait=true', '--timeout=120s']);
    await env.waitFor('objects garbage-collected', async () => (await env.json(['get', 'csistoragecapacities', '-n', NS])).items.length === 0);
  });
});
