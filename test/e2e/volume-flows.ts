// What every install of the driver must do for a user, as one suite that each install runs:
// sidecars.test.ts (driver and sidecars as host processes) and deploy.test.ts (everything as
// pods from deploy/). Each case makes the claims and pods it needs and removes them, so any
// one of them can run alone (`vitest run -t ...`) or in any order.
import { it, expect } from 'vitest';
import { type ClusterEnv, DRIVER, MIN, NODE_NAME, claim, pod } from '../lib/cluster-env.js';
import { holdsFor } from '../lib/wait.js';
import type { CsiClient } from '../../sidecars/common/csi-client.js';

export interface Install {
  env: ClusterEnv;
  /** StorageClasses of the loop backend: fs is xfs, all bind at first consumer; fs and block reclaim Delete, retain Retain. */
  classes: { fs: string; block: string; retain: string };
  /** A CSI client of the installed driver (the test talks to it to see volumes the CO cannot show). */
  csi(): CsiClient;
  /** What to print when a wait on `pod` times out. */
  diagnostics(pod: string): Promise<string>;
  /** Sees every PV the suite provisions (the pod install checks its backing file and detaches it at the end). */
  provisioned(pv: any): void;
  /** Figures the suite measures, reported by the install's afterAll. */
  results: Record<string, number | string | boolean>;
}

const FILL_AND_REPORT_SIZE = 'while true; do df -k /data | tail -1; sleep 1; done';

