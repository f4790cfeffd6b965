// RBD volumes across nodes (#15): the driver from deploy/overlays/rbd on three nodes
// (`cluster up --nodes 3`, each node in its own network, mount and PID namespace; the node
// DaemonSet on every node, the controller Deployment in the pod network), reaching a one-host
// Ceph bound to the run's bridge address on the host (test/lib/ceph/cluster.sh ADDR: nothing
// outside loopback and the cluster's own namespaces). Through Kubernetes objects only:
//  - a Deployment's pod deleted and rescheduled on another node keeps its data, its
//    VolumeAttachment moves from the first node to the second;
//  - RWO fence: a second pod of a ReadWriteOnce claim on another node stays ContainerCreating
//    with the attach-detach controller's FailedAttachVolume Event naming the first pod until
//    that pod is gone; a ReadWriteOncePod claim's second pod is held by the scheduler with its
//    Event;
//  - node lost: one node's processes killed at once (its `unshare`, a simulated crash), the
//    node tainted out-of-service (non-graceful node shutdown): the pod comes up on another
//    node with its data and no VolumeAttachment stays on the dead node.
//
// Needs root, kubectl, a built tree (`npm run build`).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import { execa } from 'execa';
import path from 'node:path';
import { ClusterEnv, DRIVER, MIN, claim, pod } from '../lib/cluster-env.js';
import { Installation } from '../lib/deploy-install.js';
import { RBD_CLASS, TestCeph } from '../lib/rbd-install.js';

const HOSTNAME = 'kubernetes.io/hostname';
const OUT_OF_SERVICE = 'node.kubernetes.io/out-of-service';

const env = new ClusterEnv();
const inst = new Installation(env, { healthIntervalS: 60, nodes: 3, rbd: true });
const ceph = new TestCeph();
const results: Record<string, number | string> = {};
const diagnostics = async () => `${await inst.diagnostics()}\n--- ceph images ---\n${await ceph.listing()}`;

beforeAll(async () => {
  await inst.prepare();
  // the bridge's host-side address: what every node's namespace (and the pod network) reaches
  await ceph.start(env.settings().API_HOST);
  await inst.install(ceph.adminObjects);
  await env.apply(ceph.example!.storageClass);
}, 60 * MIN);

afterAll(async () => {
  await env.kubectl(['delete', 'deployment', '--all', '--wait=true', '--timeout=120s']).catch(() => undefined);
  await env.kubectl(['delete', 'pod', '--all', '--wait=true', '--timeout=120s']).catch(() => undefined);
  await env.kubectl(['delete', 'pvc', '--all', '--wait=true', '--timeout=120s']).catch(() => undefined);
  await ceph.teardownWith(inst);
  console.log(`multinode-rbd e2e: ${JSON.stringify(results)}; install: ${JSON.stringify(inst.results)}`);
}, 15 * MIN);

/** `pod()` held to `node` by the scheduler, on the pod network. */
function podOn(node: string, name: string, claimName: string, script: string) {
  const p = pod(name, claimName, script);
  return { ...p, spec: { ...p.spec, hostNetwork: false, nodeSelector: { [HOSTNAME]: node } } };
}

/** A Deployment of one busybox pod on `claimName` that appends its name to /data/seen; `prefer` a node (it may still go elsewhere). */
function deployment(name: string, claimName: string, prefer?: string) {
  const affinity = prefer ? { nodeAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, preference: { matchExpressions: [{ key: HOSTNAME, operator: 'In', values: [prefer] }] } }] } } : undefined;
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace: 'default' },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          terminationGracePeriodSeconds: 1,
          ...(affinity ? { affinity } : {}),
          containers: [{ name: 'c', image: 'tscsi.local/busybox:1', imagePullPolicy: 'Never', command: ['sh', '-c', 'hostname >> /data/seen && sync && sleep 3600'], volumeMounts: [{ name: 'v', mountPath: '/data' }] }],
          volumes: [{ name: 'v', persistentVolumeClaim: { claimName } }],
        },
      },
    },
  };
}

/** The Deployment's Running pod other than `except`, and its node. */
function runningPod(app: string, except?: string) {
  return env.waitFor(
    `a Running pod of ${app}`,
    async () => {
      const pods = (await env.json(['get', 'pods', '-l', `app=${app}`])).items as any[];
      const p = pods.find((x) => x.metadata.name !== except && x.status.phase === 'Running' && !x.metadata.deletionTimestamp);
      return p && { name: p.metadata.name as string, node: p.spec.nodeName as string };
    },
    4 * MIN,
    diagnostics,
  );
}

/** The nodes the PV of `claimName` has VolumeAttachments on, and whether each is attached. */
async function attachments(claimName: string): Promise<Record<string, boolean>> {
  const pv = (await env.json(['get', 'pvc', claimName])).spec.volumeName as string;
  const vas = ((await env.json(['get', 'volumeattachment'])).items as any[]).filter((a) => a.spec.source.persistentVolumeName === pv);
  for (const a of vas) expect(a.spec.attacher).toBe(DRIVER);
  return Object.fromEntries(vas.map((a) => [a.spec.nodeName as string, a.status?.attached === true]));
}

