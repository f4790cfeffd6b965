// The driver from deploy/ on three nodes (`cluster up --nodes 3`, each node in its own
// network, mount and PID namespace): the node DaemonSet runs on every node with the node's
// name as its node ID and the node's own /var/lib/tscsi, the image imported into every
// node's containerd (test/lib/deploy-install.ts). Through Kubernetes objects only: loop
// volumes on all three nodes, a WaitForFirstConsumer claim made on the node the scheduler
// chose and its pod held there, a pod pinned to a node without room kept off it by capacity
// tracking, and the controller Deployment's leader election (#15). LVM on three nodes that see
// each other's disks (one /dev): each node's volume group is named after the node
// (--lvm-volume-groups=<prefix>-$(NODE_NAME), deploy/README.md) and carries the node's name as
// its lvm system ID (--lvm-system-id=$(NODE_NAME)), on a PV of its own whose image lies in the
// run dir, so `cluster down` takes the PVs with it.
//
// Needs root, kubectl, a built tree (`npm run build`).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { ClusterEnv, DRIVER, MIN, claim, pod, storageClass } from '../lib/cluster-env.js';
import { Installation, NS } from '../lib/deploy-install.js';
import { parseSize } from '../../lib/size.js';
import { leaseName } from '../../sidecars/common/run.js';
import { TestVg } from '../lib/lvm-vg.js';
import { loopDevices } from '../lib/driver-harness.js';

const NODES = 3;
/** The loop backend's --capacity on every node: what a node offers in all (sparse files: no disk is used up). */
const CAPACITY = '1Gi';
const KEY = 'topology.tscsi.dev/node';
const HOSTNAME = 'kubernetes.io/hostname';

const env = new ClusterEnv();
const inst = new Installation(env, { healthIntervalS: 60, nodes: NODES });
const { results, handles } = inst;
const diagnostics = () => inst.diagnostics();
const waitPhase = (p: string, want: string[]) => env.waitPhase(p, want, 3 * MIN, diagnostics);

/** Where the nodes' PV images are: in the run dir, so `cluster down` detaches them (and the driver's windows on them). */
const LVM_DIR = path.join(env.runDir, 'lvm');
/** Each node's VG is `${VG_PREFIX}-<node>`: unique among all the VGs the shared /dev shows (other runs' too). */
const VG_PREFIX = `tscsimn${process.pid}`;
/** Each node's PV, MiB: a different size per node, so each node's capacity is told apart. */
const PV_MIB = [256, 320, 384];
const LVM_SC = 'mn-lvm';
const vgs = new Map<string, TestVg>();
const vgOf = (node: string) => vgs.get(node)!;

beforeAll(async () => {
  // the DaemonSet's arguments, each node's driver its own VG: Kubernetes expands $(NODE_NAME) per pod
  await inst.prepare([`--capacity=${CAPACITY}`, `--lvm-volume-groups=${VG_PREFIX}-$(NODE_NAME)`, '--lvm-system-id=$(NODE_NAME)'], [LVM_DIR]);
  for (const [i, node] of inst.nodes.entries()) {
    vgs.set(node, await TestVg.create(path.join(LVM_DIR, node), 0, [PV_MIB[i]], { name: `${VG_PREFIX}-${node}`, systemId: node }));
  }
  await inst.install();
}, 60 * MIN);

afterAll(async () => {
  try {
    await inst.teardown();
    // what `cluster down` left of the VGs: loop devices on their images (PVs, the drivers' windows), the VGs in a scan of
    // every device (--foreign: the VGs carry their nodes' system IDs, which a plain vgs here hides)
    const loops = (await loopDevices()).filter((d) => d.backFile.startsWith(LVM_DIR + '/'));
    const scan = await execa('lvm', ['vgs', '--foreign', '--reportformat', 'json', '-o', 'vg_name'], { env: { LVM_SUPPRESS_FD_WARNINGS: '1' }, reject: false });
    expect(loops, 'loop devices on the PV images after cluster down').toEqual([]);
    expect(String(scan.stdout), 'VGs after cluster down').not.toContain(VG_PREFIX);
  } finally {
    for (const vg of vgs.values()) await vg.remove();
    console.log(`multinode driver e2e: ${JSON.stringify(results)}`);
  }
}, 15 * MIN);

