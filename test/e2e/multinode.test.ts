// End-to-end: `cluster up --nodes 3` brings up three kubelet nodes, each in its own network,
// mount and PID namespace on the run's bridge (test/cluster/lib/nodes.sh); a pod lands on
// every node, pods on different nodes reach each other over the pod network, each node's
// /var/lib/kubelet is its own, a killed node takes all its processes along, and `down`
// leaves nothing behind, also after an `up` that failed half-way (#15).
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ClusterEnv, MIN } from '../lib/cluster-env.js';
import { cgroupDirs, loopDevicesBackedBelow, mountsBelow, processesMentioning } from '../lib/host-traces.js';

const env = new ClusterEnv();
const runDir = env.runDir;
const NODES = ['node-1', 'node-2', 'node-3'];
// an image that only `cluster import` puts on the nodes: the pods prove it reached every one
const IMAGE = 'tscsi.local/e2e-multinode:1';
const MARK = 'tscsi-e2e-whoami';
const LOOP_FILE = 'tscsi-e2e-loop.img';

/** Commands of the processes in cgroup `dir` and below (a node's: its daemons and its pods). */
function processesInCgroup(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
    try {
      out.push(readFileSync(`/proc/${pid}/comm`, 'utf8').trim());
    } catch {
      /* exited */
    }
  }
  for (const d of readdirSync(dir, { withFileTypes: true })) if (d.isDirectory()) out.push(...processesInCgroup(join(dir, d.name)));
  return out;
}

/** Loop devices whose backing file is the file `dev`/`ino` (its path inside a node is not the host's). */
async function loopDevicesOf({ dev, ino }: { dev: number; ino: number }): Promise<string[]> {
  const out = (await execa('losetup', ['-l', '-n', '-O', 'NAME,BACK-MAJ:MIN,BACK-INO'])).stdout;
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter(([, majmin, i]) => {
      if (!majmin || i !== String(ino)) return false;
      const [maj, min] = majmin.split(':').map(Number);
      return ((min & 0xff) | (maj << 8) | ((min & ~0xff) << 12)) === dev;
    })
    .map(([name]) => name);
}

/** A privileged pod on `node` that attaches a loop device to a file in the node's /var/lib/kubelet and keeps it. */
function loopPod(node: string, image: string) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `loop-${node}`, namespace: 'default' },
    spec: {
      nodeName: node,
      terminationGracePeriodSeconds: 1,
      automountServiceAccountToken: false,
      containers: [
        {
          name: 'loop',
          image,
          imagePullPolicy: 'Never',
          securityContext: { privileged: true },
          command: ['sh', '-c', `dd if=/dev/zero of=/kubelet/${LOOP_FILE} bs=1M count=4 && losetup -f /kubelet/${LOOP_FILE} && touch /tmp/ready && exec sleep 3600`],
          readinessProbe: { exec: { command: ['cat', '/tmp/ready'] }, periodSeconds: 1 },
          volumeMounts: [{ name: 'kubelet', mountPath: '/kubelet' }],
        },
      ],
      volumes: [{ name: 'kubelet', hostPath: { path: '/var/lib/kubelet', type: 'Directory' } }],
    },
  };
}

async function hostRoutesAndAddresses(): Promise<string> {
  const a = await execa('ip', ['-4', '-o', 'addr', 'show']);
  const r = await execa('ip', ['-4', 'route', 'show', 'table', 'all']);
  return `${a.stdout}\n${r.stdout}`;
}

/** A pod pinned to `node` by the scheduler's nodeSelector, serving its node's name on :8080. */
function webPod(node: string) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `web-${node}`, namespace: 'default' },
    spec: {
      nodeSelector: { 'kubernetes.io/hostname': node },
      terminationGracePeriodSeconds: 1,
      automountServiceAccountToken: false,
      containers: [
        {
          name: 'web',
          image: IMAGE,
          imagePullPolicy: 'Never',
          env: [{ name: 'NODE', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
          command: ['sh', '-c', `echo $NODE > /kubelet/${MARK} && mkdir -p /www && echo $NODE > /www/index.html && exec httpd -f -p 8080 -h /www`],
          // probed by the node's kubelet over the pod network
          readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
          volumeMounts: [{ name: 'kubelet', mountPath: '/kubelet' }],
        },
      ],
      volumes: [{ name: 'kubelet', hostPath: { path: '/var/lib/kubelet', type: 'Directory' } }],
    },
  };
}

beforeAll(async () => {
  const t0 = Date.now();
  await env.up('--nodes', String(NODES.length));
  console.log(`cluster up --nodes ${NODES.length} took ${((Date.now() - t0) / 1000).toFixed(1)}s`);
}, 60 * MIN);

