// VolumeAttributesClass on the real cluster: a user changes a claim's
// spec.volumeAttributesClassName (kubectl only) and our resizer calls ControllerModifyVolume
// with the class's parameters; the loop backend's directIO then shows on the loop device
// (/sys/block/loopN/loop/dio) and the claim's status says the class was reached. A class the
// driver calls invalid leaves the claim Infeasible with its conditions and Events, and the
// resizer neither crashes nor retries it hot. A claim created with a class gets the class's
// parameters in CreateVolume. The driver (loop backend) and the sidecars run as host
// processes; the sidecars reach the driver through a CsiGate, which counts their calls.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ClusterEnv, DRIVER, MIN, NODE_NAME, claim, pod, running, storageClass, type HostProcess } from '../lib/cluster-env.js';
import { DriverHarness, loopDevices } from '../lib/driver-harness.js';
import { CsiGate } from '../lib/csi-gate.js';
import { holdsFor } from '../lib/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const env = new ClusterEnv();
let driver: DriverHarness | undefined;
let gate: CsiGate | undefined;
let resizer: HostProcess | undefined;
const results: Record<string, number | string> = {};
const t0 = Date.now();
/** Longer than the sidecars' 30 s resync: a hot retry (or one per resync) would show within it. */
const NO_RETRY_WINDOW_MS = 40_000;

const sidecar = (name: string) => path.join(ROOT, 'dist', 'sidecars', name, 'main.js');