const onlyAttachedTo = (claimName: string, node: string) =>
  env.waitFor(`${claimName} attached to ${node} only`, async () => JSON.stringify(await attachments(claimName)) === JSON.stringify({ [node]: true }), 3 * MIN, diagnostics);

async function eventsOf(podName: string, reason: string): Promise<string[]> {
  return ((await env.json(['get', 'events', '--field-selector', `involvedObject.name=${podName},reason=${reason}`])).items as any[]).map((e) => String(e.message));
}

/** Every process of a node: its cgroup and all below it (kubepods: its containers, their helpers such as rbd-fuse). */
function nodeProcesses(node: string): number[] {
  const walk = (dir: string): number[] => [
    ...fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number),
    ...fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).flatMap((e) => walk(path.join(dir, e.name))),
  ];
  return walk(path.join('/sys/fs/cgroup/pids', env.settings().CGROUP_ROOT, node));
}

/**
 * The FUSE connections (fusectl names them by the mount's minor device number) of the FUSE
 * mounts a node's processes see: the fuse mapper's rbd-fuse mounts, under a loop device and a
 * filesystem. A dead node's kernel takes them along; this node shares the test machine's
 * kernel, where they would outlive the killed rbd-fuse and hang that filesystem's journal (and
 * every global `sync` on the machine) for good. The test aborts them, as that kernel's death would.
 */