afterAll(async () => {
  const code = await env.down();
  if (code !== 0) console.error(`cluster down failed: ${code}`);
}, 10 * MIN);

describe('multi-node cluster', () => {
  test('every node is Ready with its own name, address and zone, and status shows each', async () => {
    const nodes = (await env.json(['get', 'nodes'])).items as any[];
    expect(nodes.map((n) => n.metadata.name).sort()).toEqual(NODES);
    for (const n of nodes) {
      expect(n.status.conditions.find((c: { type: string }) => c.type === 'Ready')?.status, n.metadata.name).toBe('True');
    }
    const ip = (n: any) => n.status.addresses.find((a: { type: string }) => a.type === 'InternalIP')?.address;
    expect(new Set(nodes.map(ip)).size).toBe(NODES.length);
    expect(new Set(nodes.map((n) => n.metadata.labels['topology.kubernetes.io/zone'])).size).toBe(NODES.length);
    const status = await env.cluster('status');
    expect(status.exitCode, String(status.stdout)).toBe(0);
    for (const n of nodes) expect(String(status.stdout)).toMatch(new RegExp(`${n.metadata.name} +${ip(n)}: init pid \\d+, containerd \\d+, kubelet \\d+`));
  });

  test('an imported image runs on every node; pods on different nodes reach each other', { timeout: 10 * MIN }, async () => {
    const work = mkdtempSync(join(tmpdir(), 'tscsi-e2e-image-'));
    try {
      const tar = join(work, 'image.tar');
      const mkimage = resolve(import.meta.dirname, '../cluster/mkimage');
      await execa('bash', [mkimage, '--ref', IMAGE, '--out', tar, '--busybox', '--cmd', '["/bin/sh"]', '/bin/busybox:/bin/busybox']);
      const imported = await env.cluster('import', tar);
      expect(imported.exitCode).toBe(0);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    for (const node of NODES) await env.apply(webPod(node));
    const ips: Record<string, string> = {};
    for (const node of NODES) {
      await env.kubectl(['wait', '--for=condition=Ready', `pod/web-${node}`, '--timeout=180s']).catch(async (e: unknown) => {
        throw new Error(`${String(e)}\n${await env.describePod(`web-${node}`)}`);
      });
      const p = await env.json(['get', 'pod', `web-${node}`]);
      expect(p.spec.nodeName).toBe(node);
      ips[node] = p.status.podIP;
    }
    // each node's pods come from its own subnet, NET_PREFIX.<node number>.0/24
    const prefix = env.settings().NET_PREFIX;
    for (const [i, node] of NODES.entries()) expect(ips[node].startsWith(`${prefix}.${i + 1}.`), `${node}: ${ips[node]}`).toBe(true);
    for (const [i, from] of NODES.entries()) {
      const to = NODES[(i + 1) % NODES.length];
      // busybox-static's wget crashes (SIGSEGV) with -O- and with -T here: plain, into a file
      const got = await env.kubectl(['exec', `web-${from}`, '--', 'sh', '-c', `wget -q -O /tmp/got http://${ips[to]}:8080/ && cat /tmp/got`]);
      expect(got.trim(), `${from} -> ${to}`).toBe(to);
    }
    // and the API server on the bridge (TLS there: a plain HTTP request gets Go's refusal)
    const s = env.settings();
    const api = await env.kubectl(['exec', 'web-node-3', '--', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 ${s.API_HOST} ${s.PORT_APISERVER}`]);
    expect(api).toContain('Client sent an HTTP request to an HTTPS server');
  });

  test("each node's /var/lib/kubelet is its own, not the host's", () => {
    for (const node of NODES) {
      expect(readFileSync(join(env.nodeKubeletDir(node), MARK), 'utf8').trim()).toBe(node);
    }
    expect(existsSync(join('/var/lib/kubelet', MARK))).toBe(false);
  });

  // What the node-lost tests build on: killing the node's unshare is a crash of the whole node.
  test('a node killed abruptly takes every process it ran along; status reports it', { timeout: 5 * MIN }, async () => {
    const unshare = Number(readFileSync(join(runDir, 'pids', 'node-3'), 'utf8'));
    // the node's cgroup holds its daemons and, below kubepods, its pods
    const cgroup = join('/sys/fs/cgroup/pids', env.settings().CGROUP_ROOT, 'node-3');
    const before = processesInCgroup(cgroup);
    for (const name of ['containerd', 'kubelet', 'containerd-shim', 'pause', 'httpd']) expect(before, name).toContain(name);
    process.kill(unshare, 'SIGKILL');
    await env.waitFor('no process left in node-3', async () => processesInCgroup(cgroup).length === 0, MIN, async () => processesInCgroup(cgroup).join(' '));
    const status = await env.cluster('status');
    expect(status.exitCode).toBe(1);
    expect(String(status.stdout)).toMatch(/node-3 +NOT RUNNING/);
    expect(String(status.stdout)).toMatch(/node-1 +\S+: init pid \d+, containerd \d+, kubelet \d+/);
  });

  // Runs last (it ends the cluster; node-3 is the crashed one of the case before).
  test('down leaves no process, mount, namespace, bridge, route, loop device or cgroup behind', { timeout: 10 * MIN }, async () => {
    const s = env.settings();
    // a loop device a pod attached (as a node plugin of a loop backend would) and left
    await env.apply(loopPod('node-2', 'tscsi.local/busybox:1'));
    await env.kubectl(['wait', '--for=condition=Ready', 'pod/loop-node-2', '--timeout=120s']).catch(async (e: unknown) => {
      throw new Error(`${String(e)}\n${await env.describePod('loop-node-2')}`);
    });
    const loopFile = statSync(join(env.nodeKubeletDir('node-2'), LOOP_FILE));
    expect((await loopDevicesOf(loopFile)).length).toBe(1);
    const pids = readdirSync(join(runDir, 'pids')).map((n) => readFileSync(join(runDir, 'pids', n), 'utf8').trim());
    expect(pids.length).toBe(4 + NODES.length);
    expect(existsSync(`/sys/class/net/${s.BRIDGE}`)).toBe(true);
    // the nodes' network namespaces are bind mounts in the run dir
    expect(mountsBelow(runDir).filter((m) => m.endsWith('/netns')).length).toBe(NODES.length);
    expect(await hostRoutesAndAddresses()).toContain(`${s.NET_PREFIX}.`);
    expect(cgroupDirs(`${s.CGROUP_ROOT}/node-1`).length).toBeGreaterThan(0);

    const r = await env.cluster('down');
    expect(r.exitCode).toBe(0);

    for (const pid of pids) expect(existsSync(`/proc/${pid}`), `pid ${pid} still alive`).toBe(false);
    expect(processesMentioning(runDir + '/')).toEqual([]);
    expect(mountsBelow(runDir)).toEqual([]);
    expect(loopDevicesBackedBelow(runDir)).toEqual([]);
    expect(await loopDevicesOf(loopFile)).toEqual([]);
    expect(cgroupDirs(s.CGROUP_ROOT)).toEqual([]);
    expect(readdirSync('/sys/class/net').filter((l) => l.startsWith(s.BRIDGE))).toEqual([]);
    expect(await hostRoutesAndAddresses()).not.toContain(`${s.NET_PREFIX}.`);
    expect(existsSync(runDir)).toBe(false);
  });
});

describe('multi-node cluster, up failing half-way', () => {
  const failed = new ClusterEnv();
  afterAll(async () => {
    await failed.down();
  }, 10 * MIN);

  test('down removes what the failed up had made', { timeout: 10 * MIN }, async () => {
    // node-3's host-side veth name (up's bridge name + "v3"; the bridge name is "tsc" and the
    // first 8 hex digits of sha256("<run dir>\n")), taken before up: up fails at node-3's
    // network, after etcd, the bridge and nodes 1 and 2 are up
    const bridge = `tsc${createHash('sha256').update(`${failed.runDir}\n`).digest('hex').slice(0, 8)}`;
    await execa('ip', ['link', 'add', `${bridge}v3`, 'type', 'bridge']);
    try {
      const up = await failed.cluster('up', '--nodes', '3');
      expect(up.exitCode).not.toBe(0);
      const s = failed.settings();
      expect(s.BRIDGE).toBe(bridge);
      expect(existsSync(`/sys/class/net/${bridge}`)).toBe(true);
      expect(mountsBelow(failed.runDir).filter((m) => m.endsWith('/netns')).length).toBe(3);
      expect(processesMentioning(failed.runDir + '/').length).toBeGreaterThan(0);

      const down = await failed.cluster('down');
      expect(down.exitCode).toBe(0);
      expect(processesMentioning(failed.runDir + '/')).toEqual([]);
      expect(mountsBelow(failed.runDir)).toEqual([]);
      expect(cgroupDirs(s.CGROUP_ROOT)).toEqual([]);
      expect(readdirSync('/sys/class/net').filter((l) => l.startsWith(bridge))).toEqual([`${bridge}v3`]);
      expect(await hostRoutesAndAddresses()).not.toContain(`${s.NET_PREFIX}.`);
      expect(existsSync(failed.runDir)).toBe(false);
    } finally {
      await execa('ip', ['link', 'del', `${bridge}v3`], { reject: false });
    }
  });
});