function vac(name: string, parameters: Record<string, string>) {
  return { apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttributesClass', metadata: { name }, driverName: DRIVER, parameters };
}

/** The loop device's direct I/O flag ('1' or '0') of the volume `handle`, once it is attached. */
async function dio(handle: string): Promise<string> {
  const dev = await env.waitFor(`loop device of ${handle}`, async () => (await loopDevices()).find((d) => path.basename(d.backFile) === `${handle}.img`)?.name);
  return (await fs.readFile(`/sys/block/${path.basename(dev)}/loop/dio`, 'utf8')).trim();
}

async function setClass(name: string, cls: string | null): Promise<void> {
  await env.kubectl(['patch', 'pvc', name, '--type', 'merge', '-p', JSON.stringify({ spec: { volumeAttributesClassName: cls } })]);
}

/** Waits until the claim's status says its volume has class `cls` and nothing is in progress. */
async function reached(name: string, cls: string): Promise<any> {
  return env.waitFor(
    `claim ${name} at class ${cls}`,
    async () => {
      const p = await env.json(['get', 'pvc', name]);
      return p.status.currentVolumeAttributesClassName === cls && !p.status.modifyVolumeStatus && p;
    },
    2 * MIN,
    () => env.kubectl(['describe', 'pvc', name]),
  );
}

/** The claim's conditions the resizer owns (Kubernetes adds others, e.g. Unused). */
const modifyConditions = (p: any): string[] => (p.status.conditions ?? []).map((c: any) => c.type).filter((t: string) => t === 'ModifyingVolume' || t === 'ModifyVolumeError');

async function events(name: string): Promise<any[]> {
  return (await env.json(['get', 'events', '--field-selector', `involvedObject.name=${name}`])).items;
}

const modifyCalls = (handle: string) => gate!.seen('ControllerModifyVolume', (r) => r.volume_id === handle);

beforeAll(async () => {
  await env.up();
  results.clusterUpS = Math.round((Date.now() - t0) / 1000);
  const socket = path.join(env.kubeletDir, 'plugins', DRIVER, 'csi.sock');
  driver = await DriverHarness.start({ socketPath: socket, nodeId: NODE_NAME, pathRoots: [env.kubeletDir], driver: { defaultFsType: 'ext4' } });
  const gated = path.join(env.runDir, 'gate.sock');
  gate = await CsiGate.start(socket, gated);
  const kc = ['--kubeconfig', env.kubeconfig];
  env.start('registrar', [sidecar('registrar'), '--csi-address', socket, '--kubelet-registration-path', socket, '--plugin-registration-dir', path.join(env.kubeletDir, 'plugins_registry')]);
  env.start('provisioner', [sidecar('provisioner'), '--csi-address', gated, ...kc]);
  env.start('attacher', [sidecar('attacher'), '--csi-address', gated, ...kc]);
  resizer = env.start('resizer', [sidecar('resizer'), '--csi-address', gated, ...kc]);
  await env.registerDriver();
  await env.apply(storageClass('tscsi-loop', { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete' }));
  await env.apply(vac('tscsi-buffered', { directIO: 'false' }));
  await env.apply(vac('tscsi-direct', { directIO: 'true' }));
  // a parameter the loop backend does not have: the driver answers INVALID_ARGUMENT
  await env.apply(vac('tscsi-bogus', { iopsLimit: '100' }));
}, 30 * MIN);

afterAll(async () => {
  env.printErrors(['provisioner', 'attacher', 'resizer']);
  await env.down();
  await gate?.close();
  await driver?.cleanup();
  results.fileS = Math.round((Date.now() - t0) / 1000);
  console.log(`vac e2e: ${JSON.stringify(results)}`);
}, 15 * MIN);

describe('VolumeAttributesClass -> ControllerModifyVolume', () => {
  it('a class change reaches the loop device of a running pod, and the claim and its PV say so', { timeout: 8 * MIN }, async () => {
    await env.apply(claim('data', 'tscsi-loop', '32Mi'));
    await env.apply(pod('user', 'data', 'echo hi > /data/f && sleep 3600'));
    await env.waitPhase('user', ['Running']);
    const { pvName, handle } = await env.bound('data');
    expect(await dio(handle)).toBe('1'); // the loop backend's default

    let t = Date.now();
    await setClass('data', 'tscsi-buffered');
    const p = await reached('data', 'tscsi-buffered');
    results.modifyToReachedMs = Date.now() - t;
    expect(await dio(handle)).toBe('0');
    expect(modifyConditions(p)).toEqual([]);
    expect(await env.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.spec.volumeAttributesClassName}'])).toBe('tscsi-buffered');
    expect(modifyCalls(handle).map((c) => c.request.mutable_parameters)).toEqual([{ directIO: 'false' }]);
    const evs = await events('data');
    expect(evs.map((e) => e.reason)).toEqual(expect.arrayContaining(['VolumeModify', 'VolumeModifySuccessful']));

    t = Date.now();
    await setClass('data', 'tscsi-direct');
    await reached('data', 'tscsi-direct');
    results.modifyBackMs = Date.now() - t;
    expect(await dio(handle)).toBe('1');
    expect(await env.kubectl(['exec', 'user', '--', 'cat', '/data/f'])).toBe('hi');
  });

  it('an invalid class makes the claim Infeasible with its conditions and Events, once, without a crash loop; a valid class then recovers it', { timeout: 8 * MIN }, async () => {
    const { handle } = await env.bound('data');
    const before = modifyCalls(handle).length;
    await setClass('data', 'tscsi-bogus');
    const p = await env.waitFor(
      'claim Infeasible',
      async () => {
        const c = await env.json(['get', 'pvc', 'data']);
        return c.status.modifyVolumeStatus?.status === 'Infeasible' && c;
      },
      2 * MIN,
      () => env.kubectl(['describe', 'pvc', 'data']),
    );
    expect(p.status.modifyVolumeStatus.targetVolumeAttributesClassName).toBe('tscsi-bogus');
    expect(p.status.currentVolumeAttributesClassName).toBe('tscsi-direct');
    const cond = (type: string) => p.status.conditions.find((c: any) => c.type === type);
    expect(cond('ModifyingVolume')).toMatchObject({ status: 'True', message: 'Modifying volume to "tscsi-bogus" failed. Waiting for retry.' });
    expect(cond('ModifyVolumeError')).toMatchObject({ status: 'True', reason: 'InvalidArgument' });
    expect(cond('ModifyVolumeError').message).toMatch(/iopsLimit/);
    const failed = await env.waitFor('VolumeModifyFailed event', async () => (await events('data')).find((e) => e.reason === 'VolumeModifyFailed' && e.type === 'Warning'));
    expect(failed.message).toMatch(/INVALID_ARGUMENT.*iopsLimit/);
    expect(await dio(handle)).toBe('1'); // the volume keeps what it had

    // no hot retry, no retry on each resync, and the resizer stays up
    await holdsFor('one ControllerModifyVolume for the invalid class, resizer running', () => modifyCalls(handle).length === before + 1 && running(resizer!), NO_RETRY_WINDOW_MS);
    expect(modifyCalls(handle).at(-1)!.request.mutable_parameters).toEqual({ iopsLimit: '100' });

    await setClass('data', 'tscsi-buffered');
    const ok = await reached('data', 'tscsi-buffered');
    expect(modifyConditions(ok)).toEqual([]);
    expect(await dio(handle)).toBe('0');
  });

  it('a class that does not exist leaves the claim Pending with an Event, and is applied once it is created', { timeout: 6 * MIN }, async () => {
    const { handle } = await env.bound('data');
    await setClass('data', 'tscsi-later');
    await env.waitFor('claim Pending', async () => (await env.json(['get', 'pvc', 'data'])).status.modifyVolumeStatus?.status === 'Pending');
    const ev = await env.waitFor('event', async () => (await events('data')).find((e) => e.reason === 'VolumeModifyFailed' && /tscsi-later/.test(e.message)));
    expect(ev.message).toBe('VAC "tscsi-later" does not exist.');
    await env.apply(vac('tscsi-later', { directIO: 'true' }));
    await reached('data', 'tscsi-later');
    expect(await dio(handle)).toBe('1');
    await env.kubectl(['delete', 'pod', 'user', '--wait=true', '--timeout=60s']);
    await env.kubectl(['delete', 'pvc', 'data', '--wait=true', '--timeout=60s']);
  });

  it('a claim created with a class gets its parameters in CreateVolume, and its PV and status name it', { timeout: 6 * MIN }, async () => {
    await env.apply(claim('born', 'tscsi-loop', '32Mi', { volumeAttributesClassName: 'tscsi-buffered' }));
    await env.apply(pod('born-user', 'born', 'sleep 3600'));
    await env.waitPhase('born-user', ['Running']);
    const { pvName, handle } = await env.bound('born');
    const create = gate!.seen('CreateVolume', (r) => r.name === pvName);
    expect(create.at(-1)!.request.mutable_parameters).toEqual({ directIO: 'false' });
    expect(await env.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.spec.volumeAttributesClassName}'])).toBe('tscsi-buffered');
    await reached('born', 'tscsi-buffered');
    expect(await dio(handle)).toBe('0');
    expect(modifyCalls(handle)).toEqual([]); // nothing to modify: the volume was made so
    await env.kubectl(['delete', 'pod', 'born-user', '--wait=true', '--timeout=60s']);
    await env.kubectl(['delete', 'pvc', 'born', '--wait=true', '--timeout=60s']);
  });
});
