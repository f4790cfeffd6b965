// End-to-end: a real single-node Kubernetes (test/cluster/cluster) comes up,
// runs a pod, and `down` leaves nothing behind.
//
// Needs root, Go (for the first, cold build of the binaries) and kubectl.
// The first run builds kube-apiserver/kubelet/... from the Go module proxy
// inside `up`, hence the long timeout of the first test.
import { afterAll, describe, expect, test } from 'vitest';
import { execa } from 'execa';
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const CLI = resolve(import.meta.dirname, '../cluster/cluster');
const KUBECTL = process.env.KUBECTL ?? 'kubectl';
const MIN = 60_000;

// A fresh, empty run directory chosen by the test, so `down` can always find
// the run, even if `up` fails half-way.
const runDir = mkdtempSync(join(tmpdir(), 'tscsi-e2e-'));
// kubectl's discovery cache goes into the run dir, which `down` removes
const env = { ...process.env, TSCSI_CLUSTER_DIR: runDir, KUBECACHEDIR: join(runDir, 'kube-cache') };
let kubeconfig = '';

// sysctls the kubelet rewrites; `down` of the last run must restore them
const SYSCTLS = ['kernel/panic', 'kernel/panic_on_oops', 'vm/overcommit_memory'];
const readSysctls = () => SYSCTLS.map((k) => `${k}=${readFileSync(`/proc/sys/${k}`, 'utf8').trim()}`);
const sysctlsBefore = readSysctls();
const otherRunsBefore = existsSync('/run/tscsi-cluster/runs') ? readdirSync('/run/tscsi-cluster/runs').length : 0;

async function cluster(...args: string[]) {
  return execa('bash', [CLI, ...args], { env, stderr: 'inherit', reject: false, timeout: 60 * MIN });
}

