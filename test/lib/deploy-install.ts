// Installing the driver from deploy/ on the real test cluster the way an admin does, shared
// by the e2e files that test the installed driver (deploy.test.ts, deploy-snapshots.test.ts,
// multinode-driver.test.ts): the image from deploy/image/build (cached under the hash of its
// inputs) imported into every node's containerd, the snapshot CRDs (a documented
// prerequisite), then `kubectl apply -k` through deploy/overlays/e2e and one overlay
// generated for this cluster run. On one node (the host's namespaces) that overlay moves the
// kubelet's paths into the run dir; on several (`cluster up --nodes N`) every node has the
// standard /var/lib/kubelet and /var/lib/tscsi of its own, and only the API server's address
// (the run's bridge) is added.
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { ClusterEnv, DRIVER, KUBECTL, MIN, NODE_NAME } from './cluster-env.js';
import { freePort } from './wait.js';
import { CsiClient } from '../../sidecars/common/csi-client.js';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const DEPLOY = path.join(ROOT, 'deploy');
export const NS = 'tscsi';
export const VERSION = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string;
export const IMAGE = `tscsi.local/tscsi:${VERSION}`;
const CACHE = process.env.TSCSI_IMAGE_CACHE ?? '/var/cache/tscsi-image';
/** The containers of the node pod whose logs a failure shows. */
const NODE_CONTAINERS = ['driver', 'registrar', 'provisioner', 'attacher', 'resizer', 'snapshotter', 'health-monitor', 'livenessprobe'];
/** The containers of the controller pod (RBD installs) whose logs a failure shows. */
const CONTROLLER_CONTAINERS = ['driver', 'provisioner', 'attacher', 'resizer', 'snapshotter'];
/** The sidecars that talk to the API server (they need its address: the test cluster has no kube-proxy). */
const API_CLIENTS = ['provisioner', 'attacher', 'resizer', 'snapshotter', 'health-monitor'];

export type Results = Record<string, number | string | boolean>;

/** test/cluster/build's `component`, built once and cached; returns its cache directory (`dirVar` of lib/versions.sh). */
export async function builtComponent(component: string, dirVar: string): Promise<string> {
  await execa('bash', [path.join(ROOT, 'test', 'cluster', 'build'), component], { stderr: 'inherit' });
  const r = await execa('bash', ['-c', `. "$1" && echo "$${dirVar}"`, '-', path.join(ROOT, 'test', 'cluster', 'lib', 'versions.sh')]);
  return r.stdout.trim();
}

/** The snapshot CRDs as deploy/README.md tells an admin to apply them, awaited Established. */
export async function installSnapshotCrds(env: ClusterEnv): Promise<void> {
  const dir = await builtComponent('snapshot-crds', 'SNAPSHOT_CRDS_DIR');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml')).map((f) => path.join(dir, f));
  await env.kubectl(['apply', '--server-side', ...files.flatMap((f) => ['-f', f])]);
  const names = files.map((f) => (k8s.loadYaml(fs.readFileSync(f, 'utf8')) as { metadata: { name: string } }).metadata.name);
  await env.kubectl(['wait', '--for=condition=Established', '--timeout=60s', ...names.map((n) => `crd/${n}`)]);
}

