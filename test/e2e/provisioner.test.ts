// The provisioner as a node's provisioner runs it (--node-name, --backends loop,lvm, as in
// deploy/base/node.yaml), with the attacher, on the real single-node cluster, through a
// CsiGate (test/lib) that records every CSI call and can hold one in flight: Immediate
// binding of node-local claims (the node takes the claim, or says why not), clones refused
// with Events, a released volume deleted only once its pod has detached, a claim deleted
// while its volume was being made.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import path from 'node:path';
import { ClusterEnv, DRIVER, MIN, NODE_NAME, claim, pod, storageClass } from '../lib/cluster-env.js';
import { DriverHarness } from '../lib/driver-harness.js';
import { CsiGate } from '../lib/csi-gate.js';
import { holdsFor } from '../lib/wait.js';
import { derivedVolumeId } from '../../sidecars/common/scope.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const env = new ClusterEnv();
let driver: DriverHarness | undefined;
let gate: CsiGate | undefined;
const results: Record<string, number | string | boolean> = {};
const SELECTED = 'volume.kubernetes.io/selected-node';
const TOPOLOGY_KEY = 'topology.tscsi.dev/node';

const sidecar = (name: string) => path.join(ROOT, 'dist', 'sidecars', name, 'main.js');

async function volumeIds(): Promise<string[]> {
  const r = await driver!.client!.Controller.ListVolumes({});
  return r.entries.map((e: any) => e.volume.volume_id);
}

/** The Events of an object with `reason`, once there is one. */
async function eventOf(name: string, reason: string): Promise<any> {
  return env.waitFor(`${reason} event of ${name}`, async () => {
    const evs = await env.json(['get', 'events', '-n', 'default', '--field-selector', `involvedObject.name=${name}`]);
    return evs.items.find((e: any) => e.reason === reason);
  }, 2 * MIN, () => env.kubectl(['get', 'events', '-n', 'default']));
}