async function kubectl(args: string[], input?: string) {
  const r = await execa(KUBECTL, ['--kubeconfig', kubeconfig, ...args], { env, input, reject: false, timeout: 2 * MIN });
  if (r.exitCode !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.exitCode}): ${r.stderr}`);
  return r.stdout;
}

/** PIDs of live processes whose command line mentions `needle`. */
function processesMentioning(needle: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || pid === String(process.pid)) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmd.includes(needle)) found.push(`${pid}: ${cmd.slice(0, 200)}`);
    } catch {
      /* process exited */
    }
  }
  return found;
}

function mountsBelow(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(dir + '/')));
}

function loopDevicesBackedBelow(dir: string): string[] {
  const out: string[] = [];
  if (!existsSync('/sys/block')) return out;
  for (const dev of readdirSync('/sys/block')) {
    if (!dev.startsWith('loop')) continue;
    try {
      const back = readFileSync(`/sys/block/${dev}/loop/backing_file`, 'utf8').trim();
      if (back.startsWith(dir + '/')) out.push(`${dev}: ${back}`);
    } catch {
      /* not attached */
    }
  }
  return out;
}

function cgroupDirs(name: string): string[] {
  return readdirSync('/sys/fs/cgroup')
    .map((h) => join('/sys/fs/cgroup', h, name))
    .filter((p) => existsSync(p));
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.setTimeout(3000);
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
    s.once('timeout', () => (s.destroy(), res(false)));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('single-node cluster', () => {
  afterAll(async () => {
    // Always tear down, whatever failed above.
    if (existsSync(runDir)) {
      const r = await cluster('down');
      if (r.exitCode !== 0) console.error(`cluster down failed: ${r.exitCode}`);
    }
    rmSync(runDir, { recursive: true, force: true });
  }, 10 * MIN);

  test('up starts the cluster and prints its kubeconfig', { timeout: 60 * MIN }, async () => {
    const t0 = Date.now();
    const r = await cluster('up');
    console.log(`cluster up took ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    expect(r.exitCode).toBe(0);
    const m = /^export KUBECONFIG=(.+)$/m.exec(r.stdout);
    expect(m, `stdout: ${r.stdout}`).not.toBeNull();
    kubeconfig = m![1]!;
    expect(kubeconfig.startsWith(runDir + '/')).toBe(true);
    expect(r.stdout).toContain(`export TSCSI_CLUSTER_DIR=${runDir}`);
    expect(existsSync(kubeconfig)).toBe(true);
  });

  test('the node is Ready and runs the pinned versions', { timeout: 5 * MIN }, async () => {
    expect(kubeconfig).not.toBe('');
    const node = JSON.parse(await kubectl(['get', 'node', '127.0.0.1', '-o', 'json']));
    const ready = node.status.conditions.find((c: { type: string }) => c.type === 'Ready');
    expect(ready?.status).toBe('True');
    const versions = readFileSync(resolve(import.meta.dirname, '../cluster/lib/versions.sh'), 'utf8');
    const k8s = process.env.K8S_VERSION ?? /K8S_VERSION:-(v[\d.]+)/.exec(versions)![1];
    expect(node.status.nodeInfo.kubeletVersion).toBe(k8s);
    // the containerd that `up` actually used (a pinned 2.x build, or Debian's 1.6 as the fallback)
    const used = /^CONTAINERD_VERSION=(.+)$/m.exec(readFileSync(join(runDir, 'cluster.env'), 'utf8'))![1]!;
    const runtime = node.status.nodeInfo.containerRuntimeVersion as string;
    if (used.startsWith('debian-')) expect(runtime).toMatch(/^containerd:\/\/1\.6\./);
    else expect(runtime).toBe(`containerd://${used.slice(1)}`);
    const server = JSON.parse(await kubectl(['version', '-o', 'json']));
    expect(server.serverVersion.gitVersion).toBe(k8s);
    const status = await cluster('status');
    expect(status.exitCode).toBe(0);
  });

  test('a busybox pod writes into an emptyDir and succeeds', { timeout: 5 * MIN }, async () => {
    expect(kubeconfig).not.toBe('');
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
    await kubectl(['apply', '-f', '-'], JSON.stringify(pod));
    let phase = '';
    const deadline = Date.now() + 3 * MIN;
    while (Date.now() < deadline) {
      phase = await kubectl(['get', 'pod', 'e2e-busybox', '-o', 'jsonpath={.status.phase}']);
      if (phase === 'Succeeded' || phase === 'Failed') break;
      await sleep(500);
    }
    const desc = phase === 'Succeeded' ? '' : await kubectl(['describe', 'pod', 'e2e-busybox']);
    expect(phase, desc).toBe('Succeeded');
    const exitCode = await kubectl([
      'get', 'pod', 'e2e-busybox', '-o', 'jsonpath={.status.containerStatuses[0].state.terminated.exitCode}',
    ]);
    expect(exitCode).toBe('0');
    // logs travel apiserver -> kubelet (client cert) -> containerd
    const logs = await kubectl(['logs', 'e2e-busybox']);
    expect(logs).toContain(`read-back: ${marker}`);
    await kubectl(['delete', 'pod', 'e2e-busybox', '--wait=true', '--timeout=60s']);
  });

  test('a privileged pod mounts into the kubelet dir with Bidirectional propagation', { timeout: 5 * MIN }, async () => {
    // What a CSI node plugin does: mount below the kubelet root from inside a
    // container; the mount must show up on the host. It is left in place so
    // that `down` has to clean it up.
    expect(kubeconfig).not.toBe('');
    const kubeletDir = join(runDir, 'kubelet');
    const target = join(kubeletDir, 'e2e-propagation');
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'e2e-propagation', namespace: 'default' },
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
              `mkdir -p ${target} && mount -t tmpfs e2e-tmpfs ${target} && echo from-pod > ${target}/f && touch /tmp/ready && trap 'exit 0' TERM && while true; do sleep 1; done`,
            ],
            readinessProbe: { exec: { command: ['cat', '/tmp/ready'] }, periodSeconds: 1 },
            volumeMounts: [{ name: 'kubelet', mountPath: kubeletDir, mountPropagation: 'Bidirectional' }],
          },
        ],
        volumes: [{ name: 'kubelet', hostPath: { path: kubeletDir, type: 'Directory' } }],
      },
    };
    await kubectl(['apply', '-f', '-'], JSON.stringify(pod));
    const r = await execa(
      KUBECTL,
      ['--kubeconfig', kubeconfig, 'wait', '--for=condition=Ready', 'pod/e2e-propagation', '--timeout=120s'],
      { env, reject: false },
    );
    const desc = r.exitCode === 0 ? '' : await kubectl(['describe', 'pod', 'e2e-propagation']);
    expect(r.exitCode, desc).toBe(0);
    expect(mountsBelow(target)).toContain(target);
    expect(readFileSync(join(target, 'f'), 'utf8').trim()).toBe('from-pod');
  });

  test('down leaves no process, mount, loop device or cgroup behind', { timeout: 10 * MIN }, async () => {
    const env = readFileSync(join(runDir, 'cluster.env'), 'utf8');
    const cgroupRoot = /^CGROUP_ROOT=(.+)$/m.exec(env)![1]!;
    const apiserverPort = Number(/^PORT_APISERVER=(\d+)$/m.exec(env)![1]);
    const kubeletPort = Number(/^PORT_KUBELET=(\d+)$/m.exec(env)![1]);
    expect(await canConnect(apiserverPort)).toBe(true);
    const pids = readdirSync(join(runDir, 'pids')).map((n) => readFileSync(join(runDir, 'pids', n), 'utf8').trim());
    expect(pids.length).toBe(6);
    expect(processesMentioning(runDir + '/').length).toBeGreaterThan(0);
    expect(mountsBelow(runDir).length).toBeGreaterThan(0);
    expect(cgroupDirs(cgroupRoot).length).toBeGreaterThan(0);
    // the kubelet has rewritten the VM's sysctls while it runs
    expect(readFileSync('/proc/sys/kernel/panic_on_oops', 'utf8').trim()).toBe('1');

    const r = await cluster('down');
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