/** `pod()` held to `node` by the scheduler (a nodeSelector, not spec.nodeName: the scheduler must agree). */
function podOn(node: string | undefined, name: string, claimName: string, script: string) {
  const p = pod(name, claimName, script);
  return { ...p, spec: { ...p.spec, ...(node ? { nodeSelector: { [HOSTNAME]: node } } : {}) } };
}

/** The node a bound claim's PV is pinned to (its node affinity), and its volume ID. */
async function pvOf(claimName: string): Promise<{ node: string; handle: string }> {
  const { pvName, handle } = await env.bound(claimName);
  handles.add(handle);
  const pv = await env.json(['get', 'pv', pvName]);
  const terms = pv.spec.nodeAffinity.required.nodeSelectorTerms;
  expect(terms).toHaveLength(1);
  const [expr] = terms[0].matchExpressions;
  expect(expr.key).toBe(KEY);
  expect(expr.values).toHaveLength(1);
  return { node: expr.values[0], handle };
}

/** Whether node's driver keeps the volume's backing file in its own data dir. */
const fileOn = (node: string, handle: string) => fs.existsSync(path.join(inst.dataDirOf(node), 'loop', 'volumes', `${handle}.img`));

/** The resident memory of a node: its cgroup's (daemons, driver, pods; page cache included) and its kubelet's and containerd's RSS, in MiB. */
function nodeMemoryMiB(node: string): { cgroup: number; kubelet: number; containerd: number } {
  const root = env.settings().CGROUP_ROOT;
  const mib = (bytes: number) => Math.round(bytes / 2 ** 20);
  const cgroup = Number(fs.readFileSync(path.join('/sys/fs/cgroup/memory', root, node, 'memory.usage_in_bytes'), 'utf8'));
  const rss = (comm: string) => {
    let kb = 0;
    // the node's daemons sit in its cgroup itself (pods are below, in kubepods)
    for (const pid of fs.readFileSync(path.join('/sys/fs/cgroup/pids', root, node, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      try {
        const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
        if (/^Name:\s+(\S+)/m.exec(status)?.[1] === comm) kb += Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      } catch {
        /* exited */
      }
    }
    return Math.round(kb / 1024);
  };
  return { cgroup: mib(cgroup), kubelet: rss('kubelet'), containerd: rss('containerd') };
}

/** The capacity of node's CSIStorageCapacity object for class sc (undefined while there is none, or several). */
async function capacityOn(sc: string, node: string): Promise<string | undefined> {
  const objs = ((await env.json(['get', 'csistoragecapacities', '-n', NS])).items as any[]).filter(
    (c) => c.storageClassName === sc && c.nodeTopology?.matchLabels?.[KEY] === node,
  );
  return objs.length === 1 ? String(objs[0].capacity) : undefined;
}

/** The FailedScheduling messages the scheduler gave a pod. */
async function schedulingMessages(podName: string): Promise<string[]> {
  const events = (await env.json(['get', 'events', '--field-selector', `involvedObject.name=${podName},reason=FailedScheduling`])).items as any[];
  return events.map((e) => String(e.message));
}

describe('the driver from deploy/ on three nodes', () => {
  it('a node pod runs on every node, each with the node name as its node ID and topology, registered in that node\'s CSINode', { timeout: 2 * MIN }, async () => {
    const pods = await inst.nodePods();
    expect(pods.map((p) => p.spec.nodeName).sort()).toEqual(inst.nodes);
    for (const p of pods) expect(p.status.containerStatuses.every((c: any) => c.ready && c.restartCount === 0), p.metadata.name).toBe(true);
    for (const node of inst.nodes) {
      const info = await inst.csiOf(node).Node.NodeGetInfo({});
      expect(info.node_id).toBe(node);
      expect(info.accessible_topology.segments).toEqual({ [KEY]: node });
      // the registrar registers the driver with the node's kubelet, which writes the CSINode
      const registered = await env.waitFor(`${DRIVER} in ${node}'s CSINode`, async () => {
        const csiNode = await env.json(['get', 'csinode', node]).catch(() => undefined);
        return (csiNode?.spec?.drivers ?? []).find((d: any) => d.name === DRIVER);
      }, 2 * MIN, diagnostics);
      expect(registered.nodeID).toBe(node);
      expect(registered.topologyKeys).toEqual([KEY]);
      // the node's own /var/lib/tscsi (its mount namespace's /var/lib), not the host's
      expect(fs.existsSync(path.join(inst.dataDirOf(node), 'node')), node).toBe(true);
    }
    // measured, not asserted: when each node turned Ready after `cluster up` began, its memory with the driver running
    for (const n of (await env.json(['get', 'nodes'])).items as any[]) {
      const ready = n.status.conditions.find((c: any) => c.type === 'Ready');
      results[`readyAfterUpS.${n.metadata.name}`] = Math.round((Date.parse(ready.lastTransitionTime) - inst.upStartedMs) / 1000);
    }
    for (const node of inst.nodes) results[`memoryMiB.${node}`] = JSON.stringify(nodeMemoryMiB(node));
  });

  it('pods on all three nodes run with loop volumes of their own, each made in its node\'s data dir', { timeout: 8 * MIN }, async () => {
    for (const node of inst.nodes) {
      await env.apply(claim(`own-${node}`, 'tscsi-loop', '64Mi'));
      await env.apply(podOn(node, `own-${node}`, `own-${node}`, `echo ${node} > /data/who && sleep 3600`));
    }
    for (const node of inst.nodes) {
      await waitPhase(`own-${node}`, ['Running']);
      const { node: pinned, handle } = await pvOf(`own-${node}`);
      expect(pinned).toBe(node);
      expect((await env.json(['get', 'pod', `own-${node}`])).spec.nodeName).toBe(node);
      for (const other of inst.nodes) expect(fileOn(other, handle), `${handle} on ${other}`).toBe(other === node);
      expect(await env.kubectl(['exec', `own-${node}`, '--', 'cat', '/data/who'])).toBe(node);
    }
  });

  it('a WaitForFirstConsumer claim is made on the node the scheduler chose, and its pod never lands elsewhere', { timeout: 10 * MIN }, async () => {
    await env.apply(claim('wffc', 'tscsi-loop', '64Mi'));
    await env.apply({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'wffc', namespace: 'default' },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'wffc' } },
        template: {
          metadata: { labels: { app: 'wffc' } },
          spec: {
            terminationGracePeriodSeconds: 1,
            containers: [{ name: 'c', image: 'tscsi.local/busybox:1', imagePullPolicy: 'Never', command: ['sh', '-c', 'hostname >> /data/seen; sleep 3600'], volumeMounts: [{ name: 'v', mountPath: '/data' }] }],
            volumes: [{ name: 'v', persistentVolumeClaim: { claimName: 'wffc' } }],
          },
        },
      },
    });
    const runningPod = (except?: string) =>
      env.waitFor(
        'the wffc pod Running',
        async () => {
          const pods = (await env.json(['get', 'pods', '-l', 'app=wffc'])).items as any[];
          const p = pods.find((x) => x.metadata.name !== except && x.status.phase === 'Running' && !x.metadata.deletionTimestamp);
          return p && { name: p.metadata.name as string, node: p.spec.nodeName as string };
        },
        3 * MIN,
        diagnostics,
      );
    const first = await runningPod();
    const { node, handle } = await pvOf('wffc');
    expect(node).toBe(first.node);
    expect((await env.json(['get', 'pvc', 'wffc'])).metadata.annotations['volume.kubernetes.io/selected-node']).toBe(first.node);
    expect(fileOn(first.node, handle)).toBe(true);

    // the chosen node cordoned: the replacement of a deleted pod waits rather than go elsewhere
    await env.kubectl(['cordon', node]);
    try {
      await env.kubectl(['delete', 'pod', first.name, '--wait=true', '--timeout=120s']);
      const pending = await env.waitFor(
        'the replacement pod refused by the scheduler',
        async () => {
          const pods = ((await env.json(['get', 'pods', '-l', 'app=wffc'])).items as any[]).filter((p) => p.metadata.name !== first.name);
          if (pods.length !== 1) return false;
          const msgs = await schedulingMessages(pods[0].metadata.name);
          return msgs.length > 0 && { pod: pods[0], msgs };
        },
        3 * MIN,
        diagnostics,
      );
      expect(pending.pod.spec.nodeName ?? '').toBe('');
      // the other nodes are refused for the volume's node affinity, the chosen one for the cordon
      expect(pending.msgs.join('\n')).toMatch(/2 node\(s\) didn't match PersistentVolume's node affinity/);
      expect(pending.msgs.join('\n')).toMatch(/1 node\(s\) were unschedulable/);
    } finally {
      await env.kubectl(['uncordon', node]);
    }
    const second = await runningPod(first.name);
    expect(second.node).toBe(node);
    // the same volume: both pods' hostnames in it
    expect((await env.kubectl(['exec', second.name, '--', 'cat', '/data/seen'])).split('\n')).toEqual([first.name, second.name]);
    await env.kubectl(['delete', 'deployment', 'wffc', '--wait=true', '--timeout=120s']);
  });

  it('a pod pinned to a node without room is not scheduled there (capacity tracking); the same claim unpinned goes to another node', { timeout: 10 * MIN }, async () => {
    const full = inst.nodes[2];
    // most of the node's capacity taken by one volume
    await env.apply(claim('big', 'tscsi-loop', '800Mi'));
    await env.apply(podOn(full, 'big', 'big', 'sleep 3600'));
    await waitPhase('big', ['Running']);
    expect((await pvOf('big')).node).toBe(full);
    // the scheduler reads the node's CSIStorageCapacity: wait until it tells what is left
    const left = await env.waitFor(
      `${full}'s CSIStorageCapacity below 512Mi`,
      async () => {
        const c = await capacityOn('tscsi-loop', full);
        return c !== undefined && parseSize(c) < parseSize('512Mi') && c;
      },
      3 * MIN,
      diagnostics,
    );
    results.capacityLeftOnFullNode = String(left);

    await env.apply(claim('nofit', 'tscsi-loop', '512Mi'));
    await env.apply(podOn(full, 'nofit', 'nofit', 'sleep 3600'));
    const msgs = await env.waitFor('the pinned pod refused by the scheduler', async () => {
      const m = await schedulingMessages('nofit');
      return m.some((x) => /did not have enough free storage/.test(x)) && m;
    }, 3 * MIN, diagnostics);
    expect(msgs.join('\n')).toMatch(/did not have enough free storage/);
    expect(await env.phase('nofit')).toBe('Pending');
    const pvc = await env.json(['get', 'pvc', 'nofit']);
    expect(pvc.status.phase).toBe('Pending');
    expect(pvc.metadata.annotations?.['volume.kubernetes.io/selected-node']).toBeUndefined();

    // the same size without the pin: placed on a node that has the room
    await env.kubectl(['delete', 'pod', 'nofit', '--wait=true', '--timeout=60s']);
    await env.apply(podOn(undefined, 'nofit', 'nofit', 'sleep 3600'));
    await waitPhase('nofit', ['Running']);
    const placed = (await pvOf('nofit')).node;
    expect(placed).not.toBe(full);
    expect((await env.json(['get', 'pod', 'nofit'])).spec.nodeName).toBe(placed);
  });

  // The controller Deployment is RBD's, and no Ceph is reachable from the nodes here: the
  // work shown is the new leader's provisioner taking claims and its driver answering
  // CreateVolume (with the cluster list of the ConfigMap it mounted), as Events of the
  // leader's pod (an Event's source.host is the pod's hostname: its name).
  it('controller Deployment with two replicas: one leader per sidecar; the leader\'s pod killed, the other takes over and works the claims', { timeout: 10 * MIN }, async () => {
    const cfg = { clusters: [{ clusterID: 'here', monitors: [`${env.settings().API_HOST}:6789`], pools: ['rbd'] }] };
    await env.apply({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'tscsi-rbd-config', namespace: NS }, data: { 'rbd.json': JSON.stringify(cfg) } });
    await env.apply(storageClass('le-rbd', { volumeBindingMode: 'Immediate', parameters: { backend: 'rbd', clusterID: 'elsewhere', pool: 'rbd' } }));
    await env.kubectl(['scale', '-n', NS, 'deployment/tscsi-controller', '--replicas=2']);
    const controllerPods = async () =>
      ((await env.json(['get', 'pods', '-n', NS, '-l', 'app.kubernetes.io/component=controller'])).items as any[]).filter((p) => !p.metadata.deletionTimestamp);
    const ready = (p: any) => p.status.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True');
    const pods = await env.waitFor('two controller pods Ready', async () => {
      const ps = await controllerPods();
      return ps.length === 2 && ps.every(ready) && ps.map((p) => p.metadata.name as string);
    }, 4 * MIN, diagnostics);
    const leases = ['provisioner', 'attacher', 'resizer', 'snapshotter', 'health-monitor'].map((c) => leaseName(`tscsi-${c}`, DRIVER));
    const holder = async (lease: string) => (await env.json(['get', 'lease', '-n', NS, lease]).catch(() => undefined))?.spec?.holderIdentity as string | undefined;
    // every sidecar has one leader, one of the two pods
    await env.waitFor('every controller sidecar led by a replica', async () => {
      for (const l of leases) if (!pods.includes((await holder(l)) ?? '')) return false;
      return true;
    }, 2 * MIN, diagnostics);
    const leader = (await holder(leases[0]))!;
    const other = pods.find((p) => p !== leader)!;

    // the claim's Events come from the pod that leads the provisioners
    const failedBy = (claimName: string) =>
      env.waitFor(`a ProvisioningFailed Event on ${claimName}`, async () => {
        const evs = (await env.json(['get', 'events', '--field-selector', `involvedObject.name=${claimName},reason=ProvisioningFailed`])).items as any[];
        return evs.length > 0 && evs;
      }, 2 * MIN, diagnostics);
    await env.apply(claim('le-1', 'le-rbd', '64Mi'));
    const before = await failedBy('le-1');
    expect(new Set(before.map((e) => e.source.host))).toEqual(new Set([leader]));
    expect(before[0].message).toContain('clusterID "elsewhere" is not in the driver\'s rbd config; known: here');
    await env.kubectl(['delete', 'pvc', 'le-1', '--wait=false']);

    const transitions = (await env.json(['get', 'lease', '-n', NS, leases[0]])).spec.leaseTransitions ?? 0;
    await env.kubectl(['delete', 'pod', '-n', NS, leader, '--grace-period=0', '--force', '--wait=false']);
    // the survivor, or the replacement the ReplicaSet starts, but never the killed pod again
    const next = await env.waitFor('a new provisioner leader', async () => {
      const h = await holder(leases[0]);
      return h && h !== leader && h;
    }, 2 * MIN, diagnostics);
    results.newLeaderWasTheStandby = next === other;
    expect((await env.json(['get', 'lease', '-n', NS, leases[0]])).spec.leaseTransitions).toBeGreaterThan(transitions);
    for (const l of leases) await env.waitFor(`${l} led by a live replica`, async () => ((await holder(l)) ?? leader) !== leader, 2 * MIN, diagnostics);

    await env.apply(claim('le-2', 'le-rbd', '64Mi'));
    const after = await failedBy('le-2');
    expect(new Set(after.map((e) => e.source.host))).toEqual(new Set([next]));
    expect(after[0].message).toContain('known: here');
    await env.kubectl(['delete', 'pvc', 'le-2', '--wait=false']);
    await env.kubectl(['scale', '-n', NS, 'deployment/tscsi-controller', '--replicas=0']);
  });
});