export function volumeFlows(install: Install): void {
  const { env, classes } = install;

  async function volumeIds(): Promise<string[]> {
    const r = await install.csi().Controller.ListVolumes({});
    return r.entries.map((e: any) => e.volume.volume_id);
  }

  const waitPhase = (p: string, want: string[]) => env.waitPhase(p, want, 3 * MIN, () => install.diagnostics(p));

  /** The PV a claim was bound to, handed to the install. */
  async function provisionedPv(claimName: string): Promise<any> {
    const pv = await env.json(['get', 'pv', await env.kubectl(['get', 'pvc', claimName, '-o', 'jsonpath={.spec.volumeName}'])]);
    install.provisioned(pv);
    return pv;
  }

  /** Deletes the pods, then the claim, each waited for; its PV and volume follow as the reclaim policy says. */
  async function removeClaim(claimName: string, pods: string[]): Promise<void> {
    if (pods.length) await env.kubectl(['delete', 'pod', ...pods, '--ignore-not-found', '--wait=true', '--timeout=120s']);
    await env.kubectl(['delete', 'pvc', claimName, '--ignore-not-found', '--wait=true', '--timeout=120s']);
  }

  /** The last `df -k /data` line a pod running FILL_AND_REPORT_SIZE printed, in KiB. */
  async function reportedKiB(p: string): Promise<number> {
    const last = (await env.logs(p)).trim().split('\n').pop() ?? '';
    return Number(last.trim().split(/\s+/)[1]);
  }

  it('kubelet registers the driver: CSINode lists it with its node ID and topology key; the node has the topology label', { timeout: 3 * MIN }, async () => {
    const t0 = Date.now();
    const entry = await env.waitFor('CSINode entry', async () => (await env.json(['get', 'csinode', NODE_NAME])).spec.drivers?.find((d: any) => d.name === DRIVER));
    install.results.registrationSeenMs = Date.now() - t0;
    expect(entry.nodeID).toBe(NODE_NAME);
    expect(entry.topologyKeys).toEqual(['topology.tscsi.dev/node']);
    const node = await env.json(['get', 'node', NODE_NAME]);
    expect(node.metadata.labels['topology.tscsi.dev/node']).toBe(NODE_NAME);
  });

  it('a claim keeps its data across pods: written by one, read by the next', { timeout: 8 * MIN }, async () => {
    const t0 = Date.now();
    await env.apply(claim('data', classes.fs, '512Mi'));
    await env.apply(pod('writer', 'data', 'echo hello-from-writer > /data/f && sync && echo written && sleep 3600'));
    await waitPhase('writer', ['Running']);
    install.results.pvcToRunningMs = Date.now() - t0;
    await env.waitFor('writer wrote', async () => (await env.logs('writer')).includes('written'));
    const pvc = await env.json(['get', 'pvc', 'data']);
    expect(pvc.status.phase).toBe('Bound');
    expect(pvc.metadata.annotations['volume.kubernetes.io/selected-node']).toBe(NODE_NAME);
    const pv = await provisionedPv('data');
    expect(pv.metadata.annotations['pv.kubernetes.io/provisioned-by']).toBe(DRIVER);
    expect(pv.spec.csi.fsType).toBe('xfs');
    expect(pv.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0]).toEqual({ key: 'topology.tscsi.dev/node', operator: 'In', values: [NODE_NAME] });
    const va = (await env.json(['get', 'volumeattachment'])).items.find((v: any) => v.spec.source.persistentVolumeName === pv.metadata.name);
    expect(va.status.attached).toBe(true);

    await env.kubectl(['delete', 'pod', 'writer', '--wait=true', '--timeout=120s']);
    await env.apply(pod('reader', 'data', 'cat /data/f; sleep 3600'));
    await waitPhase('reader', ['Running']);
    await env.waitFor('reader saw the file', async () => (await env.logs('reader')).includes('hello-from-writer'));
    await removeClaim('data', ['reader']);
  });

  it('grows the claim while the pod runs: the pod sees the new size', { timeout: 8 * MIN }, async () => {
    await env.apply(claim('grown', classes.fs, '512Mi'));
    await env.apply(pod('grower', 'grown', FILL_AND_REPORT_SIZE));
    await waitPhase('grower', ['Running']);
    await provisionedPv('grown');
    await env.waitFor('the pod reports its size', async () => (await reportedKiB('grower')) > 0);
    expect(await reportedKiB('grower')).toBeLessThan(600 * 1024);
    await env.kubectl(['patch', 'pvc', 'grown', '--type', 'merge', '-p', JSON.stringify({ spec: { resources: { requests: { storage: '1Gi' } } } })]);
    await env.waitFor(
      'claim capacity 1Gi',
      async () => (await env.kubectl(['get', 'pvc', 'grown', '-o', 'jsonpath={.status.capacity.storage}'])) === '1Gi',
      4 * MIN,
      () => install.diagnostics('grower'),
    );
    await env.waitFor('the pod sees about 1 GiB', async () => (await reportedKiB('grower')) > 900 * 1024, 2 * MIN, () => install.diagnostics('grower'));
    await removeClaim('grown', ['grower']);
  });

  it('a Block claim is written and read raw', { timeout: 6 * MIN }, async () => {
    await env.apply(claim('raw', classes.block, '64Mi', { volumeMode: 'Block' }));
    await env.apply(pod('raw-io', 'raw', 'echo raw-block-bytes | dd of=/dev/xvda bs=512 count=1 conv=sync,fsync 2>/dev/null; dd if=/dev/xvda bs=512 count=1 2>/dev/null | head -c 15; echo', true));
    await waitPhase('raw-io', ['Succeeded', 'Failed']);
    await provisionedPv('raw');
    expect(await env.logs('raw-io')).toContain('raw-block-bytes');
    expect(await env.phase('raw-io')).toBe('Succeeded');
    await removeClaim('raw', ['raw-io']);
  });

  it('deleting a claim deletes its PV and its backing volume', { timeout: 5 * MIN }, async () => {
    await env.apply(claim('doomed-data', classes.block, '32Mi', { volumeMode: 'Block' }));
    await env.apply(pod('doomed-user', 'doomed-data', 'echo bytes | dd of=/dev/xvda bs=512 count=1 conv=sync,fsync', true));
    await waitPhase('doomed-user', ['Succeeded', 'Failed']);
    const pv = await provisionedPv('doomed-data');
    const handle = pv.spec.csi.volumeHandle;
    expect(await volumeIds()).toContain(handle);
    await removeClaim('doomed-data', ['doomed-user']);
    await env.waitFor('PV gone', async () => !(await env.pvNames()).includes(pv.metadata.name), 3 * MIN, () => install.diagnostics('doomed-user'));
    await env.waitFor('backing volume gone', async () => !(await volumeIds()).includes(handle));
  });

  it('with reclaim Retain the backing volume stays after the claim is gone', { timeout: 5 * MIN }, async () => {
    await env.apply(claim('kept', classes.retain, '32Mi'));
    await env.apply(pod('keeper', 'kept', 'echo kept > /data/f && sync'));
    await waitPhase('keeper', ['Succeeded', 'Failed']);
    const pv = await provisionedPv('kept');
    const [pvName, handle] = [pv.metadata.name as string, pv.spec.csi.volumeHandle as string];
    await removeClaim('kept', ['keeper']);
    await env.waitFor('PV Released', async () => (await env.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.status.phase}'])) === 'Released');
    // Keeping is doing nothing: there is no event to wait for, so the volume must stay while
    // the provisioner has a few resyncs' time to (wrongly) act on the Released PV.
    await holdsFor('the Released PV keeps its volume', async () => (await volumeIds()).includes(handle), 3_000);
    // The admin removes the PV object; the volume is still theirs to delete, once nothing has it attached.
    await env.kubectl(['delete', 'pv', pvName, '--wait=true', '--timeout=60s']);
    await env.waitFor('no VolumeAttachment of the PV', async () => !(await env.json(['get', 'volumeattachment'])).items.some((v: any) => v.spec.source.persistentVolumeName === pvName), 2 * MIN);
    expect(await volumeIds()).toContain(handle);
    await install.csi().Controller.DeleteVolume({ volume_id: handle });
  });
}
