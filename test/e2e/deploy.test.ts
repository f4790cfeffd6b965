// Installs the driver on the real single-node cluster the way an admin does: the image from
// deploy/image/build (no Docker engine, no registry) imported into the node's containerd,
// then `kubectl apply -k` of the manifests in deploy/ (through deploy/overlays/e2e and one
// overlay generated for this cluster run's paths: test/lib/deploy-install.ts). The driver and every sidecar run as
// pods; the volume flows every install runs (test/e2e/volume-flows.ts) go through them, and
// `kubectl delete -k` removes what was installed. beforeAll installs: every case finds the
// driver installed and makes what else it needs.
//
// Needs root, kubectl, a built tree (`npm run build`). The image is cached in
// $TSCSI_IMAGE_CACHE/images (default /var/cache/tscsi-image) under the hash of its inputs.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { ClusterEnv, DRIVER, KUBECTL, MIN, NODE_NAME, pod, claim, storageClass } from '../lib/cluster-env.js';
import { Installation, DEPLOY, IMAGE, NS, VERSION } from '../lib/deploy-install.js';
import { volumeFlows } from './volume-flows.js';

const env = new ClusterEnv();
/** The installed health monitor's --monitor-interval. */
const HEALTH_INTERVAL_S = 3;
const inst = new Installation(env, { healthIntervalS: HEALTH_INTERVAL_S });
const { results, handles, dataDir, overlay } = inst;
const csi = () => inst.csi!;
const diagnostics = () => inst.diagnostics();
const phase = (p: string) => env.phase(p);
const logs = (p: string) => env.logs(p);
const waitPhase = (p: string, want: string[]) => env.waitPhase(p, want, 3 * MIN, diagnostics);
const nodePods = () => inst.nodePods();
const nodePodReady = () => inst.nodePodReady();

async function volumeIds(): Promise<string[]> {
  const r = await csi().Controller.ListVolumes({});
  return r.entries.map((e: any) => e.volume.volume_id);
}

beforeAll(async () => {
  await inst.prepare();
  await inst.install();
  // two StorageClasses of the test's own: xfs (ext4 grows online only with CAP_SYS_RESOURCE,
  // which these VMs do not give even to privileged containers) and reclaim Retain
  const sc = (name: string, reclaimPolicy: string, parameters: object) => storageClass(name, { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy, parameters });
  await env.apply(sc('tscsi-e2e-xfs', 'Delete', { backend: 'loop', 'csi.storage.k8s.io/fstype': 'xfs' }));
  await env.apply(sc('tscsi-e2e-retain', 'Retain', { backend: 'loop' }));
}, 60 * MIN);

afterAll(async () => {
  await inst.teardown();
  console.log(`deploy e2e: ${JSON.stringify(results)}`);
}, 15 * MIN);

