// End-to-end: a real single-node Kubernetes (test/cluster/cluster) comes up,
// runs a pod, and `down` leaves nothing behind.
//
// Needs root, Go (for the first, cold build of the binaries) and kubectl.
// The first run builds kube-apiserver/kubelet/... from the Go module proxy
// inside `up`, hence the long timeout of beforeAll.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { ClusterEnv, MIN, NODE_NAME } from '../lib/cluster-env.js';
import { cgroupDirs, loopDevicesBackedBelow, mountsBelow, processesMentioning } from '../lib/host-traces.js';

// A fresh, empty run directory chosen by the test, so `down` can always find
// the run, even if `up` fails half-way.
const env = new ClusterEnv();
const runDir = env.runDir;

// sysctls the kubelet rewrites; `down` of the last run must restore them
const SYSCTLS = ['kernel/panic', 'kernel/panic_on_oops', 'vm/overcommit_memory'];
const readSysctls = () => SYSCTLS.map((k) => `${k}=${readFileSync(`/proc/sys/${k}`, 'utf8').trim()}`);
const sysctlsBefore = readSysctls();
const otherRunsBefore = existsSync('/run/tscsi-cluster/runs') ? readdirSync('/run/tscsi-cluster/runs').length : 0;

function canConnect(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.setTimeout(3000);
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
    s.once('timeout', () => (s.destroy(), res(false)));
  });
}

/**
 * What a CSI node plugin does: a privileged pod mounts a tmpfs below the kubelet root
 * with Bidirectional propagation and stays Ready; the mount is left for `down` to clean up.
 */
async function propagatingMount(name: string): Promise<string> {
  const kubeletDir = env.kubeletDir;
  const target = join(kubeletDir, name);
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default' },
    spec: {
      hostNetwork: true,
      terminationGracePeriodSeconds: 1,
      automountServiceAccountToken: false,
      containers: [
        {
          name: 'mounter',
          image: 'tscsi.local/busybox:1',
          imagePullPolicy: 'Never',
          securityContext: { privileged: true },
          command: [
            '/bin/sh', '-c',
            `mkdir -p ${target} && mount -t tmpfs ${name} ${target} && echo from-pod > ${target}/f && touch /tmp/ready && trap 'exit 0' TERM && while true; do sleep 1; done`,
          ],
          readinessProbe: { exec: { command: ['cat', '/tmp/ready'] }, periodSeconds: 1 },
          volumeMounts: [{ name: 'kubelet', mountPath: kubeletDir, mountPropagation: 'Bidirectional' }],
        },
      ],
      volumes: [{ name: 'kubelet', hostPath: { path: kubeletDir, type: 'Directory' } }],
    },
  };
  await env.apply(pod);
  const ready = await env.kubectl(['wait', '--for=condition=Ready', `pod/${name}`, '--timeout=120s']).then(
    () => '',
    async (err: unknown) => `${String(err)}\n${await env.kubectl(['describe', 'pod', name])}`,
  );
  expect(ready).toBe('');
  return target;
}

beforeAll(async () => {
  const t0 = Date.now();
  await env.up();
  console.log(`cluster up took ${((Date.now() - t0) / 1000).toFixed(1)}s`);
}, 60 * MIN);

// Always tear down, whatever failed (a no-op after the case that tests `down`).
afterAll(async () => {
  const code = await env.down();
  if (code !== 0) console.error(`cluster down failed: ${code}`);
}, 10 * MIN);