describe('LVM on three nodes that see each other\'s disks, each node\'s driver on its own volume group', () => {
  /** node -> the LV names in its VG, read with lvm restricted to that node's PV. */
  const lvsByNode = async () => new Map(await Promise.all(inst.nodes.map(async (n) => [n, [...(await vgOf(n).lvs()).keys()].sort()] as const)));
  /** Waits until node's CSIStorageCapacity of the LVM class is exactly its VG's free space, and returns it. */
  const capacityIsFree = (node: string) =>
    env.waitFor(`${node}'s CSIStorageCapacity of ${LVM_SC} = its VG's free space`, async () => {
      const [c, free] = await Promise.all([capacityOn(LVM_SC, node), vgOf(node).freeBytes()]);
      return c !== undefined && BigInt(parseSize(c)) === free && free;
    }, 3 * MIN, diagnostics);

  it('each node reports its own VG\'s free space in its CSIStorageCapacity', { timeout: 4 * MIN }, async () => {
    // no volumeGroup: each node's driver takes its own (its first --lvm-volume-groups)
    await env.apply(storageClass(LVM_SC, { volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete', parameters: { backend: 'lvm', 'csi.storage.k8s.io/fstype': 'ext4' } }));
    const free = await Promise.all(inst.nodes.map((n) => capacityIsFree(n)));
    // three PVs of three sizes: three different figures, none the sum of the others
    expect(new Set(free.map(String)).size).toBe(inst.nodes.length);
    for (const [i, f] of free.entries()) expect(f).toBeLessThanOrEqual(BigInt(PV_MIB[i]) * 2n ** 20n);
    for (const [i, node] of inst.nodes.entries()) results[`lvmCapacity.${node}`] = String(free[i]);
  });

  it('pods on all three nodes with LVM volumes of their own, each LV in its node\'s VG only', { timeout: 6 * MIN }, async () => {
    for (const node of inst.nodes) {
      await env.apply(claim(`lvm-${node}`, LVM_SC, '64Mi'));
      await env.apply(podOn(node, `lvm-${node}`, `lvm-${node}`, `echo ${node} > /data/who && sleep 3600`));
    }
    const lvs = new Map<string, string>();
    for (const node of inst.nodes) {
      await waitPhase(`lvm-${node}`, ['Running']);
      const { node: pinned, handle } = await pvOf(`lvm-${node}`);
      expect(pinned).toBe(node);
      expect(await env.kubectl(['exec', `lvm-${node}`, '--', 'cat', '/data/who'])).toBe(node);
      lvs.set(node, handle);
    }
    const now = await lvsByNode();
    for (const node of inst.nodes) expect(now.get(node), `LVs in ${vgOf(node).name}`).toEqual([lvs.get(node)]);
    // each node's capacity went down by its own volume (the provisioner refreshes after a create)
    for (const node of inst.nodes) expect(await capacityIsFree(node)).toBe(BigInt(results[`lvmCapacity.${node}`] as string) - 64n * 2n ** 20n);
  });

  it('a WaitForFirstConsumer LVM claim is made in the VG of the node the scheduler chose, a pod of it pinned elsewhere is never scheduled, and deleting the claim removes only that LV', { timeout: 8 * MIN }, async () => {
    const before = await lvsByNode();
    const capacityBefore = new Map(await Promise.all(inst.nodes.map(async (n) => [n, await capacityIsFree(n)] as const)));
    await env.apply(claim('lvm-wffc', LVM_SC, '32Mi'));
    await env.apply(podOn(undefined, 'lvm-wffc', 'lvm-wffc', 'echo here > /data/x && sleep 3600'));
    await waitPhase('lvm-wffc', ['Running']);
    const chosen = (await env.json(['get', 'pod', 'lvm-wffc'])).spec.nodeName as string;
    const { node, handle } = await pvOf('lvm-wffc');
    expect(node).toBe(chosen);
    expect((await env.json(['get', 'pvc', 'lvm-wffc'])).metadata.annotations['volume.kubernetes.io/selected-node']).toBe(chosen);
    const made = await lvsByNode();
    for (const n of inst.nodes) expect(made.get(n), `LVs in ${vgOf(n).name}`).toEqual(n === chosen ? [...before.get(n)!, handle].sort() : before.get(n));

    // a second pod of the claim, pinned to another node: the scheduler keeps it off (the PV's node affinity)
    const elsewhere = inst.nodes.find((n) => n !== chosen)!;
    await env.apply(podOn(elsewhere, 'lvm-wffc-elsewhere', 'lvm-wffc', 'sleep 3600'));
    const msgs = await env.waitFor('the pod pinned elsewhere refused by the scheduler', async () => {
      const m = await schedulingMessages('lvm-wffc-elsewhere');
      return m.length > 0 && m;
    }, 3 * MIN, diagnostics);
    expect(msgs.join('\n')).toMatch(/didn't match PersistentVolume's node affinity/);
    expect((await env.json(['get', 'pod', 'lvm-wffc-elsewhere'])).spec.nodeName ?? '').toBe('');

    await env.kubectl(['delete', 'pod', 'lvm-wffc', 'lvm-wffc-elsewhere', '--wait=true', '--timeout=120s']);
    await env.kubectl(['delete', 'pvc', 'lvm-wffc', '--wait=true', '--timeout=120s']);
    await env.waitFor(`LV ${handle} gone from ${vgOf(chosen).name}`, async () => !(await vgOf(chosen).lvs()).has(handle), 3 * MIN, diagnostics);
    expect(await lvsByNode()).toEqual(before);
    expect(await capacityIsFree(chosen)).toBe(capacityBefore.get(chosen));
  });
});