describe('installed from deploy/ as pods on a real cluster', () => {
  it('kubectl apply -k runs every container of the node pod from our image, unrestarted; the controller Deployment waits at 0 replicas', { timeout: 2 * MIN }, async () => {
    const [nodePod] = await nodePods();
    expect(nodePod.spec.containers.map((c: any) => c.image)).toEqual(Array(8).fill(IMAGE));
    expect(nodePod.status.containerStatuses.every((c: any) => c.ready && c.restartCount === 0)).toBe(true);
    // the controller Deployment (RBD only) is installed, scaled to 0
    expect((await env.json(['get', 'deployment', '-n', NS, 'tscsi-controller'])).spec.replicas).toBe(0);
    const info = await csi().Identity.GetPluginInfo({});
    expect(info.name).toBe(DRIVER);
    expect(info.vendor_version).toBe(VERSION);
  });

  // What the API server answered, object by object: every object a kustomization or an
  // example file holds comes back from the server (admitted, defaulted, with a UID), not
  // merely "kubectl exited 0".
  it('every manifest in deploy/ passes kubectl apply --dry-run=server', { timeout: 3 * MIN }, async () => {
    const id = (o: any) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    const check = async (what: string, rendered: any[], args: string[]) => {
      const out = JSON.parse(await env.kubectl(['apply', '--dry-run=server', '-o', 'json', ...args]));
      const answered = new Map<string, any>((out.kind === 'List' ? out.items : [out]).map((o: any) => [id(o), o]));
      expect(rendered.length, what).toBeGreaterThan(0);
      for (const o of rendered) {
        const a = answered.get(id({ ...o, metadata: { namespace: o.metadata.namespace ?? (NAMESPACED.has(o.kind) ? 'default' : undefined), ...o.metadata } }));
        expect(a, `${what}: the server did not answer for ${id(o)}`).toBeDefined();
        expect(a.metadata.uid, `${what}: ${id(o)}`).toMatch(/^[0-9a-f-]{36}$/);
        expect(a.metadata.creationTimestamp, `${what}: ${id(o)}`).toBeTruthy();
      }
      expect(answered.size, what).toBe(rendered.length);
    };
    const NAMESPACED = new Set(['PersistentVolumeClaim', 'Pod', 'ConfigMap', 'Secret', 'ServiceAccount', 'Role', 'RoleBinding', 'DaemonSet', 'Deployment']);
    let objects = 0;
    for (const k of ['.', 'base', 'examples', 'overlays/lvm', 'overlays/rbd', 'overlays/e2e']) {
      const rendered = k8s.loadAllYaml((await execa(KUBECTL, ['kustomize', path.join(DEPLOY, k)])).stdout).map((o: any) => JSON.parse(JSON.stringify(o)));
      await check(`-k ${k}`, rendered, ['-k', path.join(DEPLOY, k)]);
      objects += rendered.length;
    }
    for (const f of fs.readdirSync(path.join(DEPLOY, 'examples')).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')) {
      const rendered = (k8s.loadAllYaml(fs.readFileSync(path.join(DEPLOY, 'examples', f), 'utf8')) as any[]).map((o) => JSON.parse(JSON.stringify(o)));
      await check(f, rendered, ['-f', path.join(DEPLOY, 'examples', f)]);
      objects += rendered.length;
    }
    results.dryRunObjects = objects;
  });

  volumeFlows({
    env,
    classes: { fs: 'tscsi-e2e-xfs', block: 'tscsi-loop', retain: 'tscsi-e2e-retain' },
    csi,
    diagnostics,
    provisioned: (pv) => {
      handles.add(pv.spec.csi.volumeHandle);
      // the backing file is in the DaemonSet's data dir on the host
      expect(fs.readdirSync(path.join(dataDir, 'loop')).length).toBeGreaterThan(0);
    },
    results,
  });

  // A loop device attached by a driver container that has since exited names its backing
  // file relative to that container's (now detached) hostPath mount; the driver matches
  // such devices by inode (driver/host/loop.ts). Before that, NodeUnpublish/NodeUnstage/
  // NodeExpand answered "not staged" / "not volume …" after the restart.
  it('the driver pod restarts under a running pod: the pod keeps its volume, which is then still unpublished, unstaged and deleted', { timeout: 10 * MIN }, async () => {
    await env.apply(claim('survivor', 'tscsi-loop', '64Mi'));
    await env.apply(pod('survivor', 'survivor', 'echo before > /data/f; while true; do date >> /data/f; tail -1 /data/f; sleep 1; done'));
    await waitPhase('survivor', ['Running']);
    const pvName = await env.kubectl(['get', 'pvc', 'survivor', '-o', 'jsonpath={.spec.volumeName}']);
    const handle = await env.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.spec.csi.volumeHandle}']);
    handles.add(handle);
    const before = (await nodePods())[0].metadata.name;
    await env.kubectl(['delete', 'pod', '-n', NS, before, '--wait=true', '--timeout=120s']);
    const t0 = Date.now();
    await env.waitFor('a new node pod Ready', async () => (await nodePods())[0]?.metadata.name !== before && (await nodePodReady()), 4 * MIN, diagnostics);
    results.driverRestartToReadyMs = Date.now() - t0;
    expect(await phase('survivor')).toBe('Running');
    const n = (await logs('survivor')).split('\n').length;
    await env.waitFor('the pod still writes to its volume', async () => (await logs('survivor')).split('\n').length > n + 2);

    try {
      await env.kubectl(['delete', 'pod', 'survivor', '--wait=true', '--timeout=90s']);
      await env.kubectl(['delete', 'pvc', 'survivor', '--wait=false']);
      await env.waitFor('volume deleted', async () => !(await volumeIds()).includes(handle), 90_000);
    } catch (err) {
      // what the driver answered kubelet for this volume, for whoever fixes it
      const log = await env.kubectl(['logs', '-n', NS, 'daemonset/tscsi-node', '-c', 'driver']).catch((e) => String(e));
      const lines = log.split('\n').filter((l) => l.includes(handle) && /"level":(40|50)/.test(l));
      console.log(`after the driver restart: ${String(err).split('\n')[0]}\n${lines.slice(-4).join('\n')}`);
      throw err;
    }
  });

  // The health monitor as installed: its RBAC lets it watch PVs and claims, list the node's
  // pods and write Events (a missing grant would only show as a warning in its log).
  it('the health monitor in the node pod: a volume\'s backing file moved away gives Warnings on the claim from both sides, then Normals', { timeout: 6 * MIN }, async () => {
    await env.apply(claim('ailing', 'tscsi-loop', '64Mi'));
    await env.apply(pod('ailing', 'ailing', 'echo ok > /data/f && sleep 3600'));
    await waitPhase('ailing', ['Running']);
    const { handle } = await env.bound('ailing');
    handles.add(handle);
    const img = (await execa('find', [path.join(dataDir, 'loop'), '-name', `${handle}.img`])).stdout.trim();
    expect(img).toMatch(/\.img$/);
    const events = async (reason: string) =>
      (await env.json(['get', 'events', '--field-selector', 'involvedObject.kind=PersistentVolumeClaim,involvedObject.name=ailing'])).items.filter((e: any) => e.reason === reason);
    const fromBothSides = (reason: string, text: string) =>
      env.waitFor(`${reason} on the claim from both sides`, async () => {
        const sources = new Set((await events(reason)).filter((e: any) => e.message.includes(text)).map((e: any) => e.source.component));
        return sources.has(`${DRIVER}-health-monitor`) && sources.has(`${DRIVER}-health-monitor-node`);
      }, 10 * HEALTH_INTERVAL_S * 1000, diagnostics);
    try {
      fs.renameSync(img, `${img}.away`);
      await fromBothSides('VolumeConditionAbnormal', 'DATA_LOSS BackingFileMissing');
      fs.renameSync(`${img}.away`, img);
      await fromBothSides('VolumeConditionNormal', 'healthy again');
      expect((await events('VolumeConditionAbnormal')).map((e: any) => e.type)).toEqual(['Warning', 'Warning']);
    } finally {
      if (fs.existsSync(`${img}.away`)) fs.renameSync(`${img}.away`, img);
      await env.kubectl(['delete', 'pod', 'ailing', '--ignore-not-found', '--wait=true', '--timeout=120s']);
      await env.kubectl(['delete', 'pvc', 'ailing', '--ignore-not-found', '--wait=true', '--timeout=120s']);
    }
  });

  // deploy/base/node-admission.yaml: RBAC lets the node's sidecars write PVs, claims and
  // VolumeAttachments cluster-wide; the admission policies hold a node's service account to
  // its own node's, by the node the API server names in its pod-bound token. Here a token
  // bound to the running node pod (as kubelet mounts it) tries another node's objects with
  // the calls the sidecars make, and a token bound to no pod tries anything. The flows above
  // (provision, grow, attach, delete through the node's sidecars) prove the node's own work
  // still passes.
  describe('the node service account writes only its own node\'s objects', () => {
    const OTHER = 'tscsi-e2e-other-node';
    const LABEL = 'tscsi.dev/e2e=admission';
    const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

    /** API clients that authenticate with `token` alone (no client certificate). */
    async function as(token: string) {
      const admin = new k8s.KubeConfig();
      admin.loadFromFile(env.kubeconfig);
      const kc = new k8s.KubeConfig();
      kc.loadFromOptions({ clusters: [admin.getCurrentCluster()!], users: [{ name: 'token', token: token.trim() }], contexts: [{ name: 'token', cluster: admin.getCurrentCluster()!.name, user: 'token' }], currentContext: 'token' });
      const who = await kc.makeApiClient(k8s.AuthenticationV1Api).createSelfSubjectReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' } });
      return { core: kc.makeApiClient(k8s.CoreV1Api), storage: kc.makeApiClient(k8s.StorageV1Api), user: who.status!.userInfo! };
    }
    /** The API server's answer to a call: 200, or the failure's code and message. */
    async function answer(call: () => Promise<unknown>): Promise<{ code: number; message: string }> {
      try {
        await call();
        return { code: 200, message: '' };
      } catch (err) {
        const { code, body } = err as { code?: number; body?: unknown };
        if (typeof code !== 'number') throw err;
        let message = String(body);
        try {
          message = JSON.parse(message).message ?? message;
        } catch {
          // not a Status object: keep the text
        }
        return { code, message };
      }
    }
    /** A write the policy refuses: 403 with the policy's name and its own words. */
    async function refused(call: () => Promise<unknown>, policy: string, words: string) {
      const r = await answer(call);
      expect(r.code, r.message).toBe(403);
      expect(r.message).toContain(`ValidatingAdmissionPolicy '${policy}'`);
      expect(r.message).toContain(words);
      results.admissionRefusals = Number(results.admissionRefusals ?? 0) + 1;
    }
    async function allowed(call: () => Promise<unknown>) {
      const r = await answer(call);
      expect(r.code, r.message).toBe(200);
    }
    const pv = (name: string, node: string, n: number) => ({
      apiVersion: 'v1',
      kind: 'PersistentVolume',
      metadata: { name, labels: { 'tscsi.dev/e2e': 'admission' } },
      spec: {
        capacity: { storage: '1Mi' },
        accessModes: ['ReadWriteOnce'],
        persistentVolumeReclaimPolicy: 'Retain', // nothing in the cluster acts on it
        storageClassName: '',
        csi: { driver: DRIVER, volumeHandle: `vol-loop-${String(n).padStart(32, '0')}` },
        nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'topology.tscsi.dev/node', operator: 'In', values: [node] }] }] } },
      },
    });
    const exists = async (kind: string, name: string) => (await env.kubectl(['get', kind, name, '--ignore-not-found', '-o', 'name'])).trim() !== '';
    const claimFinalizers = async () => ((await env.json(['get', 'pvc', 'tscsi-e2e-vap'])).metadata.finalizers ?? []) as string[];
    const claimPatch = (body: object) => ({ name: 'tscsi-e2e-vap', namespace: 'default', body });

    afterAll(async () => {
      // what the admin made, even after a failure (the claim's finalizers first: nothing else removes ours)
      await env.kubectl(['patch', 'pvc', 'tscsi-e2e-vap', '--type', 'merge', '-p', '{"metadata":{"finalizers":null}}']).catch(() => undefined);
      for (const kind of ['volumeattachment', 'pvc', 'pv']) await env.kubectl(['delete', kind, '-l', LABEL, '--ignore-not-found', '--wait=false']).catch(() => undefined);
    });

    it('a token of the node pod: another node\'s PVs, claims and attachments are refused; its own pass', { timeout: 4 * MIN }, async () => {
      const nodePod = (await env.json(['get', 'pods', '-n', NS, '-l', 'app.kubernetes.io/component=node'])).items[0];
      const sa = nodePod.spec.serviceAccountName;
      expect(sa).toBe('tscsi-node');
      const node = await as(await env.kubectl(['create', 'token', sa, '-n', NS, '--duration=10m', '--bound-object-kind=Pod', `--bound-object-name=${nodePod.metadata.name}`]));
      // the API server names the pod's node in the token's user (ServiceAccountTokenPodNodeInfo)
      expect(node.user.username).toBe(`system:serviceaccount:${NS}:${sa}`);
      expect(node.user.extra?.['authentication.kubernetes.io/node-name']).toEqual([NODE_NAME]);

      await env.apply(pv('tscsi-e2e-vap-other', OTHER, 1));
      await env.apply(pv('tscsi-e2e-vap-own', NODE_NAME, 2));
      const PVS = 'tscsi-node-persistentvolumes';
      // another node's PV: neither deleted, nor patched, nor made
      await refused(() => node.core.deletePersistentVolume({ name: 'tscsi-e2e-vap-other' }), PVS, `(node ${NODE_NAME}) may not DELETE PersistentVolume tscsi-e2e-vap-other: a node writes only the PersistentVolumes pinned to itself`);
      expect(await exists('pv', 'tscsi-e2e-vap-other')).toBe(true);
      await refused(
        () => node.core.patchPersistentVolume({ name: 'tscsi-e2e-vap-other', body: { spec: { capacity: { storage: '2Mi' } } } }, mergePatch),
        PVS,
        'may not UPDATE PersistentVolume tscsi-e2e-vap-other',
      );
      expect((await env.json(['get', 'pv', 'tscsi-e2e-vap-other'])).spec.capacity.storage).toBe('1Mi');
      await refused(() => node.core.createPersistentVolume({ body: pv('tscsi-e2e-vap-made', OTHER, 3) }), PVS, 'may not CREATE PersistentVolume tscsi-e2e-vap-made');
      // an RBD volume pinned to this node is still not the node's (the central controller's)
      const rbd = pv('tscsi-e2e-vap-made', NODE_NAME, 3);
      rbd.spec.csi.volumeHandle = `vol-rbd-${'3'.repeat(32)}`;
      await refused(() => node.core.createPersistentVolume({ body: rbd }), PVS, 'whose volume handle is a loop or LVM volume');
      expect(await exists('pv', 'tscsi-e2e-vap-made')).toBe(false);

      // a claim the scheduler selected for another node; then one selected for this node
      await env.apply({
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { name: 'tscsi-e2e-vap', namespace: 'default', labels: { 'tscsi.dev/e2e': 'admission' }, annotations: { 'volume.kubernetes.io/selected-node': OTHER } },
        spec: { accessModes: ['ReadWriteOnce'], storageClassName: 'tscsi-e2e-vap-no-such-class', resources: { requests: { storage: '1Mi' } } },
      });
      const CLAIMS = 'tscsi-node-claims';
      const withOurs = async () => claimPatch({ metadata: { finalizers: [...(await claimFinalizers()), 'csi.tscsi.dev/provisioning-loop'] } });
      const addOurs = await withOurs();
      await refused(() => node.core.patchNamespacedPersistentVolumeClaim(addOurs, mergePatch), CLAIMS, `its volume.kubernetes.io/selected-node is '${OTHER}', not this node`);
      await refused(
        () => node.core.patchNamespacedPersistentVolumeClaimStatus(claimPatch({ status: { capacity: { storage: '1Mi' } } }), mergePatch),
        CLAIMS,
        'may not UPDATE status of claim default/tscsi-e2e-vap',
      );
      await env.kubectl(['annotate', 'pvc', 'tscsi-e2e-vap', '--overwrite', `volume.kubernetes.io/selected-node=${NODE_NAME}`]);
      // this node's claim: its finalizer and the status, as its provisioner and resizer write them...
      await allowed(async () => node.core.patchNamespacedPersistentVolumeClaim(await withOurs(), mergePatch));
      await allowed(() => node.core.patchNamespacedPersistentVolumeClaimStatus(claimPatch({ status: { allocatedResources: { storage: '1Mi' } } }), mergePatch));
      expect(await claimFinalizers()).toEqual(['kubernetes.io/pvc-protection', 'csi.tscsi.dev/provisioning-loop']);
      // ...but not the owner's: pvc-protection, labels (through status, too)
      await refused(
        () => node.core.patchNamespacedPersistentVolumeClaim(claimPatch({ metadata: { finalizers: ['csi.tscsi.dev/provisioning-loop'] } }), mergePatch),
        CLAIMS,
        'may not UPDATE claim default/tscsi-e2e-vap: on a claim a node only adds or removes its provisioning finalizer',
      );
      await refused(
        () => node.core.patchNamespacedPersistentVolumeClaimStatus(claimPatch({ metadata: { labels: { stolen: 'yes' } }, status: { allocatedResources: { storage: '1Mi' } } }), mergePatch),
        CLAIMS,
        'may not UPDATE status of claim default/tscsi-e2e-vap: on a claim a node only adds',
      );
      expect(await claimFinalizers()).toContain('kubernetes.io/pvc-protection');
      // Immediate binding: the node takes an unbound claim that names no node, for itself only,
      // and gives it back; a claim selected for another node is not taken over
      const select = (node: string | null, extra: Record<string, string> = {}) => claimPatch({ metadata: { annotations: { 'volume.kubernetes.io/selected-node': node, ...extra } } });
      await env.kubectl(['annotate', 'pvc', 'tscsi-e2e-vap', '--overwrite', `volume.kubernetes.io/selected-node=${OTHER}`]);
      await refused(() => node.core.patchNamespacedPersistentVolumeClaim(select(NODE_NAME), mergePatch), CLAIMS, `its volume.kubernetes.io/selected-node is '${OTHER}', not this node`);
      await env.kubectl(['annotate', 'pvc', 'tscsi-e2e-vap', 'volume.kubernetes.io/selected-node-']);
      await refused(() => node.core.patchNamespacedPersistentVolumeClaim(select(OTHER), mergePatch), CLAIMS, "its volume.kubernetes.io/selected-node is '', not this node");
      // a claim another driver provisions (or a WaitForFirstConsumer one the scheduler has not placed): not taken
      await refused(() => node.core.patchNamespacedPersistentVolumeClaim(select(NODE_NAME), mergePatch), CLAIMS, "its volume.kubernetes.io/selected-node is '', not this node");
      await env.kubectl(['annotate', 'pvc', 'tscsi-e2e-vap', '--overwrite', 'volume.kubernetes.io/storage-provisioner=other.csi.example']);
      await refused(() => node.core.patchNamespacedPersistentVolumeClaim(select(NODE_NAME), mergePatch), CLAIMS, "its volume.kubernetes.io/selected-node is '', not this node");
      await env.kubectl(['annotate', 'pvc', 'tscsi-e2e-vap', '--overwrite', `volume.kubernetes.io/storage-provisioner=${DRIVER}`]);
      await refused(() => node.core.patchNamespacedPersistentVolumeClaim(select(NODE_NAME, { stolen: 'yes' }), mergePatch), CLAIMS, 'takes an unbound claim selected for no node for itself');
      await allowed(() => node.core.patchNamespacedPersistentVolumeClaim(select(NODE_NAME), mergePatch));
      expect((await env.json(['get', 'pvc', 'tscsi-e2e-vap'])).metadata.annotations).toMatchObject({ 'volume.kubernetes.io/selected-node': NODE_NAME });
      await allowed(() => node.core.patchNamespacedPersistentVolumeClaim(select(null), mergePatch));
      expect((await env.json(['get', 'pvc', 'tscsi-e2e-vap'])).metadata.annotations?.['volume.kubernetes.io/selected-node']).toBeUndefined();

      // another node's VolumeAttachment: not marked attached
      await env.apply({
        apiVersion: 'storage.k8s.io/v1',
        kind: 'VolumeAttachment',
        metadata: { name: 'tscsi-e2e-vap', labels: { 'tscsi.dev/e2e': 'admission' } },
        spec: { attacher: DRIVER, nodeName: OTHER, source: { persistentVolumeName: 'tscsi-e2e-vap-other' } },
      });
      await refused(
        () => node.storage.patchVolumeAttachmentStatus({ name: 'tscsi-e2e-vap', body: { status: { attached: true } } }, mergePatch),
        'tscsi-node-attachments',
        `may not UPDATE VolumeAttachment tscsi-e2e-vap (attacher ${DRIVER}, node ${OTHER})`,
      );

      // the same token and calls on the node's own PV pass: the refusals above are the policies', not RBAC's
      await allowed(() => node.core.patchPersistentVolume({ name: 'tscsi-e2e-vap-own', body: { spec: { capacity: { storage: '2Mi' } } } }, mergePatch));
      await allowed(() => node.core.deletePersistentVolume({ name: 'tscsi-e2e-vap-own' }));
      await env.waitFor('own PV gone', async () => !(await exists('pv', 'tscsi-e2e-vap-own')));
    });

    // The node provisioner's own take of an Immediate claim (its pod's token, through the policy above).
    it('an Immediate-binding loop claim is taken by the node\'s provisioner and its pod Runs', { timeout: 4 * MIN }, async () => {
      await env.apply(storageClass('tscsi-e2e-now', { volumeBindingMode: 'Immediate', reclaimPolicy: 'Delete', parameters: { backend: 'loop' } }));
      try {
        await env.apply(claim('tscsi-e2e-now', 'tscsi-e2e-now', '32Mi'));
        const { handle } = await env.bound('tscsi-e2e-now');
        handles.add(handle);
        const c = await env.json(['get', 'pvc', 'tscsi-e2e-now']);
        expect(c.metadata.annotations['volume.kubernetes.io/selected-node']).toBe(NODE_NAME);
        await env.apply(pod('tscsi-e2e-now', 'tscsi-e2e-now', 'echo ok > /data/f && cat /data/f'));
        expect(await env.waitPhase('tscsi-e2e-now', ['Succeeded', 'Failed'])).toBe('Succeeded');
      } finally {
        await env.kubectl(['delete', 'pod', 'tscsi-e2e-now', '--ignore-not-found', '--wait=true', '--timeout=120s']);
        await env.kubectl(['delete', 'pvc', 'tscsi-e2e-now', '--ignore-not-found', '--wait=true', '--timeout=120s']);
        await env.kubectl(['delete', 'storageclass', 'tscsi-e2e-now', '--ignore-not-found']);
      }
    });

    it('a token bound to no pod names no node: refused even for the node\'s own objects', { timeout: 2 * MIN }, async () => {
      const loose = await as(await env.kubectl(['create', 'token', 'tscsi-node', '-n', NS, '--duration=10m']));
      expect(loose.user.username).toBe(`system:serviceaccount:${NS}:tscsi-node`);
      expect(loose.user.extra?.['authentication.kubernetes.io/node-name']).toBeUndefined();
      await env.apply(pv('tscsi-e2e-vap-own', NODE_NAME, 2));
      for (const name of ['tscsi-e2e-vap-other', 'tscsi-e2e-vap-own']) {
        await refused(() => loose.core.deletePersistentVolume({ name }), 'tscsi-node-persistentvolumes', 'this token names no node');
        expect(await exists('pv', name)).toBe(true);
      }
      await refused(() => loose.core.createPersistentVolume({ body: pv('tscsi-e2e-vap-made', NODE_NAME, 3) }), 'tscsi-node-persistentvolumes', 'this token names no node');
      await refused(
        () => loose.core.patchNamespacedPersistentVolumeClaim(claimPatch({ metadata: { finalizers: ['kubernetes.io/pvc-protection'] } }), mergePatch),
        'tscsi-node-claims',
        'this token names no node',
      );
      await refused(
        () => loose.storage.patchVolumeAttachmentStatus({ name: 'tscsi-e2e-vap', body: { status: { attached: true } } }, mergePatch),
        'tscsi-node-attachments',
        'this token names no node',
      );
    });
  });
});