describe('single-node cluster', () => {
  test('up starts the cluster and prints its kubeconfig', () => {
    const kubeconfig = env.kubeconfig;
    expect(kubeconfig.startsWith(runDir + '/')).toBe(true);
    expect(env.upStdout).toContain(`export TSCSI_CLUSTER_DIR=${runDir}`);
    expect(existsSync(kubeconfig)).toBe(true);
  });

  test('the node is Ready and runs the pinned versions', { timeout: 5 * MIN }, async () => {
    const node = await env.json(['get', 'node', NODE_NAME]);
    const ready = node.status.conditions.find((c: { type: string }) => c.type === 'Ready');
    expect(ready?.status).toBe('True');
    const versions = readFileSync(resolve(import.meta.dirname, '../cluster/lib/versions.sh'), 'utf8');
    const k8s = process.env.K8S_VERSION ?? /K8S_VERSION:-(v[\d.]+)/.exec(versions)![1];
    expect(node.status.nodeInfo.kubeletVersion).toBe(k8s);
    // the containerd that `up` actually used (a pinned 2.x build, or Debian's 1.6 as the fallback)
    const used = env.settings().CONTAINERD_VERSION;
    const runtime = node.status.nodeInfo.containerRuntimeVersion as string;
    if (used.startsWith('debian-')) expect(runtime).toMatch(/^containerd:\/\/1\.6\./);
    else expect(runtime).toBe(`containerd://${used.slice(1)}`);
    const server = JSON.parse(await env.kubectl(['version', '-o', 'json']));
    expect(server.serverVersion.gitVersion).toBe(k8s);
    const status = await env.cluster('status');
    expect(status.exitCode).toBe(0);
  });

  test('a busybox pod writes into an emptyDir and succeeds', { timeout: 5 * MIN }, async () => {
    const marker = `hello-${Date.now()}`;
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'e2e-busybox', namespace: 'default' },
      spec: {
        hostNetwork: true,
        restartPolicy: 'Never',
        terminationGracePeriodSeconds: 1,
        automountServiceAccountToken: false,
        containers: [
          {
            name: 'writer',
            image: 'tscsi.local/busybox:1',
            imagePullPolicy: 'Never',
            command: ['/bin/sh', '-c', `echo ${marker} > /data/out.txt && sync && echo read-back: $(cat /data/out.txt) && grep -q ${marker} /data/out.txt`],
            volumeMounts: [{ name: 'scratch', mountPath: '/data' }],
          },
        ],
        volumes: [{ name: 'scratch', emptyDir: {} }],
      },
    };
    await env.apply(pod);
    const phase = await env.waitPhase('e2e-busybox', ['Succeeded', 'Failed']);
    expect(phase, phase === 'Succeeded' ? '' : await env.describePod('e2e-busybox')).toBe('Succeeded');
    const exitCode = await env.kubectl([
      'get', 'pod', 'e2e-busybox', '-o', 'jsonpath={.status.containerStatuses[0].state.terminated.exitCode}',
    ]);
    expect(exitCode).toBe('0');
    // logs travel apiserver -> kubelet (client cert) -> containerd
    expect(await env.logs('e2e-busybox')).toContain(`read-back: ${marker}`);
    await env.kubectl(['delete', 'pod', 'e2e-busybox', '--wait=true', '--timeout=60s']);
  });

  test('a privileged pod mounts into the kubelet dir with Bidirectional propagation', { timeout: 5 * MIN }, async () => {
    const target = await propagatingMount('e2e-propagation');
    expect(mountsBelow(target)).toContain(target);
    expect(readFileSync(join(target, 'f'), 'utf8').trim()).toBe('from-pod');
  });

  // Runs last (it ends the cluster); it makes the pod mount it wants `down` to clean up.
  test('down leaves no process, mount, loop device or cgroup behind', { timeout: 10 * MIN }, async () => {
    expect(mountsBelow(await propagatingMount('e2e-left-for-down')).length).toBe(1);
    const settings = env.settings();
    const cgroupRoot = settings.CGROUP_ROOT;
    const apiserverPort = Number(settings.PORT_APISERVER);
    const kubeletPort = Number(settings.PORT_KUBELET);
    expect(await canConnect(apiserverPort)).toBe(true);
    const pids = readdirSync(join(runDir, 'pids')).map((n) => readFileSync(join(runDir, 'pids', n), 'utf8').trim());
    expect(pids.length).toBe(6);
    expect(processesMentioning(runDir + '/').length).toBeGreaterThan(0);
    expect(mountsBelow(runDir).length).toBeGreaterThan(0);
    expect(cgroupDirs(cgroupRoot).length).toBeGreaterThan(0);
    // the kubelet has rewritten the VM's sysctls while it runs
    expect(readFileSync('/proc/sys/kernel/panic_on_oops', 'utf8').trim()).toBe('1');

    const r = await env.cluster('down');
    expect(r.exitCode).toBe(0);

    for (const pid of pids) expect(existsSync(`/proc/${pid}`), `pid ${pid} still alive`).toBe(false);
    expect(processesMentioning(runDir + '/')).toEqual([]);
    expect(mountsBelow(runDir)).toEqual([]);
    expect(loopDevicesBackedBelow(runDir)).toEqual([]);
    expect(cgroupDirs(cgroupRoot)).toEqual([]);
    expect(existsSync(runDir)).toBe(false);
    for (const l of existsSync('/var/log/containers') ? readdirSync('/var/log/containers') : []) {
      let target: string;
      try {
        target = readlinkSync(join('/var/log/containers', l));
      } catch {
        continue;
      }
      expect(target.startsWith(runDir + '/'), `leftover log link ${l}`).toBe(false);
    }
    if (otherRunsBefore === 0 && readdirSync('/run/tscsi-cluster/runs').length === 0) {
      expect(readSysctls()).toEqual(sysctlsBefore);
    }
    // nothing listens on the apiserver's or kubelet's port any more
    expect(await canConnect(apiserverPort)).toBe(false);
    expect(await canConnect(kubeletPort)).toBe(false);
  });
});
