// The Helm chart (deploy/helm/tscsi) installed on the real one-node test cluster as an admin
// installs it: `helm install` with the loop StorageClass example on → a claim and a pod writing
// on its volume Running; `helm uninstall` (after the claim is gone) leaves nothing of ours.
// The image, the snapshot CRDs and the cluster come from test/lib/deploy-install.ts; only the
// install differs from deploy.test.ts (which covers the driver's behaviour once installed).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import path from 'node:path';
import { execa } from 'execa';
import { ClusterEnv, MIN, pod, claim } from '../lib/cluster-env.js';
import { Installation, builtComponent, DEPLOY, IMAGE, NS } from '../lib/deploy-install.js';
import { freePort } from '../lib/wait.js';

const env = new ClusterEnv();
const inst = new Installation(env, { healthIntervalS: 60 });
const results = inst.results;
let helm: string;

const run = (args: string[]) => execa(helm, [...args, '--kubeconfig', env.kubeconfig], { env: env.env, timeout: 5 * MIN, all: true });

beforeAll(async () => {
  helm = path.join(await builtComponent('helm', 'HELM_BIN'), 'helm');
  await inst.prepare();
}, 60 * MIN);

afterAll(async () => {
  await inst.teardown();
  console.log(`helm e2e: ${JSON.stringify(results)}`);
}, 15 * MIN);

describe('helm install of deploy/helm/tscsi on a real cluster', () => {
  it('installs, serves a claim to a pod that writes on it, and uninstalls leaving nothing of ours', { timeout: 15 * MIN }, async () => {
    const s = env.settings();
    const kubelet = env.kubeletDir;
    const t0 = Date.now();
    const [repository, tag] = IMAGE.split(':');
    // Helm v4 does not make a Namespace of the chart before the objects in it ("namespaces
    // tscsi not found"): the admin makes and labels it first, as deploy/README.md says.
    await env.kubectl(['create', 'namespace', NS]);
    await env.kubectl(['label', 'namespace', NS, 'pod-security.kubernetes.io/enforce=privileged']);
    const set = [
      `image.repository=${repository}`,
      `image.tag=${tag}`,
      'image.pullPolicy=Never',
      // the run's own kubelet root, data dir and health port (one node in the host's namespaces)
      `kubeletDir=${kubelet}`,
      `loop.dataDir=${inst.dataDir}`,
      `healthPort=${await freePort()}`,
      // the test cluster has no kube-proxy: the sidecars reach the API server directly
      'sidecarEnv[0].name=KUBERNETES_SERVICE_HOST',
      'sidecarEnv[0].value=127.0.0.1',
      'sidecarEnv[1].name=KUBERNETES_SERVICE_PORT',
      `sidecarEnv[1].value=${s.PORT_APISERVER}`,
      'storageClasses.tscsi-loop.enabled=true',
    ];
    const install = await run(['install', 'tscsi', path.join(DEPLOY, 'helm', 'tscsi'), '--namespace', NS, '--wait', '--timeout', '4m', ...set.flatMap((v) => ['--set-string', v])]).catch((e) => e);
    expect(install.exitCode, `${install.all}\n${install.exitCode === 0 ? '' : await inst.diagnostics()}`).toBe(0);
    results.helmInstallMs = Date.now() - t0;
    await env.waitFor('the node pod Ready', () => inst.nodePodReady(), 4 * MIN, () => inst.diagnostics());
    const [nodePod] = await inst.nodePods();
    expect(nodePod.spec.containers.map((c: any) => c.image)).toEqual(Array(8).fill(IMAGE));

    await env.apply(claim('helm-claim', 'tscsi-loop', '64Mi'));
    await env.apply(pod('helm-pod', 'helm-claim', 'echo written-through-helm > /data/f && cat /data/f && sleep 3600'));
    await env.waitPhase('helm-pod', ['Running'], 4 * MIN, () => inst.diagnostics());
    results.installToPodRunningMs = Date.now() - t0;
    const { handle } = await env.bound('helm-claim');
    inst.handles.add(handle);
    await env.waitFor('the pod to write on its volume', async () => (await env.logs('helm-pod')).includes('written-through-helm'), 2 * MIN);

    await env.kubectl(['delete', 'pod', 'helm-pod', '--wait=true']);
    await env.kubectl(['delete', 'pvc', 'helm-claim', '--wait=true']);
    await env.waitFor('the claim\'s volume deleted by the driver', async () => !(await env.pvNames()).trim(), 3 * MIN, () => inst.diagnostics());

    const uninstall = await run(['uninstall', 'tscsi', '--namespace', NS, '--wait', '--timeout', '4m']).catch((e) => e);
    expect(uninstall.exitCode, uninstall.all).toBe(0);
    const left = async (kinds: string) => (await env.kubectl(['get', kinds, '-A', '-l', 'app.kubernetes.io/instance=tscsi', '-o', 'name'])).trim();
    expect(await left('csidriver,clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding,storageclass')).toBe('');
    expect(await left('daemonset,deployment,serviceaccount,role,rolebinding,configmap')).toBe('');
    await env.waitFor('the node pod gone', async () => (await inst.nodePods()).length === 0, 3 * MIN);
  });
});
