// Our driver and our sidecars (as host processes) on the real single-node cluster: kubelet
// registers the driver, the provisioner makes volumes for claims, the attacher publishes
// them, kubelet stages and mounts them into pods, the resizer grows them online.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ClusterEnv, NODE_NAME, pod, claim } from '../lib/cluster-env.js';
import { DriverHarness } from '../lib/driver-harness.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const DRIVER = 'csi.tscsi.dev';
const MIN = 60_000;
const env = new ClusterEnv();
let driver: DriverHarness | undefined;
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
  driver = await DriverHarness.start({ socketPath: socket, nodeId: NODE_NAME, pathRoots: [env.kubeletDir], extraArgs: ['--default-fs-type', 'ext4'] });
  const kc = ['--kubeconfig', env.kubeconfig];
  env.start('registrar', [sidecar('registrar'), '--csi-address', socket, '--kubelet-registration-path', socket, '--plugin-registration-dir', path.join(env.kubeletDir, 'plugins_registry')]);
  env.start('provisioner', [sidecar('provisioner'), '--csi-address', socket, ...kc, '--leader-election', '--http-endpoint', `127.0.0.1:${HTTP_PORT}`]);
  env.start('attacher', [sidecar('attacher'), '--csi-address', socket, ...kc]);
  env.start('resizer', [sidecar('resizer'), '--csi-address', socket, ...kc]);
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
  for (const n of ['registrar', 'provisioner', 'attacher', 'resizer']) {
    try {
      const l = env.log(n);
      if (/"level":(50|60)/.test(l)) console.log(`--- ${n} errors ---\n${l.split('\n').filter((x) => /"level":(50|60)/.test(x)).slice(-10).join('\n')}`);
    } catch {
      /* never started */
    }
  }
  await env.down();
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

  it('a claim deleted while it is being provisioned leaves no volume behind', { timeout: 5 * MIN }, async () => {
    const before = await volumeIds();
    await env.apply(claim('fleeting', 'tscsi-immediate', '32Mi'));
    // Delete as soon as provisioning has begun (our claim finalizer is on) or, if it was
    // quicker than this poll, has already finished (the claim is bound).
    await env.waitFor('provisioning started', async () => {
      const p = await env.json(['get', 'pvc', 'fleeting']);
      return (p.metadata.finalizers ?? []).includes('csi.tscsi.dev/provisioning') || !!p.spec.volumeName;
    });
    await env.kubectl(['delete', 'pvc', 'fleeting', '--wait=true', '--timeout=120s']);
    await env.waitFor('no volume left', async () => (await volumeIds()).length === before.length, 2 * MIN, async () => JSON.stringify(await volumeIds()));
    await env.waitFor('no PV left', async () => !(await env.kubectl(['get', 'pv', '-o', 'name'])).trim());
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
});