beforeAll(async () => {
  await env.up();
  const socket = path.join(env.kubeletDir, 'plugins', DRIVER, 'csi.sock');
  driver = await DriverHarness.start({ socketPath: socket, nodeId: NODE_NAME, pathRoots: [env.kubeletDir], driver: { defaultFsType: 'ext4' } });
  const kc = ['--kubeconfig', env.kubeconfig];
  const gated = path.join(env.runDir, 'gate.sock');
  gate = await CsiGate.start(socket, gated);
  const node = ['--node-name', NODE_NAME, '--backends', 'loop,lvm'];
  env.start('registrar', [sidecar('registrar'), '--csi-address', socket, '--kubelet-registration-path', socket, '--plugin-registration-dir', path.join(env.kubeletDir, 'plugins_registry')]);
  env.start('provisioner', [sidecar('provisioner'), '--csi-address', gated, ...kc, ...node]);
  env.start('attacher', [sidecar('attacher'), '--csi-address', gated, ...kc, ...node]);
  await env.registerDriver();
  // the provisioner reads the node's topology from its CSINode entry: registered first
  await env.waitFor('driver registered on the node', async () => (await env.json(['get', 'csinode', NODE_NAME])).spec?.drivers?.some((d: any) => d.name === DRIVER));
  await env.apply(storageClass('tscsi-now', { volumeBindingMode: 'Immediate', reclaimPolicy: 'Delete', parameters: { backend: 'loop' } }));
  const pinned = (name: string, node: string) =>
    storageClass(name, { volumeBindingMode: 'Immediate', reclaimPolicy: 'Delete', allowedTopologies: [{ matchLabelExpressions: [{ key: TOPOLOGY_KEY, values: [node] }] }] });
  await env.apply(pinned('tscsi-here', NODE_NAME));
  await env.apply(pinned('tscsi-elsewhere', 'tscsi-e2e-no-such-node'));
  await env.apply(storageClass('tscsi-later', { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete' }));
}, 60 * MIN);

afterAll(async () => {
  if (process.env.TSCSI_E2E_KEEP_LOGS) console.log(`logs in ${env.runDir}/logs`);
  env.printErrors(['registrar', 'provisioner', 'attacher']);
  await env.down();
  await gate?.close();
  await driver?.cleanup();
  console.log(`provisioner e2e: ${JSON.stringify(results)}`);
}, 15 * MIN);

/** A claim bound and used by a pod that writes and reads back: Succeeded is the pod having Run with the volume. */
async function provisionedAndUsed(name: string, className: string): Promise<{ pvName: string; handle: string }> {
  const t0 = Date.now();
  await env.apply(claim(name, className, '32Mi'));
  const b = await env.bound(name);
  results[`${name}BoundMs`] = Date.now() - t0;
  await env.apply(pod(name, name, 'echo hello > /data/f && cat /data/f'));
  expect(await env.waitPhase(name, ['Succeeded', 'Failed'])).toBe('Succeeded');
  expect((await env.logs(name)).trim()).toBe('hello');
  results[`${name}PodDoneMs`] = Date.now() - t0;
  return b;
}

async function deleteClaimAndPod(name: string): Promise<void> {
  await env.kubectl(['delete', 'pod', name, '--ignore-not-found', '--wait=true', '--timeout=120s']);
  await env.kubectl(['delete', 'pvc', name, '--ignore-not-found', '--wait=true', '--timeout=120s']);
}

describe('Immediate binding on a node-local backend: a node\'s provisioner takes the claim', () => {
  it('an Immediate loop claim is taken for the node, provisioned there, and its pod runs', { timeout: 5 * MIN }, async () => {
    const { pvName, handle } = await provisionedAndUsed('now', 'tscsi-now');
    const c = await env.json(['get', 'pvc', 'now']);
    expect(c.metadata.annotations[SELECTED]).toBe(NODE_NAME);
    const selected = await eventOf('now', 'NodeSelected');
    expect(selected.message).toBe(`node ${NODE_NAME} provisions the volume (Immediate binding: its provisioner took the claim first among the nodes that can hold it)`);
    const pv = await env.json(['get', 'pv', pvName]);
    expect(pv.spec.nodeAffinity.required.nodeSelectorTerms).toEqual([{ matchExpressions: [{ key: TOPOLOGY_KEY, operator: 'In', values: [NODE_NAME] }] }]);
    const [create] = gate!.seen('CreateVolume', (r) => r.name === pvName);
    expect(create.request.accessibility_requirements.requisite).toEqual([{ segments: { [TOPOLOGY_KEY]: NODE_NAME } }]);
    await deleteClaimAndPod('now');
    await env.waitFor('volume gone', async () => !(await volumeIds()).includes(handle));
  });

  it('a claim whose StorageClass\'s allowedTopologies name the node is provisioned and its pod runs', { timeout: 5 * MIN }, async () => {
    const { handle } = await provisionedAndUsed('here', 'tscsi-here');
    expect((await env.json(['get', 'pvc', 'here'])).metadata.annotations[SELECTED]).toBe(NODE_NAME);
    await deleteClaimAndPod('here');
    await env.waitFor('volume gone', async () => !(await volumeIds()).includes(handle));
  });

  it('a claim no node can take stays Pending with an Event saying why: outside allowedTopologies, or larger than the node holds', { timeout: 4 * MIN }, async () => {
    await env.apply(claim('elsewhere', 'tscsi-elsewhere', '32Mi'));
    await env.apply(claim('huge', 'tscsi-now', '100Ti'));
    const outside = await eventOf('elsewhere', 'NodeNotEligible');
    expect(outside.type).toBe('Warning');
    expect(outside.message).toBe(
      `node ${NODE_NAME} is outside the StorageClass's allowedTopologies (${TOPOLOGY_KEY} in [tscsi-e2e-no-such-node]); the provisioner of node ${NODE_NAME} does not take it (Immediate binding: a node that can hold the volume takes it)`,
    );
    const big = await eventOf('huge', 'NodeNotEligible');
    expect(big.message).toMatch(new RegExp(`^node ${NODE_NAME.replace(/\./g, '\\.')} (has \\d+ bytes free|holds volumes of at most \\d+ bytes) for this StorageClass, the claim asks for ${100n * 2n ** 40n}; `));
    for (const name of ['elsewhere', 'huge']) {
      const c = await env.json(['get', 'pvc', name]);
      expect(c.status.phase).toBe('Pending');
      expect(c.metadata.annotations?.[SELECTED]).toBeUndefined();
      expect(gate!.seen('CreateVolume', (r) => r.name === `pvc-${c.metadata.uid}`)).toEqual([]);
    }
    // A claim that stays unplaceable costs the node no GetCapacity on each 30 s resync of the
    // claim watch: the node looks again when the claim, its class or its volumes change, else
    // with backoff (immediate.ts ClaimVerdicts). The window spans a resync.
    const asked = gate!.seen('GetCapacity').length;
    await holdsFor('no new GetCapacity for the unchanged claims', () => gate!.seen('GetCapacity').length === asked, 32_000, 1000);
    await env.kubectl(['delete', 'pvc', 'elsewhere', 'huge', '--wait=true', '--timeout=60s']);
  });

  it('a claim whose class names a backend the driver does not have gets an Event saying nobody provisions it', { timeout: 3 * MIN }, async () => {
    await env.apply(storageClass('tscsi-typo', { volumeBindingMode: 'Immediate', reclaimPolicy: 'Delete', parameters: { backend: 'lvn' } }));
    await env.apply(claim('typo', 'tscsi-typo', '32Mi'));
    const why = await eventOf('typo', 'ProvisioningFailed');
    expect(why.type).toBe('Warning');
    expect(why.message).toBe(
      'StorageClass "tscsi-typo" names backend "lvn", which csi.tscsi.dev does not have (its backends: loop, lvm, rbd): no provisioner takes this claim; fix the class\'s "backend" parameter (a class cannot be edited: make a new one) and claim again',
    );
    expect((await env.json(['get', 'pvc', 'typo'])).status.phase).toBe('Pending');
    await env.kubectl(['delete', 'pvc', 'typo', '--wait=true', '--timeout=60s']);
    await env.kubectl(['delete', 'storageclass', 'tscsi-typo']);
  });
});

describe('clones', () => {
  it('a clone of a bound claim is made from its volume; a source not bound, a smaller claim and another volume mode are refused with Events', { timeout: 6 * MIN }, async () => {
    await env.apply(claim('orig', 'tscsi-now', '32Mi'));
    const orig = await env.bound('orig');
    await env.apply(claim('pending-src', 'tscsi-later', '32Mi')); // WaitForFirstConsumer, no pod: never bound
    const from = (name: string) => ({ dataSource: { kind: 'PersistentVolumeClaim', name } });
    await env.apply(claim('copy', 'tscsi-now', '64Mi', from('orig')));
    await env.apply(claim('copy-small', 'tscsi-now', '16Mi', from('orig')));
    await env.apply(claim('copy-block', 'tscsi-now', '32Mi', { ...from('orig'), volumeMode: 'Block' }));
    await env.apply(claim('copy-unbound', 'tscsi-now', '32Mi', from('pending-src')));

    const copy = await env.bound('copy');
    const [create] = gate!.seen('CreateVolume', (r) => r.name === copy.pvName);
    expect(create.request.volume_content_source).toMatchObject({ volume: { volume_id: orig.handle } });
    expect(await env.kubectl(['get', 'pv', copy.pvName, '-o', 'jsonpath={.spec.capacity.storage}'])).toBe('64Mi');

    const failed = (name: string) => eventOf(name, 'ProvisioningFailed');
    const prefix = 'failed to provision volume with StorageClass "tscsi-now": ';
    expect((await failed('copy-small')).message).toBe(`${prefix}requested volume size ${16 * 2 ** 20} is less than the size ${32 * 2 ** 20} of the source claim default/orig: a clone must be at least as large as its source`);
    expect((await failed('copy-block')).message).toBe(`${prefix}the claim's volume mode Block differs from the source claim default/orig's Filesystem: a clone keeps its source's volume mode`);
    expect((await failed('copy-unbound')).message).toBe(`${prefix}source claim default/pending-src is not bound to a volume yet (phase Pending); the clone is made once it is`);
    for (const name of ['copy-small', 'copy-block', 'copy-unbound']) {
      const c = await env.json(['get', 'pvc', name]);
      expect(c.status.phase).toBe('Pending');
      // refused before any volume: no CreateVolume, so nothing to clean up after
      expect(gate!.seen('CreateVolume', (r) => r.name === `pvc-${c.metadata.uid}`)).toEqual([]);
    }
    await env.kubectl(['delete', 'pvc', 'copy', 'copy-small', 'copy-block', 'copy-unbound', 'pending-src', 'orig', '--wait=true', '--timeout=120s']);
    await env.waitFor('volumes gone', async () => {
      const ids = await volumeIds();
      return !ids.includes(orig.handle) && !ids.includes(copy.handle);
    });
  });
});

describe('deleting', () => {
  // The claim and its pod are deleted together; the attacher's ControllerUnpublish is held
  // at the gate (the driver has unpublished, Kubernetes still sees the VolumeAttachment),
  // so the PV is Released while its volume is still being detached.
  it('a claim deleted while its pod is still detaching: no DeleteVolume until the VolumeAttachment is gone, then a handful at most', { timeout: 6 * MIN }, async () => {
    // WaitForFirstConsumer: this case is about deletion alone (and runs on a provisioner without Immediate binding)
    await env.apply(claim('busy', 'tscsi-later', '32Mi'));
    await env.apply(pod('busy', 'busy', 'echo x > /data/f && sleep 3600'));
    const { pvName, handle } = await env.bound('busy');
    await env.waitPhase('busy', ['Running']);
    const va = await env.waitFor('VolumeAttachment', async () => (await env.json(['get', 'volumeattachments'])).items.find((v: any) => v.spec.source.persistentVolumeName === pvName));
    const unpublish = gate!.hold('ControllerUnpublishVolume', (r) => r.volume_id === handle);
    await env.kubectl(['delete', 'pod', 'busy', '--wait=false']);
    await env.kubectl(['delete', 'pvc', 'busy', '--wait=false']);
    try {
      await unpublish.answered; // detached as far as the driver knows; the attachment remains
      await env.waitFor('PV Released', async () => (await env.json(['get', 'pv', pvName])).status.phase === 'Released');
      // nothing to wait for: the provisioner must keep not calling while the attachment exists
      await holdsFor('no DeleteVolume while the VolumeAttachment exists', async () => gate!.seen('DeleteVolume', (r) => r.volume_id === handle).length === 0, 8_000);
      expect((await env.kubectl(['get', 'volumeattachment', va.metadata.name, '--ignore-not-found', '-o', 'name'])).trim()).not.toBe('');
    } finally {
      unpublish.release();
    }
    await env.waitFor('PV gone', async () => !(await env.pvNames()).includes(pvName), 3 * MIN);
    expect(await volumeIds()).not.toContain(handle);
    const calls = gate!.seen('DeleteVolume', (r) => r.volume_id === handle).length;
    results.deleteVolumeCallsAfterDetach = calls;
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(calls).toBeLessThanOrEqual(3);
    expect(env.log('provisioner')).toContain('waiting for the volume to be detached before DeleteVolume');
  });

  // Interrupted after the driver made the volume and before the provisioner heard of it
  // (its CreateVolume answer held at the gate), on the node's provisioner: the claim's
  // finalizer keeps it until the volume is found by its derived ID and deleted.
  it('an Immediate claim deleted while its CreateVolume is in flight leaves no volume and no PV', { timeout: 5 * MIN }, async () => {
    const held = gate!.hold('CreateVolume');
    await env.apply(claim('fleeting', 'tscsi-now', '32Mi'));
    const req = await held.arrived;
    await held.answered;
    const volumeId = derivedVolumeId('loop', req.name);
    expect(await volumeIds()).toContain(volumeId);
    await env.kubectl(['delete', 'pvc', 'fleeting', '--wait=false']);
    try {
      const p = await env.json(['get', 'pvc', 'fleeting']);
      expect(p.metadata.deletionTimestamp).toBeTruthy();
      expect(p.metadata.annotations[SELECTED]).toBe(NODE_NAME);
      expect(p.metadata.finalizers).toContain('csi.tscsi.dev/provisioning-loop');
      expect(p.spec.volumeName ?? '').toBe('');
    } finally {
      held.release();
    }
    await env.waitFor('claim gone', async () => !(await env.kubectl(['get', 'pvc', '-o', 'name'])).includes('fleeting'), 2 * MIN);
    // a PV the provisioner made once its answer came is Released and deleted with its volume
    await env.waitFor('no PV of it', async () => !(await env.pvNames()).includes(req.name));
    const left = (await volumeIds()).includes(volumeId);
    if (left) await driver!.client!.Controller.DeleteVolume({ volume_id: volumeId });
    expect(left).toBe(false);
    expect(gate!.seen('CreateVolume', (r) => r.name === req.name)).toHaveLength(1);
  });
});