// The one case that undoes the install every other case uses: it runs last; run alone, it
// removes what beforeAll installed.
describe('uninstalled with kubectl delete -k', () => {
  it('kubectl delete -k removes everything it installed', { timeout: 5 * MIN }, async () => {
    await env.kubectl(['delete', 'storageclass', 'tscsi-e2e-xfs', 'tscsi-e2e-retain', '--ignore-not-found']);
    await env.kubectl(['delete', '-k', path.join(DEPLOY, 'examples'), '--ignore-not-found']);
    const t0 = Date.now();
    await env.kubectl(['delete', '-k', overlay, '--wait=true', '--timeout=180s']);
    results.deleteMs = Date.now() - t0;
    // nothing labelled part-of=tscsi is left, in any kind the manifests use
    const left = await env.kubectl([
      'get',
      'csidriver,clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding,namespace',
      '-l',
      'app.kubernetes.io/part-of=tscsi',
      '-o',
      'name',
    ]);
    expect(left.trim()).toBe('');
    expect((await env.kubectl(['get', 'namespace', '-o', 'name'])).split('\n')).not.toContain(`namespace/${NS}`);
    // kubelet notices the registration socket is gone
    await env.waitFor(
      'CSINode without the driver',
      async () => !((await env.json(['get', 'csinode', NODE_NAME])).spec.drivers ?? []).some((d: any) => d.name === DRIVER),
      2 * MIN,
    );
  });
});