function fuseConnectionsOf(node: string): Set<string> {
  const out = new Set<string>();
  for (const pid of nodeProcesses(node)) {
    let info: string;
    try {
      info = fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    for (const line of info.split('\n')) {
      const [pre, post] = line.split(' - ');
      if (post && /^fuse(\.|\s)/.test(post)) out.add(pre.split(' ')[2].split(':')[1]);
    }
  }
  return out;
}

async function abortFuseConnections(conns: Set<string>): Promise<void> {
  const dir = '/sys/fs/fuse/connections';
  if (fs.readdirSync(dir).length === 0) await execa('mount', ['-t', 'fusectl', 'fusectl', dir], { reject: false }); // not mounted (or no connection: then no-op)
  for (const c of conns) if (fs.existsSync(path.join(dir, c))) fs.writeFileSync(path.join(dir, c, 'abort'), '1');
}

const seen = async (podName: string) => (await env.kubectl(['exec', podName, '--', 'cat', '/data/seen'])).trim().split('\n');

const SEEN = 'hostname >> /data/seen && sync && sleep 3600';

/** The claim's first pod on `first`, Running; then its second on `second`; resolves the messages of the second's `reason` Events. */
async function fenced(claimName: string, [first, second]: [string, string], [node1, node2]: [string, string], reason: string): Promise<string[]> {
  await env.apply(podOn(node1, first, claimName, SEEN));
  await env.waitPhase(first, ['Running'], 4 * MIN, diagnostics);
  await env.apply(podOn(node2, second, claimName, SEEN));
  return env.waitFor(`the ${reason} Event on ${second}`, async () => {
    const m = await eventsOf(second, reason);
    return m.length > 0 && m;
  }, 3 * MIN, diagnostics);
}

/** The fence released: the first pod deleted, the second Running on `node2` with the volume attached there only and both pods' lines in it; the ms it took. */
async function released(claimName: string, [first, second]: [string, string], node2: string): Promise<number> {
  const t0 = Date.now();
  await env.kubectl(['delete', 'pod', first, '--wait=true', '--timeout=120s']);
  await env.waitPhase(second, ['Running'], 4 * MIN, diagnostics);
  const ms = Date.now() - t0;
  await onlyAttachedTo(claimName, node2);
  expect(await seen(second)).toEqual([first, second]);
  await env.kubectl(['delete', 'pod', second, '--wait=true', '--timeout=120s']);
  return ms;
}

describe('RBD volumes across three nodes, the driver from deploy/overlays/rbd', () => {
  it("every node's driver serves without a restart, though its cephx Secret was created after the pods (kubelet fills the optional Secret volume a while later)", { timeout: 2 * MIN }, async () => {
    // Before the fix the start-up waited on RADOS with no key file; the liveness probe killed
    // every node's driver after 70-90 s (restartCount 1), and a driver still waiting when the
    // test asked left its socket missing for minutes.
    const restarts = Object.fromEntries(
      (await inst.nodePods()).map((p: any) => [p.spec.nodeName as string, (p.status.containerStatuses as any[]).find((c) => c.name === 'driver')?.restartCount as number]),
    );
    expect(restarts).toEqual(Object.fromEntries(inst.nodes.map((n) => [n, 0])));
  });

  it("a Deployment's pod rescheduled on another node keeps its data; the VolumeAttachment moves with it", { timeout: 10 * MIN }, async () => {
    await env.apply(claim('mover', RBD_CLASS, '64Mi'));
    const t0 = Date.now();
    await env.apply(deployment('mover', 'mover'));
    const first = await runningPod('mover');
    results.firstPodRunningMs = Date.now() - t0;
    await onlyAttachedTo('mover', first.node);
    await env.kubectl(['cordon', first.node]);
    try {
      const t1 = Date.now();
      await env.kubectl(['delete', 'pod', first.name, '--wait=true', '--timeout=120s']);
      const second = await runningPod('mover', first.name);
      results.movedPodRunningMs = Date.now() - t1;
      expect(second.node).not.toBe(first.node);
      await onlyAttachedTo('mover', second.node);
      expect(await seen(second.name)).toEqual([first.name, second.name]);
    } finally {
      await env.kubectl(['uncordon', first.node]);
    }
    await env.kubectl(['delete', 'deployment', 'mover', '--wait=true', '--timeout=120s']);
  });

  it('RWO fence: a second pod of a ReadWriteOnce claim on another node stays ContainerCreating with a FailedAttachVolume Event naming the first pod until it is gone', { timeout: 10 * MIN }, async () => {
    const [a, b] = inst.nodes;
    await env.apply(claim('fence', RBD_CLASS, '64Mi'));
    const msgs = await fenced('fence', ['fence-a', 'fence-b'], [a, b], 'FailedAttachVolume');
    // Kubernetes 1.37 words it 'Waiting for detach for volume "<pv>" Volume is already used by
    // pod(s) <pod>' (older releases: 'Multi-Attach error for volume ...')
    const pv = (await env.json(['get', 'pvc', 'fence'])).spec.volumeName as string;
    expect(msgs.join('\n')).toContain(`for volume "${pv}" Volume is already used by pod(s) fence-a`);
    const waiting = await env.json(['get', 'pod', 'fence-b']);
    expect(waiting.spec.nodeName).toBe(b);
    expect(waiting.status.phase).toBe('Pending');
    expect(waiting.status.containerStatuses?.[0]?.state?.waiting?.reason ?? 'ContainerCreating').toBe('ContainerCreating');
    expect(await attachments('fence')).toEqual({ [a]: true });
    results.rwoFirstPodDeletedToSecondRunningMs = await released('fence', ['fence-a', 'fence-b'], b);
  });

  it("RWOP fence: a ReadWriteOncePod claim's second pod is held by the scheduler with its Event until the first is gone", { timeout: 10 * MIN }, async () => {
    const [, b, c] = inst.nodes;
    await env.apply({ ...claim('fence-rwop', RBD_CLASS, '64Mi'), spec: { ...claim('fence-rwop', RBD_CLASS, '64Mi').spec, accessModes: ['ReadWriteOncePod'] } });
    const msgs = await fenced('fence-rwop', ['rwop-b', 'rwop-c'], [b, c], 'FailedScheduling');
    expect(msgs.join('\n')).toMatch(/ReadWriteOncePod/);
    expect((await env.json(['get', 'pod', 'rwop-c'])).spec.nodeName ?? '').toBe('');
    results.rwopFirstPodDeletedToSecondRunningMs = await released('fence-rwop', ['rwop-b', 'rwop-c'], c);
  });

  // Last: the node stays dead for the rest of the run.
  it('a node lost (its processes killed at once, then tainted out-of-service): the pod comes up on another node with its data; no VolumeAttachment stays on the dead node', { timeout: 12 * MIN }, async () => {
    // not the node of the controller pod: it would have to move too (which works the same way, but is not this case)
    const controllerNode = ((await env.json(['get', 'pods', '-n', 'tscsi', '-l', 'app.kubernetes.io/component=controller'])).items as any[])[0].spec.nodeName as string;
    const victim = inst.nodes.find((n) => n !== controllerNode)!;
    await env.apply(claim('survivor', RBD_CLASS, '64Mi'));
    await env.apply(deployment('survivor', 'survivor', victim));
    const first = await runningPod('survivor');
    expect(first.node).toBe(victim);
    await onlyAttachedTo('survivor', victim);
    expect(await seen(first.name)).toEqual([first.name]);

    const pid = Number(fs.readFileSync(path.join(env.runDir, 'pids', victim), 'utf8').trim());
    const fuse = fuseConnectionsOf(victim);
    expect(fuse.size, 'the rbd-fuse mount of the volume on the victim').toBeGreaterThan(0);
    const t0 = Date.now();
    process.kill(pid, 'SIGKILL');
    await abortFuseConnections(fuse);
    await env.waitFor(`${victim} NotReady`, async () => {
      const n = await env.json(['get', 'node', victim]);
      return n.status.conditions.find((c: any) => c.type === 'Ready')?.status !== 'True';
    }, 3 * MIN, diagnostics);
    results.nodeNotReadyMs = Date.now() - t0;
    await env.kubectl(['taint', 'node', victim, `${OUT_OF_SERVICE}=nodeshutdown:NoExecute`]);
    const second = await runningPod('survivor', first.name);
    results.podElsewhereAfterKillMs = Date.now() - t0;
    expect(second.node).not.toBe(victim);
    await onlyAttachedTo('survivor', second.node);
    expect(await seen(second.name)).toEqual([first.name, second.name]);
    // nothing of any claim stays attached to the dead node
    const stuck = ((await env.json(['get', 'volumeattachment'])).items as any[]).filter((a) => a.spec.nodeName === victim);
    expect(stuck).toEqual([]);
  });
});