/** The image archive (with the RBD tools when `rbd`), from the cache when nothing it is built from changed. */
async function image(results: Results, rbd: boolean): Promise<string> {
  const build = path.join(DEPLOY, 'image', 'build');
  const flags = rbd ? ['--with-rbd'] : [];
  const key = (await execa('bash', [build, '--print-key', ...flags])).stdout.trim();
  const dir = path.join(CACHE, 'images');
  const file = path.join(dir, `tscsi-${VERSION}-${key}.oci.tar`);
  if (fs.existsSync(file)) {
    results.imageCached = true;
    return file;
  }
  const t0 = Date.now();
  const r = await execa('bash', [build, '--out', file, ...flags], { reject: false, timeout: 30 * MIN, all: true });
  if (r.exitCode !== 0) throw new Error(`deploy/image/build failed (${r.exitCode}):\n${r.all}`);
  results.imageBuildMs = Date.now() - t0;
  results.imageCached = false;
  // keep the newest few
  const old = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.oci.tar') && f !== path.basename(file))
    .map((f) => ({ f, t: fs.statSync(path.join(dir, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t)
    .slice(3);
  for (const { f } of old) fs.rmSync(path.join(dir, f), { force: true });
  return file;
}

export interface InstallOptions {
  /** The installed node health monitor's --monitor-interval, in seconds. */
  healthIntervalS: number;
  /** Install through deploy/overlays/rbd (the controller Deployment at 1 replica, the image with the RBD tools) instead of overlays/e2e alone. */
  rbd?: boolean;
  /** Kubelet nodes: 1 (default) is the single node in the host's namespaces; more is `cluster up --nodes N`. */
  nodes?: number;
}

/** overlays/e2e's own patches (images never pulled, the controller on the host network), for an install through another overlay. */
function e2ePatches(): unknown[] {
  const k = k8s.loadYaml(fs.readFileSync(path.join(DEPLOY, 'overlays', 'e2e', 'kustomization.yaml'), 'utf8')) as { patches: unknown[] };
  return k.patches;
}

/** The node names of `cluster up --nodes n`. */
export const nodeNames = (n: number): string[] => (n > 1 ? Array.from({ length: n }, (_, i) => `node-${i + 1}`) : [NODE_NAME]);

/** One installation of deploy/ on a cluster run of the file's own. */
export class Installation {
  readonly work = fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-e2e-deploy-'));
  readonly overlay = path.join(this.work, 'overlay');
  /** The DaemonSet's data dir on the host (the first node's with several); removed (unmounted, loops detached) by `cluster down`. */
  readonly dataDir: string;
  readonly nodes: string[];
  readonly results: Results = {};
  /** Volumes this run made: their loop devices are detached at the end. */
  readonly handles = new Set<string>();
  /** RBD images this run made (csi-vol-…): the loop devices the fuse mapper put on them are detached at the end. */
  readonly rbdImages = new Set<string>();
  csi?: CsiClient;
  /** When `cluster up` was started (Date.now()). */
  upStartedMs = 0;
  /** Whether the driver keeps its loop volumes in an XFS pool image (--data-pool-size). */
  private pool = false;

  constructor(
    readonly env: ClusterEnv,
    private readonly opts: InstallOptions,
  ) {
    this.nodes = nodeNames(opts.nodes ?? 1);
    this.dataDir = this.dataDirOf(this.nodes[0]);
  }

  get multiNode(): boolean {
    return this.nodes.length > 1;
  }

  /** Where a node's driver keeps its volumes and state, as the host sees it. */
  dataDirOf(node: string): string {
    return this.multiNode ? path.join(this.env.runDir, 'nodes', node, 'var-lib', 'tscsi') : path.join(this.env.runDir, 'tscsi-data');
  }

  /** A node's kubelet root dir as the host sees it. */
  kubeletDirOf(node: string): string {
    return this.multiNode ? this.env.nodeKubeletDir(node) : this.env.kubeletDir;
  }

  /**
   * Cluster up (with the snapshot CRDs), the image imported, the overlay written with
   * `driverArgs` added to the node driver's and `hostDirs` mounted in its container at their
   * host paths.
   */
  async prepare(driverArgs: string[] = [], hostDirs: string[] = []): Promise<void> {
    this.pool = driverArgs.some((a) => a.startsWith('--data-pool-size'));
    this.upStartedMs = Date.now();
    const up = this.env.up(...(this.multiNode ? ['--nodes', String(this.nodes.length)] : [])).then(() => {
      this.results.clusterUpMs = Date.now() - this.upStartedMs;
    });
    const [, archive] = await Promise.all([up, image(this.results, this.opts.rbd === true)]);
    this.results.imageBytes = fs.statSync(archive).size;
    await installSnapshotCrds(this.env);
    const imp = await this.env.cluster('import', archive);
    if (imp.exitCode !== 0) throw new Error(`cluster import failed (${imp.exitCode})`);
    const s = this.env.settings();
    // on one node everything is on the host's loopback; on several the API server is on the bridge
    const api = { host: this.multiNode ? s.API_HOST : '127.0.0.1', port: s.PORT_APISERVER };
    await this.writeOverlay(api, [await freePort(), await freePort(), await freePort()], driverArgs, hostDirs);
  }

  /**
   * The overlay for this cluster run, on top of deploy/overlays/e2e (or overlays/rbd with
   * e2e's patches): JSON patches whose indices come from the rendered manifests (so they
   * follow edits of deploy/base). Ports: the node's health port, the controller's health and
   * metrics ports (both pods on the host network of one node: the manifests' ports would clash).
   */
  private async writeOverlay(api: { host: string; port: string }, [healthPort, controllerHealthPort, controllerMetricsPort]: number[], driverArgs: string[], hostDirs: string[]): Promise<void> {
    const below = path.join(DEPLOY, 'overlays', this.opts.rbd ? 'rbd' : 'e2e');
    const rendered = (await execa(KUBECTL, ['kustomize', below])).stdout;
    const objs = k8s.loadAllYaml(rendered) as any[];
    const kubelet = this.env.kubeletDir;
    const apiEnv = [
      { name: 'KUBERNETES_SERVICE_HOST', value: api.host },
      { name: 'KUBERNETES_SERVICE_PORT', value: api.port },
    ];
    const patchesFor = (kind: string, name: string, edit: (spec: any, ops: any[]) => void) => {
      const obj = objs.find((o) => o.kind === kind && o.metadata.name === name);
      if (!obj) throw new Error(`${kind}/${name} is not in the rendered manifests`);
      const ops: any[] = [];
      edit(obj.spec.template.spec, ops);
      return { target: { kind, name }, patch: JSON.stringify(ops) };
    };
    const idx = (list: any[], name: string, key = 'name') => {
      const i = (list ?? []).findIndex((x) => x[key] === name);
      if (i < 0) throw new Error(`${name} not found`);
      return i;
    };
    const P = '/spec/template/spec';
    const withApi = (spec: any, ops: any[]) => {
      for (const c of API_CLIENTS) {
        const ci = idx(spec.containers, c);
        if (!spec.containers[ci].env) ops.push({ op: 'add', path: `${P}/containers/${ci}/env`, value: [] });
        for (const e of apiEnv) ops.push({ op: 'add', path: `${P}/containers/${ci}/env/-`, value: e });
      }
    };
    // One node in the host's namespaces: the kubelet's root is <run dir>/kubelet, not
    // /var/lib/kubelet, and the health port one no other run uses. Several nodes have the
    // standard paths, each in its own mount and network namespace: nothing to move.
    const hostPaths = (spec: any, ops: any[]) => {
      const vol = (n: string, p: string) => ops.push({ op: 'replace', path: `${P}/volumes/${idx(spec.volumes, n)}/hostPath/path`, value: p });
      vol('socket-dir', path.join(kubelet, 'plugins', DRIVER));
      vol('registration-dir', path.join(kubelet, 'plugins_registry'));
      vol('kubelet-dir', kubelet);
      vol('data-dir', this.dataDir);
      const d = idx(spec.containers, 'driver');
      ops.push({ op: 'replace', path: `${P}/containers/${d}/volumeMounts/${idx(spec.containers[d].volumeMounts, 'kubelet-dir')}/mountPath`, value: kubelet });
      ops.push({ op: 'replace', path: `${P}/containers/${d}/ports/${idx(spec.containers[d].ports, 'healthz')}/containerPort`, value: healthPort });
      // the driver may stage and publish only below the kubelet's root
      ops.push({ op: 'add', path: `${P}/containers/${d}/args/-`, value: `--allowed-path-root=${kubelet}` });
      const r = idx(spec.containers, 'registrar');
      ops.push({
        op: 'replace',
        path: `${P}/containers/${r}/env/${idx(spec.containers[r].env, 'KUBELET_REGISTRATION_PATH')}/value`,
        value: path.join(kubelet, 'plugins', DRIVER, 'csi.sock'),
      });
      const l = idx(spec.containers, 'livenessprobe');
      const args = (spec.containers[l].args as string[]).map((a) => (a.startsWith('--http-endpoint=') ? `--http-endpoint=$(POD_IP):${healthPort}` : a));
      ops.push({ op: 'replace', path: `${P}/containers/${l}/args`, value: args });
      ops.push({ op: 'add', path: `${P}/containers/${idx(spec.containers, 'health-monitor')}/args/-`, value: `--kubelet-dir=${kubelet}` });
    };
    const node = patchesFor('DaemonSet', 'tscsi-node', (spec, ops) => {
      if (!this.multiNode) hostPaths(spec, ops);
      const d = idx(spec.containers, 'driver');
      for (const a of driverArgs) ops.push({ op: 'add', path: `${P}/containers/${d}/args/-`, value: a });
      for (const [i, dir] of hostDirs.entries()) {
        ops.push({ op: 'add', path: `${P}/volumes/-`, value: { name: `host-dir-${i}`, hostPath: { path: dir, type: 'Directory' } } });
        ops.push({ op: 'add', path: `${P}/containers/${d}/volumeMounts/-`, value: { name: `host-dir-${i}`, mountPath: dir } });
      }
      // the node health monitor polls often, so a case waits seconds, not its default minute
      ops.push({ op: 'add', path: `${P}/containers/${idx(spec.containers, 'health-monitor')}/args/-`, value: `--monitor-interval=${this.opts.healthIntervalS}s` });
      withApi(spec, ops);
    });
    const controller = patchesFor('Deployment', 'tscsi-controller', (spec, ops) => {
      withApi(spec, ops);
      // several nodes: several replicas may share a node, each in a pod network namespace of
      // its own (the nodes route pods to the API server) with the manifest's ports
      if (this.multiNode) {
        ops.push({ op: 'replace', path: `${P}/hostNetwork`, value: false });
        return;
      }
      // one node: host network (overlays/e2e), next to the node pod: free ports, not the manifest's
      const d = idx(spec.containers, 'driver');
      const port = (name: string, container: string, flag: string, value: number) => {
        ops.push({ op: 'replace', path: `${P}/containers/${d}/ports/${idx(spec.containers[d].ports, name)}/containerPort`, value });
        const c = idx(spec.containers, container);
        const args = (spec.containers[c].args as string[]).map((a) => (a.startsWith(`${flag}=`) ? `${flag}=0.0.0.0:${value}` : a));
        ops.push({ op: 'replace', path: `${P}/containers/${c}/args`, value: args });
      };
      port('healthz', 'livenessprobe', '--http-endpoint', controllerHealthPort);
      port('metrics', 'driver', '--metrics-address', controllerMetricsPort);
    });
    fs.mkdirSync(this.overlay, { recursive: true });
    const kustomization = {
      apiVersion: 'kustomize.config.k8s.io/v1beta1',
      kind: 'Kustomization',
      resources: [path.relative(this.overlay, below)],
      patches: [...(this.opts.rbd ? e2ePatches() : []), node, controller],
    };
    fs.writeFileSync(path.join(this.overlay, 'kustomization.yaml'), k8s.dumpYaml(kustomization));
  }

  /** What a failure on the installed driver needs to be understood: pods, events, objects, the node pod's logs. */
  async diagnostics(): Promise<string> {
    const parts: string[] = [];
    for (const args of [
      ['get', 'pods', '-A', '-o', 'wide'],
      ['describe', 'pods', '-n', NS],
      ['get', 'events', '-A', '--sort-by=.lastTimestamp'],
      ['get', 'pvc,pv,volumeattachment', '-A'],
    ]) {
      parts.push(`--- kubectl ${args.join(' ')} ---\n${await this.env.kubectl(args).catch((e) => String(e))}`);
    }
    const pods = this.multiNode ? (await this.nodePods().catch(() => [])).map((p) => `pod/${p.metadata.name as string}`) : ['daemonset/tscsi-node'];
    for (const pod of pods) {
      for (const c of NODE_CONTAINERS) {
        parts.push(`--- logs ${pod} ${c} ---\n${await this.env.kubectl(['logs', '-n', NS, pod, '-c', c, '--tail=30']).catch((e) => String(e))}`);
      }
    }
    for (const c of this.opts.rbd ? CONTROLLER_CONTAINERS : []) {
      parts.push(`--- controller logs ${c} ---\n${await this.env.kubectl(['logs', '-n', NS, 'deployment/tscsi-controller', '-c', c, '--tail=30']).catch((e) => String(e))}`);
    }
    return parts.join('\n');
  }

  async nodePods(): Promise<any[]> {
    return (await this.env.json(['get', 'pods', '-n', NS, '-l', 'app.kubernetes.io/component=node'])).items as any[];
  }

  async nodePodReady(): Promise<boolean> {
    const pods = await this.nodePods();
    return pods.length === this.nodes.length && pods.every((p: any) => p.status.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True'));
  }

  async controllerPodReady(): Promise<boolean> {
    const pods = (await this.env.json(['get', 'pods', '-n', NS, '-l', 'app.kubernetes.io/component=controller'])).items as any[];
    return pods.length === 1 && pods.every((p: any) => p.status.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True'));
  }

  private readonly clients = new Map<string, CsiClient>();

  /** The CSI client of a node's driver, through its socket in the node's kubelet plugin dir (a unix socket: reachable from the host). */
  csiOf(node: string): CsiClient {
    let c = this.clients.get(node);
    if (!c) {
      c = new CsiClient(path.join(this.kubeletDirOf(node), 'plugins', DRIVER, 'csi.sock'));
      this.clients.set(node, c);
    }
    return c;
  }

  /**
   * kubectl apply -k of the overlay, then `objects` (what the installed pods need from the
   * admin, e.g. the RBD ConfigMap and Secret) and the example StorageClasses, as an admin
   * installs; then every node's driver answers on its socket.
   */
  async install(objects: object[] = []): Promise<void> {
    const t0 = Date.now();
    await this.env.kubectl(['apply', '-k', this.overlay]);
    for (const o of objects) await this.env.apply(o);
    await this.env.waitFor('node pods Ready', () => this.nodePodReady(), 4 * MIN, () => this.diagnostics());
    if (this.opts.rbd) await this.env.waitFor('controller pod Ready', () => this.controllerPodReady(), 4 * MIN, () => this.diagnostics());
    this.results.applyToPodReadyMs = Date.now() - t0;
    await this.env.kubectl(['apply', '-k', path.join(DEPLOY, 'examples')]);
    // the test talks CSI to the drivers (a Ready pod may not serve yet: installed means answering)
    this.csi = this.csiOf(this.nodes[0]);
    for (const node of this.nodes) {
      await this.env.waitFor(`the driver on ${node} to answer on its socket`, async () => (await this.csiOf(node).Identity.GetPluginInfo({})).name, 2 * MIN, () => this.diagnostics());
    }
  }

  /**
   * Loop devices of this run's volumes (and its data pool) that are still attached after
   * `cluster down`, which detaches by backing-file path inside the run dir: a device attached
   * by an exited driver container shows a path relative to that container's mount instead
   * (/loop/volumes/<id>.img, /volumes/<id>.img in a pool, /loop.xfs.img for the pool).
   */
  private async detachLeftovers(): Promise<void> {
    const devices = fs
      .readdirSync('/sys/block')
      .filter((d) => d.startsWith('loop'))
      .flatMap((dev) => {
        try {
          return [{ dev, back: fs.readFileSync(`/sys/block/${dev}/loop/backing_file`, 'utf8').trim().replace(/ \(deleted\)$/, '') }];
        } catch {
          return [];
        }
      });
    // an RBD image's device shows its fuse file (<state>/fuse/<hash>/mnt/<image>, or /<image> once that mount is gone)
    const ours = (back: string) => this.handles.has(path.basename(back).replace(/\.img$/, '')) || this.rbdImages.has(path.basename(back));
    const pool = (back: string) => this.pool && (back === '/loop.xfs.img' || back === path.join(this.dataDir, 'loop.xfs.img'));
    // the volumes before the pool that holds their files
    for (const { dev } of [...devices.filter((d) => ours(d.back)), ...devices.filter((d) => pool(d.back))]) {
      const r = await execa('losetup', ['-d', `/dev/${dev}`], { reject: false });
      this.results.leftoverLoopDevicesDetached = Number(this.results.leftoverLoopDevicesDetached ?? 0) + (r.exitCode === 0 ? 1 : 0);
    }
  }

  /** Everything down, whatever failed before: the cluster (and the pods' mounts), leftover loop devices, the work dir. */
  async teardown(): Promise<void> {
    for (const c of this.clients.values()) c.close();
    if (process.env.TSCSI_E2E_KEEP_LOGS) console.log(await this.diagnostics());
    await this.env.down();
    await this.detachLeftovers();
    fs.rmSync(this.work, { recursive: true, force: true });
  }
}
